"""wg-failover --status and --history: the state alone, readable times, one JSON schema."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from wgfailover.actions.status import UnitState, read_status, tunnel_unit
from wgfailover.commands.wg_failover import main as wg_failover
from wgfailover.config import Config, load_config
from wgfailover.output.status import format_history, format_status, status_to_json
from wgfailover.state import CheckRecord, StateDir

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


@pytest.fixture
def switched(make_config_file: Callable[..., Path]) -> Config:
    """server1, then server2 by a health check 20 minutes ago; the link agrees; a check a minute ago."""
    config = load_config(make_config_file(restart_command=("systemctl", "restart", "wg-quick@wg0.service")))
    state = StateDir(config.state_dir)
    state.ensure()
    state.append_history(time=NOW - 3600, from_server=None, to_server="server1", reason="manual")
    state.append_history(
        time=NOW - 1200,
        from_server="server1",
        to_server="server2",
        reason="health-check: loss 1 > 0.15 for 3 checks",
        losses={"server1": 1.0, "server2": 0.0, "server3": 1 - 0.55},
    )
    state.write_current("server2")
    state.write_failures(1)
    state.write_last_check(CheckRecord(time=NOW - 60, loss=0.25, span=60))
    config.active_link.symlink_to(config.config_dir / "server2")
    return config


def running(unit: str) -> UnitState:
    return UnitState(unit, "active", "exited")


def test_status_shows_everything_an_operator_asks_first(switched: Config) -> None:
    text = format_status(read_status(switched, NOW, systemctl=running))
    assert text == (
        "server:        server2 (since 2027-01-15 07:40:00 UTC, 20m ago)\n"
        f"link:          {switched.active_link} -> {switched.config_dir / 'server2'} (agrees)\n"
        "tunnel unit:   wg-quick@wg0.service active (exited)\n"
        "health:        1 of 3 failures; last check 2027-01-15 07:59:00 UTC (60s ago): loss 25.0% over 60s\n"
        "held down:     server1 (left 20m ago, 10m left)\n"
        "local fault:   none\n"
        "all failed:    none\n"
        "last switches:\n"
        "  2027-01-15 07:00:00 UTC  none -> server1     manual                                    losses: -\n"
        "  2027-01-15 07:40:00 UTC  server1 -> server2  health-check: loss 1 > 0.15 for 3 checks"
        "  losses: server1 100.0%, server2 0.0%, server3 45.0%"
    )


def test_status_says_when_the_link_disagrees_with_the_recorded_server(switched: Config) -> None:
    switched.active_link.unlink()
    switched.active_link.symlink_to(switched.config_dir / "server3")
    status = read_status(switched, NOW, systemctl=running)
    assert not status.link_agrees
    assert "(DISAGREES with the recorded server: server3)" in format_status(status)


def test_status_json_has_one_schema(switched: Config) -> None:
    document = status_to_json(read_status(switched, NOW, systemctl=running))
    assert sorted(document) == [
        "all_failed",
        "current",
        "health",
        "held_down",
        "instance",
        "last_switches",
        "link",
        "local_fault",
        "problems",
        "time",
        "tunnel_unit",
    ]
    assert document["instance"] is None
    assert document["current"] == {"server": "server2", "problem": None}
    assert document["link"]["agrees"] is True and document["link"]["server"] == "server2"
    assert document["tunnel_unit"] == {
        "unit": "wg-quick@wg0.service",
        "active_state": "active",
        "sub_state": "exited",
        "error": None,
    }
    assert document["health"] == {
        "failures": 1,
        "max_failures": 3,
        "last_check": {
            "time": NOW - 60,
            "time_text": "2027-01-15 07:59:00 UTC",
            "age_seconds": 60.0,
            "loss": 0.25,
            "span_seconds": 60.0,
        },
    }
    assert document["held_down"] == [{"server": "server1", "left_seconds_ago": 1200.0, "remaining_seconds": 600.0}]
    assert document["last_switches"][-1]["time_text"] == "2027-01-15 07:40:00 UTC"
    assert document["last_switches"][-1]["losses"]["server3"] == 0.45
    assert (document["local_fault"], document["all_failed"], document["problems"]) == (None, None, [])
    json.dumps(document)


def test_status_names_a_file_it_cannot_read_instead_of_failing(switched: Config) -> None:
    last_check = switched.state_dir / "health-failures"
    last_check.unlink()
    last_check.mkdir()  # unreadable as a file, even for root
    status = read_status(switched, NOW, systemctl=running)
    assert status.problems == (f"cannot read {last_check}: Is a directory",)
    assert f"unreadable:    cannot read {last_check}: Is a directory" in format_status(status)


def test_status_on_a_fresh_install_says_what_is_missing(make_config_file: Callable[..., Path]) -> None:
    config = load_config(make_config_file())
    text = format_status(read_status(config, NOW, systemctl=running))
    assert text.splitlines()[:2] == [
        "server:        none (no server recorded yet)",
        f"link:          {config.active_link} does not exist (wg-select has not run)",
    ]
    assert "tunnel unit:   - (restart_command is not `systemctl restart UNIT`)" in text


def test_status_of_an_instance_names_it_first(make_config_file: Callable[..., Path]) -> None:
    config = load_config(make_config_file(top='instance = "wg1"'))
    status = read_status(config, NOW, systemctl=running)
    assert format_status(status).splitlines()[:2] == [
        "instance:      wg1",
        "server:        none (no server recorded yet)",
    ]
    assert status_to_json(status)["instance"] == "wg1"


@pytest.mark.parametrize(
    ("argv", "unit"),
    [
        (["systemctl", "restart", "wg-quick@wg0.service"], "wg-quick@wg0.service"),
        (["/usr/bin/systemctl", "--no-block", "restart", "wg.service"], "wg.service"),
        (["systemctl", "try-restart", "wg"], "wg"),
        (["systemctl", "start", "wg.service"], None),
        (["systemctl", "restart", "a.service", "b.service"], None),
        (["/usr/local/bin/restart-vpn"], None),
    ],
)
def test_the_tunnel_unit_is_the_one_restart_command_restarts(argv: list[str], unit: str | None) -> None:
    assert tunnel_unit(argv) == unit


def test_history_prints_readable_times_reasons_and_losses(switched: Config) -> None:
    records = StateDir(switched.state_dir).read_history()
    assert format_history(records[-1:]) == (
        "2027-01-15 07:40:00 UTC  server1 -> server2  health-check: loss 1 > 0.15 for 3 checks"
        "  losses: server1 100.0%, server2 0.0%, server3 45.0%"
    )
    assert format_history([]) == "no switches recorded"


def invoke(config: Config, *args: str) -> Any:
    return CliRunner().invoke(wg_failover, ["--config", str(config.path), *args], env={"JOURNAL_STREAM": None})


def test_history_n_and_json_from_the_command(switched: Config) -> None:
    result = invoke(switched, "--history", "1", "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)["switches"]
    assert (record["from"], record["to"], record["time_text"]) == ("server1", "server2", "2027-01-15 07:40:00 UTC")
    result = invoke(switched, "--history")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2


def test_status_needs_no_prometheus_and_changes_nothing(switched: Config) -> None:
    before = {path.name: path.read_bytes() for path in switched.state_dir.iterdir() if path.is_file()}
    result = invoke(switched, "--status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["current"]["server"] == "server2"
    assert {path.name: path.read_bytes() for path in switched.state_dir.iterdir() if path.is_file()} == before


@pytest.mark.parametrize("extra", [["--to", "server1"], ["--dry-run"], ["--history"]])
def test_status_does_not_combine_with_actions(switched: Config, extra: list[str]) -> None:
    result = invoke(switched, "--status", *extra)
    assert result.exit_code == 2
    assert "--status and --history only combine with --config, --json and -v" in result.output


def test_status_shows_a_local_fault_and_every_server_failed_with_the_hold_left(switched: Config) -> None:
    from wgfailover.state import AllFailedRecord

    state = StateDir(switched.state_dir)
    fault = "local fault: every server is losing packets (server1 100.0%, server2 100.0%, server3 100.0%)"
    state.write_last_check(CheckRecord(time=NOW - 60, loss=1.0, span=60, local_fault=fault))
    state.write_all_failed(
        AllFailedRecord(
            time=NOW - 300,
            failed={"server3": "no handshake within 20s", "server1": "tunnel loss 1 > 0.15"},
            stayed_on="server2",
        )
    )
    status = read_status(switched, NOW, systemctl=running)
    text = format_status(status)
    assert f"local fault:   {fault}\n" in text
    assert (
        "all failed:    every server tried failed at 2027-01-15 07:55:00 UTC (5m ago): "
        "server3: no handshake within 20s, server1: tunnel loss 1 > 0.15; stayed on server2; "
        "failovers held back 25m more (failover.hold_down)\n"
    ) in text
    document = status_to_json(status)
    assert document["local_fault"] == fault
    assert document["all_failed"] == {
        "time": NOW - 300,
        "time_text": "2027-01-15 07:55:00 UTC",
        "failed": {"server3": "no handshake within 20s", "server1": "tunnel loss 1 > 0.15"},
        "stayed_on": "server2",
        "held_back_seconds": 1500.0,
    }
