"""State and configuration files that are not what they should be.

Every field of a state file is validated, so one bad value (a NaN loss) is
logged once and treated as absent instead of switching health checking off
for good. Every state file is opened without following symlinks and must be
a regular file of bounded size, so a FIFO cannot hang a command that holds
the lock, a `lock` symlink cannot make root create its target, and a
history pointing at /dev/zero cannot exhaust memory. Configs, WireGuard
configs and secrets may be symlinks (NixOS and sops-nix make them so), but
must also be regular files within a size bound.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.helpers import SERVERS, FakePrometheus, Install, check_state, run, serve, write_install

# A command stuck on a FIFO would wait for a writer forever; this is far
# beyond a normal run and still short for a test.
STUCK = 20


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    yield from serve(FakePrometheus(loss=0.5))


def counting_install(root: Path, url: str) -> Install:
    """An installation whose health checks count failures (loss 0.5 > 0.15) and never fail over."""
    install = write_install(root, prometheus_url=url, extra='[health]\nmax_failures = 1000\nmin_window = "1s"\n')
    assert run("wg-select", install).returncode == 0
    return install


def age_last_check(install: Install, seconds: float = 3600) -> None:
    path = install.state_dir / "last-check.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "time": record["time"] - seconds}) + "\n")


# --- fields of the last check ------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        '"loss": "nan"',
        '"loss": NaN',
        '"span": "nan"',
        '"span": NaN',
        '"loss": 7',
        '"span": -5',
        '"loss": "0.5"',
    ],
)
def test_a_bad_field_in_the_last_check_is_logged_once_and_does_not_switch_health_checking_off(
    tmp_path: Path, prometheus: FakePrometheus, bad: str
) -> None:
    install = counting_install(tmp_path, prometheus.url)
    (install.state_dir / "last-check.json").write_text(f'{{"time": {time.time() - 3600}, {bad}}}\n')
    first = run("wg-health-check", install)
    assert first.returncode == 0, first.stderr
    assert "count failure 1 of 1000" in first.stdout, first.stdout + first.stderr
    complaints = [line for line in first.stderr.splitlines() if "last-check.json" in line]
    assert len(complaints) == 1, first.stderr
    assert "not a check record" in complaints[0]
    # The record was rewritten, valid: the next check counts again, silently.
    age_last_check(install)
    second = run("wg-health-check", install)
    assert "count failure 2 of 1000" in second.stdout, second.stdout + second.stderr
    assert "last-check.json" not in second.stderr
    assert install.read("health-failures") == b"2\n"
    assert check_state(install) == []


def test_a_switch_recorded_in_the_future_does_not_bypass_the_too_soon_rule(tmp_path: Path) -> None:
    for fake in serve(FakePrometheus(loss=0.9)):
        install = write_install(
            tmp_path, prometheus_url=fake.url, extra='[health]\nmax_failures = 3\nmin_window = "30s"\n'
        )
        assert run("wg-select", install).returncode == 0
        assert run("wg-failover", install, "--to", others(install)[0]).returncode == 0
        age_history(install, -3600)  # the clock was stepped back an hour since the switch
        results = [run("wg-health-check", install) for _ in range(3)]
        assert all(result.returncode == 0 for result in results), [result.stderr for result in results]
        assert "count failure 1 of 3" in results[0].stdout, results[0].stdout + results[0].stderr
        for later in results[1:]:
            assert "too soon after the last check" in later.stdout, later.stdout
        assert install.read("health-failures") == b"1\n"
        assert len(install.history()) == 1  # no failover


def loss_by_host(losses: dict[str, float]) -> Callable[[str], tuple[int, dict[str, str], bytes]]:
    """An answer to the failover query: each endpoint's loss, tagged as the query tags it."""
    result = [
        {"metric": {"host": SERVERS[name], "wgf_metric": "loss"}, "value": [0, str(loss)]}
        for name, loss in losses.items()
    ]
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
    return lambda query: (200, {"Content-Type": "application/json"}, body)


