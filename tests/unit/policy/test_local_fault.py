"""A local fault: every server, the current one included, lossy or unreachable as the external prober sees it."""

from __future__ import annotations

import pytest

from wgfailover.evidence.readings import ServerReading
from wgfailover.policy.local_fault import LocalFault, find_local_fault, local_fault_of

THRESHOLD = 0.15


@pytest.mark.parametrize(
    ("losses", "unreachable", "expected"),
    [
        # The host's uplink is down: every endpoint lost, the current one too.
        ({"server1": 1.0, "server2": 1.0, "server3": 1.0}, (), (("server1", 1.0), ("server2", 1.0), ("server3", 1.0))),
        # A lossy uplink: every server above the threshold, not all equally.
        ({"server1": 0.3, "server2": 0.2, "server3": 0.5}, (), (("server1", 0.3), ("server2", 0.2), ("server3", 0.5))),
        # The prober could not send to some (no request counted): unreachable counts as lost.
        ({"server1": None, "server2": 1.0}, ("server1",), (("server1", None), ("server2", 1.0))),
        ({"server1": None, "server2": None}, ("server1", "server2"), (("server1", None), ("server2", None))),
        # One server fine from outside: a server fault (its WireGuard died, or its path is bad).
        ({"server1": 1.0, "server2": 1.0, "server3": 0.0}, (), None),
        # The current server's endpoint answers pings while the tunnel loses everything: not local.
        ({"server1": 0.0, "server2": 1.0, "server3": 1.0}, (), None),
        # At the threshold is healthy, as for the tunnel.
        ({"server1": 1.0, "server2": 0.15}, (), None),
        # Unknown is never read as a loss: one unknown server is enough to say "not local".
        ({"server1": 1.0, "server2": None}, (), None),
        ({"server1": None, "server2": None}, (), None),
        # No servers, no evidence.
        ({}, (), None),
    ],
)
def test_local_fault_only_when_every_server_is_lossy_or_unreachable(
    losses: dict[str, float | None], unreachable: tuple[str, ...], expected: tuple[tuple[str, float | None], ...] | None
) -> None:
    fault = find_local_fault(losses, THRESHOLD, unreachable)
    assert (fault.losses if fault else None) == expected


def test_the_local_fault_names_every_server_and_its_loss() -> None:
    fault = LocalFault((("server1", 1.0), ("server2", 0.42), ("server3", None)))
    assert (
        fault.describe()
        == "local fault: every server is losing packets (server1 100%, server2 42%, server3 unreachable)"
    )


def test_servers_are_listed_in_name_order_whatever_the_input_order() -> None:
    fault = find_local_fault({"b": 1.0, "a": 0.9}, THRESHOLD)
    assert fault is not None and [name for name, _ in fault.losses] == ["a", "b"]


def test_readings_give_the_same_verdict_with_silent_servers_unreachable() -> None:
    readings = [
        ServerReading("a", 0.9),
        ServerReading("b", None, unreachable=True),  # the prober could send nothing to it
    ]
    assert local_fault_of(readings, 0.15) == LocalFault((("a", 0.9), ("b", None)))
    assert local_fault_of([*readings, ServerReading("c", None)], 0.15) is None  # no series: no evidence
