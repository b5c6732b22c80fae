"""What wg-health-check prints: one line saying what was seen and what it means, or JSON."""

from __future__ import annotations

import logging
from typing import Any

from wgfailover.actions.failback import FailbackResult
from wgfailover.actions.failover import FailoverResult
from wgfailover.actions.health_check import HealthResult
from wgfailover.output.failover import failover_to_json
from wgfailover.policy.health import HealthOutcome
from wgfailover.prometheus import round_measured


def describe_check(result: HealthResult) -> str:
    """Given a HealthResult, return its one-line summary."""
    if result.outcome == HealthOutcome.WAITING or result.reading is None:
        return result.span.reason
    seen = result.reading.describe(result.threshold)
    if result.reading.fallback_reason:
        seen = f"Prometheus unusable, {seen}"
    if result.reading.source == "prometheus":
        seen = f"{seen} ({result.span.reason})" if result.span.reason != "since the last check" else seen
    count = f"failures {result.failures_before} of {result.max_failures}"
    would = "would " if result.dry_run else ""
    if result.outcome == HealthOutcome.SUPERSEDED:
        return f"{seen}; not counted: the server was switched, or another check ran, while measuring"
    if result.outcome == HealthOutcome.IGNORED:
        return f"{seen}; ignored (health.on_no_data = ignore); {count}"
    if result.outcome == HealthOutcome.HEALTHY:
        back = _describe_failback(result.failback) if result.failback else ""
        if result.failures_before:
            return f"healthy: {seen}; {would}reset {count} to 0{back}"
        return f"healthy: {seen}; {count}{back}"
    if result.outcome == HealthOutcome.LOCAL_FAULT:
        return f"unhealthy: {seen}; {result.why}; not counted, no switch ({count})"
    reached = f"failure {result.failures_before + 1} of {result.max_failures}"
    if result.outcome == HealthOutcome.HELD:
        return f"unhealthy: {seen}; {reached}: not failing over: {result.why}"
    if result.outcome == HealthOutcome.FAILURE:
        return f"unhealthy: {seen}; {would}count {reached}"
    if result.dry_run:
        return f"unhealthy: {seen}; would count {reached} and fail over ({result.trigger})"
    if result.failover is not None:
        return f"unhealthy: {seen}; {reached}: {_describe_failover(result.failover)}"
    return f"unhealthy: {seen}; {reached}: failover triggered ({result.trigger})"


def _describe_failover(failover: FailoverResult) -> str:
    if failover.skipped:
        return f"not failing over: {failover.skipped}"
    failed = ", ".join(name for name, _ in failover.tried)
    tried = f" ({failed} failed its probation)" if failed else ""
    return f"failed over from {failover.from_server or 'none'} to {failover.choice}{tried}"


def check_level(result: HealthResult) -> int:
    """Given a HealthResult, return the log level its summary deserves under systemd."""
    return logging.WARNING if result.outcome in (HealthOutcome.FAILURE, HealthOutcome.FAILOVER) else logging.INFO


def _describe_failback(failback: FailbackResult) -> str:
    """Given the failback step's result, return what it adds to the line ('' when nothing happened)."""
    decision = failback.decision
    if decision.target is None:
        # Said only when the prober's history was asked, or in a dry run: the
        # usual "switched 3m ago" need not be repeated every minute.
        said = failback.asked_prometheus or failback.dry_run
        return f"; not failing back: {decision.reason}" if said else ""
    if failback.dry_run:
        return f"; would fail back from {failback.from_server} to {decision.target} ({decision.reason})"
    switch = failback.switch
    if switch is None or switch.skipped:
        return f"; not failing back: {switch.skipped if switch else 'no switch made'}"
    if switch.choice != decision.target:
        why = dict(switch.tried).get(decision.target or "", "unconfirmed")
        return (
            f"; failed back from {switch.from_server or 'none'} to {decision.target} ({decision.reason}), "
            f"but it failed its probation ({why}): back on {switch.choice}"
        )
    return f"; failed back from {switch.from_server or 'none'} to {switch.choice} ({decision.reason})"


def failback_to_json(failback: FailbackResult) -> dict[str, Any]:
    """Given the failback step's result, return it as a JSON-ready dict."""
    return {
        "target": failback.decision.target,
        "reason": failback.decision.reason,
        "from": failback.from_server,
        "asked_prometheus": failback.asked_prometheus,
        "prometheus_error": failback.prometheus_error,
        "candidates": [
            {"server": verdict.name, "eligible": verdict.eligible, "reason": verdict.reason}
            for verdict in failback.decision.verdicts
        ],
        "switch": failover_to_json(failback.switch) if failback.switch else None,
    }


def check_to_json(result: HealthResult) -> dict[str, Any]:
    """Given a HealthResult, return it as a JSON-ready dict (what --json prints)."""
    reading = result.reading
    handshake = reading.handshake if reading else None
    return {
        "dry_run": result.dry_run,
        "outcome": result.outcome.value,
        "message": describe_check(result),
        "source": reading.source if reading else None,
        "loss": round_measured(reading.loss) if reading and reading.loss is not None else None,
        "threshold": result.threshold,
        "span_seconds": result.span.seconds,
        "span_reason": result.span.reason,
        "query": reading.query if reading else None,
        "handshake": (
            {"interface": handshake.interface, "age_seconds": handshake.age, "timeout": handshake.timeout}
            if handshake
            else None
        ),
        "prometheus_error": reading.fallback_reason if reading else None,
        "failures_before": result.failures_before,
        "failures": result.failures,
        "max_failures": result.max_failures,
        "trigger": result.trigger,
        "why": result.why,
        "failover": failover_to_json(result.failover) if result.failover else None,
        "failback": failback_to_json(result.failback) if result.failback else None,
    }