def test_garbage_current_with_a_valid_link_is_the_linked_server_for_wg_failover(tmp_path: Path) -> None:
    # server2, the server the link points at, has the least loss: taken for
    # "none", it would be the best candidate of its own failover.
    fake = FakePrometheus(answer=loss_by_host({"server1": 0.5, "server2": 0.0, "server3": 0.4, "server4": 0.5}))
    for server in serve(fake):
        # No hold-down: wg-select's random first pick, left by --to, would
        # otherwise be excluded, and when that is server3 the best is a tie.
        install = write_install(tmp_path, prometheus_url=server.url, extra='[failover]\nhold_down = "0s"\n')
        assert run("wg-select", install).returncode == 0
        assert run("wg-failover", install, "--to", "server2").returncode in (0, 3)  # 3: already on it
        (install.state_dir / "current").write_bytes(b"\x00garbage\n")
        result = run("wg-failover", install)
        assert result.returncode == 0, result.stderr
        assert f"{install.link} points at server2, so that is the current server" in result.stderr
        last = install.history()[-1]
        assert (last.from_server, last.to_server) == ("server2", "server3")
        assert install.read("current") == b"server3\n"


def test_garbage_current_with_a_valid_link_is_restored_by_wg_select(tmp_path: Path) -> None:
    install = write_install(tmp_path)
    assert run("wg-select", install).returncode == 0
    target = others(install)[0]
    assert run("wg-failover", install, "--to", target).returncode == 0
    for _ in range(8):  # a random pick would miss the linked server at least once
        (install.state_dir / "current").write_text("no-such-server\n")
        result = run("wg-select", install)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{target}\n"
        assert install.read("current") == f"{target}\n".encode()


# --- files that are not regular files ----------------------------------------------


def make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def make_zero_link(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize("name", ["current", "health-failures", "history.jsonl", "last-check.json"])
@pytest.mark.parametrize("make", [make_fifo, make_zero_link], ids=["fifo", "link-to-dev-zero"])
def test_a_state_file_that_is_not_a_regular_file_is_replaced_without_hanging(
    tmp_path: Path, prometheus: FakePrometheus, name: str, make: object
) -> None:
    install = counting_install(tmp_path, prometheus.url)
    first, last = [name for name in install.servers if f"{name}\n".encode() != install.read("current")][:2]
    assert run("wg-failover", install, "--to", first).returncode == 0
    age_history(install)  # so the health check measures, and rewrites what it reads
    make(install.state_dir / name)  # type: ignore[operator]
    said = ""
    for command, args in [("wg-health-check", ()), ("wg-failover", ("--to", last)), ("wg-select", ())]:
        result = run(command, install, *args, timeout=STUCK)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        said += result.stderr
    kind = "a FIFO, not a regular file" if make is make_fifo else "a symlink, not a file"
    assert f"{install.state_dir / name} is {kind}" in said, said
    assert not (install.state_dir / name).is_symlink()
    assert install.read("current") == f"{last}\n".encode()
    assert check_state(install) == []


def age_history(install: Install, seconds: float = 3600) -> None:
    path = install.state_dir / "history.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**record, "time": record["time"] - seconds}) + "\n" for record in records))


@pytest.mark.parametrize("make", ["symlink", "fifo"])
def test_a_lock_that_is_not_a_regular_file_is_refused_and_its_target_never_created(tmp_path: Path, make: str) -> None:
    install = write_install(tmp_path)
    assert run("wg-select", install).returncode == 0
    lock = install.state_dir / "lock"
    target = tmp_path / "created-by-root"
    lock.unlink()
    if make == "symlink":
        lock.symlink_to(target)
    else:
        os.mkfifo(lock)
    before = install.snapshot()
    result = run("wg-failover", install, "--to", "server2", timeout=STUCK)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    expected = "is a symlink, not a file; remove it" if make == "symlink" else "is not a regular file; remove it"
    assert line == f"wg-failover: error: {lock} {expected}"
    assert not target.exists()
    assert install.snapshot() == before


def test_two_hundred_thousand_garbage_history_lines_are_one_warning_with_a_count(tmp_path: Path) -> None:
    install = write_install(tmp_path)
    assert run("wg-select", install).returncode == 0
    assert run("wg-failover", install, "--to", others(install)[0]).returncode == 0
    history = install.state_dir / "history.jsonl"
    good = history.read_text()
    history.write_text("x\n" * 100_000 + good + "{}\n" * 100_000)
    result = run("wg-failover", install, "--to", others(install)[0])
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "history.jsonl" in line]
    assert warnings == [
        f"wg-failover: warning: {history}: 200000 lines (first: line 1) are not switch records; "
        "ignored (the next switch drops them)"
    ]
    # The good record kept its place: the switch continues its seqs.
    assert [record.seq for record in install.history()] == [1, 2]
    assert check_state(install, chain=True) == []


