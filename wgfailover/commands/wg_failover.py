"""wg-failover: switch the tunnel to the best other server (timer, health check, OnFailure=)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from wgfailover.commands.common import (
    Command,
    common_options,
    complete_server_names,
    emit,
    exit_codes_help,
    handle_errors,
    load_or_check,
    print_json,
)
from wgfailover.config import Config
from wgfailover.state import StateDir


@click.command(
    cls=Command,
    help=(
        "Rank every other server by the packet loss the external prober sees (one Prometheus query; "
        "near-ties broken by latency, then at random; servers left within failover.hold_down last), "
        "switch the active-config symlink to the best one and restart the tunnel. When Prometheus "
        'cannot be asked the pick is random, unless failover.on_prometheus_error is "fail" (then exit 1). '
        "With --to NAME, switch to that server without waiting for Prometheus (the current one: nothing "
        "to do); the losses Prometheus has at that moment are still recorded. "
        "When every server, the current one included, is losing packets the fault is on this side: it "
        "declines (exit 3) unless --force or --to is given. After the switch the new server is confirmed "
        "within failover.probation; one that fails is left at once for the next candidate, each tried once "
        "(none passing: exit 4). " + exit_codes_help("wg-failover")
    ),
)
@common_options
@click.option("--dry-run", is_flag=True, help="Print the ranking and the choice; change nothing.")
@click.option(
    "--to",
    "to",
    metavar="NAME",
    shell_complete=complete_server_names,
    help="Switch to this configured server by hand.",
)
@click.option("--force", is_flag=True, help="Switch even when every server is losing packets (a local fault).")
@click.option(
    "--reason",
    metavar="TEXT",
    help=(
        "Why, for the history (default: 'manual' with --to, else 'failover'; OnFailure= units pass 'unit-failed'). "
        "Without --to, a reason a health check left for the failover it started (health.failover_command) wins."
    ),
)
@click.option(
    "--status",
    "show_status",
    is_flag=True,
    help=(
        "Show the current server and where the link points, the tunnel unit's state, the failure count and "
        "the last check, held-down servers, local-fault and all-failed states and the last switches; "
        "reads the state alone (no Prometheus, no lock, no root where the files are readable)."
    ),
)
@click.option(
    "--history",
    "history",
    type=click.IntRange(min=1),
    is_flag=False,
    flag_value=20,
    default=None,
    metavar="[N]",
    help="Print the last N switches (default 20): time, from, to, reason, every server's loss; reads the state alone.",
)
def main(
    config_path: Path,
    check_config: bool,
    as_json: bool,
    verbose: bool,
    dry_run: bool,
    to: str | None,
    force: bool,
    reason: str | None,
    show_status: bool,
    history: int | None,
) -> None:
    with handle_errors("wg-failover", verbose, as_json):
        if (show_status or history) and (to or dry_run or reason or force or (show_status and history)):
            raise click.UsageError("--status and --history only combine with --config, --json and -v")
        config = load_or_check(config_path, check_config, as_json)
        if show_status or history:
            show_state(config, as_json, history)
            return
        # Imported here: requests costs ~0.2 s to import, which --help,
        # --check-config, --status and --history should not pay (docs/performance.md).
        from wgfailover.actions.failover import fail_over
        from wgfailover.output.failover import failover_to_json, format_failover

        if to is None and not dry_run:
            # Started by a health check through health.failover_command: its
            # reason, with the loss it saw, replaces this unit's default.
            reason = StateDir(config.state_dir).claim_pending_reason(time.time()) or reason
        result = fail_over(
            config, reason=reason or ("manual" if to else "failover"), to=to, dry_run=dry_run, force=force
        )
        if as_json:
            print_json(failover_to_json(result))
        else:
            emit(format_failover(result))


def show_state(config: Config, as_json: bool, history: int | None) -> None:
    """Print --status (history None) or the last ``history`` switches, from the state alone."""
    from wgfailover.actions.status import read_history, read_status
    from wgfailover.output.status import format_history, format_status, history_to_json, status_to_json

    if history is None:
        status = read_status(config, time.time())
        if as_json:
            print_json(status_to_json(status))
        else:
            click.echo(format_status(status))
        return
    records = read_history(config)[-history:]
    if as_json:
        print_json(history_to_json(records))
    else:
        click.echo(format_history(records))
