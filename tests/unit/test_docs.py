"""Docs move with the code: every command has help, every key is documented."""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from wgfailover.config import (
    Config,
    FailoverSettings,
    FleetSettings,
    HealthSettings,
    PrometheusSettings,
    parse_config,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "wg-select": "wgfailover.commands.wg_select",
    "wg-failover": "wgfailover.commands.wg_failover",
    "wg-health-check": "wgfailover.commands.wg_health_check",
}


def command(name: str) -> click.Command:
    main = importlib.import_module(COMMANDS[name]).main
    assert isinstance(main, click.Command)
    return main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_its_exit_codes(name: str) -> None:
    result = CliRunner().invoke(command(name), ["--help"])
    assert result.exit_code == 0
    assert f"Usage: {name}" in result.output or "Usage: main" in result.output
    assert "--config" in result.output and "--check-config" in result.output
    assert "78 bad configuration" in " ".join(result.output.split())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_in_the_readme_and_the_operations_guide(name: str) -> None:
    assert name in (ROOT / "README.md").read_text()
    assert name in (ROOT / "docs" / "operations.md").read_text()


def test_every_console_script_is_declared_in_pyproject() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name, module in COMMANDS.items():
        assert f'{name} = "{module}:main"' in pyproject


def documented_keys() -> list[str]:
    keys = [
        f.name
        for f in dataclasses.fields(Config)
        if f.name not in ("path", "servers", "prometheus", "failover", "health", "fleet")
    ]
    keys += ["endpoint", "priority", "weight"]
    for settings in (PrometheusSettings, FailoverSettings, HealthSettings, FleetSettings):
        keys += [f.name for f in dataclasses.fields(settings) if not f.metadata.get("derived")]
    return keys


@pytest.mark.parametrize("key", documented_keys())
def test_every_config_key_is_in_the_reference(key: str) -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert f"| `{key}` |" in reference


def test_the_exit_code_table_lists_per_command_what_each_returns() -> None:
    from wgfailover.commands.common import EXIT_CODES

    operations = (ROOT / "docs" / "operations.md").read_text()
    header = "| code | meaning | wg-select | wg-failover | wg-health-check |"
    assert header in operations
    programs = header.strip("|").split("|")[2:]
    rows = [line for line in operations.splitlines() if re.match(r"\| \d+ \|", line)]
    documented = {int(line.split("|")[1]) for line in rows}
    assert documented == set().union(*EXIT_CODES.values())
    for line in rows:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        code = int(cells[0])
        for program, cell in zip(programs, cells[2:]):
            assert cell.startswith("yes") == (code in EXIT_CODES[program.strip()]), line


def test_the_readme_names_every_exit_code() -> None:
    from wgfailover.commands.common import EXIT_CODES

    readme = " ".join((ROOT / "README.md").read_text().split())
    section = readme[readme.index("Exit codes:") :][:600]
    for code in set().union(*EXIT_CODES.values()):
        assert re.search(rf"\b{code}\b", section), code


def readme_toml(after: str) -> dict[str, Any]:
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(after) :].split("```toml\n", 1)[1].split("```", 1)[0]
    return tomllib.loads(block)


@pytest.mark.parametrize("unit", ["wg-select@.service", "wg-failover@.service", "wg-health-check@.service"])
def test_the_readme_debian_config_writes_only_where_the_shipped_units_allow(unit: str) -> None:
    document = readme_toml("### Debian 12")
    config = parse_config(document, ROOT / "README.md")  # a valid config
    text = (ROOT / "contrib" / "systemd" / unit).read_text()
    assert "ProtectSystem=strict" in text
    # The template's instance is the interface, which the config names as its instance.
    text = text.replace("%i", str(config.instance))
    writable = [line.split("=", 1)[1].lstrip("-") for line in text.splitlines() if line.startswith("ReadWritePaths=")]
    writable += [
        f"/var/lib/{line.split('=', 1)[1]}" for line in text.splitlines() if line.startswith("StateDirectory=")
    ]
    for path in (config.active_link.parent, config.textfile_dir, config.state_dir):
        assert path is not None
        assert any(path == Path(allowed) or Path(allowed) in path.parents for allowed in writable), (unit, path)
    assert config.restart_command == ("systemctl", "restart", "wg-quick@wg0.service")
    assert f"--config /etc/wg-failover/{config.instance}.toml" in text
