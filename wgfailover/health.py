"""The health check: is the active tunnel losing packets, and is it time to fail over?

One check judges the tunnel loss that the prober inside the VPN namespace saw
over one span of time, counts consecutive bad checks in
``state_dir/health-failures`` (the original's file), and triggers a failover
when ``health.max_failures`` are reached. Two flaws of the original are
avoided here:

- It read ``result[0]`` of a query that returns one series per prober
  target, so one target was ignored and a stray one (smokeping's default
  ``localhost``) could hide every loss. The default query sums responses and
  requests over every series before dividing.
- It judged a fixed 5-minute window at every check. After a switch that
  window still held the old server's losses, so the next checks failed and
  triggered another failover: a cascade. Here each check judges only the
  span since the previous check, clipped to ``[min_window, window]`` and
  never reaching back before the last switch; right after a switch, checks
  wait until ``min_window`` of the new server's data exists. Consecutive
  failures are therefore independent evidence.

The state lock is held only to update the counter and the last-check record,
never while the failover runs: ``health.failover_command`` may well be
``systemctl start wg-failover.service``, which takes the same lock.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import requests

from wgfailover.config import Config, HealthSettings, fill_template, format_duration
from wgfailover.errors import ActionError, ConfigError, PrometheusError, WgFailoverError
from wgfailover.external import run_command
from wgfailover.failover import FailoverResult, fail_over
from wgfailover.failover import result_to_json as failover_to_json
from wgfailover.handshake import HandshakeCheck, check_handshake
from wgfailover.metrics import write_metrics
from wgfailover.prometheus import round_measured
from wgfailover.prometheus_pool import PrometheusPool, open_prometheus
from wgfailover.state import CheckRecord, StateDir, SwitchRecord

log = logging.getLogger(__name__)

# Outcomes of one check.
HEALTHY = "healthy"  # loss at or below the threshold (or a fresh handshake): counter reset
FAILURE = "failure"  # counted one failure, fewer than max_failures so far
FAILOVER = "failover"  # max_failures reached: failover triggered, counter reset
IGNORED = "ignored"  # no data and health.on_no_data = "ignore": counter left as it was
WAITING = "waiting"  # too little data since the last switch: nothing measured or recorded
SUPERSEDED = "superseded"  # a switch happened while measuring: the measurement is void

# Seconds a failover triggered through health.failover_command may take on
# top of the configured bounds of what it runs (lock wait, queries, restart).
_TRIGGER_MARGIN = 30.0


@dataclasses.dataclass(frozen=True)
class Span:
    """The stretch of time one check judges, ending now."""

    seconds: float  # whole seconds, as sent in the query's range
    reason: str  # why this long, for logs and --dry-run
    waiting: bool = False  # True: less than min_window since the last switch
    since_switch: float | None = None  # seconds since the last switch, if any


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What one check saw: a loss from Prometheus, or a handshake age."""

    source: str  # "prometheus" or "handshake"
    loss: float | None  # Prometheus: the loss in [0, 1]; None: no data
    span: float | None  # seconds judged (Prometheus only)
    query: str | None = None
    handshake: HandshakeCheck | None = None
    fallback_reason: str | None = None  # why the handshake was used instead of Prometheus

    @property
    def has_data(self) -> bool:
        return self.handshake is not None or self.loss is not None

    def is_bad(self, threshold: float) -> bool:
        """Return whether this measurement (with data) is a failure at the threshold."""
        if self.handshake is not None:
            return self.handshake.failed
        # Equal to the threshold is still healthy, as in the original's `>`.
        return self.loss is not None and self.loss > threshold

    def describe(self, threshold: float, with_span: bool = True) -> str:
        """Return what was seen as a phrase, e.g. 'loss 0.42 > 0.15 over 60s'."""
        if self.handshake is not None:
            return self.handshake.describe()
        over = f" over {format_duration(self.span)}" if self.span is not None and with_span else ""
        if self.loss is None:
            return f"no data{over}"
        relation = ">" if self.loss > threshold else "<="
        return f"loss {self.loss:.3g} {relation} {threshold:g}{over}"


