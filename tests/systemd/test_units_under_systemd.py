"""The units under a real systemd as PID 1: the chain the design rests on.

A container (systemd-nspawn on an overlay of `/`, see wglab.container)
boots in the lab's VPN namespace with the units installed, once with the
plain files of contrib/systemd/ (Debian's wg-quick@wg0 runs the tunnel) and
once with the units nixos-module.nix declares (rendered from
lib.evalModules; the tunnel unit is the module's default `wg`). The tests
only drive systemd (boot, `systemctl`, the timer, OnFailure=) and the lab
(packet loss); they never run a wg-* command themselves. Every assertion
reads what systemd and the tool left behind: the journal, unit properties,
the state directory, the WireGuard interface, pings through it.

Each test prints the journal lines it relied on (`pytest -rP` shows them).
Needs root, systemd-nspawn and the lab's binaries; skipped with the reason
otherwise.
"""

from __future__ import annotations

import re
import stat
import sys
import time

import pytest

from tests.systemd.machine import (
    DENIED_PATH,
    RECORDED_SERVER,
    TOKEN_PATH,
    UNRESOLVABLE_ENDPOINT,
    Machine,
    lines_matching,
)
from wglab.processes import wait_until

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project supports 3.9+
    import tomli as tomllib

pytestmark = pytest.mark.e2e

TOOL_UNITS = ("wg-select.service", "wg-failover.service", "wg-health-check.service")


def show(title: str, lines: list[str]) -> None:
    print(f"--- {title}")
    for line in lines:
        print(f"    {line}")


def wait_for_switch(machine: Machine, away_from: str, cursor: str, timeout: float) -> str:
    """Wait until `current` names another server, wg-failover.service has
    finished (its probation of the new server included) and the tunnel
    carries pings through that server; return it."""
    new = wait_until(
        lambda: (current := machine.current()) != away_from and current,
        timeout,
        0.5,
        what=f"a switch away from {away_from}",
    )
    assert isinstance(new, str)
    wait_until(
        lambda: (
            "Finished wg-failover.service" in machine.journal("wg-failover.service", after=cursor)
            and machine.box.unit_property("wg-failover.service", "ActiveState") != "activating"
        ),
        timeout,
        0.5,
        what="wg-failover.service to finish",
    )
    wait_until(lambda: machine.tunnel_server() == new, 30, 0.5, what=f"the tunnel on {new}")
    assert wait_until(machine.ping_through_tunnel, 30, 0.5, what=f"pings through the tunnel to {new}")
    return new


def wait_healthy(machine: Machine, timeout: float = 60) -> None:
    """Wait for a health check, started now or later, that judges the tunnel
    healthy with the failure counter at 0."""
    since = time.time()
    wait_until(lambda: machine.healthy_check_since(since), timeout, 0.5, what="a healthy check with the counter at 0")


def test_boot_runs_wg_select_before_the_tunnel_and_comes_up_on_the_recorded_server(machine: Machine) -> None:
    tunnel = machine.installed.tunnel_unit
    wait_until(lambda: machine.box.unit_property(tunnel, "ActiveState") == "active", 60, 0.5, what=f"{tunnel} active")
    journal = machine.journal("wg-select.service", tunnel)
    lines = lines_matching(
        journal,
        r"Starting wg-select\.service",
        rf"wg-select\[\d+\]: .*restored server {RECORDED_SERVER}",
        r"Finished wg-select\.service",
        rf"Starting {re.escape(tunnel)}",
        rf"Finished {re.escape(tunnel)}",
    )
    show(f"{machine.installed.flavour}: boot", lines)
    # The ordering is systemd's doing, not luck: After= and the timestamps.
    assert "wg-select.service" in machine.box.unit_property(tunnel, "After").split()
    selected = int(machine.box.unit_property("wg-select.service", "ExecMainExitTimestampMonotonic"))
    started = int(machine.box.unit_property(tunnel, "ExecMainStartTimestampMonotonic"))
    assert 0 < selected <= started
    assert machine.link_target() == f"{machine.installed.config_dir}/{RECORDED_SERVER}"
    assert machine.tunnel_server() == RECORDED_SERVER
    assert wait_until(machine.ping_through_tunnel, 30, 0.5, what="pings through the tunnel")


def test_the_timer_runs_the_health_check_on_its_own(machine: Machine) -> None:
    assert machine.box.unit_property("wg-health-check.timer", "ActiveState") == "active"
    wait_healthy(machine)
    journal = machine.journal("wg-health-check.service")
    runs = re.findall(r"Finished wg-health-check\.service", journal)
    show(
        f"{machine.installed.flavour}: timer",
        lines_matching(journal, r"Starting wg-health-check\.service", r"Finished wg-health-check\.service"),
    )
    assert len(runs) >= 1
    # Started by the timer: nobody in this test ran it.
    assert machine.box.unit_property("wg-health-check.service", "TriggeredBy") == "wg-health-check.timer"


