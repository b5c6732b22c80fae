"""The atomic link swap and the restart command."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from wgfailover.config import load_config
from wgfailover.errors import ActionError
from wgfailover.state import StateDir
from wgfailover.switch import switch_to


def test_switch_records_links_resets_and_restarts(make_config_file: Callable[..., Path], tmp_path: Path) -> None:
    marker = tmp_path / "restarted"
    config = load_config(make_config_file(restart_command=("touch", str(marker))))
    state = StateDir(config.state_dir)
    state.ensure()
    state.write_failures(2)
    with state.locked(5):
        record = switch_to(
            config,
            state,
            to_server="server2",
            from_server="server1",
            reason="test",
            losses={"server2": 0.0, "server3": 0.5},
            now=1000.0,
        )
    assert record.seq == 1 and record.to_server == "server2"
    assert state.read_current(config.server_names).name == "server2"
    assert os.readlink(config.active_link) == str(tmp_path / "secrets" / "server2")
    assert state.read_failures() == 0
    assert marker.exists()
    prom = (tmp_path / "wg_failover.prom").read_text()
    assert 'vpn_server_info{server="server2"} 1' in prom
    assert "wg_failover_switches_total 1" in prom
    assert 'wg_failover_server_loss_ratio{server="server3"} 0.5' in prom


def test_a_failed_restart_leaves_state_consistent_with_the_new_server(
    make_config_file: Callable[..., Path],
) -> None:
    config = load_config(make_config_file(restart_command=("false",)))
    state = StateDir(config.state_dir)
    with state.locked(5), pytest.raises(ActionError, match="restarting the tunnel failed: false exited with 1"):
        switch_to(config, state, to_server="server3", from_server="server1", reason="t", losses={}, now=1.0)
    assert state.read_current(config.server_names).name == "server3"
    assert Path(os.readlink(config.active_link)).name == "server3"
    assert state.last_switch() is not None


def test_an_unwritable_textfile_dir_does_not_stop_the_switch(
    make_config_file: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "restarted"
    path = make_config_file(restart_command=("touch", str(marker)))
    path.write_text(path.read_text().replace(f'textfile_dir = "{tmp_path}"', f'textfile_dir = "{tmp_path}/missing"'))
    config = load_config(path)
    state = StateDir(config.state_dir)
    with state.locked(5):
        switch_to(config, state, to_server="server2", from_server="server1", reason="t", losses={}, now=1.0)
    assert marker.exists()
    assert state.read_current(config.server_names).name == "server2"
    assert f"cannot write {tmp_path}/missing/wg_failover.prom: No such file or directory" in caplog.text
