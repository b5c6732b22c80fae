"""The state directory: what survives between the oneshot commands.

Layout (the first two are the original scripts' files, same format, so
existing installs and scripts keep working):

- ``current``: the active server's name and a newline.
- ``health-failures``: consecutive failed health checks, a number and a newline.
- ``history.jsonl``: one JSON object per switch (time, from, to, reason, losses).
- ``last-check.json``: when the last health check ran and what it measured
  (and the local fault it saw, if any).
- ``all-failed.json``: present while every server has failed its probation
  in one episode: when, which servers and why, where the tunnel stayed.
- ``lock``: flock(2) target that serialises every read-modify-write.
- ``pending-reason.json``: why a health check is starting the failover
  through ``health.failover_command``, for that failover to record (see
  ``pending_reason``).

Every write goes through fsutil.atomic_write, so a crash leaves either the
old or the new file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import math
import os
import stat
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from wgfailover.errors import LockBusyError, StateError
from wgfailover.fsutil import RefusedFile, atomic_write, read_regular_file, remove_stale_temps
from wgfailover.servers import is_safe_server_name

log = logging.getLogger(__name__)

CURRENT_FILE = "current"
FAILURES_FILE = "health-failures"
HISTORY_FILE = "history.jsonl"
LAST_CHECK_FILE = "last-check.json"
ALL_FAILED_FILE = "all-failed.json"
LOCK_FILE = "lock"
PENDING_REASON_FILE = "pending-reason.json"
# A reason is a short line for the history and the metrics' labels.
MAX_REASON_LENGTH = 200

# Enough for months of switches; older entries are dropped on the next write.
MAX_HISTORY = 1000
# Size bounds of what is read back: far above what we write (a history line
# is a few hundred bytes with dozens of servers), far below what would cost
# a oneshot noticeable memory or time. A longer history is read from its end.
_MAX_CURRENT_BYTES = 4096
_MAX_FAILURES_BYTES = 64
_MAX_HISTORY_BYTES = 4 * 1024 * 1024
_MAX_RECORD_BYTES = 64 * 1024
_LOCK_POLL_SECONDS = 0.05


@dataclasses.dataclass(frozen=True)
class SwitchRecord:
    """One switch of the active server, as kept in the history."""

    seq: int  # 1 for the first switch ever; survives history truncation
    time: float  # unix seconds
    from_server: str | None
    to_server: str
    reason: str
    losses: dict[str, float | None] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": _round_time(self.time),
            "from": self.from_server,
            "to": self.to_server,
            "reason": self.reason,
            "losses": {name: _rounded(loss) for name, loss in self.losses.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> SwitchRecord:
        """
        Given a decoded history line, return the record. Raise ValueError if
        any field is missing, of another type or out of range: a record is
        trusted whole or not at all.
        """
        if not isinstance(data, dict):
            raise ValueError("not an object")
        seq = data.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("seq is not a whole number from 1")
        from_server = data.get("from")
        if from_server is not None and not _is_server_name(from_server):
            raise ValueError("from is not a server name")
        to_server = data.get("to")
        if not isinstance(to_server, str) or not is_safe_server_name(to_server):
            raise ValueError("to is not a server name")
        reason = data.get("reason", "")
        if not isinstance(reason, str):
            raise ValueError("reason is not a string")
        losses = data.get("losses") or {}
        if not isinstance(losses, dict) or not all(
            isinstance(name, str) and (loss is None or _is_ratio(loss)) for name, loss in losses.items()
        ):
            raise ValueError("losses is not a map of names to ratios")
        return cls(
            seq=seq,
            # NaN or Infinity would make every later comparison with the clock false.
            time=_timestamp(data.get("time")),
            from_server=from_server,
            to_server=to_server,
            reason=reason,
            losses={name: (float(loss) if loss is not None else None) for name, loss in losses.items()},
        )


@dataclasses.dataclass(frozen=True)
class CheckRecord:
    """What the last health check measured."""

    time: float  # unix seconds
    loss: float | None  # None: no data
    span: float | None = None  # seconds of data judged
    local_fault: str | None = None  # the local fault the check saw ("local fault: every server ..."), if any


@dataclasses.dataclass(frozen=True)
class AllFailedRecord:
    """Every server switched to in one episode failed its probation."""

    time: float  # unix seconds of the verdict
    failed: dict[str, str]  # server -> why it failed, in the order tried
    stayed_on: str | None  # the server the tunnel was left on


@dataclasses.dataclass(frozen=True)
class CurrentServer:
    """The state file's verdict: a usable name, or why there is none."""

    name: str | None
    problem: str | None = None
    first_boot: bool = False  # no state file at all: nothing is wrong


