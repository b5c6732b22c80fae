"""What Prometheus recorded: the evidence of past checks, for ``--backtest``.

The live health check asks for the tunnel loss over the span it judges,
ending now. A replay asks the same query, evaluated at each past check time:
``query_range`` at the check period for the usual span, and an instant
query at that time for the few checks that judge another span (the first
one, those right after a replayed switch). The servers' loss for the
ranking is the failover query evaluated at the time of each replayed
failover. The preferred servers' history for a replayed failback is the
failover query over health.min_window, asked once over the whole replay
at that step; each check reads the slices the live subquery would.

Prometheus refuses a range query of more than 11000 points per series, so
the range is asked in chunks of MAX_POINTS; VictoriaMetrics allows more, and
takes the same chunks. The answers are kept as one float per check time
(NaN: unknown), 8 bytes a point: 30 days at one check a minute is ~350 KB
per span length asked, whatever the number of series.

Every query gets the whole ``prometheus.timeout``: a replay sends many, and
the budget of one live run would cut it short. A failed URL is never
remembered: a backtest changes nothing.
"""

from __future__ import annotations

import array
import logging
import math
import re
from collections.abc import Mapping, Sequence

from wgfailover.config import Config, HealthSettings, fill_template, format_duration, parse_duration
from wgfailover.errors import PrometheusHTTPError
from wgfailover.evidence.readings import PreferredReading, ServerReading, TunnelReading, clean_loss
from wgfailover.evidence.servers_loss import build_query, ranking_values, read_server_readings
from wgfailover.evidence.tunnel import render_query
from wgfailover.prometheus_pool import PrometheusPool, open_prometheus

log = logging.getLogger(__name__)

# Below Prometheus's limit of 11000 points per series of one range query.
MAX_POINTS = 10_000
_RETENTION = re.compile(r"^\s*([0-9][0-9a-z.]*)")


