"""Probation of a new server: a handshake newer than the restart, or tunnel data over min_window."""

from __future__ import annotations

import pytest

from wgfailover.policy.probation import (
    HANDSHAKE,
    TUNNEL_DATA,
    ProbationReading,
    ProbationRules,
    ProbationVerdict,
    all_failed_holds,
    describe_all_failed,
    judge_probation,
    next_candidate,
    probation_rules,
)

PASSED, FAILED, WAITING = ProbationVerdict.PASSED, ProbationVerdict.FAILED, ProbationVerdict.WAITING
BY_HANDSHAKE = ProbationRules(probation=20, method=HANDSHAKE, min_window=30, threshold=0.15)
BY_DATA = ProbationRules(probation=20, method=TUNNEL_DATA, min_window=30, threshold=0.15)


@pytest.mark.parametrize(
    ("reading", "verdict", "reason"),
    [
        (ProbationReading(elapsed=1), WAITING, "no handshake with server2 yet"),
        (ProbationReading(elapsed=19.9), WAITING, "no handshake with server2 yet"),
        (ProbationReading(elapsed=1.2, handshake_after=0.4), PASSED, "handshake with server2 0s after the restart"),
        (ProbationReading(elapsed=20, handshake_after=19), PASSED, "handshake with server2 19s after the restart"),
        (ProbationReading(elapsed=20), FAILED, "no handshake with server2 within 20s"),
        (ProbationReading(elapsed=300), FAILED, "no handshake with server2 within 20s"),
        # A loss reading means nothing to the handshake method.
        (ProbationReading(elapsed=5, loss=0.0, span=30), WAITING, "no handshake with server2 yet"),
    ],
)
def test_handshake_probation(reading: ProbationReading, verdict: ProbationVerdict, reason: str) -> None:
    judgement = judge_probation("server2", reading, BY_HANDSHAKE)
    assert (judgement.verdict, judgement.reason) == (verdict, reason)


@pytest.mark.parametrize(
    ("reading", "verdict", "reason"),
    [
        # Less than min_window of data since the restart: not yet judged.
        (ProbationReading(elapsed=10, loss=1.0, span=10), WAITING, "waiting for 30s of data"),
        (ProbationReading(elapsed=31, loss=None, span=30), WAITING, "waiting for 30s of data"),
        (ProbationReading(elapsed=31, loss=0.02, span=30), PASSED, "tunnel loss 0.02 <= 0.15 over 30s on server2"),
        (ProbationReading(elapsed=31, loss=0.15, span=30), PASSED, "tunnel loss 0.15 <= 0.15 over 30s on server2"),
        # One full window above the threshold is enough: move on at once.
        (ProbationReading(elapsed=31, loss=1.0, span=30), FAILED, "tunnel loss 1 > 0.15 over 30s on server2"),
        (ProbationReading(elapsed=45, loss=0.4, span=44), FAILED, "tunnel loss 0.4 > 0.15 over 44s on server2"),
        # No data by the limit: twice min_window, as probation (20s) is shorter.
        (ProbationReading(elapsed=59, loss=None, span=58), WAITING, "waiting for 30s of data"),
        (ProbationReading(elapsed=60, loss=None, span=59), FAILED, "no tunnel data over 30s on server2 within 60s"),
        (ProbationReading(elapsed=60), FAILED, "no tunnel data over 30s on server2 within 60s"),
        # Prometheus unusable: kept unconfirmed rather than walking through every server.
        (
            ProbationReading(elapsed=31, span=30, error="connection refused"),
            PASSED,
            "not confirmed, Prometheus unusable (connection refused)",
        ),
    ],
)
def test_tunnel_data_probation(reading: ProbationReading, verdict: ProbationVerdict, reason: str) -> None:
    judgement = judge_probation("server2", reading, BY_DATA)
    assert (judgement.verdict, judgement.reason) == (verdict, reason)


@pytest.mark.parametrize(
    ("probation", "interface", "min_window", "method", "limit", "enabled"),
    [
        (20, "wg0", 30, HANDSHAKE, 20, True),
        (20, None, 30, TUNNEL_DATA, 60, True),
        (90, None, 30, TUNNEL_DATA, 90, True),
        (0, "wg0", 30, HANDSHAKE, 0, False),
        (0, None, 30, TUNNEL_DATA, 60, False),
    ],
)
def test_the_method_follows_health_interface_and_data_needs_twice_min_window(
    probation: float, interface: str | None, min_window: float, method: str, limit: float, enabled: bool
) -> None:
    rules = probation_rules(probation, interface, min_window, 0.15)
    assert (rules.method, rules.limit, rules.enabled) == (method, limit, enabled)


@pytest.mark.parametrize(
    ("order", "tried", "expected"),
    [
        (["server2", "server3"], [], "server2"),
        (["server2", "server3"], ["server2"], "server3"),
        (["server2", "server3"], ["server3"], "server2"),
        (["server2", "server3"], ["server2", "server3"], None),  # one pass, no more
        ([], [], None),
    ],
)
def test_the_pass_goes_through_the_ranking_once(order: list[str], tried: list[str], expected: str | None) -> None:
    assert next_candidate(order, tried) == expected


def test_all_servers_failed_lists_each_with_its_reason_and_where_it_stays() -> None:
    message = describe_all_failed(
        {"server2": "no handshake with server2 within 20s", "server3": "no handshake with server3 within 20s"},
        "server2",
    )
    assert message == (
        "all servers failed (server2: no handshake with server2 within 20s; "
        "server3: no handshake with server3 within 20s); staying on server2"
    )


@pytest.mark.parametrize(
    ("since", "now", "hold_down", "holds"),
    [
        (None, 1000, 1800, False),  # not in that state
        (1000, 1000, 1800, True),
        (1000, 2799, 1800, True),
        (1000, 2800, 1800, False),  # hold_down passed: the next episode may try again
        (1000, 1000, 0, False),  # hold_down 0: every episode tries
        (2000, 1000, 1800, True),  # recorded in the future (clock stepped back): still holds
    ],
)
def test_all_servers_failed_holds_failovers_back_for_hold_down(
    since: float | None, now: float, hold_down: float, holds: bool
) -> None:
    assert all_failed_holds(since, now, hold_down) is holds
