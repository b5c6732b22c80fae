"""Rank the servers to fail over to, and say why each is where it is.

Pure: no I/O, no clock, no global randomness. Given what Prometheus measured,
the current server, the switch history and the settings, return the
ranking; actions/failover.py asks Prometheus and acts on the first row.

The rule, in order (each step only orders servers the previous steps left
equal):

1. Candidates are every server except the current one and any the caller
   marks unusable (e.g. its WireGuard config is missing). Those come last,
   without a rank.
2. Hold-down: servers we switched away from within ``hold_down`` seconds
   (from the history) rank after all others, because a server whose tunnel
   broke still answers the external prober's pings; the original picked it
   again and again. This comes before preference: a preferred server we
   just left is no better than any other we just left.
3. Preference (only when the candidates span more than one priority
   tier): within each half, the healthy servers (known loss at or below
   the health threshold) of the most preferred tier come first, then the
   healthy ones of the next tier, and so on; every other server (lossy or
   unknown) comes after all of them, ordered as if there were no tiers, since
   among servers that are all failing the least bad one is the best guess.
   A lossy preferred server therefore never beats a healthy less preferred
   one. Servers without a priority form the last tier. With one tier this
   step does nothing: the ranking is the one without priorities.
   Then, within each of those parts, servers with a known loss rank before
   servers whose loss is unknown (NaN, ±Inf or no series): unknown is never
   read as 0.
4. Loss groups: among known losses, the lowest remaining loss L opens a
   group that holds every remaining server with loss <= L + tie_epsilon;
   the next lowest outside it opens the next group, and so on. A loss 0.031
   and a loss 0.030 are the same evidence, so they are near-ties.
5. Latency groups, within one loss group: servers with a known mean
   round-trip time rank before those without; known latencies are grouped
   the same way, with a tolerance of max(LATENCY_TIE_SECONDS,
   ``latency_tie`` x the group's lowest latency). ``latency_tie`` is
   ``failover.latency_tie`` (default LATENCY_TIE_RATIO, 10%): how much
   slower a server may be and still count as equally close. It is a
   setting, not a constant, because it trades two goods against each other.
   Within 10%, a client goes to the server nearest to it, and weights only
   act among the few servers about as near. In a fleet whose servers sit
   at similar distances (one region: 20-30 ms), which server is a client's
   nearest is an accident of its path, unrelated to capacity, so the
   displaced clients spread evenly instead of by weight (measured in
   benchmarks/fleet.py). An operator who weights servers by capacity says
   that capacity matters more than a few milliseconds; a larger
   ``latency_tie`` (0.5: up to 1.5x the lowest round trip is "as close")
   makes those servers equal in latency, so the weighted pick of step 6
   decides, while a server much farther away still ranks after them.
   Loss always decides first: no latency_tie makes a lossier server win.
6. Random order within what is still equal: a latency group, the unknown
   latencies of a loss group, or an unknown-loss tier. The shuffle starts
   from name order, so one seed gives one ranking whatever the input order,
   and a fleet of hosts seeing the same numbers does not pile onto the
   first name (nor, with every loss unknown, does one host always retreat
   to it, as the original did). With per-server ``weights`` (capacity), the
   first place of the shuffle goes to each server with a chance proportional
   to its weight, so a fleet spreads in proportion to capacity.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence

from wgfailover.evidence.readings import ServerReading
from wgfailover.state import SwitchRecord

# Two latencies are a near-tie when they differ by less than this many
# seconds, or this fraction of the lower one (failover.latency_tie; this is
# its default), whichever is larger: a few milliseconds of jitter between
# ping targets says nothing about a tunnel.
LATENCY_TIE_SECONDS = 0.001
LATENCY_TIE_RATIO = 0.10
# Float slack so that a difference of exactly tie_epsilon (0.05 - 0.03)
# counts as within it, as documented.
_SLACK = 1e-9


@dataclasses.dataclass(frozen=True)
class RankedServer:
    """One row of a ranking."""

    name: str
    loss: float | None
    latency: float | None
    rank: int | None  # 1 is the choice; None: not a candidate (current, unusable)
    reason: str  # why it is where it is, e.g. "current", "held down: left 4m ago", "loss unknown"
    left_ago: float | None = None  # seconds since we switched away from it, if within hold_down

    @property
    def held_down(self) -> bool:
        return self.left_ago is not None


def held_down_servers(history: Sequence[SwitchRecord], now: float, hold_down: float) -> dict[str, float]:
    """
    Given the switch history, the current unix time and hold_down seconds,
    return {server: seconds since we last switched away from it} for every
    server left within hold_down. A record from the future (clock stepped
    back) counts as just now.
    """
    if hold_down <= 0:
        return {}
    left: dict[str, float] = {}
    for record in history:
        if record.from_server is None or record.from_server == record.to_server:
            continue
        ago = max(0.0, now - record.time)
        if ago < hold_down:
            previous = left.get(record.from_server)
            left[record.from_server] = ago if previous is None else min(previous, ago)
    return left


def format_ago(seconds: float) -> str:
    """Given seconds, return a short human span: '45s', '4m', '2h5m'."""
    whole = int(seconds)
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}m"
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"


def rank_servers(
    readings: Sequence[ServerReading],
    *,
    current: str | None,
    history: Sequence[SwitchRecord],
    now: float,
    hold_down: float,
    tie_epsilon: float,
    rng: random.Random,
    unusable: Mapping[str, str] | None = None,
    priorities: Mapping[str, int | None] | None = None,
    threshold: float | None = None,
    weights: Mapping[str, float] | None = None,
    latency_tie: float = LATENCY_TIE_RATIO,
) -> list[RankedServer]:
    """
    Given one ServerReading per configured server, the current server's name
    (None if unknown), the switch history, the unix time now, hold_down and
    tie_epsilon (see the module docstring for the rule) and a random source,
    return every server as a RankedServer: candidates first, in rank order
    (rank 1 is the choice), then the current server and the unusable ones
    (``unusable`` maps a name to why) without a rank. Loss and latency must
    already be clean (None for unknown, loss in [0, 1]: see evidence/readings.py).
    ``priorities`` maps a server to its tier (lower is preferred; missing
    or None: the last tier) and ``threshold`` is the highest loss that
    counts as healthy. ``weights`` maps a server to its capacity (missing:
    1) and ``latency_tie`` is the fraction of the lowest latency within
    which latencies are tied (step 5). Raise ValueError if the candidates
    span several tiers and no threshold is given.
    """
    unusable = unusable or {}
    priorities = priorities or {}
    weights = weights or {}
    left = held_down_servers(history, now, hold_down)
    candidates = [m for m in readings if m.name != current and m.name not in unusable]
    tiers = sorted({tier_of(priorities, m.name) for m in candidates})
    if len(tiers) > 1 and threshold is None:
        raise ValueError("ranking by priority needs the health threshold")

    placed: list[_Placed] = []
    for held in (False, True):
        half = [m for m in candidates if (m.name in left) == held]
        for part, members in _preference_parts(half, tiers, priorities, threshold):
            placed += _place(members, held, part, tie_epsilon, latency_tie, rng, weights)

    rows = [
        _row(entry.reading, rank, _reason(entry, placed[0], len(placed), left, len(tiers) > 1), left)
        for rank, entry in enumerate(placed, start=1)
    ]
    for reading in readings:
        if reading.name == current:
            rows.append(_row(reading, None, "current", left))
        elif reading.name in unusable:
            rows.append(_row(reading, None, unusable[reading.name], left))
    return rows


def tier_of(priorities: Mapping[str, int | None], name: str) -> float:
    """Given {server: priority} and a server, return its tier: its priority, or +inf without one."""
    priority = priorities.get(name)
    return math.inf if priority is None else float(priority)


def most_preferred(names: Sequence[str], priorities: Mapping[str, int | None]) -> list[str]:
    """
    Given server names and {server: priority}, return those of the most
    preferred tier among them, in the given order (all of them without
    priorities). Nothing measured: for a pick without Prometheus, wg-select's.
    """
    if not names:
        return []
    best = min(tier_of(priorities, name) for name in names)
    return [name for name in names if tier_of(priorities, name) == best]


def describe_tier(tier: float) -> str:
    """Given a tier from tier_of, return it for a reason: 'priority 2' or 'no priority'."""
    return "no priority" if math.isinf(tier) else f"priority {tier:g}"


def is_healthy(loss: float | None, threshold: float) -> bool:
    """Given a clean loss (None: unknown) and the health threshold, return whether it is healthy."""
    # Equal to the threshold is healthy, as in the health check.
    return loss is not None and loss <= threshold


def better_than_chosen(readings: Iterable[ServerReading], chosen: str, tie_epsilon: float) -> ServerReading | None:
    """
    Given every server's reading, the server chosen by hand and the
    near-tie margin, return the least lossy other server if its loss is
    lower than the chosen one's by more than tie_epsilon; else None (also
    when the chosen server's loss is unknown: nothing to compare).
    """
    by_name = {m.name: m for m in readings}
    target = by_name.get(chosen)
    if target is None or target.loss is None:
        return None
    others = [m for m in by_name.values() if m.name != chosen and m.loss is not None]
    best = min(others, key=lambda m: (m.loss, m.name), default=None)
    if best is None or best.loss is None or target.loss - best.loss <= tie_epsilon + _SLACK:
        return None
    return best


def first_choice(rows: Iterable[RankedServer]) -> RankedServer | None:
    """Given a ranking, return its rank-1 row, or None if nothing can be chosen."""
    return next((row for row in rows if row.rank == 1), None)


# --- internals ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Placed:
    """A candidate and the groups the rule put it in (None: unknown value)."""

    reading: ServerReading
    held: bool
    part: _Part
    loss_group: int | None
    latency_group: int | None
    loss_group_size: int
    latency_group_size: int


@dataclasses.dataclass(frozen=True)
class _Part:
    """One part of a hold-down half under step 3: a tier's healthy servers, or the rest."""

    index: int  # order of the parts; with one tier, every candidate is in part 0
    tier: float | None  # the tier of a healthy part; None: the rest (or no tiers at all)


def _preference_parts(
    half: list[ServerReading],
    tiers: list[float],
    priorities: Mapping[str, int | None],
    threshold: float | None,
) -> list[tuple[_Part, list[ServerReading]]]:
    """Given one hold-down half and the candidates' tiers, return its parts in rank order (step 3)."""
    if len(tiers) <= 1 or threshold is None:
        return [(_Part(0, None), half)]
    parts = []
    healthy = {m.name for m in half if is_healthy(m.loss, threshold)}
    for index, tier in enumerate(tiers):
        members = [m for m in half if m.name in healthy and tier_of(priorities, m.name) == tier]
        parts.append((_Part(index, tier), members))
    parts.append((_Part(len(tiers), None), [m for m in half if m.name not in healthy]))
    return parts


def _place(
    members: list[ServerReading],
    held: bool,
    part: _Part,
    tie_epsilon: float,
    latency_tie: float,
    rng: random.Random,
    weights: Mapping[str, float],
) -> list[_Placed]:
    """Given the members of one part, return them placed by steps 4 to 6: known losses first, then unknown."""
    placed = []
    known = [m for m in members if m.loss is not None]
    for loss_index, loss_group in enumerate(_groups(known, _loss, lambda lowest: tie_epsilon)):
        with_latency = [m for m in loss_group if m.latency is not None]
        latency_groups = _groups(with_latency, _latency, lambda lowest: _latency_tolerance(lowest, latency_tie))
        latency_groups.append([m for m in loss_group if m.latency is None])
        for latency_index, latency_group in enumerate(latency_groups):
            is_known = latency_index < len(latency_groups) - 1
            for reading in _shuffled(latency_group, rng, weights):
                placed.append(
                    _Placed(
                        reading,
                        held,
                        part,
                        loss_index,
                        latency_index if is_known else None,
                        len(loss_group),
                        len(latency_group),
                    )
                )
    unknown = [m for m in members if m.loss is None]
    placed += [_Placed(m, held, part, None, None, len(unknown), len(unknown)) for m in _shuffled(unknown, rng, weights)]
    return placed


def _loss(reading: ServerReading) -> float:
    return reading.loss if reading.loss is not None else math.inf


def _latency(reading: ServerReading) -> float:
    return reading.latency if reading.latency is not None else math.inf


def _latency_tolerance(lowest: float, latency_tie: float) -> float:
    return max(LATENCY_TIE_SECONDS, latency_tie * lowest)


def _groups(
    items: list[ServerReading],
    key: Callable[[ServerReading], float],
    tolerance: Callable[[float], float],
) -> list[list[ServerReading]]:
    """Given items, return them in near-tie groups: the lowest key opens a group of all within its tolerance."""
    remaining = sorted(items, key=lambda m: (key(m), m.name))
    groups = []
    while remaining:
        lowest = key(remaining[0])
        limit = lowest + tolerance(lowest) + _SLACK
        group = [m for m in remaining if key(m) <= limit]
        remaining = remaining[len(group) :]
        groups.append(group)
    return groups


def _shuffled(items: list[ServerReading], rng: random.Random, weights: Mapping[str, float]) -> list[ServerReading]:
    result = sorted(items, key=lambda m: m.name)
    if len({weights.get(m.name, 1.0) for m in result}) <= 1:
        rng.shuffle(result)
        return result
    # Weighted random order (Efraimidis and Spirakis): each item draws
    # u ** (1 / weight) and the largest draw goes first, so the first place
    # falls to each item with a chance proportional to its weight.
    keys = {m.name: rng.random() ** (1.0 / weights.get(m.name, 1.0)) for m in result}
    return sorted(result, key=lambda m: keys[m.name], reverse=True)