class TunnelHistory:
    """
    The tunnel loss the live check would have measured at each of a row of
    check times: ``first``, ``first + every``, ... ``last``. Given the
    config, the health settings whose query and selector to use, those
    times and the endpoints of the servers (for the ranking's query).
    """

    def __init__(
        self,
        config: Config,
        health: HealthSettings,
        *,
        first: float,
        last: float,
        every: float,
        endpoints: Mapping[str, str | None],
    ) -> None:
        self._config = config
        self._health = health
        self._first = first
        self._every = every
        self._count = int(round((last - first) / every)) + 1
        self._endpoints = dict(endpoints)
        self._series: dict[float, array.array[float]] = {}
        self._instant: dict[tuple[float, float], float | None] = {}
        self._servers: dict[tuple[float, float | None], list[ServerReading]] = {}
        self._preferred_slices: dict[tuple[float, float], dict[str, dict[float, float]]] = {}

    @property
    def times(self) -> list[float]:
        """Return the check times, oldest first."""
        return [self._first + index * self._every for index in range(self._count)]

    def preload(self, seconds: float) -> int | None:
        """
        Given the span most checks judge, ask for the loss over that span at
        every check time (chunked) and keep it. Return the index of the
        first check time with data, or None if there is none at all. Raise
        PrometheusError if Prometheus cannot be asked.
        """
        seconds = float(max(1, round(seconds)))
        if seconds not in self._series:
            self._series[seconds] = self._fetch_range(seconds)
        values = self._series[seconds]
        return next((index for index, value in enumerate(values) if not math.isnan(value)), None)

    def tunnel(self, time: float, seconds: float) -> TunnelReading:
        """
        Given a check time and the whole seconds its span covers, return
        the tunnel reading the live check would have had then. Raise
        PrometheusError if Prometheus cannot be asked.
        """
        query = render_query(self._health.query, self._health.selector, format_duration(seconds), self._config.fleet)
        index = (time - self._first) / self._every
        preloaded = self._series.get(float(seconds))
        if preloaded is not None and index == int(index) and 0 <= index < self._count:
            value = preloaded[int(index)]
            loss = None if math.isnan(value) else value
        else:
            key = (time, float(seconds))
            if key not in self._instant:
                samples = self._pool().query(query, at=time)
                known = [loss for loss in (clean_loss(sample.value) for sample in samples) if loss is not None]
                self._instant[key] = max(known) if known else None
            loss = self._instant[key]
        return TunnelReading(source="prometheus", loss=loss, span=seconds, query=query)

    def servers(self, time: float, window: float | None = None) -> list[ServerReading]:
        """
        Given a time and a window (None: failover.window), return every
        server's reading as the failover query saw it then over that window
        (unknown where there was nothing). Raise PrometheusError if
        Prometheus cannot be asked.
        """
        key = (time, window)
        if key not in self._servers:
            known = [endpoint for endpoint in self._endpoints.values() if endpoint is not None]
            if not known:
                self._servers[key] = [ServerReading(name) for name in self._endpoints]
            else:
                query = build_query(self._config.failover, known, window, self._config.fleet)
                samples = self._pool().query(query, at=time)
                self._servers[key] = read_server_readings(
                    samples, self._config.failover.label, self._endpoints, warn=window is None
                )
        return self._servers[key]

    def preferred(
        self, time: float, names: Sequence[str], failback_after: float, slice_seconds: float
    ) -> dict[str, PreferredReading]:
        """
        Given a check time, the servers a failback could return to,
        failback_after and the slice length (min_window), return what the
        live failback query would have read then: each server's worst slice
        and its number of slices with data over failback_after. The slices
        come from one range query over the whole replay at the slice length,
        on the same step-aligned times as the live subquery's. Raise
        PrometheusError if Prometheus cannot be asked.
        """
        slices = self._slices(failback_after, slice_seconds)
        step = float(max(1, round(slice_seconds)))
        # The live subquery evaluates at multiples of its step in (time - failback_after, time].
        points = []
        at = math.floor(time / step) * step
        while at > time - failback_after:
            points.append(at)
            at -= step
        readings = {}
        for name in names:
            endpoint = self._endpoints.get(name)
            series = slices.get(endpoint) if endpoint is not None else None
            values = [series[at] for at in points if series is not None and at in series]
            readings[name] = PreferredReading(name, max(values) if values else None, len(values))
        return readings

    def _slices(self, failback_after: float, slice_seconds: float) -> dict[str, dict[float, float]]:
        """Return {endpoint: {slice time: loss}} over the replay and failback_after before it (fetched once)."""
        key = (failback_after, slice_seconds)
        if key in self._preferred_slices:
            return self._preferred_slices[key]
        known = sorted({endpoint for endpoint in self._endpoints.values() if endpoint is not None})
        step = float(max(1, round(slice_seconds)))
        found: dict[str, dict[float, float]] = {}
        if known:
            settings = self._config.failover
            query = fill_template(settings.query, ranking_values(settings, known, step, self._config.fleet))
            start = math.floor((self._first - failback_after) / step) * step
            end = math.floor((self._first + (self._count - 1) * self._every) / step) * step
            while start <= end:
                chunk_end = min(end, start + (MAX_POINTS - 1) * step)
                for series in self._pool().query_range(query, start, chunk_end, step):
                    endpoint = series.labels.get(settings.label)
                    if endpoint is None:
                        continue
                    slot = found.setdefault(endpoint, {})
                    for at, value in series.points:
                        loss = clean_loss(value)
                        if loss is not None:
                            slot[float(at)] = max(slot.get(float(at), loss), loss)
                start = chunk_end + step
        self._preferred_slices[key] = found
        return found

    def _fetch_range(self, seconds: float) -> array.array[float]:
        query = render_query(self._health.query, self._health.selector, format_duration(seconds), self._config.fleet)
        values = array.array("d", [math.nan]) * self._count
        for chunk_start in range(0, self._count, MAX_POINTS):
            chunk_end = min(self._count, chunk_start + MAX_POINTS) - 1
            start = self._first + chunk_start * self._every
            end = self._first + chunk_end * self._every
            for series in self._pool().query_range(query, start, end, self._every):
                for time, value in series.points:
                    index = round((time - self._first) / self._every)
                    loss = clean_loss(value)
                    if loss is None or not 0 <= index < self._count:
                        continue
                    # Several series (a custom per-target query): the worst counts, as live.
                    if math.isnan(values[index]) or loss > values[index]:
                        values[index] = loss
        return values

    def _pool(self) -> PrometheusPool:
        return open_prometheus(self._config.prometheus, self._config.state_dir, remember=False)


def read_retention(config: Config) -> float | None:
    """
    Given the config, return how many seconds of history Prometheus keeps,
    from its runtime information; None when the server does not say (a
    size-only limit, or VictoriaMetrics, which has no such endpoint). Raise
    PrometheusError if Prometheus cannot be asked at all.
    """
    pool = open_prometheus(config.prometheus, config.state_dir, remember=False)
    try:
        info = pool.get("/api/v1/status/runtimeinfo")
    except PrometheusHTTPError as error:
        log.debug("no retention from Prometheus: %s", error)
        return None
    retention = info.get("storageRetention")
    match = _RETENTION.match(retention) if isinstance(retention, str) else None
    if match is None:
        return None
    try:
        return parse_duration(match.group(1)) or None
    except ValueError:
        # "10GiB": a size limit only; how far back that reaches is unknown.
        return None
