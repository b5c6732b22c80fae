"""Failback: return to a more preferred server once it has been healthy long enough.

Pure: no I/O, no clock, no global randomness. The health check asks
plan_failback whether a failback is worth asking Prometheus about, asks the
prober's history of the candidates in one query, and hands the readings to
choose_failback; ``wg-health-check --backtest`` replays the same two steps.

The rule (``failover.failback_after`` unset: never). On a check that found
the tunnel healthy, switch to a server of a more preferred tier than the
current one when

- no switch happened within ``failback_after`` (at most one failback per
  ``failback_after``, and never right after a failover),
- the server is not held down (we did not leave it within ``hold_down``),
- the external prober saw its loss at or below the health threshold in
  every ``health.min_window`` slice of the last ``failback_after``, with
  data for nearly every slice (see MISSING_SLICES).

Why it cannot flap: a failback needs ``failback_after`` of clean slices in
a row, so a server that is lossy on and off more often than that never
qualifies; a failback is a switch, so the next one waits ``failback_after``
again; it only happens while the current tunnel is healthy, so it never
races a failover; and a failback that does not work out (the tunnel fails
on the preferred server) fails over away from it, which holds it down for
``hold_down``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Collection, Mapping, Sequence

from wgfailover.evidence.readings import PreferredReading, ServerReading
from wgfailover.policy.ranking import first_choice, format_ago, held_down_servers, rank_servers, tier_of
from wgfailover.state import SwitchRecord

# The share of slices that may lack data (a missed scrape leaves a slice
# with too few samples for rate()), but never fewer than one: without data
# there is no evidence that the server was healthy then.
MISSING_SLICES = 0.10


@dataclasses.dataclass(frozen=True)
class FailbackPlan:
    """Whether to look for a failback, and at which servers."""

    candidates: tuple[str, ...]  # more preferred servers worth asking the prober about; empty: none
    skip: str | None = None  # why no failback is looked for (None: ask about the candidates)


@dataclasses.dataclass(frozen=True)
class FailbackVerdict:
    """Why one candidate is, or is not, a server to fail back to."""

    name: str
    eligible: bool
    reason: str  # e.g. "healthy for 15m", "loss 0.4 > 0.15 within the last 15m"


@dataclasses.dataclass(frozen=True)
class FailbackDecision:
    """The outcome: the server to fail back to and the history reason, or why not."""

    target: str | None
    reason: str  # with a target: the history reason; without: why not
    verdicts: tuple[FailbackVerdict, ...] = ()


def expected_slices(failback_after: float, slice_seconds: float) -> int:
    """Given failback_after and the slice length in seconds, return how many slices cover it."""
    return max(1, math.floor(failback_after / slice_seconds))


def plan_failback(
    *,
    current: str | None,
    priorities: Mapping[str, int | None],
    history: Sequence[SwitchRecord],
    now: float,
    failback_after: float | None,
    hold_down: float,
    tunnel_healthy: bool,
    unusable: Collection[str] = (),
) -> FailbackPlan:
    """
    Given the current server, {server: priority}, the switch history, the
    unix time now, failback_after (None: never), hold_down, whether this
    check found the tunnel healthy and the servers that cannot be used
    (config missing), return the FailbackPlan: the more preferred servers to
    ask the prober about, or why no failback is looked for. Everything that
    needs no measurement is decided here, so most checks send no query.
    """
    if failback_after is None:
        return FailbackPlan((), "failover.failback_after is not set")
    if not tunnel_healthy:
        return FailbackPlan((), "the tunnel is not healthy: that is a failover's business")
    if current is None:
        return FailbackPlan((), "no current server recorded")
    own = tier_of(priorities, current)
    preferred = sorted(
        (name for name in priorities if tier_of(priorities, name) < own and name not in unusable),
        key=lambda name: (tier_of(priorities, name), name),
    )
    if not preferred:
        return FailbackPlan((), f"no usable server is more preferred than {current}")
    last = history[-1] if history else None
    if last is not None:
        since = now - last.time
        if since < failback_after:
            # A negative span (clock stepped back) waits too: never switch sooner.
            when = f"{format_ago(since)} ago" if since >= 0 else "in the future (was the clock changed?)"
            return FailbackPlan((), f"the last switch was {when}, within failback_after ({format_ago(failback_after)})")
    held = held_down_servers(history, now, hold_down)
    candidates = tuple(name for name in preferred if name not in held)
    if not candidates:
        listed = ", ".join(f"{name} (left {format_ago(held[name])} ago)" for name in preferred)
        return FailbackPlan((), f"every more preferred server is held down: {listed}")
    return FailbackPlan(candidates)


def choose_failback(
    plan: FailbackPlan,
    readings: Mapping[str, PreferredReading],
    *,
    priorities: Mapping[str, int | None],
    threshold: float,
    failback_after: float,
    slice_seconds: float,
    tie_epsilon: float,
    rng: random.Random,
) -> FailbackDecision:
    """
    Given a plan with candidates, the prober's readings of them over the
    last failback_after (a missing reading: no data), {server: priority},
    the health threshold, failback_after, the slice length, tie_epsilon and
    a random source, return the decision: the most preferred candidate that
    stayed healthy in every slice (lowest worst loss within its tier, near
    ties at random, as a failover ranks), or why none qualifies.
    """
    if plan.skip is not None or not plan.candidates:
        return FailbackDecision(None, plan.skip or "no candidate")
    span = format_ago(failback_after)
    needed = expected_slices(failback_after, slice_seconds)
    allowed_missing = max(1, math.floor(needed * MISSING_SLICES))
    verdicts = []
    for name in plan.candidates:
        reading = readings.get(name)
        if reading is None or reading.worst_loss is None or reading.slices == 0:
            verdicts.append(FailbackVerdict(name, False, f"no data over the last {span}"))
        elif reading.worst_loss > threshold:
            verdicts.append(
                FailbackVerdict(name, False, f"loss {reading.worst_loss:.3g} > {threshold:g} within the last {span}")
            )
        elif reading.slices < needed - allowed_missing:
            verdicts.append(
                FailbackVerdict(name, False, f"data for only {reading.slices} of {needed} slices of the last {span}")
            )
        else:
            verdicts.append(FailbackVerdict(name, True, f"healthy for {span}"))
    eligible = [v.name for v in verdicts if v.eligible]
    if not eligible:
        why = "; ".join(f"{v.name}: {v.reason}" for v in verdicts)
        return FailbackDecision(None, f"no more preferred server was healthy for {span} ({why})", tuple(verdicts))
    rows = rank_servers(
        [ServerReading(name, readings[name].worst_loss) for name in eligible],
        current=None,
        history=[],
        now=0.0,
        hold_down=0,
        tie_epsilon=tie_epsilon,
        rng=rng,
        priorities={name: priorities.get(name) for name in eligible},
        threshold=threshold,
    )
    best = first_choice(rows)
    assert best is not None  # noqa: S101 - eligible is not empty
    return FailbackDecision(best.name, f"failback: {best.name} healthy for {span}", tuple(verdicts))
