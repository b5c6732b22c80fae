"""--check-config exits 78 for every config that cannot work, listing each problem;
every command refuses directories and WireGuard configs that other users may write."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import write_wireguard_configs
from wgfailover.commands import wg_failover, wg_health_check, wg_select
from wgfailover.config import NOT_CHECKED_OFFLINE


def write_config(root: Path, top: dict[str, object] | None = None, extra: str = "") -> Path:
    """Given a directory, write a working installation's config (with overrides) and return its path."""
    write_wireguard_configs(root / "secrets", {"server1": "192.0.2.10", "server2": "192.0.2.20"})
    (root / "run").mkdir(exist_ok=True)
    settings: dict[str, object] = {
        "config_dir": str(root / "secrets"),
        "active_link": str(root / "run" / "wg-active.conf"),
        "state_dir": str(root / "state"),
        "textfile_dir": str(root / "run"),
        "restart_command": ["true"],
        **(top or {}),
    }
    text = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    text += '[servers.server1]\n[servers.server2]\n[prometheus]\nurl = "http://127.0.0.1:9"\n' + extra
    path = root / "config.toml"
    path.write_text(text)
    return path


def check(path: Path, command: Callable[..., object] = wg_select.main) -> Result:
    return CliRunner().invoke(command, ["--config", str(path), "--check-config"])  # type: ignore[arg-type]


