"""A real Prometheus on loopback, serving smokeping-shaped data made with promtool.

The series are what smokeping_prober exports and Prometheus scrapes:
``smokeping_requests_total`` and ``smokeping_response_duration_seconds_count``
/ ``_sum`` with ``host`` and ``ip`` labels per endpoint (job "smokeping"),
plus the internal prober's two targets (job "vpn-prober"). Each endpoint
has a known, constant loss and latency, so the right choice is known.

Prometheus only serves blocks from disk, and an instant query at "now" must
find samples within its range window. The data therefore spans from
``past`` before now to ``future`` after it: whenever the benchmark queries
in that span, the last 5 minutes look like a prober that has been running
steadily. Samples after the query time are never read by an instant query.
No scrape jobs are configured, so nothing is appended to the head (its
minimum valid time is the newest block's end anyway).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wglab.prometheus import PrometheusServer

PING_INTERVAL = 1.0  # one ping per second per target, as smokeping_prober's default
VPN_PROBER_TARGETS = ("10.200.250.1", "10.200.250.2")
VPN_PROBER_LOSS = 0.02  # a healthy tunnel: below the 0.15 threshold


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One probed endpoint with the loss and mean round-trip time it is given."""

    name: str
    ip: str
    loss: float
    latency: float  # seconds


def make_endpoints(count: int, subnet: int = 1) -> list[Endpoint]:
    """
    Given a number of servers and a subnet number (so several fleets can
    share one Prometheus), return them as 10.SUBNET.x.y with varied, known
    losses (5%..94%) and latencies; the last one is the clear best (1%
    loss), and the first one is the current server in every benchmark.
    """
    endpoints = []
    for index in range(count):
        loss = 0.01 if index == count - 1 else 0.05 + ((index * 37) % 90) / 100
        endpoints.append(
            Endpoint(
                name=f"srv{index + 1:04d}",
                ip=f"10.{subnet}.{index // 250}.{index % 250 + 1}",
                loss=loss,
                latency=0.010 + (index % 17) / 1000,
            )
        )
    return endpoints


def write_openmetrics(path: Path, endpoints: list[Endpoint], start: int, end: int, step: int) -> int:
    """
    Given a file, the endpoints and a span of unix seconds sampled every
    step seconds, write the OpenMetrics text that promtool reads and return
    the number of samples. Counters start at an arbitrary offset, as a
    prober that has run for a while.
    """
    series: list[tuple[str, float, float]] = []  # (labels, loss, latency)
    for endpoint in endpoints:
        labels = f'host="{endpoint.ip}",instance="127.0.0.1:9374",ip="{endpoint.ip}",job="smokeping"'
        series.append((labels, endpoint.loss, endpoint.latency))
    for target in VPN_PROBER_TARGETS:
        labels = f'host="{target}",instance="127.0.0.1:9375",ip="{target}",job="vpn-prober"'
        series.append((labels, VPN_PROBER_LOSS, 0.020))
    samples = 0
    with path.open("w") as out:
        # Families stay together: all requests, then all counts, then all sums.
        for metric in ("requests_total", "response_duration_seconds_count", "response_duration_seconds_sum"):
            for labels, loss, latency in series:
                lines = []
                for timestamp in range(start, end + 1, step):
                    requests = 100_000 + (timestamp - start) / PING_INTERVAL
                    replies = requests * (1 - loss)
                    value = {
                        "requests_total": requests,
                        "response_duration_seconds_count": replies,
                        "response_duration_seconds_sum": replies * latency,
                    }[metric]
                    lines.append(f"smokeping_{metric}{{{labels}}} {value:.6f} {timestamp}\n")
                out.writelines(lines)
                samples += len(lines)
        out.write("# EOF\n")
    return samples


@contextmanager
def prometheus_with_data(
    endpoints: list[Endpoint],
    past: int = 600,
    future: int = 1800,
    step: int = 15,
) -> Iterator[PrometheusServer]:
    """
    Given the endpoints, make TSDB blocks covering [now - past, now + future]
    with promtool, start a real Prometheus on them and yield it; stop it and
    remove everything afterwards. Raise RuntimeError if promtool fails.
    """
    with tempfile.TemporaryDirectory(prefix="wgf-bench-prom-") as tmp:
        workdir = Path(tmp)
        storage = workdir / "data"
        storage.mkdir()
        now = int(time.time())
        source = workdir / "smokeping.om"
        write_openmetrics(source, endpoints, now - past, now + future, step)
        completed = subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(storage)],
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"promtool failed: {completed.stderr.strip()[-800:]}")
        source.unlink()
        with PrometheusServer([], workdir=workdir) as prometheus:
            prometheus.wait_for_series('smokeping_requests_total{job="smokeping"}', min_series=len(endpoints))
            yield prometheus


_REQUESTS_LINE = re.compile(r'^prometheus_http_requests_total\{code="[^"]*",handler="(/api/[^"]*)"\} (\S+)$')


def api_requests(url: str) -> int:
    """
    Given a Prometheus base URL, return how many /api/ requests it has
    served, from its own prometheus_http_requests_total on /metrics (read
    directly, so reading it is not itself counted).
    """
    # Only ever the benchmark's own http://127.0.0.1 Prometheus.
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = _REQUESTS_LINE.match(line)
        if match:
            total += float(match.group(2))
    return int(total)
