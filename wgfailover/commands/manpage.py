"""Man pages for the three commands, written from their --help texts.

The build runs this (setup.py, hence pip, pipx and the Nix package), so a
man page can never say something --help does not: both come from the same
click command. ``python -m wgfailover.commands.manpage DIR`` writes
``DIR/wg-select.1`` and the others.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from wgfailover import __version__
from wgfailover.commands.common import EXIT_CODES
from wgfailover.config import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH

COMMANDS = {
    "wg-select": "wgfailover.commands.wg_select",
    "wg-failover": "wgfailover.commands.wg_failover",
    "wg-health-check": "wgfailover.commands.wg_health_check",
}

_SUMMARY = {
    "wg-select": "choose the VPN server the WireGuard tunnel starts with",
    "wg-failover": "switch the WireGuard tunnel to the best other VPN server",
    "wg-health-check": "judge the tunnel's packet loss and fail over after repeated bad checks",
}


def _roff(text: str) -> str:
    """Given plain text, return it safe for roff: backslashes, and dots or quotes that start a line."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line) if line[:1] in (".", "'") else line for line in escaped.splitlines()]
    return "\n".join(lines)


def render_manpage(name: str, command: click.Command) -> str:
    """Given a command's name and its click command, return its man page in roff."""
    context = click.Context(command, info_name=name)
    usage = " ".join(command.collect_usage_pieces(context))
    lines = [
        f'.TH {name.upper()} 1 "" "wg-failover {__version__}" "User Commands"',
        ".SH NAME",
        f"{_roff(name)} \\- {_roff(_SUMMARY[name])}",
        ".SH SYNOPSIS",
        f".B {_roff(name)}",
        _roff(usage),
        ".SH DESCRIPTION",
        _roff(" ".join((command.help or "").split("Exit codes:")[0].split())),
        ".SH OPTIONS",
    ]
    for parameter in command.get_params(context):
        record = parameter.get_help_record(context)
        if record is None:
            continue
        options, help_text = record
        lines += [".TP", f".B {_roff(options)}", _roff(" ".join(help_text.split()))]
    lines += [".SH EXIT STATUS"]
    for code, meaning in EXIT_CODES[name].items():
        lines += [".TP", f".B {code}", _roff(meaning)]
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        f".B {CONFIG_ENV_VAR}",
        "The configuration file, unless \\-\\-config is given.",
        ".TP",
        ".B JOURNAL_STREAM",
        "Set by systemd; when stderr (and stdout) is that stream, log lines carry syslog priorities"
        " and each event is logged once.",
        ".SH FILES",
        ".TP",
        f".I {_roff(str(DEFAULT_CONFIG_PATH))}",
        "The default configuration file.",
        ".SH SEE ALSO",
        ", ".join(f"\\fB{_roff(other)}\\fR(1)" for other in COMMANDS if other != name) + ", \\fBsystemd.service\\fR(5)",
        "",
    ]
    return "\n".join(lines)


def write_manpages(directory: Path) -> list[Path]:
    """Given a directory (created if missing), write one NAME.1 per command there; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, module in COMMANDS.items():
        command = importlib.import_module(module).main
        path = directory / f"{name}.1"
        path.write_text(render_manpage(name, command), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m wgfailover.commands.manpage DIRECTORY")
    for written_path in write_manpages(Path(sys.argv[1])):
        print(written_path)