def _is_number(value: object) -> bool:
    # A JSON number; "nan" as a string, or true, is none.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_ratio(value: object) -> bool:
    return _is_number(value) and 0 <= value <= 1  # type: ignore[operator]


def _is_server_name(value: object) -> bool:
    return isinstance(value, str) and is_safe_server_name(value)


def _timestamp(value: object) -> float:
    """Given a decoded field, return it as unix seconds. Raise ValueError unless it is a finite number from 0."""
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise ValueError("time is not a finite unix time")
    return float(value)  # type: ignore[arg-type]


def parse_check_record(data: Any) -> CheckRecord:
    """
    Given the decoded last-check.json, return the record. Raise ValueError
    unless time is a finite unix time, loss absent, null or a ratio in
    [0, 1], and span absent, null or a positive number of seconds. A NaN
    loss would make the record unequal to itself, and the health check,
    which compares it before and after measuring, would never count again.
    """
    if not isinstance(data, dict):
        raise ValueError("not an object")
    loss = data.get("loss")
    if loss is not None and not _is_ratio(loss):
        raise ValueError("loss is not a ratio between 0 and 1")
    span = data.get("span")
    if span is not None and not (_is_number(span) and span > 0):
        raise ValueError("span is not a positive number of seconds")
    local_fault = data.get("local_fault")
    if local_fault is not None and not isinstance(local_fault, str):
        raise ValueError("local_fault is not a string")
    return CheckRecord(
        time=_timestamp(data.get("time")),
        loss=float(loss) if loss is not None else None,
        span=float(span) if span is not None else None,
        local_fault=local_fault,
    )


def _why(error: OSError) -> str:
    """Given why a state file could not be read, return it as the rest of a sentence after its path."""
    return str(error.strerror) if isinstance(error, RefusedFile) else f"cannot be read ({error.strerror})"


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# Six decimals, as prometheus.round_measured (imported there would pull in
# requests, which wg-select never needs).
def _rounded(value: float | None) -> float | None:
    finite = _finite_or_none(value)
    return round(finite, 6) if finite is not None else None


def _round_time(when: float) -> float:
    # Milliseconds: what a reader of the history can use; no float noise.
    return round(when, 3)


