"""The failback rule: when to return to a more preferred server, and why it cannot flap."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence

import pytest

from wgfailover.evidence.readings import PreferredReading
from wgfailover.policy.failback import (
    FailbackPlan,
    choose_failback,
    expected_slices,
    plan_failback,
)
from wgfailover.state import SwitchRecord

NOW = 1_700_000_000.0
FAILBACK_AFTER = 900.0  # 15m
SLICE = 30.0  # health.min_window
THRESHOLD = 0.15
PRIORITIES: dict[str, int | None] = {"home": 1, "office": 1, "b": 2, "c": 2, "spare": None}


def switch(from_server: str | None, to_server: str, seconds_ago: float, seq: int = 1) -> SwitchRecord:
    return SwitchRecord(seq=seq, time=NOW - seconds_ago, from_server=from_server, to_server=to_server, reason="x")


def plan(
    current: str | None = "b",
    history: Sequence[SwitchRecord] = (),
    failback_after: float | None = FAILBACK_AFTER,
    hold_down: float = 1800,
    tunnel_healthy: bool = True,
    unusable: tuple[str, ...] = (),
    priorities: Mapping[str, int | None] = PRIORITIES,
) -> FailbackPlan:
    return plan_failback(
        current=current,
        priorities=priorities,
        history=history,
        now=NOW,
        failback_after=failback_after,
        hold_down=hold_down,
        tunnel_healthy=tunnel_healthy,
        unusable=unusable,
    )


# --- plan: what is decided without asking Prometheus ---------------------------


@pytest.mark.parametrize(
    ("options", "candidates", "skip"),
    [
        ({}, ("home", "office"), None),
        ({"failback_after": None}, (), "failover.failback_after is not set"),
        ({"tunnel_healthy": False}, (), "the tunnel is not healthy: that is a failover's business"),
        ({"current": None}, (), "no current server recorded"),
        ({"current": "home"}, (), "no usable server is more preferred than home"),
        ({"priorities": {"home": None, "b": None}}, (), "no usable server is more preferred than b"),
        ({"priorities": {"home": 3, "b": 3}}, (), "no usable server is more preferred than b"),
        # A server without a priority is in the last tier: every numbered one is preferred.
        ({"current": "spare"}, ("home", "office", "b", "c"), None),
        ({"unusable": ("home",)}, ("office",), None),
        ({"unusable": ("home", "office")}, (), "no usable server is more preferred than b"),
        (
            {"history": [switch("home", "b", 899)]},
            (),
            "the last switch was 14m ago, within failback_after (15m)",
        ),
        # Exactly failback_after ago is no longer within it.
        ({"history": [switch("c", "b", 900)], "hold_down": 0}, ("home", "office"), None),
        (
            {"history": [switch("home", "b", -60)]},
            (),
            "the last switch was in the future (was the clock changed?), within failback_after (15m)",
        ),
        # Left within hold_down: held down even though failback_after has passed.
        ({"history": [switch("home", "b", 1000)]}, ("office",), None),
        (
            {"history": [switch("home", "c", 1200, 1), switch("office", "b", 1000, 2)]},
            (),
            "every more preferred server is held down: home (left 20m ago), office (left 16m ago)",
        ),
        ({"history": [switch("home", "b", 1801)]}, ("home", "office"), None),
    ],
    ids=[
        "looks-at-preferred",
        "unset-never",
        "tunnel-failing",
        "no-current",
        "already-most-preferred",
        "no-priorities",
        "one-tier",
        "unset-is-last-tier",
        "unusable-skipped",
        "all-unusable",
        "switched-recently",
        "switched-exactly-failback-after-ago",
        "switch-in-the-future",
        "held-down-skipped",
        "all-held-down",
        "hold-down-expired",
    ],
)
def test_plan(options: dict, candidates: tuple[str, ...], skip: str | None) -> None:
    assert plan(**options) == FailbackPlan(candidates, skip)


# --- choose: what the prober's history says ------------------------------------

FULL = expected_slices(FAILBACK_AFTER, SLICE)  # 30 slices of 30s in 15m


def choose(
    readings: dict[str, tuple[float | None, int]],
    candidates: tuple[str, ...] = ("home", "office"),
    seed: int = 0,
) -> tuple[str | None, str, dict[str, str]]:
    decision = choose_failback(
        FailbackPlan(candidates),
        {name: PreferredReading(name, loss, slices) for name, (loss, slices) in readings.items()},
        priorities=PRIORITIES,
        threshold=THRESHOLD,
        failback_after=FAILBACK_AFTER,
        slice_seconds=SLICE,
        tie_epsilon=0.02,
        rng=random.Random(seed),
    )
    return decision.target, decision.reason, {v.name: v.reason for v in decision.verdicts}


@pytest.mark.parametrize(
    ("readings", "target", "verdicts"),
    [
        (
            {"home": (0.0, FULL), "office": (0.4, FULL)},
            "home",
            {"home": "healthy for 15m", "office": "loss 0.4 > 0.15 within the last 15m"},
        ),
        # Exactly the threshold is healthy, as in the health check.
        (
            {"home": (0.15, FULL), "office": (None, 0)},
            "home",
            {"home": "healthy for 15m", "office": "no data over the last 15m"},
        ),
        (
            {"home": (0.151, FULL)},
            None,
            {"home": "loss 0.151 > 0.15 within the last 15m", "office": "no data over the last 15m"},
        ),
        # A missed scrape or three may leave slices without data; more may hide loss.
        ({"home": (0.0, FULL - 3)}, "home", {"home": "healthy for 15m", "office": "no data over the last 15m"}),
        (
            {"home": (0.0, FULL - 4), "office": (0.0, 2)},
            None,
            {
                "home": "data for only 26 of 30 slices of the last 15m",
                "office": "data for only 2 of 30 slices of the last 15m",
            },
        ),
    ],
    ids=["clean-vs-lossy", "threshold-is-healthy", "just-above", "few-gaps-ok", "too-few-slices"],
)
def test_choose(readings: dict[str, tuple[float | None, int]], target: str | None, verdicts: dict[str, str]) -> None:
    chosen, reason, seen = choose(readings)
    assert chosen == target
    assert seen == verdicts
    if target is not None:
        assert reason == f"failback: {target} healthy for 15m"
    else:
        assert reason.startswith("no more preferred server was healthy for 15m (")


def test_the_most_preferred_tier_wins_over_a_lower_worst_loss() -> None:
    readings = {"home": (0.10, FULL), "b": (0.0, FULL)}
    for seed in range(20):
        assert choose(readings, candidates=("home", "office", "b"), seed=seed)[0] == "home"


def test_a_lossy_most_preferred_server_leaves_the_next_tier_to_fail_back_to() -> None:
    assert choose({"home": (0.5, FULL), "office": (0.3, FULL), "b": (0.0, FULL)}, ("home", "office", "b"))[0] == "b"


def test_near_ties_within_a_tier_are_broken_at_random() -> None:
    picks = {choose({"home": (0.0, FULL), "office": (0.01, FULL)}, seed=seed)[0] for seed in range(40)}
    assert picks == {"home", "office"}


def test_a_skipped_plan_is_passed_on_without_reading_anything() -> None:
    decision = choose_failback(
        FailbackPlan((), "failover.failback_after is not set"),
        {},
        priorities=PRIORITIES,
        threshold=THRESHOLD,
        failback_after=FAILBACK_AFTER,
        slice_seconds=SLICE,
        tie_epsilon=0.02,
        rng=random.Random(0),
    )
    assert (decision.target, decision.reason) == (None, "failover.failback_after is not set")


@pytest.mark.parametrize(("after", "slice_", "count"), [(900, 30, 30), (20, 5, 4), (25, 5, 5), (29, 5, 5), (5, 30, 1)])
def test_expected_slices_cover_failback_after(after: float, slice_: float, count: int) -> None:
    assert expected_slices(after, slice_) == count


# --- no flapping, by construction ----------------------------------------------
#
# A small replay: one check per slice, on "away" (priority 2) with "home"
# (priority 1) preferred. Each slice, the external prober sees home's ping
# loss, and the tunnel carries home's tunnel loss when on home (away is
# always clean). max_failures = 3 bad checks fail over to the other server;
# a healthy check runs the failback rule with the readings the one
# max_over_time query would return: the worst slice of the last
# failback_after, and the number of slices with data.

SIM_AFTER = 20.0
SIM_SLICE = 5.0
SIM_HOLD_DOWN = 20.0
SIM_PRIORITIES: dict[str, int | None] = {"home": 1, "away": 2}


@dataclasses.dataclass
class Replay:
    failbacks: list[float] = dataclasses.field(default_factory=list)  # times, seconds from the start
    failovers: list[float] = dataclasses.field(default_factory=list)


def replay(
    ping_loss: Callable[[int], float],
    slices: int,
    tunnel_loss: Callable[[int], float] | None = None,
    hold_down: float = SIM_HOLD_DOWN,
) -> Replay:
    tunnel_loss = tunnel_loss or ping_loss
    history = [SwitchRecord(seq=1, time=0.0, from_server="home", to_server="away", reason="health-check")]
    current, failures, seen = "away", 0, Replay()
    rng = random.Random(0)
    needed = expected_slices(SIM_AFTER, SIM_SLICE)
    for k in range(1, slices + 1):
        now = k * SIM_SLICE
        loss = tunnel_loss(k) if current == "home" else 0.0
        if loss > THRESHOLD:
            failures += 1
            if failures == 3:
                other = "away" if current == "home" else "home"
                history.append(SwitchRecord(len(history) + 1, now, current, other, "health-check"))
                seen.failovers.append(now)
                current, failures = other, 0
            continue
        failures = 0
        planned = plan_failback(
            current=current,
            priorities=SIM_PRIORITIES,
            history=history,
            now=now,
            failback_after=SIM_AFTER,
            hold_down=hold_down,
            tunnel_healthy=True,
        )
        window = range(max(1, k - needed + 1), k + 1)
        readings = {"home": PreferredReading("home", max(ping_loss(j) for j in window), len(window))}
        decision = choose_failback(
            planned,
            readings,
            priorities=SIM_PRIORITIES,
            threshold=THRESHOLD,
            failback_after=SIM_AFTER,
            slice_seconds=SIM_SLICE,
            tie_epsilon=0.02,
            rng=rng,
        )
        if decision.target is not None:
            assert decision.reason == "failback: home healthy for 20s"
            history.append(SwitchRecord(len(history) + 1, now, current, decision.target, decision.reason))
            seen.failbacks.append(now)
            current = decision.target
    return seen


def flapping(lossy: int, clean: int) -> Callable[[int], float]:
    """Home's loss: `lossy` slices at 50%, then `clean` slices at 0, over and over."""
    return lambda k: 0.5 if (k - 1) % (lossy + clean) < lossy else 0.0


