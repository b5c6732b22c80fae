"""The internal prober as contrib/systemd/prometheus-smokeping-vpn@.service
runs it on Debian (instance wg0): its tunnel job holds exactly the targets
of its own config file, never the `localhost` of Debian's default config.

The real prometheus-smokeping-prober runs with the unit's own ExecStart
arguments (only the config path points at the file shipped beside it) in a
network namespace the test creates, where the targets are addresses of its
loopback: every ping is answered inside, nothing leaves it. Needs
root (the namespace); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from wglab import netns, processes
from wglab.processes import wait_until

pytestmark = pytest.mark.integration

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
UNIT = UNITS / "prometheus-smokeping-vpn@.service"
INSTANCE = "wg0"
TARGETS_FILE = UNITS / "smokeping-vpn.yml"
DEBIAN_DEFAULT = Path("/etc/prometheus/smokeping_prober.yml")


def exec_start(unit: Path, instance: str = INSTANCE) -> list[str]:
    """Given a template unit file and an instance, return its ExecStart= as
    argv as systemd runs it: %i is the instance, ${VAR} the unit's own
    Environment= default (no /etc/default file overrides it here)."""
    text = unit.read_text().replace("%i", instance)
    match = re.search(r"^ExecStart=(.+)$", text, re.MULTILINE)
    assert match, f"no ExecStart= in {unit}"
    environment = dict(re.findall(r"^Environment=(\w+)=(\S*)$", text, re.MULTILINE))
    return [re.sub(r"\$\{(\w+)\}", lambda m: environment[m.group(1)], arg) for arg in shlex.split(match.group(1))]


def configured_hosts(config: Path) -> list[str]:
    """Given a smokeping_prober config, return the hosts it lists."""
    hosts, in_hosts = [], False
    for line in config.read_text().splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if re.match(r"^\s*-?\s*hosts:\s*$", stripped):
            in_hosts = True
        elif in_hosts and (item := re.match(r"^\s*-\s*(\S+)$", stripped)):
            hosts.append(item.group(1))
        elif stripped.strip():
            in_hosts = False
    return hosts


def probed_hosts(metrics: str) -> set[str]:
    """Given a /metrics page, return the `host` labels of smokeping_requests_total."""
    return set(re.findall(r'^smokeping_requests_total\{[^}]*host="([^"]+)"', metrics, re.MULTILINE))


@pytest.fixture
def namespace() -> Iterator[str]:
    """A network namespace where the unit's targets are local addresses."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace for the prober)")
    argv = exec_start(UNIT)
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed (Debian package prometheus-smokeping-prober)")
    name = f"wgl{secrets.token_hex(2)}-probe"
    netns.add_netns(name)
    try:
        for host in configured_hosts(TARGETS_FILE):
            netns.add_address(name, "lo", f"{host}/32")
        yield name
    finally:
        netns.delete_netns(name)


def run_prober(namespace: str, argv: list[str], log: Path) -> set[str]:
    """Given a namespace and the prober's argv, run it there until every
    target it pings shows in /metrics (two scrapes agree), and return the
    hosts it reports."""
    prober = processes.start("smokeping-vpn", netns.ns_argv(namespace, argv), log)
    try:
        listen = next(a.split("=", 1)[1] for a in argv if a.startswith("--web.listen-address="))
        url = "http://" + listen.replace("0.0.0.0", "127.0.0.1") + "/metrics"
        seen: list[set[str]] = []

        def settled() -> set[str] | None:
            if not prober.alive():
                raise processes.GiveUp(f"the prober exited: {prober.log_tail(1000)}")
            page = netns.ns_run(namespace, ["curl", "-sf", url])
            seen.append(probed_hosts(page))
            # Pingers start 500 ms apart: the set is complete once it stops growing.
            return seen[-1] if len(seen) > 1 and seen[-1] and seen[-1] == seen[-2] else None

        return wait_until(settled, 30, 1.5, what=f"the prober's targets in {url}")
    finally:
        processes.stop(prober)


def test_the_internal_prober_unit_reads_only_its_own_targets(namespace: str, tmp_path: Path) -> None:
    argv = exec_start(UNIT)
    config_flags = [a for a in argv if a.startswith("--config.file=")]
    assert config_flags == [f"--config.file=/etc/prometheus/smokeping-vpn-{INSTANCE}.yml"]
    assert "--web.listen-address=0.0.0.0:9374" in argv  # the default port
    argv = [f"--config.file={TARGETS_FILE}" if a in config_flags else a for a in argv]
    hosts = run_prober(namespace, argv, tmp_path / "prober.log")
    assert hosts == set(configured_hosts(TARGETS_FILE)) == {"198.41.0.4", "192.33.4.12"}


@pytest.mark.skipif(not DEBIAN_DEFAULT.is_file(), reason=f"{DEBIAN_DEFAULT} is not installed")
def test_without_its_config_file_debians_default_adds_localhost_to_the_tunnel_job(
    namespace: str, tmp_path: Path
) -> None:
    # The unit as shipped before: the targets as arguments, no --config.file.
    argv = [a for a in exec_start(UNIT) if not a.startswith("--config.file=")]
    hosts = run_prober(namespace, [*argv, *configured_hosts(TARGETS_FILE)], tmp_path / "prober.log")
    assert "localhost" in hosts
