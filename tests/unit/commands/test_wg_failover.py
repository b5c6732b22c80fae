"""The wg-failover command: flags, printed table and JSON, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

from wgfailover.commands.wg_failover import main
from wgfailover.state import StateDir

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config with three servers (Endpoint 192.0.2.1-3 in their WireGuard configs), current server1."""
    config_dir = tmp_path / "wireguard"
    config_dir.mkdir()
    for number in (1, 2, 3):
        (config_dir / f"server{number}").write_text(f"[Peer]\nEndpoint = 192.0.2.{number}:51820\n")
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.write_current("server1")
    path = tmp_path / "config.toml"
    path.write_text(
        f'config_dir = "{config_dir}"\n'
        f'active_link = "{tmp_path}/wg-active.conf"\n'
        f'state_dir = "{tmp_path}/state"\n'
        'restart_command = ["true"]\n'
        "[servers.server1]\n[servers.server2]\n[servers.server3]\n"
        f'[prometheus]\nurl = "{URL}"\ntimeout = 2\n'
        '[failover]\nprobation = "0"\n'
    )
    return path


def answer(*series: tuple[str, str, float]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"host": host, "wgf_metric": metric}, "value": [1.0, str(value)]}
                for host, metric, value in series
            ],
        },
    }


MEASURED = answer(
    ("192.0.2.1", "loss", 0.5),
    ("192.0.2.2", "loss", 0.0),
    ("192.0.2.2", "latency", 0.012),
    ("192.0.2.3", "loss", 0.1),
    ("192.0.2.3", "latency", 0.008),
)


def invoke(config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config_file), *args], env={"JOURNAL_STREAM": None})


def test_dry_run_prints_the_ranking_and_the_choice_and_changes_nothing(config_file: Path, requests_mock: Any) -> None:
    requests_mock.post(QUERY_URL, json=MEASURED)
    result = invoke(config_file, "--dry-run")
    assert result.exit_code == 0
    assert result.stdout == (
        "server   endpoint   loss   latency  rank  why excluded\n"
        "server2  192.0.2.2  0.0%   12.0 ms  1\n"
        "server3  192.0.2.3  10.0%  8.0 ms   2     higher loss\n"
        "server1  192.0.2.1  50.0%  -        -     current\n"
        "would switch from server1 to server2: lowest loss (dry run: nothing changed)\n"
    )
    assert (config_file.parent / "state" / "current").read_text() == "server1\n"
    assert not (config_file.parent / "wg-active.conf").is_symlink()


def test_a_switch_prints_the_table_and_what_it_did(config_file: Path, requests_mock: Any) -> None:
    requests_mock.post(QUERY_URL, json=MEASURED)
    result = invoke(config_file, "--reason", "unit-failed")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "switched from server1 to server2: lowest loss (reason: unit-failed)"
    # Said once, on stdout; not repeated as a log line on stderr.
    assert "switched" not in result.stderr
    assert os.readlink(config_file.parent / "wg-active.conf") == str(config_file.parent / "wireguard" / "server2")


