"""wg-select: restore the recorded server, or pick one at random; never follow a bad state file."""

from __future__ import annotations

import collections
import dataclasses
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from wgfailover.actions.select import select_server
from wgfailover.commands.wg_select import main
from wgfailover.config import NOT_CHECKED_OFFLINE, load_config
from wgfailover.errors import ActionError


def link_target(config_path: Path) -> str:
    return Path(os.readlink(load_config(config_path).active_link)).name


def test_first_boot_picks_uniformly_among_the_servers(make_config_file: Callable[..., Path]) -> None:
    config = load_config(make_config_file())
    rng = random.Random(1234)
    picks: collections.Counter[str] = collections.Counter()
    for _ in range(600):
        (config.state_dir / "current").unlink(missing_ok=True)
        selection = select_server(config, rng=rng)
        assert not selection.restored
        picks[selection.server] += 1
    assert set(picks) == {"server1", "server2", "server3"}
    # 600 draws of 1/3: each count is 200 +- 3 standard deviations (~35).
    assert all(150 <= count <= 250 for count in picks.values()), picks


def test_first_boot_records_the_pick_and_points_the_link(make_config_file: Callable[..., Path]) -> None:
    config = load_config(make_config_file())
    selection = select_server(config, rng=random.Random(7))
    assert (config.state_dir / "current").read_text() == f"{selection.server}\n"
    assert os.readlink(config.active_link) == str(config.config_dir / selection.server)
    prom = (config.textfile_dir / "wg_failover.prom").read_text()  # type: ignore[operator]
    assert f'vpn_server_info{{server="{selection.server}"}} 1\n' in prom


def test_an_instance_writes_its_own_labelled_textfile(make_config_file: Callable[..., Path]) -> None:
    config = load_config(make_config_file(top='instance = "wg0"'))
    selection = select_server(config, rng=random.Random(7))
    assert not (config.textfile_dir / "wg_failover.prom").exists()  # type: ignore[operator]
    prom = (config.textfile_dir / "wg_failover_wg0.prom").read_text()  # type: ignore[operator]
    assert f'vpn_server_info{{wg_instance="wg0",server="{selection.server}"}} 1\n' in prom


def test_a_valid_state_is_restored_every_time(make_config_file: Callable[..., Path]) -> None:
    config = load_config(make_config_file())
    config.state_dir.mkdir()
    (config.state_dir / "current").write_text("server2\n")
    for seed in range(20):
        selection = select_server(config, rng=random.Random(seed))
        assert selection.server == "server2" and selection.restored
    assert os.readlink(config.active_link) == str(config.config_dir / "server2")


@pytest.mark.parametrize(
    ("content", "logged"),
    [
        (b"", "is empty; replacing it"),
        (b"\x89PNG\r\n\x1a\n\x00", "holds binary data, not a server name; replacing it"),
        (b"server9\n", "names 'server9', which is not a configured server; replacing it"),
        (b"../../../etc/shadow\n", "holds a path ('../../../etc/shadow'), not a server name; replacing it"),
    ],
)
def test_a_bad_state_file_is_logged_and_replaced_never_followed(
    make_config_file: Callable[..., Path], content: bytes, logged: str
) -> None:
    path = make_config_file()
    config = load_config(path)
    config.state_dir.mkdir()
    (config.state_dir / "current").write_bytes(content)
    result = CliRunner().invoke(main, ["--config", str(path)])
    assert result.exit_code == 0, result.output
    picked = result.stdout.strip()
    assert picked in {"server1", "server2", "server3"}
    assert f"wg-select: warning: {config.state_dir / 'current'} {logged}" in result.stderr
    assert (config.state_dir / "current").read_text() == f"{picked}\n"
    assert link_target(path) == picked


def test_a_recorded_server_whose_config_vanished_is_replaced(make_config_file: Callable[..., Path]) -> None:
    config = load_config(make_config_file())
    config.state_dir.mkdir()
    (config.config_dir / "server1").unlink()
    picks = set()
    for seed in range(30):
        (config.state_dir / "current").write_text("server1\n")
        selection = select_server(config, rng=random.Random(seed))
        assert not selection.restored
        assert (
            selection.problem
            == f"the config of recorded server 'server1' ({config.config_dir / 'server1'}) does not exist"
        )
        picks.add(selection.server)
    assert picks == {"server2", "server3"}


def test_servers_without_a_config_file_are_never_picked(make_config_file: Callable[..., Path]) -> None:
    config = load_config(make_config_file())
    (config.config_dir / "server2").unlink()
    (config.config_dir / "server3").unlink()
    for seed in range(20):
        (config.state_dir / "current").unlink(missing_ok=True)
        assert select_server(config, rng=random.Random(seed)).server == "server1"