@dataclasses.dataclass(frozen=True)
class HealthResult:
    """The outcome of one health check (or of a --dry-run: what it would do)."""

    outcome: str  # HEALTHY, FAILURE, FAILOVER, IGNORED, WAITING or SUPERSEDED
    span: Span
    measurement: Measurement | None  # None while waiting after a switch
    failures_before: int
    failures: int  # the counter after this check (dry run: what it would be)
    max_failures: int
    threshold: float
    dry_run: bool = False
    trigger: str | None = None  # how the failover is (or would be) triggered
    failover: FailoverResult | None = None  # the in-process failover's result

    @property
    def message(self) -> str:
        """Return the one-line summary the command prints."""
        return describe_result(self)


@dataclasses.dataclass(frozen=True)
class _Decision:
    outcome: str
    failures: int
    reason: str | None = None  # the failover reason, when one is due


def plan_span(
    health: HealthSettings,
    now: float,
    last_check: CheckRecord | None,
    last_switch: SwitchRecord | None,
) -> Span:
    """
    Given the health settings, the current unix time, the previous check and
    the last switch (either may be None), return the span this check judges:
    the time since the previous check clipped to [min_window, window], cut
    at the last switch. If less than min_window has passed since the switch
    or since the previous check, return a waiting Span: there is not yet
    enough new data, and judging older data again would count it twice.
    """
    since_switch: float | None = None
    if last_switch is not None:
        since_switch = now - last_switch.time
        if since_switch < 0:
            # The clock was stepped back since the switch. Waiting for it to
            # catch up could stop health checks for hours; judging the
            # shortest span risks little.
            log.warning(
                "the last switch is recorded %.0fs in the future (was the clock changed?); judging %s",
                -since_switch,
                format_duration(health.min_window),
            )
            seconds = float(max(1, round(health.min_window)))
            return Span(seconds=seconds, reason="last switch recorded in the future: health.min_window")
        elif since_switch < health.min_window:
            needed = format_duration(health.min_window)
            return Span(
                seconds=since_switch,
                reason=f"waiting for data since the switch: {since_switch:.0f}s of {needed}",
                waiting=True,
                since_switch=since_switch,
            )
    if last_check is None:
        seconds, reason = health.window, "first check: all of health.window"
    else:
        elapsed = now - last_check.time
        if 0 <= elapsed < health.min_window:
            # Judging min_window again would count the previous check's data
            # twice: three quick runs by hand would make one bad minute look
            # like three. Wait until there is min_window of new data.
            needed = format_duration(health.min_window)
            return Span(
                seconds=elapsed,
                reason=f"too soon after the last check: {elapsed:.0f}s of new data, {needed} needed",
                waiting=True,
                since_switch=since_switch,
            )
        if elapsed < 0:
            # The clock was stepped back since the last check: judge the
            # shortest span rather than stop checking until it catches up.
            seconds, reason = health.min_window, "last check recorded in the future: health.min_window"
        elif elapsed > health.window:
            seconds, reason = health.window, f"last check {elapsed:.0f}s ago: cut to health.window"
        else:
            seconds, reason = elapsed, "since the last check"
    seconds = float(max(1, round(seconds)))
    if since_switch is not None and since_switch < seconds:
        # Rounded down, so the range never includes a second before the switch.
        seconds, reason = float(max(1, math.floor(since_switch))), "since the last switch"
    return Span(seconds=seconds, reason=reason, since_switch=since_switch)


def render_query(template: str, selector: str, window: str) -> str:
    """Given the health query template, the selector and a PromQL range, return the query."""
    # Unknown placeholders were rejected when the config was loaded.
    return fill_template(template, {"selector": selector, "window": window})


def measure_loss(client: PrometheusPool, health: HealthSettings, span: Span) -> Measurement:
    """
    Given a Prometheus client, the health settings and the span to judge,
    return the tunnel loss over that span (None when there is no data).
    Raise PrometheusError if Prometheus cannot be asked.
    """
    query = render_query(health.query, health.selector, format_duration(span.seconds))
    samples = client.query(query)
    known = [sample.value for sample in samples if math.isfinite(sample.value)]
    if not samples:
        log.debug("no series for %s", query)
    elif not known:
        # 0/0: the prober sent nothing in the span (stopped, or scraped too rarely).
        log.debug("only NaN or infinite values for %s", query)
    if not known:
        return Measurement(source="prometheus", loss=None, span=span.seconds, query=query)
    if len(samples) > 1:
        # The default query aggregates to one series; a custom one that does
        # not is judged by its worst series, so no target hides another.
        log.debug("%d series for %s; judging the worst", len(samples), query)
    # smokeping can count more replies than requests within a range (a reply
    # to a request sent before it), so a ratio outside [0, 1] is clamped.
    loss = min(1.0, max(0.0, max(known)))
    return Measurement(source="prometheus", loss=loss, span=span.seconds, query=query)


