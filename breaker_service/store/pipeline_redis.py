"""`ScriptPipeline`: the scripts' EVALSHA calls on one connection of their own, pipelined as they come.

Profiled under load, redis-py's own machinery was the largest share of a request's CPU on the Redis store: a pool
checkout, a `Pipeline` object, a task per batch, a timeout per read and a parser walked from Python. Here the
calls of one event-loop iteration are packed by hiredis, written in one `write` when the iteration ends (before
the loop polls for I/O: no call waits for anything but the code already running), and their replies, parsed by
hiredis where they arrive, settle the callers in the order the calls were sent: Redis answers a connection's
commands in order. Nothing waits for a batch to finish before the next one leaves.

What it keeps from redis-py's client, which the rest of the store still uses:
- a command is sent once and never again (a hung Redis that resumes must not apply a write twice);
- a call that gets no answer within the store timeout fails: the connection is closed, every call waiting on it
  fails as unavailable, and the next call connects anew (a connection closed under a call it had sent might or
  might not have run it; which, nobody can tell);
- a caller that gives up leaves its reply to be read and dropped, so later replies still find their callers;
- errors are redis-py's classes (`NoScriptError`, `ResponseError`, `ConnectionError`, `TimeoutError`), so
  `connection_redis.unavailable()` tells the request's fault from the store's as it does for every command.

A standalone client's connection is taken over whether plain TCP, TLS (with the TLS settings of the client's own
connections) or a Unix socket (`pipelined_address`); Sentinel, Cluster and a credential provider keep redis-py's
connections (`batch_redis.ScriptBatcher`, or one call at a time on a cluster).
"""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import TYPE_CHECKING, Any, Final

import hiredis
import msgspec
import redis.asyncio
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence

    from breaker_service.store.connection_redis import RedisClient

_ERROR_PREFIX: Final = "ERR "


class Address(msgspec.Struct, frozen=True):
    """Where and as whom the pipeline connects: read off the client's own connection settings."""

    host: str | None = None
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    connect_timeout_s: float = 1.0
    reply_timeout_s: float | None = None
    """How long calls may wait with no reply at all (redis-py's `socket_timeout`); None: for ever."""


def pipelined_address(client: RedisClient) -> Address | None:
    """The address of a standalone client on TCP, TLS or a Unix socket; None for any other (Sentinel, Cluster, a
    credential provider), which keeps redis-py's connections."""
    if not isinstance(client, redis.asyncio.Redis):
        return None
    pool = client.connection_pool
    kinds = (redis.asyncio.Connection, redis.asyncio.SSLConnection, redis.asyncio.UnixDomainSocketConnection)
    if pool.connection_class not in kinds:
        return None
    tls = None
    if pool.connection_class is redis.asyncio.SSLConnection:
        # The context redis-py builds from the URL's and the client's ssl_* settings, so both verify alike.
        tls = pool.make_connection().ssl_context.get()  # type: ignore[no-untyped-call]
    settings = pool.connection_kwargs
    if settings.get("credential_provider") is not None or settings.get("protocol") not in (None, 2, "2"):
        return None
    return Address(
        host=settings.get("host", "localhost") if "path" not in settings else None,
        port=int(settings.get("port", 6379)),
        path=settings.get("path"),
        db=int(settings.get("db", 0)),
        username=settings.get("username"),
        password=settings.get("password"),
        tls=tls,
        connect_timeout_s=float(settings.get("socket_connect_timeout") or 1.0),
        reply_timeout_s=settings.get("socket_timeout"),
    )


def reply_error(message: str) -> ResponseError:
    """A Redis error reply as redis-py would raise it: `ERR` stripped, other codes kept in the message."""
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message.partition(" ")[2])
    return ResponseError(message.removeprefix(_ERROR_PREFIX))


