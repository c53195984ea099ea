"""The one place that makes Redis clients and turns Redis errors into the service's own.

Every Redis-backed store (breakers, status, queues) runs on a client from `create_redis` and wraps its commands in
`unavailable()`; nothing else in the service knows how a `REDIS_URL` is read.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import redis.asyncio
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from breaker_service.errors import InvalidRequestError, StoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from redis.asyncio.client import PubSub

RedisClient: TypeAlias = "redis.asyncio.Redis | RedisCluster"


log = structlog.get_logger("breaker_service.store")

_SCRIPT_WHERE: Final = re.compile(r"\s*script: [0-9a-f]{40}, on @user_script:\d+\.?|user_script:\d+: ")
"""Where in which script an error arose: for the logs, not for the client."""
_ERROR_CODE: Final = re.compile(r"[A-Z]{3,} ")
"""An error code other than ERR (which redis-py strips): WRONGTYPE, OOM, READONLY, BUSY... are not the input's fault."""


@contextmanager
def unavailable() -> Iterator[None]:
    """The one place a Redis error becomes the service's own.

    A script that failed on its input (Redis says `ERR` and where in the script) is the request's fault, not the
    store's: 422 ORC_001, never a 503 that would also put a replica in degraded mode. Any other Redis error is
    unavailability. Neither message carries the script's SHA or line (they are logged).
    """
    try:
        yield
    except ResponseError as exc:
        text = str(exc)
        message = _SCRIPT_WHERE.sub("", text).strip()
        if type(exc) is ResponseError and "user_script" in text and not _ERROR_CODE.match(text):
            log.warning("a script refused its input", error=text)
            raise InvalidRequestError(
                f"the store refused this input: {message}", details={"location": "store"}
            ) from exc
        raise StoreUnavailableError(f"Redis is unavailable: {message}") from exc
    except RedisError as exc:
        raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled and redis-py swallowed it (it may, while it closes or reads a
    connection): without this, a loop that blocks on Redis next would not end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def confirmed(pubsub: PubSub) -> None:
    """Wait for Redis to confirm SUBSCRIBE: only then is it live, and a snapshot read after it misses nothing."""
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=None)
        if message is not None and message["type"] == "subscribe":
            return


def create_redis(
    url: str, *, cluster: bool = False, max_connections: int = 256, timeout_s: float = 2.0, **options: Any
) -> RedisClient:
    """A client for `REDIS_URL`: `redis://`, `rediss://`, `redis+sentinel://h:p[,h:p]/master`, or a cluster node.

    Replies stay bytes (`decode_responses` off): the stores decode them themselves. A command is sent once and never
    again: one that timed out may still run when a hung Redis resumes, so sending it again could apply it twice
    (redis-py's `Retry` cannot tell "nothing was sent" from "no answer came"). A pooled connection that Redis closed
    (after a restart) is not a failed command: the pool checks each connection before handing it out and reconnects
    a closed one. A burst of more concurrent requests than `max_connections` waits at most `timeout_s` for a
    connection, a command at most `timeout_s` for its answer, and connecting at most a second, so a Redis that
    hangs rather than refuses turns into degraded answers quickly. Blocking pub/sub reads are exempt.
    """
    options.setdefault("retry", Retry(NoBackoff(), 0))
    options.setdefault("socket_connect_timeout", min(1.0, timeout_s))
    options.setdefault("socket_timeout", timeout_s)
    if cluster:
        return RedisCluster.from_url(url, max_connections=max_connections, **options)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis+sentinel":
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s, **options
        )
        return redis.asyncio.Redis.from_pool(pool)
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = [(host, int(port or 26379)) for host, _, port in (h.partition(":") for h in hosts.split(","))]
    if parts.password is not None:
        options.setdefault("password", urllib.parse.unquote(parts.password))
    sentinel = Sentinel(sentinels, **options)
    client: redis.asyncio.Redis = sentinel.master_for(parts.path.strip("/"))
    return client
