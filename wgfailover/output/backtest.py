"""What wg-health-check --backtest prints: the replayed failovers and failbacks, a summary, a sweep table, or JSON."""

from __future__ import annotations

import time
from typing import Any

from wgfailover.actions.backtest import Backtest, Replay, ReplayedFailback, ReplayedFailover
from wgfailover.config import HealthSettings, format_duration
from wgfailover.logs import one_line
from wgfailover.prometheus import round_measured

# Said once, wherever a replay found a failover: the history cannot know
# what the tunnel would have measured on the server the replay moved to.
NOT_MOVED = (
    "note: after a replayed failover the recorded tunnel data is what it was: "
    "the real tunnel may not have moved then, so the checks that follow judge the server it really used."
)


def format_backtest(backtest: Backtest) -> str:
    """Given a Backtest, return the text --backtest prints (failovers, failbacks apart, a summary; or the sweep)."""
    lines = [_heading(backtest)]
    if backtest.sweep:
        lines += ["", *_sweep_table(backtest)]
        found = any(replay.failovers or replay.failbacks for replay in backtest.sweep)
    else:
        replay = backtest.replay
        lines.append(f"settings: {_settings(replay.health)}")
        failback = backtest.failback_after is not None
        if failback:
            lines[-1] += f", failback_after {format_duration(backtest.failback_after or 0)}"
        if replay.failovers:
            lines += ["", *(["failovers:"] if failback else []), *_failover_table(replay.failovers)]
        if replay.failbacks:
            lines += ["", "failbacks:", *_failback_table(replay.failbacks)]
        lines += ["", _summary(replay, backtest.days, failback)]
        found = bool(replay.failovers or replay.failbacks)
    if found:
        lines.append(NOT_MOVED)
    return "\n".join(lines)


def backtest_to_json(backtest: Backtest) -> dict[str, Any]:
    """Given a Backtest, return it as one JSON-ready object (what --backtest --json prints)."""
    document = _replay_to_json(backtest.replay, backtest.days)
    document.update(
        {
            "start": backtest.start,
            "end": backtest.end,
            "asked_start": backtest.asked_start,
            "every_seconds": backtest.every,
            "days": round(backtest.days, 3),
            "initial_server": backtest.initial_server,
            "failback_after_seconds": backtest.failback_after,
            "note": NOT_MOVED if any(r.failovers or r.failbacks for r in (backtest.replay, *backtest.sweep)) else None,
        }
    )
    if backtest.sweep:
        document["sweep"] = [_replay_to_json(replay, backtest.days) for replay in backtest.sweep]
    return document


# --- internals ----------------------------------------------------------------


def _heading(backtest: Backtest) -> str:
    shorter = ""
    if backtest.start > backtest.asked_start:
        shorter = " (Prometheus's tunnel data begins there)"
    return (
        f"replayed wg-health-check every {format_duration(backtest.every)} from {_utc(backtest.start)}"
        f"{shorter} to {_utc(backtest.end)}, starting on {backtest.initial_server or 'an unknown server'}; "
        "nothing was changed"
    )


def _settings(health: HealthSettings) -> str:
    return (
        f"threshold {health.threshold:g}, max_failures {health.max_failures}, "
        f"window {format_duration(health.window)}, min_window {format_duration(health.min_window)}"
    )


def _failover_table(failovers: tuple[ReplayedFailover, ...]) -> list[str]:
    header = ("time (UTC)", "loss", "checks", "from", "to", "why")
    rows: list[tuple[str, ...]] = [header]
    for failover in failovers:
        rows.append(
            (
                _utc(failover.time, seconds=True),
                _loss(failover.loss),
                _checks(failover.counted),
                failover.from_server or "-",
                failover.to_server or "(none)",
                one_line(failover.reason) + f"; {failover.choice_reason}",
            )
        )
    return _columns(rows)


def _failback_table(failbacks: tuple[ReplayedFailback, ...]) -> list[str]:
    rows: list[tuple[str, ...]] = [("time (UTC)", "from", "to", "why")]
    for failback in failbacks:
        when = _utc(failback.time, seconds=True)
        rows.append((when, failback.from_server or "-", failback.to_server, failback.reason))
    return _columns(rows)


def _summary(replay: Replay, days: float, failback: bool = False) -> str:
    plural = "failover" if len(replay.failovers) == 1 else "failovers"
    local = f", {replay.local_faults} failed during a local fault (not counted)" if replay.local_faults else ""
    back = ""
    if failback:
        back = f", {len(replay.failbacks)} failback{'' if len(replay.failbacks) == 1 else 's'}"
        back += f" ({len(replay.failbacks) / days:.2f} per day)"
    return (
        f"{replay.checks} checks ({replay.waiting} more waited after a switch), "
        f"{replay.failures} counted as failures{local}, {len(replay.failovers)} {plural} "
        f"({len(replay.failovers) / days:.2f} per day){back}"
    )


def _sweep_table(backtest: Backtest) -> list[str]:
    failback = backtest.failback_after is not None
    header = ("threshold", "max_failures", "window", "min_window", "failures", "failovers", "per day")
    rows: list[tuple[str, ...]] = [header + (("failbacks",) if failback else ())]
    for replay in backtest.sweep:
        health = replay.health
        row = (
            f"{health.threshold:g}",
            str(health.max_failures),
            format_duration(health.window),
            format_duration(health.min_window),
            str(replay.failures),
            str(len(replay.failovers)),
            f"{len(replay.failovers) / backtest.days:.2f}",
        )
        rows.append(row + ((str(len(replay.failbacks)),) if failback else ()))
    return _columns(rows)


def _replay_to_json(replay: Replay, days: float) -> dict[str, Any]:
    health = replay.health
    return {
        "threshold": health.threshold,
        "max_failures": health.max_failures,
        "window_seconds": health.window,
        "min_window_seconds": health.min_window,
        "checks": replay.checks,
        "waiting": replay.waiting,
        "failures": replay.failures,
        "local_faults": replay.local_faults,
        "failovers": [
            {
                "time": failover.time,
                "from": failover.from_server,
                "to": failover.to_server,
                "loss": round_measured(failover.loss) if failover.loss is not None else None,
                "reason": failover.reason,
                "choice": failover.choice_reason,
                "checks": list(failover.counted),
            }
            for failover in replay.failovers
        ],
        "per_day": round(len(replay.failovers) / days, 3),
        "failbacks": [
            {"time": failback.time, "from": failback.from_server, "to": failback.to_server, "reason": failback.reason}
            for failback in replay.failbacks
        ],
        "failbacks_per_day": round(len(replay.failbacks) / days, 3),
    }


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _checks(counted: tuple[float, ...]) -> str:
    if not counted:
        return "0"
    if len(counted) == 1:
        return f"1 at {_utc(counted[0], seconds=True, date=False)}"
    first = _utc(counted[0], seconds=True, date=False)
    return f"{len(counted)} from {first}"


def _loss(loss: float | None) -> str:
    return "no data" if loss is None else f"{loss:.3g}"


def _utc(unix: float, seconds: bool = False, date: bool = True) -> str:
    text = time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", time.gmtime(unix))
    return text if date else text[11:]
