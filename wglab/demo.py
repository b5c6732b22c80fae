"""`make demo`: watch wg-failover fail over in a real WireGuard lab.

Usage (as root; `make demo` installs the packages and the venv first)::

    python -m wglab.demo

Builds a three-server lab (wglab.lab), then runs the real commands on a
compressed cadence, a health check every few seconds (health.min_window 5s,
window 60s) instead of every minute, and narrates in plain text:

1. wg-select picks a server; the tunnel comes up and carries pings.
2. A few healthy checks, with the loss per server that Prometheus sees.
3. A hard outage on the active server: the counter climbs check by check,
   wg-failover switches, the history record says why, traffic flows again.
4. A blip lasting one check on the new server: one failure is counted, the
   next good check resets the counter, no switch.

The lab is torn down at the end, on Ctrl-C, on SIGTERM/SIGHUP and on
failure. Exit 0 when every expectation was met, 1 when not (or the lab broke
down), 77 when not root, 69 when a binary is missing, 130 on Ctrl-C.
"""

from __future__ import annotations

import os
import sys

from wglab.lab import INTERNET_ADDRESSES, Lab
from wglab.scenarios import (
    EX_NOPERM,
    EX_UNAVAILABLE,
    Narrator,
    Outcome,
    Runner,
    blip,
    describe_settings,
    exit_on_hangup,
    format_losses,
    outage,
    preflight,
    run_and_report,
    run_scenario,
    write_lab_config,
)


def run_demo(lab: Lab, say: Narrator) -> list[Outcome]:
    """Given a running lab, narrate the demo and return the scenarios' outcomes."""
    lab.wait_for_metrics(timeout=60)
    servers = "\n".join(
        f"  {name}: WireGuard endpoint {lab.endpoint(name)} in namespace {lab.server_ns[name]}"
        for name in lab.server_names
    )
    say(
        f"the lab is up:\n{servers}\n"
        f"  client namespace {lab.vpn_ns}; its tunnel is rebuilt from {lab.active_link}\n"
        f"  router {lab.router_ns}: packet loss is injected there with nftables\n"
        f"  smokeping probers: one pings every endpoint, one pings {' and '.join(INTERNET_ADDRESSES)} "
        f"through the tunnel\n"
        f"  Prometheus {lab.prometheus_url} scrapes both every second"
    )
    runner = Runner(lab, write_lab_config(lab, lab.workdir / "config.toml"), say=say)
    say(f"config {runner.config_path}\n{describe_settings(None, runner.config)}")
    say(
        "the timer, compressed: a health check runs as soon as Prometheus holds "
        f"{runner.interval:g}s (health.min_window) of new tunnel data"
    )

    say("=== 1. boot: wg-select, then the tunnel unit ===")
    server = runner.start()
    say(f"active server: {lab.active_server()} (the client's WireGuard peer is {lab.endpoint(server)})")

    say("=== 2. a healthy tunnel ===")
    say(f"loss per server (external prober, last 5s): {format_losses(runner.endpoint_loss(), active=server)}")
    dry = runner.command("wg-failover", "--dry-run")
    say(f"what a failover would do right now (wg-failover --dry-run):\n{dry.stdout.rstrip()}")
    runner.settle()
    runner.check()

    say("=== 3. hard outage: 100% loss towards the active server ===")
    outcomes = [run_scenario(runner, outage, "outage")]

    say("=== 4. a blip lasting one check: must NOT fail over ===")
    outcomes.append(run_scenario(runner, blip, "blip"))
    return outcomes


def main() -> int:
    """Run the demo and return the exit code."""
    problem = preflight()
    if problem:
        print(f"make demo: {problem}", file=sys.stderr)
        return EX_NOPERM if os.geteuid() != 0 else EX_UNAVAILABLE
    exit_on_hangup()
    say = Narrator()
    say("building the lab: 3 WireGuard servers (wireguard-go), a router, a client, 2 probers, Prometheus")

    def demo() -> list[Outcome]:
        with Lab(servers=3) as lab:
            outcomes = run_demo(lab, say)
            say("tearing the lab down")
        say("the lab is gone")
        return outcomes

    return run_and_report(
        "make demo",
        demo,
        went_well="the demo went as expected",
        went_badly="the demo did NOT go as expected (see FAIL above)",
    )


if __name__ == "__main__":
    raise SystemExit(main())
