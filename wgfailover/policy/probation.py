"""Probation: does the server just switched to carry the tunnel?

A server whose WireGuard died still answers the external prober's pings, so
it ranks as healthy and may be chosen. Without a probation the tunnel then
waits ``health.min_window`` and ``health.max_failures`` more checks (minutes
at production cadence) before moving on. So after every switch (a health
check's, ``OnFailure=``'s, by hand) the new server is confirmed within
``failover.probation``:

- **handshake** (``health.interface`` set): a WireGuard handshake newer than
  the restart. The restart rebuilds the interface, and the prober's pings
  make it handshake at once; a dead server never answers one.
- **tunnel data** (no interface): the tunnel loss over ``health.min_window``
  of data gathered wholly after the restart, at or below
  ``health.threshold``, the same rule a health check applies. Such data
  needs min_window plus a scrape to reach Prometheus, so this probation
  lasts at least twice min_window. When Prometheus cannot be asked nothing
  can be confirmed or condemned: the server is kept, and the health checks
  judge it as any other.

A server that fails is left at once for the next candidate, in the order of
the ranking made when the episode began (the failed server is held down by
the history, as any server left). One pass at most: when every candidate
has failed, the tunnel goes back to the best-ranked one and stays there,
"all servers failed", until a check shows a server recovered or
``failover.hold_down`` has passed (then the next episode may try again).

Pure: no I/O, no clock. The caller measures elapsed times and readings.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Mapping, Sequence

from wgfailover.config import format_duration

HANDSHAKE = "handshake"
TUNNEL_DATA = "tunnel data"


class ProbationVerdict(str, enum.Enum):
    """Where a probation stands. The values are what logs and JSON show."""

    PASSED = "passed"
    FAILED = "failed"
    WAITING = "waiting"  # no verdict yet: read again

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class ProbationRules:
    """The settings one probation is judged by."""

    probation: float  # failover.probation, seconds; 0: no probation
    method: str  # HANDSHAKE or TUNNEL_DATA
    min_window: float  # health.min_window
    threshold: float  # health.threshold

    @property
    def enabled(self) -> bool:
        return self.probation > 0

    @property
    def limit(self) -> float:
        """Return the seconds after the restart by which a verdict is due."""
        if self.method == TUNNEL_DATA:
            return max(self.probation, 2 * self.min_window)
        return self.probation


def probation_rules(probation: float, interface: str | None, min_window: float, threshold: float) -> ProbationRules:
    """Given failover.probation, health.interface, health.min_window and health.threshold, return the rules."""
    return ProbationRules(
        probation=probation,
        method=HANDSHAKE if interface else TUNNEL_DATA,
        min_window=min_window,
        threshold=threshold,
    )


@dataclasses.dataclass(frozen=True)
class ProbationReading:
    """What is known of the new tunnel ``elapsed`` seconds after its restart began."""

    elapsed: float
    handshake_after: float | None = None  # HANDSHAKE: seconds after the restart of a handshake; None: none yet
    loss: float | None = None  # TUNNEL_DATA: loss over ``span``; None: no data
    span: float | None = None  # TUNNEL_DATA: seconds of data judged, all after the restart
    error: str | None = None  # TUNNEL_DATA: why Prometheus could not be asked


@dataclasses.dataclass(frozen=True)
class ProbationJudgement:
    """The verdict on one reading, and why."""

    verdict: ProbationVerdict
    reason: str


def judge_probation(server: str, reading: ProbationReading, rules: ProbationRules) -> ProbationJudgement:
    """
    Given the server on probation, one reading of its tunnel and the rules,
    return PASSED, FAILED (with the reason recorded for the switch away) or
    WAITING (read again later; never past rules.limit).
    """
    out_of_time = reading.elapsed >= rules.limit
    limit = format_duration(rules.limit)
    if rules.method == HANDSHAKE:
        if reading.handshake_after is not None:
            return ProbationJudgement(
                ProbationVerdict.PASSED, f"handshake with {server} {reading.handshake_after:.0f}s after the restart"
            )
        if out_of_time:
            return ProbationJudgement(ProbationVerdict.FAILED, f"no handshake with {server} within {limit}")
        return ProbationJudgement(ProbationVerdict.WAITING, f"no handshake with {server} yet")
    if reading.error is not None:
        # Nothing can confirm the server, nor condemn it: moving on would
        # walk through every server on a Prometheus outage alone. The
        # health checks judge it as any server.
        return ProbationJudgement(ProbationVerdict.PASSED, f"not confirmed, Prometheus unusable ({reading.error})")
    full = reading.span is not None and reading.span >= rules.min_window
    if full and reading.loss is not None:
        over = format_duration(reading.span or 0)
        if reading.loss <= rules.threshold:
            return ProbationJudgement(
                ProbationVerdict.PASSED,
                f"tunnel loss {reading.loss:.3g} <= {rules.threshold:g} over {over} on {server}",
            )
        # The same evidence a health check would count, but one is enough
        # here: the server has not yet shown that it works at all.
        return ProbationJudgement(
            ProbationVerdict.FAILED, f"tunnel loss {reading.loss:.3g} > {rules.threshold:g} over {over} on {server}"
        )
    if out_of_time:
        return ProbationJudgement(
            ProbationVerdict.FAILED,
            f"no tunnel data over {format_duration(rules.min_window)} on {server} within {limit}",
        )
    return ProbationJudgement(ProbationVerdict.WAITING, f"waiting for {format_duration(rules.min_window)} of data")


def next_candidate(order: Sequence[str], tried: Collection[str]) -> str | None:
    """
    Given the candidates in the order ranked when the episode began and the
    servers tried in it so far, return the next one to try, or None when the
    pass is done.
    """
    return next((name for name in order if name not in tried), None)


def describe_all_failed(failed: Mapping[str, str], staying_on: str | None) -> str:
    """Given {server: why it failed probation} in the order tried and the server kept, return the message."""
    listed = "; ".join(f"{name}: {why}" for name, why in failed.items())
    stay = f"; staying on {staying_on}" if staying_on else ""
    return f"all servers failed ({listed}){stay}"


def all_failed_holds(since: float | None, now: float, hold_down: float) -> bool:
    """
    Given when every server last failed (None: not in that state), the unix
    time now and failover.hold_down, return whether a failover is still held
    back: a new pass only once hold_down has passed (a healthy check ends the
    state earlier). A record from the future (clock stepped back) holds.
    """
    if since is None:
        return False
    return now - since < hold_down
