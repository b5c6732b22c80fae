"""A fleet on one backend: how displaced clients spread, and what the queries cost.

A real VictoriaMetrics holds the smokeping data of CLIENTS clients, each
with its own external prober of SERVERS servers and its own tunnel prober,
every series labelled ``wg_client`` as a Prometheus agent's
``external_labels`` would label it. One server has been dead for ten
minutes (100% loss from every client). Each client then runs the real
decision, ``fail_over(..., dry_run=True)`` with its own ``[fleet]`` settings
and its own random state, against the backend, as if it had been on the dead
server: where do the displaced clients go?

The original's rule (sort by loss, take the first; ``sort -n`` keeps name
order among equal losses) is applied to the same losses: once with the one
view the original had (its queries select by host only, so every client sees
the fleet's numbers), once with each client's own.

The data: every healthy server loses a few pings in a thousand (its own
rate, plus each client's path), as independent random drops, so many
clients see exactly 0% for several servers; round-trip times are 20-30 ms,
different for each client and server (one region). Then the latency of the
ranking and health queries is measured at the backend with all of it
present, raw and through the recording rules of docs/recording-rules.yml:
vmalert (Debian's, the same package as the backend) evaluates that file
over the last ten minutes (``-replay.*``) and writes the recorded series
back to the backend, and the recorded queries are checked against the raw
ones: the same losses within tie_epsilon, the same health verdicts.

    python -m benchmarks.fleet [--quick]    # --quick: 100 clients decide (all 1,000 are in the backend)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests

from benchmarks.common import markdown_table
from wgfailover.actions.failover import fail_over
from wgfailover.config import DEFAULT_HEALTH_QUERY, Config, format_duration, parse_config
from wgfailover.evidence.readings import ServerReading, TunnelReading, clean_loss
from wgfailover.evidence.servers_loss import build_query, read_server_readings
from wgfailover.evidence.tunnel import render_query
from wgfailover.policy.health import is_failure
from wgfailover.policy.ranking import first_choice, rank_servers
from wgfailover.prometheus import Sample
from wgfailover.state import StateDir
from wglab.prometheus import VictoriaMetricsServer

CLIENTS = 1000
SERVERS = 10
DEAD = "srv03"
CLIENT_LABEL = "wg_client"
PING_INTERVAL = 1.0
STEP = 30  # seconds between samples, as a 30s scrape interval
PAST = 900  # seconds of history before now
FUTURE = 2400  # and after, so the last 5 minutes stay full while the benchmark runs
TUNNEL_TARGETS = ("198.41.0.4", "192.33.4.12")
QUICK_CLIENTS = 100  # clients that decide in --quick (the backend still holds all CLIENTS)
RULES_FILE = Path(__file__).resolve().parents[1] / "docs" / "recording-rules.yml"
RULES_INTERVAL = 30  # seconds, the group's interval in RULES_FILE
RULES_REPLAYED = 600  # seconds of rule evaluations before the recorded queries are asked
VMALERT_BIN = "/usr/bin/vmalert"
HEALTH_SPAN = 60.0  # seconds a health check judges: one timer period
TUNNEL_FAILING_LOSS = 0.3  # the lossy tunnels' loss, above health.threshold (0.15)

# The query settings that read the recorded series, as docs/fleets.md shows
# them (tests/unit/test_benchmarks_smoke.py checks they are there).
RECORDED_RANKING = {
    "client": {
        "query": (
            "avg by ($label) "
            '(avg_over_time(wg_client_host:smokeping_loss:ratio_rate1m{$label=~"$hosts"$scope}[$window]))'
        ),
        "latency_query": (
            "avg by ($label) "
            '(avg_over_time(wg_client_host:smokeping_rtt_seconds:mean_rate1m{$label=~"$hosts"$scope}[$window]))'
        ),
    },
    "fleet": {
        "query": 'avg by ($label) (avg_over_time(host:smokeping_loss:ratio_rate1m{$label=~"$hosts"}[$window]))',
    },
}
RECORDED_HEALTH_QUERY = "avg(avg_over_time(wg_client_job:smokeping_loss:ratio_rate1m{$selector$scope}[$window]))"


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    rule: str  # "ours" or "original"
    scope: str  # "client" or "fleet"
    weights: dict[str, float]
    latency_tie: float | None = None  # failover.latency_tie; None: the default


def server_names() -> list[str]:
    return [f"srv{index + 1:02d}" for index in range(SERVERS)]


def endpoint(server: str) -> str:
    return f"10.77.0.{int(server[3:])}"


WEIGHTS = {name: (2.0 if int(name[3:]) <= SERVERS // 2 else 1.0) for name in server_names()}

SCENARIOS = [
    Scenario("original: sort by loss, take the first (one shared view)", "original", "fleet", {}),
    Scenario("original's rule on each client's own view", "original", "client", {}),
    Scenario("ours, ranking_scope = client (default)", "ours", "client", {}),
    Scenario("ours, ranking_scope = fleet", "ours", "fleet", {}),
    Scenario("ours, client scope, weight 2 for srv01-05, 1 for srv06-10", "ours", "client", WEIGHTS),
    Scenario("ours, fleet scope, same weights", "ours", "fleet", WEIGHTS),
    Scenario("ours, client scope, same weights, latency_tie = 0.25", "ours", "client", WEIGHTS, 0.25),
    Scenario("ours, client scope, same weights, latency_tie = 0.5", "ours", "client", WEIGHTS, 0.5),
]


# --- data -------------------------------------------------------------------------


def _drops(rng: random.Random, loss: float, pings: int) -> list[int]:
    """Given a loss rate and a number of pings, return the indexes of the lost ones (geometric gaps)."""
    if loss <= 0:
        return []
    if loss >= 1:
        return list(range(pings))
    lost: list[int] = []
    position = -1
    while True:
        position += 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - loss))
        if position >= pings:
            return lost
        lost.append(position)


def _series_lines(
    labels: dict[str, str], loss_before: float, loss_after: float, died: int | None, latency: float, rng: random.Random
) -> Iterator[str]:
    """Given one prober target's labels and losses, yield its three counters as /api/v1/import JSON lines."""
    now = int(time.time())
    start, end = now - PAST, now + FUTURE
    pings = int((end - start) / PING_INTERVAL)
    cut = pings if died is None else int((died - start) / PING_INTERVAL)
    lost = set(_drops(rng, loss_before, cut)) | {cut + i for i in _drops(rng, loss_after, pings - cut)}
    stamps = list(range(start, end + 1, STEP))
    requests_seen, replies_seen = [], []
    replies, next_lost = 0, sorted(lost)
    index = 0
    for stamp in stamps:
        sent = int((stamp - start) / PING_INTERVAL)
        while index < len(next_lost) and next_lost[index] < sent:
            index += 1
        replies = sent - index
        requests_seen.append(sent + 1000)
        replies_seen.append(replies + 1000)
    millis = [stamp * 1000 for stamp in stamps]
    for metric, values in (
        ("smokeping_requests_total", requests_seen),
        ("smokeping_response_duration_seconds_count", replies_seen),
        ("smokeping_response_duration_seconds_sum", [round(value * latency, 6) for value in replies_seen]),
    ):
        yield json.dumps({"metric": {"__name__": metric, **labels}, "values": values, "timestamps": millis})


