"""Schemathesis against `/openapi.json` of a real replica: no 5xx, and no answer that contradicts the document.

Schemathesis runs as its own command (`schemathesis run`), whose engine runs every phase: the document's examples,
coverage (boundary and invalid values of every parameter), fuzzing, and the stateful phase that chains operations
along the links it infers (a breaker or queue named by one call is used by the next: 57 links). It runs once with
an admin token, once with a client token and once with none. Every default check is on: no server error; status
codes, content types, headers and bodies as documented; valid data accepted, invalid data refused.

Two relaxations, said here so they are not hidden (`CONFIG`):
- `use_after_free` is off: acquire, record, PUT and force create a breaker they do not know (the contract), so a
  chain that deletes a breaker and then uses its name again brings it back, by design;
- `positive_data_acceptance` also accepts 422: the document cannot state the cross-field rules (`window_s` needs a
  rate; a permit reports one call; `success_threshold <= half_open_max_calls`), and JSON Schema counts `3.0` as an
  integer where the service, a strict writer's reader, wants `3`. Those answers are the contract's 422 ORC_001,
  which the other checks validate.

The examples are bounded (`EXAMPLES`) and the seed is fixed, so a run costs ~60 s on a busy 2-core machine and
draws the same cases each time (a change in the document or the code changes them); run
`schemathesis run URL/openapi.json` by hand, without `--seed`, to explore further. The `fuzz` marker lets a tier
skip the module (`-m "not fuzz"`); `make test` runs it.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Final

import pytest

from tests.fixtures.service import ADMIN_HEADERS, CLIENT_HEADERS

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.service import ServiceFactory

pytestmark = pytest.mark.fuzz

SEED: Final = 20261204
EXAMPLES: Final = {"admin": 8, "client": 6, "none": 2}
"""Examples per operation and phase, by token: the admin reaches every route, no token only the open ones."""
TOKENS: Final = {"admin": ADMIN_HEADERS, "client": CLIENT_HEADERS, "none": {}}
RUN_TIMEOUT_S: Final = 300.0
"""A hang guard for one run, far above its cost; not a speed assertion."""
CONFIG: Final = """
max-stream-events = 1  # /events never ends: read its opening snapshot, then stop
request-timeout = 30

[checks]
positive_data_acceptance.expected-statuses = ["2XX", "401", "403", "404", "409", "413", "422"]
use_after_free.enabled = false
"""


@pytest.mark.parametrize("token", list(TOKENS))
def test_every_operation_answers_as_documented(service_factory: ServiceFactory, token: str, tmp_path: Path) -> None:
    replica = service_factory(None).url  # a fresh one per token: what one run leaves does not steer the next
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    headers = [arg for name, value in TOKENS[token].items() for arg in ("--header", f"{name}: {value}")]
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{replica}/openapi.json",
        *headers,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(EXAMPLES[token]),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--no-color",
    ]

    run = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, cwd=tmp_path)

    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    assert "Failures:" not in run.stdout, run.stdout[-20_000:]
