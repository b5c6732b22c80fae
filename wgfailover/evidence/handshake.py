"""The local tunnel signal: how long ago WireGuard last completed a handshake.

Used by the health check when Prometheus cannot be asked and
``health.interface`` is set. WireGuard re-handshakes every two minutes while
traffic flows, so a newest handshake older than ``health.handshake_timeout``
(180 s by default) means the server has stopped answering. It is weaker
evidence than the prober's loss (a lossy tunnel still handshakes), which is
why it is only the fallback.
"""

from __future__ import annotations

from collections.abc import Sequence

from wgfailover.errors import MeasurementError
from wgfailover.evidence.readings import HandshakeCheck
from wgfailover.external import run_command

# `wg show` answers from the kernel (or wireguard-go's socket) at once; the
# bound only matters when something is badly stuck.
WG_TIMEOUT = 10.0


def wg_show_argv(interface: str, netns: str | None = None) -> list[str]:
    """Given an interface and an optional network namespace, return the argv that lists its handshakes."""
    argv = ["wg", "show", interface, "latest-handshakes"]
    if netns:
        # The tunnel interface often lives in its own namespace (the
        # original's /var/run/netns/wg); `ip netns exec` enters it first.
        argv = ["ip", "netns", "exec", netns, *argv]
    return argv


def parse_latest_handshakes(output: str, what: str) -> list[float]:
    """
    Given the output of ``wg show IFACE latest-handshakes`` (one
    "PUBLIC-KEY<tab>UNIX-SECONDS" line per peer, 0 for a peer that never
    completed one), return the timestamps of completed handshakes.
    Raise MeasurementError naming what was run if a line is not of that form.
    """
    times = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise MeasurementError(f"{what} printed {line.strip()[:80]!r}, not 'PUBLIC-KEY SECONDS'")
        seconds = int(fields[1])
        if seconds > 0:
            times.append(float(seconds))
    return times


def run_wg_show(argv: Sequence[str], timeout: float = WG_TIMEOUT) -> str:
    """
    Given the argv from wg_show_argv, run it and return its output. Raise
    MeasurementError (the check could not measure) if it cannot run, fails
    or overruns.
    """
    return run_command(argv, timeout, "cannot read handshakes", MeasurementError)


def check_handshake(interface: str, netns: str | None, timeout: float, now: float) -> HandshakeCheck:
    """
    Given the tunnel interface, its namespace (or None), the handshake
    timeout and the current unix time, return the HandshakeCheck of the
    interface's newest handshake over all peers. Raise MeasurementError if
    the handshakes cannot be read.
    """
    argv = wg_show_argv(interface, netns)
    times = parse_latest_handshakes(run_wg_show(argv), " ".join(argv))
    if not times:
        return HandshakeCheck(interface=interface, newest=None, age=None, timeout=timeout)
    newest = max(times)
    # A clock stepped back makes the handshake look like it is from the
    # future; it is at least fresh, so count it as age 0.
    return HandshakeCheck(interface=interface, newest=newest, age=max(0.0, now - newest), timeout=timeout)
