"""wg-health-check: judge the tunnel's loss and fail over after repeated bad checks (run by a timer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wgfailover.commands.common import (
    Command,
    common_options,
    emit,
    exit_codes_help,
    handle_errors,
    load_or_check,
    print_json,
)
from wgfailover.config import parse_duration


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A Prometheus duration ("90s", "5m", "7d") or a number of seconds, as in the config file."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


_BACKTEST_ONLY = ("every", "threshold", "max_failures", "window", "min_window", "sweep")


@click.command(
    cls=Command,
    help=(
        "Measure the tunnel's packet loss since the previous check (never before the last switch) "
        "from the prober inside the VPN namespace. health.max_failures checks in a row above "
        "health.threshold trigger a failover; one good check resets the count. "
        "When Prometheus can't be asked, the count stays as it was, unless health.interface is set: "
        "then the newest WireGuard handshake decides. With failover.failback_after set, a healthy check "
        "returns to a more preferred server once the prober has seen it healthy that long. "
        "A failed check while the external prober sees every "
        "server losing packets is a local fault: not counted, no switch. After every server failed its "
        "probation, no failover until a check is healthy or failover.hold_down passes. "
        "With --backtest DURATION, replay this rule over Prometheus's history instead, one check every "
        "--every, and list the failovers it would have triggered; nothing is changed. "
        + exit_codes_help("wg-health-check")
    ),
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show the loss, the span judged, the count and what would happen; change nothing.",
)
@click.option(
    "--backtest",
    "duration",
    type=Duration(),
    metavar="DURATION",
    help="Replay the rule over the past DURATION (e.g. 7d) of Prometheus's history; change nothing.",
)
@click.option(
    "--every",
    type=Duration(),
    metavar="PERIOD",
    help="With --backtest: the timer's period, one replayed check each (default 1m).",
)
@click.option("--threshold", type=float, metavar="X", help="With --backtest: replay with this health.threshold.")
@click.option("--max-failures", type=int, metavar="N", help="With --backtest: replay with this health.max_failures.")
@click.option("--window", type=Duration(), metavar="D", help="With --backtest: replay with this health.window.")
@click.option("--min-window", type=Duration(), metavar="D", help="With --backtest: replay with this health.min_window.")
@click.option(
    "--sweep",
    multiple=True,
    metavar="KEY=V,V",
    help=(
        "With --backtest: replay every combination and print a table of failovers, e.g. "
        "--sweep threshold=0.05,0.1,0.2 max_failures=2,3,4 (keys: threshold, max_failures, window, min_window)."
    ),
)
@click.argument("more_sweep", nargs=-1, metavar="")
@common_options
def main(
    config_path: Path,
    check_config: bool,
    as_json: bool,
    verbose: bool,
    dry_run: bool,
    duration: float | None,
    more_sweep: tuple[str, ...],
    **replayed: Any,
) -> None:
    with handle_errors("wg-health-check", verbose, as_json):
        if more_sweep and not replayed["sweep"]:
            raise click.UsageError(f"unexpected argument {more_sweep[0]!r}")
        given = [name for name in _BACKTEST_ONLY if replayed[name]]
        if duration is None and given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} needs --backtest")
        if duration is not None and dry_run:
            raise click.UsageError("--backtest changes nothing already; it does not take --dry-run")
        config = load_or_check(config_path, check_config, as_json)
        if duration is not None:
            run_backtest_command(config, duration, [*replayed.pop("sweep"), *more_sweep], as_json, **replayed)
            return
        # Imported here: requests costs ~0.2 s to import, which --help and
        # --check-config should not pay (see docs/performance.md).
        from wgfailover.actions.health_check import check_health
        from wgfailover.output.health_check import check_level, check_to_json, describe_check

        result = check_health(config, dry_run=dry_run)
        if as_json:
            print_json(check_to_json(result))
        else:
            emit(("dry run: " if dry_run else "") + describe_check(result), level=check_level(result))


def run_backtest_command(
    config: Any, duration: float, sweep: list[str], as_json: bool, every: float | None, **overrides: Any
) -> None:
    """Replay the rule over the past duration with the overrides given, and print what it found."""
    from wgfailover.actions.backtest import parse_sweep, run_backtest
    from wgfailover.output.backtest import backtest_to_json, format_backtest

    result = run_backtest(
        config,
        duration=duration,
        every=every or 60.0,
        overrides={key: value for key, value in overrides.items() if value is not None},
        sweep=parse_sweep(sweep),
    )
    if as_json:
        print_json(backtest_to_json(result))
    else:
        click.echo(format_backtest(result))
