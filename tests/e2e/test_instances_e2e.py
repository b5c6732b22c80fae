"""Two wg-failover instances on one host, end to end (issue 17, "Instances").

The host has two tunnels, each with servers of its own: two labs
(wglab.lab.Lab) with disjoint endpoints (lab b's server subnets follow lab
a's, Lab(subnet_offset=...)), each with its external prober (both in the
"smokeping" job, which the ranking reads by endpoint) and its internal
prober (job "vpn-prober-a" or "-b", as the NixOS module names them), and
ONE Prometheus scraping all four, as the host's Prometheus would. Two configs, instance "a" and "b", each with
its lab's active_link and state_dir, the same textfile_dir, and a
health.selector naming its own internal prober's job.

A hard outage of a's active server must fail a over to another server of
a's set, and leave b alone: b's checks, run between a's over the same time,
stay healthy with the counter at 0, and b's current server, link, history
and tunnel are as before. Checks are wglab.scenarios.Runner checks: each
starts once Prometheus holds min_window of new samples of its own tunnel
(no sleeps). Nothing asserts on wall-clock time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgfailover.state import SwitchRecord
from wglab.lab import Lab
from wglab.prometheus import PrometheusServer
from wglab.scenarios import REQUIRED_BINARIES, Runner, write_lab_config

pytestmark = pytest.mark.e2e

MISSING = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
SERVERS = {"a": ["a1", "a2", "a3"], "b": ["b1", "b2"]}


@dataclasses.dataclass(frozen=True)
class Host:
    """One host: an instance's Runner by name, and the shared textfile directory."""

    runners: dict[str, Runner]
    textfile_dir: Path


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What an instance must keep while the other one fails over."""

    current: str | None
    link: Path | None
    history: list[SwitchRecord]
    failures: int
    restarts: int
    tunnel_server: str | None


def snapshot(runner: Runner) -> Snapshot:
    return Snapshot(
        current=runner.current(),
        link=runner.link_target(),
        history=runner.state.read_history(),
        failures=runner.state.read_failures(),
        restarts=runner.lab.restart_count(),
        tunnel_server=runner.lab.active_server(),
    )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """Two labs, one Prometheus, and two instances booted by wg-select."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, nftables, TUN)")
    if MISSING:
        pytest.skip(f"missing binaries: {', '.join(MISSING)} (run .ci/run or apt install)")
    base = tmp_path_factory.mktemp("instances")
    textfile_dir = base / "textfile"
    textfile_dir.mkdir()
    with contextlib.ExitStack() as stack:
        labs = {}
        offset = 0
        for name, servers in SERVERS.items():
            labs[name] = stack.enter_context(
                Lab(
                    servers=servers,
                    prometheus=False,
                    subnet_offset=offset,
                    internal_job=f"vpn-prober-{name}",
                )
            )
            offset += len(servers)
        # In lab a's workdir, so `python -m wglab.cleanup` finds it with lab a.
        prometheus = stack.enter_context(
            PrometheusServer(
                [job for lab in labs.values() for job in lab.scrape_jobs],
                scrape_interval=labs["a"].scrape_interval,
                workdir=labs["a"].workdir / "prometheus",
            )
        )
        runners = {}
        for name, lab in labs.items():
            lab.use_prometheus(prometheus)
            lab.wait_for_metrics(timeout=60)
            config = write_lab_config(lab, base / f"{name}.toml", instance=name, textfile_dir=str(textfile_dir))
            runners[name] = Runner(lab, config)
            runners[name].start()
        yield Host(runners, textfile_dir)


def textfile_series(host: Host, instance: str) -> list[str]:
    """Given an instance name, return the sample lines of its textfile."""
    text = (host.textfile_dir / f"wg_failover_{instance}.prom").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def assert_textfile_of(host: Host, instance: str) -> None:
    """Its own file, every series labelled with it, naming only its own servers."""
    runner = host.runners[instance]
    series = textfile_series(host, instance)
    assert series and all(f'wg_instance="{instance}"' in line for line in series), series
    info = [line for line in series if line.startswith("vpn_server_info{")]
    assert len(info) == 1 and f'server="{runner.current()}"' in info[0], info
    endpoints = sorted(line for line in series if line.startswith("wg_failover_server_endpoint_info{"))
    assert len(endpoints) == len(SERVERS[instance])
    for line, server in zip(endpoints, sorted(SERVERS[instance])):
        assert f'server="{server}"' in line and f'host="{runner.lab.endpoint_ip[server]}"' in line, line


def test_two_instances_judge_their_own_tunnels_and_write_their_own_textfiles(host: Host) -> None:
    for runner in host.runners.values():
        runner.settle()  # ends on a healthy check with the counter at 0
        assert runner.lab.active_server() == runner.current() in runner.config.server_names
    assert sorted(path.name for path in host.textfile_dir.iterdir()) == ["wg_failover_a.prom", "wg_failover_b.prom"]
    for instance in host.runners:
        assert_textfile_of(host, instance)


def test_an_outage_of_instance_a_s_server_switches_a_only(host: Host) -> None:
    a, b = host.runners["a"], host.runners["b"]
    for runner in (a, b):
        runner.settle()
    b_before = snapshot(b)
    server = a.current()
    assert server is not None
    a.lab.set_loss(server, 100)
    a_checks, b_checks = [], []
    try:
        for _ in range(a.max_failures + 1):
            a_checks.append(a.check())
            b_checks.append(b.check())  # over the same span as a's, during the outage
            if a_checks[-1].switch is not None:
                break
    finally:
        a.lab.set_loss(server, 0)
    switch = a_checks[-1].switch
    assert switch is not None, [c.describe() for c in a_checks]
    assert switch.reason.startswith("health-check: loss 1 > 0.15 for 3 checks"), switch.reason
    assert switch.from_server == server
    assert switch.to_server in SERVERS["a"] and switch.to_server != server
    assert (switch.losses[switch.to_server] or 0) < 0.05  # healthy when chosen
    assert a.lab.active_server() == a.current() == switch.to_server
    a.wait_for_traffic(switch.to_server)

    assert all(c.run.exit_code == 0 for c in b_checks), [c.describe() for c in b_checks]
    assert all(c.judged and not c.bad and c.failures == 0 for c in b_checks), [c.describe() for c in b_checks]
    assert snapshot(b) == b_before
    assert b.lab.ping_through_tunnel()
    for instance in host.runners:
        assert_textfile_of(host, instance)