def test_first_boot_picks_among_the_most_preferred_servers_that_have_a_config(
    make_config_file: Callable[..., Path],
) -> None:
    config = load_config(make_config_file())
    servers = tuple(
        dataclasses.replace(s, priority={"server1": 1, "server2": 1}.get(s.name, 2)) for s in config.servers
    )
    config = dataclasses.replace(config, servers=servers)
    picks = set()
    for seed in range(40):
        (config.state_dir / "current").unlink(missing_ok=True)
        picks.add(select_server(config, rng=random.Random(seed)).server)
    assert picks == {"server1", "server2"}
    # Without configs for the preferred ones, the next tier.
    (config.config_dir / "server1").unlink()
    (config.config_dir / "server2").unlink()
    (config.state_dir / "current").unlink()
    assert select_server(config, rng=random.Random(0)).server == "server3"


def test_no_config_at_all_is_an_error_naming_the_files(make_config_file: Callable[..., Path]) -> None:
    path = make_config_file(servers={"only": "192.0.2.1"})
    config = load_config(path)
    (config.config_dir / "only").unlink()
    result = CliRunner().invoke(main, ["--config", str(path)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"wg-select: error: no server has a WireGuard config file (looked for {config.config_dir / 'only'})\n"
    )
    assert not config.active_link.exists()
    with pytest.raises(ActionError):
        select_server(config)


def test_a_bad_config_exits_78_with_one_line(make_config_file: Callable[..., Path]) -> None:
    path = make_config_file(extra="[health]\ntreshold = 0.3\n")
    result = CliRunner().invoke(main, ["--config", str(path)])
    assert result.exit_code == 78
    assert result.stderr == (
        f"wg-select: error: {path}: health.treshold: unknown key (did you mean 'health.threshold'?)\n"
    )


def test_check_config_validates_without_acting(make_config_file: Callable[..., Path]) -> None:
    path = make_config_file()
    result = CliRunner().invoke(main, ["--config", str(path), "--check-config"])
    assert result.exit_code == 0
    assert result.stdout == f"{path}: valid; 3 servers (server1, server2, server3); {NOT_CHECKED_OFFLINE}\n"
    assert not load_config(path).active_link.exists()


def test_check_config_warns_about_a_missing_server_config_but_passes(make_config_file: Callable[..., Path]) -> None:
    path = make_config_file()
    config = load_config(path)
    (config.config_dir / "server2").unlink()
    result = CliRunner().invoke(main, ["--config", str(path), "--check-config"], env={"JOURNAL_STREAM": None})
    assert result.exit_code == 0
    assert result.stderr == (
        f"wg-select: warning: servers.server2: its WireGuard config {config.config_dir / 'server2'} does not exist\n"
    )


def test_check_config_fails_on_a_missing_credential_file(make_config_file: Callable[..., Path], tmp_path: Path) -> None:
    path = make_config_file(extra=f'[prometheus]\nurl = "http://127.0.0.1:9"\nbearer_token_file = "{tmp_path}/token"\n')
    result = CliRunner().invoke(main, ["--config", str(path), "--check-config"], env={"JOURNAL_STREAM": None})
    assert result.exit_code == 78
    assert result.stderr == (
        f"wg-select: error: {path}: prometheus.bearer_token_file: {tmp_path}/token is missing or unreadable\n"
    )


def test_check_config_offline_skips_the_files_the_config_names(
    make_config_file: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_config_file(extra=f'[prometheus]\nurl = "http://127.0.0.1:9"\nbearer_token_file = "{tmp_path}/token"\n')
    (load_config(path).config_dir / "server2").unlink()
    result = CliRunner().invoke(main, ["--config", str(path), "--check-config", "--offline"])
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        f"{path}: valid; 3 servers (server1, server2, server3) (offline: files it names not checked); "
        f"{NOT_CHECKED_OFFLINE}\n"
    )


def test_check_config_offline_still_refuses_a_typo(make_config_file: Callable[..., Path]) -> None:
    path = make_config_file(extra="[health]\ntreshold = 0.3\n")
    result = CliRunner().invoke(main, ["--config", str(path), "--check-config", "--offline"])
    assert result.exit_code == 78
    assert result.stderr.endswith("health.treshold: unknown key (did you mean 'health.threshold'?)\n")


def test_offline_without_check_config_is_a_usage_error(make_config_file: Callable[..., Path]) -> None:
    path = make_config_file()
    result = CliRunner().invoke(main, ["--config", str(path), "--offline"])
    assert result.exit_code == 2
    assert "--offline only applies to --check-config" in result.stderr
    assert not load_config(path).active_link.exists()


def test_restoring_an_unchanged_state_writes_nothing(make_config_file: Callable[..., Path]) -> None:
    config = load_config(make_config_file())
    select_server(config, rng=random.Random(3))
    current = config.state_dir / "current"
    before = (current.stat().st_ino, current.stat().st_mtime_ns, config.active_link.lstat().st_ino)
    selection = select_server(config, rng=random.Random(4))
    assert selection.restored
    assert (current.stat().st_ino, current.stat().st_mtime_ns, config.active_link.lstat().st_ino) == before
