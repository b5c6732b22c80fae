"""The state directory: the original's file formats, atomic writes, one lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgfailover.errors import ExitCode, LockBusyError, StateError
from wgfailover.state import PENDING_REASON_FILE, CheckRecord, StateDir, pending_reason

KNOWN = ["server1", "server2"]


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state")


def test_current_is_the_name_and_a_newline_as_in_the_original(state: StateDir) -> None:
    state.ensure()
    state.write_current("server2")
    assert (state.path / "current").read_bytes() == b"server2\n"
    assert state.read_current(KNOWN).name == "server2"


def test_a_current_file_written_by_the_original_is_read(state: StateDir) -> None:
    state.ensure()
    (state.path / "current").write_text("server1\n")  # echo "$CURRENT" > file
    assert state.read_current(KNOWN).name == "server1"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"\xff\xfe\x00\x01", "holds binary data, not a server name"),
        (b"serv\x00er1", "holds binary data, not a server name"),
        (b"../../etc/passwd\n", "holds a path ('../../etc/passwd'), not a server name"),
        (b"/etc/passwd", "holds a path ('/etc/passwd'), not a server name"),
        (b"..", "holds a path ('..'), not a server name"),
        (b"server9\n", "names 'server9', which is not a configured server"),
        (b"server1\nserver2\n", "holds 'server1\\nserver2', which is not a server name"),
    ],
)
def test_an_unusable_current_file_is_reported_not_followed(state: StateDir, content: bytes, problem: str) -> None:
    state.ensure()
    (state.path / "current").write_bytes(content)
    current = state.read_current(KNOWN)
    assert current.name is None
    assert current.problem == f"{state.path / 'current'} {problem}"
    assert not current.first_boot


def test_a_missing_current_file_is_a_first_boot(state: StateDir) -> None:
    current = state.read_current(KNOWN)
    assert current.name is None and current.first_boot


@pytest.mark.parametrize(("content", "count"), [("2\n", 2), ("0", 0), ("", 0), ("abc", 0), ("-1", 0)])
def test_the_failure_counter_reads_the_original_format_and_survives_garbage(
    state: StateDir, content: str, count: int
) -> None:
    state.ensure()
    (state.path / "health-failures").write_text(content)
    assert state.read_failures() == count


def test_history_appends_with_increasing_sequence_and_keeps_losses(state: StateDir) -> None:
    state.ensure()
    state.append_history(time=10.0, from_server=None, to_server="server1", reason="first", losses={})
    state.append_history(
        time=20.0, from_server="server1", to_server="server2", reason="failover", losses={"server2": 0.1, "x": None}
    )
    history = state.read_history()
    assert [(r.seq, r.from_server, r.to_server, r.reason) for r in history] == [
        (1, None, "server1", "first"),
        (2, "server1", "server2", "failover"),
    ]
    assert history[1].losses == {"server2": 0.1, "x": None}
    assert state.last_switch() == history[1]
    for line in (state.path / "history.jsonl").read_text().splitlines():
        json.loads(line)


def test_a_corrupt_history_line_is_skipped_not_fatal(state: StateDir) -> None:
    state.ensure()
    state.append_history(time=1.0, from_server=None, to_server="server1", reason="r")
    with open(state.path / "history.jsonl", "a") as history:
        history.write('{"seq": 2, "time": \n')
    assert [r.seq for r in state.read_history()] == [1]


def test_history_is_bounded_but_the_switch_count_keeps_counting(
    state: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wgfailover.state.MAX_HISTORY", 3)
    state.ensure()
    for number in range(5):
        state.append_history(time=float(number), from_server=None, to_server="server1", reason="r")
    assert [r.seq for r in state.read_history()] == [3, 4, 5]


def test_last_check_round_trips_and_garbage_means_no_previous_check(state: StateDir) -> None:
    state.ensure()
    state.write_last_check(CheckRecord(time=100.0, loss=0.25, span=60.0))
    assert state.read_last_check() == CheckRecord(time=100.0, loss=0.25, span=60.0)
    state.write_last_check(CheckRecord(time=101.0, loss=float("nan"), span=None))
    assert state.read_last_check() == CheckRecord(time=101.0, loss=None, span=None)
    (state.path / "last-check.json").write_text("{not json")
    assert state.read_last_check() is None


@pytest.fixture
def full_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real, tiny tmpfs: a full disk for the write path (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_full_disk_keeps_the_previous_state_and_leaves_no_temp_file(full_filesystem: Path) -> None:
    state = StateDir(full_filesystem / "state")
    state.ensure()
    state.write_current("server1")
    filler = full_filesystem / "filler"
    try:
        with open(filler, "wb") as out:
            while True:
                out.write(b"x" * 4096)
                out.flush()
    except OSError:
        pass  # the disk is full now
    with pytest.raises(StateError) as caught:
        state.append_history(time=1.0, from_server="server1", to_server="server2", reason="r", losses={"a": 0.5})
        state.write_current("server2")
    assert "No space left on device" in str(caught.value)
    assert (state.path / "current").read_text() == "server1\n"
    assert sorted(p.name for p in state.path.iterdir()) == ["current"]


_COUNTER_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from wgfailover.state import StateDir
    state = StateDir(Path(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        with state.locked(timeout=60):
            count = state.read_failures()
            time.sleep(0.002)  # widen the read-modify-write race the lock must close
            state.write_failures(count + 1)
    """
)