def failing_tunnels() -> set[int]:
    """Return the numbers of the clients whose own tunnel loses TUNNEL_FAILING_LOSS (every tenth)."""
    return {number for number in range(1, CLIENTS + 1) if number % 10 == 0}


def fleet_lines(seed: int = 1) -> Iterator[str]:
    """Given a seed, yield every series of the fleet as /api/v1/import JSON lines."""
    rng = random.Random(seed)
    # Its own stream, so the servers' data does not depend on the tunnels'.
    tunnel_rng = random.Random(seed + 1)
    failing = failing_tunnels()
    died = int(time.time()) - 600
    server_loss = {name: rng.uniform(0.0005, 0.003) for name in server_names()}
    for number in range(1, CLIENTS + 1):
        client = client_name(number)
        common = {CLIENT_LABEL: client, "instance": f"{client}:9374"}
        for name in server_names():
            labels = {**common, "job": "smokeping", "host": endpoint(name), "ip": endpoint(name)}
            loss = server_loss[name] + rng.uniform(0.0, 0.003)
            after = 1.0 if name == DEAD else loss
            yield from _series_lines(
                labels, loss, after, died if name == DEAD else None, rng.uniform(0.020, 0.030), rng
            )
        for target in TUNNEL_TARGETS:
            labels = {**common, "job": "vpn-prober", "instance": f"{client}:9375", "host": target, "ip": target}
            if number in failing:
                yield from _series_lines(labels, 0.002, TUNNEL_FAILING_LOSS, died, 0.025, tunnel_rng)
            else:
                yield from _series_lines(labels, 0.002, 0.002, None, 0.025, tunnel_rng)


