"""Which span a health check judges: a table of (settings, now, last check, last switch) in, a Span out."""

from __future__ import annotations

import pytest

from wgfailover.config import HealthSettings
from wgfailover.policy.spans import plan_span
from wgfailover.state import CheckRecord, SwitchRecord

NOW = 1_700_000_000.0
# window 300s, min_window 30s
HEALTH = HealthSettings()


def switch_record(seconds_ago: float, seq: int = 1) -> SwitchRecord:
    return SwitchRecord(seq=seq, time=NOW - seconds_ago, from_server="server1", to_server="server2", reason="x")


def check_record(seconds_ago: float) -> CheckRecord:
    return CheckRecord(time=NOW - seconds_ago, loss=0.5, span=60)


@pytest.mark.parametrize(
    ("last_check_ago", "switch_ago", "seconds", "waiting", "reason"),
    [
        (None, None, 300, False, "first check: all of health.window"),
        (45, None, 45, False, "since the last check"),
        (45.4, None, 45, False, "since the last check"),
        (30, None, 30, False, "since the last check"),
        (1000, None, 300, False, "last check 1000s ago: cut to health.window"),
        (-20, None, 30, False, "last check recorded in the future: health.min_window"),  # clock stepped back
        (0, None, 0, True, "too soon after the last check: 0s of new data, 30s needed"),
        (29.5, None, 29.5, True, "too soon after the last check: 30s of new data, 30s needed"),
        (60, 10, 10, True, "waiting for data since the switch: 10s of 30s"),
        (200, 45, 45, False, "since the last switch"),
        (200, 45.9, 45, False, "since the last switch"),  # rounded down: never a second before it
        (60, 500, 60, False, "since the last check"),
        (None, 45, 45, False, "since the last switch"),
    ],
)
def test_the_span_is_the_time_since_the_last_check_clipped_and_cut_at_the_switch(
    last_check_ago: float | None, switch_ago: float | None, seconds: float, waiting: bool, reason: str
) -> None:
    last_check = check_record(last_check_ago) if last_check_ago is not None else None
    last_switch = switch_record(switch_ago) if switch_ago is not None else None
    span = plan_span(HEALTH, NOW, last_check, last_switch)
    assert (span.seconds, span.waiting, span.reason) == (seconds, waiting, reason)
    assert span.warning is None


def test_a_switch_recorded_in_the_future_judges_min_window_with_a_warning() -> None:
    span = plan_span(HEALTH, NOW, None, switch_record(-3600))
    assert (span.seconds, span.waiting) == (30, False)
    assert span.warning == (
        "the last switch is recorded 3600s in the future (was the clock changed?); judging at most 30s"
    )


@pytest.mark.parametrize(
    ("last_check_ago", "seconds", "waiting", "reason"),
    [
        # The too-soon rule holds: three quick runs must not count one minute three times.
        (0, 0, True, "too soon after the last check: 0s of new data, 30s needed"),
        (5, 5, True, "too soon after the last check: 5s of new data, 30s needed"),
        (45, 30, False, "last switch recorded in the future: health.min_window"),
        (-20, 30, False, "last check recorded in the future: health.min_window"),
        (None, 30, False, "last switch recorded in the future: health.min_window"),
    ],
)
def test_a_switch_recorded_in_the_future_keeps_every_other_rule(
    last_check_ago: float | None, seconds: float, waiting: bool, reason: str
) -> None:
    last_check = check_record(last_check_ago) if last_check_ago is not None else None
    span = plan_span(HEALTH, NOW, last_check, switch_record(-3600))
    assert (span.seconds, span.waiting, span.reason) == (seconds, waiting, reason)
    assert span.warning is not None and "in the future" in span.warning