def test_the_lock_serialises_read_modify_write_across_processes(state: StateDir) -> None:
    state.ensure()
    rounds = 40
    workers = [
        subprocess.Popen([sys.executable, "-c", _COUNTER_WORKER, str(state.path), str(rounds)]) for _ in range(3)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0]
    assert state.read_failures() == 3 * rounds


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from wgfailover.state import StateDir
    with StateDir(Path(sys.argv[1])).locked(timeout=5):
        Path(sys.argv[2]).write_text("held")
        sys.stdin.read()  # hold until the test closes our stdin
    """
)


def test_a_lock_held_past_the_bound_gives_up_with_exit_75(state: StateDir, tmp_path: Path) -> None:
    marker = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(state.path), str(marker)], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.02)
        with pytest.raises(LockBusyError) as caught, state.locked(timeout=0.3):
            pass
        assert caught.value.exit_code == ExitCode.TEMPFAIL == 75
        assert "held" in str(caught.value) and str(state.path / "lock") in str(caught.value)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    with state.locked(timeout=5):
        pass  # released when the holder exited


def test_a_current_that_is_a_symlink_is_not_followed(state: StateDir, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret:20228:0:99999:7:::\n")
    state.ensure()
    (state.path / "current").symlink_to(secret)
    current = state.read_current(KNOWN)
    assert current.name is None
    assert current.problem == f"{state.path / 'current'} is a symlink, not a file"
    assert not state.holds_current("server1")


# --- the reason a health check leaves for the failover it starts --------------

NOW = 1_700_000_000.0


def pending(reason: object = "health-check: loss 0.42 > 0.15 for 3 checks", written: object = NOW - 10) -> str:
    return json.dumps({"reason": reason, "time": written, "valid_for": 95})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (pending(), "health-check: loss 0.42 > 0.15 for 3 checks"),
        (pending(written=NOW), "health-check: loss 0.42 > 0.15 for 3 checks"),
        (pending(written=NOW - 95), "health-check: loss 0.42 > 0.15 for 3 checks"),
        (pending(written=NOW - 96), None),  # older than the failover may take: a leftover
        (pending(written=NOW + 1), None),  # from the future: the clock moved
        (pending(written="NaN"), None),
        (pending(written=None), None),
        (pending(reason=""), None),
        (pending(reason="   "), None),
        (pending(reason=7), None),
        (pending(reason="x" * 201), None),
        (pending(reason="two\nlines"), None),
        (json.dumps({"reason": "r", "time": NOW}), None),
        ("[]", None),
        ("", None),
        ("\x89PNG", None),
    ],
)
def test_a_pending_reason_is_taken_only_when_well_formed_and_fresh(text: str, expected: str | None) -> None:
    assert pending_reason(text, NOW) == expected


def test_a_pending_reason_is_taken_once(state: StateDir) -> None:
    state.ensure()
    state.write_pending_reason("health-check: loss 0.5 > 0.15 for 1 check", NOW, 95)
    assert oct(state.file(PENDING_REASON_FILE).stat().st_mode & 0o777) == "0o600"
    assert state.claim_pending_reason(NOW + 5) == "health-check: loss 0.5 > 0.15 for 1 check"
    assert state.claim_pending_reason(NOW + 5) is None
    assert [name for name in os.listdir(state.path) if "pending" in name] == []


def test_a_stale_pending_reason_is_dropped_not_taken(state: StateDir, caplog: pytest.LogCaptureFixture) -> None:
    state.ensure()
    state.write_pending_reason("health-check: loss 0.5 > 0.15 for 1 check", NOW, 95)
    assert state.claim_pending_reason(NOW + 600) is None
    assert not state.file(PENDING_REASON_FILE).exists()
    assert "stale or malformed; ignored" in caplog.text


def test_an_unwritable_pending_reason_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = StateDir(tmp_path / "missing")
    state.write_pending_reason("health-check: loss 0.5 > 0.15 for 1 check", NOW, 95)
    assert "the failover will record its own reason" in caplog.text
    state.discard_pending_reason()  # nothing to discard: no error either


def test_the_record_returned_is_the_one_stored_rounded(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    record = state.append_history(
        time=1_800_000_000.123456, from_server="a", to_server="b", reason="r", losses={"a": 1 - 0.55, "b": None}
    )
    assert record == state.read_history()[-1]
    assert (record.time, record.losses) == (1_800_000_000.123, {"a": 0.45, "b": None})