def measure(
    config: Config,
    span: Span,
    now: float,
    clock: Callable[[], float] = time.monotonic,
    session: requests.Session | None = None,
    remember: bool = True,
) -> Measurement:
    """
    Given the config, the span to judge and the current unix time (and
    whether to remember a failed Prometheus URL: not in a dry run), return
    the measurement: the loss from Prometheus, or, when Prometheus cannot be
    asked and health.interface is set, the interface's handshake age. Raise
    PrometheusError (exit 69, nothing counted) when Prometheus fails and no
    interface is set, MeasurementError when the handshakes can't be read,
    ConfigError when neither prometheus.url nor health.interface is set.
    """
    health = config.health
    interface = health.interface
    if config.prometheus.url is None:
        if interface is not None:
            return _measure_handshake(health, interface, now, None)
        # Not an outage that will pass (69) but a setting that is missing.
        raise ConfigError(config.path, "prometheus.url is not set; wg-health-check needs it (or health.interface)")
    try:
        client = open_prometheus(
            config.prometheus, config.state_dir, remember=remember, clock=clock, wall_clock=lambda: now, session=session
        )
        return measure_loss(client, health, span)
    except PrometheusError as error:
        if interface is None:
            raise
        log.warning("%s; judging by the handshakes of %s instead", error, interface)
        return _measure_handshake(health, interface, now, str(error))


def _measure_handshake(health: HealthSettings, interface: str, now: float, fallback_reason: str | None) -> Measurement:
    handshake = check_handshake(interface, health.netns, health.handshake_timeout, now)
    return Measurement(source="handshake", loss=None, span=None, handshake=handshake, fallback_reason=fallback_reason)


def decide(failures_before: int, measurement: Measurement, health: HealthSettings) -> _Decision:
    """
    Given the consecutive failures so far, this check's measurement and the
    health settings, return the outcome and the new counter.
    """
    if not measurement.has_data:
        if health.on_no_data == "ignore":
            return _Decision(IGNORED, failures_before)
        bad = True
    else:
        bad = measurement.is_bad(health.threshold)
    if not bad:
        return _Decision(HEALTHY, 0)
    failures = failures_before + 1
    if failures < health.max_failures:
        return _Decision(FAILURE, failures)
    # The span is left out: each check judged its own.
    what = measurement.describe(health.threshold, with_span=False)
    plural = "check" if failures == 1 else "checks"
    # The original reset the counter before starting the failover; so do
    # we, so a failed trigger is retried only after fresh evidence.
    return _Decision(FAILOVER, 0, reason=f"health-check: {what} for {failures} {plural}")


