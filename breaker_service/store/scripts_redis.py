"""The breaker's Lua scripts: read once at import, run by SHA, replies converted where they arrive.

Each `lua/<operation>.lua` runs behind the shared prelude `lua/_lib.lua` (Lua has no `require`), so the SHA is
that of the pair. `register_script` computes it client-side; a server that lost its script cache answers
NOSCRIPT, and the script is loaded and run again.

Every list reply ends with `made`, the transitions that run of the script made (lua/_lib.lua); the store hands them
to its `on_transition` hook, so each replica counts the transitions its own calls made.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import importlib.resources
import math
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import msgspec
import structlog
from redis.asyncio import RedisCluster
from redis.exceptions import NoScriptError

from breaker_client.protocol.machine import new_permit
from breaker_client.protocol.models import (
    BreakerConfig,
    ConfigPatch,
    Counts,
    Decision,
    Force,
    Outcome,
    Snapshot,
    State,
    read_stored_config,
)
from breaker_service.errors import WorkflowError
from breaker_service.events import EVENTS_CHANNEL
from breaker_service.store.batch_redis import ScriptBatcher
from breaker_service.store.breaker_base import patched
from breaker_service.store.keys import breaker_keys, report_key
from breaker_service.store.pipeline_redis import ScriptPipeline, pipelined_address
from breaker_service.store.recollection import Recollection, new_incarnation

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from redis.commands.core import AsyncScript

    from breaker_service.store.connection_redis import RedisClient

TransitionHook: TypeAlias = "Callable[[str, State, State], None]"
"""Called with (breaker, from, to) for each transition a script run by this replica made."""

# The snapshot and decision replies documented in lua/_lib.lua and lua/acquire.lua.
_SnapshotReply: TypeAlias = tuple[bytes, bytes, int, int, int, int, int, bytes, int, int, int, int, bytes, bytes, bytes]
_DecisionReply: TypeAlias = tuple[int, bytes, int, bytes, int]

_STATES: Final = {state.value.encode(): state for state in State}
_ENCODER: Final = msgspec.json.Encoder()
PATCH_ATTEMPTS: Final = 5
log = structlog.get_logger("breaker_service.store")


class Created(enum.IntEnum):
    """create.lua's answer."""

    CAPPED = -1
    EXISTED = 0
    CREATED = 1


def _read(name: str) -> bytes:
    return importlib.resources.files("breaker_service").joinpath(f"lua/{name}.lua").read_bytes()


_PRELUDE: Final = _read("_lib")
SOURCES: Final = {
    operation: _PRELUDE + b"\n" + _read(operation)
    for operation in ("acquire", "record", "snapshot", "configure", "create", "restore", "force", "reset", "delete")
}


@functools.lru_cache(maxsize=1024)
def _config(raw: bytes) -> BreakerConfig:
    # Breakers share a handful of configs; decoding each once keeps the hot path to one msgspec.convert (and a
    # corrected config warns once per process, not once per read).
    config, corrected = read_stored_config(raw)
    if corrected:
        log.warning(
            "stored config corrected: success_threshold lowered to half_open_max_calls",
            success_threshold=config.success_threshold,
        )
    return config


def _snapshot(name: str, raw: Any) -> Snapshot | None:
    if raw is None:
        return None
    (
        machine_state,
        forced_raw,
        generation,
        failures,
        successes,
        opened_at_ms,
        retry_after_ms,
        config,
        success,
        failure,
        rejected,
        forced_until_ms,
        forced_actor,
        forced_reason,
        incarnation,
    ) = msgspec.convert(raw[:15], _SnapshotReply)
    forced = _STATES[forced_raw] if forced_raw else None
    force = None
    if forced is not None:
        force = Force(
            mode=forced,
            until=forced_until_ms / 1000 if forced_until_ms else None,
            actor=forced_actor.decode() or None,
            reason=forced_reason.decode(),
        )
    return Snapshot(
        name=name,
        state=forced or _STATES[machine_state],
        machine_state=_STATES[machine_state],
        forced=forced,
        force=force,
        generation=generation,
        consecutive_failures=failures,
        consecutive_successes=successes,
        opened_at=opened_at_ms / 1000 if opened_at_ms else None,
        retry_after_s=None if retry_after_ms < 0 else retry_after_ms / 1000,
        config=_config(config),
        counts=Counts(success=success, failure=failure, rejected=rejected),
        incarnation=incarnation.decode() or None,
    )


