"""The breaker config file (TOML): defaults, per-breaker overrides and probe URLs, queues.

```toml
[defaults]                      # BreakerConfig fields; omitted ones take the seed's defaults
failure_threshold = 5
probe_interval_s = 10.0         # not BreakerConfig fields: how often, and how patiently, probe URLs are probed
probe_timeout_s = 2.0

[breakers.sms_agent]            # declared at start; fields override [defaults]
open_timeout_s = 30
probe_url = "http://sms-agent:8000/health"

[breakers.sms_agent.retry]      # the retry policy of clients that pass none; replaces [defaults.retry] whole
attempts = 4                    # every attempt counts: 4 is "3 retries at 1 s, 2 s, 4 s"
base_s = 1.0
multiplier = 2.0
max_s = 30.0
jitter = true

[queues.sms_outbox]
max_attempts = 5
```

Without `BREAKER_CONFIG` the bundled `default_config.toml` applies. Unknown keys are rejected and every error
names the file and the table.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import Meta, Struct, field

from breaker_client.protocol.models import NAME_PATTERN, BreakerConfig, PositiveInt, is_valid_name

T = TypeVar("T", bound=Struct)

BUNDLED: Final = "default_config.toml"
RESERVED_NAMES: Final = frozenset({"redis"})
"""Names a declared breaker cannot take: `/health/dependencies` reports the store under `redis`."""

ProbeUrl = Annotated[str, Meta(pattern=r"^https?://\S+\Z", max_length=2000)]
ProbeSeconds = Annotated[float, Meta(gt=0, le=3600)]
PROBE_FIELDS: Final = ("probe_interval_s", "probe_timeout_s")
"""Keys of `[defaults]` that are not BreakerConfig fields: they set the active probes, for every probe URL."""


class ConfigError(Exception):
    """The config file cannot be read or holds a bad value."""


class QueueConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[queues.<name>]`."""

    max_attempts: PositiveInt = 5


class DeclaredBreaker(Struct, frozen=True, kw_only=True):
    """A breaker named in the config file: its merged config and optional probe URL."""

    config: BreakerConfig
    probe_url: ProbeUrl | None = None


class ProbeTiming(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`probe_interval_s` and `probe_timeout_s` from `[defaults]`: the fleet probes each URL once per interval."""

    probe_interval_s: ProbeSeconds = 10.0
    probe_timeout_s: ProbeSeconds = 2.0

    def __post_init__(self) -> None:
        if self.probe_timeout_s > self.probe_interval_s:
            raise ValueError("probe_timeout_s must not exceed probe_interval_s")


class ServiceConfig(Struct, frozen=True, kw_only=True):
    """The parsed config file."""

    source: str
    defaults: BreakerConfig
    breakers: dict[str, DeclaredBreaker] = field(default_factory=dict)
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    probes: ProbeTiming = field(default_factory=ProbeTiming)


class _File(Struct, forbid_unknown_fields=True, kw_only=True):
    defaults: dict[str, Any] = field(default_factory=dict)
    breakers: dict[str, dict[str, Any]] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)


class ConfigResolver:
    """name -> BreakerConfig: the breaker's config-file override merged over the defaults, else the defaults."""

    def __init__(self, config: ServiceConfig) -> None:
        self._config = config

    def __call__(self, name: str) -> BreakerConfig:
        declared = self._config.breakers.get(name)
        return declared.config if declared is not None else self._config.defaults


def load_config(path: str | Path | None = None) -> ServiceConfig:
    """Read `path`, or the bundled default when None; raise `ConfigError` naming the file on any problem."""
    if path is None:
        source = f"<bundled {BUNDLED}>"
        text = resources.files("breaker_service").joinpath(BUNDLED).read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read: {exc}") from None
    return parse_config(text, source=source)


def parse_config(text: str, *, source: str) -> ServiceConfig:
    """Parse and validate the TOML text of a config file."""
    try:
        raw = msgspec.convert(tomllib.loads(text), _File)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    timing = {key: raw.defaults.pop(key) for key in PROBE_FIELDS if key in raw.defaults}
    probes = _convert(timing, ProbeTiming, source, "[defaults]")
    defaults = _convert(raw.defaults, BreakerConfig, source, "[defaults]")
    base = msgspec.structs.asdict(defaults)
    breakers: dict[str, DeclaredBreaker] = {}
    for name, table in raw.breakers.items():
        where = f"[breakers.{name}]"
        _check_name(name, source, where)
        if name in RESERVED_NAMES:
            raise ConfigError(f"{source}: {where}: the name {name!r} is reserved")
        overrides = dict(table)
        probe_url = overrides.pop("probe_url", None)
        config = _convert(base | overrides, BreakerConfig, source, where)
        breakers[name] = _convert({"config": config, "probe_url": probe_url}, DeclaredBreaker, source, where)
    queues: dict[str, QueueConfig] = {}
    for name, table in raw.queues.items():
        _check_name(name, source, f"[queues.{name}]")
        queues[name] = _convert(table, QueueConfig, source, f"[queues.{name}]")
    return ServiceConfig(source=source, defaults=defaults, breakers=breakers, queues=queues, probes=probes)


def _convert(value: object, kind: type[T], source: str, where: str) -> T:
    try:
        return msgspec.convert(value, kind, from_attributes=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from None


def _check_name(name: str, source: str, where: str) -> None:
    if not is_valid_name(name):
        raise ConfigError(f"{source}: {where}: the name must match {NAME_PATTERN}")
