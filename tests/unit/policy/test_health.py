"""The failure counter: sequences of tunnel readings in, decisions out.

Each row replays checks one after another through decide_check, carrying
the counter as the live check carries it in state_dir/health-failures.
"""

from __future__ import annotations

import pytest

from wgfailover.config import HealthSettings
from wgfailover.evidence.readings import HandshakeCheck, TunnelReading
from wgfailover.policy.health import CheckDecision, CheckEvidence, CheckState, HealthOutcome, decide_check

HEALTHY = HealthOutcome.HEALTHY
FAILURE = HealthOutcome.FAILURE
FAILOVER = HealthOutcome.FAILOVER
IGNORED = HealthOutcome.IGNORED
NO_DATA = None


def replay(losses: list[float | None], settings: HealthSettings, failures: int = 0) -> list[tuple[str, int]]:
    """Given one loss per check (None: no data), return (outcome, counter after) per check."""
    seen = []
    for number, loss in enumerate(losses):
        reading = TunnelReading(source="prometheus", loss=loss, span=60)
        decision = decide_check(CheckEvidence(time=60.0 * number, tunnel=reading), settings, CheckState(failures))
        failures = decision.failures
        seen.append((decision.outcome.value, failures))
    return seen


@pytest.mark.parametrize(
    ("losses", "settings", "expected"),
    [
        # Three bad checks in a row fail over and reset the counter.
        ([0.5, 0.5, 0.5], HealthSettings(), [("failure", 1), ("failure", 2), ("failover", 0)]),
        # One good check in between resets the count: no failover.
        (
            [0.5, 0.5, 0.0, 0.5, 0.5],
            HealthSettings(),
            [("failure", 1), ("failure", 2), ("healthy", 0)] + [("failure", 1), ("failure", 2)],
        ),
        # Equal to the threshold is healthy; just above is not.
        ([0.15, 0.150001], HealthSettings(), [("healthy", 0), ("failure", 1)]),
        # After a failover the count starts again from zero.
        ([0.9] * 4, HealthSettings(max_failures=2), [("failure", 1), ("failover", 0), ("failure", 1), ("failover", 0)]),
        # max_failures = 1: every bad check fails over.
        ([0.2, 0.0, 0.2], HealthSettings(max_failures=1), [("failover", 0), ("healthy", 0), ("failover", 0)]),
        # No data counts as a failure by default ...
        ([NO_DATA, NO_DATA, NO_DATA], HealthSettings(), [("failure", 1), ("failure", 2), ("failover", 0)]),
        # ... and leaves the counter as it was with on_no_data = "ignore".
        (
            [0.5, NO_DATA, 0.5, NO_DATA, 0.5],
            HealthSettings(on_no_data="ignore"),
            [("failure", 1), ("ignored", 1), ("failure", 2), ("ignored", 2), ("failover", 0)],
        ),
        # A higher threshold tolerates what a lower one would not.
        ([0.2, 0.2, 0.2], HealthSettings(threshold=0.25), [("healthy", 0)] * 3),
    ],
)
def test_a_sequence_of_checks_counts_and_fails_over(
    losses: list[float | None], settings: HealthSettings, expected: list[tuple[str, int]]
) -> None:
    assert replay(losses, settings) == expected


def test_a_counter_above_max_failures_fails_over_at_the_next_failure() -> None:
    # max_failures was lowered since the counter was written.
    assert replay([0.5], HealthSettings(max_failures=3), failures=7) == [("failover", 0)]


@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        (
            TunnelReading(source="prometheus", loss=0.42, span=60),
            CheckDecision(outcome=FAILOVER, failures=0, reason="health-check: loss 0.42 > 0.15 for 3 checks"),
        ),
        (
            TunnelReading(source="prometheus", loss=None, span=60),
            CheckDecision(outcome=FAILOVER, failures=0, reason="health-check: no data for 3 checks"),
        ),
        (
            TunnelReading(
                source="handshake",
                loss=None,
                span=None,
                handshake=HandshakeCheck(interface="wg0", newest=1.0, age=400.0, timeout=180),
            ),
            CheckDecision(
                outcome=FAILOVER,
                failures=0,
                reason="health-check: newest handshake on wg0 400s ago (limit 180s) for 3 checks",
            ),
        ),
        (
            TunnelReading(
                source="handshake",
                loss=None,
                span=None,
                handshake=HandshakeCheck(interface="wg0", newest=1.0, age=10.0, timeout=180),
            ),
            CheckDecision(outcome=HEALTHY, failures=0),
        ),
    ],
)
def test_the_failover_reason_says_what_was_seen_for_how_many_checks(
    reading: TunnelReading, expected: CheckDecision
) -> None:
    assert decide_check(CheckEvidence(time=0.0, tunnel=reading), HealthSettings(), CheckState(failures=2)) == expected


def test_outcomes_print_as_their_values() -> None:
    assert [str(outcome) for outcome in HealthOutcome] == [
        "healthy",
        "failure",
        "failover",
        "ignored",
        "waiting",
        "superseded",
        "local fault",
        "held",
    ]
