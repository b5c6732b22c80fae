"""wg-health-check: is the active tunnel losing packets, and is it time to fail over?

One check plans the span it judges (policy/spans.py), measures the tunnel
over it (evidence/tunnel.py), asks the failure counter for a verdict
(policy/health.py), records the counter and the check, and triggers a
failover when the verdict calls for one.

The state lock is held only to update the counter and the last-check record,
never while the failover runs: ``health.failover_command`` may well be
``systemctl start wg-failover.service``, which takes the same lock.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable

from wgfailover.actions.failback import FailbackResult, look_for_failback
from wgfailover.actions.failover import FailoverResult, fail_over
from wgfailover.actions.probation import rules_for
from wgfailover.config import Config, format_duration
from wgfailover.errors import ActionError, LocalFaultError, ProbationFailedError, WgFailoverError
from wgfailover.evidence.readings import TunnelReading
from wgfailover.evidence.servers_loss import find_endpoints, measure_servers
from wgfailover.evidence.tunnel import measure_tunnel
from wgfailover.external import run_command
from wgfailover.metrics import write_metrics
from wgfailover.policy.health import (
    CheckDecision,
    CheckEvidence,
    CheckState,
    HealthOutcome,
    decide_check,
    is_failure,
)
from wgfailover.policy.local_fault import LocalFault, local_fault_of
from wgfailover.policy.spans import Span, plan_span
from wgfailover.prometheus_pool import one_budget
from wgfailover.state import CheckRecord, StateDir, SwitchRecord

log = logging.getLogger(__name__)

# Seconds a failover triggered through health.failover_command may take on
# top of the configured bounds of what it runs (lock wait, queries, restart).
_TRIGGER_MARGIN = 30.0


@dataclasses.dataclass(frozen=True)
class HealthResult:
    """The outcome of one health check (or of a --dry-run: what it would do)."""

    outcome: HealthOutcome
    span: Span
    reading: TunnelReading | None  # None while waiting
    failures_before: int
    failures: int  # the counter after this check (dry run: what it would be)
    max_failures: int
    threshold: float
    dry_run: bool = False
    trigger: str | None = None  # how the failover is (or would be) triggered
    failover: FailoverResult | None = None  # the in-process failover's result
    why: str | None = None  # LOCAL_FAULT and HELD: why the failed check leads to no switch
    failback: FailbackResult | None = None  # a healthy check's look for a failback (failback_after set)


def check_health(
    config: Config,
    *,
    dry_run: bool = False,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> HealthResult:
    """
    Run one health check (see _check_health) within one Prometheus time
    budget: the measurement, the local-fault and failback questions and an
    in-process failover's ranking share prometheus.timeout.
    """
    with one_budget():
        return _check_health(config, dry_run=dry_run, wall_clock=wall_clock, rng=rng)


def _check_health(
    config: Config,
    *,
    dry_run: bool = False,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> HealthResult:
    """
    Given the config, run one health check: judge the tunnel loss over the
    span since the previous check, update the failure counter and the
    last-check record, rewrite the metrics and, when max_failures is
    reached, trigger the failover (in-process, or health.failover_command)
    after releasing the state lock. With dry_run, measure and return what
    would happen, changing nothing. Return the HealthResult.

    Raise PrometheusError or MeasurementError (exit 69) if the tunnel could
    not be measured, leaving the counter as it was; LockBusyError (75) if
    the state lock stays busy; ActionError (1) if the triggered failover
    failed, after the counter was reset and the check recorded.
    """
    health = config.health
    state = StateDir(config.state_dir)
    now = wall_clock()
    last_switch = state.last_switch()
    last_check = state.read_last_check()
    span = plan_span(health, now, last_check, last_switch)
    if span.warning:
        log.warning("%s", span.warning)
    trigger = _trigger_name(config)

    def result_of(
        outcome: HealthOutcome, reading: TunnelReading | None, before: int, failures: int, why: str | None = None
    ) -> HealthResult:
        return HealthResult(
            why=why,
            outcome=outcome,
            span=span,
            reading=reading,
            failures_before=before,
            failures=failures,
            max_failures=health.max_failures,
            threshold=health.threshold,
            dry_run=dry_run,
            trigger=trigger if outcome == HealthOutcome.FAILOVER else None,
        )

    if span.waiting:
        failures = state.read_failures()
        log.debug("%s; nothing judged", span.reason)  # the result says it
        return result_of(HealthOutcome.WAITING, None, failures, failures)

    reading = measure_tunnel(config, span.seconds, now, remember=not dry_run)
    if not reading.has_data:
        policy = "counted as a failure" if health.on_no_data == "failure" else "ignored"
        log.warning(
            "no tunnel loss data over %s for %s (health.on_no_data = %s: %s)",
            format_duration(span.seconds),
            reading.query,
            health.on_no_data,
            policy,
        )
    local_fault = _find_local_fault(config, reading, span.seconds, remember=not dry_run)
    evidence = CheckEvidence(time=now, tunnel=reading, local_fault=local_fault)

    def decide(before: int) -> CheckDecision:
        all_failed = state.read_all_failed()
        check_state = CheckState(
            failures=before,
            all_failed_since=all_failed.time if all_failed is not None else None,
            hold_down=config.failover.hold_down,
        )
        return decide_check(evidence, health, check_state)

    if dry_run:
        before = state.read_failures()
        decision = decide(before)
        result = result_of(decision.outcome, reading, before, decision.failures, _why(decision))
        return _with_failback(config, result, dry_run=True, rng=rng, wall_clock=wall_clock)

    with state.locked(config.lock_timeout):
        if _switch_key(state.last_switch()) != _switch_key(last_switch) or state.read_last_check() != last_check:
            # A switch meanwhile: the data judged may be the old server's.
            # Another check meanwhile: its span overlaps ours, so counting
            # both would count the same evidence twice.
            before = state.read_failures()
            log.debug("the server was switched, or another check ran, while measuring; this check is not counted")
            return result_of(HealthOutcome.SUPERSEDED, reading, before, before)
        before = state.read_failures()
        decision = decide(before)
        state.write_failures(decision.failures)
        fault = decision.reason if decision.outcome == HealthOutcome.LOCAL_FAULT else None
        state.write_last_check(CheckRecord(time=now, loss=reading.loss, span=reading.span, local_fault=fault))
        if decision.outcome == HealthOutcome.HEALTHY and state.clear_all_failed():
            log.info("the tunnel works again: no longer in 'all servers failed'")
        write_metrics(config.textfile_dir, state, config.servers, instance=config.instance)

    result = result_of(decision.outcome, reading, before, decision.failures, _why(decision))
    if decision.outcome in (HealthOutcome.LOCAL_FAULT, HealthOutcome.HELD):
        log.warning("%s", decision.reason)
        return result
    if decision.outcome != HealthOutcome.FAILOVER:
        log.debug("check: %s, failures %d of %d", decision.outcome, decision.failures, health.max_failures)
        return _with_failback(config, result, dry_run=False, rng=rng, wall_clock=wall_clock)
    reason = decision.reason or "health-check"
    # Info, not warning: the result line that follows is the warning, once.
    log.info("%s; triggering the failover (%s)", reason, trigger)
    failover = trigger_failover(config, reason, wall_clock=wall_clock, rng=rng)
    return dataclasses.replace(result, failover=failover)


def trigger_failover(
    config: Config,
    reason: str,
    *,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> FailoverResult | None:
    """
    Given the config and the reason, fail over: run health.failover_command
    if set (return None), else switch in-process (return its result). Call
    without holding the state lock. Raise ActionError if the failover failed.
    """
    command = config.health.failover_command
    if command is not None:
        # `systemctl start` of a oneshot returns when the failover is done, so
        # allow for everything the failover itself may wait for, each
        # switch of a probation episode included.
        rules = rules_for(config)
        per_switch = config.restart_timeout + (rules.limit if rules.enabled else 0.0)
        timeout = config.lock_timeout + config.prometheus.timeout + len(config.servers) * per_switch + _TRIGGER_MARGIN
        # The failover the command starts records this reason, not its own
        # default (for the module's unit: unit-failed).
        state = StateDir(config.state_dir)
        state.write_pending_reason(reason, wall_clock(), timeout)
        try:
            run_command(command, timeout, "triggering the failover failed")
        finally:
            state.discard_pending_reason()
        return None
    try:
        return fail_over(config, reason=reason, rng=rng, wall_clock=wall_clock)
    except (ActionError, LocalFaultError, ProbationFailedError):
        # Their own exit codes (3, 4) tell an OnFailure= chain what happened.
        raise
    except WgFailoverError as error:
        raise ActionError(f"the triggered failover failed: {error}") from error


def _find_local_fault(config: Config, reading: TunnelReading, seconds: float, remember: bool) -> LocalFault | None:
    """
    Given the config, a tunnel reading and the span it judged, return the
    LocalFault if the reading is a failure and the external prober saw
    every server lossy over the same span; else None. Asked only when the
    check fails (a healthy tunnel needs no second query) and only when
    Prometheus measured the tunnel: a handshake alone cannot tell a dead
    uplink from a dead server, so such a check counts as before.
    """
    if not is_failure(reading, config.health):
        return None
    if reading.source != "prometheus":
        # Counting is the safe side: the probation stops a pointless walk
        # through the servers after one pass.
        log.warning(
            "Prometheus unusable: a handshake alone cannot tell this host's uplink failing from the server "
            "failing; counting the check"
        )
        return None
    endpoints = find_endpoints(config.servers, skip=set(), warn=False)
    # A wrong failover.label is reported by the failover's own query; every
    # failed check need not repeat it.
    readings, error = measure_servers(config, endpoints, remember=remember, window=seconds, warn=False)
    if error is not None:
        log.warning("%s; cannot tell a local fault from a server fault: counting the check", error)
        return None
    return local_fault_of(readings, config.health.threshold)


def _why(decision: CheckDecision) -> str | None:
    return decision.reason if decision.outcome in (HealthOutcome.LOCAL_FAULT, HealthOutcome.HELD) else None


def _with_failback(
    config: Config,
    result: HealthResult,
    *,
    dry_run: bool,
    rng: random.Random | None,
    wall_clock: Callable[[], float],
) -> HealthResult:
    """Given a check's result, return it with the failback step's, if it was healthy and failback is on."""
    # Only a healthy check looks: a failing tunnel is a failover's business,
    # so the two never race.
    if result.outcome != HealthOutcome.HEALTHY or config.failover.failback_after is None:
        return result
    failback = look_for_failback(config, dry_run=dry_run, rng=rng, wall_clock=wall_clock)
    return dataclasses.replace(result, failback=failback)


def _trigger_name(config: Config) -> str:
    command = config.health.failover_command
    return " ".join(command) if command else "in-process"


def _switch_key(record: SwitchRecord | None) -> tuple[int, float] | None:
    return (record.seq, record.time) if record is not None else None
