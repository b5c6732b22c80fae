"""What wg-health-check prints: one line saying what was seen and what it means, or JSON."""

from __future__ import annotations

import logging
from typing import Any

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
        if result.failures_before:
            return f"healthy: {seen}; {would}reset {count} to 0"
        return f"healthy: {seen}; {count}"
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
    }
