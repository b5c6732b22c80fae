"""wg-failover against a real Prometheus and a real VictoriaMetrics holding known smokeping data.

The data: nine servers whose external prober saw known loss and latency,
written as smokeping_prober's counters over the last 20 minutes. The
servers' endpoints come from their WireGuard configs (no endpoint keys).
"""

from __future__ import annotations

import dataclasses
import random
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.commands import command_argv
from wgfailover.actions.failover import FailoverResult, fail_over
from wgfailover.config import Config, parse_config
from wgfailover.state import StateDir

pytestmark = pytest.mark.integration

# One ping a second, smokeping_prober's default interval; a sample every
# 15s, Prometheus's default scrape interval.
PING_INTERVAL = 1.0
SCRAPE_INTERVAL = 15
HISTORY_SECONDS = 20 * 60

# server name -> (endpoint, loss the prober saw, mean RTT); None: never probed.
SERVERS: dict[str, tuple[str, float | None, float]] = {
    "current": ("127.0.0.2", 0.50, 0.020),
    "bad": ("127.0.0.3", 0.30, 0.020),
    "bad-port443": ("127.0.0.3", 0.30, 0.020),  # a second config for the same host
    "slow": ("127.0.0.4", 0.00, 0.040),
    "fast": ("127.0.0.5", 0.01, 0.005),  # a near-tie in loss with slow, far lower latency
    "overcounted": ("127.0.0.6", -0.05, 0.041),  # more replies than requests: clamped to 0
    "medium": ("127.0.0.7", 0.10, 0.010),
    "silent": ("127.0.0.8", None, 0.0),  # the prober has no series for it
    "just-left": ("127.0.0.9", 0.00, 0.001),  # best numbers, but we left it 5 minutes ago
}
EXPECTED_GROUPS = [{"fast"}, {"slow", "overcounted"}, {"medium"}, {"bad", "bad-port443"}, {"silent"}, {"just-left"}]


@dataclasses.dataclass(frozen=True)
class ProbedHost:
    """What the external prober saw of one endpoint: loss may be negative (more replies than requests)."""

    host: str
    loss: float
    latency: float  # seconds


def smokeping_samples(hosts: Sequence[ProbedHost], now: float) -> list[tuple[str, dict[str, str], float, float]]:
    """
    Given the probed hosts and the unix time now, return (metric, labels,
    value, unix time) samples of smokeping_prober's counters over the last
    HISTORY_SECONDS, one metric family after another, each in time order.
    """
    end = int(now)
    times = range(end - HISTORY_SECONDS, end + 1, SCRAPE_INTERVAL)
    samples = []
    for metric in (
        "smokeping_requests_total",
        "smokeping_response_duration_seconds_count",
        "smokeping_response_duration_seconds_sum",
    ):
        for probed in hosts:
            labels = {"host": probed.host, "ip": probed.host}
            for at in times:
                requests = (at - times[0]) / PING_INTERVAL
                replies = requests * (1 - probed.loss)
                value = {
                    "smokeping_requests_total": requests,
                    "smokeping_response_duration_seconds_count": replies,
                    "smokeping_response_duration_seconds_sum": replies * probed.latency,
                }[metric]
                samples.append((metric, labels, value, float(at)))
    return samples