def load_fleet(server: VictoriaMetricsServer, seed: int = 1) -> int:
    """Given a started VictoriaMetrics, import the fleet's series and return how many there are."""
    count = 0
    batch: list[str] = []

    def send() -> None:
        request = urllib.request.Request(  # noqa: S310 - the benchmark's own loopback server
            server.url + "/api/v1/import", data=("\n".join(batch) + "\n").encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            response.read()
        batch.clear()

    for line in fleet_lines(seed):
        batch.append(line)
        count += 1
        if len(batch) >= 2000:
            send()
    if batch:
        send()
    with urllib.request.urlopen(server.url + "/internal/force_flush", timeout=60):  # noqa: S310
        pass
    return count


# --- decisions --------------------------------------------------------------------


def client_config(
    workdir: Path,
    url: str,
    client: str,
    scope: str,
    weights: dict[str, float],
    failover: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
) -> Config:
    """Given where and who, return one client's Config; ``failover`` and ``health`` are extra keys of those sections."""
    servers = {
        name: {"endpoint": endpoint(name), **({"weight": weights[name]} if name in weights else {})}
        for name in server_names()
    }
    document = {
        "config_dir": str(workdir / "wireguard"),
        "active_link": str(workdir / "wg-active.conf"),
        "state_dir": str(workdir / "state"),
        "servers": servers,
        "prometheus": {"url": url, "timeout": 30},
        "failover": failover or {},
        "health": health or {},
        "fleet": {"client": client, "client_label": CLIENT_LABEL, "ranking_scope": scope},
    }
    return parse_config(document, workdir / "config.toml")


def client_name(number: int) -> str:
    return f"client-{number:04d}"


def original_choice(losses: dict[str, float | None]) -> str | None:
    """Given {server: loss} of the candidates, return the original's pick: lowest loss, first name among equals."""
    known = [(loss, name) for name, loss in losses.items() if loss is not None]
    return min(known)[1] if known else None


@dataclasses.dataclass(frozen=True)
class Spread:
    scenario: Scenario
    counts: dict[str, int]
    decisions: int
    used_random: int  # decisions where Prometheus could not be used

    def expected(self, name: str) -> float:
        weights = {server: self.scenario.weights.get(server, 1.0) for server in self.counts}
        return self.decisions * weights[name] / sum(weights.values())

    @property
    def max_over_even(self) -> float:
        return max(self.counts[name] / self.expected(name) for name in self.counts)

    @property
    def min_over_even(self) -> float:
        return min(self.counts[name] / self.expected(name) for name in self.counts)


def measure_spread(url: str, workdir: Path, scenario: Scenario, clients: int = CLIENTS) -> Spread:
    """Given the backend and a scenario, let every client decide as if displaced from DEAD and count where they go."""
    survivors = [name for name in server_names() if name != DEAD]
    counts: Counter[str] = Counter({name: 0 for name in survivors})
    unusable = 0
    for number in range(1, clients + 1):
        client = client_name(number)
        failover = {} if scenario.latency_tie is None else {"latency_tie": scenario.latency_tie}
        config = client_config(workdir, url, client, scenario.scope, scenario.weights, failover)
        result = fail_over(config, reason="failover", dry_run=True, rng=random.Random(number * 7919 + 1))
        if not result.used_prometheus:
            unusable += 1
        if scenario.rule == "ours":
            choice = result.choice
        else:
            choice = original_choice({row.name: row.loss for row in result.rows if row.rank is not None})
        if choice is not None:
            counts[choice] += 1
    return Spread(scenario, dict(counts), clients, unusable)


# --- recording rules --------------------------------------------------------------


def record_rules(server: VictoriaMetricsServer, start: float, end: float) -> float:
    """
    Given the backend and a span (unix times), evaluate RULES_FILE over it
    with vmalert's replay (range queries at the group's interval, as the rule
    evaluator would have run them), the recorded series written back to the
    backend, and wait until they can be queried; return the seconds it took.
    Raise RuntimeError if vmalert fails.
    """
    started = time.monotonic()
    vmalert = shutil.which("vmalert") or VMALERT_BIN
    result = subprocess.run(  # noqa: S603 - fixed argv, the benchmark's own loopback backend
        [
            vmalert,
            f"-rule={RULES_FILE}",
            f"-datasource.url={server.url}",
            f"-remoteWrite.url={server.url}",
            f"-replay.timeFrom={_rfc3339(start)}",
            f"-replay.timeTo={_rfc3339(end)}",
            # vmalert sends its -datasource.queryStep (default 5m) as the step
            # of the replay's range queries too: a point every 5 minutes.
            f"-datasource.queryStep={RULES_INTERVAL}s",
            "-replay.disableProgressBar",
            "-loggerLevel=ERROR",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"vmalert -replay exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    with urllib.request.urlopen(server.url + "/internal/force_flush", timeout=60):  # noqa: S310
        pass
    lookback = f"[{int(end - start) + 60}s]"
    for name, count in (
        ("wg_client_host:smokeping_loss:ratio_rate1m", CLIENTS * SERVERS),
        # The dead server answers no ping: its round trip is 0/0, NaN, not recorded.
        ("wg_client_host:smokeping_rtt_seconds:mean_rate1m", CLIENTS * (SERVERS - 1)),
        ("host:smokeping_loss:ratio_rate1m", SERVERS),
        ("wg_client_job:smokeping_loss:ratio_rate1m", CLIENTS),
    ):
        server.wait_for_series(f"last_over_time({name}{lookback})", timeout=120, min_series=count)
    return time.monotonic() - started


def _rfc3339(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- query latency --------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def time_queries(url: str, queries: Sequence[str], at: float) -> list[float]:
    """
    Given the backend, queries and a unix time, send each once at that time
    (POST, as the tool does); return the seconds each took.
    """
    took = []
    with requests.Session() as session:
        for query in queries:
            started = time.perf_counter()
            response = session.post(url + "/api/v1/query", data={"query": query, "time": f"{at:.3f}"}, timeout=30)
            response.raise_for_status()
            took.append(time.perf_counter() - started)
    return took


def query_at(session: requests.Session, url: str, query: str, at: float) -> list[Sample]:
    """Given the backend, a query and a unix time, return the instant answer's samples."""
    response = session.post(url + "/api/v1/query", data={"query": query, "time": f"{at:.3f}"}, timeout=60)
    response.raise_for_status()
    return [Sample(item["metric"], float(item["value"][1])) for item in response.json()["data"]["result"]]


def ranking_query(config: Config) -> str:
    return build_query(config.failover, [endpoint(name) for name in server_names()], fleet=config.fleet)


def health_query(config: Config) -> str:
    return render_query(config.health.query, config.health.selector, format_duration(HEALTH_SPAN), config.fleet)


def recorded_config(workdir: Path, url: str, client: str, scope: str) -> Config:
    """Given a client and a ranking scope, return its Config with the query settings that read the recorded series."""
    return client_config(workdir, url, client, scope, {}, RECORDED_RANKING[scope], {"query": RECORDED_HEALTH_QUERY})


def measure_latency(url: str, workdir: Path, runs: int, at: float) -> list[tuple[str, list[float]]]:
    """
    Given the backend, a number of runs and a unix time, return (what, seconds
    per query) for the ranking and health queries of randomly picked clients
    at that time, each raw and recorded.
    """
    results = []
    rng = random.Random(5)
    picks = [client_name(rng.randint(1, CLIENTS)) for _ in range(runs)]
    for scope in ("client", "fleet"):
        # The fleet's view sums every client's series: slower, so fewer runs.
        count = runs if scope == "client" else max(10, runs // 5)
        raw = [ranking_query(client_config(workdir, url, client, scope, {})) for client in picks[:count]]
        recorded = [ranking_query(recorded_config(workdir, url, client, scope)) for client in picks[:count]]
        results.append((f"ranking, ranking_scope = {scope}", time_queries(url, raw, at)))
        results.append((f"ranking, ranking_scope = {scope}, recorded", time_queries(url, recorded, at)))
    raw = [health_query(client_config(workdir, url, client, "client", {})) for client in picks]
    recorded = [health_query(recorded_config(workdir, url, client, "client")) for client in picks]
    span = f"{HEALTH_SPAN:g}s span"
    results.append((f"health check, one client's tunnel ({span})", time_queries(url, raw, at)))
    results.append((f"health check, one client's tunnel ({span}), recorded", time_queries(url, recorded, at)))
    unscoped = render_query(DEFAULT_HEALTH_QUERY, 'job="vpn-prober"', format_duration(HEALTH_SPAN))
    results.append(
        ("health check without scope (every client summed)", time_queries(url, [unscoped] * max(10, runs // 5), at))
    )
    return results


# --- do the recorded series decide as the raw ones do? --------------------------


@dataclasses.dataclass(frozen=True)
class Agreement:
    what: str
    values: int  # losses compared
    max_difference: float  # the largest |raw - recorded| among them (inf: known on one side only)
    tolerance: float
    within: int  # values within tolerance
    decisions: int
    same: int  # decisions that came out the same


def compare_ranking(url: str, workdir: Path, clients: int, at: float, scope: str) -> Agreement:
    """
    Given the backend, how many clients, a unix time and a ranking scope, ask
    the raw and the recorded ranking query of each client at that time and
    return how far the losses differ and how often the choice (rank_servers,
    as displaced from DEAD, the same random seed) is the same.
    """
    endpoints = {name: endpoint(name) for name in server_names()}
    values = within = same = 0
    worst = 0.0
    tolerance = 0.0
    # In the fleet scope every client asks the same query: one is enough.
    asked = clients if scope == "client" else 1
    with requests.Session() as session:
        for number in range(1, asked + 1):
            client = client_name(number)
            choices = []
            readings: list[list[ServerReading]] = []
            for config in (
                client_config(workdir, url, client, scope, {}),
                recorded_config(workdir, url, client, scope),
            ):
                tolerance = config.failover.tie_epsilon
                found = read_server_readings(
                    query_at(session, url, ranking_query(config), at), config.failover.label, endpoints, warn=False
                )
                readings.append(found)
                rows = rank_servers(
                    found,
                    current=DEAD,
                    history=[],
                    now=at,
                    hold_down=0,
                    tie_epsilon=config.failover.tie_epsilon,
                    rng=random.Random(number),
                    latency_tie=config.failover.latency_tie,
                )
                best = first_choice(rows)
                choices.append(best.name if best else None)
            for raw_reading, recorded_reading in zip(*readings, strict=True):
                values += 1
                difference = _difference(raw_reading.loss, recorded_reading.loss)
                worst = max(worst, difference)
                within += difference <= tolerance
            same += choices[0] == choices[1]
    return Agreement(f"ranking, ranking_scope = {scope}", values, worst, tolerance, within, asked, same)


def compare_health(url: str, workdir: Path, clients: int, at: float) -> Agreement:
    """Given the backend, how many clients and a unix time, compare each client's raw and recorded health check."""
    values = within = same = 0
    worst = 0.0
    tolerance = 0.0
    with requests.Session() as session:
        for number in range(1, clients + 1):
            client = client_name(number)
            losses, verdicts = [], []
            for config in (
                client_config(workdir, url, client, "client", {}),
                recorded_config(workdir, url, client, "client"),
            ):
                tolerance = config.failover.tie_epsilon
                samples = query_at(session, url, health_query(config), at)
                loss = clean_loss(samples[0].value) if samples else None
                losses.append(loss)
                verdicts.append(is_failure(TunnelReading("prometheus", loss, HEALTH_SPAN), config.health))
            values += 1
            difference = _difference(*losses)
            worst = max(worst, difference)
            within += difference <= tolerance
            same += verdicts[0] == verdicts[1]
    return Agreement(f"health check ({HEALTH_SPAN:g}s span)", values, worst, tolerance, within, clients, same)


def _difference(raw: float | None, recorded: float | None) -> float:
    if raw is None and recorded is None:
        return 0.0
    if raw is None or recorded is None:
        return math.inf
    return abs(raw - recorded)


# --- the whole benchmark ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Results:
    series: int
    loaded: float  # seconds to load the fleet
    spreads: list[Spread]
    recorded_in: float  # seconds vmalert took to record RULES_REPLAYED seconds of rules
    latencies: list[tuple[str, list[float]]]
    agreements: list[Agreement]
    failing_tunnels: int  # clients whose tunnel is lossy in the data (health verdicts to agree on)


def measure(quick: bool = False) -> Results:
    """Run everything: load, spread, recording rules, query latency, agreement; return the results."""
    with tempfile.TemporaryDirectory(prefix="wgf-bench-fleet-") as tmp:
        workdir = Path(tmp)
        (workdir / "wireguard").mkdir()
        for name in server_names():
            (workdir / "wireguard" / name).write_text(f"[Peer]\nEndpoint = {endpoint(name)}:51820\n")
        state = StateDir(workdir / "state")
        state.ensure()
        state.write_current(DEAD)
        with VictoriaMetricsServer(workdir=workdir / "vm") as server:
            started = time.monotonic()
            series = load_fleet(server)
            server.wait_for_series('smokeping_requests_total{job="smokeping"}', timeout=120, min_series=SERVERS)
            loaded = time.monotonic() - started
            clients = QUICK_CLIENTS if quick else CLIENTS
            spreads = [measure_spread(server.url, workdir, scenario, clients) for scenario in SCENARIOS]
            # The rules' last evaluation on their interval's grid; every query below is asked at that time.
            at = float(int(time.time()) // RULES_INTERVAL * RULES_INTERVAL)
            recorded_in = record_rules(server, at - RULES_REPLAYED, at)
            latencies = measure_latency(server.url, workdir, 50 if quick else 500, at)
            agreements = [
                compare_ranking(server.url, workdir, clients, at, "client"),
                compare_ranking(server.url, workdir, clients, at, "fleet"),
                compare_health(server.url, workdir, CLIENTS, at),
            ]
    return Results(series, loaded, spreads, recorded_in, latencies, agreements, len(failing_tunnels()))


def report(results: Results) -> str:
    """Given the results, return them as markdown: the spread table, the query latencies, the agreement."""
    survivors = [name for name in server_names() if name != DEAD]
    header = ("rule", *survivors, "max / even", "min / even")
    rows = []
    for spread in results.spreads:
        rows.append(
            (
                spread.scenario.name,
                *(str(spread.counts[name]) for name in survivors),
                f"{spread.max_over_even:.2f}",
                f"{spread.min_over_even:.2f}",
            )
        )
    decisions = results.spreads[0].decisions if results.spreads else 0
    random_used = sum(spread.used_random for spread in results.spreads)
    lines = [
        f"{CLIENTS} clients x {SERVERS} servers in VictoriaMetrics ({results.series} series, loaded in "
        f"{results.loaded:.0f} s); {DEAD} dead for 10 minutes; {decisions} clients each decide where to go. "
        "Counts are clients per server; even share is by weight (all 1 unless stated). Decisions that fell back "
        f"to random: {random_used}.",
        "",
        markdown_table(header, rows),
        "",
        f"Recording rules ({RULES_FILE.parent.name}/{RULES_FILE.name}) evaluated by vmalert -replay over "
        f"{RULES_REPLAYED // 60} minutes at {RULES_INTERVAL} s: {results.recorded_in:.0f} s. Every query below is "
        "asked at the rules' last evaluation.",
        "",
        markdown_table(
            ("query at the backend", "runs", "median", "p99"),
            [
                (
                    what,
                    str(len(took)),
                    f"{statistics.median(took) * 1000:.1f} ms",
                    f"{percentile(took, 0.99) * 1000:.1f} ms",
                )
                for what, took in results.latencies
            ],
        ),
        "",
        f"Recorded against raw, the same clients at the same time ({results.failing_tunnels} of the {CLIENTS} "
        f"clients' tunnels lose {TUNNEL_FAILING_LOSS:.0%}):",
        "",
        markdown_table(
            ("query", "losses compared", "largest difference", "within tolerance", "same decision"),
            [
                (
                    agreement.what,
                    str(agreement.values),
                    f"{agreement.max_difference:.4f}",
                    f"{agreement.within} (±{agreement.tolerance:g})",
                    f"{agreement.same} of {agreement.decisions}",
                )
                for agreement in results.agreements
            ],
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_CLIENTS} clients decide instead of {CLIENTS}, fewer query runs"
    )
    args = parser.parse_args(argv)
    print(report(measure(quick=args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
