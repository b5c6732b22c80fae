"""What every command shares: --version, --json even on failure, -v, completion of --to."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.unit.test_docs import COMMANDS, command
from wgfailover import __version__
from wgfailover.commands.common import EXIT_CODES, exit_codes_help


def invoke(name: str, *args: str) -> Result:
    return CliRunner().invoke(command(name), list(args), prog_name=name, env={"JOURNAL_STREAM": None})


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_version_prints_the_program_and_the_version(name: str) -> None:
    result = invoke(name, "--version")
    assert result.exit_code == 0
    assert result.stdout == f"{name} {__version__}\n"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_json_of_a_missing_config_is_one_object_with_the_error_and_exit_78(name: str, tmp_path: Path) -> None:
    result = invoke(name, "--config", str(tmp_path / "nope.toml"), "--json")
    assert result.exit_code == 78
    document = json.loads(result.stdout)
    assert document["exit_code"] == 78
    assert document["error"].startswith(str(tmp_path / "nope.toml"))
    assert document["problems"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_json_of_a_usage_error_is_one_object_with_exit_2(name: str) -> None:
    result = invoke(name, "--json", "--no-such-flag")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2
    assert document["error"].startswith("No such option") and "--no-such-flag" in document["error"]


def test_json_of_an_unknown_to_names_the_servers(make_config_file: Callable[..., Path]) -> None:
    result = invoke("wg-failover", "--config", str(make_config_file()), "--json", "--to", "nope")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "error": "'nope' is not a configured server (configured: server1, server2, server3)",
        "exit_code": 2,
    }


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_check_config_json_lists_the_servers(name: str, make_config_file: Callable[..., Path]) -> None:
    path = make_config_file()
    result = invoke(name, "--config", str(path), "--check-config", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document == {
        "config": str(path),
        "instance": None,
        "valid": True,
        "offline": False,
        "online": False,
        "servers": ["server1", "server2", "server3"],
        "problems": [],
        "warnings": [],
        "checked": [],
        "exit_code": 0,
    }


def test_check_config_json_names_the_instance(make_config_file: Callable[..., Path]) -> None:
    result = invoke("wg-select", "--config", str(make_config_file(top='instance = "wg1"')), "--check-config", "--json")
    assert (result.exit_code, json.loads(result.stdout)["instance"]) == (0, "wg1")


def test_check_config_prints_each_problem_on_its_own_line(
    make_config_file: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_config_file(
        extra=f"""
        [prometheus]
        url = "http://127.0.0.1:9"
        ca_file = "{tmp_path}/server1-ca.pem"
        username = "u"
        password_file = "{tmp_path}/server2-password"
        """
    )
    result = invoke("wg-select", "--config", str(path), "--check-config")
    assert result.exit_code == 78
    errors = [line for line in result.stderr.splitlines() if line.startswith("wg-select: error: ")]
    assert len(errors) == 2
    assert "server1" in errors[0] and "server2" in errors[1]


def test_wg_select_json_says_what_it_picked(make_config_file: Callable[..., Path]) -> None:
    result = invoke("wg-select", "--config", str(make_config_file()), "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["server"] in ("server1", "server2", "server3")
    assert document["restored"] is False


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_verbose_names_the_files_and_endpoints_it_uses(name: str, make_config_file: Callable[..., Path]) -> None:
    result = invoke(name, "--config", str(make_config_file()), "--check-config", "-v")
    assert result.exit_code == 0
    assert "state_dir " in result.stderr
    assert "server server2: config " in result.stderr and "endpoint 192.0.2.20" in result.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_exactly_the_exit_codes_the_command_returns(name: str) -> None:
    result = invoke(name, "--help")
    assert " ".join(exit_codes_help(name).split()) in " ".join(result.stdout.split())
    assert "130 interrupted" in exit_codes_help(name)
    assert (69 in EXIT_CODES[name]) == (name == "wg-health-check")


def test_to_completes_the_configured_server_names(make_config_file: Callable[..., Path]) -> None:
    from click.shell_completion import ShellComplete

    path = make_config_file()
    completion = ShellComplete(command("wg-failover"), {}, "wg-failover", "_WG_FAILOVER_COMPLETE")
    items = completion.get_completions(["--config", str(path), "--to"], "server")
    assert [item.value for item in items] == ["server1", "server2", "server3"]
    items = completion.get_completions(["--config", str(path), "--to"], "server3")
    assert [item.value for item in items] == ["server3"]


def test_to_completes_nothing_when_the_config_is_unreadable(tmp_path: Path) -> None:
    from click.shell_completion import ShellComplete

    completion = ShellComplete(command("wg-failover"), {}, "wg-failover", "_WG_FAILOVER_COMPLETE")
    assert completion.get_completions(["--config", str(tmp_path / "nope"), "--to"], "") == []


def test_verbose_health_check_shows_the_promql_and_where_it_goes(
    make_config_file: Callable[..., Path], requests_mock: Any
) -> None:
    path = make_config_file(extra='[prometheus]\nurl = "http://prometheus.test:9090"\n')
    requests_mock.post(
        "http://prometheus.test:9090/api/v1/query",
        json={"status": "success", "data": {"resultType": "vector", "result": []}},
    )
    result = invoke("wg-health-check", "--config", str(path), "--dry-run", "-v")
    assert result.exit_code == 0, result.output
    sent = [line for line in result.stderr.splitlines() if "POST http://prometheus.test:9090/api/v1/query" in line]
    # No data is a failure, so the second query asks whether every server is lossy (a local fault).
    assert len(sent) == 2 and "smokeping_requests_total" in sent[0] and "wgf_metric" in sent[1]


def test_health_check_json_is_one_object_with_the_loss_and_the_counter(
    make_config_file: Callable[..., Path], requests_mock: Any
) -> None:
    path = make_config_file(extra='[prometheus]\nurl = "http://prometheus.test:9090"\n')
    requests_mock.post(
        "http://prometheus.test:9090/api/v1/query",
        json={"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "0.45"]}]}},
    )
    result = invoke("wg-health-check", "--config", str(path), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {
        key: document[key]
        for key in ("dry_run", "outcome", "source", "loss", "threshold", "failures_before", "failures", "max_failures")
    } == {
        "dry_run": True,
        "outcome": "failure",
        "source": "prometheus",
        "loss": 0.45,
        "threshold": 0.15,
        "failures_before": 0,
        "failures": 1,
        "max_failures": 3,
    }
    assert document["message"].startswith("unhealthy: loss 0.45 > 0.15")


def test_health_check_json_when_prometheus_is_unreachable_is_the_error_and_69(
    make_config_file: Callable[..., Path],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        path = make_config_file(extra=f'[prometheus]\nurl = "http://127.0.0.1:{port}"\n')
        result = invoke("wg-health-check", "--config", str(path), "--json")
    assert result.exit_code == 69
    document = json.loads(result.stdout)
    assert document == {
        "error": f"cannot reach Prometheus at http://127.0.0.1:{port}: connection refused",
        "exit_code": 69,
    }