def test_json_gives_the_same_machine_readable(config_file: Path, requests_mock: Any) -> None:
    requests_mock.post(QUERY_URL, json=MEASURED)
    result = invoke(config_file, "--dry-run", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["choice"] == "server2"
    assert document["from"] == "server1"
    assert document["dry_run"] is True
    assert document["record"] is None
    assert document["prometheus"] == {"used": True, "error": None}
    assert document["servers"][0] == {
        "server": "server2",
        "endpoint": "192.0.2.2",
        "loss": 0.0,
        "latency_seconds": 0.012,
        "rank": 1,
        "held_down": False,
        "left_seconds_ago": None,
        "reason": "lowest loss",
    }
    assert [row["server"] for row in document["servers"]] == ["server2", "server3", "server1"]


def test_json_of_a_switch_holds_the_history_record(config_file: Path, requests_mock: Any) -> None:
    requests_mock.post(QUERY_URL, json=MEASURED)
    document = json.loads(invoke(config_file, "--json").stdout)
    assert document["record"]["to"] == "server2"
    assert document["record"]["reason"] == "failover"
    assert document["record"]["losses"] == {"server1": 0.5, "server2": 0.0, "server3": 0.1}


def test_unreachable_prometheus_still_switches_at_random(config_file: Path, requests_mock: Any) -> None:
    requests_mock.post(
        QUERY_URL, exc=requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    )
    result = invoke(config_file)
    assert result.exit_code == 0
    assert (
        "wg-failover: warning: cannot reach Prometheus at http://prometheus.test:9090: connection refused; "
        "picking at random among the other servers\n"
    ) in result.stderr
    assert result.stdout.splitlines()[-2] == (
        "Prometheus not used: cannot reach Prometheus at http://prometheus.test:9090: connection refused"
    )
    assert (config_file.parent / "state" / "current").read_text() in ("server2\n", "server3\n")


def test_to_switches_by_hand_with_reason_manual(config_file: Path, requests_mock: Any) -> None:
    requests_mock.post(QUERY_URL, json=MEASURED)
    result = invoke(config_file, "--to", "server3")
    assert result.exit_code == 0
    assert result.stdout == (
        "server   endpoint   loss   latency  rank  why excluded\n"
        "server3  192.0.2.3  10.0%  8.0 ms   1\n"
        "server1  192.0.2.1  50.0%  -        -     current\n"
        "server2  192.0.2.2  0.0%   12.0 ms  -     not asked for\n"
        "switched from server1 to server3: asked for with --to (reason: manual)\n"
    )
    assert (
        result.stderr
        == "wg-failover: warning: server3 loses 10.0% now, more than server2 (0.0%); switching to it as asked\n"
    )
    assert StateDir(config_file.parent / "state").last_switch().reason == "manual"  # type: ignore[union-attr]


def test_to_an_unknown_server_exits_2_with_the_names(config_file: Path) -> None:
    result = invoke(config_file, "--to", "server9")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "wg-failover: error: 'server9' is not a configured server (configured: server1, server2, server3)\n"
    )


def test_on_prometheus_error_fail_exits_1(config_file: Path, requests_mock: Any) -> None:
    config_file.write_text(
        config_file.read_text().replace("[failover]\n", '[failover]\non_prometheus_error = "fail"\n')
    )
    requests_mock.post(QUERY_URL, status_code=503, json={"status": "error", "errorType": "unavailable", "error": "x"})
    result = invoke(config_file)
    assert result.exit_code == 1
    assert result.stderr == (
        "wg-failover: error: Prometheus at http://prometheus.test:9090 answered HTTP 503 Service Unavailable: unavailable: x; "
        'not switching (failover.on_prometheus_error = "fail")\n'
    )


def test_a_failed_restart_exits_1(config_file: Path, requests_mock: Any) -> None:
    config_file.write_text(config_file.read_text().replace('["true"]', '["false"]'))
    requests_mock.post(QUERY_URL, json=MEASURED)
    result = invoke(config_file)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == ("wg-failover: error: restarting the tunnel failed: false exited with 1")


def test_a_bad_config_exits_78(tmp_path: Path) -> None:
    result = invoke(tmp_path / "missing.toml", "--dry-run")
    assert result.exit_code == 78
    assert "missing.toml: no such file" in result.stderr


def test_help_explains_the_flags_and_exit_codes() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for text in ("--dry-run", "--json", "--to NAME", "--reason TEXT", "unit-failed", "Exit codes: 0 done"):
        assert text in result.output


def test_json_and_history_show_losses_as_measured_not_float_noise(
    config_file: Path, requests_mock: Any, tmp_path: Path
) -> None:
    # 1 - 0.55 in floating point: what a loss query really answers.
    # (server1, the current one, at 0.1: were every server lossy, it would decline.)
    noisy = answer(("192.0.2.1", "loss", 0.1), ("192.0.2.2", "loss", 1 - 0.55), ("192.0.2.3", "loss", 0.6))
    requests_mock.post(QUERY_URL, json=noisy)
    result = invoke(config_file, "--json")
    assert result.exit_code == 0
    assert "0.44999999999999996" not in result.stdout
    assert [row["loss"] for row in json.loads(result.stdout)["servers"]][:1] == [0.45]
    history = (tmp_path / "state" / "history.jsonl").read_text()
    assert '"server2": 0.45' in history and "0.44999999999999996" not in history
    assert json.loads(history)["time"] == round(json.loads(history)["time"], 3)
