"""The failback query against a real Prometheus and a real VictoriaMetrics holding known prober history.

Five preferred servers whose external prober saw, over the last 20 minutes
(one ping a second, a scrape every 15 s): nothing wrong; a minute of 50%
loss five minutes ago; a total outage that ended 17 minutes ago; nothing at
all for the last 10 minutes (the prober stopped); no series ever. With
failover.failback_after = 15m and health.min_window = 30s, only the first
and the third have been healthy for the whole of failback_after.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_failover_prometheus import as_openmetrics, as_prometheus_text, import_into_victoria_metrics
from wgfailover.actions.failback import look_for_failback
from wgfailover.config import Config, parse_config
from wgfailover.state import StateDir

pytestmark = pytest.mark.integration

SCRAPE_INTERVAL = 15
HISTORY_SECONDS = 20 * 60

# server -> (endpoint, loss at `seconds ago`, seconds ago of the newest sample);
# None: the prober never had a series for it.
Loss = Callable[[float], float]
PREFERRED: dict[str, tuple[str, Loss, float] | None] = {
    "steady": ("127.0.1.1", lambda ago: 0.0, 0),
    "blip": ("127.0.1.2", lambda ago: 0.5 if 300 <= ago < 360 else 0.0, 0),
    "recovered": ("127.0.1.3", lambda ago: 1.0 if ago >= 17 * 60 else 0.0, 0),
    "stopped": ("127.0.1.4", lambda ago: 0.0, 10 * 60),
    "silent": None,
}
CURRENT_ENDPOINT = "127.0.1.9"


def prober_samples(now: float) -> list[tuple[str, dict[str, str], float, float]]:
    """Given now, return smokeping_prober's counters for every probed preferred server, scrape by scrape."""
    end = int(now)
    samples = []
    for probed in PREFERRED.values():
        if probed is None:
            continue
        host, loss, newest = probed
        requests = replies = 0.0
        for at in range(end - HISTORY_SECONDS, end + 1, SCRAPE_INTERVAL):
            # One ping a second since the previous scrape, each lost with the loss of its time.
            for second in range(SCRAPE_INTERVAL):
                requests += 1
                replies += 1 - loss(end - at + second)
            if end - at < newest:
                continue
            labels = {"host": host, "ip": host}
            samples.append(("smokeping_requests_total", labels, requests, float(at)))
            samples.append(("smokeping_response_duration_seconds_count", labels, replies, float(at)))
    samples.sort(key=lambda sample: (sample[0], sample[1]["host"], sample[3]))
    return samples


def make_config(tmp_path: Path, url: str) -> Config:
    config_dir = tmp_path / "wireguard"
    config_dir.mkdir()
    endpoints = {name: probed[0] if probed else "127.0.1.8" for name, probed in PREFERRED.items()}
    endpoints["current"] = CURRENT_ENDPOINT
    for name, endpoint in endpoints.items():
        (config_dir / name).write_text(f"[Interface]\nPrivateKey = x\n\n[Peer]\nEndpoint = {endpoint}:51820\n")
    servers: dict[str, Any] = {name: {"priority": 1} for name in PREFERRED}
    servers["current"] = {"priority": 2}
    document = {
        "config_dir": str(config_dir),
        "active_link": str(tmp_path / "wg-active.conf"),
        "state_dir": str(tmp_path / "state"),
        "restart_command": ["true"],
        "servers": servers,
        "prometheus": {"url": url, "timeout": 10},
        "failover": {"failback_after": "15m", "hold_down": "10m"},
        "health": {"min_window": "30s"},
    }
    config = parse_config(document, tmp_path / "config.toml")
    state = StateDir(config.state_dir)
    state.ensure()
    state.write_current("current")
    state.append_history(time=time.time() - 1800, from_server="steady", to_server="current", reason="health-check")
    return config


@pytest.fixture(params=["prometheus", "victoria-metrics"])
def backend_url(request: pytest.FixtureRequest) -> Iterator[str]:
    samples = prober_samples(time.time())
    if request.param == "prometheus":
        start: Callable[[str], Any] = request.getfixturevalue("prometheus_server")
        server = start(as_openmetrics(samples))
    else:
        server = request.getfixturevalue("victoria_metrics")
        import_into_victoria_metrics(server, as_prometheus_text(samples))
    # "stopped" has had no sample for 10 minutes: an instant query no longer sees it.
    server.wait_for_series("smokeping_requests_total", min_series=3)
    yield server.url


def test_only_servers_healthy_in_every_slice_of_failback_after_qualify(tmp_path: Path, backend_url: str) -> None:
    config = make_config(tmp_path, backend_url)
    picks = set()
    for seed in range(6):
        result = look_for_failback(config, dry_run=True, rng=random.Random(seed))
        assert result.asked_prometheus and result.prometheus_error is None
        verdicts = {verdict.name: verdict.reason for verdict in result.decision.verdicts}
        assert verdicts["steady"] == verdicts["recovered"] == "healthy for 15m"
        assert verdicts["blip"].startswith("loss 0.5 > 0.15 within the last 15m"), verdicts
        assert verdicts["stopped"].startswith("data for only "), verdicts
        assert verdicts["silent"] == "no data over the last 15m"
        assert result.decision.target is not None
        assert result.decision.reason == f"failback: {result.decision.target} healthy for 15m"
        picks.add(result.decision.target)
    assert picks <= {"steady", "recovered"}
    assert StateDir(config.state_dir).read_current(config.server_names).name == "current"  # a dry run
