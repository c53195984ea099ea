"""Schemathesis against `/openapi.json` of a real replica: no 5xx, and no answer that contradicts the document.

Every operation is fuzzed with an admin token, a client token and no token (stateless phase), then the stateful
phase chains operations along the links Schemathesis infers (a breaker or queue named in one call is used in the
next), with the admin and the client token. All of Schemathesis's default checks run: status codes, content types,
headers and bodies against the document, no server error, and valid data accepted / invalid data refused.

Two relaxations, said here so they are not hidden. `use_after_free` is off: acquire, record, PUT and force create
a breaker they do not know (the contract), so a chain that deletes a breaker and uses its name again brings it
back. And `positive_data_acceptance` also accepts 422. The document cannot
state the cross-field rules (`window_s` needs a rate; a permit reports one call; `success_threshold <=
half_open_max_calls`), and JSON Schema counts `3.0` as an integer where the service, a strict writer's reader,
wants `3`; such requests are refused with the contract's 422 ORC_001 body, which the other checks validate.

Examples are bounded (`EXAMPLES`, `STATEFUL_EXAMPLES`) so the module costs well under 90 s on a busy 2-core
machine; the `fuzz` marker lets a tier skip it (`-m "not fuzz"`), `make test` runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok

from tests.fixtures.service import ADMIN_HEADERS, CLIENT_HEADERS

if TYPE_CHECKING:
    from schemathesis.schemas import BaseSchema

    from tests.fixtures.service import ServiceFactory

pytestmark = pytest.mark.fuzz

EXAMPLES: Final = 25
"""Examples per operation and token in the stateless phase."""
STATEFUL_EXAMPLES: Final = 30
STATEFUL_STEPS: Final = 10
TOKENS: Final = {"admin": ADMIN_HEADERS, "client": CLIENT_HEADERS, "none": {}}
CONFIG: Final = {
    "max-stream-events": 1,  # /events never ends: read its opening snapshot, then stop
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ["2XX", "401", "403", "404", "409", "413", "422"]},
        # acquire, record, PUT and force create a breaker they do not know (the contract), so a chain that deletes
        # a breaker and then uses its name again brings it back: "deleted resource still available" by design.
        "use_after_free": {"enabled": False},
    },
}


def _settings(max_examples: int, **more: Any) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,  # no .hypothesis/ directory: each run draws fresh examples
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure reports its first example
        suppress_health_check=list(HealthCheck),
        **more,
    )


@pytest.fixture(scope="module")
def schema_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A replica on the memory store with the test tokens, for the whole module."""
    from tests.fixtures.service import ServiceFactory

    factory: ServiceFactory = ServiceFactory(tmp_path_factory.mktemp("fuzz"))
    try:
        yield factory(None).url
    finally:
        factory.stop_all()


def load(url: str) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=SchemathesisConfig.from_dict(CONFIG))


@pytest.mark.parametrize("token", list(TOKENS))
def test_every_operation_answers_as_documented(schema_url: str, token: str) -> None:
    schema = load(schema_url)
    failures: list[str] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"the document has an invalid operation: {result.err()}")
            continue
        operation = result.ok()

        @given(case=operation.as_strategy())
        @_settings(EXAMPLES)
        def run(case: Any) -> None:
            case.call_and_validate(headers=TOKENS[token])

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label} with {token} token:\n{exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("token", ["admin", "client"])
def test_chained_operations_answer_as_documented(schema_url: str, token: str) -> None:
    machine = load(schema_url).as_state_machine()

    class WithToken(machine):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": dict(TOKENS[token])}

    WithToken.run(settings=_settings(STATEFUL_EXAMPLES, stateful_step_count=STATEFUL_STEPS))
