"""The servers' loss and latency, as the external prober sees them.

One PromQL query asks for the loss and the latency of every server at once,
so a failover costs one HTTP round trip within ``prometheus.timeout``
whatever the number of servers (the original sent one request per server,
5 s each). Series are matched to servers by their endpoint label.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence

from wgfailover.config import Config, FailoverSettings, FleetSettings, fill_template, format_duration
from wgfailover.errors import ConfigError, PrometheusError
from wgfailover.evidence.readings import PreferredReading, ServerReading, clean_latency, clean_loss
from wgfailover.prometheus import Sample, escape_regex_value
from wgfailover.prometheus_pool import open_prometheus
from wgfailover.scope import ranking_placeholders
from wgfailover.servers import Server, resolve_endpoint

log = logging.getLogger(__name__)

# The label that tells the loss series from the latency series in the one
# combined answer. Prefixed so it cannot clash with a prober's own labels.
METRIC_LABEL = "wgf_metric"


def ranking_values(
    settings: FailoverSettings, endpoints: Iterable[str], seconds: float, fleet: FleetSettings | None = None
) -> dict[str, str]:
    """
    Given the failover settings, the endpoints, the window in seconds and the
    fleet settings, return the values of the ranking templates' placeholders:
    $hosts (the endpoints, regex-escaped and joined by '|'), $label, $window,
    and $scope and $client as scope.py says. Every query built from
    failover.query (ranking, failback, the backtest's history) fills it from
    here, so none is left with a literal $scope.
    """
    hosts = "|".join(escape_regex_value(endpoint) for endpoint in sorted(set(endpoints)))
    values = {"hosts": hosts, "label": settings.label, "window": format_duration(seconds)}
    values.update(ranking_placeholders(fleet or FleetSettings()))
    return values


def build_query(
    settings: FailoverSettings,
    endpoints: Iterable[str],
    window: float | None = None,
    fleet: FleetSettings | None = None,
) -> str:
    """
    Given the failover settings, the endpoints to ask about, the window
    (None: failover.window) and the fleet settings, return the one PromQL
    query for loss and latency: each template with $hosts (the endpoints,
    regex-escaped and joined by '|'), $label, $window, $scope and $client
    (scope.py) filled in, its series tagged wgf_metric="loss" or "latency",
    joined with 'or'. In the "fleet" ranking scope latency is left out: the
    fleet's mean round-trip time says nothing about this client's path, and
    would send every client to the same server.
    """
    fleet = fleet or FleetSettings()
    values = ranking_values(settings, endpoints, settings.window if window is None else window, fleet)
    parts = [_tagged(fill_template(settings.query, values), "loss")]
    if settings.latency_query.strip() and fleet.ranking_scope == "client":
        parts.append(_tagged(fill_template(settings.latency_query, values), "latency"))
    return " or ".join(parts)


def read_server_readings(
    samples: Sequence[Sample],
    label: str,
    endpoints: Mapping[str, str | None],
    warn: bool = True,
) -> list[ServerReading]:
    """
    Given the samples of build_query's answer, the label that holds the
    endpoint and {server: endpoint}, return one ServerReading per server,
    cleaned as readings.py says (clamped loss, None for unknown; a loss of
    NaN, 0/0, also marks the server unreachable). Servers
    sharing an endpoint share its values; if several series answer for one
    endpoint, the worst value counts.
    """
    values: dict[tuple[str, str], float] = {}
    silent: set[str] = set()
    matched = 0
    for sample in samples:
        endpoint = sample.labels.get(label)
        metric = sample.labels.get(METRIC_LABEL)
        if endpoint is None or metric not in ("loss", "latency"):
            continue
        matched += 1
        value = clean_loss(sample.value) if metric == "loss" else clean_latency(sample.value)
        if value is None:
            if metric == "loss" and math.isnan(sample.value):
                # 0/0: the series is there but no request was counted.
                silent.add(endpoint)
            continue
        key = (endpoint, metric)
        values[key] = max(values.get(key, value), value)
    if samples and not matched and warn:
        log.warning(
            "Prometheus answered %d series but none has a %r label; check failover.label and failover.query",
            len(samples),
            label,
        )
    readings = []
    for name, endpoint in endpoints.items():
        if endpoint is None:
            readings.append(ServerReading(name))
            continue
        loss = values.get((endpoint, "loss"))
        unreachable = loss is None and endpoint in silent
        readings.append(ServerReading(name, loss, values.get((endpoint, "latency")), unreachable=unreachable))
    return readings


def find_endpoints(servers: Sequence[Server], skip: set[str], warn: bool) -> dict[str, str | None]:
    """
    Given the servers, those not to look up (config missing) and whether to
    log a lookup failure, return {name: endpoint}, None where it can't be found.
    """
    endpoints: dict[str, str | None] = {}
    for server in servers:
        if server.name in skip:
            endpoints[server.name] = server.endpoint
            continue
        try:
            endpoints[server.name] = resolve_endpoint(server)
        except ConfigError as error:
            if warn:
                log.warning("%s; its loss is unknown", error)
            endpoints[server.name] = None
    return endpoints


def measure_servers(
    config: Config, endpoints: Mapping[str, str | None], remember: bool, window: float | None = None, warn: bool = True
) -> tuple[list[ServerReading], str | None]:
    """
    Given the config, {server: endpoint}, whether to remember a failed
    Prometheus URL (not in a dry run), the window (None: failover.window)
    and whether to warn about series without the endpoint label, return the
    readings from one query, and None; or no readings and why Prometheus
    could not be asked.
    """
    known = [endpoint for endpoint in endpoints.values() if endpoint is not None]
    if not known:
        return [], "no server has a known endpoint to ask Prometheus about"
    query = build_query(config.failover, known, window, config.fleet)
    try:
        # A credential file that can't be read is a configuration error, but
        # at failover time the tunnel is already broken: the policy decides.
        samples = open_prometheus(config.prometheus, config.state_dir, remember=remember).query(query)
    except (PrometheusError, ConfigError) as error:
        return [], str(error)
    return read_server_readings(samples, config.failover.label, endpoints, warn), None


def build_failback_query(
    settings: FailoverSettings,
    endpoints: Iterable[str],
    failback_after: float,
    slice_seconds: float,
    fleet: FleetSettings | None = None,
) -> str:
    """
    Given the failover settings, the endpoints of the servers a failback
    could return to, failback_after, the slice length (health.min_window)
    and the fleet settings, return the one query for their prober history:
    failover.query (placeholders as ranking_values fills them) over a
    slice, evaluated every slice across failback_after (a subquery), as its
    worst value (wgf_metric="worst_loss") and the number of slices with a
    value (wgf_metric="slices"). Slices without data (0/0 is NaN) are
    dropped before both, so they count as missing, never as clean.
    """
    values = ranking_values(settings, endpoints, slice_seconds, fleet)
    known = f"({fill_template(settings.query, values)}) > -Inf"
    span = f"[{format_duration(failback_after)}:{format_duration(slice_seconds)}]"
    worst = _tagged(f"max_over_time(({known}){span})", "worst_loss")
    slices = _tagged(f"count_over_time(({known}){span})", "slices")
    return f"{worst} or {slices}"


def read_preferred_readings(
    samples: Sequence[Sample], label: str, endpoints: Mapping[str, str | None]
) -> dict[str, PreferredReading]:
    """
    Given the samples of build_failback_query's answer, the endpoint label
    and {server: endpoint}, return a PreferredReading per server (no series:
    no data). Several series for one endpoint count as the worst loss and
    the fewest slices.
    """
    worst: dict[str, float] = {}
    slices: dict[str, int] = {}
    for sample in samples:
        endpoint = sample.labels.get(label)
        metric = sample.labels.get(METRIC_LABEL)
        if endpoint is None:
            continue
        if metric == "worst_loss":
            loss = clean_loss(sample.value)
            if loss is not None:
                worst[endpoint] = max(worst.get(endpoint, loss), loss)
        elif metric == "slices" and math.isfinite(sample.value):
            count = int(sample.value)
            slices[endpoint] = min(slices.get(endpoint, count), count)
    readings = {}
    for name, endpoint in endpoints.items():
        if endpoint is None or endpoint not in worst:
            readings[name] = PreferredReading(name, None, 0)
        else:
            readings[name] = PreferredReading(name, worst[endpoint], slices.get(endpoint, 0))
    return readings


def measure_preferred(
    config: Config, endpoints: Mapping[str, str | None], remember: bool
) -> tuple[dict[str, PreferredReading], str | None]:
    """
    Given the config (failover.failback_after set), {server: endpoint} of
    the servers a failback could return to and whether to remember a failed
    Prometheus URL, return their readings from one query, and None; or no
    readings and why Prometheus could not be asked.
    """
    known = [endpoint for endpoint in endpoints.values() if endpoint is not None]
    if not known:
        return {}, "no server to fail back to has a known endpoint to ask Prometheus about"
    if config.failover.failback_after is None:
        return {}, "failover.failback_after is not set"
    query = build_failback_query(
        config.failover, known, config.failover.failback_after, config.health.min_window, config.fleet
    )
    log.debug("asking Prometheus: %s", query)
    try:
        samples = open_prometheus(config.prometheus, config.state_dir, remember=remember).query(query)
    except (PrometheusError, ConfigError) as error:
        return {}, str(error)
    return read_preferred_readings(samples, config.failover.label, endpoints), None


def _tagged(expression: str, metric: str) -> str:
    return f'label_replace({expression}, "{METRIC_LABEL}", "{metric}", "", "")'
