"""A full disk or a read-only state directory: one clear line, exit 1, state intact.

The state directory, the link and the metrics file live on a real tmpfs
mounted by the test (root only; skipped otherwise): filled to the last
byte for the full-disk cases, remounted read-only for the others (root
ignores file modes, so chmod would prove nothing). Each of the three
commands must fail with exit 1 and one line naming the file it could not
write, and leave every file as it was, with no temp file behind.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.helpers import FakePrometheus, Install, check_state, run, serve, temp_files, write_install

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs under tmp_path, unmounted afterwards whatever happens."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    """A loss of 0.5, so every health check has a failure to count."""
    yield from serve(FakePrometheus(loss=0.5))


@pytest.fixture
def install(tmpfs: Path, prometheus: FakePrometheus) -> Install:
    """
    An installation wholly on the tmpfs with a state worth keeping: two
    switches (an hour ago, so health checks measure rather than wait for
    data), a counted failure and a last check.
    """
    installed = write_install(
        tmpfs,
        prometheus_url=prometheus.url,
        top='lock_timeout = "10s"',
        extra='[failover]\nhold_down = "0s"\n[health]\nmax_failures = 1000\nmin_window = "1s"\n',
    )
    assert run("wg-select", installed).returncode == 0
    assert run("wg-failover", installed, "--to", "server2").returncode == 0
    assert run("wg-failover", installed, "--to", "server3").returncode == 0
    history = installed.state_dir / "history.jsonl"
    records = [json.loads(line) for line in history.read_text().splitlines()]
    history.write_text("".join(json.dumps({**record, "time": record["time"] - 3600}) + "\n" for record in records))
    checked = run("wg-health-check", installed)
    assert checked.returncode == 0 and "count failure 1" in checked.stdout, checked.stdout + checked.stderr
    age_last_check(installed)
    assert check_state(installed) == []
    return installed


def age_last_check(install: Install, seconds: float = 3600) -> None:
    """Move the last check back in time, so the next check measures instead of waiting for new data."""
    path = install.state_dir / "last-check.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "time": record["time"] - seconds}) + "\n")


def fill(directory: Path) -> None:
    """Write into directory until not one more byte fits."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (64 * 1024, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(OSError) as caught:
        (directory / "probe").write_bytes(b"x")
    assert caught.value.errno == errno.ENOSPC
    (directory / "probe").unlink(missing_ok=True)


@pytest.fixture
def read_only(tmpfs: Path) -> Iterator[None]:
    """Remount the tmpfs read-only for the test (and back, so it can be unmounted cleanly)."""
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=False)


# wg-select restoring an unchanged state writes nothing (see below), so it
# fails only where it must change something.
COMMANDS = [
    ("wg-failover", ("--to", "server1")),
    ("wg-failover", ()),
    ("wg-health-check", ()),
]


def assert_one_line_error(command: str, result: subprocess.CompletedProcess[str], reason: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    [line] = errors
    assert line.startswith(f"{command}: error: ")
    assert reason in line, line
    return line


@pytest.mark.parametrize("command, args", COMMANDS)
def test_a_full_disk_is_one_line_exit_1_and_the_previous_state_stays(
    install: Install, tmpfs: Path, command: str, args: tuple[str, ...]
) -> None:
    before = install.snapshot()
    fill(tmpfs)
    result = run(command, install, *args)
    line = assert_one_line_error(command, result, "No space left on device")
    assert f"cannot write {install.state_dir}/" in line
    assert install.snapshot() == before
    assert temp_files(install.state_dir) == [] and temp_files(tmpfs) == []
    assert check_state(install) == []


@pytest.mark.parametrize("command, args", COMMANDS)
def test_a_read_only_state_dir_is_one_line_exit_1_and_the_previous_state_stays(
    install: Install, read_only: None, command: str, args: tuple[str, ...]
) -> None:
    before = install.snapshot()
    result = run(command, install, *args)
    line = assert_one_line_error(command, result, "Read-only file system")
    assert str(install.state_dir) in line
    assert install.snapshot() == before
    assert check_state(install) == []


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_wg_select_restores_an_unchanged_state_from_a_full_or_read_only_disk(
    install: Install, tmpfs: Path, disk: str
) -> None:
    before = install.snapshot()
    if disk == "full":
        fill(tmpfs)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        result = run("wg-select", install)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=False)
    # The boot goes on with the recorded server; only the metrics are stale.
    assert result.returncode == 0, result.stderr
    assert result.stdout == "server3\n"
    assert "Traceback" not in result.stderr and ": error: " not in result.stderr
    assert "the metrics are not updated" in result.stderr
    assert install.snapshot() == before
    assert check_state(install) == []