def _reason(entry: _Placed, first: _Placed, candidates: int, left: Mapping[str, float], tiered: bool) -> str:
    """Given a placed candidate and the first one, return why it ranks where it does."""
    name = entry.reading.name
    held = f"held down: left {format_ago(left[name])} ago" if entry.held else None
    if entry is first:
        if candidates == 1:
            return f"{held}, but the only candidate" if held else "the only candidate"
        why = _why_first(entry)
        if tiered:
            tier = entry.part.tier
            why = (
                f"most preferred healthy ({describe_tier(tier)}); {why}" if tier is not None else f"none healthy; {why}"
            )
        return f"{held}, as is every other candidate; {why}" if held else why
    if held and not first.held:
        return held
    if entry.part.index != first.part.index:
        if entry.part.tier is not None:
            why = f"less preferred ({describe_tier(entry.part.tier)})"
        else:
            why = "loss unknown" if entry.loss_group is None else "loss above the threshold"
        return f"{held}; {why}" if held else why
    if entry.loss_group is None:
        why = "loss unknown"
    elif entry.loss_group != first.loss_group:
        why = "higher loss"
    elif entry.latency_group == first.latency_group:
        why = "random tie-break"
    elif entry.latency_group is None:
        why = "latency unknown"
    else:
        why = "higher latency"
    return f"{held}; {why}" if held else why


def _why_first(entry: _Placed) -> str:
    if entry.loss_group is None:
        return "loss unknown, picked at random" if entry.loss_group_size > 1 else "loss unknown"
    if entry.loss_group_size == 1:
        return "lowest loss"
    if entry.latency_group is None:
        return f"random among {entry.latency_group_size} near-ties in loss, latency unknown"
    if entry.latency_group_size == 1:
        return "lowest latency among near-ties in loss"
    return f"random among {entry.latency_group_size} near-ties in loss and latency"


def _row(reading: ServerReading, rank: int | None, reason: str, left: Mapping[str, float]) -> RankedServer:
    return RankedServer(
        name=reading.name,
        loss=reading.loss,
        latency=reading.latency,
        rank=rank,
        reason=reason,
        left_ago=left.get(reading.name),
    )
