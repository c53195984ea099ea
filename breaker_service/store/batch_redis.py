"""`ScriptBatcher`: the EVALSHA calls made in one event-loop iteration go to Redis as one pipeline.

Under load a replica has many acquire and record scripts in flight at once. Sent one by one, each costs a pool
checkout, a write (with redis-py's write timeout, a task of its own on Python 3.11) and a read; profiled, that is
a third of a request's CPU. Batched, a burst of them shares one checkout and one write, and Redis answers them
in one go. Each script still runs atomically, in the order the calls were made; a call alone in its iteration
is sent as it is, with no delay added: the batch is flushed by `call_soon`, before the loop polls for I/O.

A reply that is an error (NOSCRIPT after a Redis restart, a script error) fails only its own call; NOSCRIPT is
handled as the single call would: the script is loaded and run once more. An error of the connection fails every
call of the batch, as it would have failed each of them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

MAX_BATCH: Final = 128
"""Calls per pipeline at most; a larger burst is split, so one reply buffer stays small."""

_Call = tuple["AsyncScript", "Sequence[str]", "Sequence[str | bytes]", "asyncio.Future[Any]"]


class ScriptBatcher:
    """Runs registered scripts on a standalone (or Sentinel) client, batching the calls of one loop iteration."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use `loop` (the client's: a Redis client serves one loop) without asking for it on every call."""
        self._loop = loop

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        """The script's reply, as `script(keys=keys, args=args)` would answer it."""
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, keys, args, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            task = asyncio.create_task(self._send(pending[start : start + MAX_BATCH]))
            self._tasks.add(task)  # a reference, so the task is not collected while it runs
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            script, keys, args, future = batch[0]
            await _settle(future, script(keys=keys, args=args))
            return
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, args, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):
                await _settle(future, script(keys=keys, args=args))  # loads the script, then runs it
            elif future.done():
                continue  # its caller went away
            elif isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


async def _settle(future: asyncio.Future[Any], call: Any) -> None:
    try:
        reply = await call
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
    else:
        if not future.done():
            future.set_result(reply)
