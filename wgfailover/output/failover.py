"""What wg-failover prints: the ranking as a table, or as JSON (--json)."""

from __future__ import annotations

from typing import Any

from wgfailover.actions.failover import FailoverResult
from wgfailover.logs import one_line
from wgfailover.policy.ranking import first_choice
from wgfailover.prometheus import round_measured


def format_failover(result: FailoverResult) -> str:
    """Given a result, return the table wg-failover prints: one row per server, then the outcome."""
    lines = []
    if result.rows:
        header = ("server", "endpoint", "loss", "latency", "rank", "why excluded")
        table = [header]
        for row in result.rows:
            table.append(
                (
                    row.name,
                    result.endpoints.get(row.name) or "-",
                    _percent(row.loss),
                    _milliseconds(row.latency),
                    str(row.rank) if row.rank is not None else "-",
                    "" if row.rank == 1 else row.reason,
                )
            )
        widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
        for cells in table:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
    if result.prometheus_error:
        lines.append(f"Prometheus not used: {result.prometheus_error}")
    lines.append(_outcome(result))
    return "\n".join(lines)


def failover_to_json(result: FailoverResult) -> dict[str, Any]:
    """Given a result, return it as a JSON-ready dict (what --json prints)."""
    return {
        "dry_run": result.dry_run,
        "reason": result.reason,
        "from": result.from_server,
        "choice": result.choice,
        "skipped": result.skipped,
        "local_fault": result.local_fault,
        "probation": result.probation,
        "failed_probation": [{"server": name, "why": why} for name, why in result.tried],
        "prometheus": {"used": result.used_prometheus, "error": result.prometheus_error},
        "servers": [
            {
                "server": row.name,
                "endpoint": result.endpoints.get(row.name),
                "loss": _rounded(row.loss),
                "latency_seconds": _rounded(row.latency),
                "rank": row.rank,
                "held_down": row.held_down,
                "left_seconds_ago": row.left_ago,
                "reason": row.reason,
            }
            for row in result.rows
        ],
        "record": result.record.to_json() if result.record else None,
    }


def _rounded(value: float | None) -> float | None:
    # Decisions use the exact value; what is shown is what a prober resolves.
    return round_measured(value) if value is not None else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def _outcome(result: FailoverResult) -> str:
    if result.skipped:
        return f"not switching: {result.skipped}"
    if result.dry_run and result.local_fault:
        return f"would not switch: {result.local_fault} (dry run: nothing changed; --force to switch anyway)"
    best = first_choice(result.rows)
    why = f": {best.reason}" if best and best.name == result.choice else ""
    tried = "".join(f"{name} failed its probation ({reason}), then " for name, reason in result.tried)
    move = f"from {result.from_server or 'none'} to {tried}{result.choice}{why}"
    if result.dry_run:
        return f"would switch {move} (dry run: nothing changed)"
    passed = f"; probation passed: {result.probation}" if result.probation else ""
    return f"switched {move} (reason: {one_line(result.reason)}){passed}"
