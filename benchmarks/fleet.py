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
present.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests

from benchmarks.common import markdown_table
from wgfailover.actions.failover import fail_over
from wgfailover.config import DEFAULT_HEALTH_QUERY, Config, format_duration, parse_config
from wgfailover.evidence.servers_loss import build_query
from wgfailover.evidence.tunnel import render_query
from wgfailover.state import StateDir
from wglab.prometheus import VictoriaMetricsServer

CLIENTS = 1000
SERVERS = 10
DEAD = "srv03"
CLIENT_LABEL = "wg_client"
PING_INTERVAL = 1.0
STEP = 30  # seconds between samples, as a 30s scrape interval
PAST = 900  # seconds of history before now
FUTURE = 1500  # and after, so the last 5 minutes stay full while the benchmark runs
TUNNEL_TARGETS = ("198.41.0.4", "192.33.4.12")


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    rule: str  # "ours" or "original"
    scope: str  # "client" or "fleet"
    weights: dict[str, float]


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
]


# --- data -------------------------------------------------------------------------


def _drops(rng: random.Random, loss: float, pings: int) -> list[int]:
    """Given a loss rate and a number of pings, return the indexes of the lost ones (geometric gaps)."""
    if loss <= 0:
        return []
    if loss >= 1:
        return list(range(pings))
    lost, position = [], -1
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


def fleet_lines(seed: int = 1) -> Iterator[str]:
    """Given a seed, yield every series of the fleet as /api/v1/import JSON lines."""
    rng = random.Random(seed)
    died = int(time.time()) - 600
    server_loss = {name: rng.uniform(0.0005, 0.003) for name in server_names()}
    for number in range(1, CLIENTS + 1):
        client = f"client-{number:04d}"
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
            yield from _series_lines(labels, 0.002, 0.002, None, 0.025, rng)


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


def client_config(workdir: Path, url: str, client: str, scope: str, weights: dict[str, float]) -> Config:
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
        "fleet": {"client": client, "client_label": CLIENT_LABEL, "ranking_scope": scope},
    }
    return parse_config(document, workdir / "config.toml")


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
        client = f"client-{number:04d}"
        config = client_config(workdir, url, client, scenario.scope, scenario.weights)
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


# --- query latency --------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def time_queries(url: str, queries: Sequence[str]) -> list[float]:
    """Given the backend and queries, send each once (POST, as the tool does) and return the seconds each took."""
    took = []
    with requests.Session() as session:
        for query in queries:
            started = time.perf_counter()
            response = session.post(url + "/api/v1/query", data={"query": query}, timeout=30)
            response.raise_for_status()
            took.append(time.perf_counter() - started)
    return took


def measure_latency(url: str, workdir: Path, runs: int) -> list[tuple[str, list[float]]]:
    """Given the backend, return (what, seconds per query) for the ranking and health queries of many clients."""
    results = []
    rng = random.Random(5)
    picks = [f"client-{rng.randint(1, CLIENTS):04d}" for _ in range(runs)]
    endpoints = [endpoint(name) for name in server_names()]
    for scope in ("client", "fleet"):
        queries = [
            build_query(config.failover, endpoints, fleet=config.fleet)
            for config in (client_config(workdir, url, client, scope, {}) for client in picks)
        ]
        # The fleet's view sums every client's series: slower, so fewer runs.
        count = len(queries) if scope == "client" else max(10, len(queries) // 5)
        results.append((f"ranking, ranking_scope = {scope}", time_queries(url, queries[:count])))
    health = [
        render_query(DEFAULT_HEALTH_QUERY, 'job="vpn-prober"', format_duration(60), config.fleet)
        for config in (client_config(workdir, url, client, "client", {}) for client in picks)
    ]
    results.append(("health check, one client's tunnel (60s span)", time_queries(url, health)))
    unscoped = render_query(DEFAULT_HEALTH_QUERY, 'job="vpn-prober"', format_duration(60))
    results.append(
        ("health check without scope (every client summed)", time_queries(url, [unscoped] * max(10, runs // 5)))
    )
    return results


# --- the whole benchmark ----------------------------------------------------------


def measure(quick: bool = False) -> tuple[int, float, list[Spread], list[tuple[str, list[float]]]]:
    """Run everything; return (series, load seconds, spreads, latencies)."""
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
            clients = 100 if quick else CLIENTS
            spreads = [measure_spread(server.url, workdir, scenario, clients) for scenario in SCENARIOS]
            latencies = measure_latency(server.url, workdir, 50 if quick else 500)
    return series, loaded, spreads, latencies


def report(series: int, loaded: float, spreads: Sequence[Spread], latencies: Sequence[tuple[str, list[float]]]) -> str:
    survivors = [name for name in server_names() if name != DEAD]
    header = ("rule", *survivors, "max / even", "min / even")
    rows = []
    for spread in spreads:
        rows.append(
            (
                spread.scenario.name,
                *(str(spread.counts[name]) for name in survivors),
                f"{spread.max_over_even:.2f}",
                f"{spread.min_over_even:.2f}",
            )
        )
    decisions = spreads[0].decisions if spreads else 0
    random_used = sum(spread.used_random for spread in spreads)
    lines = [
        f"{CLIENTS} clients x {SERVERS} servers in VictoriaMetrics ({series} series, loaded in {loaded:.0f} s); "
        f"{DEAD} dead for 10 minutes; {decisions} clients each decide where to go. Counts are clients per "
        "server; even share is by weight (all 1 unless stated). Decisions that fell back to random: "
        f"{random_used}.",
        "",
        markdown_table(header, rows),
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
                for what, took in latencies
            ],
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(report(*measure(quick="--quick" in sys.argv)))