def _decision(raw: Any) -> Decision | None:
    if raw is None:
        return None
    allowed, state, generation, permit, retry_after_ms = msgspec.convert(raw[:5], _DecisionReply)
    return Decision(
        allowed=allowed == 1,
        state=_STATES[state],
        generation=generation,
        permit=permit.decode() if permit else None,
        retry_after_s=None if retry_after_ms < 0 else retry_after_ms / 1000,
    )


def made_transitions(raw: Any) -> list[tuple[State, State]]:
    """The `made` element that ends a snapshot or decision reply: [(from, to), ...]; [] for any other reply."""
    if not isinstance(raw, list) or not raw or not isinstance(raw[-1], bytes):
        return []
    pairs = [pair.partition(b">") for pair in raw[-1].split(b",")] if raw[-1] else []
    if not all(a in _STATES and b in _STATES for a, _, b in pairs):
        return []
    return [(_STATES[a], _STATES[b]) for a, _, b in pairs]


def _optional(value: str | None) -> str:
    # Redis arguments are strings; the scripts read "" as absent.
    return "" if value is None else value


class BreakerScripts:
    """The scripts registered on one client; each method is one EVALSHA and answers None for a missing breaker."""

    def __init__(self, redis: RedisClient, *, on_transition: TransitionHook | None = None) -> None:
        self._redis = redis
        self._on_transition = on_transition
        self._scripts: dict[str, AsyncScript] = {op: redis.register_script(src) for op, src in SOURCES.items()}
        # A standalone Redis (TCP, TLS, Unix socket): a pipelined connection of the scripts' own. Otherwise redis-py's
        # connections: batched per loop iteration (Sentinel), or one call at a time on a cluster, whose pipeline
        # refuses EVALSHA.
        address = pipelined_address(redis)
        self._pipeline = None if address is None else ScriptPipeline(address)
        self._batcher = None if address is not None or isinstance(redis, RedisCluster) else ScriptBatcher(redis)

    async def load(self) -> None:
        """Load every script now, so the first calls do not meet NOSCRIPT."""
        if self._batcher is not None:
            self._batcher.bind(asyncio.get_running_loop())
        for script in self._scripts.values():
            script.sha = await self._redis.script_load(script.script)

    async def _run(self, operation: str, name: str, *args: str | bytes, extra_keys: Sequence[str] = ()) -> Any:
        keys, arguments = (*breaker_keys(name), *extra_keys), (name, EVENTS_CHANNEL, *args)
        script = self._scripts[operation]
        if self._pipeline is not None:
            try:
                raw = await self._pipeline.evalsha(script.sha, keys, arguments)
            except NoScriptError:  # Redis lost its scripts (a restart): the script did not run
                raw = await script(keys=keys, args=arguments)  # loads it, then runs it
        elif self._batcher is not None:
            raw = await self._batcher.run(script, keys, arguments)
        else:
            raw = await script(keys=keys, args=arguments)
        self._report(name, raw)
        return raw

    async def close(self) -> None:
        """Close the scripts' own connection, if they have one."""
        if self._pipeline is not None:
            await self._pipeline.close()

    def _report(self, name: str, raw: Any) -> None:
        if self._on_transition is not None:
            for from_state, to_state in made_transitions(raw):
                self._on_transition(name, from_state, to_state)

    async def acquire(self, name: str, *, lease: bool = False) -> Decision | None:
        """Ask to make one call; the permit it may grant is made here, from `secrets`."""
        return _decision(await self._run("acquire", name, "1" if lease else "", new_permit()))

    async def record(self, name: str, outcome: Outcome) -> Snapshot | None:
        """Take one outcome (once per report_id)."""
        raw = await self._run(
            "record",
            name,
            outcome.outcome,
            str(outcome.count),
            "" if outcome.duration_ms is None else repr(outcome.duration_ms),
            _optional(outcome.permit),
            "" if outcome.generation is None else str(outcome.generation),
            "" if outcome.failures_seen is None else str(outcome.failures_seen),
            extra_keys=() if outcome.report_id is None else (report_key(name, outcome.report_id),),
        )
        return _snapshot(name, raw)

    async def snapshot(self, name: str) -> Snapshot | None:
        """Read one breaker, lifting an expired force."""
        return _snapshot(name, await self._run("snapshot", name))

    async def snapshots(self, names: Sequence[str]) -> list[Snapshot | None]:
        """Read many breakers in one pipeline (one round trip per node)."""
        if isinstance(self._redis, RedisCluster):
            # A cluster pipeline refuses EVALSHA: one call per breaker instead, all in flight at once.
            return list(await asyncio.gather(*(self.snapshot(name) for name in names)))
        script = self._scripts["snapshot"]
        try:
            raws = await self._snapshot_pipeline(script.sha, names)
        except NoScriptError:
            script.sha = await self._redis.script_load(script.script)
            raws = await self._snapshot_pipeline(script.sha, names)
        for name, raw in zip(names, raws, strict=True):
            self._report(name, raw)
        return [_snapshot(name, raw) for name, raw in zip(names, raws, strict=True)]

    async def _snapshot_pipeline(self, sha: str, names: Sequence[str]) -> list[Any]:
        # EVALSHA directly: a pipeline given Script objects first asks SCRIPT EXISTS, a second round trip.
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.evalsha(sha, 4, *breaker_keys(name), name, EVENTS_CHANNEL)
        return await pipe.execute()

    async def create(self, name: str, config: BreakerConfig, *, registry: str | None, cap: int) -> Created:
        """Create a fresh breaker with a new incarnation unless it exists; with `registry`, within `cap` names."""
        keys = (*breaker_keys(name), registry) if registry is not None else breaker_keys(name)
        args = (name, EVENTS_CHANNEL, _ENCODER.encode(config), new_incarnation(), str(cap))
        return Created(int(await self._scripts["create"](keys=keys, args=args)))

    async def restore(
        self, name: str, memory: Recollection, *, epoch: str, after_reset: bool, registry: str | None
    ) -> bool:
        """Put back a breaker the store lost, from `memory`; True when this call restored it (restore.lua)."""
        keys = (*breaker_keys(name), registry) if registry is not None else breaker_keys(name)
        force = memory.force
        args = (
            name,
            EVENTS_CHANNEL,
            epoch,
            memory.incarnation,
            str(memory.generation),
            _ENCODER.encode(memory.config),
            "" if force is None else force.mode.value,
            "" if force is None or force.ttl_ms is None else str(force.ttl_ms),
            "" if force is None else _optional(force.actor),
            "" if force is None else force.reason,
            "reset" if after_reset else "lost",
        )
        return bool(await self._scripts["restore"](keys=keys, args=args))

    async def update(self, name: str, config: BreakerConfig, *, actor: str | None, reason: str) -> Snapshot | None:
        """Replace the config of an existing breaker, audited in its history."""
        raw = await self._run("configure", name, "update", _ENCODER.encode(config), _optional(actor), reason)
        return _snapshot(name, raw)

    async def patch(self, name: str, patch: ConfigPatch, *, actor: str | None, reason: str) -> Snapshot | None:
        """Merge `patch` into the stored config and check it (msgspec), then store it by compare-and-set: if another
        writer changed the config meanwhile, merge again. Audited in the breaker's history."""
        for _ in range(PATCH_ATTEMPTS):
            current = await self._run("snapshot", name)
            if current is None:
                return None
            stored: bytes = current[7]
            merged = patched(_config(stored), patch)
            raw = await self._run("configure", name, "patch", _ENCODER.encode(merged), _optional(actor), reason, stored)
            if raw != 0:
                return _snapshot(name, raw)
        raise WorkflowError(f"the config of {name!r} kept changing while it was patched; try again")

    async def force(
        self, name: str, mode: State, *, reason: str, ttl_s: float | None, actor: str | None
    ) -> Snapshot | None:
        """Pin the breaker OPEN or CLOSED."""
        ttl_ms = "" if ttl_s is None else str(math.floor(ttl_s * 1000))
        return _snapshot(name, await self._run("force", name, mode.value, reason, ttl_ms, _optional(actor)))

    async def reset(self, name: str, *, reason: str, actor: str | None) -> Snapshot | None:
        """Fresh CLOSED, counts zeroed, force lifted."""
        return _snapshot(name, await self._run("reset", name, reason, _optional(actor)))

    async def delete(self, name: str) -> bool:
        """Remove the breaker's keys; True when it existed."""
        return bool(await self._run("delete", name))
