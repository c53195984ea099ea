"""`breakerctl`: read and operate the shared circuit breakers from a shell.

    breakerctl [--url URL] [--token TOKEN] COMMAND ... [--json]

Exit codes: 0 done; 1 the service answered an error (its ORC code and message go to stderr); 2 a usage error, a
bad breaker name included (nothing is sent); 3 the service could not be reached; 130 interrupted (Ctrl-C ends
`watch` with 0, since that is how it is meant to stop); 141 the reader of the output went away.

A write whose outcome is unknown is sent again under its Idempotency-Key (`_cli_retry`), one line on stderr per
retry; when the attempts run out, the last line names the key to re-run the command with.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import sys
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import msgspec

from breaker_client import _cli_admin as admin
from breaker_client import _cli_render as render
from breaker_client._cli_args import build_parser, check
from breaker_client._cli_audit import audit
from breaker_client._cli_retry import ATTEMPTS_DEFAULT, retrying
from breaker_client._cli_service import Service, decoded
from breaker_client._errors import ServiceError, TransportError, error_from_response
from breaker_client.protocol.models import (
    JSON_ENCODER,
    BreakerList,
    ForceRequest,
    History,
    ResetRequest,
    Snapshot,
    Transition,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Sequence

    import httpx

__all__ = ["Exit", "main", "run"]

_LIST: Final = msgspec.json.Decoder(BreakerList)
_SNAPSHOT: Final = msgspec.json.Decoder(Snapshot)
_HISTORY: Final = msgspec.json.Decoder(History)
_TRANSITION: Final = msgspec.json.Decoder(Transition)


class Exit(enum.IntEnum):
    """The process's exit codes."""

    OK = 0
    SERVICE_ERROR = 1
    USAGE = 2
    UNREACHABLE = 3
    INTERRUPTED = 130
    BROKEN_PIPE = 141
    """The reader of our output went away (`breakerctl watch | head -1`), as a process killed by SIGPIPE."""


def _path(name: str, action: str = "") -> str:
    return f"/breakers/{quote(name, safe='')}{action}"


def _emit(args: argparse.Namespace, raw: bytes, human: str, *, empty: str = "") -> None:
    if args.json:
        print(raw.decode())
    elif human:
        print(human)
    elif empty:
        print(empty, file=sys.stderr)


async def _list(service: Service, args: argparse.Namespace) -> None:
    listing, raw = await service.get("/breakers", _LIST)
    _emit(args, raw, render.snapshots_table(listing.breakers) if listing.breakers else "", empty="no breakers")


async def _show(service: Service, args: argparse.Namespace) -> None:
    snapshot, raw = await service.get(_path(args.name), _SNAPSHOT)
    _emit(args, raw, render.show_snapshot(snapshot))


async def _history(service: Service, args: argparse.Namespace) -> None:
    params = {} if args.limit is None else {"limit": args.limit}
    history, raw = await service.get(_path(args.name, "/history"), _HISTORY, **params)
    transitions = history.transitions
    _emit(args, raw, render.history_table(transitions) if transitions else "", empty="no transitions")


async def _force(service: Service, args: argparse.Namespace) -> None:
    body = ForceRequest(reason=args.reason, ttl_s=args.ttl)
    action = f"/{args.command}?create=true" if args.create else f"/{args.command}"
    snapshot, raw = await service.post(_path(args.name, action), body, _SNAPSHOT)
    _emit(args, raw, render.snapshots_table([snapshot]))


async def _reset(service: Service, args: argparse.Namespace) -> None:
    snapshot, raw = await service.post(_path(args.name, "/reset"), ResetRequest(reason=args.reason), _SNAPSHOT)
    _emit(args, raw, render.snapshots_table([snapshot]))