def _series(metric: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{name}="{value}"' for name, value in labels.items())
    return f"{metric}{{{inner}}}"


def as_openmetrics(samples: Sequence[tuple[str, dict[str, str], float, float]]) -> str:
    """Given samples, return OpenMetrics text (timestamps in seconds) for promtool."""
    lines = [f"{_series(metric, labels)} {value} {at:.3f}" for metric, labels, value, at in samples]
    return "\n".join(lines) + "\n# EOF\n"


def as_prometheus_text(samples: Sequence[tuple[str, dict[str, str], float, float]]) -> str:
    """Given samples, return Prometheus exposition text (timestamps in ms) for VictoriaMetrics' import."""
    lines = [f"{_series(metric, labels)} {value} {int(at * 1000)}" for metric, labels, value, at in samples]
    return "\n".join(lines) + "\n"


def import_into_victoria_metrics(server: Any, text: str) -> None:
    """Given a started VictoriaMetrics and Prometheus exposition text, import it and flush it to search."""
    request = urllib.request.Request(  # noqa: S310 - a loopback URL we built
        server.url + "/api/v1/import/prometheus", data=text.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 204
    with urllib.request.urlopen(server.url + "/internal/force_flush", timeout=30):  # noqa: S310
        pass


def probed_hosts() -> list[ProbedHost]:
    seen = {}
    for endpoint, loss, latency in SERVERS.values():
        if loss is not None:
            seen[endpoint] = ProbedHost(endpoint, loss, latency)
    return list(seen.values())


def make_config(tmp_path: Path, url: str, restart_command: list[str] | None = None) -> Config:
    config_dir = tmp_path / "wireguard"
    config_dir.mkdir(exist_ok=True)
    for name, (endpoint, _, _) in SERVERS.items():
        (config_dir / name).write_text(f"[Interface]\nPrivateKey = x\n\n[Peer]\nEndpoint = {endpoint}:51820\n")
    document = {
        "config_dir": str(config_dir),
        "active_link": str(tmp_path / "wg-active.conf"),
        "state_dir": str(tmp_path / "state"),
        "restart_command": restart_command or ["true"],
        "servers": {name: {} for name in SERVERS},
        "prometheus": {"url": url, "timeout": 10},
        "failover": {"probation": 0},  # no tunnel to confirm
    }
    config = parse_config(document, tmp_path / "config.toml")
    state = StateDir(config.state_dir)
    state.ensure()
    state.write_current("current")
    state.append_history(time=time.time() - 300, from_server="just-left", to_server="current", reason="failover")
    return config


def groups_of(result: FailoverResult) -> list[set[str]]:
    """Given a result, return its candidates split where the expected ranking changes group."""
    order = [row.name for row in result.rows if row.rank is not None]
    groups, position = [], 0
    for expected in EXPECTED_GROUPS:
        groups.append(set(order[position : position + len(expected)]))
        position += len(expected)
    assert position == len(order), order
    return groups


@pytest.fixture(params=["prometheus", "victoria-metrics"])
def backend_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a real Prometheus, or a real VictoriaMetrics, holding the SERVERS data."""
    samples = smokeping_samples(probed_hosts(), time.time())
    if request.param == "prometheus":
        start: Callable[[str], Any] = request.getfixturevalue("prometheus_server")
        server = start(as_openmetrics(samples))
    else:
        server = request.getfixturevalue("victoria_metrics")
        import_into_victoria_metrics(server, as_prometheus_text(samples))
    server.wait_for_series("smokeping_requests_total", min_series=len(probed_hosts()))
    yield server.url


def test_the_ranking_comes_out_right(tmp_path: Path, backend_url: str) -> None:
    config = make_config(tmp_path, backend_url)
    for seed in range(3):
        result = fail_over(config, reason="failover", dry_run=True, rng=random.Random(seed))
        assert result.used_prometheus, result.prometheus_error
        assert groups_of(result) == EXPECTED_GROUPS
        assert result.choice == "fast"
        rows = {row.name: row for row in result.rows}
        assert rows["fast"].reason == "lowest latency among near-ties in loss"
        assert rows["fast"].loss == pytest.approx(0.01, abs=1e-6)
        assert rows["fast"].latency == pytest.approx(0.005, rel=1e-3)
        assert rows["overcounted"].loss == 0.0
        assert rows["medium"].reason == "higher loss"
        assert rows["bad-port443"].loss == rows["bad"].loss == pytest.approx(0.30, abs=1e-6)
        assert rows["silent"].loss is None and rows["silent"].reason == "loss unknown"
        assert rows["just-left"].reason == "held down: left 5m ago"
        assert rows["current"].rank is None and rows["current"].loss == pytest.approx(0.5, abs=1e-6)


def test_a_real_failover_switches_to_the_best_and_records_the_losses(tmp_path: Path, backend_url: str) -> None:
    config = make_config(tmp_path, backend_url, restart_command=["sh", "-c", f"touch {tmp_path}/restarted"])
    result = fail_over(config, reason="unit-failed")
    state = StateDir(config.state_dir)
    assert state.read_current(config.server_names).name == "fast"
    assert (tmp_path / "restarted").exists()
    record = state.last_switch()
    assert record is not None and record == result.record
    assert (record.from_server, record.to_server, record.reason) == ("current", "fast", "unit-failed")
    assert record.losses["silent"] is None
    assert record.losses["current"] == pytest.approx(0.5, abs=1e-6)


def test_a_prometheus_that_accepts_and_never_answers_still_leads_to_a_switch(tmp_path: Path) -> None:
    # Listening with a backlog but never accepting: the kernel completes the
    # TCP handshake and takes the request, and nothing ever answers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        config_dir = tmp_path / "wireguard"
        config_dir.mkdir()
        for number in (1, 2, 3):
            (config_dir / f"server{number}").write_text(f"[Peer]\nEndpoint = 127.0.0.{number + 1}:51820\n")
        state = StateDir(tmp_path / "state")
        state.ensure()
        state.write_current("server1")
        config_file = tmp_path / "config.toml"
        config_file.write_text(
            f'config_dir = "{config_dir}"\nactive_link = "{tmp_path}/wg-active.conf"\n'
            f'state_dir = "{tmp_path}/state"\nrestart_command = ["true"]\n'
            "[servers.server1]\n[servers.server2]\n[servers.server3]\n"
            f'[prometheus]\nurl = "http://127.0.0.1:{port}"\ntimeout = 1\n'
            '[failover]\nprobation = "0"\n'
        )
        started = time.monotonic()
        finished = subprocess.run(
            [*command_argv("wg-failover"), "--config", str(config_file)], capture_output=True, text=True, timeout=60
        )
        elapsed = time.monotonic() - started
    assert finished.returncode == 0, finished.stderr
    assert "within the 1s budget (prometheus.timeout); picking at random among the other servers" in finished.stderr
    assert state.read_current(["server1", "server2", "server3"]).name in ("server2", "server3")
    # The issue asks for timeout + 1 s; only a hang is asserted here, timing belongs to the benchmarks.
    print(f"switched {elapsed:.2f}s after start against a silent Prometheus (timeout 1s)")
    assert elapsed < 30
