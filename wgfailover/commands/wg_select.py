"""wg-select: choose the server the tunnel starts with (runs before the tunnel unit)."""

from __future__ import annotations

from pathlib import Path

import click

from wgfailover.commands.common import EXIT_CODES_HELP, common_options, handle_errors, load_or_check
from wgfailover.select_server import select_server


@click.command(
    help=(
        "Point the active-config symlink at the recorded server, or at a random one on first boot "
        "or when the recorded name is empty, unknown or its config is missing. "
        "Run it before the WireGuard unit. " + EXIT_CODES_HELP
    )
)
@common_options
def main(config_path: Path, check_config: bool, verbose: bool) -> None:
    with handle_errors("wg-select", verbose):
        config = load_or_check(config_path, check_config)
        selection = select_server(config)
        click.echo(selection.server)
