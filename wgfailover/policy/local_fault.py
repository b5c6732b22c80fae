"""Local faults: is the trouble on this side of the uplink?

When the host's own uplink fails (the ISP, the Wi-Fi, the home router), the
tunnel loses everything, and so does every other tunnel it could switch to.
The external prober shares that uplink, so it sees every server's endpoint
lost at once, the current one included. Switching then cannot help: the
original scripts, and mwan3-style gateway groups, cycle through every
server, restarting the tunnel each time, for as long as the outage lasts.

A server whose WireGuard died is different: its endpoint still answers the
prober's pings, so at least that server looks fine from outside while the
tunnel loses everything. That is a server fault, and it fails over as usual.

The rule: every configured server, the current one included, is either
losing more than the threshold, or unreachable (the prober could not send
to it at all). A server whose loss is unknown (no series) is no evidence
either way, and one unknown server is enough to say "not a local fault":
an unknown is never read as a loss, as everywhere else.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from wgfailover.evidence.readings import ServerReading


@dataclasses.dataclass(frozen=True)
class LocalFault:
    """Evidence that the fault is on this side: every server's loss as the external prober saw it."""

    losses: tuple[tuple[str, float | None], ...]  # (server, loss); None: unreachable

    def describe(self) -> str:
        """Return the verdict as the health check and wg-failover print it."""
        listed = ", ".join(f"{name} {_percent(loss)}" for name, loss in self.losses)
        return f"local fault: every server is losing packets ({listed})"


def find_local_fault(
    losses: Mapping[str, float | None],
    threshold: float,
    unreachable: Collection[str] = (),
) -> LocalFault | None:
    """
    Given every configured server's loss as the external prober sees it
    ({server: loss in [0, 1], None for unknown}, the current server
    included), the loss threshold and the servers the prober could not send
    to at all, return the LocalFault when every server is above the
    threshold or unreachable, else None. No servers, or a single unknown
    one, is no local fault.
    """
    if not losses:
        return None
    listed: list[tuple[str, float | None]] = []
    for name in sorted(losses):
        loss = losses[name]
        if name in unreachable:
            listed.append((name, None))
        elif loss is not None and loss > threshold:
            listed.append((name, loss))
        else:
            return None
    return LocalFault(tuple(listed))


def local_fault_of(readings: Iterable[ServerReading], threshold: float) -> LocalFault | None:
    """Given every server's reading over the failed check's span and the threshold, return the LocalFault or None."""
    readings = list(readings)
    unreachable = {reading.name for reading in readings if reading.unreachable}
    return find_local_fault({reading.name: reading.loss for reading in readings}, threshold, unreachable)


def _percent(loss: float | None) -> str:
    return "unreachable" if loss is None else f"{100 * loss:.0f}%"
