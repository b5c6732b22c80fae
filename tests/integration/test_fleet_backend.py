"""A fleet's probes reach VictoriaMetrics through Prometheus agents, and each client decides from its own.

Two clients, "north" and "south", each with a Prometheus in agent mode that
scrapes the client's two probers and remote-writes to one VictoriaMetrics
with ``external_labels: {wg_client: ...}``, as a fleet ships its data. The
probers are loopback exporters of smokeping-shaped counters with known loss:

- north's path to server1 and north's tunnel lose everything;
- south's path to server2 loses everything, its tunnel nothing.

With ``[fleet] client_label = "wg_client"`` each client's wg-failover avoids
the server it cannot reach and its wg-health-check judges its own tunnel.
Summed over the fleet (no scope), both servers and both tunnels would look
half broken and neither decision would follow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from wgfailover.state import StateDir
from wglab.processes import wait_until
from wglab.prometheus import PrometheusAgent, VictoriaMetricsServer, serve_exposition

pytestmark = pytest.mark.integration

PINGS_PER_SECOND = 10
ENDPOINTS = {"server1": "192.0.2.11", "server2": "192.0.2.12", "server3": "192.0.2.13"}
TUNNEL_TARGETS = ("198.51.100.1", "198.51.100.2")
# client -> ({endpoint: loss seen by its external prober}, its tunnel's loss)
CLIENTS = {
    "north": ({"192.0.2.11": 1.0, "192.0.2.12": 0.0, "192.0.2.13": 0.0}, 1.0),
    "south": ({"192.0.2.11": 0.0, "192.0.2.12": 1.0, "192.0.2.13": 0.0}, 0.0),
}


def smokeping_exposition(losses: dict[str, float], started: float) -> Callable[[], bytes]:
    """Given {target: loss} and a start time, return a renderer of smokeping_prober's counters as of now."""

    def render() -> bytes:
        sent = (time.time() - started) * PINGS_PER_SECOND
        lines = []
        for target, loss in losses.items():
            labels = f'host="{target}",ip="{target}"'
            replies = sent * (1 - loss)
            lines += [
                f"smokeping_requests_total{{{labels}}} {sent:.3f}",
                f"smokeping_response_duration_seconds_count{{{labels}}} {replies:.3f}",
                f"smokeping_response_duration_seconds_sum{{{labels}}} {replies * 0.02:.6f}",
            ]
        return ("\n".join(lines) + "\n").encode()

    return render


@pytest.fixture
def fleet(victoria_metrics: VictoriaMetricsServer, tmp_path: Path) -> Iterator[str]:
    """Two clients' agents shipping to victoria_metrics; yield its URL once both have enough data."""
    started = time.time()
    with ExitStack() as stack:
        for client, (path_losses, tunnel_loss) in CLIENTS.items():
            external = stack.enter_context(serve_exposition(smokeping_exposition(path_losses, started)))
            tunnel = {target: tunnel_loss for target in TUNNEL_TARGETS}
            internal = stack.enter_context(serve_exposition(smokeping_exposition(tunnel, started)))
            agent = PrometheusAgent(
                [("smokeping", [external]), ("vpn-prober", [internal])],
                f"{victoria_metrics.url}/api/v1/write",
                external_labels={"wg_client": client},
                workdir=tmp_path / f"agent-{client}",
            )
            stack.enter_context(agent)
        # 12 s of scrapes reach the backend: enough for rate() over the 10s windows below.
        for client in CLIENTS:
            wait_until(
                lambda client=client: victoria_metrics.query(
                    f'count_over_time(smokeping_requests_total{{wg_client="{client}",job="vpn-prober"}}[12s]) >= 8'
                ),
                60,
                0.5,
                what=f"12s of {client}'s probes in VictoriaMetrics",
            )
        yield victoria_metrics.url


def install(tmp_path: Path, url: str, client: str, scoped: bool = True) -> Path:
    """Given the backend and a client, write its config and WireGuard configs; return the config file."""
    home = tmp_path / client
    (home / "wireguard").mkdir(parents=True)
    for name, endpoint in ENDPOINTS.items():
        (home / "wireguard" / name).write_text(f"[Peer]\nEndpoint = {endpoint}:51820\n")
    servers = "".join(f"[servers.{name}]\n" for name in ENDPOINTS)
    fleet = f'[fleet]\nclient = "{client}"\nclient_label = "wg_client"\n' if scoped else ""
    config = home / "config.toml"
    config.write_text(
        f'config_dir = "{home}/wireguard"\nactive_link = "{home}/wg-active.conf"\n'
        f'state_dir = "{home}/state"\nrestart_command = ["true"]\n{servers}'
        f'[prometheus]\nurl = "{url}"\ntimeout = 10\n'
        '[failover]\nwindow = "10s"\n'
        '[health]\nwindow = "10s"\nmin_window = "5s"\n'
        f"{fleet}"
    )
    return config


def run(command: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name(command)
    return subprocess.run([str(binary), "--config", str(config), *args], capture_output=True, text=True, timeout=60)


def test_each_client_decides_from_its_own_probes_in_the_shared_backend(tmp_path: Path, fleet: str) -> None:
    expected = {"north": ("server2", "unhealthy"), "south": ("server1", "healthy")}
    for client, (choice, health) in expected.items():
        config = install(tmp_path, fleet, client)
        selected = run("wg-select", config)
        assert selected.returncode == 0, selected.stderr
        StateDir(tmp_path / client / "state").write_current("server3")

        failover = run("wg-failover", config, "--dry-run", "--json")
        assert failover.returncode == 0, failover.stderr
        decision = json.loads(failover.stdout)
        assert decision["prometheus"]["used"] is True, decision
        assert decision["choice"] == choice, decision
        losses = {row["server"]: row["loss"] for row in decision["servers"]}
        assert losses == pytest.approx(
            {
                "server1": 1.0 if client == "north" else 0.0,
                "server2": 0.0 if client == "north" else 1.0,
                "server3": 0.0,
            },
            abs=0.02,
        )

        check = run("wg-health-check", config, "--dry-run")
        assert check.returncode == 0, check.stderr
        assert check.stdout.startswith(f"dry run: {health}:"), check.stdout


def test_without_scope_the_fleet_sum_hides_a_dead_tunnel(tmp_path: Path, fleet: str) -> None:
    config = install(tmp_path, fleet, "north", scoped=False)
    failover = run("wg-failover", config, "--dry-run", "--json")
    losses = {row["server"]: row["loss"] for row in json.loads(failover.stdout)["servers"]}
    assert losses["server1"] == pytest.approx(0.5, abs=0.02)  # north's dead path, diluted by south's
    check = run("wg-health-check", config, "--dry-run")
    # north's tunnel is dead, yet summed with south's it reads 50%; still above 0.15 here,
    # but in a fleet of 1000 it would read 0.1%.
    seen = re.search(r"loss ([0-9.]+)", check.stdout)
    assert seen is not None and float(seen.group(1)) == pytest.approx(0.5, abs=0.05), check.stdout
