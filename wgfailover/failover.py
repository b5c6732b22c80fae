"""wg-failover: switch the tunnel to the best other server.

One PromQL query asks for the loss and the latency of every server at once,
so a failover costs one HTTP round trip within ``prometheus.timeout``
whatever the number of servers (the original sent one request per server,
5 s each). ranking.py orders the servers; the first one is switched to under
the state lock. When Prometheus cannot be asked, the pick is random among
the others by default: the original's ``set -euo pipefail`` aborted before
its fallback ever ran, and with every query empty it took the first name.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from wgfailover.config import Config, FailoverSettings, fill_template, format_duration
from wgfailover.errors import ActionError, ConfigError, PrometheusError, UsageError
from wgfailover.logs import one_line
from wgfailover.prometheus import Sample, escape_regex_value, round_measured
from wgfailover.prometheus_pool import open_prometheus
from wgfailover.ranking import Measurement, RankedServer, better_than_chosen, first_choice, rank_servers
from wgfailover.servers import Server, resolve_endpoint
from wgfailover.state import StateDir, SwitchRecord
from wgfailover.switch import switch_to

log = logging.getLogger(__name__)

# The label that tells the loss series from the latency series in the one
# combined answer. Prefixed so it cannot clash with a prober's own labels.
METRIC_LABEL = "wgf_metric"


@dataclasses.dataclass(frozen=True)
class FailoverResult:
    """What wg-failover decided, and did unless dry_run or skipped."""

    rows: tuple[RankedServer, ...]  # every configured server, candidates first in rank order
    choice: str | None  # the server switched to (or a dry run would pick); None when skipped
    from_server: str | None  # the current server when the decision was made
    reason: str  # recorded in the history: "failover", "manual", "unit-failed", ...
    used_prometheus: bool  # the losses come from Prometheus (False: random, or --to)
    record: SwitchRecord | None  # the history record written; None in a dry run or when skipped
    endpoints: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    dry_run: bool = False
    prometheus_error: str | None = None  # why Prometheus could not be used, if it was asked
    skipped: str | None = None  # why nothing was done although this was no dry run

    @property
    def losses(self) -> dict[str, float | None]:
        """Return each server's loss as measured (empty when Prometheus was not used)."""
        if not self.used_prometheus:
            return {}
        return {row.name: row.loss for row in self.rows}


