"""The units under a real systemd as PID 1: the chain the design rests on.

A container (systemd-nspawn on an overlay of `/`, see wglab.container)
boots in the lab's VPN namespace with the units installed, once with the
plain templates of contrib/systemd/ as instance wg0 (Debian's wg-quick@wg0
runs the tunnel; a second instance, wg1, shares the boot without a tunnel)
and once with the units nixos-module.nix declares (rendered from
lib.evalModules; the tunnel unit is the module's default `wg`, and a named
instance, services.wg-failover.instances.wg1, shares the boot with a
stand-in tunnel unit). The tests
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
    INSTANCE,
    RECORDED_SERVER,
    TOKEN_PATH,
    UNRESOLVABLE_ENDPOINT,
    Machine,
    lines_matching,
)
from wgfailover.metrics import textfile_name
from wgfailover.state import StateDir
from wglab.processes import wait_until

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project supports 3.9+
    import tomli as tomllib

pytestmark = pytest.mark.e2e


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
    failover = machine.installed.units.failover
    wait_until(
        lambda: (
            f"Finished {failover}" in machine.journal(failover, after=cursor)
            and machine.box.unit_property(failover, "ActiveState") != "activating"
        ),
        timeout,
        0.5,
        what=f"{failover} to finish",
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
    select = machine.installed.units.select
    wait_until(lambda: machine.box.unit_property(tunnel, "ActiveState") == "active", 60, 0.5, what=f"{tunnel} active")
    journal = machine.journal(select, tunnel)
    lines = lines_matching(
        journal,
        rf"Starting {re.escape(select)}",
        rf"wg-select\[\d+\]: .*restored server {RECORDED_SERVER}",
        rf"Finished {re.escape(select)}",
        rf"Starting {re.escape(tunnel)}",
        rf"Finished {re.escape(tunnel)}",
    )
    show(f"{machine.installed.flavour}: boot", lines)
    # The ordering is systemd's doing, not luck: After= and the timestamps.
    assert select in machine.box.unit_property(tunnel, "After").split()
    selected = int(machine.box.unit_property(select, "ExecMainExitTimestampMonotonic"))
    started = int(machine.box.unit_property(tunnel, "ExecMainStartTimestampMonotonic"))
    assert 0 < selected <= started
    assert machine.link_target() == f"{machine.installed.config_dir}/{RECORDED_SERVER}"
    assert machine.tunnel_server() == RECORDED_SERVER
    assert wait_until(machine.ping_through_tunnel, 30, 0.5, what="pings through the tunnel")


def test_the_timer_runs_the_health_check_on_its_own(machine: Machine) -> None:
    units = machine.installed.units
    assert machine.box.unit_property(units.timer, "ActiveState") == "active"
    wait_healthy(machine)

    # The check writes its state before it exits; systemd logs "Finished" after.
    def finished_journal() -> str | None:
        text = machine.journal(units.health)
        return text if f"Finished {units.health}" in text else None

    journal = wait_until(finished_journal, 30, 0.5, what=f"systemd to log that {units.health} finished")
    runs = re.findall(rf"Finished {re.escape(units.health)}", journal)
    show(
        f"{machine.installed.flavour}: timer",
        lines_matching(journal, rf"Starting {re.escape(units.health)}", rf"Finished {re.escape(units.health)}"),
    )
    assert len(runs) >= 1
    # Started by the timer: nobody in this test ran it.
    assert machine.box.unit_property(units.health, "TriggeredBy") == units.timer


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
    units = machine.installed.units
    journal = machine.journal(units.health, units.failover, tunnel, after=cursor)
    failover = re.escape(units.failover)
    lines = lines_matching(
        journal,
        rf"wg-health-check\[\d+\]: .*loss .* triggering the failover \(systemctl start {failover}\)",
        rf"Starting {failover}",
        rf"Stopping {re.escape(tunnel)}",
        rf"Finished {re.escape(tunnel)}",
        # wg-failover prints its ranking and the switch when it exits.
        rf"wg-failover\[\d+\]: .*switched from {before} to {after}.*reason: health-check: loss",
        rf"Finished {failover}",
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
    failover = machine.installed.units.failover
    journal = machine.journal(failover, tunnel, after=cursor)
    lines = lines_matching(
        journal,
        rf"Failed to start {re.escape(tunnel)}",
        rf"{re.escape(tunnel)}: Triggering OnFailure= dependencies",
        rf"Starting {re.escape(failover)}",
        rf"Starting {re.escape(tunnel)}",
        rf"Finished {re.escape(tunnel)}",
        # The reason OnFailure='s wg-failover records, not the health check's.
        rf"wg-failover\[\d+\]: .*switched from {before} to {after}.*reason: unit-failed",
        rf"Finished {re.escape(failover)}",
    )
    show(f"{machine.installed.flavour}: {tunnel} fails to start on {before}", lines)
    assert machine.box.unit_property(tunnel, "OnFailure") == failover
    assert machine.box.unit_property(tunnel, "ActiveState") == "active"
    assert machine.state().read_history()[-1].to_server == after


def test_the_sandbox_lets_the_tool_write_only_its_own_files(machine: Machine) -> None:
    installed = machine.installed
    box = machine.box
    current = machine.current()
    # Written by the tool inside the sandbox: the link, the state, the textfile.
    assert machine.link_target() == f"{installed.config_dir}/{current}"
    assert machine.state().read_history(), "the earlier tests switched servers"
    textfile = box.path(f"{installed.textfile_dir}/{textfile_name(installed.instance)}")
    instance_label = "" if installed.instance is None else f'wg_instance="{installed.instance}",'
    assert f'vpn_server_info{{{instance_label}server="{current}"}} 1' in textfile.read_text()
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644  # readable by node_exporter despite UMask=0077
    # ...and nothing else: the same sandbox refused a write outside it.
    assert not box.path(DENIED_PATH).exists()
    denied = lines_matching(
        machine.journal(installed.units.select), rf"{re.escape(DENIED_PATH)}: Read-only file system"
    )
    show(f"{installed.flavour}: sandbox", denied)
    for unit in installed.units.services:
        assert box.unit_property(unit, "ProtectSystem") == "strict", unit
        assert box.unit_property(unit, "CapabilityBoundingSet") == "cap_dac_read_search", unit
    # Credentials: only requests with the token reached Prometheus, and there were some.
    assert machine.gate.log.refused == []
    assert machine.gate.log.authorized > 0
    for unit, path in installed.unit_configs.items():
        token_file = tomllib.loads(box.path(path).read_text())["prometheus"]["bearer_token_file"]
        if installed.flavour == "nixos":
            # LoadCredential= copies the root-only file into the unit's own directory.
            assert token_file == f"/run/credentials/{unit}/prometheus-bearer-token"
            assert f"LoadCredential=prometheus-bearer-token:{TOKEN_PATH}" in box.systemctl("cat", unit).stdout
        else:
            assert token_file == TOKEN_PATH
    assert stat.S_IMODE(box.path(TOKEN_PATH).stat().st_mode) == 0o600
    # The second instance's units run in the same sandbox, on their own paths.
    second_services = installed.second.units.services if installed.second else ()
    problems = [
        line
        for line in machine.journal(*installed.units.services, *second_services).splitlines()
        if re.search(r"Read-only file system|Permission denied|Operation not permitted", line)
        and DENIED_PATH not in line
    ]
    assert problems == []


def test_a_second_instance_keeps_its_own_state_link_and_textfile(machine: Machine) -> None:
    installed, box = machine.installed, machine.box
    second = installed.second
    assert second is not None, f"the {installed.flavour} install boots two instances"
    # Its own timer ran its own check, into its own state directory.
    wait_until(
        lambda: StateDir(box.path(second.state_dir)).read_last_check(), 60, 0.5, what=f"a check of {second.instance}"
    )
    assert box.unit_property(second.units.health, "TriggeredBy") == second.units.timer
    assert box.unit_property(second.units.select, "ActiveState") == "active"
    # The first instance switched servers in the scenarios above; the second
    # stayed on its own recorded server, link and history.
    assert machine.state().read_history(), "the earlier tests switched servers"
    second_state = StateDir(box.path(second.state_dir))
    assert second_state.read_history() == []
    assert box.path(f"{second.state_dir}/current").read_text() == f"{second.recorded_server}\n"
    assert box.run(["readlink", second.active_link]).stdout.strip() == (
        f"{installed.config_dir}/{second.recorded_server}"
    )
    # Each instance's default: the template's wg0, or the module's unnamed
    # instance beside its named one.
    assert installed.state_dir == (f"/var/lib/wg-failover/{INSTANCE}" if installed.instance else "/var/lib/wg-failover")
    assert second.state_dir == f"/var/lib/wg-failover/{second.instance}"
    # One textfile each in the shared directory; no series in both. The
    # module's unnamed instance writes today's wg_failover.prom, unlabelled.
    first = installed.instance
    textfiles = {
        name: box.path(f"{installed.textfile_dir}/{textfile_name(name)}").read_text()
        for name in (first, second.instance)
    }
    series = {
        name: {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}
        for name, text in textfiles.items()
    }
    assert (
        f'vpn_server_info{{wg_instance="{second.instance}",server="{second.recorded_server}"}}'
        in series[second.instance]
    )
    first_label = f'wg_instance="{first}",' if first else ""
    assert f'vpn_server_info{{{first_label}server="{machine.current()}"}}' in series[first]
    assert not series[first] & series[second.instance]
    if first:
        assert not box.path(f"{installed.textfile_dir}/{textfile_name(None)}").exists()
    show(
        f"{installed.flavour}: two instances",
        sorted(f"{name or '(unnamed)'}: {len(lines)} series" for name, lines in series.items()),
    )
