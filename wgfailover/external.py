"""Running the external commands wg-failover drives: the tunnel restart,
the failover trigger and ``wg show``. Always an argv (no shell, so a server
name can never be interpreted), always with a timeout.

The command's own exit decides, not the end of its output: a command that
starts a background child (``sh -c "daemon & exit 0"``) and exits has
finished, although the child still holds the pipes. What it prints is kept
as a bounded tail, so a command that prints without end costs a fixed
amount of memory, not all of it.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence

from wgfailover.errors import ActionError, WgFailoverError

# Enough of a failing command's stderr to say why (systemctl's "Job for ...
# failed" line, wg's "Unable to access interface"), short enough for one line.
_STDERR_TAIL = 500
# What is kept of each stream. `wg show DEVICE latest-handshakes` prints one
# short line per peer; far beyond that is output nobody reads.
MAX_OUTPUT_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
# How often the exit is checked where the kernel offers no pidfd to wait on.
_POLL_SECONDS = 0.05


def run_command(
    argv: Sequence[str],
    timeout: float,
    failure: str,
    error: type[WgFailoverError] = ActionError,
) -> str:
    """
    Given an argv, a timeout and how to introduce a failure ("restarting the
    tunnel failed"), run it and return (the last MAX_OUTPUT_BYTES of) its
    stdout. Raise `error` with that introduction and the end of the
    command's stderr if it cannot be started, exits non-zero, or overruns
    (it is then killed with its process group).
    """
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group, so an overrun kills its children too.
            start_new_session=True,
        )
    except FileNotFoundError:
        raise error(f"{failure}: command not found: {argv[0]}") from None
    except PermissionError:
        raise error(f"{failure}: permission denied running {argv[0]}") from None
    except OSError as start_error:
        raise error(f"{failure}: cannot run {argv[0]}: {start_error.strerror or start_error}") from None
    try:
        returncode, stdout, stderr = _collect(process, timeout)
    finally:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    if returncode is None:
        raise error(f"{failure}: {' '.join(argv)} did not finish within {timeout:g}s")
    if returncode != 0:
        text = " ".join(stderr.decode("utf-8", errors="replace").split())[-_STDERR_TAIL:]
        detail = f": {text}" if text else ""
        raise error(f"{failure}: {' '.join(argv)} exited with {returncode}{detail}")
    return stdout.decode("utf-8", errors="replace")


def _collect(process: subprocess.Popen[bytes], timeout: float) -> tuple[int | None, bytes, bytes]:
    """
    Given a started process with piped stdout and stderr and a timeout,
    read both (keeping the last MAX_OUTPUT_BYTES of each) until the process
    exits, then take what is already in the pipes. Return (its exit code,
    stdout, stderr); the exit code is None if it overran and was killed.
    """
    deadline = time.monotonic() + timeout
    tails = {"stdout": bytearray(), "stderr": bytearray()}
    selector = selectors.DefaultSelector()
    for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)):
        if stream is None:  # both are pipes (run_command); typed optional by subprocess
            continue
        os.set_blocking(stream.fileno(), False)
        selector.register(stream.fileno(), selectors.EVENT_READ, name)
    pidfd = _pidfd(process.pid)
    if pidfd is not None:
        selector.register(pidfd, selectors.EVENT_READ, "exit")
    try:
        while process.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill_group(process)
                return None, bytes(tails["stdout"]), bytes(tails["stderr"])
            wait = left if pidfd is not None else min(left, _POLL_SECONDS)
            for key, _ in selector.select(wait):
                if key.data != "exit" and _read_into(key.fd, tails[key.data]) is False:
                    selector.unregister(key.fd)  # its end: every writer closed it
        # Exited: what it wrote is in the pipes now; a background child that
        # keeps them open must not keep us waiting.
        for key in list(selector.get_map().values()):
            if key.data != "exit":
                while _read_into(key.fd, tails[key.data]) is True:
                    pass
        return process.returncode, bytes(tails["stdout"]), bytes(tails["stderr"])
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)


def _read_into(fd: int, tail: bytearray) -> bool | None:
    """
    Given a non-blocking pipe and its tail, read what is there into the
    tail. Return True if something was read, None if nothing is there yet,
    False at the pipe's end.
    """
    try:
        chunk = os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    if not chunk:
        return False
    tail += chunk
    if len(tail) > MAX_OUTPUT_BYTES:
        del tail[: len(tail) - MAX_OUTPUT_BYTES]
    return True


def _pidfd(pid: int) -> int | None:
    """Given a child's pid, return a pidfd that becomes readable when it exits, or None (old kernel)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()
    process.wait()
