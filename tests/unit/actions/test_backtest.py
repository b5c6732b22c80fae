"""--backtest's replay: sequences of past evidence in, the failovers the live rule would have made out.

The evidence is a table here (one tunnel loss per check, one loss per
server); the replay asks the same policy the live check asks.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence

import pytest

from wgfailover.actions.backtest import Replay, override, parse_sweep, replay
from wgfailover.config import HealthSettings
from wgfailover.errors import UsageError
from wgfailover.evidence.readings import PreferredReading, ServerReading, TunnelReading
from wgfailover.state import SwitchRecord

EVERY = 60.0
START = 1_700_000_040.0
BAD = 1.0  # a check with total loss
OK = 0.0  # a clean check
NO_DATA = None


@dataclasses.dataclass
class TableEvidence:
    """Past evidence from tables: the tunnel loss of each check time, the servers' loss at any time."""

    tunnel_losses: Sequence[float | None]
    server_losses: Mapping[str, float | None]
    uplink_down_checks: Sequence[int] = ()
    asked: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    servers_asked: list[tuple[float, float | None]] = dataclasses.field(default_factory=list)
    preferred_loss: Callable[[int], float] = lambda index: 0.0  # the preferred server's ping loss at a check
    preferred_asked: list[tuple[float, tuple[str, ...]]] = dataclasses.field(default_factory=list)
    server_latencies: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def tunnel(self, time: float, seconds: float) -> TunnelReading:
        self.asked.append((time, seconds))
        loss = self.tunnel_losses[int((time - START) / EVERY)]
        return TunnelReading(source="prometheus", loss=loss, span=seconds, query="q")

    def servers(self, time: float, window: float | None = None) -> list[ServerReading]:
        self.servers_asked.append((time, window))
        if window is not None and self.uplink_down(time):
            return [ServerReading(name, 1.0) for name in self.server_losses]
        return [ServerReading(name, loss, self.server_latencies.get(name)) for name, loss in self.server_losses.items()]

    def preferred(
        self, time: float, names: Sequence[str], failback_after: float, slice_seconds: float
    ) -> dict[str, PreferredReading]:
        """One slice a check period here: a check's slices all have its loss (preferred_loss by check index)."""
        self.preferred_asked.append((time, tuple(names)))
        newest = int((time - START) / EVERY)
        indices = range(newest - int(failback_after / EVERY) + 1, newest + 1)
        per_check = int(EVERY / slice_seconds)
        return {
            name: PreferredReading(name, max(self.preferred_loss(index) for index in indices), per_check * len(indices))
            for name in names
        }

    def uplink_down(self, time: float) -> bool:
        return int((time - START) / EVERY) in self.uplink_down_checks


def run(
    losses: Sequence[float | None],
    health: HealthSettings | None = None,
    servers: Mapping[str, float | None] | None = None,
    history: Sequence[SwitchRecord] = (),
    hold_down: float = 3600,
    uplink_down: Sequence[int] = (),
) -> tuple[Replay, TableEvidence]:
    evidence = TableEvidence(losses, servers or {"a": 0.5, "b": 0.0, "c": 0.1}, uplink_down)
    times = [START + index * EVERY for index in range(len(losses))]
    result = replay(
        times,
        health or HealthSettings(),
        evidence,
        current="a",
        history=history,
        hold_down=hold_down,
        tie_epsilon=0.02,
        priorities={},
        unusable={},
        rng=random.Random(0),
    )
    return result, evidence


