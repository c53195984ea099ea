"""Redis key names (docs/semantics.md, "Redis layout").

Every key of one breaker carries the hash tag `{name}`, so each script touches one cluster slot. The registry
and the audit stream live in slots of their own and are never touched from a script.
"""

from __future__ import annotations

from typing import Final

REGISTRY_KEY: Final = "brk:registry"
AUDIT_KEY: Final = "brk:audit"
AUDIT_MAXLEN: Final = 10_000
EPOCH_KEY: Final = "brk:epoch"
"""String: a random id written when none exists. A changed or missing epoch means the store lost everything."""


def state_key(name: str) -> str:
    """Hash: state fields, counts, permit_seq and the config JSON."""
    return f"brk:{{{name}}}:state"


def permits_key(name: str) -> str:
    """Sorted set: permit id scored by expiry (ms)."""
    return f"brk:{{{name}}}:permits"


def window_key(name: str) -> str:
    """Hash: rate-mode bucket counters."""
    return f"brk:{{{name}}}:window"


def history_key(name: str) -> str:
    """Stream: the breaker's transitions, capped."""
    return f"brk:{{{name}}}:history"


def report_key(name: str, report_id: str) -> str:
    """String: a report_id already counted, expiring after at least permit_ttl_s (lua/record.lua)."""
    return f"brk:{{{name}}}:report:{report_id}"


def breaker_keys(name: str) -> tuple[str, str, str, str]:
    """The KEYS every breaker script takes, in the order `lua/_lib.lua` documents."""
    return state_key(name), permits_key(name), window_key(name), history_key(name)


def probe_key(name: str) -> str:
    """Hash: the dependency's cached probe result (ok, latency_ms, error, at), expiring after three intervals."""
    return f"brk:{{{name}}}:probe"


def probe_lease_key(name: str) -> str:
    """String: the replica holding the right to probe the dependency, expiring after one probe interval."""
    return f"brk:{{{name}}}:probe-lease"


MODE_CURRENT_KEY: Final = "brk:{_mode}:current"
"""Hash: the fleet's degradation mode as last settled. `{_mode}` is a hash tag no breaker name can take."""
MODE_FORCED_KEY: Final = "brk:{_mode}:forced"
"""Hash: the admin override, expiring when its ttl runs out."""
MODE_CHANGE_KEY: Final = "brk:{_mode}:change"
"""Hash: the last admin change of the mode."""


def queue_keys(name: str) -> tuple[str, str, str, str, str]:
    """The KEYS every queue script takes, in the order `lua/queue_lib.lua` documents."""
    return f"q:{{{name}}}:jobs", f"q:{{{name}}}:leases", f"q:{{{name}}}:retry", f"q:{{{name}}}:attempts", dead_key(name)


def dead_key(name: str) -> str:
    """Stream: the queue's dead letters (fields id, payload, attempts, error)."""
    return f"q:{{{name}}}:dead"


def idem_key(name: str, key: str) -> str:
    """String: the job id first enqueued with `key`, expiring after the idempotency TTL."""
    return f"q:{{{name}}}:idem:{key}"


def admin_idempotency_key(scope: str) -> str:
    """String: an admin write's Idempotency-Key entry (store/idempotency_base.py). `scope` is a digest of the actor and
    the key, so it is its own hash tag: the entries spread over the cluster, and a key's text never reaches Redis."""
    return f"brk:idem:{{{scope}}}"
