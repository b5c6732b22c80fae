"""The node_exporter textfile: rendered from the state every time, never stale, never fatal;
the last switch's reason, the switch counter, server names for endpoints."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from wgfailover.config import Config
from wgfailover.metrics import TEXTFILE_NAME, render_metrics, textfile_name, write_metrics
from wgfailover.servers import Server
from wgfailover.state import AllFailedRecord, CheckRecord, StateDir

SERVERS = [
    Server(name="server1", config_path=Path("/nonexistent/server1"), endpoint="192.0.2.1"),
    Server(name="server2", config_path=Path("/nonexistent/server2"), endpoint="192.0.2.2"),
]


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.ensure()
    return state


def test_the_last_switch_is_one_info_series_with_from_to_and_reason(config: Config) -> None:
    state = StateDir(config.state_dir)
    state.ensure()
    state.write_current("server2")
    state.append_history(time=100, from_server=None, to_server="server1", reason="first")
    state.append_history(
        time=200,
        from_server="server1",
        to_server="server2",
        reason='health-check: loss 1 > 0.15 for 3 checks\nby "me"',
        losses={"server1": 1 - 0.55, "server2": 0.0},
    )
    text = render_metrics(state, config.servers, instance=None)
    info = [line for line in text.splitlines() if line.startswith("wg_failover_last_switch_info")]
    assert info == [
        'wg_failover_last_switch_info{from="server1",to="server2",'
        'reason="health-check: loss 1 > 0.15 for 3 checks\\\\nby \\"me\\""} 1'
    ]
    assert "# TYPE wg_failover_switches_total counter\nwg_failover_switches_total 2\n" in text
    assert 'wg_failover_server_loss_ratio{server="server1"} 0.45\n' in text


def test_each_server_endpoint_is_named_for_the_dashboard(config: Config) -> None:
    text = render_metrics(StateDir(config.state_dir), config.servers, instance=None)
    assert [line for line in text.splitlines() if line.startswith("wg_failover_server_endpoint_info")] == [
        'wg_failover_server_endpoint_info{server="server1",host="192.0.2.10"} 1',
        'wg_failover_server_endpoint_info{server="server2",host="192.0.2.20"} 1',
        'wg_failover_server_endpoint_info{server="server3",host="192.0.2.30"} 1',
    ]


def samples(text: str) -> dict[str, str]:
    """Given a textfile, return {series: value} without the HELP and TYPE lines."""
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_a_fresh_install_shows_no_server_and_zero_counts(state: StateDir) -> None:
    assert samples(render_metrics(state, SERVERS, instance=None)) == {
        'wg_failover_server_endpoint_info{server="server1",host="192.0.2.1"}': "1",
        'wg_failover_server_endpoint_info{server="server2",host="192.0.2.2"}': "1",
        "wg_failover_switches_total": "0",
        "wg_failover_health_consecutive_failures": "0",
        "wg_failover_local_fault": "0",
        "wg_failover_all_servers_failed": "0",
    }


def test_after_a_failover_the_new_server_is_the_one_shown(state: StateDir) -> None:
    # The original wrote vpn_server_info once at boot: stale after every failover.
    state.write_current("server1")
    state.append_history(time=1000.0, from_server=None, to_server="server1", reason="first")
    assert samples(render_metrics(state, SERVERS, instance=None))['vpn_server_info{server="server1"}'] == "1"
    state.write_current("server2")
    state.append_history(
        time=2000.5, from_server="server1", to_server="server2", reason="health", losses={"server2": 0.01, "x": None}
    )
    state.write_failures(2)
    state.write_last_check(CheckRecord(time=2100.0, loss=0.25, span=60))
    assert samples(render_metrics(state, SERVERS, instance=None)) == {
        'vpn_server_info{server="server2"}': "1",
        'wg_failover_server_endpoint_info{server="server1",host="192.0.2.1"}': "1",
        'wg_failover_server_endpoint_info{server="server2",host="192.0.2.2"}': "1",
        "wg_failover_switches_total": "2",
        'wg_failover_last_switch_info{from="server1",to="server2",reason="health"}': "1",
        "wg_failover_last_switch_timestamp_seconds": "2000.5",
        'wg_failover_server_loss_ratio{server="server2"}': "0.01",
        "wg_failover_health_consecutive_failures": "2",
        "wg_failover_last_check_timestamp_seconds": "2100",
        "wg_failover_tunnel_loss_ratio": "0.25",
        "wg_failover_local_fault": "0",
        "wg_failover_all_servers_failed": "0",
    }


def test_a_local_fault_and_all_servers_failed_show_as_1_while_they_last(state: StateDir) -> None:
    state.write_last_check(CheckRecord(time=100.0, loss=1.0, span=60, local_fault="local fault: every server ..."))
    state.write_all_failed(AllFailedRecord(time=90.0, failed={"server2": "no handshake"}, stayed_on="server2"))
    shown = samples(render_metrics(state, SERVERS, instance=None))
    assert (shown["wg_failover_local_fault"], shown["wg_failover_all_servers_failed"]) == ("1", "1")
    state.write_last_check(CheckRecord(time=160.0, loss=0.0, span=60))
    assert state.clear_all_failed()
    shown = samples(render_metrics(state, SERVERS, instance=None))
    assert (shown["wg_failover_local_fault"], shown["wg_failover_all_servers_failed"]) == ("0", "0")


def test_every_family_has_help_and_a_type(state: StateDir) -> None:
    text = render_metrics(state, SERVERS, instance=None)
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    types = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names == set(types)
    assert set(types.values()) == {"gauge", "counter"}


def test_the_file_is_written_readable_by_node_exporter_under_a_strict_umask(state: StateDir, tmp_path: Path) -> None:
    textfile_dir = tmp_path / "node"
    textfile_dir.mkdir()
    (textfile_dir / f".{TEXTFILE_NAME}.0123abcd.tmp").write_text("left by a killed run")
    old = os.umask(0o077)
    try:
        assert write_metrics(textfile_dir, state, SERVERS, instance=None) is True
    finally:
        os.umask(old)
    written = textfile_dir / TEXTFILE_NAME
    assert written.stat().st_mode & 0o777 == 0o644
    assert written.read_text() == render_metrics(state, SERVERS, instance=None)
    assert [p.name for p in textfile_dir.iterdir()] == [TEXTFILE_NAME]


def test_metrics_disabled_writes_nothing(state: StateDir) -> None:
    assert write_metrics(None, state, SERVERS, instance=None) is False


def test_an_unwritable_directory_is_a_warning_not_an_error(
    state: StateDir, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="wgfailover"):
        assert write_metrics(tmp_path / "missing", state, SERVERS, instance=None) is False
    assert "the metrics are not updated (check textfile_dir)" in caplog.text


def test_without_an_instance_the_file_and_series_are_as_they_always_were(state: StateDir, tmp_path: Path) -> None:
    assert textfile_name(None) == "wg_failover.prom"
    assert "wg_instance" not in render_metrics(state, SERVERS, instance=None)


def test_two_instances_share_a_textfile_dir_without_overwriting_or_duplicating(tmp_path: Path) -> None:
    # node_exporter refuses a series that two files both hold; each file
    # therefore has its own name, and each series its instance's label.
    textfile_dir = tmp_path / "node"
    textfile_dir.mkdir()
    shown = {}
    for instance, server in (("wg0", "server1"), ("wg1", "server2")):
        state = StateDir(tmp_path / instance)
        state.ensure()
        state.write_current(server)
        assert write_metrics(textfile_dir, state, SERVERS, instance=instance) is True
        shown[instance] = samples((textfile_dir / f"wg_failover_{instance}.prom").read_text())
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["wg_failover_wg0.prom", "wg_failover_wg1.prom"]
    assert shown["wg0"]['vpn_server_info{wg_instance="wg0",server="server1"}'] == "1"
    assert shown["wg1"]['vpn_server_info{wg_instance="wg1",server="server2"}'] == "1"
    assert shown["wg0"]['wg_failover_health_consecutive_failures{wg_instance="wg0"}'] == "0"
    for instance, series in shown.items():
        assert all(f'{{wg_instance="{instance}"' in name for name in series), series
    assert not set(shown["wg0"]) & set(shown["wg1"])