def fail_over(
    config: Config,
    *,
    reason: str,
    to: str | None = None,
    dry_run: bool = False,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> FailoverResult:
    """
    Given the config and the reason to record, rank the other servers from
    Prometheus (or take ``to``, a configured server's name, without asking
    it), then, unless dry_run, switch to the choice under the state lock and
    restart the tunnel. Return the FailoverResult.

    If another switch was recorded while this one waited for the lock (a
    timer-triggered and an OnFailure-triggered failover at once), nothing
    is done and ``skipped`` says why; a ``to`` switch is always done. Must
    not be called while holding the state lock (flock is per open file, so
    it would wait for itself).

    Raise UsageError if ``to`` is not a configured server; ActionError if
    Prometheus can't be asked and failover.on_prometheus_error is "fail", if
    there is no other usable server, or if the restart fails (the switch is
    then recorded); LockBusyError if the lock stays busy; StateError if the
    state can't be written.
    """
    rng = rng or random.SystemRandom()
    if to is not None:
        check_target(config, to)
    state = StateDir(config.state_dir)
    if dry_run:
        # No lock: taking it creates the state directory and the lock file,
        # and a dry run touches nothing.
        history = state.read_history()
        return _decide(config, state, history, reason=reason, to=to, rng=rng, now=wall_clock(), dry_run=True)

    seen = _last_seq(state.read_history())
    started = wall_clock()
    with state.locked(config.lock_timeout):
        waited = wall_clock() - started
        if waited >= 1:
            log.info("waited %.0fs for another wg-failover command to finish", waited)
        # Read once under the lock: it both detects a switch made meanwhile
        # and feeds the hold-down of the ranking.
        history = state.read_history()
        if to is None and _last_seq(history) != seen:
            last = history[-1] if history else None  # None: the history was removed meanwhile
            what = f" ({last.from_server or 'none'} to {last.to_server}, {last.reason})" if last else ""
            message = f"another switch{what} was made while this one waited; not switching again"
            log.debug("%s", message)  # the result says it
            return FailoverResult(
                rows=(),
                choice=None,
                from_server=last.to_server if last else None,
                reason=reason,
                used_prometheus=False,
                record=None,
                skipped=message,
            )
        result = _decide(config, state, history, reason=reason, to=to, rng=rng, now=wall_clock(), dry_run=False)
        if result.choice is None or result.skipped:
            return result
        record = switch_to(
            config,
            state,
            to_server=result.choice,
            from_server=result.from_server,
            reason=reason,
            losses=result.losses,
            now=wall_clock(),
        )
    return dataclasses.replace(result, record=record)


def check_target(config: Config, name: str) -> Server:
    """
    Given the config and a server name asked for by hand, return the server.
    Raise UsageError listing the configured names if there is none by that name.
    """
    server = config.server(name)
    if server is None:
        names = ", ".join(config.server_names)
        raise UsageError(f"{name!r} is not a configured server (configured: {names})")
    return server


def build_query(settings: FailoverSettings, endpoints: Iterable[str]) -> str:
    """
    Given the failover settings and the endpoints to ask about, return the
    one PromQL query for loss and latency: each template with $hosts (the
    endpoints, regex-escaped and joined by '|'), $label and $window filled
    in, its series tagged wgf_metric="loss" or "latency", joined with 'or'.
    """
    hosts = "|".join(escape_regex_value(endpoint) for endpoint in sorted(set(endpoints)))
    values = {"hosts": hosts, "label": settings.label, "window": format_duration(settings.window)}
    parts = [_tagged(fill_template(settings.query, values), "loss")]
    if settings.latency_query.strip():
        parts.append(_tagged(fill_template(settings.latency_query, values), "latency"))
    return " or ".join(parts)


def read_measurements(
    samples: Sequence[Sample],
    label: str,
    endpoints: Mapping[str, str | None],
) -> list[Measurement]:
    """
    Given the samples of build_query's answer, the label that holds the
    endpoint and {server: endpoint}, return one Measurement per server. Loss
    is clamped to [0, 1] (smokeping can count a reply to a request sent
    before the window); NaN, ±Inf and a missing series are unknown (None).
    Servers sharing an endpoint share its values; if several series answer
    for one endpoint, the worst value counts.
    """
    values: dict[tuple[str, str], float] = {}
    matched = 0
    for sample in samples:
        endpoint = sample.labels.get(label)
        metric = sample.labels.get(METRIC_LABEL)
        if endpoint is None or metric not in ("loss", "latency"):
            continue
        matched += 1
        value = _clean(metric, sample.value)
        if value is None:
            continue
        key = (endpoint, metric)
        values[key] = max(values.get(key, value), value)
    if samples and not matched:
        log.warning(
            "Prometheus answered %d series but none has a %r label; check failover.label and failover.query",
            len(samples),
            label,
        )
    measurements = []
    for name, endpoint in endpoints.items():
        if endpoint is None:
            measurements.append(Measurement(name))
            continue
        measurements.append(Measurement(name, values.get((endpoint, "loss")), values.get((endpoint, "latency"))))
    return measurements


def format_report(result: FailoverResult) -> str:
    """Given a result, return the table wg-failover prints: one row per server, then the outcome."""
    lines = []
    if result.rows:
        header = ("server", "endpoint", "loss", "latency", "rank", "why excluded")
        table = [header]
        for row in result.rows:
            table.append(
                (
                    row.name,
                    result.endpoints.get(row.name) or "-",
                    _percent(row.loss),
                    _milliseconds(row.latency),
                    str(row.rank) if row.rank is not None else "-",
                    "" if row.rank == 1 else row.reason,
                )
            )
        widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
        for cells in table:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
    if result.prometheus_error:
        lines.append(f"Prometheus not used: {result.prometheus_error}")
    lines.append(_outcome(result))
    return "\n".join(lines)


def result_to_json(result: FailoverResult) -> dict[str, Any]:
    """Given a result, return it as a JSON-ready dict (what --json prints)."""
    return {
        "dry_run": result.dry_run,
        "reason": result.reason,
        "from": result.from_server,
        "choice": result.choice,
        "skipped": result.skipped,
        "prometheus": {"used": result.used_prometheus, "error": result.prometheus_error},
        "servers": [
            {
                "server": row.name,
                "endpoint": result.endpoints.get(row.name),
                "loss": _rounded(row.loss),
                "latency_seconds": _rounded(row.latency),
                "rank": row.rank,
                "held_down": row.held_down,
                "left_seconds_ago": row.left_ago,
                "reason": row.reason,
            }
            for row in result.rows
        ],
        "record": result.record.to_json() if result.record else None,
    }


# --- internals ----------------------------------------------------------------


def _last_seq(history: Sequence[SwitchRecord]) -> int:
    return history[-1].seq if history else 0


def _decide(
    config: Config,
    state: StateDir,
    history: Sequence[SwitchRecord],
    *,
    reason: str,
    to: str | None,
    rng: random.Random,
    now: float,
    dry_run: bool,
) -> FailoverResult:
    """Given the state as it is now, return the decision (nothing is written)."""
    current = state.read_current(config.server_names)
    if current.name is None and not current.first_boot:
        log.warning("%s; every server is a candidate", current.problem)
    unusable = {
        server.name: f"config missing: {server.config_path}"
        for server in config.servers
        if server.name != current.name and not server.config_path.is_file()
    }
    if to is not None:
        target = check_target(config, to)
        if to in unusable:
            raise ActionError(f"cannot switch to {to}: its WireGuard config {target.config_path} does not exist")
        already = f"already using {to}; nothing to do" if to == current.name else None
        endpoints = _endpoints(config.servers, skip=set(unusable), warn=False)
        measurements: list[Measurement] = []
        error = None
        if already:
            log.debug("%s", already)  # the result says it
        else:
            # Asked, not waited on: the switch is made whatever Prometheus
            # says, but the history (and the loss panel, and the
            # all-servers-lossy alert) keep every server's loss at that moment.
            measurements, error = _measure(config, endpoints, remember=not dry_run)
            if error is not None:
                log.info("%s; switching without recording the servers' losses", error)
            else:
                _warn_if_lossier(measurements, to, config.failover.tie_epsilon)
        return FailoverResult(
            rows=tuple(_manual_rows(config, current.name, to, measurements)),
            choice=to,
            from_server=current.name,
            reason=reason,
            used_prometheus=bool(measurements),
            record=None,
            endpoints=endpoints,
            dry_run=dry_run,
            prometheus_error=error,
            skipped=already,
        )

    endpoints = _endpoints(config.servers, skip=set(unusable), warn=True)
    measurements, error = _measure(config, endpoints, remember=not dry_run)
    if error is not None:
        if config.failover.on_prometheus_error == "fail":
            raise ActionError(f'{error}; not switching (failover.on_prometheus_error = "fail")')
        log.warning("%s; picking at random among the other servers", error)
        measurements = [Measurement(server.name) for server in config.servers]
    elif not any(m.loss is not None for m in measurements if m.name != current.name and m.name not in unusable):
        log.warning(
            "Prometheus has no loss for any other server (is failover.label %r on the prober's series, "
            "and do the endpoints match its values?); picking at random",
            config.failover.label,
        )
    rows = rank_servers(
        measurements,
        current=current.name,
        history=history,
        now=now,
        hold_down=config.failover.hold_down,
        tie_epsilon=config.failover.tie_epsilon,
        rng=rng,
        unusable=unusable,
        priorities=config.priorities,
        threshold=config.health.threshold,
    )
    best = first_choice(rows)
    if best is None:
        excluded = "; ".join(f"{row.name}: {row.reason}" for row in rows)
        raise ActionError(f"no other server to switch to ({excluded})")
    log.debug("chose %s: %s", best.name, best.reason)  # the result says it
    return FailoverResult(
        rows=tuple(rows),
        choice=best.name,
        from_server=current.name,
        reason=reason,
        used_prometheus=error is None,
        record=None,
        endpoints=endpoints,
        dry_run=dry_run,
        prometheus_error=error,
    )


def _endpoints(servers: Sequence[Server], skip: set[str], warn: bool) -> dict[str, str | None]:
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


def _measure(
    config: Config, endpoints: Mapping[str, str | None], remember: bool
) -> tuple[list[Measurement], str | None]:
    """
    Given the config, {server: endpoint} and whether to remember a failed
    Prometheus URL (not in a dry run), return the measurements from one
    query, and None; or no measurements and why Prometheus could not be asked.
    """
    known = [endpoint for endpoint in endpoints.values() if endpoint is not None]
    if not known:
        return [], "no server has a known endpoint to ask Prometheus about"
    query = build_query(config.failover, known)
    try:
        # A credential file that can't be read is a configuration error, but
        # at failover time the tunnel is already broken: the policy decides.
        samples = open_prometheus(config.prometheus, config.state_dir, remember=remember).query(query)
    except (PrometheusError, ConfigError) as error:
        return [], str(error)
    return read_measurements(samples, config.failover.label, endpoints), None


def _manual_rows(
    config: Config, current: str | None, to: str, measurements: Sequence[Measurement]
) -> Iterable[RankedServer]:
    """Given a switch by hand and what Prometheus measured, return the rows to show: the target first."""
    by_name = {m.name: m for m in measurements}

    def row(name: str, rank: int | None, why: str) -> RankedServer:
        measured = by_name.get(name, Measurement(name))
        return RankedServer(name=name, loss=measured.loss, latency=measured.latency, rank=rank, reason=why)

    yield row(to, 1, "asked for with --to")
    for server in config.servers:
        if server.name != to:
            yield row(server.name, None, "current" if server.name == current else "not asked for")


def _warn_if_lossier(measurements: Sequence[Measurement], to: str, tie_epsilon: float) -> None:
    best = better_than_chosen(measurements, to, tie_epsilon)
    if best is not None and best.loss is not None:
        chosen = next(m for m in measurements if m.name == to)
        log.warning(
            "%s loses %s now, more than %s (%s); switching to it as asked",
            to,
            _percent(chosen.loss),
            best.name,
            _percent(best.loss),
        )


def _tagged(expression: str, metric: str) -> str:
    return f'label_replace({expression}, "{METRIC_LABEL}", "{metric}", "", "")'


def _clean(metric: str, value: float) -> float | None:
    if not math.isfinite(value):
        return None
    if metric == "loss":
        return min(1.0, max(0.0, value))
    return value if value >= 0 else None


def _rounded(value: float | None) -> float | None:
    # Decisions use the exact value; what is shown is what a prober resolves.
    return round_measured(value) if value is not None else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def _outcome(result: FailoverResult) -> str:
    if result.skipped:
        return f"not switching: {result.skipped}"
    best = first_choice(result.rows)
    why = f": {best.reason}" if best else ""
    move = f"from {result.from_server or 'none'} to {result.choice}{why}"
    if result.dry_run:
        return f"would switch {move} (dry run: nothing changed)"
    return f"switched {move} (reason: {one_line(result.reason)})"
