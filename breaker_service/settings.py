"""Settings, read once from the environment into a frozen Struct.

A bad value stops the service at start with a message naming the variable (`SettingsError`), never a traceback.
Empty variables count as unset.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

if TYPE_CHECKING:
    from collections.abc import Mapping

ENV_NAMES: Final = {
    "host": "BREAKER_HOST",
    "port": "BREAKER_PORT",
    "redis_url": "REDIS_URL",
    "redis_cluster": "REDIS_CLUSTER",
    "config_path": "BREAKER_CONFIG",
    "admin_tokens": "BREAKER_ADMIN_TOKENS",
    "client_tokens": "BREAKER_CLIENT_TOKENS",
    "max_body_bytes": "BREAKER_MAX_BODY_BYTES",
    "max_breakers": "BREAKER_MAX_BREAKERS",
    "log_level": "BREAKER_LOG_LEVEL",
    "sse_keepalive_s": "BREAKER_SSE_KEEPALIVE_S",
    "access_log_sample": "BREAKER_ACCESS_LOG_SAMPLE",
    "workers": "BREAKER_WORKERS",
    "max_header_bytes": "BREAKER_MAX_HEADER_BYTES",
    "client_timeout_s": "BREAKER_CLIENT_TIMEOUT_S",
    "queue_max_jobs": "BREAKER_QUEUE_MAX_JOBS",
    "queue_max_payload_bytes": "BREAKER_QUEUE_MAX_PAYLOAD_BYTES",
    "store_timeout_s": "BREAKER_STORE_TIMEOUT_S",
    "auto_create": "BREAKER_AUTO_CREATE",
    "admin_min_replicas": "BREAKER_ADMIN_MIN_REPLICAS",
    "allow_eviction": "BREAKER_ALLOW_EVICTION",
}
REDIS_SCHEMES: Final = ("redis://", "rediss://", "redis+sentinel://", "unix://")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class SettingsError(Exception):
    """An environment variable holds a value the service cannot start with."""


class Settings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename=ENV_NAMES):
    """Everything the service reads from the environment; defaults are the documented ones.

    `client_tokens` is None while `BREAKER_CLIENT_TOKENS` is unset: client and reader routes are then open.
    Token maps go from the token's name (the actor in audit entries) to the secret.
    """

    host: Annotated[str, Meta(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    redis_url: str | None = None
    redis_cluster: bool = False
    config_path: str | None = None
    admin_tokens: dict[str, str] = field(default_factory=dict)
    client_tokens: dict[str, str] | None = None
    max_body_bytes: Annotated[int, Meta(ge=1)] = 1024 * 1024
    max_breakers: Annotated[int, Meta(ge=1)] = 10_000
    log_level: LogLevel = "INFO"
    sse_keepalive_s: Annotated[float, Meta(gt=0, le=3600)] = 15.0
    access_log_sample: Annotated[float, Meta(ge=0, le=1)] = 0.0
    """The share of successful, non-admin requests that get an access line (errors and admin actions always do)."""
    workers: Annotated[int, Meta(ge=1, le=256)] | Literal["auto"] = 1
    """Server processes sharing the port; `auto`: one per core this process may run on."""
    max_header_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024
    client_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    queue_max_jobs: Annotated[int, Meta(ge=1)] = 100_000
    queue_max_payload_bytes: Annotated[int, Meta(ge=1)] = 64 * 1024
    store_timeout_s: Annotated[float, Meta(gt=0, le=60)] = 2.0
    """The longest a request waits on the store: for a pooled connection, and for a command's answer."""
    auto_create: bool = True
    """False: only admins create breakers (PUT, force with ?create=true); clients get 404 for unknown names."""
    admin_min_replicas: Annotated[int, Meta(ge=0, le=100)] = 0
    """Admin writes wait for Redis WAIT to confirm this many replicas (503 ORC_005, applied, when they do not)."""
    allow_eviction: bool = False
    """Start even when Redis `maxmemory-policy` may evict keys (a force could silently vanish)."""

    def __post_init__(self) -> None:
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ValueError(f"REDIS_URL must start with one of {', '.join(REDIS_SCHEMES)}")
        if self.redis_cluster and self.redis_url is None:
            raise ValueError("REDIS_CLUSTER needs REDIS_URL naming a cluster node")
        if self.workers != 1 and self.redis_url is None:
            raise ValueError("BREAKER_WORKERS other than 1 needs REDIS_URL: the memory store lives in one process")
        seen = list((self.admin_tokens | (self.client_tokens or {})).values())
        if len(seen) != len(set(seen)) or set(self.admin_tokens) & set(self.client_tokens or {}):
            raise ValueError("a token or token name appears twice in BREAKER_ADMIN_TOKENS/BREAKER_CLIENT_TOKENS")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: `os.environ`); raise `SettingsError` on a bad value."""
        source = os.environ if env is None else env
        raw: dict[str, object] = {}
        for var in ENV_NAMES.values():
            value = source.get(var, "").strip()
            if value:
                raw[var] = parse_tokens(var, value) if var.endswith("_TOKENS") else value
        if "BREAKER_LOG_LEVEL" in raw:
            raw["BREAKER_LOG_LEVEL"] = str(raw["BREAKER_LOG_LEVEL"]).upper()
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"bad environment: {_name_the_variable(str(exc))}") from None


def parse_tokens(var: str, value: str) -> dict[str, str]:
    """Parse `name:token,name:token`; names and tokens are non-empty and carry no whitespace."""
    tokens: dict[str, str] = {}
    for item in value.split(","):
        name, sep, token = item.strip().partition(":")
        if not sep or not name or not token or any(c.isspace() for c in name + token):
            raise SettingsError(f"bad environment: {var} must be a comma-separated list of name:token")
        if name in tokens:
            raise SettingsError(f"bad environment: {var} names {name!r} twice")
        tokens[name] = token
    return tokens


def _name_the_variable(message: str) -> str:
    # msgspec's path is `$.BREAKER_PORT`, thanks to `rename`; make it read as the variable.
    return message.replace(" - at `$.", " - in `").replace("`$`", "the environment")