# --- size bounds ----------------------------------------------------------------------


def others(install: Install) -> list[str]:
    """The configured servers other than the current one."""
    return [name for name in install.servers if f"{name}\n".encode() != install.read("current")]


def test_a_history_beyond_its_size_bound_is_read_from_its_end(tmp_path: Path) -> None:
    install = write_install(tmp_path)
    assert run("wg-select", install).returncode == 0
    assert run("wg-failover", install, "--to", others(install)[0]).returncode == 0
    history = install.state_dir / "history.jsonl"
    good = history.read_text()
    history.write_text(" " * (8 * 1024 * 1024) + "\n" + good)
    result = run("wg-failover", install, "--to", others(install)[0])
    assert result.returncode == 0, result.stderr
    assert "only its end is read" in result.stderr
    assert [record.seq for record in install.history()] == [1, 2]


def test_oversized_config_secret_and_wireguard_config_are_refused_not_read(
    tmp_path: Path, prometheus: FakePrometheus
) -> None:
    install = counting_install(tmp_path, prometheus.url)
    token = tmp_path / "token"
    token.write_text("t" * (128 * 1024))
    token.chmod(0o600)
    text = install.config.read_text().replace("timeout = 10\n", f'timeout = 10\nbearer_token_file = "{token}"\n', 1)
    install.config.write_text(text)
    health = run("wg-health-check", install)
    assert health.returncode == 78, health.stderr
    assert f"{token}: prometheus.bearer_token_file: cannot read: it is larger than 65536 bytes" in health.stderr

    wireguard = install.config_dir / "server4"
    wireguard.write_text("# padding\n" * 200_000)
    install.config.write_text(text.replace(f'bearer_token_file = "{token}"\n', ""))
    dry = run("wg-failover", install, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{wireguard}: cannot read the WireGuard config of server 'server4'" in dry.stderr
    assert "it is larger than 1048576 bytes" in dry.stderr

    install.config.write_text(install.config.read_text() + "#" * (2 * 1024 * 1024) + "\n")
    checked = run("wg-select", install, "--check-config")
    assert checked.returncode == 78
    assert checked.stderr.strip() == (
        f"wg-select: error: {install.config}: cannot read: it is larger than 1048576 bytes"
    )


def test_a_wireguard_config_linked_to_a_device_is_refused_without_hanging(tmp_path: Path) -> None:
    install = write_install(tmp_path)
    wireguard = install.config_dir / "server4"
    wireguard.unlink()
    wireguard.symlink_to("/dev/zero")
    # Every command reads each server's config for the metrics' endpoints;
    # wg-failover also to ask Prometheus about it.
    for command, args in [("wg-select", ()), ("wg-failover", ("--dry-run",)), ("wg-failover", ("--to", "server4"))]:
        result = run(command, install, *args, timeout=STUCK)
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        assert result.returncode == (1 if "--to" in args else 0), result.stderr
    assert f"its WireGuard config {wireguard} does not exist" in result.stderr
