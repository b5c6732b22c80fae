"""Which stretch of time one health check judges.

The original judged a fixed 5-minute window at every check. After a switch
that window still held the old server's losses, so the next checks failed
and triggered another failover: a cascade. Here each check judges only the
span since the previous check, clipped to ``[min_window, window]`` and
never reaching back before the last switch; right after a switch, checks
wait until ``min_window`` of the new server's data exists. Consecutive
failures are therefore independent evidence.
"""

from __future__ import annotations

import dataclasses
import math

from wgfailover.config import HealthSettings, format_duration
from wgfailover.state import CheckRecord, SwitchRecord


@dataclasses.dataclass(frozen=True)
class Span:
    """The stretch of time one check judges, ending now."""

    seconds: float  # whole seconds, as sent in the query's range
    reason: str  # why this long, for logs and --dry-run
    waiting: bool = False  # True: less than min_window since the last switch
    since_switch: float | None = None  # seconds since the last switch, if any
    warning: str | None = None  # something the operator should hear about (a clock stepped back)


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
    warning: str | None = None
    if last_switch is not None:
        since_switch = now - last_switch.time
        if since_switch < 0:
            # The clock was stepped back since the switch. Waiting for it to
            # catch up could stop health checks for hours; judging the
            # shortest span risks little. Every other rule still holds: a
            # check too soon after the previous one waits, or three quick
            # runs would count one bad minute three times.
            warning = (
                f"the last switch is recorded {-since_switch:.0f}s in the future (was the clock changed?); "
                f"judging at most {format_duration(health.min_window)}"
            )
            since_switch = None
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
                warning=warning,
            )
        if elapsed < 0:
            # The clock was stepped back since the last check: judge the
            # shortest span rather than stop checking until it catches up.
            seconds, reason = health.min_window, "last check recorded in the future: health.min_window"
        elif elapsed > health.window:
            seconds, reason = health.window, f"last check {elapsed:.0f}s ago: cut to health.window"
        else:
            seconds, reason = elapsed, "since the last check"
    if warning is not None and seconds > health.min_window:
        # Where the switch really was is unknown: judge no more than the shortest span.
        seconds, reason = health.min_window, "last switch recorded in the future: health.min_window"
    seconds = float(max(1, round(seconds)))
    if since_switch is not None and since_switch < seconds:
        # Rounded down, so the range never includes a second before the switch.
        seconds, reason = float(max(1, math.floor(since_switch))), "since the last switch"
    return Span(seconds=seconds, reason=reason, since_switch=since_switch, warning=warning)
