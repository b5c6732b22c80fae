"""What the evidence modules return: plain readings, free of I/O.

The one notion of "unknown" lives here: a value Prometheus answers as NaN or
±Inf (a rate over no data, 0/0), or no series at all, is None, and None is
never read as 0. Loss is clamped to [0, 1] here and nowhere else: smokeping
can count a reply to a request sent before the window, so a ratio slightly
outside [0, 1] is real data, not garbage.
"""

from __future__ import annotations

import dataclasses
import math

from wgfailover.config import format_duration


def clean_loss(value: float) -> float | None:
    """Given a loss ratio from Prometheus, return it clamped to [0, 1], or None if it is not a number."""
    if not math.isfinite(value):
        return None
    return min(1.0, max(0.0, value))


def clean_latency(value: float) -> float | None:
    """Given a round-trip time in seconds, return it, or None if it is not a number or negative."""
    if not math.isfinite(value) or value < 0:
        return None
    return value


@dataclasses.dataclass(frozen=True)
class PreferredReading:
    """What the external prober saw of one server over the whole of failover.failback_after."""

    name: str
    worst_loss: float | None  # the highest loss of any health.min_window slice; None: no data at all
    slices: int  # slices with data


@dataclasses.dataclass(frozen=True)
class ServerReading:
    """What the external prober saw of one server; None means unknown."""

    name: str
    loss: float | None = None  # ratio in [0, 1]
    latency: float | None = None  # mean round-trip time, seconds
    # The prober has the series but sent nothing in the window (0/0): it
    # could not send at all, as when the host's own interface is down.
    unreachable: bool = False


@dataclasses.dataclass(frozen=True)
class HandshakeCheck:
    """The age of an interface's newest WireGuard handshake, judged against a timeout."""

    interface: str
    newest: float | None  # unix seconds of the newest handshake; None: never
    age: float | None  # seconds since then at the time of the check
    timeout: float

    @property
    def failed(self) -> bool:
        return self.age is None or self.age > self.timeout

    def describe(self) -> str:
        """Return the verdict as a phrase for logs and the command's output."""
        if self.newest is None:
            return f"no handshake on {self.interface} yet"
        return f"newest handshake on {self.interface} {self.age:.0f}s ago (limit {self.timeout:g}s)"


@dataclasses.dataclass(frozen=True)
class TunnelReading:
    """What one health check saw of the tunnel: a loss from Prometheus, or a handshake age."""

    source: str  # "prometheus" or "handshake"
    loss: float | None  # Prometheus: the loss in [0, 1]; None: no data
    span: float | None  # seconds judged (Prometheus only)
    query: str | None = None
    handshake: HandshakeCheck | None = None
    fallback_reason: str | None = None  # why the handshake was used instead of Prometheus

    @property
    def has_data(self) -> bool:
        return self.handshake is not None or self.loss is not None

    def is_bad(self, threshold: float) -> bool:
        """Return whether this reading (with data) is a failure at the threshold."""
        if self.handshake is not None:
            return self.handshake.failed
        # Equal to the threshold is still healthy, as in the original's `>`.
        return self.loss is not None and self.loss > threshold

    def describe(self, threshold: float, with_span: bool = True) -> str:
        """Return what was seen as a phrase, e.g. 'loss 0.42 > 0.15 over 60s'."""
        if self.handshake is not None:
            return self.handshake.describe()
        over = f" over {format_duration(self.span)}" if self.span is not None and with_span else ""
        if self.loss is None:
            return f"no data{over}"
        relation = ">" if self.loss > threshold else "<="
        return f"loss {self.loss:.3g} {relation} {threshold:g}{over}"