def _command(*parts: str | int | bytes) -> bytes:
    """One command in RESP, packed by hiredis (whose type stub declares a one-element tuple; it takes any)."""
    packed: bytes = hiredis.pack_command(parts)  # type: ignore[arg-type]
    return packed


class _Connection(asyncio.Protocol):
    """One socket: commands out in order, replies matched to their callers in the same order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float | None) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader()
        self._outgoing: list[bytes] = []
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._progress_at = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self.usable = True
        """False once the connection failed or was closed: the next call makes a new one."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Queue `command`; its reply settles the future answered."""
        future = self._loop.create_future()
        if not self.usable:
            future.set_exception(ConnectionError("the connection to Redis was lost"))
            return future
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        if not self._waiting:
            self._progress_at = self._loop.time()
            if self._watchdog is None and self._timeout_s is not None:
                self._watchdog = self._loop.call_at(self._progress_at + self._timeout_s, self._check_progress)
        self._outgoing.append(command)
        self._waiting.append(future)
        return future

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is not None and self.usable:
            self._transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while (reply := self._reader.gets()) is not False:
            if not waiting:  # a reply nobody asked for: the stream is not what it should be
                self._abandon(ConnectionError("Redis sent a reply no call was waiting for"))
                return
            future = waiting.popleft()
            if future.done():
                continue  # its caller gave up
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(reply_error(str(reply)))
            else:
                future.set_result(reply)
        self._progress_at = self._loop.time()

    def _check_progress(self) -> None:
        """While calls wait, Redis must answer something every `timeout_s`; a hung one loses the connection."""
        self._watchdog = None
        if not self._waiting or not self.usable or self._timeout_s is None:
            return
        due = self._progress_at + self._timeout_s
        if self._loop.time() < due:
            self._watchdog = self._loop.call_at(due, self._check_progress)
            return
        self._abandon(TimeoutError(f"Redis did not answer within {self._timeout_s:g} s"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))

    def _abandon(self, error: Exception) -> None:
        """Fail every waiting call and drop the socket at once, unsent commands included."""
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: Exception) -> None:
        self.usable = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail(ConnectionError("the pipeline was closed"))


class ScriptPipeline:
    """EVALSHA on a pipelined connection of its own; connects on first use and again after a loss."""

    def __init__(self, address: Address) -> None:
        self._address = address
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        """The script's reply; raises as redis-py's `evalsha` would."""
        connection = self._connection
        if connection is None or not connection.usable:
            connection = await self._connected()
        return await connection.send(_command("EVALSHA", sha, len(keys), *keys, *args))

    async def _connected(self) -> _Connection:
        """The live connection, made by the first caller to need it; concurrent callers share that attempt, and
        a caller that gives up leaves it to finish for the others."""
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(_retrieved)
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the pipeline was closed")
        loop = asyncio.get_running_loop()
        address = self._address

        def protocol() -> _Connection:
            return _Connection(loop, address.reply_timeout_s)

        try:
            async with asyncio.timeout(address.connect_timeout_s):
                if address.path is not None:
                    _, connection = await loop.create_unix_connection(protocol, address.path)
                else:
                    host = address.host or "localhost"
                    _, connection = await loop.create_connection(protocol, host, address.port, ssl=address.tls)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError included: a refused certificate is no connection
            raise ConnectionError(f"could not connect to Redis: {exc or 'timed out'}") from exc
        try:
            if address.password is not None:
                user = () if address.username is None else (address.username,)
                await connection.send(_command("AUTH", *user, address.password))
            if address.db:
                await connection.send(_command("SELECT", address.db))
        except BaseException:
            connection.close()
            raise
        if self._closed:
            connection.close()
            raise ConnectionError("the pipeline was closed")
        self._connection = connection
        return connection

    async def close(self) -> None:
        self._closed = True
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _retrieved(attempt: asyncio.Future[_Connection]) -> None:
    """Mark a connection attempt's failure as seen: every caller waiting for it may have given up."""
    if not attempt.cancelled():
        attempt.exception()