def test_a_working_config_is_valid_and_says_what_it_did_not_check(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    result = check(path)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: valid; 2 servers (server1, server2); {NOT_CHECKED_OFFLINE}\n"
    assert "whether Prometheus answers" in NOT_CHECKED_OFFLINE


def test_the_summary_names_the_instance(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"instance": "wg1"})
    result = CliRunner().invoke(wg_select.main, ["--config", str(path), "--check-config"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{path}: valid; instance wg1; 2 servers (server1, server2)")


BROKEN: list[tuple[str, Callable[[Path], Path], str]] = [
    (
        "restart_timeout 300y",
        lambda root: write_config(root, {"restart_timeout": "300y"}),
        "restart_timeout: '300y' is longer than 10 years",
    ),
    (
        "prometheus.timeout 300y",
        lambda root: write_config(root, extra='timeout = "300y"\n'),
        "prometheus.timeout: '300y' is longer than 10 years",
    ),
    (
        "restart_timeout of days",
        lambda root: write_config(root, {"restart_timeout": "3d"}),
        "restart_timeout: '3d' is longer than a day; a command would wait that long",
    ),
    (
        "active_link inside config_dir",
        lambda root: write_config(root, {"active_link": str(root / "secrets" / "active.conf")}),
        "active_link: must not be inside config_dir ({root}/secrets)",
    ),
    (
        "config_dir equal to state_dir",
        lambda root: write_config(root, {"state_dir": str(root / "secrets")}),
        "state_dir: must not be config_dir ({root}/secrets) or inside it, nor contain it",
    ),
    (
        "unsendable header name",
        lambda root: write_config(root, extra='[prometheus.headers]\n"X Bad" = "v"\n'),
        "'X Bad' is not a valid HTTP header name",
    ),
    (
        "header value with a leading blank",
        lambda root: write_config(root, extra='[prometheus.headers]\nX-Api-Key = " secret"\n'),
        "the value of header 'X-Api-Key' cannot be sent",
    ),
    (
        "header value with a control character",
        lambda root: write_config(root, extra='[prometheus.headers]\nX-Api-Key = "a\\u0001b"\n'),
        "the value of header 'X-Api-Key' cannot be sent",
    ),
    (
        "header value beyond Latin-1",
        lambda root: write_config(root, extra='[prometheus.headers]\nX-Api-Key = "5\u20ac"\n'),
        "the value of header 'X-Api-Key' cannot be sent",
    ),
    (
        "no server config at all",
        lambda root: (
            write_config(root, {"config_dir": str(root / "empty")}) if (root / "empty").mkdir() is None else root
        ),
        "config_dir: no server has a WireGuard config in {root}/empty",
    ),
    (
        "missing directory of active_link",
        lambda root: write_config(root, {"active_link": str(root / "nowhere" / "wg.conf")}),
        "active_link: the directory {root}/nowhere does not exist",
    ),
    (
        "missing textfile_dir",
        lambda root: write_config(root, {"textfile_dir": str(root / "no-textfiles")}),
        "textfile_dir: the directory {root}/no-textfiles does not exist",
    ),
    (
        "restart_command not found",
        lambda root: write_config(root, {"restart_command": ["/nonexistent/systemctl", "restart"]}),
        "restart_command: program not found: /nonexistent/systemctl",
    ),
    (
        "failover_command not found",
        lambda root: write_config(root, extra='[health]\nfailover_command = ["no-such-program-wgf"]\n'),
        "health.failover_command: program not found: no-such-program-wgf",
    ),
    (
        "server config without Endpoint",
        lambda root: (write_config(root), (root / "secrets" / "server2").write_text("[Interface]\nPrivateKey = x\n"))[
            0
        ],
        "servers.server2: no usable 'Endpoint =' line for server 'server2'",
    ),
    (
        "health.selector not label matchers",
        lambda root: write_config(root, extra='[health]\nselector = "job=vpn-prober"\n'),
        "health.selector: 'job=vpn-prober' is not a list of PromQL label matchers",
    ),
    (
        "health.selector with braces",
        lambda root: write_config(root, extra='[health]\nselector = "{job=\\"vpn\\"}"\n'),
        "is not a list of PromQL label matchers",
    ),
]


@pytest.mark.parametrize(
    "make, problem", [(make, problem) for _, make, problem in BROKEN], ids=[n for n, _, _ in BROKEN]
)
def test_check_config_refuses_every_config_that_cannot_work(
    tmp_path: Path, make: Callable[[Path], Path], problem: str
) -> None:
    path = make(tmp_path)
    for command in (wg_select.main, wg_failover.main, wg_health_check.main):
        result = check(path, command)
        assert result.exit_code == 78, result.output
        assert problem.format(root=tmp_path) in result.stderr, result.stderr
        assert "valid;" not in result.stdout


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {"restart_timeout": "300y", "restart_command": ["/nonexistent/x"], "textfile_dir": str(tmp_path / "gone")},
        extra='[health]\nselector = "job"\n',
    )
    result = check(path)
    assert result.exit_code == 78
    assert "restart_timeout: '300y'" in result.stderr and "health.selector" in result.stderr
    # The file checks need a config that parses; they are listed once it does.
    path = write_config(tmp_path, {"restart_command": ["/nonexistent/x"], "textfile_dir": str(tmp_path / "gone")})
    result = check(path)
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 2, result.stderr


@pytest.mark.parametrize("selector", ['job="vpn-prober"', 'job="a", instance=~"b|c"', "job!='x',", 'a_b =~ `x"y`'])
def test_label_matcher_lists_are_accepted(tmp_path: Path, selector: str) -> None:
    path = write_config(tmp_path, extra=f"[health]\nselector = {json.dumps(selector)}\n")
    assert check(path).exit_code == 0


# --- who may write -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["state_dir", "config_dir", "wireguard config"])
def test_a_path_writable_by_other_users_is_refused_with_its_mode_and_nothing_is_touched(
    tmp_path: Path, which: str
) -> None:
    path = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    target = {"state_dir": tmp_path / "state", "config_dir": tmp_path / "secrets"}.get(
        which, tmp_path / "secrets" / "server1"
    )
    target.chmod(0o666 if target.is_file() else 0o777)
    mode = "0666" if target.is_file() else "0777"
    for command in (wg_select.main, wg_failover.main):
        result = CliRunner().invoke(command, ["--config", str(path)])
        assert result.exit_code == 78, result.output
        assert f"{target} is writable by other users (mode {mode}); chmod o-w it" in result.stderr
    assert list((tmp_path / "state").iterdir()) == []
    assert not (tmp_path / "run" / "wg-active.conf").exists()
    assert check(path).exit_code == 78


def test_a_group_writable_state_dir_is_a_warning(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(0o775)
    result = CliRunner().invoke(wg_select.main, ["--config", str(path)])
    assert result.exit_code == 0, result.output
    assert f"state_dir: {tmp_path / 'state'} is writable by its group (mode 0775)" in result.stderr
