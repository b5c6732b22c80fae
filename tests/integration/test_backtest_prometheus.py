"""wg-health-check --backtest against a real Prometheus and a real VictoriaMetrics holding known history.

The history: three hours of smokeping_prober counters, one sample every
15s. The prober in the VPN namespace (job="vpn-prober", two targets) saw a
4-minute outage two hours ago and a 1-minute blip one hour ago; the external
prober saw server2 clean and server3 at 30% loss throughout. With one check
a minute and max_failures 3 the live rule fails over once, three checks
into the outage, to server2; the blip is one failed check.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.commands import command_argv
from tests.integration.test_failover_prometheus import (
    as_openmetrics,
    as_prometheus_text,
    import_into_victoria_metrics,
)

pytestmark = pytest.mark.integration

SCRAPE = 15
HISTORY = 3 * 3600
MINUTE = 60
TARGETS = ("198.51.100.1", "198.51.100.2")  # what the VPN prober pings through the tunnel
ENDPOINTS = {"server1": "192.0.2.10", "server2": "192.0.2.20", "server3": "192.0.2.30"}
SERVER_LOSS = {"192.0.2.10": 0.0, "192.0.2.20": 0.0, "192.0.2.30": 0.3}


def history(now: float) -> tuple[list[tuple[str, dict[str, str], float, float]], float, float]:
    """
    Given the time now, return the samples, and the start of the outage and
    of the blip (both on a minute boundary).
    """
    minute = math.floor(now / MINUTE) * MINUTE
    outage = (minute - 120 * MINUTE, minute - 116 * MINUTE)
    blip = (minute - 60 * MINUTE, minute - 59 * MINUTE)

    def lost(at: float) -> float:
        """Seconds without replies up to `at` (one ping a second)."""
        return sum(max(0.0, min(at, end) - start) for start, end in (outage, blip))

    # Samples on the minute grid, as a scrape every 15s lands: VictoriaMetrics'
    # rate() starts from the sample before the window, so a sample a few
    # seconds before the outage would count those seconds of replies in it.
    end = int(now) // SCRAPE * SCRAPE
    times = range(end - HISTORY, end + 1, SCRAPE)
    samples = []
    for target in TARGETS:
        labels = {"job": "vpn-prober", "host": target}
        for at in times:
            sent = float(at - times[0])
            samples.append(("smokeping_requests_total", labels, sent, float(at)))
        for at in times:
            replies = float(at - times[0]) - lost(at)
            samples.append(("smokeping_response_duration_seconds_count", labels, replies, float(at)))
    for host, loss in SERVER_LOSS.items():
        labels = {"job": "smokeping", "host": host}
        for metric in ("smokeping_requests_total", "smokeping_response_duration_seconds_count"):
            share = 1.0 if metric == "smokeping_requests_total" else 1 - loss
            samples += [(metric, labels, (at - times[0]) * share, float(at)) for at in times]
    # promtool wants each series' samples together and in time order; they are.
    return samples, outage[0], blip[0]


@pytest.fixture(params=["prometheus", "victoria-metrics"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, float, float]]:
    """(kind, URL, outage start, blip start) of a real server holding the history."""
    samples, outage, blip = history(time.time())
    if request.param == "prometheus":
        start: Callable[[str], Any] = request.getfixturevalue("prometheus_server")
        server = start(as_openmetrics(samples))
    else:
        server = request.getfixturevalue("victoria_metrics")
        import_into_victoria_metrics(server, as_prometheus_text(samples))
    server.wait_for_series("smokeping_requests_total", min_series=len(TARGETS) + len(SERVER_LOSS))
    yield request.param, server.url, outage, blip


def config_file(make_config_file: Callable[..., Path], url: str, selector: str = 'job="vpn-prober"') -> Path:
    path = make_config_file(
        f"[prometheus]\nurl = \"{url}\"\ntimeout = 20\n\n[health]\nselector = '{selector}'\n", servers=ENDPOINTS
    )
    (path.parent / "state").mkdir()
    (path.parent / "state" / "current").write_text("server1\n")
    return path


def backtest(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*command_argv("wg-health-check"), "--config", str(config), "--backtest", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_the_outage_is_replayed_as_one_failover_and_the_blip_as_none(
    backend: tuple[str, str, float, float], make_config_file: Callable[..., Path]
) -> None:
    _, url, outage, blip = backend
    config = config_file(make_config_file, url)
    state_before = {path.name: path.read_bytes() for path in (config.parent / "state").iterdir()}
    done = backtest(config, "3h", "--every", "1m", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert [(f["time"], f["from"], f["to"], f["loss"]) for f in document["failovers"]] == [
        (outage + 3 * MINUTE, "server1", "server2", 1.0)
    ]
    [failover] = document["failovers"]
    assert failover["checks"] == [outage + n * MINUTE for n in (1, 2, 3)]
    assert failover["reason"] == "health-check: loss 1 > 0.15 for 3 checks"
    # The outage's fourth minute and the blip: two more failures, counted and forgotten.
    assert document["failures"] == 5
    assert document["checks"] >= 170
    assert not any(blip <= f["time"] <= blip + 10 * MINUTE for f in document["failovers"])
    assert {path.name: path.read_bytes() for path in (config.parent / "state").iterdir()} == state_before


def test_a_sweep_over_max_failures_shows_where_the_outage_stops_counting(
    backend: tuple[str, str, float, float], make_config_file: Callable[..., Path]
) -> None:
    _, url, _, _ = backend
    config = config_file(make_config_file, url)
    done = backtest(config, "3h", "--json", "--sweep", "max_failures=1,4,5")
    assert done.returncode == 0, done.stderr
    # 1: every failed check fails over (4 in the outage, 1 in the blip); 4: the outage; 5: nothing.
    assert [len(replay["failovers"]) for replay in json.loads(done.stdout)["sweep"]] == [5, 1, 0]


def test_a_selector_without_data_is_exit_69(
    backend: tuple[str, str, float, float], make_config_file: Callable[..., Path]
) -> None:
    _, url, _, _ = backend
    config = config_file(make_config_file, url, selector='job="no-such-prober"')
    done = backtest(config, "1h")
    assert done.returncode == 69
    assert done.stderr == (
        'wg-health-check: error: Prometheus has no tunnel loss for job="no-such-prober" in the last 1h '
        "(health.selector and health.query; is the VPN namespace's prober scraped?)\n"
    )


def test_beyond_prometheus_retention_is_exit_2(
    prometheus_server: Callable[[str], Any], make_config_file: Callable[..., Path]
) -> None:
    samples, _, _ = history(time.time())
    server = prometheus_server(as_openmetrics(samples))
    config = config_file(make_config_file, server.url)
    done = backtest(config, "30d")
    assert done.returncode == 2
    assert done.stderr == (
        "wg-health-check: error: --backtest 30d reaches beyond Prometheus's retention (15d); ask for 15d or less\n"
    )


def test_a_prometheus_that_cannot_be_asked_is_exit_69(make_config_file: Callable[..., Path]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    config = config_file(make_config_file, f"http://127.0.0.1:{port}")
    done = backtest(config, "1h")
    assert done.returncode == 69
    assert done.stderr.startswith(f"wg-health-check: error: cannot reach Prometheus at http://127.0.0.1:{port}")
    assert len(done.stderr.splitlines()) == 1
