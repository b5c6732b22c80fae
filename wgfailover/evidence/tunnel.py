"""The tunnel's loss, as the prober inside the VPN namespace sees it.

The original read ``result[0]`` of a query that returns one series per
prober target, so one target was ignored and a stray one (smokeping's
default ``localhost``) could hide every loss. The default query sums
responses and requests over every series before dividing; a custom query
that still answers several series is judged by its worst one.

When Prometheus cannot be asked and ``health.interface`` is set, the
newest WireGuard handshake is the evidence instead (handshake.py).
"""

from __future__ import annotations

import logging

from wgfailover.config import Config, FleetSettings, HealthSettings, fill_template, format_duration
from wgfailover.errors import ConfigError, PrometheusError
from wgfailover.evidence.handshake import check_handshake
from wgfailover.evidence.readings import TunnelReading, clean_loss
from wgfailover.prometheus_pool import PrometheusPool, open_prometheus
from wgfailover.scope import health_placeholders

log = logging.getLogger(__name__)


def render_query(template: str, selector: str, window: str, fleet: FleetSettings | None = None) -> str:
    """
    Given the health query template, the selector, a PromQL range and the
    fleet settings, return the query: $selector, $window, $scope and $client
    filled in ($client in the selector too), so it reads this client's own
    tunnel probes only.
    """
    # Unknown placeholders were rejected when the config was loaded.
    scope = health_placeholders(fleet or FleetSettings())
    return fill_template(template, {"selector": fill_template(selector, scope), "window": window, **scope})


def measure_tunnel_loss(
    client: PrometheusPool, health: HealthSettings, seconds: float, fleet: FleetSettings | None = None
) -> TunnelReading:
    """
    Given a Prometheus client, the health settings, the whole seconds to
    judge, ending now, and the fleet settings, return the tunnel loss over them (None when there is
    no data). Raise PrometheusError if Prometheus cannot be asked.
    """
    query = render_query(health.query, health.selector, format_duration(seconds), fleet)
    samples = client.query(query)
    known = [loss for loss in (clean_loss(sample.value) for sample in samples) if loss is not None]
    if not samples:
        log.debug("no series for %s", query)
    elif not known:
        # 0/0: the prober sent nothing in the span (stopped, or scraped too rarely).
        log.debug("only NaN or infinite values for %s", query)
    if not known:
        return TunnelReading(source="prometheus", loss=None, span=seconds, query=query)
    if len(samples) > 1:
        log.debug("%d series for %s; judging the worst", len(samples), query)
    return TunnelReading(source="prometheus", loss=max(known), span=seconds, query=query)


def measure_tunnel(config: Config, seconds: float, now: float, remember: bool = True) -> TunnelReading:
    """
    Given the config, the seconds to judge, the current unix time and
    whether to remember a failed Prometheus URL (not in a dry run), return
    the tunnel reading: the loss from Prometheus, or, when Prometheus cannot
    be asked and health.interface is set, the interface's handshake age.
    Raise PrometheusError (exit 69, nothing counted) when Prometheus fails
    and no interface is set, MeasurementError when the handshakes can't be
    read, ConfigError when neither prometheus.url nor health.interface is set.
    """
    health = config.health
    interface = health.interface
    if config.prometheus.url is None:
        if interface is not None:
            return _read_handshake(health, interface, now, None)
        # Not an outage that will pass (69) but a setting that is missing.
        raise ConfigError(config.path, "prometheus.url is not set; wg-health-check needs it (or health.interface)")
    try:
        client = open_prometheus(config.prometheus, config.state_dir, remember=remember, wall_clock=lambda: now)
        return measure_tunnel_loss(client, health, seconds, config.fleet)
    except PrometheusError as error:
        if interface is None:
            raise
        log.warning("%s; judging by the handshakes of %s instead", error, interface)
        return _read_handshake(health, interface, now, str(error))


def _read_handshake(health: HealthSettings, interface: str, now: float, fallback_reason: str | None) -> TunnelReading:
    handshake = check_handshake(interface, health.netns, health.handshake_timeout, now)
    return TunnelReading(source="handshake", loss=None, span=None, handshake=handshake, fallback_reason=fallback_reason)
