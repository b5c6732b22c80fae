"""prometheus.url as a list: an HA pair whose first server hangs, and a real Prometheus second.

The first URL is a socket that completes TCP handshakes and never answers
(listening, never accepting); the second a real Prometheus holding the
smokeping data of test_failover_prometheus. The commands must decide from
the real data, not fall back to random, within prometheus.timeout + 1 s,
and the next run must skip the hung URL.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_failover_prometheus import SERVERS, as_openmetrics, probed_hosts, smokeping_samples
from wgfailover.prometheus_pool import FAILED_URLS_FILE, url_key
from wgfailover.state import StateDir

pytestmark = pytest.mark.integration

TIMEOUT = 4.0


@pytest.fixture
def hung_url() -> Iterator[str]:
    """A URL whose server takes the connection and the request and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


@pytest.fixture
def real_url(prometheus_server: Callable[[str], Any]) -> str:
    server = prometheus_server(as_openmetrics(smokeping_samples(probed_hosts(), time.time())))
    server.wait_for_series("smokeping_requests_total", min_series=len(probed_hosts()))
    return str(server.url)


def write_install(tmp_path: Path, urls: list[str]) -> Path:
    config_dir = tmp_path / "wireguard"
    config_dir.mkdir()
    for name, (endpoint, _, _) in SERVERS.items():
        (config_dir / name).write_text(f"[Peer]\nEndpoint = {endpoint}:51820\n")
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.write_current("current")
    config_file = tmp_path / "config.toml"
    servers = "".join(f'[servers."{name}"]\n' for name in SERVERS)
    config_file.write_text(
        f'config_dir = "{config_dir}"\nactive_link = "{tmp_path}/wg-active.conf"\n'
        f'state_dir = "{tmp_path}/state"\nrestart_command = ["true"]\n{servers}'
        f"[prometheus]\nurl = {json.dumps(urls)}\ntimeout = {TIMEOUT:g}\n"
        '[failover]\nprobation = "0"\n'
    )
    return config_file


def run(*argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    command = Path(sys.executable).with_name(argv[0])
    started = time.monotonic()
    finished = subprocess.run([str(command), *argv[1:]], capture_output=True, text=True, timeout=60)
    return finished, time.monotonic() - started


def test_a_hung_first_prometheus_costs_its_share_and_the_second_decides(
    tmp_path: Path, hung_url: str, real_url: str
) -> None:
    config_file = write_install(tmp_path, [hung_url, real_url])

    first, elapsed = run("wg-failover", "--config", str(config_file), "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["prometheus"] == {"used": True, "error": None}
    # No history here, so nothing is held down: the best numbers (0% loss, 1 ms) win, not chance.
    assert result["choice"] == "just-left"
    assert f"no answer from Prometheus at {hung_url}" not in first.stderr  # a skipped URL is not an error
    assert f"Prometheus at {real_url} answered after 1 failed" in first.stderr
    # The bound for the whole command, interpreter start included.
    assert elapsed < TIMEOUT + 1, f"took {elapsed:.2f}s with prometheus.timeout = {TIMEOUT:g}"
    memory = json.loads((tmp_path / "state" / FAILED_URLS_FILE).read_text())
    assert list(memory) == [url_key(hung_url)]

    # Within url_hold_down the hung URL is asked last, so the real one answers first.
    second, _ = run("wg-failover", "--config", str(config_file), "--dry-run", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["prometheus"]["used"] is True
    assert f"Prometheus at {real_url} answered\n" in second.stderr.replace("wg-failover: ", "")


def test_the_health_check_measures_through_the_second_url(tmp_path: Path, hung_url: str, real_url: str) -> None:
    config_file = write_install(tmp_path, [hung_url, real_url])
    # The data has no internal prober series: a measured "no data" (exit 0,
    # counted), not a Prometheus failure (exit 69), shows the real URL was asked.
    finished, elapsed = run("wg-health-check", "--config", str(config_file), "--dry-run")
    assert finished.returncode == 0, finished.stderr
    assert f"Prometheus at {real_url} answered after 1 failed" in finished.stderr
    assert "no data" in finished.stdout + finished.stderr
    assert elapsed < TIMEOUT + 1, f"took {elapsed:.2f}s with prometheus.timeout = {TIMEOUT:g}"
