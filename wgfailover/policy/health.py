"""The failure counter: is this check a failure, and is it time to fail over?

Consecutive bad checks are counted (``state_dir/health-failures``, the
original's file); ``health.max_failures`` of them call for a failover, and
one good check resets the count. decide_check is the one entry point the
live check and ``--backtest`` share: rules added later (a local fault, the
probation of a new server, failback) belong in it, fed by fields added to
CheckEvidence and CheckState.
"""

from __future__ import annotations

import dataclasses
import enum

from wgfailover.config import HealthSettings
from wgfailover.evidence.readings import TunnelReading


class HealthOutcome(str, enum.Enum):
    """What one health check came to. The values are what logs and JSON show."""

    HEALTHY = "healthy"  # loss at or below the threshold (or a fresh handshake): counter reset
    FAILURE = "failure"  # counted one failure, fewer than max_failures so far
    FAILOVER = "failover"  # max_failures reached: failover due, counter reset
    IGNORED = "ignored"  # no data and health.on_no_data = "ignore": counter left as it was
    WAITING = "waiting"  # too little new data (after a switch or a check): nothing measured
    SUPERSEDED = "superseded"  # a switch happened while measuring: the measurement is void

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class CheckEvidence:
    """What one check has to go on, gathered at unix time ``time``."""

    time: float
    tunnel: TunnelReading


@dataclasses.dataclass(frozen=True)
class CheckState:
    """What earlier runs left behind that a check's decision depends on."""

    failures: int  # consecutive failures counted so far


@dataclasses.dataclass(frozen=True)
class CheckDecision:
    """The verdict of one check: its outcome, the counter after it, and why a failover is due."""

    outcome: HealthOutcome
    failures: int
    reason: str | None = None  # the failover reason, when one is due


def decide_check(evidence: CheckEvidence, settings: HealthSettings, state: CheckState) -> CheckDecision:
    """
    Given one check's evidence, the health settings and the state before
    the check, return the decision: the outcome, the new counter and, when
    max_failures is reached, the failover reason.
    """
    reading = evidence.tunnel
    failures_before = state.failures
    if not reading.has_data:
        if settings.on_no_data == "ignore":
            return CheckDecision(outcome=HealthOutcome.IGNORED, failures=failures_before)
        bad = True
    else:
        bad = reading.is_bad(settings.threshold)
    if not bad:
        return CheckDecision(outcome=HealthOutcome.HEALTHY, failures=0)
    failures = failures_before + 1
    if failures < settings.max_failures:
        return CheckDecision(outcome=HealthOutcome.FAILURE, failures=failures)
    # The span is left out: each check judged its own.
    what = reading.describe(settings.threshold, with_span=False)
    plural = "check" if failures == 1 else "checks"
    # The original reset the counter before starting the failover; so do
    # we, so a failed trigger is retried only after fresh evidence.
    return CheckDecision(
        outcome=HealthOutcome.FAILOVER, failures=0, reason=f"health-check: {what} for {failures} {plural}"
    )