def failover_checks(result: Replay) -> list[int]:
    return [int((failover.time - START) / EVERY) for failover in result.failovers]


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([OK, OK, OK, OK], []),
        ([OK, BAD, BAD, BAD, OK], [3]),  # a hard outage: the third bad check fails over
        ([OK, BAD, OK, BAD, OK, BAD, OK], []),  # blips: a good check between resets the count
        ([OK, 0.2, 0.15, 0.2], []),  # exactly the threshold is healthy
        ([OK, BAD, BAD, NO_DATA], [3]),  # no data counts (health.on_no_data = "failure")
        ([OK] + [BAD] * 9, [3, 6, 9]),  # the recorded data stays bad after a replayed switch
    ],
)
def test_the_replay_fails_over_where_the_live_rule_would(losses: list[float | None], expected: list[int]) -> None:
    result, _ = run(losses)
    assert failover_checks(result) == expected
    assert result.checks == len(losses)
    assert result.failures == sum(1 for loss in losses if loss is None or loss > 0.15)


@pytest.mark.parametrize(
    ("losses", "uplink_down", "expected", "local_faults"),
    [
        # The host's uplink down for 5 checks: every server lossy, nothing counted.
        ([OK, BAD, BAD, BAD, BAD, BAD, OK], [1, 2, 3, 4, 5], [], 5),
        # Two counted failures, then a local fault: the counter stands still, the next failure fails over.
        ([OK, BAD, BAD, BAD, BAD], [3], [4], 1),
    ],
)
def test_a_local_fault_is_not_counted_as_live(
    losses: list[float | None], uplink_down: list[int], expected: list[int], local_faults: int
) -> None:
    result, evidence = run(losses, uplink_down=uplink_down)
    assert failover_checks(result) == expected
    assert result.local_faults == local_faults
    # Every server was asked over the failed check's own span, as the live check asks.
    assert [window for _, window in evidence.servers_asked if window is not None] == [60] * losses.count(BAD)


@pytest.mark.parametrize(
    ("latency_tie", "weights", "expected"),
    [
        # b is 5 ms (25%) nearer: within the default 10% it wins whatever the weights.
        (0.10, {"c": 1e6}, "b"),
        # Within latency_tie 0.5 both are as near, and the weights decide, as live.
        (0.50, {"c": 1e6}, "c"),
        (0.50, {"b": 1e6}, "b"),
    ],
)
def test_the_replay_ranks_with_the_live_latency_tie_and_weights(
    latency_tie: float, weights: dict[str, float], expected: str
) -> None:
    evidence = TableEvidence(
        [OK, BAD, BAD, BAD], {"a": 1.0, "b": 0.0, "c": 0.0}, server_latencies={"b": 0.020, "c": 0.025}
    )
    result = replay(
        [START + index * EVERY for index in range(4)],
        HealthSettings(),
        evidence,
        current="a",
        history=(),
        hold_down=3600,
        tie_epsilon=0.02,
        priorities={},
        unusable={},
        rng=random.Random(0),
        weights=weights,
        latency_tie=latency_tie,
    )
    assert [failover.to_server for failover in result.failovers] == [expected]


def test_a_replayed_failover_says_from_to_why_and_which_checks_counted() -> None:
    result, _ = run([OK, BAD, BAD, BAD])
    [failover] = result.failovers
    assert (failover.from_server, failover.to_server, failover.loss) == ("a", "b", 1.0)
    assert failover.reason == "health-check: loss 1 > 0.15 for 3 checks"
    assert failover.counted == (START + EVERY, START + 2 * EVERY, START + 3 * EVERY)
    assert failover.choice_reason == "lowest loss"


@pytest.mark.parametrize(
    ("health", "losses", "expected"),
    [
        (HealthSettings(max_failures=2), [OK, BAD, BAD, OK, BAD, OK], [2]),
        (HealthSettings(max_failures=1), [OK, BAD, OK, BAD], [1, 3]),
        (HealthSettings(threshold=0.5), [OK, 0.4, 0.4, 0.4, 0.4], []),
        (HealthSettings(on_no_data="ignore"), [OK, BAD, NO_DATA, BAD, NO_DATA, BAD], [5]),
    ],
)
def test_overridden_settings_change_the_replay(
    health: HealthSettings, losses: list[float | None], expected: list[int]
) -> None:
    result, _ = run(losses, health)
    assert failover_checks(result) == expected


