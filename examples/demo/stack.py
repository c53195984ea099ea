"""The demo's processes on 127.0.0.1 and free ports: Redis (or none), service replicas, the fakes, the orchestrator.

`DemoStack` is a context manager: every process it started is stopped on exit (SIGTERM, then SIGKILL), also when
the body raises or is interrupted (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import httpx

from tests.fixtures.process import HOST, ManagedProcess, ProcessError
from tests.fixtures.redis_server import RedisServer, redis_server_binary
from tests.fixtures.service import REPO_ROOT, ServiceProcess, deployed_env

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

__all__ = ["ADMIN_ACTOR", "DemoStack", "StackSettings"]

ADMIN_ACTOR: Final = "sre-oncall"
START_TIMEOUT_S: Final = 60.0  # a busy machine starts a Python process slowly

P = TypeVar("P", bound=ManagedProcess)


@dataclass(frozen=True, kw_only=True)
class StackSettings:
    """The breaker config and the orchestrator's patience; the defaults are the demo's (shorter than the seed's)."""

    replicas: int = 2
    open_timeout_s: float = 5.0
    retry_base_s: float = 0.1
    retry_max_s: float = 2.0
    call_timeout_s: float = 1.0
    drain_interval_s: float = 0.5
    flush_interval_s: float = 0.5
    probe_interval_s: float = 2.0

    def breaker_config(self, fakes_url: str) -> str:
        """The service's TOML: the seed's five breakers (threshold 5, 3 probes) with probe URLs on the fakes."""
        lines = [
            "[defaults]",
            "failure_threshold = 5",
            f"open_timeout_s = {self.open_timeout_s}",
            "success_threshold = 3",
            "half_open_max_calls = 3",
            "permit_ttl_s = 10.0",
            f"probe_interval_s = {self.probe_interval_s}",
            "probe_timeout_s = 1.0",
        ]
        for name in ("collections_monitor", "sms_agent", "notification_service", "supabase", "openai"):
            lines += ["", f"[breakers.{name}]", f'probe_url = "{fakes_url}/{name}/health"']
        # A queued SMS may meet a failing agent in a few half-open windows; it must not run out of attempts.
        lines += ["", "[queues.sms_outbox]", "max_attempts = 50", ""]
        return "\n".join(lines)


class ModuleProcess(ManagedProcess):
    """`python -m <module>` listening on `<port_variable>`, ready once `GET /health` answers 200."""

    what = "a demo process"
    start_timeout_s = START_TIMEOUT_S
    poll_interval_s = 0.05

    def __init__(self, directory: Path, module: str, port_variable: str, env: Mapping[str, str]) -> None:
        super().__init__(directory)
        self._module = module
        self._port_variable = port_variable
        self._env = dict(env)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def output_path(self) -> Path:
        return self._directory / f"{self._module.rsplit('.', 1)[-1]}.log"

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**self._env, self._port_variable: str(self.port), "PYTHONUNBUFFERED": "1"}
        with self.output_path.open("ab") as output:
            return subprocess.Popen(
                [sys.executable, "-m", self._module],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    @contextlib.contextmanager
    def _readiness(self) -> Iterator[Callable[[], bool]]:
        with httpx.Client(base_url=self.url, timeout=1.0) as client:

            def ready() -> bool:
                try:
                    return client.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            yield ready


class DemoStack:
    """Starts, in `directory`: Redis (`redis_url` given, or a redis-server of its own when installed, else the
    memory store and one replica), the service replicas, the fakes and the orchestrator."""

    def __init__(self, directory: Path, settings: StackSettings, *, redis_url: str | None = None) -> None:
        self.directory = directory
        self.settings = settings
        self.admin_token = secrets.token_urlsafe(24)
        self._given_redis_url = redis_url
        self.redis_url: str | None = None
        self.replicas: list[ServiceProcess] = []
        self._processes: list[ManagedProcess] = []
        self._fakes: ModuleProcess | None = None
        self._orchestrator: ModuleProcess | None = None

    @property
    def fakes_url(self) -> str:
        if self._fakes is None:
            raise RuntimeError("the stack is not started")
        return self._fakes.url

    @property
    def orchestrator_url(self) -> str:
        if self._orchestrator is None:
            raise RuntimeError("the stack is not started")
        return self._orchestrator.url

    @property
    def service_urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    @property
    def store(self) -> str:
        return "redis" if self.redis_url else "memory"

    def __enter__(self) -> DemoStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redis_url = self._given_redis_url
        if self.redis_url is None and redis_server_binary() is not None:
            self.redis_url = self._started(RedisServer(self.directory / "redis")).url
        base = deployed_env(None)
        self._fakes = ModuleProcess(self.directory / "fakes", "examples.fake_dependencies", "FAKES_PORT", base)
        config = self.directory / "breakers.toml"
        config.write_text(self.settings.breaker_config(self._fakes.url))
        service_env = {
            **deployed_env(self.redis_url),
            "BREAKER_CONFIG": str(config),
            "BREAKER_ADMIN_TOKENS": f"{ADMIN_ACTOR}:{self.admin_token}",
            "PYTHONUNBUFFERED": "1",
        }
        count = self.settings.replicas if self.redis_url else 1  # the memory store serves one replica only
        self.replicas = [ServiceProcess(self.directory / f"replica-{i + 1}", service_env) for i in range(count)]
        with ThreadPoolExecutor(max_workers=count + 1) as pool:
            for future in [pool.submit(self._started, p) for p in (self._fakes, *self.replicas)]:
                future.result()
        self._orchestrator = self._started(
            ModuleProcess(
                self.directory / "orchestrator",
                "examples.orchestrator",
                "ORCHESTRATOR_PORT",
                self._orchestrator_env(base),
            )
        )

    def stop(self) -> None:
        """Stop every process started, newest first; go on past one that fails to stop."""
        errors: list[ProcessError] = []
        for process in reversed(self._processes):
            try:
                process.stop()
            except ProcessError as exc:
                errors.append(exc)
        self._processes.clear()
        if errors:
            raise errors[0]

    def log_paths(self) -> list[Path]:
        """Every process's output: the orchestrator's and the replicas' JSON log lines among them."""
        return sorted(p for pattern in ("*.log", "*.stdout", "*.stderr") for p in self.directory.rglob(pattern))

    def _orchestrator_env(self, base: Mapping[str, str]) -> dict[str, str]:
        s = self.settings
        return {
            **base,
            "BREAKER_URLS": ",".join(self.service_urls),
            "DEPENDENCIES_URL": self.fakes_url,
            "RETRY_ATTEMPTS": "4",
            "RETRY_BASE_S": str(s.retry_base_s),
            "RETRY_MAX_S": str(s.retry_max_s),
            "CALL_TIMEOUT_S": str(s.call_timeout_s),
            "SMS_DRAIN_INTERVAL_S": str(s.drain_interval_s),
            "SUPABASE_FLUSH_INTERVAL_S": str(s.flush_interval_s),
        }

    def _started(self, process: P) -> P:
        self._processes.append(process)
        process.start()
        return process
