"""The orchestrator's settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from breaker_client import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Settings"]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where things are and how patient to be; the defaults are the seed's (1 s / 2 s / 4 s, 30 s cap and timeout).

    | variable | default |
    |---|---|
    | ORCHESTRATOR_HOST, ORCHESTRATOR_PORT | 127.0.0.1, 8070 |
    | BREAKER_URLS | http://127.0.0.1:8080 (comma-separated replicas) |
    | BREAKER_TOKEN | unset (the service's client routes are open) |
    | DEPENDENCIES_URL | http://127.0.0.1:8090 (each dependency under /<name>/) |
    | RETRY_ATTEMPTS, RETRY_BASE_S, RETRY_MAX_S | 4, 1.0, 30.0 |
    | CALL_TIMEOUT_S | 30.0 (one attempt) |
    | SMS_DRAIN_INTERVAL_S | 1.0 (how often the SMS outbox is drained) |
    | SUPABASE_FLUSH_INTERVAL_S | 1.0 (how often buffered Supabase writes are flushed) |
    """

    host: str = "127.0.0.1"
    port: int = 8070
    breaker_urls: tuple[str, ...] = ("http://127.0.0.1:8080",)
    breaker_token: str | None = None
    dependencies_url: str = "http://127.0.0.1:8090"
    retry_attempts: int = 4
    retry_base_s: float = 1.0
    retry_max_s: float = 30.0
    call_timeout_s: float = 30.0
    sms_drain_interval_s: float = 1.0
    supabase_flush_interval_s: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from `env` (default `os.environ`); unset variables keep their defaults."""
        source = os.environ if env is None else env
        default = cls()

        def number(name: str, value: float) -> float:
            return float(source[name]) if name in source else value

        urls = source.get("BREAKER_URLS")
        return cls(
            host=source.get("ORCHESTRATOR_HOST", default.host),
            port=int(source.get("ORCHESTRATOR_PORT", default.port)),
            breaker_urls=tuple(u.strip() for u in urls.split(",") if u.strip()) if urls else default.breaker_urls,
            breaker_token=source.get("BREAKER_TOKEN") or None,
            dependencies_url=source.get("DEPENDENCIES_URL", default.dependencies_url).rstrip("/"),
            retry_attempts=int(source.get("RETRY_ATTEMPTS", default.retry_attempts)),
            retry_base_s=number("RETRY_BASE_S", default.retry_base_s),
            retry_max_s=number("RETRY_MAX_S", default.retry_max_s),
            call_timeout_s=number("CALL_TIMEOUT_S", default.call_timeout_s),
            sms_drain_interval_s=number("SMS_DRAIN_INTERVAL_S", default.sms_drain_interval_s),
            supabase_flush_interval_s=number("SUPABASE_FLUSH_INTERVAL_S", default.supabase_flush_interval_s),
        )

    def retry_policy(self) -> RetryPolicy:
        """The seed's policy: `attempts` counts every attempt, so 4 is "3 retries at 1 s, 2 s, 4 s" with jitter."""
        return RetryPolicy(
            attempts=self.retry_attempts,
            base_s=self.retry_base_s,
            multiplier=2.0,
            max_s=self.retry_max_s,
            jitter=True,
            timeout_s=self.call_timeout_s,
        )