@pytest.mark.parametrize(
    ("lossy", "clean"),
    [(2, 2), (1, 3), (3, 1), (1, 1)],
    ids=["2-on-2-off", "1-on-3-off", "3-on-1-off", "1-on-1-off"],
)
def test_a_preferred_server_flapping_faster_than_failback_after_is_never_failed_back_to(lossy: int, clean: int) -> None:
    slices = int(4 * SIM_AFTER / SIM_SLICE)  # longer than 3 x failback_after
    seen = replay(flapping(lossy, clean), slices)
    assert seen.failbacks == [] and seen.failovers == []


def test_clean_runs_one_slice_short_of_failback_after_never_qualify() -> None:
    run = int(SIM_AFTER / SIM_SLICE) - 1
    assert replay(flapping(1, run), 40).failbacks == []


def test_a_steadily_healthy_preferred_server_is_failed_back_to_exactly_once() -> None:
    seen = replay(lambda k: 0.0, 40)
    assert seen.failbacks == [SIM_AFTER]  # the first check failback_after after the failover
    assert seen.failovers == []


def test_a_preferred_server_whose_tunnel_fails_is_retried_at_most_once_per_hold_down() -> None:
    # Home answers every ping but carries no tunnel traffic: each failback is
    # followed by three bad checks and a failover away, which holds home down.
    duration = 60  # slices: 300s
    seen = replay(lambda k: 0.0, duration, tunnel_loss=lambda k: 1.0, hold_down=60.0)
    assert len(seen.failbacks) >= 2  # the rule does retry once the hold-down is over ...
    gaps = [b - a for a, b in zip(seen.failbacks, seen.failbacks[1:])]
    assert all(gap >= 60.0 for gap in gaps), seen  # ... but never sooner than hold_down
    assert len(seen.failovers) == len(seen.failbacks)


@pytest.mark.parametrize("period", [1, 2, 3, 4])
def test_no_failback_within_failback_after_of_any_switch(period: int) -> None:
    # Home answers every ping while its tunnel toggles every `period`
    # slices; with hold-down off, only failback_after stands between a
    # failover away from home and the next failback to it.
    seen = replay(lambda k: 0.0, 80, tunnel_loss=flapping(period, period), hold_down=0.0)
    switches = sorted([0.0, *seen.failovers, *seen.failbacks])  # 0.0: the failover the replay starts after
    assert seen.failbacks, seen
    for failback in seen.failbacks:
        previous = max(t for t in switches if t < failback)
        assert failback - previous >= SIM_AFTER, seen
