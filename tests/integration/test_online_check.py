"""--check-config --online against a real Prometheus holding smokeping data.

The data: the external prober pings two of three servers' endpoints; the
prober in the VPN namespace pings a real target and smokeping's default
`localhost`. A second Prometheus URL is a closed port.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.integration.test_failover_prometheus import ProbedHost, as_openmetrics, smokeping_samples
from wgfailover.commands.wg_select import main as wg_select

pytestmark = pytest.mark.integration


def inner_prober_samples(now: float) -> list[tuple[str, dict[str, str], float, float]]:
    samples = []
    for metric in ("smokeping_requests_total", "smokeping_response_duration_seconds_count"):
        for host in ("192.0.2.53", "localhost"):
            start = int(now) - 600
            for at in range(start, int(now) + 1, 15):
                samples.append((metric, {"host": host, "job": "vpn-prober"}, float(at - start), float(at)))
    return samples


@pytest.fixture
def prometheus_url(prometheus_server: Callable[[str], Any]) -> str:
    now = time.time()
    outer = smokeping_samples([ProbedHost("127.0.0.2", 0.0, 0.01), ProbedHost("127.0.0.3", 0.2, 0.01)], now)
    inner = inner_prober_samples(now)
    server = prometheus_server(as_openmetrics(outer + inner))
    server.wait_for_series("smokeping_requests_total", min_series=4)
    return str(server.url)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, urls: list[str], textfile_dir: Path, restart: str) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, endpoint in (("server1", "127.0.0.2"), ("server2", "127.0.0.3"), ("server3", "127.0.0.9")):
        (secrets / name).write_text(f"[Peer]\nEndpoint = {endpoint}:51820\n")
    path = tmp_path / "config.toml"
    path.write_text(
        f'config_dir = "{secrets}"\n'
        f'active_link = "{tmp_path}/wg-active.conf"\n'
        f'state_dir = "{tmp_path}/state"\n'
        f'textfile_dir = "{textfile_dir}"\n'
        f'restart_command = ["{restart}", "restart", "wg.service"]\n'
        "[servers.server1]\n[servers.server2]\n[servers.server3]\n"
        f"[prometheus]\nurl = {json.dumps(urls)}\ntimeout = 5\n"
        "[health]\nselector = 'job=\"vpn-prober\"'\n"
    )
    return path


def test_online_check_names_each_problem_on_its_own_line(tmp_path: Path, prometheus_url: str, closed_port: int) -> None:
    dead = f"http://127.0.0.1:{closed_port}"
    path = write_config(tmp_path, [prometheus_url, dead], tmp_path / "no-such-dir", "no-such-systemctl")
    result = CliRunner().invoke(
        wg_select, ["--config", str(path), "--check-config", "--online"], env={"JOURNAL_STREAM": None}
    )
    assert result.exit_code == 78, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("wg-select: error: ")]
    assert [line.split(": ", 3)[3].split(":")[0] for line in errors] == [
        "textfile_dir",
        "restart_command",
        "prometheus.url[1]",
        "servers.server3",
    ], errors
    assert "cannot reach Prometheus at " + dead in errors[2]
    assert 'no loss series with host="127.0.0.9"' in errors[3]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("wg-select: warning: ")]
    assert len(warnings) == 1 and "target 'localhost' is this host" in warnings[0]
    assert f"ok: prometheus.url[0] {prometheus_url} answers" in result.stdout
    assert "ok: health.selector matches 2 series, 2 targets: 192.0.2.53, localhost" in result.stdout


def test_online_check_of_a_working_setup_exits_0_with_what_it_confirmed(tmp_path: Path, prometheus_url: str) -> None:
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    path = write_config(tmp_path, [prometheus_url], textfile_dir, "true")
    # server3 is not probed: drop it so nothing is missing.
    path.write_text(path.read_text().replace("[servers.server3]\n", ""))
    result = CliRunner().invoke(
        wg_select, ["--config", str(path), "--check-config", "--online", "--json"], env={"JOURNAL_STREAM": None}
    )
    document = json.loads(result.stdout)
    assert document["problems"] == []
    assert result.exit_code == 0
    assert document["online"] is True
    assert "the ranking query has a loss series for every server (host label)" in document["checked"]


def test_in_a_fleet_the_selector_counts_only_this_clients_targets(
    tmp_path: Path, prometheus_server: Callable[[str], Any]
) -> None:
    now = time.time()
    samples = []
    for client, host in (("laptop", "192.0.2.53"), ("desktop", "192.0.2.54"), ("desktop", "localhost")):
        labels = {"host": host, "job": "vpn-prober", "wg_client": client}
        for at in range(int(now) - 600, int(now) + 1, 15):
            samples.append(("smokeping_requests_total", labels, float(at - int(now) + 600), float(at)))
    server = prometheus_server(as_openmetrics(samples))
    server.wait_for_series("smokeping_requests_total", min_series=3)
    path = write_config(tmp_path, [str(server.url)], tmp_path, "true")
    path.write_text(path.read_text() + '[fleet]\nclient = "laptop"\nclient_label = "wg_client"\n')
    result = CliRunner().invoke(
        wg_select, ["--config", str(path), "--check-config", "--online"], env={"JOURNAL_STREAM": None}
    )
    # desktop's localhost target is not this client's: no warning about it.
    assert "ok: health.selector matches 1 series, 1 targets: 192.0.2.53" in result.stdout, result.output
    assert "warning" not in result.stderr