async def _watch(service: Service, args: argparse.Namespace) -> None:
    # Ctrl-C ends the watch through an event the loop sets, not by cancelling a read deep in httpx: a cancellation
    # that lands inside the HTTP stack can be absorbed there, leaving the watch waiting (seen once in ~10 runs).
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    # No signal handlers on Windows, nor off the main thread: there Ctrl-C cancels the task as usual.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
    following = asyncio.ensure_future(_follow(service, args))
    stopping = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if following.done():
            following.result()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        stopping.cancel()
        following.cancel()


async def _follow(service: Service, args: argparse.Namespace) -> None:
    seen = 0
    async with service.events("/events") as events:
        async for event in events:
            if event.event == "snapshot" and not args.json:
                print(f"watching {args.url} for state changes (Ctrl-C to stop)", file=sys.stderr, flush=True)
            elif event.event == "error":
                raise error_from_response(503, event.data.encode())
            elif event.event == "state":
                transition = decoded(_TRANSITION, event.data)
                print(event.data if args.json else render.transition_line(transition), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    return
    raise TransportError("the service closed the event stream")


COMMANDS: Final[dict[str, Callable[[Service, argparse.Namespace], Awaitable[None]]]] = {
    "list": _list,
    "show": _show,
    "history": _history,
    "force-open": _force,
    "force-close": _force,
    "reset": _reset,
    "audit": audit,
    "watch": _watch,
    "delete": admin.delete,
    "config": admin.config,
    "degradation": admin.degradation,
}


async def _execute(
    args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None, sleep: Callable[[float], Awaitable[None]]
) -> int:
    # Only write commands take --retries and --idempotency-key; a read's Service never uses them.
    attempts = getattr(args, "retries", None) or ATTEMPTS_DEFAULT
    writes = retrying(attempts, announce=_complain, sleep=sleep)
    key = getattr(args, "idempotency_key", None)
    service = Service(args.url, args.token, transport, idempotency_key=key, writes=writes)
    try:
        await COMMANDS[args.command](service, args)
    except TransportError as exc:
        _complain(f"connection to the breaker service at {args.url} failed: {exc}")
        _name_the_key(service)
        return Exit.UNREACHABLE
    except ServiceError as exc:
        _complain(_describe(exc))
        _name_the_key(service)
        return Exit.SERVICE_ERROR
    except asyncio.CancelledError:  # Ctrl-C (asyncio.run cancels us): a write may be on its way
        _name_the_key(service)
        raise
    finally:
        await service.aclose()
    return Exit.OK


def _name_the_key(service: Service) -> None:
    if service.unsettled:
        _complain(f"outcome unknown; re-run with --idempotency-key {service.idempotency_key} to retry safely")


def _describe(exc: ServiceError) -> str:
    status = f"HTTP {exc.status}"
    text = f"{exc.error_code} ({status}): {exc.message}" if exc.error_code else f"{status}: {exc.message}"
    if exc.details is not None:
        text += f" (details: {JSON_ENCODER.encode(exc.details).decode()})"
    if exc.correlation_id:
        text += f" [correlation id {exc.correlation_id}]"
    return text


def _complain(message: str) -> None:
    print(f"breakerctl: {message}", file=sys.stderr)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        check(parser, args)
        return args
    except SystemExit as exc:  # argparse has printed the help (0) or the usage error (2)
        return exc.code if isinstance(exc.code, int) else Exit.USAGE


async def run(
    argv: Sequence[str] | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """`breakerctl` in a running event loop; returns the exit code. `transport` is httpx's (tests record with it);
    `sleep` waits before a write is retried (tests make the store come back in it)."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    return await _execute(args, transport, sleep)


def main(argv: Sequence[str] | None = None) -> int:
    """The `breakerctl` console script; returns the exit code."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    try:
        return asyncio.run(_execute(args, None, asyncio.sleep))
    except KeyboardInterrupt:
        return Exit.OK if args.command == "watch" else Exit.INTERRUPTED
    except BrokenPipeError:
        # Python flushes stdout again at exit and would complain about the closed pipe; point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
