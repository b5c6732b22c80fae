"""Run the installed commands the way their console scripts do.

The commands are found from wg-failover's own entry points, not from where
the scripts happen to be: under Nix's pytestCheckHook, in a `pip install
--prefix` or `--target` tree, or a distribution package, they are neither
beside sys.executable, nor in a virtualenv, nor on PATH. Running the entry
point's function with this interpreter is what the generated script does.
"""

from __future__ import annotations

import importlib.metadata
import shlex
import sys
from pathlib import Path


def console_scripts() -> dict[str, str]:
    """Return wg-failover's console scripts as {name: "module:function"}."""
    entry_points = importlib.metadata.distribution("wg-failover").entry_points
    return {entry.name: entry.value for entry in entry_points if entry.group == "console_scripts"}


def command_argv(name: str) -> list[str]:
    """Given a command name (wg-select, ...), return the argv that runs it, options to follow."""
    module, _, function = console_scripts()[name].partition(":")
    # argv[0] is the command's name, as the script's would be, so --help
    # and usage errors name it.
    code = f"import sys; from {module} import {function}; sys.argv[0] = {name!r}; sys.exit({function}())"
    return [sys.executable, "-c", code]


def write_command_wrappers(bin_dir: Path) -> Path:
    """Write an executable script per command into bin_dir (a stand-in for a package's bin/); return bin_dir."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in console_scripts():
        script = bin_dir / name
        argv = shlex.join(command_argv(name))
        script.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        script.chmod(0o755)
    return bin_dir
