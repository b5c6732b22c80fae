"""The failure counter: is this check a failure, and is it time to fail over?

Consecutive bad checks are counted (``state_dir/health-failures``, the
original's file); ``health.max_failures`` of them call for a failover, and
one good check resets the count. decide_check is the one entry point the
live check and ``--backtest`` share: rules added later belong in it, fed by
fields added to CheckEvidence and CheckState.

Two rules keep a failed check from leading to a switch that cannot help:

- A **local fault** (local_fault.py): the check failed while the external
  prober saw every server, the current one included, losing packets over
  the same span. The host's own uplink is down; the check is not counted
  (the counter stands still, neither reset nor raised) and says so.
- **All servers failed** (probation.py): the last episode switched through
  every candidate and none passed its probation. A failover that falls due
  within ``failover.hold_down`` of that is held back, and the counter reset
  as after a failover; a healthy check ends the state.
"""

from __future__ import annotations

import dataclasses
import enum

from wgfailover.config import HealthSettings
from wgfailover.evidence.readings import TunnelReading
from wgfailover.policy.local_fault import LocalFault
from wgfailover.policy.probation import all_failed_holds


class HealthOutcome(str, enum.Enum):
    """What one health check came to. The values are what logs and JSON show."""

    HEALTHY = "healthy"  # loss at or below the threshold (or a fresh handshake): counter reset
    FAILURE = "failure"  # counted one failure, fewer than max_failures so far
    FAILOVER = "failover"  # max_failures reached: failover due, counter reset
    IGNORED = "ignored"  # no data and health.on_no_data = "ignore": counter left as it was
    WAITING = "waiting"  # too little new data (after a switch or a check): nothing measured
    SUPERSEDED = "superseded"  # a switch happened while measuring: the measurement is void
    LOCAL_FAULT = "local fault"  # failed, but every server is lossy: not counted, counter left as it was
    HELD = "held"  # max_failures reached while all servers failed: no failover, counter reset

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class CheckEvidence:
    """What one check has to go on, gathered at unix time ``time``."""

    time: float
    tunnel: TunnelReading
    # Every server's loss over the same span, when the tunnel reading failed
    # and Prometheus was asked: a LocalFault if every one was lossy.
    local_fault: LocalFault | None = None


@dataclasses.dataclass(frozen=True)
class CheckState:
    """What earlier runs left behind that a check's decision depends on."""

    failures: int  # consecutive failures counted so far
    all_failed_since: float | None = None  # unix time every server last failed its probation; None: not so
    hold_down: float = 0.0  # failover.hold_down: how long all_failed_since holds failovers back


@dataclasses.dataclass(frozen=True)
class CheckDecision:
    """The verdict of one check: its outcome, the counter after it, and why a failover is due."""

    outcome: HealthOutcome
    failures: int
    reason: str | None = None  # the failover reason, when one is due


def is_failure(reading: TunnelReading, settings: HealthSettings) -> bool | None:
    """
    Given a tunnel reading and the health settings, return whether it counts
    as a failed check: True, False, or None when it is not counted at all
    (no data and health.on_no_data = "ignore").
    """
    if not reading.has_data:
        return None if settings.on_no_data == "ignore" else True
    return reading.is_bad(settings.threshold)


def decide_check(evidence: CheckEvidence, settings: HealthSettings, state: CheckState) -> CheckDecision:
    """
    Given one check's evidence, the health settings and the state before
    the check, return the decision: the outcome, the new counter and, when
    max_failures is reached, the failover reason (or, for LOCAL_FAULT and
    HELD, why nothing is done).
    """
    reading = evidence.tunnel
    failures_before = state.failures
    bad = is_failure(reading, settings)
    if bad is None:
        return CheckDecision(outcome=HealthOutcome.IGNORED, failures=failures_before)
    if not bad:
        return CheckDecision(outcome=HealthOutcome.HEALTHY, failures=0)
    if evidence.local_fault is not None:
        # Switching cannot help, and the failure says nothing against the
        # current server; nor does it show the tunnel healthy.
        return CheckDecision(
            outcome=HealthOutcome.LOCAL_FAULT, failures=failures_before, reason=evidence.local_fault.describe()
        )
    failures = failures_before + 1
    if failures < settings.max_failures:
        return CheckDecision(outcome=HealthOutcome.FAILURE, failures=failures)
    if all_failed_holds(state.all_failed_since, evidence.time, state.hold_down):
        return CheckDecision(
            outcome=HealthOutcome.HELD,
            failures=0,
            reason=(
                "all servers failed their probation; no failover until a check is healthy or failover.hold_down passes"
            ),
        )
    # The span is left out: each check judged its own.
    what = reading.describe(settings.threshold, with_span=False)
    plural = "check" if failures == 1 else "checks"
    # The original reset the counter before starting the failover; so do
    # we, so a failed trigger is retried only after fresh evidence.
    return CheckDecision(
        outcome=HealthOutcome.FAILOVER, failures=0, reason=f"health-check: {what} for {failures} {plural}"
    )