def test_wg_select_that_must_change_the_state_fails_in_one_line_on_a_full_disk(install: Install, tmpfs: Path) -> None:
    (install.state_dir / "current").write_text("server9\n")  # unknown: must be replaced
    before = install.snapshot()
    fill(tmpfs)
    result = run("wg-select", install)
    line = assert_one_line_error("wg-select", result, "No space left on device")
    assert f"cannot write {install.state_dir}/current" in line
    assert install.snapshot() == before


def test_after_the_disk_is_freed_the_next_run_succeeds(install: Install, tmpfs: Path) -> None:
    fill(tmpfs)
    assert run("wg-failover", install, "--to", "server1").returncode == 1
    (tmpfs / "filler").unlink()
    result = run("wg-failover", install, "--to", "server1")
    assert result.returncode == 0, result.stderr
    assert install.read("current") == b"server1\n"
    assert check_state(install, chain=True) == []


PAGE = os.sysconf("SC_PAGE_SIZE")


def leave_free(directory: Path, pages: int) -> None:
    """Fill directory's filesystem, then free exactly this many pages (tmpfs counts whole pages)."""
    fill(directory)
    filler = directory / "filler"
    allocated = -(-filler.stat().st_size // PAGE)
    os.truncate(filler, max(0, allocated - pages) * PAGE)


def restore(install: Install, snapshot: dict[str, object]) -> None:
    """Put back the state files, link and metrics of a snapshot (taken by Install.snapshot)."""
    for name, content in snapshot["state"].items():  # type: ignore[attr-defined]
        path = install.state_dir / name
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(content)
    install.link.unlink(missing_ok=True)
    install.link.symlink_to(snapshot["link"])  # type: ignore[arg-type]
    install.textfile.write_bytes(snapshot["metrics"])  # type: ignore[arg-type]


def test_a_switch_on_a_nearly_full_disk_leaves_the_whole_old_state_or_the_whole_new_one(
    install: Install, tmpfs: Path, tmp_path: Path
) -> None:
    # The restart records itself outside the tmpfs, so it can always run.
    restarts = tmp_path / "restarts"
    text = install.config.read_text().replace(
        'restart_command = ["true"]', f'restart_command = ["sh", "-c", "echo >> {restarts}"]'
    )
    install.config.write_text(text)
    # A history of several pages: rewriting it needs more room than the
    # `current` it follows frees (the "one free page" case).
    history = install.state_dir / "history.jsonl"
    records = []
    for seq in range(1, 61):
        to_server = "server3" if seq % 2 == 0 else "server2"
        records.append(
            {
                "seq": seq,
                "time": time.time() - 7200 + seq,
                "from": "server2" if to_server == "server3" else "server3",
                "to": to_server,
                "reason": "padding a history of several pages",
                "losses": {name: 0.25 for name in install.servers},
            }
        )
    history.write_text("".join(json.dumps(record) + "\n" for record in records))
    before = install.snapshot()
    old_seq = install.history()[-1].seq
    outcomes = []
    # From no free page to enough for every file of the switch: each write
    # of the sequence (current, link, history, counter, metrics) fails once.
    for pages in range(14):
        restore(install, before)
        restarts.unlink(missing_ok=True)
        leave_free(tmpfs, pages)
        result = run("wg-failover", install, "--to", "server1")
        (tmpfs / "filler").unlink()
        ran = restarts.exists()
        if result.returncode == 0:
            outcomes.append("new")
            assert install.read("current") == b"server1\n"
            assert os.readlink(install.link) == str(install.config_dir / "server1")
            last = install.history()[-1]
            assert (last.seq, last.from_server, last.to_server) == (old_seq + 1, "server3", "server1")
            assert install.read("health-failures") == b"0\n"
            assert ran, "restart_command did not run"
        else:
            outcomes.append("old")
            assert_one_line_error("wg-failover", result, "No space left on device")
            snapshot = install.snapshot()
            assert snapshot == before, f"{pages} free pages: {snapshot} != {before}"
            assert not ran, "restart_command ran although the switch failed"
        assert temp_files(install.state_dir) == [] and temp_files(tmpfs) == [], pages
        assert check_state(install) == [], pages
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes
