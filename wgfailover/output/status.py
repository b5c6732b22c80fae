"""The text and JSON of ``wg-failover --status`` and ``--history``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from wgfailover.actions.status import Status
from wgfailover.config import format_duration
from wgfailover.logs import one_line
from wgfailover.policy.ranking import format_ago
from wgfailover.state import SwitchRecord

_ROUND = 6


def format_time(when: float) -> str:
    """Given unix seconds, return the local time as '2026-11-30 19:40:12 UTC'."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(when))


def _percent(loss: float | None) -> str:
    return "-" if loss is None else f"{loss * 100:.1f}%"


def _losses(record: SwitchRecord) -> str:
    if not record.losses:
        return "-"
    return ", ".join(f"{name} {_percent(loss)}" for name, loss in sorted(record.losses.items()))


def _ago(now: float, when: float) -> str:
    seconds = now - when
    return f"in {format_ago(-seconds)}" if seconds < 0 else f"{format_ago(seconds)} ago"


def format_status(status: Status) -> str:
    """Given a Status, return the text --status prints."""
    now = status.now
    lines = [] if status.instance is None else [f"instance:      {status.instance}"]
    if status.current:
        since = next((r.time for r in reversed(status.switches) if r.to_server == status.current), None)
        when = f" (since {format_time(since)}, {_ago(now, since)})" if since is not None else ""
        lines.append(f"server:        {status.current}{when}")
    else:
        lines.append(f"server:        none ({status.current_problem or 'no server recorded yet'})")
    link = status.link
    if link.target is None:
        lines.append(f"link:          {link.path} {link.problem}")
    else:
        agreement = (
            "agrees" if status.link_agrees else f"DISAGREES with the recorded server: {link.problem or link.server}"
        )
        lines.append(f"link:          {link.path} -> {link.target} ({agreement})")
    unit = status.unit
    if unit.unit is None:
        lines.append("tunnel unit:   - (restart_command is not `systemctl restart UNIT`)")
    elif unit.error:
        lines.append(f"tunnel unit:   {unit.unit}: {unit.error}")
    else:
        lines.append(f"tunnel unit:   {unit.unit} {unit.active_state} ({unit.sub_state})")
    check = status.last_check
    if check is None:
        seen = "no check recorded yet"
    else:
        span = f" over {format_duration(check.span)}" if check.span is not None else ""
        loss = f"loss {_percent(check.loss)}" if check.loss is not None else "no data"
        seen = f"last check {format_time(check.time)} ({_ago(now, check.time)}): {loss}{span}"
    count = "?" if status.failures is None else str(status.failures)
    lines.append(f"health:        {count} of {status.max_failures} failures; {seen}")
    held = ", ".join(
        f"{h.server} (left {format_ago(h.left_ago)} ago, {format_ago(h.remaining)} left)" for h in status.held_down
    )
    lines.append(f"held down:     {held or 'none'}")
    lines.append(f"local fault:   {status.local_fault or 'none'}")
    lines.append(f"all failed:    {_describe_all_failed(status)}")
    for problem in status.problems:
        lines.append(f"unreadable:    {problem}")
    lines.append("last switches:" if status.switches else "last switches: none")
    lines += [f"  {line}" for line in _history_lines(status.switches)]
    return "\n".join(lines)


def _describe_all_failed(status: Status) -> str:
    record = status.all_failed
    if record is None:
        return "none"
    listed = ", ".join(f"{name}: {why}" for name, why in record.failed.items())
    held = (
        f"; failovers held back {format_ago(status.all_failed_held)} more (failover.hold_down)"
        if status.all_failed_held > 0
        else ""
    )
    when = f"{format_time(record.time)} ({_ago(status.now, record.time)})"
    return f"every server tried failed at {when}: {listed}; stayed on {record.stayed_on or 'none'}{held}"


def _history_lines(records: Sequence[SwitchRecord]) -> list[str]:
    rows = [
        (format_time(r.time), f"{r.from_server or 'none'} -> {r.to_server}", one_line(r.reason), _losses(r))
        for r in records
    ]
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + f"  losses: {row[3]}" for row in rows
    ]


def format_history(records: Sequence[SwitchRecord]) -> str:
    """Given switch records (oldest first), return the table --history prints."""
    if not records:
        return "no switches recorded"
    return "\n".join(_history_lines(records))


def record_to_json(record: SwitchRecord) -> dict[str, Any]:
    """Given a switch record, return its history JSON with a readable time beside the epoch."""
    return {**record.to_json(), "time_text": format_time(record.time)}


def history_to_json(records: Sequence[SwitchRecord]) -> dict[str, Any]:
    return {"switches": [record_to_json(record) for record in records]}


def status_to_json(status: Status) -> dict[str, Any]:
    """Given a Status, return what --status --json prints."""
    check = status.last_check
    return {
        "time": round(status.now, 3),
        "instance": status.instance,
        "current": {"server": status.current, "problem": status.current_problem},
        "link": {
            "path": str(status.link.path),
            "target": status.link.target,
            "server": status.link.server,
            "agrees": status.link_agrees,
            "problem": status.link.problem,
        },
        "tunnel_unit": {
            "unit": status.unit.unit,
            "active_state": status.unit.active_state,
            "sub_state": status.unit.sub_state,
            "error": status.unit.error,
        },
        "health": {
            "failures": status.failures,
            "max_failures": status.max_failures,
            "last_check": None
            if check is None
            else {
                "time": round(check.time, 3),
                "time_text": format_time(check.time),
                "age_seconds": round(status.now - check.time, 3),
                "loss": None if check.loss is None else round(check.loss, _ROUND),
                "span_seconds": check.span,
            },
        },
        "held_down": [
            {"server": h.server, "left_seconds_ago": round(h.left_ago, 3), "remaining_seconds": round(h.remaining, 3)}
            for h in status.held_down
        ],
        "local_fault": status.local_fault,
        "all_failed": None
        if status.all_failed is None
        else {
            "time": round(status.all_failed.time, 3),
            "time_text": format_time(status.all_failed.time),
            "failed": status.all_failed.failed,
            "stayed_on": status.all_failed.stayed_on,
            "held_back_seconds": round(status.all_failed_held, 3),
        },
        "last_switches": [record_to_json(record) for record in status.switches],
        "problems": list(status.problems),
    }