def test_with_min_window_longer_than_the_period_checks_wait_as_the_live_ones_do() -> None:
    # One check a minute, min_window 90s: a check a minute after the last
    # check, or after the switch, waits; the next judges the 120s since.
    health = HealthSettings(max_failures=1, min_window=90, window=300)
    result, evidence = run([OK, OK, BAD, OK, OK, OK, OK], health)
    assert failover_checks(result) == [2]
    assert evidence.asked == [
        (START, 300),
        (START + 2 * EVERY, 120),
        (START + 4 * EVERY, 120),
        (START + 6 * EVERY, 120),
    ]
    assert (result.checks, result.waiting) == (4, 3)


def test_the_spans_are_the_live_checks_spans() -> None:
    health = HealthSettings(max_failures=1, min_window=30, window=300)
    result, evidence = run([OK, OK, BAD, OK, OK], health)
    assert failover_checks(result) == [2]
    # First check: all of window; then one period each; right after the
    # switch (60s later, more than min_window) the span is cut at the switch.
    assert evidence.asked == [
        (START, 300),
        (START + EVERY, 60),
        (START + 2 * EVERY, 60),
        (START + 3 * EVERY, 60),
        (START + 4 * EVERY, 60),
    ]
    assert result.waiting == 0


def test_the_second_failover_does_not_return_to_a_server_just_left() -> None:
    # b is best, but after a -> b the next failover must not go back to a
    # (held down) although its loss looks lower than c's.
    result, _ = run([OK] + [BAD] * 6, servers={"a": 0.0, "b": 0.0, "c": 0.1})
    first, second = result.failovers
    assert (first.from_server, first.to_server) == ("a", "b")
    assert (second.from_server, second.to_server) == ("b", "c")
    assert second.choice_reason == "lowest loss"


def test_hold_down_counts_switches_recorded_before_the_replay() -> None:
    left_b = SwitchRecord(seq=7, time=START - 600, from_server="b", to_server="a", reason="x")
    result, _ = run([OK, BAD, BAD, BAD], servers={"a": 0.5, "b": 0.0, "c": 0.1}, history=[left_b])
    assert [f.to_server for f in result.failovers] == ["c"]


