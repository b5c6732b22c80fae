"""wg-health-check: judge the tunnel's loss and fail over after repeated bad checks (run by a timer)."""

from __future__ import annotations

from pathlib import Path

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


@click.command(
    cls=Command,
    help=(
        "Measure the tunnel's packet loss since the previous check (never before the last switch) "
        "from the prober inside the VPN namespace. health.max_failures checks in a row above "
        "health.threshold trigger a failover; one good check resets the count. "
        "When Prometheus can't be asked, the count stays as it was, unless health.interface is set: "
        "then the newest WireGuard handshake decides. A failed check while the external prober sees every "
        "server losing packets is a local fault: not counted, no switch. After every server failed its "
        "probation, no failover until a check is healthy or failover.hold_down passes. "
        + exit_codes_help("wg-health-check")
    ),
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show the loss, the span judged, the count and what would happen; change nothing.",
)
@common_options
def main(config_path: Path, check_config: bool, as_json: bool, verbose: bool, dry_run: bool) -> None:
    with handle_errors("wg-health-check", verbose, as_json):
        # Imported here: requests costs ~0.2 s to import, which --help and
        # --check-config should not pay (see docs/performance.md).
        from wgfailover.actions.health_check import check_health
        from wgfailover.output.health_check import check_level, check_to_json, describe_check

        config = load_or_check(config_path, check_config, as_json)
        result = check_health(config, dry_run=dry_run)
        if as_json:
            print_json(check_to_json(result))
        else:
            emit(("dry run: " if dry_run else "") + describe_check(result), level=check_level(result))
