"""Checks that fail while the fault is elsewhere: a local fault, and all servers failed.

Each row replays checks through decide_check, carrying the counter (and
the all-servers-failed time) as the live check carries them in state_dir.
"""

from __future__ import annotations

import pytest

from wgfailover.config import HealthSettings
from wgfailover.evidence.readings import HandshakeCheck, TunnelReading
from wgfailover.policy.health import CheckEvidence, CheckState, HealthOutcome, decide_check
from wgfailover.policy.local_fault import find_local_fault

SETTINGS = HealthSettings(threshold=0.15, max_failures=3)
UPLINK_DOWN = {"server1": 1.0, "server2": 1.0, "server3": 1.0}
SERVER1_DOWN = {"server1": 1.0, "server2": 0.0, "server3": 0.0}
WIREGUARD_DEAD = {"server1": 0.0, "server2": 0.0, "server3": 0.0}  # every endpoint still answers pings


def replay(
    checks: list[tuple[float | None, dict[str, float | None] | None]],
    failures: int = 0,
    all_failed_since: float | None = None,
    hold_down: float = 1800,
) -> list[tuple[str, int]]:
    """Given (tunnel loss, every server's loss or None) per check, one a minute, return (outcome, counter)."""
    seen = []
    for number, (loss, servers) in enumerate(checks):
        reading = TunnelReading(source="prometheus", loss=loss, span=60)
        fault = find_local_fault(servers, SETTINGS.threshold) if servers is not None else None
        evidence = CheckEvidence(time=60.0 * number, tunnel=reading, local_fault=fault)
        state = CheckState(failures, all_failed_since=all_failed_since, hold_down=hold_down)
        decision = decide_check(evidence, SETTINGS, state)
        failures = decision.failures
        if decision.outcome == HealthOutcome.HEALTHY:
            all_failed_since = None  # the live check removes the record
        seen.append((decision.outcome.value, failures))
    return seen


@pytest.mark.parametrize(
    ("checks", "failures", "expected"),
    [
        # The uplink is down for 10 checks: never counted, never a failover.
        ([(1.0, UPLINK_DOWN)] * 10, 0, [("local fault", 0)] * 10),
        # ... then back: normal checks, no switch.
        ([(1.0, UPLINK_DOWN)] * 4 + [(0.0, None)] * 2, 0, [("local fault", 0)] * 4 + [("healthy", 0)] * 2),
        # The counter stands still across a local fault: neither reset nor raised.
        (
            [(0.5, SERVER1_DOWN), (1.0, UPLINK_DOWN), (1.0, UPLINK_DOWN), (0.5, SERVER1_DOWN), (0.5, SERVER1_DOWN)],
            0,
            [("failure", 1), ("local fault", 1), ("local fault", 1), ("failure", 2), ("failover", 0)],
        ),
        # A counter left at 2 by earlier failures is not pushed over by the uplink.
        ([(1.0, UPLINK_DOWN)], 2, [("local fault", 2)]),
        # The current server dark, the others fine: a server fault, it fails over as usual.
        ([(1.0, SERVER1_DOWN)] * 3, 0, [("failure", 1), ("failure", 2), ("failover", 0)]),
        # The current server's WireGuard died: its endpoint pings fine, so it is not local.
        ([(1.0, WIREGUARD_DEAD)] * 3, 0, [("failure", 1), ("failure", 2), ("failover", 0)]),
        # A healthy tunnel is healthy whatever the external prober says.
        ([(0.0, UPLINK_DOWN)], 1, [("healthy", 0)]),
    ],
)
def test_a_local_fault_is_not_counted_and_never_fails_over(
    checks: list[tuple[float | None, dict[str, float | None] | None]], failures: int, expected: list[tuple[str, int]]
) -> None:
    assert replay(checks, failures) == expected


def test_the_local_fault_check_says_which_servers_it_saw_lossy() -> None:
    evidence = CheckEvidence(
        time=0.0,
        tunnel=TunnelReading(source="prometheus", loss=1.0, span=60),
        local_fault=find_local_fault({"server1": 1.0, "server2": 0.97}, 0.15),
    )
    decision = decide_check(evidence, SETTINGS, CheckState(0))
    assert decision.reason == "local fault: every server is losing packets (server1 100%, server2 97%)"


def test_with_only_a_handshake_a_failed_check_is_counted() -> None:
    # Prometheus unreachable: no prober data, so no local fault can be told;
    # the check counts, and the probation bounds what a switch can cost.
    handshake = HandshakeCheck(interface="wg0", newest=None, age=None, timeout=180)
    reading = TunnelReading(source="handshake", loss=None, span=None, handshake=handshake, fallback_reason="refused")
    decision = decide_check(CheckEvidence(time=0.0, tunnel=reading), SETTINGS, CheckState(0))
    assert (decision.outcome, decision.failures) == (HealthOutcome.FAILURE, 1)


@pytest.mark.parametrize(
    ("checks", "since", "hold_down", "expected"),
    [
        # Every server failed at t=0: the failover due at the third check is held back.
        ([(1.0, WIREGUARD_DEAD)] * 6, 0.0, 1800, [("failure", 1), ("failure", 2), ("held", 0)] * 2),
        # A healthy check ends the state: the next episode may switch again.
        (
            [(0.0, None)] + [(1.0, WIREGUARD_DEAD)] * 3,
            0.0,
            1800,
            [("healthy", 0), ("failure", 1), ("failure", 2), ("failover", 0)],
        ),
        # hold_down (here 2 minutes) passed: one more pass is allowed.
        ([(1.0, WIREGUARD_DEAD)] * 3, -120.0, 120, [("failure", 1), ("failure", 2), ("failover", 0)]),
        # Not in that state: as usual.
        ([(1.0, WIREGUARD_DEAD)] * 3, None, 1800, [("failure", 1), ("failure", 2), ("failover", 0)]),
        # A local fault while all servers failed is still a local fault.
        ([(1.0, UPLINK_DOWN)] * 3, 0.0, 1800, [("local fault", 0)] * 3),
    ],
)
def test_after_all_servers_failed_no_failover_until_a_server_recovers(
    checks: list[tuple[float | None, dict[str, float | None] | None]],
    since: float | None,
    hold_down: float,
    expected: list[tuple[str, int]],
) -> None:
    assert replay(checks, all_failed_since=since, hold_down=hold_down) == expected
