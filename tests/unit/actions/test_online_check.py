"""The rules of --check-config --online that need no Prometheus (the rest: tests/integration/test_online_check.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from wgfailover.actions.online_check import is_local_target, servers_without_series
from wgfailover.commands.wg_failover import main as wg_failover


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("ip6-localhost", True),
        ("192.0.2.53", False),
        ("one.one.one.one", False),
        ("2001:db8::1", False),
    ],
)
def test_a_target_on_this_host_is_recognised(host: str, local: bool) -> None:
    assert is_local_target(host) is local


def test_servers_whose_endpoint_has_no_series_are_named() -> None:
    endpoints = {"a": "192.0.2.1", "b": "192.0.2.2", "c": None, "d": "192.0.2.1"}
    assert servers_without_series(endpoints, ["192.0.2.1"]) == ["b"]
    assert servers_without_series(endpoints, []) == ["a", "b", "d"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--online"], "--online only applies to --check-config"),
        (["--check-config", "--online", "--offline"], "--offline and --online exclude each other"),
    ],
)
def test_online_is_a_mode_of_check_config(make_config_file: Callable[..., Path], args: list[str], message: str) -> None:
    result = CliRunner().invoke(wg_failover, ["--config", str(make_config_file()), *args])
    assert result.exit_code == 2
    assert message in result.output
