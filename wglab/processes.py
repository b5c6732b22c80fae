"""Background processes, polling and free ports for the lab.

Every long-running helper (prometheus, smokeping_prober, wireguard-go, the
port forwarders) is started through :func:`start` so that its output lands in
a log file we can show when something fails, and stopped through :func:`stop`
so that a hung process can never keep a test (or the lab's teardown) waiting.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


class GiveUp(Exception):
    """Raised by a wait_until predicate when waiting longer is pointless
    (e.g. the server it waits for has exited); wait_until re-raises it."""


@dataclass
class Process:
    """A background process started by :func:`start`, with its log file."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """Given a started process, return its pid."""
        return self.popen.pid

    def alive(self) -> bool:
        """Given a started process, return whether it is still running."""
        return self.popen.poll() is None

    def log_tail(self, max_chars: int = 4000) -> str:
        """Given a started process, return the end of its log (for errors)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-max_chars:]


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """Given a name, an argv and a log file, return the started Process.

    The child gets its own session so that a Ctrl-C in the terminal reaches
    only the lab's Python process, which then tears everything down in order;
    otherwise the children would die first and teardown would see a
    half-dead lab. stdin is /dev/null and stdout+stderr go to the log file,
    never to an inherited pipe, so a caller that captures output (e.g.
    wg-failover running the restart command) never waits on our daemons.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    return Process(name=name, argv=list(argv), popen=popen, log_path=log_path)


def stop(proc: Process, timeout: float = 5.0) -> int | None:
    """Given a Process, stop it (SIGTERM, then SIGKILL after timeout) and
    return its exit code (None if it could not be reaped)."""
    if proc.popen.poll() is not None:
        return proc.popen.returncode
    try:
        proc.popen.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        proc.popen.kill()
    except ProcessLookupError:
        pass
    try:
        return proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def kill_pid(pid: int, timeout: float = 5.0) -> bool:
    """Given the pid of a process we did not start in this Python process
    (e.g. read from a pid file), SIGTERM then SIGKILL it and return whether
    it is gone."""

    def gone() -> bool:
        return not pid_alive(pid)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if gone():
                return True
            time.sleep(0.05)
    return gone()


def pid_alive(pid: int) -> bool:
    """Given a pid, return whether a non-zombie process with it exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has exited; only its parent's wait() is missing. The state
    # field follows the parenthesised command name, which may hold spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state == "Z":
        # Reap it if it is our child, so it does not linger.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.1,
    what: str | None = None,
) -> T:
    """Given a predicate, return its first truthy result, polling every
    interval seconds; raise TimeoutError naming `what` and the last value or
    exception when timeout seconds pass first.

    Exceptions from the predicate count as "not yet" (a server that is still
    starting refuses connections), but the last one is reported; GiveUp is
    re-raised at once so a dead process fails fast instead of at the deadline.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except GiveUp:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            label = what or getattr(predicate, "__name__", repr(predicate))
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {label}; last result: {last!r}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """Given a host address, return a TCP port that is free on it right now.

    There is a window between closing the probe socket and the server binding
    it; callers that start a server on it must check that it came up.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run(
    argv: Sequence[str], check: bool = True, timeout: float = 30.0, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Given an argv, run it to completion and return the result; with check,
    raise RuntimeError carrying the command and its stderr on failure.

    RuntimeError rather than CalledProcessError so that the message (which
    pytest shows) contains the stderr of tools like `ip` and `nft`.
    """
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"command failed (exit {result.returncode}): {' '.join(argv)}\n{result.stderr.strip()}")
    return result
