"""The wire models' own rules (breaker_client.protocol.models): what a request may say, how a stored config reads."""

from __future__ import annotations

import msgspec
import pytest

from breaker_client.protocol.machine import BreakerMachine
from breaker_client.protocol.models import (
    BreakerConfig,
    ConfigPatch,
    Decision,
    Outcome,
    Snapshot,
    read_stored_config,
)


def test_success_threshold_above_half_open_max_calls_is_refused_naming_both_fields() -> None:
    with pytest.raises(msgspec.ValidationError) as refused:
        msgspec.json.decode(b'{"success_threshold": 4, "half_open_max_calls": 3}', type=BreakerConfig)

    assert "success_threshold (4)" in str(refused.value)
    assert "half_open_max_calls (3)" in str(refused.value)


def test_a_stored_config_that_breaks_the_probe_rule_reads_corrected() -> None:
    config, corrected = read_stored_config(
        b'{"success_threshold": 5, "half_open_max_calls": 2, "failure_threshold": 7}'
    )

    assert corrected
    assert (config.success_threshold, config.half_open_max_calls, config.failure_threshold) == (2, 2, 7)
    assert read_stored_config(msgspec.json.encode(BreakerConfig())) == (BreakerConfig(), False)


def test_a_patch_merges_given_fields_and_unsets_null_ones() -> None:
    base = BreakerConfig(window_s=10.0, min_calls=5, failure_rate=0.5)
    patch = msgspec.json.decode(b'{"failure_threshold": 9, "window_s": null, "min_calls": null, "failure_rate": null}')

    merged = msgspec.convert(patch, ConfigPatch).apply(base)

    assert merged == BreakerConfig(failure_threshold=9)


@pytest.mark.parametrize(
    "body",
    [b'{"failure_threshold": 0}', b'{"nonsense": 1}', b'{"success_threshold": "3"}'],
)
def test_a_patch_checks_each_field_and_refuses_unknown_ones(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body, type=ConfigPatch)


@pytest.mark.parametrize("report_id", ["", "a" * 65, "has space", "trailing-newline\n", "slash/"])
def test_a_report_id_must_match_its_pattern_whole(report_id: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"outcome": "success", "report_id": report_id}, Outcome)


def test_an_outcome_may_report_rejected_calls_but_never_with_a_permit() -> None:
    assert msgspec.convert({"outcome": "rejected", "count": 4}, Outcome).count == 4
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"outcome": "rejected", "permit": "p"}, Outcome)


def test_answers_are_read_tolerantly_requests_strictly() -> None:
    decision = b'{"allowed": true, "state": "CLOSED", "generation": 3, "added_in_a_later_version": {"x": 1}}'
    assert msgspec.json.decode(decision, type=Decision).generation == 3
    snapshot = msgspec.json.encode(
        {
            **msgspec.structs.asdict(BreakerMachine(name="svc", config=BreakerConfig()).view(0)),
            "incarnation": "later",
        }
    )
    assert msgspec.json.decode(snapshot, type=Snapshot).name == "svc"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"outcome": "success", "added_in_a_later_version": 1}', type=Outcome)