def test_with_no_other_server_the_failover_is_listed_with_no_target() -> None:
    result, _ = run([OK, BAD, BAD, BAD, BAD, BAD, BAD], servers={"a": 0.0})
    assert [(f.to_server, f.choice_reason) for f in result.failovers] == [
        (None, "no other server to switch to"),
        (None, "no other server to switch to"),
    ]


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (["threshold=0.05,0.1,0.2"], {"threshold": [0.05, 0.1, 0.2]}),
        (["max_failures=2,3", "window=2m,5m"], {"max_failures": [2, 3], "window": [120, 300]}),
        (["min-window=30s"], {"min_window": [30]}),
    ],
)
def test_sweep_specs_parse_into_values(specs: list[str], expected: dict[str, list[float]]) -> None:
    assert parse_sweep(specs) == expected


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            ["treshold=0.1"],
            "--sweep 'treshold=0.1': expected KEY=V,V,... with KEY one of threshold, max_failures, window, min_window",
        ),
        (
            ["threshold"],
            "--sweep 'threshold': expected KEY=V,V,... with KEY one of threshold, max_failures, window, min_window",
        ),
        (["max_failures=2.5"], "--sweep 'max_failures=2.5': '2.5' is not a whole number"),
        (["threshold=x"], "--sweep 'threshold=x': 'x' is not a number"),
        (["threshold=0.1", "threshold=0.2"], "--sweep: threshold is given twice"),
        (["window="], "--sweep 'window=': no values"),
    ],
)
def test_bad_sweep_specs_are_usage_errors(specs: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_sweep(specs)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"threshold": 1.5}, "threshold 1.5 is not a ratio between 0 and 1"),
        ({"max_failures": 0}, "max_failures 0 must be at least 1"),
        ({"min_window": 600}, "min_window (10m) is longer than window (5m)"),
        ({"window": 0}, "window and min_window must be longer than 0s"),
    ],
)
def test_overrides_the_config_would_refuse_are_usage_errors(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        override(HealthSettings(), overrides)
    assert str(caught.value) == message


def test_overrides_replace_only_what_is_given() -> None:
    assert override(HealthSettings(selector='job="x"'), {"threshold": 0.3, "max_failures": 5}) == HealthSettings(
        selector='job="x"', threshold=0.3, max_failures=5
    )


# --- failback: replayed as live, listed apart ------------------------------------

PRIORITIES: dict[str, int | None] = {"a": 1, "b": 2, "c": 2}
FAILBACK_AFTER = 5 * EVERY


def run_failback(
    losses: Sequence[float | None],
    preferred_loss: Callable[[int], float],
    current: str = "b",
    history: Sequence[SwitchRecord] = (),
    failback_after: float | None = FAILBACK_AFTER,
    hold_down: float = 4 * EVERY,
) -> tuple[Replay, TableEvidence]:
    evidence = TableEvidence(losses, {"a": 0.0, "b": 0.0, "c": 0.0}, preferred_loss=preferred_loss)
    result = replay(
        [START + index * EVERY for index in range(len(losses))],
        HealthSettings(),
        evidence,
        current=current,
        history=history,
        hold_down=hold_down,
        tie_epsilon=0.02,
        priorities=PRIORITIES,
        unusable={},
        rng=random.Random(0),
        failback_after=failback_after,
    )
    return result, evidence


def check_index(time: float) -> int:
    return int((time - START) / EVERY)


LEFT_AN_HOUR_AGO = [SwitchRecord(seq=1, time=START - 3600, from_server="a", to_server="b", reason="health-check")]


@pytest.mark.parametrize(
    ("losses", "preferred", "current", "history", "failovers", "failbacks"),
    [
        # On b since an hour, a clean all along: back to a at the first check, once.
        ([OK] * 10, lambda i: 0.0, "b", LEFT_AN_HOUR_AGO, [], [0]),
        # a lossy one check in three: never five clean checks in a row, never a failback.
        ([OK] * 20, lambda i: 0.5 if i % 3 == 0 else 0.0, "b", LEFT_AN_HOUR_AGO, [], []),
        # On a: an outage fails over to b at check 3; a is clean again from check 4;
        # back at check 8, the first whose five-check window is clean and five after the failover.
        ([OK, BAD, BAD, BAD] + [OK] * 10, lambda i: 1.0 if 1 <= i <= 3 else 0.0, "a", [], [3], [8]),
        # Already on the most preferred server: nothing to fail back to.
        ([OK] * 10, lambda i: 0.0, "a", [], [], []),
    ],
    ids=["steady", "flapping", "after-an-outage", "already-home"],
)
def test_the_replay_fails_back_where_the_live_rule_would(
    losses: list[float | None],
    preferred: Callable[[int], float],
    current: str,
    history: list[SwitchRecord],
    failovers: list[int],
    failbacks: list[int],
) -> None:
    result, _ = run_failback(losses, preferred, current, history)
    assert failover_checks(result) == failovers
    assert [check_index(failback.time) for failback in result.failbacks] == failbacks
    for failback in result.failbacks:
        assert (failback.to_server, failback.reason) == ("a", "failback: a healthy for 5m")


def test_without_failback_after_the_replay_never_fails_back_nor_asks() -> None:
    result, evidence = run_failback([OK] * 10, lambda i: 0.0, "b", LEFT_AN_HOUR_AGO, failback_after=None)
    assert result.failbacks == ()
    assert evidence.preferred_asked == []


def test_once_home_the_replay_stops_asking_about_failback() -> None:
    result, evidence = run_failback([OK] * 10, lambda i: 0.0, "b", LEFT_AN_HOUR_AGO)
    [failback] = result.failbacks
    assert failback.from_server == "b"
    assert evidence.preferred_asked == [(START, ("a",))]  # on a from then on: nothing more preferred
