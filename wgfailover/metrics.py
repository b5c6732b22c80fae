"""The node_exporter textfile: what Grafana shows about wg-failover.

The file is rendered from the state directory every time a command changes
it, never patched, so it cannot go stale after a failover (the original
wrote ``vpn_server_info`` once at boot). Values are gauges, except the
switch count: it is the history's sequence number, which survives every
run and every truncation of the history, so it is a true counter and
``increase()`` or a difference counts switches exactly.

Labels stay bounded: server names and endpoints come from the config, and
the last switch's reason appears on one info series at a time, so a
host exposes one series per label set it currently holds.

With several tunnels on one host (the ``instance`` key), each instance
writes its own file, ``wg_failover_<instance>.prom``, and every series
carries ``wg_instance="<instance>"``: node_exporter refuses to expose two
files that hold the same series, and two instances rewriting one file
would erase each other's.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from wgfailover.errors import ConfigError, StateError
from wgfailover.fsutil import atomic_write, remove_stale_temps
from wgfailover.logs import one_line
from wgfailover.servers import Server, resolve_endpoint
from wgfailover.state import StateDir

log = logging.getLogger(__name__)

TEXTFILE_NAME = "wg_failover.prom"
INSTANCE_LABEL = "wg_instance"
# A reason is free text (--reason); cut so one label stays one readable line.
_MAX_REASON_CHARS = 120


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def textfile_name(instance: str | None) -> str:
    """Given the instance (None: the only one on this host), return the name of its textfile."""
    return TEXTFILE_NAME if instance is None else f"wg_failover_{instance}.prom"


Labels = dict[str, str]


def _family(
    name: str, help_text: str, samples: list[tuple[Labels, float]], common: Labels, kind: str = "gauge"
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{_labels({**common, **labels})} {_number(value)}" for labels, value in samples]
    return lines


def _labels(values: Labels) -> str:
    if not values:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in values.items()) + "}"


def _reason_label(reason: str) -> str:
    text = one_line(reason)
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."


def _server_endpoints(servers: Sequence[Server]) -> list[tuple[str, str]]:
    """Given the servers, return (name, endpoint) for those whose endpoint is known."""
    pairs = []
    for server in servers:
        try:
            pairs.append((server.name, resolve_endpoint(server)))
        except ConfigError:
            continue  # its config is missing: no endpoint to name
    return pairs


def render_metrics(state: StateDir, servers: Sequence[Server], *, instance: str | None) -> str:
    """
    Given the state directory, the configured servers and the instance
    (None: the only one on this host), return the textfile's content.
    """
    common = {} if instance is None else {INSTANCE_LABEL: instance}
    family = functools.partial(_family, common=common)
    current = state.read_current([server.name for server in servers]).name
    last_switch = state.last_switch()
    last_check = state.read_last_check()
    lines: list[str] = []
    lines += family(
        "vpn_server_info",
        "The VPN server the tunnel is configured for (1 on the active one).",
        [({"server": current}, 1)] if current else [],
    )
    lines += family(
        "wg_failover_server_endpoint_info",
        # `host`: the label smokeping_prober gives each target, so a dashboard joins on it.
        "Each configured server's endpoint (host), to show server names on the prober's per-host series.",
        [({"server": name, "host": endpoint}, 1) for name, endpoint in _server_endpoints(servers)],
    )
    lines += family(
        "wg_failover_switches_total",
        "Switches of the active server recorded in the history, ever.",
        [({}, last_switch.seq if last_switch else 0)],
        kind="counter",
    )
    if last_switch:
        lines += family(
            "wg_failover_last_switch_timestamp_seconds",
            "Unix time of the last switch.",
            [({}, last_switch.time)],
        )
        lines += family(
            "wg_failover_last_switch_info",
            "The last switch: the server left, the server chosen and why (1; one series at a time).",
            [
                (
                    {
                        "from": last_switch.from_server or "none",
                        "to": last_switch.to_server,
                        "reason": _reason_label(last_switch.reason),
                    },
                    1,
                )
            ],
        )
        lines += family(
            "wg_failover_server_loss_ratio",
            "Packet loss of each server as seen by the external prober when the last switch was decided.",
            [({"server": name}, loss) for name, loss in sorted(last_switch.losses.items()) if loss is not None],
        )
    lines += family(
        "wg_failover_health_consecutive_failures",
        "Consecutive health checks above the loss threshold.",
        [({}, state.read_failures())],
    )
    if last_check:
        lines += family(
            "wg_failover_last_check_timestamp_seconds",
            "Unix time of the last health check that measured.",
            [({}, last_check.time)],
        )
        if last_check.loss is not None:
            lines += family(
                "wg_failover_tunnel_loss_ratio",
                "Tunnel packet loss measured by the last health check.",
                [({}, last_check.loss)],
            )
    # Always present (0 or 1), so an alert can tell "no fault" from "no data".
    lines += family(
        "wg_failover_local_fault",
        "1 while the last health check saw every server losing packets: the fault is on this side, no switch helps.",
        [({}, 1 if last_check is not None and last_check.local_fault else 0)],
    )
    lines += family(
        "wg_failover_all_servers_failed",
        "1 while every server switched to in the last episode failed its probation; no failover until one recovers.",
        [({}, 1 if state.read_all_failed() is not None else 0)],
    )
    return "\n".join(lines) + "\n"


def write_metrics(
    textfile_dir: Path | None, state: StateDir, servers: Sequence[Server], *, instance: str | None
) -> bool:
    """
    Given the textfile directory (None: metrics disabled), rewrite the
    instance's textfile there (textfile_name) from the state (call under the state lock). Mode
    0644 so node_exporter can read it under UMask=0077. Return whether it
    was written. A failure is logged, never raised: the metrics are for
    watching the tunnel, and a missing node_exporter directory must not stop
    a switch half-way (link moved, tunnel not restarted) or a health check.
    """
    if textfile_dir is None:
        return False
    content = render_metrics(state, servers, instance=instance)
    target = textfile_dir / textfile_name(instance)
    remove_stale_temps(target)
    try:
        atomic_write(target, content.encode(), mode=0o644)
    except StateError as error:
        log.warning("%s; the metrics are not updated (check textfile_dir)", error)
        return False
    return True
