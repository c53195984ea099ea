"""The coalescing transport: what is written in one loop turn leaves in one call, in order, before a close."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from breaker_service.coalesce import CoalescingTransport, coalesced


class RecordingTransport:
    """Stands for the socket's transport: records the calls that would reach the kernel."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", [data]))

    def writelines(self, chunks: list[bytes]) -> None:
        self.calls.append(("writelines", list(chunks)))

    def close(self) -> None:
        self.calls.append(("close", []))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name == "sockname" else default


def wrap(transport: RecordingTransport) -> CoalescingTransport:
    return CoalescingTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]


async def one_turn() -> None:
    # The flush runs as a loop callback; a future resolved by a later callback is an event to await.
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


async def test_writes_of_one_turn_leave_in_one_call_in_order() -> None:
    inner = RecordingTransport()
    transport = wrap(inner)
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b'{"allowed":true}')
    assert inner.calls == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\n") + len(b'{"allowed":true}')
    await one_turn()
    assert inner.calls == [("writelines", [b"HTTP/1.1 200 OK\r\n\r\n", b'{"allowed":true}'])]
    transport.write(b"next")
    await one_turn()
    assert inner.calls[-1] == ("write", [b"next"])


async def test_close_sends_what_is_pending_first() -> None:
    inner = RecordingTransport()
    transport = wrap(inner)
    transport.write(b"last words")
    transport.close()
    await one_turn()
    assert inner.calls == [("write", [b"last words"]), ("close", [])]


async def test_other_calls_reach_the_wrapped_transport() -> None:
    transport = wrap(RecordingTransport())
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8080)
    assert not transport.is_closing()


def test_the_protocol_subclass_keeps_its_name_and_base() -> None:
    protocol = coalesced(HttpToolsProtocol)
    assert issubclass(protocol, HttpToolsProtocol)
    assert protocol.__name__ == "CoalescedHttpToolsProtocol"
