"""``--check-config --online``: what only Prometheus and the host can tell.

The offline check proves the file is well formed and the files it names
exist. A config can pass it and still never work: a URL that answers 404, a
token Prometheus refuses, an external prober that does not ping one of the
servers (its loss is then unknown and it ranks last forever), a health
selector that matches nothing (every check exits 69) or that includes
smokeping's default ``localhost`` target (which never loses a packet and
hides the tunnel's loss), a textfile directory node_exporter's package
made but this user cannot write, a restart program that is not installed.
Each of those is one line here, with the key to change.

Every query gets a budget of its own (``prometheus.timeout``): a check is
run by hand, and a slow first query should not hide what the next ones say.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping

from wgfailover.config import Config, PrometheusSettings, fill_template, format_duration
from wgfailover.errors import ConfigError, PrometheusError
from wgfailover.evidence.servers_loss import METRIC_LABEL, build_query
from wgfailover.evidence.tunnel import render_query
from wgfailover.prometheus import PrometheusClient, Sample
from wgfailover.prometheus import _redact_url as redact_url  # the one redaction rule
from wgfailover.scope import health_placeholders
from wgfailover.servers import resolve_endpoint

# smokeping_prober's label for the target it pings.
PROBER_TARGET_LABEL = "host"
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


@dataclasses.dataclass(frozen=True)
class OnlineReport:
    """What the online check found: problems make a run fail, warnings may, notes are what was confirmed."""

    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def is_local_target(host: str) -> bool:
    """Given a prober target, return whether it is this host itself (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def servers_without_series(endpoints: Mapping[str, str | None], answered: Iterable[str]) -> list[str]:
    """Given {server: endpoint} and the endpoints the ranking query answered for, return the servers left out."""
    seen = set(answered)
    return [name for name, endpoint in endpoints.items() if endpoint is not None and endpoint not in seen]


def check_online(config: Config, clock: Callable[[], float] = time.monotonic) -> OnlineReport:
    """
    Given a config that passed the offline check, ask every Prometheus URL
    and the host what a run will need; return the OnlineReport. Never raises
    for what it finds: every finding is a line of the report.
    """
    report = OnlineReport()
    _check_host(config, report)
    settings = _check_urls(config, report, clock)
    if settings is None:
        return report

    def ask(promql: str) -> list[Sample] | str:
        try:
            return PrometheusClient(settings, clock=clock).query(promql)
        except (PrometheusError, ConfigError) as error:
            return str(error)

    _check_ranking(config, report, ask)
    _check_health(config, report, ask)
    return report


def _check_host(config: Config, report: OnlineReport) -> None:
    textfile_dir = config.textfile_dir
    if textfile_dir is not None:
        if not textfile_dir.is_dir():
            report.problems.append(
                f"textfile_dir: {textfile_dir} does not exist (is node_exporter's package installed?)"
            )
        elif not os.access(textfile_dir, os.W_OK | os.X_OK):
            report.problems.append(f"textfile_dir: {textfile_dir} is not writable by uid {os.geteuid()}")
        else:
            report.notes.append(f"textfile_dir {textfile_dir} is writable")
    commands = {"restart_command": config.restart_command, "health.failover_command": config.health.failover_command}
    for key, argv in commands.items():
        if not argv:
            continue
        found = shutil.which(argv[0])
        if found is None:
            report.problems.append(f"{key}: program {argv[0]!r} not found (PATH={os.environ.get('PATH', '')})")
        else:
            report.notes.append(f"{key}: {argv[0]} is {found}")


def _check_urls(config: Config, report: OnlineReport, clock: Callable[[], float]) -> PrometheusSettings | None:
    """Ask each URL a trivial query with the configured auth and TLS; return the settings of the first that answers."""
    urls = config.prometheus.urls
    if not urls:
        report.problems.append("prometheus.url: not set, so the ranking is random and health checks cannot measure")
        return None
    first = None
    for index, url in enumerate(urls):
        key = "prometheus.url" if len(urls) == 1 else f"prometheus.url[{index}]"
        settings = dataclasses.replace(config.prometheus, url=url, urls=(url,))
        try:
            PrometheusClient(settings, clock=clock).query("vector(1)")
        except ConfigError as error:
            report.problems.append(str(error))
            continue
        except PrometheusError as error:
            report.problems.append(f"{key}: {error}")
            continue
        report.notes.append(f"{key} {redact_url(url)} answers")
        first = first or settings
    return first


def _check_ranking(config: Config, report: OnlineReport, ask: Callable[[str], list[Sample] | str]) -> None:
    endpoints: dict[str, str | None] = {}
    for server in config.servers:
        try:
            endpoints[server.name] = resolve_endpoint(server)
        except ConfigError as error:
            endpoints[server.name] = None
            report.problems.append(f"servers.{server.name}: {error}")
    known = [endpoint for endpoint in endpoints.values() if endpoint is not None]
    if not known:
        return
    answer = ask(build_query(config.failover, known, fleet=config.fleet))
    if isinstance(answer, str):
        report.problems.append(f"failover.query: {answer}")
        return
    label = config.failover.label
    answered = [
        sample.labels[label]
        for sample in answer
        if sample.labels.get(METRIC_LABEL) == "loss" and label in sample.labels
    ]
    missing = servers_without_series(endpoints, answered)
    for name in missing:
        report.problems.append(
            f'servers.{name}: the ranking query returns no loss series with {label}="{endpoints[name]}" '
            "(does the external prober ping it, and is failover.label right?)"
        )
    if not missing:
        report.notes.append(f"the ranking query has a loss series for every server ({label} label)")


def _check_health(config: Config, report: OnlineReport, ask: Callable[[str], list[Sample] | str]) -> None:
    health = config.health
    # As the default health query selects: the selector, then this client's matcher in a fleet.
    placeholders = health_placeholders(config.fleet)
    matchers = fill_template(health.selector, placeholders) + placeholders["scope"]
    series = ask(f"smokeping_requests_total{{{matchers}}}")
    if isinstance(series, str):
        report.problems.append(f"health.selector: {series}")
        return
    if not series:
        report.problems.append(
            f"health.selector: no smokeping_requests_total{{{matchers}}} series "
            "(is the prober in the VPN namespace scraped with these labels?)"
        )
    else:
        targets = sorted({sample.labels.get(PROBER_TARGET_LABEL, "?") for sample in series})
        report.notes.append(
            f"health.selector matches {len(series)} series, {len(targets)} targets: {', '.join(targets)}"
        )
        for target in targets:
            if is_local_target(target):
                report.warnings.append(
                    f"health.selector: target {target!r} is this host (smokeping_prober's default?): it never "
                    "loses packets and dilutes the tunnel's loss; remove it from the inner prober's targets"
                )
    loss = ask(render_query(health.query, health.selector, format_duration(health.window), config.fleet))
    if isinstance(loss, str):
        report.problems.append(f"health.query: {loss}")
    elif not loss:
        report.problems.append(f"health.query: no result over health.window ({format_duration(health.window)})")