class StateDir:
    """The state directory of one installation."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        # A bad file is read several times per command; it is reported once.
        self._reported: set[str] = set()

    def _warn_once(self, message: str, *args: object) -> None:
        text = message % args
        if text not in self._reported:
            self._reported.add(text)
            log.warning("%s", text)

    def file(self, name: str) -> Path:
        return self.path / name

    def ensure(self) -> None:
        """Create the directory if needed. Raise StateError if impossible."""
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as error:
            raise StateError(f"cannot create state directory {self.path}: {error.strerror}") from None

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """
        Hold the state lock for the duration of the block, waiting at most
        timeout seconds. Raise LockBusyError if another process keeps it.
        """
        self.ensure()
        lock_path = self.file(LOCK_FILE)
        # Never through a symlink: root following a planted `lock` link would
        # create (or lock) whatever file it names. O_NONBLOCK: a FIFO opens at once.
        flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | flags, 0o644)
        except OSError as error:
            try:
                # flock needs no write access: on a read-only state dir an
                # existing lock file still serialises the readers, so
                # wg-select can restore an unchanged state at boot.
                fd = os.open(lock_path, os.O_RDONLY | flags)
            except OSError:
                if error.errno == errno.ELOOP:
                    raise StateError(f"{lock_path} is a symlink, not a file; remove it") from None
                raise StateError(f"cannot open lock file {lock_path}: {error.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StateError(f"{lock_path} is not a regular file; remove it")
        try:
            deadline = self._clock() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EAGAIN, errno.EACCES):
                        raise StateError(f"cannot lock {lock_path}: {error.strerror}") from None
                if self._clock() >= deadline:
                    raise LockBusyError(
                        f"another wg-failover command has held {lock_path} for over {timeout:g}s; giving up"
                    )
                time.sleep(_LOCK_POLL_SECONDS)
            for name in (CURRENT_FILE, FAILURES_FILE, HISTORY_FILE, LAST_CHECK_FILE, ALL_FAILED_FILE):
                remove_stale_temps(self.file(name))
            yield
        finally:
            os.close(fd)  # closing drops the flock

    # --- current ------------------------------------------------------------

    def read_current(self, known: Collection[str]) -> CurrentServer:
        """
        Given the configured server names, return the server recorded in
        ``current`` if it is one of them, else None with the reason (missing,
        empty, binary, a path, or an unknown name). Never raises for content.
        """
        path = self.file(CURRENT_FILE)
        try:
            raw = self._read_current_bytes()
        except FileNotFoundError:
            return CurrentServer(None, f"{path} does not exist (first boot)", first_boot=True)
        except OSError as error:
            return CurrentServer(None, f"{path} {_why(error)}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return CurrentServer(None, f"{path} holds binary data, not a server name")
        name = text.strip()
        if not name:
            return CurrentServer(None, f"{path} is empty")
        if "\x00" in name or not name.replace("\n", "").isprintable():
            return CurrentServer(None, f"{path} holds binary data, not a server name")
        if "/" in name or name in (".", ".."):
            return CurrentServer(None, f"{path} holds a path ({name!r}), not a server name")
        if not is_safe_server_name(name):
            return CurrentServer(None, f"{path} holds {name[:80]!r}, which is not a server name")
        if name not in known:
            return CurrentServer(None, f"{path} names {name!r}, which is not a configured server")
        return CurrentServer(name)

    def _read_current_bytes(self) -> bytes:
        # Never through a symlink: a planted link to /etc/shadow would
        # otherwise have its first line quoted in the log.
        return read_regular_file(self.file(CURRENT_FILE), _MAX_CURRENT_BYTES)

    def holds_current(self, name: str) -> bool:
        """Return whether ``current`` is a file holding exactly name and a newline."""
        try:
            return self._read_current_bytes() == f"{name}\n".encode()
        except OSError:
            return False

    def write_current(self, name: str) -> None:
        """Record the active server (name and a newline, as the original)."""
        atomic_write(self.file(CURRENT_FILE), f"{name}\n".encode())

    # --- health-failures ----------------------------------------------------

    def read_failures(self) -> int:
        """Return the consecutive-failure count; 0 if missing or unreadable (logged)."""
        path = self.file(FAILURES_FILE)
        try:
            text = read_regular_file(path, _MAX_FAILURES_BYTES).decode("utf-8").strip()
        except FileNotFoundError:
            return 0
        except OSError as error:
            self._warn_once("%s %s; counting from 0", path, _why(error))
            return 0
        except UnicodeDecodeError:
            self._warn_once("%s is not text; counting from 0", path)
            return 0
        if not text:
            return 0
        # isdigit() alone takes "²", which int() refuses; a count never needs 19 digits.
        if not (text.isascii() and text.isdigit() and len(text) < 19):
            self._warn_once("%s holds %r, not a count; counting from 0", path, text[:40])
            return 0
        return int(text)

    def write_failures(self, count: int) -> None:
        atomic_write(self.file(FAILURES_FILE), f"{count}\n".encode())

    # --- history ------------------------------------------------------------

    def read_history(self) -> list[SwitchRecord]:
        """
        Return the recorded switches, oldest first. Malformed lines are
        skipped and counted in one warning; of a history larger than its
        bound only the end is read; a history that is no regular file (a
        FIFO, a symlink) is warned about and read as empty: the next switch
        replaces it. Raise StateError if it cannot be read otherwise.
        """
        path = self.file(HISTORY_FILE)
        try:
            raw = read_regular_file(path, _MAX_HISTORY_BYTES, tail=True)
        except FileNotFoundError:
            return []
        except RefusedFile as error:
            self._warn_once("%s %s; ignored (the next switch replaces it)", path, error.strerror)
            return []
        except OSError as error:
            raise StateError(f"cannot read {path}: {error.strerror}") from None
        lines = raw.decode("utf-8", errors="replace").splitlines()
        if len(raw) == _MAX_HISTORY_BYTES and lines:
            # Read from the middle of a longer file: the first line is cut.
            self._warn_once("%s is larger than %d bytes; only its end is read", path, _MAX_HISTORY_BYTES)
            lines = lines[1:]
        records = []
        malformed = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(SwitchRecord.from_json(json.loads(line)))
            # Overflow: a seq of Infinity; recursion: "[[[[..." past Python's limit.
            except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
                malformed.append(number)
        if malformed:
            # One line however many: 200,000 garbage lines must not become 200,000 log lines.
            if len(malformed) == 1:
                what = f"line {malformed[0]} is not a switch record"
            else:
                what = f"{len(malformed)} lines (first: line {malformed[0]}) are not switch records"
            self._warn_once("%s: %s; ignored (the next switch drops them)", path, what)
        return records

    def last_switch(self) -> SwitchRecord | None:
        history = self.read_history()
        return history[-1] if history else None

    def append_history(
        self,
        *,
        time: float,
        from_server: str | None,
        to_server: str,
        reason: str,
        losses: dict[str, float | None] | None = None,
    ) -> SwitchRecord:
        """Record a switch (call under the lock) and return the stored record, rounded as stored."""
        record, content = self.history_with(
            time=time, from_server=from_server, to_server=to_server, reason=reason, losses=losses
        )
        atomic_write(self.file(HISTORY_FILE), content)
        return record

    def history_with(
        self,
        *,
        time: float,
        from_server: str | None,
        to_server: str,
        reason: str,
        losses: dict[str, float | None] | None = None,
    ) -> tuple[SwitchRecord, bytes]:
        """
        Given a switch, return its record (rounded as stored) and the history
        file's new content with it appended (call under the lock); nothing is
        written.
        """
        history = self.read_history()
        record = SwitchRecord(
            seq=(history[-1].seq + 1) if history else 1,
            time=_round_time(time),
            from_server=from_server,
            to_server=to_server,
            reason=reason,
            losses={name: _rounded(loss) for name, loss in (losses or {}).items()},
        )
        history = [*history, record][-MAX_HISTORY:]
        body = "".join(json.dumps(item.to_json(), sort_keys=True) + "\n" for item in history)
        return record, body.encode()

    # --- last check ---------------------------------------------------------

    def read_last_check(self) -> CheckRecord | None:
        """
        Return the last check's record, or None if there is none or it is
        not valid (logged once): every field is checked (parse_check_record),
        so one bad value cannot stop health checking.
        """
        path = self.file(LAST_CHECK_FILE)
        try:
            return parse_check_record(json.loads(read_regular_file(path, _MAX_RECORD_BYTES)))
        except FileNotFoundError:
            return None
        except OSError as error:
            self._warn_once("%s %s; treating the next check as the first", path, _why(error))
        except (ValueError, OverflowError, RecursionError) as error:
            # ValueError covers bad JSON, bad UTF-8 and bad fields alike.
            detail = str(error) if not isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)) else "is not JSON"
            self._warn_once("%s is not a check record (%s); treating the next check as the first", path, detail)
        return None

    def write_last_check(self, record: CheckRecord) -> None:
        data: dict[str, Any] = {"time": _round_time(record.time), "loss": _rounded(record.loss), "span": record.span}
        if record.local_fault is not None:
            data["local_fault"] = record.local_fault
        atomic_write(self.file(LAST_CHECK_FILE), (json.dumps(data, sort_keys=True) + "\n").encode())

    # --- all servers failed -------------------------------------------------

    def read_all_failed(self) -> AllFailedRecord | None:
        """Return the all-servers-failed record, or None when there is none (or it is unreadable)."""
        path = self.file(ALL_FAILED_FILE)
        try:
            data = json.loads(read_regular_file(path, _MAX_RECORD_BYTES))
            failed = data.get("failed") or {}
            stayed_on = data.get("stayed_on")
            record = AllFailedRecord(
                time=float(data["time"]),
                failed={str(name): str(why) for name, why in dict(failed).items()},
                stayed_on=str(stayed_on) if stayed_on is not None else None,
            )
            if not math.isfinite(record.time):
                raise ValueError("time is not a finite number")
            return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            # Forgetting it costs at most one more pass through the servers.
            log.warning("%s is unreadable; ignoring it", path)
            return None

    def write_all_failed(self, record: AllFailedRecord) -> None:
        data = {"time": record.time, "failed": record.failed, "stayed_on": record.stayed_on}
        atomic_write(self.file(ALL_FAILED_FILE), (json.dumps(data) + "\n").encode())

    def clear_all_failed(self) -> bool:
        """Remove the all-servers-failed record; return whether there was one."""
        try:
            self.file(ALL_FAILED_FILE).unlink()
        except FileNotFoundError:
            return False
        except OSError as error:
            raise StateError(f"cannot remove {self.file(ALL_FAILED_FILE)}: {error.strerror}") from None
        return True

    # --- pending reason -----------------------------------------------------
    #
    # `systemctl start wg-failover.service` (health.failover_command) runs
    # the unit's own command line, which says --reason unit-failed for its
    # OnFailure= role, and passes none of the caller's environment. So the
    # health check leaves its reason here, valid for as long as it waits for
    # the command, and the failover it started takes it.

    def write_pending_reason(self, reason: str, now: float, valid_for: float) -> None:
        """
        Given the health check's reason, the wall time and how long the
        failover may take, leave the reason for it. A write that fails is a
        warning.
        """
        data = {"reason": reason[:MAX_REASON_LENGTH], "time": now, "valid_for": valid_for}
        try:
            atomic_write(self.file(PENDING_REASON_FILE), (json.dumps(data) + "\n").encode(), mode=0o600)
        except StateError as error:
            # Only the history's label is lost; the failover must still run.
            log.warning("%s; the failover will record its own reason", error)

    def claim_pending_reason(self, now: float) -> str | None:
        """
        Given the wall time, take the pending reason: return it if it is
        valid and fresh, else None; either way it is gone afterwards. A rename
        makes the claim atomic, so of two failovers at most one takes it.
        """
        path = self.file(PENDING_REASON_FILE)
        claimed = path.with_name(f".{PENDING_REASON_FILE}.{os.getpid()}.claimed")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("cannot take %s: %s", path, error.strerror)
            return None
        try:
            text = read_regular_file(claimed, 4096).decode("utf-8", errors="replace")
        except OSError:
            text = ""
        finally:
            with contextlib.suppress(OSError):
                claimed.unlink()
        reason = pending_reason(text, now)
        if reason is None:
            log.warning("%s was stale or malformed; ignored", path)
        return reason

    def discard_pending_reason(self) -> None:
        """Remove a pending reason nobody took (the triggered failover never ran)."""
        with contextlib.suppress(FileNotFoundError):
            self.file(PENDING_REASON_FILE).unlink()


def pending_reason(text: str, now: float) -> str | None:
    """
    Given the text of a pending-reason file and the wall time, return its
    reason if the file is well formed and still valid (written at most
    valid_for seconds ago, not in the future), else None.
    """
    try:
        data = json.loads(text)
        reason, written, valid_for = data["reason"], float(data["time"]), float(data["valid_for"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_LENGTH:
        return None
    if not reason.isprintable():
        return None
    if not (math.isfinite(written) and math.isfinite(valid_for)):
        return None
    if not 0 <= now - written <= valid_for:
        return None
    return reason
