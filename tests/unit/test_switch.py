"""The atomic link swap and the restart command."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from wgfailover.config import load_config
from wgfailover.errors import ActionError, ExitCode
from wgfailover.external import run_command
from wgfailover.fsutil import atomic_symlink, atomic_write
from wgfailover.state import StateDir
from wgfailover.switch import switch_to


def test_atomic_write_sets_the_mode_even_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "m.prom", b"x 1\n", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "m.prom").stat().st_mode & 0o777 == 0o644
    assert list(tmp_path.iterdir()) == [tmp_path / "m.prom"]


def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "gone" / "current"
    with pytest.raises(ActionError) as caught:
        atomic_write(target, b"x")
    assert str(caught.value) == f"cannot write {target}: No such file or directory"


_WATCHER = textwrap.dedent(
    """
    import os, sys
    link, stop = sys.argv[1], sys.argv[2]
    seen = bad = 0
    while not os.path.exists(stop):
        try:
            target = os.readlink(link)
            seen += 1
            if not os.path.exists(target):
                bad += 1
        except OSError:
            bad += 1
    print(seen, bad)
    """
)


def test_the_link_is_never_missing_or_dangling_while_it_is_swapped(tmp_path: Path) -> None:
    configs = [tmp_path / f"server{n}" for n in range(3)]
    for config in configs:
        config.write_text("[Interface]\n")
    link = tmp_path / "wg-active.conf"
    atomic_symlink(configs[0], link)
    stop = tmp_path / "stop"
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(link), str(stop)], stdout=subprocess.PIPE)
    try:
        for round_number in range(3000):
            atomic_symlink(configs[round_number % 3], link)
    finally:
        stop.write_text("")
        out, _ = watcher.communicate(timeout=60)
    seen, bad = (int(x) for x in out.split())
    assert seen > 0
    assert bad == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server0", "server1", "server2", "stop", "wg-active.conf"]


def test_a_failing_restart_is_reported_with_its_stderr() -> None:
    with pytest.raises(ActionError) as caught:
        run_command(["sh", "-c", "echo 'Job for wg.service failed.' >&2; exit 3"], 10, "restarting the tunnel failed")
    assert (
        str(caught.value)
        == "restarting the tunnel failed: sh -c echo 'Job for wg.service failed.' >&2; exit 3 exited with 3: Job for wg.service failed."
    )
    assert caught.value.exit_code == ExitCode.ACTION_FAILED


def test_a_missing_restart_command_is_reported() -> None:
    with pytest.raises(ActionError, match="restarting the tunnel failed: command not found: /nonexistent/systemctl"):
        run_command(["/nonexistent/systemctl", "restart"], 10, "restarting the tunnel failed")


def test_a_hanging_restart_is_bounded() -> None:
    with pytest.raises(ActionError, match=r"did not finish within 0.2s"):
        run_command(["sleep", "30"], 0.2, "restarting the tunnel failed")


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