def test_an_outage_fails_over_through_the_timer_and_restarts_the_tunnel(machine: Machine) -> None:
    wait_healthy(machine)
    before = machine.current()
    assert before is not None
    tunnel = machine.installed.tunnel_unit
    restarts_before = int(machine.box.unit_property(tunnel, "ExecMainStartTimestampMonotonic"))
    cursor = machine.cursor()
    machine.lab.set_loss(before, 100)
    try:
        after = wait_for_switch(machine, before, cursor, timeout=90)
    finally:
        machine.lab.clear_loss()
    journal = machine.journal("wg-health-check.service", "wg-failover.service", tunnel, after=cursor)
    lines = lines_matching(
        journal,
        r"wg-health-check\[\d+\]: .*loss .* triggering the failover \(systemctl start wg-failover\.service\)",
        r"Starting wg-failover\.service",
        rf"Stopping {re.escape(tunnel)}",
        rf"Finished {re.escape(tunnel)}",
        # wg-failover prints its ranking and the switch when it exits.
        rf"wg-failover\[\d+\]: .*switched from {before} to {after}.*reason: health-check: loss",
        r"Finished wg-failover\.service",
    )
    show(f"{machine.installed.flavour}: outage of {before}", lines)
    assert int(machine.box.unit_property(tunnel, "ExecMainStartTimestampMonotonic")) > restarts_before
    assert machine.tunnel_server() == after
    history = machine.state().read_history()
    assert (history[-1].from_server, history[-1].to_server) == (before, after)


def test_a_tunnel_that_fails_to_start_fails_over_through_on_failure(machine: Machine) -> None:
    before = machine.current()
    assert before is not None
    tunnel = machine.installed.tunnel_unit
    config = machine.box.path(f"{machine.installed.config_dir}/{before}")
    good = config.read_text()
    # What breaks tunnels at boot: the endpoint's name no longer resolves.
    config.write_text(re.sub(r"(?m)^Endpoint = .*$", f"Endpoint = {UNRESOLVABLE_ENDPOINT}", good))
    cursor = machine.cursor()
    try:
        assert machine.box.systemctl("restart", tunnel, check=False).returncode != 0
        after = wait_for_switch(machine, before, cursor, timeout=90)
    finally:
        config.write_text(good)
    journal = machine.journal("wg-failover.service", tunnel, after=cursor)
    lines = lines_matching(
        journal,
        rf"Failed to start {re.escape(tunnel)}",
        rf"{re.escape(tunnel)}: Triggering OnFailure= dependencies",
        r"Starting wg-failover\.service",
        rf"Starting {re.escape(tunnel)}",
        rf"Finished {re.escape(tunnel)}",
        # The reason OnFailure='s wg-failover.service records, not the health check's.
        rf"wg-failover\[\d+\]: .*switched from {before} to {after}.*reason: unit-failed",
        r"Finished wg-failover\.service",
    )
    show(f"{machine.installed.flavour}: {tunnel} fails to start on {before}", lines)
    assert machine.box.unit_property(tunnel, "OnFailure") == "wg-failover.service"
    assert machine.box.unit_property(tunnel, "ActiveState") == "active"
    assert machine.state().read_history()[-1].to_server == after


def test_the_sandbox_lets_the_tool_write_only_its_own_files(machine: Machine) -> None:
    installed = machine.installed
    box = machine.box
    current = machine.current()
    # Written by the tool inside the sandbox: the link, the state, the textfile.
    assert machine.link_target() == f"{installed.config_dir}/{current}"
    assert machine.state().read_history(), "the earlier tests switched servers"
    textfile = box.path(f"{installed.textfile_dir}/wg_failover.prom")
    assert f'vpn_server_info{{server="{current}"}} 1' in textfile.read_text()
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644  # readable by node_exporter despite UMask=0077
    # ...and nothing else: the same sandbox refused a write outside it.
    assert not box.path(DENIED_PATH).exists()
    denied = lines_matching(machine.journal("wg-select.service"), rf"{re.escape(DENIED_PATH)}: Read-only file system")
    show(f"{installed.flavour}: sandbox", denied)
    for unit in TOOL_UNITS:
        assert box.unit_property(unit, "ProtectSystem") == "strict", unit
        assert box.unit_property(unit, "CapabilityBoundingSet") == "cap_dac_read_search", unit
    # Credentials: only requests with the token reached Prometheus, and there were some.
    assert machine.gate.log.refused == []
    assert machine.gate.log.authorized > 0
    for unit, path in installed.unit_configs.items():
        token_file = tomllib.loads(box.path(path).read_text())["prometheus"]["bearer_token_file"]
        if installed.flavour == "nixos":
            # LoadCredential= copies the root-only file into the unit's own directory.
            assert token_file == f"/run/credentials/{unit}.service/prometheus-bearer-token"
            assert (
                f"LoadCredential=prometheus-bearer-token:{TOKEN_PATH}" in box.systemctl("cat", f"{unit}.service").stdout
            )
        else:
            assert token_file == TOKEN_PATH
    assert stat.S_IMODE(box.path(TOKEN_PATH).stat().st_mode) == 0o600
    problems = [
        line
        for line in machine.journal(*TOOL_UNITS).splitlines()
        if re.search(r"Read-only file system|Permission denied|Operation not permitted", line)
        and DENIED_PATH not in line
    ]
    assert problems == []
