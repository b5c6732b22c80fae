"""wg-select: choose the server the tunnel starts with (runs before the tunnel unit)."""

from __future__ import annotations

from pathlib import Path

import click

from wgfailover.actions.select import select_server
from wgfailover.commands.common import (
    Command,
    common_options,
    emit,
    exit_codes_help,
    handle_errors,
    load_or_check,
    print_json,
)
from wgfailover.output.select import describe_selection, selection_to_json


@click.command(
    cls=Command,
    help=(
        "Point the active-config symlink at the recorded server, or at a random one on first boot "
        "or when the recorded name is empty, unknown or its config is missing. Prints the server's name. "
        "Run it before the WireGuard unit. " + exit_codes_help("wg-select")
    ),
)
@common_options
def main(config_path: Path, check_config: bool, as_json: bool, verbose: bool) -> None:
    with handle_errors("wg-select", verbose, as_json):
        config = load_or_check(config_path, check_config, as_json)
        selection = select_server(config)
        if as_json:
            print_json(selection_to_json(selection))
        else:
            # select_server logged "restored ..." or "picked ...": under systemd that is the one journal line.
            emit(describe_selection(selection), logged=True)
