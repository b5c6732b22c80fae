"""The lab's stand-in for `systemctl restart wg.service`.

Usage: python -m wglab.restart --lab-state LAB.json

Reads the lab state file written by wglab.lab.Lab, then rebuilds the VPN
namespace's client interface from the config that `active_link` points at
right now. Exit 0 when the tunnel is up again, 1 with one line on stderr
when it could not be restarted (a dangling link, a bad config, wireguard-go
failing), so wg-failover sees a failing restart exactly as with systemd.
Every attempt appends a line to WORKDIR/restarts.log, so a scenario can
count tunnel restarts (Lab.restart_count) as `systemctl show -p
NRestarts` would not: that counts only Restart= restarts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wglab.wireguard import apply_client_config

RESTARTS_LOG = "restarts.log"  # one line per restart attempt: the server the link pointed at


def main(argv: list[str] | None = None) -> int:
    """Given command-line arguments, restart the lab's tunnel and return the
    exit code."""
    parser = argparse.ArgumentParser(prog="python -m wglab.restart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab-state", type=Path, required=True, help="lab.json written by wglab.lab.Lab")
    args = parser.parse_args(argv)
    try:
        state = json.loads(args.lab_state.read_text())
        link = Path(state["active_link"])
        with open(Path(state["workdir"]) / RESTARTS_LOG, "a") as log:
            log.write(f"{link.resolve().name}\n")
        pid = apply_client_config(state["vpn_ns"], state["client_iface"], link, Path(state["workdir"]))
    except (OSError, ValueError, KeyError, RuntimeError, TimeoutError) as exc:
        print(f"wglab.restart: {exc}".replace("\n", " | "), file=sys.stderr)
        return 1
    print(f"wglab.restart: {state['client_iface']} up from {link.resolve()} (wireguard-go pid {pid})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