def check_health(
    config: Config,
    *,
    dry_run: bool = False,
    wall_clock: Callable[[], float] = time.time,
    clock: Callable[[], float] = time.monotonic,
    session: requests.Session | None = None,
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
    trigger = _trigger_name(config)
    if span.waiting:
        failures = state.read_failures()
        log.debug("%s; nothing judged", span.reason)  # the result says it
        return HealthResult(WAITING, span, None, failures, failures, health.max_failures, health.threshold, dry_run)

    measurement = measure(config, span, now, clock=clock, session=session, remember=not dry_run)
    if not measurement.has_data:
        policy = "counted as a failure" if health.on_no_data == "failure" else "ignored"
        log.warning(
            "no tunnel loss data over %s for %s (health.on_no_data = %s: %s)",
            format_duration(span.seconds),
            measurement.query,
            health.on_no_data,
            policy,
        )

    def result_of(before: int, decision: _Decision) -> HealthResult:
        return HealthResult(
            decision.outcome,
            span,
            measurement,
            before,
            decision.failures,
            health.max_failures,
            health.threshold,
            dry_run=dry_run,
            trigger=trigger if decision.outcome == FAILOVER else None,
        )

    if dry_run:
        before = state.read_failures()
        return result_of(before, decide(before, measurement, health))

    with state.locked(config.lock_timeout):
        if _switch_key(state.last_switch()) != _switch_key(last_switch) or state.read_last_check() != last_check:
            # A switch meanwhile: the data judged may be the old server's.
            # Another check meanwhile: its span overlaps ours, so counting
            # both would count the same evidence twice.
            before = state.read_failures()
            log.debug("the server was switched, or another check ran, while measuring; this check is not counted")
            return HealthResult(SUPERSEDED, span, measurement, before, before, health.max_failures, health.threshold)
        before = state.read_failures()
        decision = decide(before, measurement, health)
        state.write_failures(decision.failures)
        state.write_last_check(CheckRecord(time=now, loss=measurement.loss, span=measurement.span))
        write_metrics(config.textfile_dir, state, config.servers)

    result = result_of(before, decision)
    if decision.outcome != FAILOVER:
        log.debug("%s", result.message)
        return result
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
        # allow for everything the failover itself may wait for.
        timeout = config.lock_timeout + config.prometheus.timeout + config.restart_timeout + _TRIGGER_MARGIN
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
    except ActionError:
        raise
    except WgFailoverError as error:
        raise ActionError(f"the triggered failover failed: {error}") from error


def describe_result(result: HealthResult) -> str:
    """Given a HealthResult, return its one-line summary."""
    if result.outcome == WAITING or result.measurement is None:
        return result.span.reason
    seen = result.measurement.describe(result.threshold)
    if result.measurement.fallback_reason:
        seen = f"Prometheus unusable, {seen}"
    if result.measurement.source == "prometheus":
        seen = f"{seen} ({result.span.reason})" if result.span.reason != "since the last check" else seen
    count = f"failures {result.failures_before} of {result.max_failures}"
    would = "would " if result.dry_run else ""
    if result.outcome == SUPERSEDED:
        return f"{seen}; not counted: the server was switched, or another check ran, while measuring"
    if result.outcome == IGNORED:
        return f"{seen}; ignored (health.on_no_data = ignore); {count}"
    if result.outcome == HEALTHY:
        if result.failures_before:
            return f"healthy: {seen}; {would}reset {count} to 0"
        return f"healthy: {seen}; {count}"
    reached = f"failure {result.failures_before + 1} of {result.max_failures}"
    if result.outcome == FAILURE:
        return f"unhealthy: {seen}; {would}count {reached}"
    if result.dry_run:
        return f"unhealthy: {seen}; would count {reached} and fail over ({result.trigger})"
    if result.failover is not None:
        return f"unhealthy: {seen}; {reached}: {_describe_failover(result.failover)}"
    return f"unhealthy: {seen}; {reached}: failover triggered ({result.trigger})"


def result_level(result: HealthResult) -> int:
    """Given a HealthResult, return the log level its summary deserves under systemd."""
    return logging.WARNING if result.outcome in (FAILURE, FAILOVER) else logging.INFO


def result_to_json(result: HealthResult) -> dict[str, Any]:
    """Given a HealthResult, return it as a JSON-ready dict (what --json prints)."""
    measurement = result.measurement
    handshake = measurement.handshake if measurement else None
    return {
        "dry_run": result.dry_run,
        "outcome": result.outcome,
        "message": result.message,
        "source": measurement.source if measurement else None,
        "loss": round_measured(measurement.loss) if measurement and measurement.loss is not None else None,
        "threshold": result.threshold,
        "span_seconds": result.span.seconds,
        "span_reason": result.span.reason,
        "query": measurement.query if measurement else None,
        "handshake": (
            {"interface": handshake.interface, "age_seconds": handshake.age, "timeout": handshake.timeout}
            if handshake
            else None
        ),
        "prometheus_error": measurement.fallback_reason if measurement else None,
        "failures_before": result.failures_before,
        "failures": result.failures,
        "max_failures": result.max_failures,
        "trigger": result.trigger,
        "failover": failover_to_json(result.failover) if result.failover else None,
    }


def _describe_failover(failover: FailoverResult) -> str:
    if failover.skipped:
        return f"not failing over: {failover.skipped}"
    return f"failed over from {failover.from_server or 'none'} to {failover.choice}"


def _trigger_name(config: Config) -> str:
    command = config.health.failover_command
    return " ".join(command) if command else "in-process"


def _switch_key(record: SwitchRecord | None) -> tuple[int, float] | None:
    return (record.seq, record.time) if record is not None else None
