"""What wg-health-check prints for each outcome, as text and as JSON."""

from __future__ import annotations

import json

import pytest

from wgfailover.actions.health_check import HealthResult
from wgfailover.evidence.readings import TunnelReading
from wgfailover.output.health_check import check_to_json, describe_check
from wgfailover.policy.health import HealthOutcome
from wgfailover.policy.spans import Span

SINCE_LAST = Span(seconds=60, reason="since the last check")


def result(outcome: HealthOutcome, loss: float | None, before: int, after: int, **extra: object) -> HealthResult:
    reading = TunnelReading(source="prometheus", loss=loss, span=60)
    fields: dict = dict(
        outcome=outcome,
        span=SINCE_LAST,
        reading=reading,
        failures_before=before,
        failures=after,
        max_failures=3,
        threshold=0.15,
    )
    fields.update(extra)
    return HealthResult(**fields)


@pytest.mark.parametrize(
    ("check", "text"),
    [
        (result(HealthOutcome.HEALTHY, 0.0, 0, 0), "healthy: loss 0 <= 0.15 over 60s; failures 0 of 3"),
        (result(HealthOutcome.HEALTHY, 0.0, 2, 0), "healthy: loss 0 <= 0.15 over 60s; reset failures 2 of 3 to 0"),
        (result(HealthOutcome.FAILURE, 0.5, 0, 1), "unhealthy: loss 0.5 > 0.15 over 60s; count failure 1 of 3"),
        (
            result(HealthOutcome.FAILOVER, 0.5, 2, 0, trigger="in-process", dry_run=True),
            "unhealthy: loss 0.5 > 0.15 over 60s; would count failure 3 of 3 and fail over (in-process)",
        ),
        (
            result(HealthOutcome.IGNORED, None, 1, 1),
            "no data over 60s; ignored (health.on_no_data = ignore); failures 1 of 3",
        ),
        (
            result(HealthOutcome.SUPERSEDED, 0.5, 1, 1),
            "loss 0.5 > 0.15 over 60s; not counted: the server was switched, or another check ran, while measuring",
        ),
    ],
)
def test_each_outcome_is_one_line_saying_what_was_seen_and_done(check: HealthResult, text: str) -> None:
    assert describe_check(check) == text


def test_waiting_prints_why() -> None:
    span = Span(seconds=10, reason="waiting for data since the switch: 10s of 30s", waiting=True)
    waiting = HealthResult(
        outcome=HealthOutcome.WAITING,
        span=span,
        reading=None,
        failures_before=1,
        failures=1,
        max_failures=3,
        threshold=0.15,
    )
    assert describe_check(waiting) == "waiting for data since the switch: 10s of 30s"
    assert check_to_json(waiting)["outcome"] == "waiting"
    assert check_to_json(waiting)["loss"] is None


def test_the_json_is_one_serialisable_object_with_the_message() -> None:
    check = result(HealthOutcome.FAILURE, 0.5, 0, 1)
    document = json.loads(json.dumps(check_to_json(check)))
    assert document["outcome"] == "failure"
    assert (document["loss"], document["failures_before"], document["failures"]) == (0.5, 0, 1)
    assert document["message"] == describe_check(check)
