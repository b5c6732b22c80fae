"""The ranking rule: loss first, hold-down last, near-ties by latency, then at random."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from wgfailover.evidence.readings import ServerReading
from wgfailover.policy.ranking import (
    LATENCY_TIE_RATIO,
    RankedServer,
    better_than_chosen,
    first_choice,
    format_ago,
    held_down_servers,
    most_preferred,
    rank_servers,
)
from wgfailover.state import SwitchRecord

NOW = 1_700_000_000.0


def rank(
    readings: list[ServerReading],
    current: str | None = "current",
    history: list[SwitchRecord] | None = None,
    hold_down: float = 1800,
    tie_epsilon: float = 0.02,
    seed: int = 0,
    unusable: dict[str, str] | None = None,
    weights: dict[str, float] | None = None,
    latency_tie: float = LATENCY_TIE_RATIO,
) -> list[RankedServer]:
    return rank_servers(
        [ServerReading("current", 0.9), *readings] if current == "current" else readings,
        current=current,
        history=history or [],
        now=NOW,
        hold_down=hold_down,
        tie_epsilon=tie_epsilon,
        rng=random.Random(seed),
        unusable=unusable,
        weights=weights,
        latency_tie=latency_tie,
    )


def names(rows: list[RankedServer]) -> list[str]:
    return [row.name for row in rows if row.rank is not None]


def left(name: str, seconds_ago: float, seq: int = 1) -> SwitchRecord:
    return SwitchRecord(seq=seq, time=NOW - seconds_ago, from_server=name, to_server="current", reason="failover")


def test_lowest_loss_ranks_first_and_the_current_server_is_never_a_candidate() -> None:
    rows = rank([ServerReading("a", 0.30), ServerReading("b", 0.0), ServerReading("c", 0.10)])
    assert [(r.name, r.rank, r.reason) for r in rows] == [
        ("b", 1, "lowest loss"),
        ("c", 2, "higher loss"),
        ("a", 3, "higher loss"),
        ("current", None, "current"),
    ]


def test_known_loss_ranks_before_unknown_even_when_high() -> None:
    rows = rank([ServerReading("unknown"), ServerReading("bad", 0.95)])
    assert names(rows) == ["bad", "unknown"]
    assert rows[1].reason == "loss unknown"


def test_near_ties_in_loss_go_to_the_lower_latency() -> None:
    rows = rank([ServerReading("slow", 0.00, 0.080), ServerReading("fast", 0.015, 0.010)])
    assert names(rows) == ["fast", "slow"]
    assert rows[0].reason == "lowest latency among near-ties in loss"
    assert rows[1].reason == "higher latency"


def test_a_loss_difference_of_exactly_epsilon_is_a_near_tie() -> None:
    rows = rank([ServerReading("a", 0.03, 0.050), ServerReading("b", 0.05, 0.010)], tie_epsilon=0.02)
    assert names(rows) == ["b", "a"]


def test_beyond_epsilon_loss_wins_over_latency() -> None:
    rows = rank([ServerReading("a", 0.00, 0.200), ServerReading("b", 0.03, 0.001)], tie_epsilon=0.02)
    assert names(rows) == ["a", "b"]
    assert rows[1].reason == "higher loss"


def test_loss_groups_are_anchored_at_their_lowest_loss() -> None:
    # 0.00 and 0.02 tie, 0.04 is within epsilon of 0.02 but not of 0.00: it
    # opens the next group, so its good latency cannot lift it to the top.
    rows = rank(
        [ServerReading("a", 0.00, 0.050), ServerReading("b", 0.02, 0.040), ServerReading("c", 0.04, 0.001)],
        tie_epsilon=0.02,
    )
    assert names(rows) == ["b", "a", "c"]
    assert rows[2].reason == "higher loss"


def test_known_latency_ranks_before_unknown_latency_within_a_near_tie() -> None:
    rows = rank([ServerReading("blind", 0.0), ServerReading("seen", 0.01, 0.300)])
    assert names(rows) == ["seen", "blind"]
    assert rows[1].reason == "latency unknown"


@pytest.mark.parametrize(
    "readings",
    [
        [ServerReading(name, 0.0) for name in "abcd"],  # exact ties, no latency
        [ServerReading(name, 0.01 * i, 0.010) for i, name in enumerate("abcd")],  # near-ties in both
        [ServerReading(name) for name in "abcd"],  # every loss unknown (Prometheus said nothing)
    ],
    ids=["equal-loss", "near-ties", "all-unknown"],
)
def test_ties_are_broken_at_random_not_by_name(readings: list[ServerReading]) -> None:
    firsts = Counter(names(rank(readings, seed=seed, tie_epsilon=0.05))[0] for seed in range(400))
    assert set(firsts) == {"a", "b", "c", "d"}
    assert min(firsts.values()) > 50


@pytest.mark.parametrize(
    ("weights", "expected_share"),
    [
        ({"a": 2.0}, {"a": 0.4, "b": 0.2, "c": 0.2, "d": 0.2}),  # twice the capacity, twice the share
        ({"a": 3.0, "b": 3.0}, {"a": 0.375, "b": 0.375, "c": 0.125, "d": 0.125}),
        ({"d": 0.5}, {"a": 2 / 7, "b": 2 / 7, "c": 2 / 7, "d": 1 / 7}),
    ],
)
def test_ties_go_to_each_server_in_proportion_to_its_weight(
    weights: dict[str, float], expected_share: dict[str, float]
) -> None:
    runs = 4000
    measurements = [ServerReading(name, 0.0) for name in "abcd"]
    firsts = Counter(names(rank(measurements, seed=seed, weights=weights))[0] for seed in range(runs))
    for name, share in expected_share.items():
        # 4000 draws: the standard error of a share is at most 0.008.
        assert firsts[name] / runs == pytest.approx(share, abs=0.03), (name, firsts)


def test_weight_never_overrides_a_lower_loss() -> None:
    measurements = [ServerReading("light", 0.0), ServerReading("heavy", 0.10)]
    for seed in range(50):
        assert names(rank(measurements, seed=seed, weights={"heavy": 100.0}))[0] == "light"


def test_equal_weights_shuffle_exactly_as_without_weights() -> None:
    measurements = [ServerReading(name, 0.0) for name in "abcdef"]
    for seed in range(20):
        assert names(rank(measurements, seed=seed, weights={n: 2.0 for n in "abcdef"})) == names(
            rank(measurements, seed=seed)
        )


@pytest.mark.parametrize(
    ("latencies", "latency_tie", "tied"),
    [
        # Within latency_tie of the lowest (20 ms): tied; beyond it: ranked after.
        ({"a": 0.020, "b": 0.0215, "c": 0.030}, 0.10, {"a", "b"}),
        ({"a": 0.020, "b": 0.0215, "c": 0.030}, 0.50, {"a", "b", "c"}),
        ({"a": 0.020, "b": 0.0215, "c": 0.0301}, 0.50, {"a", "b"}),
        ({"a": 0.020, "b": 0.030, "c": 0.041}, 1.0, {"a", "b"}),
        # 0 leaves only the 1 ms floor: jitter still ties, 2 ms does not.
        ({"a": 0.020, "b": 0.0209, "c": 0.022}, 0.0, {"a", "b"}),
    ],
    ids=["default-10%", "half", "just-beyond-half", "double", "floor-only"],
)
def test_latencies_within_latency_tie_of_the_lowest_are_tied(
    latencies: dict[str, float], latency_tie: float, tied: set[str]
) -> None:
    readings = [ServerReading(name, 0.0, latency) for name, latency in latencies.items()]
    runs = [names(rank(readings, seed=seed, latency_tie=latency_tie)) for seed in range(200)]
    assert {ranking[0] for ranking in runs} == tied
    assert all(set(ranking[: len(tied)]) == tied for ranking in runs)


def test_a_larger_latency_tie_lets_weights_decide_among_servers_at_similar_distances() -> None:
    # One region: "big" has twice the capacity but is 5 ms (25%) farther.
    # With the default 10% every client takes the nearer "small"; with
    # latency_tie 0.5 they are equally close and the weight decides: 2/3.
    readings = [ServerReading("small", 0.0, 0.020), ServerReading("big", 0.0, 0.025)]
    weights = {"big": 2.0}
    runs = 3000

    def share_of_big(latency_tie: float) -> float:
        firsts = Counter(
            names(rank(readings, seed=seed, weights=weights, latency_tie=latency_tie))[0] for seed in range(runs)
        )
        return firsts["big"] / runs

    assert share_of_big(LATENCY_TIE_RATIO) == 0.0
    # 3000 draws: the standard error of the share is under 0.009.
    assert share_of_big(0.5) == pytest.approx(2 / 3, abs=0.03)


def test_no_latency_tie_makes_a_lossier_server_win() -> None:
    readings = [ServerReading("far", 0.0, 0.200), ServerReading("near-lossy", 0.10, 0.001)]
    for seed in range(50):
        assert names(rank(readings, seed=seed, latency_tie=1.0, weights={"near-lossy": 100.0}))[0] == "far"


def test_the_same_seed_gives_the_same_ranking_whatever_the_input_order() -> None:
    readings = [ServerReading(name, 0.0) for name in "abcdef"]
    assert names(rank(readings, seed=7)) == names(rank(list(reversed(readings)), seed=7))


def test_a_random_first_choice_says_so() -> None:
    rows = rank([ServerReading("a", 0.0), ServerReading("b", 0.0)])
    assert rows[0].reason == "random among 2 near-ties in loss, latency unknown"
    assert rows[1].reason == "random tie-break"
    rows = rank([ServerReading("a", 0.0, 0.0100), ServerReading("b", 0.0, 0.0101)])
    assert rows[0].reason == "random among 2 near-ties in loss and latency"
    rows = rank([ServerReading("a"), ServerReading("b")])
    assert rows[0].reason == "loss unknown, picked at random"


def test_servers_left_within_hold_down_rank_after_all_others_even_unknown_ones() -> None:
    rows = rank(
        [ServerReading("left", 0.0, 0.001), ServerReading("lossy", 0.5), ServerReading("unknown")],
        history=[left("left", 240)],
    )
    assert names(rows) == ["lossy", "unknown", "left"]
    assert rows[2].reason == "held down: left 4m ago"
    assert rows[2].held_down and rows[2].left_ago == 240


def test_hold_down_expires() -> None:
    rows = rank([ServerReading("left", 0.0), ServerReading("other", 0.5)], history=[left("left", 1801)])
    assert names(rows) == ["left", "other"]
    assert not rows[0].held_down


def test_hold_down_zero_disables_it() -> None:
    rows = rank([ServerReading("left", 0.0), ServerReading("other", 0.5)], history=[left("left", 1)], hold_down=0)
    assert names(rows) == ["left", "other"]


def test_held_down_servers_are_ranked_among_themselves_by_loss() -> None:
    rows = rank(
        [ServerReading("x", 0.4), ServerReading("y", 0.1), ServerReading("free", 0.9)],
        history=[left("x", 60, seq=1), left("y", 120, seq=2)],
    )
    assert names(rows) == ["free", "y", "x"]
    assert rows[1].reason == "held down: left 2m ago"
    assert rows[2].reason == "held down: left 60s ago"


def test_when_every_candidate_is_held_down_the_best_of_them_is_chosen_and_says_so() -> None:
    rows = rank([ServerReading("x", 0.4), ServerReading("y", 0.1)], history=[left("x", 60, 1), left("y", 600, 2)])
    best = first_choice(rows)
    assert best is not None and best.name == "y"
    assert best.reason == "held down: left 10m ago, as is every other candidate; lowest loss"


def test_the_only_candidate_says_so() -> None:
    rows = rank([ServerReading("only", 0.5)])
    assert rows[0].reason == "the only candidate"


def test_unusable_servers_are_listed_without_a_rank() -> None:
    rows = rank([ServerReading("a", 0.5), ServerReading("gone", 0.0)], unusable={"gone": "config missing: /x/gone"})
    assert [(r.name, r.rank, r.reason) for r in rows] == [
        ("a", 1, "the only candidate"),
        ("current", None, "current"),
        ("gone", None, "config missing: /x/gone"),
    ]


def test_no_candidate_means_no_first_choice() -> None:
    assert first_choice(rank([])) is None


def test_without_a_current_server_every_server_is_a_candidate() -> None:
    rows = rank([ServerReading("a", 0.2), ServerReading("b", 0.1)], current=None)
    assert names(rows) == ["b", "a"]


def test_hold_down_uses_the_latest_departure_and_ignores_the_future() -> None:
    history = [left("a", 3000, 1), left("a", 100, 2), left("b", -50, 3)]
    assert held_down_servers(history, NOW, 1800) == {"a": 100, "b": 0}


def test_a_first_switch_with_no_previous_server_holds_nothing_down() -> None:
    record = SwitchRecord(seq=1, time=NOW, from_server=None, to_server="a", reason="failover")
    assert held_down_servers([record], NOW, 1800) == {}


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (119, "119s"), (240, "4m"), (7199, "119m"), (7500, "2h5m")])
def test_spans_read_like_a_human_wrote_them(seconds: float, text: str) -> None:
    assert format_ago(seconds) == text


# --- priorities: tiers of healthy servers, most preferred first ---------------

THRESHOLD = 0.15


def rank_tiered(
    servers: list[tuple[str, float | None, int | None]],
    held: tuple[str, ...] = (),
    seed: int = 0,
    current: str | None = "current",
) -> list[RankedServer]:
    """Given (name, loss, priority) rows and the names left 4 minutes ago, return the ranking."""
    history = [left(name, 240, seq) for seq, name in enumerate(held, start=1)]
    return rank_servers(
        [ServerReading(name, loss) for name, loss, _ in servers] + ([ServerReading("current", 0.9)] if current else []),
        current=current,
        history=history,
        now=NOW,
        hold_down=1800,
        tie_epsilon=0.02,
        rng=random.Random(seed),
        priorities={name: priority for name, _, priority in servers} | {"current": 1},
        threshold=THRESHOLD,
    )


def groups_of(rows: list[RankedServer]) -> list[set[str]]:
    """Return the ranked names as they must come out of every seed: ties make a set."""
    return [{row.name} for row in rows if row.rank is not None]


@pytest.mark.parametrize(
    ("servers", "held", "expected"),
    [
        # A healthy preferred server beats a less preferred one with a lower loss.
        ([("far", 0.0, 2), ("home", 0.10, 1)], (), [{"home"}, {"far"}]),
        # A lossy preferred server never beats a healthy less preferred one.
        ([("home", 0.40, 1), ("b", 0.0, 2), ("c", 0.01, 2)], (), [{"b", "c"}, {"b", "c"}, {"home"}]),
        # Exactly the threshold is healthy, as in the health check.
        ([("home", 0.15, 1), ("b", 0.0, 2)], (), [{"home"}, {"b"}]),
        # Unknown is not healthy: it never beats a measured healthy server.
        ([("home", None, 1), ("b", 0.05, 2)], (), [{"b"}, {"home"}]),
        # Nothing healthy: the least bad wins whatever its tier.
        ([("home", 0.50, 1), ("b", 0.30, 2), ("c", None, 1)], (), [{"b"}, {"home"}, {"c"}]),
        # Servers without a priority form the last tier.
        ([("plain", 0.0, None), ("b", 0.10, 5)], (), [{"b"}, {"plain"}]),
        # Hold-down comes before preference: a preferred server just left ranks last.
        ([("home", 0.0, 1), ("b", 0.05, 2), ("c", 0.60, 3)], ("home",), [{"b"}, {"c"}, {"home"}]),
        # Within the held-down half, preference applies again.
        ([("home", 0.0, 1), ("b", 0.0, 2)], ("home", "b"), [{"home"}, {"b"}]),
        # Three tiers, each healthy one in order, then the lossy ones by loss.
        (
            [("t1-bad", 0.9, 1), ("t2", 0.02, 2), ("t3", 0.0, 3), ("t2-bad", 0.3, 2)],
            (),
            [{"t2"}, {"t3"}, {"t2-bad"}, {"t1-bad"}],
        ),
        # One tier (all equal, or all unset): exactly the ranking without
        # priorities, so 0.14 and 0.155 stay near-ties across the threshold.
        ([("a", 0.14, 1), ("b", 0.155, 1)], (), [{"a", "b"}, {"a", "b"}]),
        ([("a", 0.14, None), ("b", 0.155, None)], (), [{"a", "b"}, {"a", "b"}]),
    ],
    ids=[
        "preferred-healthy-first",
        "lossy-preferred-last",
        "threshold-is-healthy",
        "unknown-is-not-healthy",
        "none-healthy-least-bad",
        "unset-is-last-tier",
        "hold-down-before-preference",
        "preference-within-held-down",
        "three-tiers",
        "one-tier-is-today",
        "no-priorities-is-today",
    ],
)
def test_priorities_order_the_healthy_servers_tier_by_tier(
    servers: list[tuple[str, float | None, int | None]], held: tuple[str, ...], expected: list[set[str]]
) -> None:
    seen_first: set[str] = set()
    for seed in range(40):
        ranked = names(rank_tiered(servers, held, seed))
        assert len(ranked) == len(expected)
        for name, allowed in zip(ranked, expected):
            assert name in allowed, (seed, ranked)
        seen_first.add(ranked[0])
    assert seen_first == expected[0]  # every server of a tie in first place is picked sometimes


def test_one_tier_ranks_exactly_as_without_priorities() -> None:
    readings = [
        ServerReading(name, loss, lat)
        for name, loss, lat in [("a", 0.1, 0.02), ("b", 0.3, None), ("c", None, None), ("d", 0.11, 0.021)]
    ]
    for seed in range(20):
        plain = rank(readings, seed=seed)
        tiered = rank_servers(
            [ServerReading("current", 0.9), *readings],
            current="current",
            history=[],
            now=NOW,
            hold_down=1800,
            tie_epsilon=0.02,
            rng=random.Random(seed),
            priorities={"a": 3, "b": 3, "c": 3, "d": 3, "current": 1},  # the current server does not count
            threshold=THRESHOLD,
        )
        assert tiered == plain


def test_priority_reasons_say_why_each_server_ranks_where_it_does() -> None:
    rows = rank_tiered([("home", 0.40, 1), ("b", 0.05, 2), ("c", 0.0, 3), ("d", None, 2)])
    assert [(r.name, r.reason) for r in rows if r.rank is not None] == [
        ("b", "most preferred healthy (priority 2); lowest loss"),
        ("c", "less preferred (priority 3)"),
        ("home", "loss above the threshold"),
        ("d", "loss unknown"),
    ]
    rows = rank_tiered([("home", 0.40, 1), ("b", 0.30, None)])
    assert rows[0].reason == "none healthy; lowest loss"
    rows = rank_tiered([("home", 0.0, 1), ("b", 0.0, None)], held=("home",))
    assert [(r.name, r.reason) for r in rows if r.rank is not None] == [
        ("b", "most preferred healthy (no priority); lowest loss"),
        ("home", "held down: left 4m ago"),
    ]


def test_the_current_server_is_never_a_candidate_however_preferred() -> None:
    rows = rank_tiered([("b", 0.0, 2)])
    assert names(rows) == ["b"]


def test_several_tiers_without_a_threshold_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="needs the health threshold"):
        rank_servers(
            [ServerReading("a", 0.0), ServerReading("b", 0.0)],
            current=None,
            history=[],
            now=NOW,
            hold_down=0,
            tie_epsilon=0.02,
            rng=random.Random(0),
            priorities={"a": 1, "b": 2},
        )


@pytest.mark.parametrize(
    ("losses", "better"),
    [
        ({"a": 0.5, "b": 0.0, "c": 0.2}, "b"),  # the least lossy other server
        ({"a": 0.05, "b": 0.0}, None),  # within tie_epsilon: as good
        ({"a": 0.0, "b": 0.5}, None),  # the chosen one is the best
        ({"a": None, "b": 0.0}, None),  # the chosen one's loss is unknown
        ({"a": 0.5, "b": None}, None),  # nothing known to compare with
        ({"a": 0.5, "b": 0.1, "c": 0.1}, "b"),  # equal losses: by name
    ],
)
def test_a_server_better_than_the_one_chosen_by_hand(losses: dict[str, float | None], better: str | None) -> None:
    readings = [ServerReading(name, loss) for name, loss in losses.items()]
    found = better_than_chosen(readings, "a", tie_epsilon=0.05)
    assert (found.name if found else None) == better


@pytest.mark.parametrize(
    ("names", "priorities", "expected"),
    [
        (["a", "b", "c"], {}, ["a", "b", "c"]),  # no priorities: all equal
        (["a", "b", "c"], {"b": 1, "c": 1}, ["b", "c"]),
        (["a", "b", "c"], {"a": 3, "b": 2}, ["b"]),  # unset is the last tier
        (["a", "c"], {"b": 1, "c": 5}, ["c"]),  # among the names given only
        ([], {"a": 1}, []),
    ],
)
def test_most_preferred_is_the_best_tier_among_the_names(
    names: list[str], priorities: dict[str, int | None], expected: list[str]
) -> None:
    assert most_preferred(names, priorities) == expected
