"""Where the fault is, in the lab: ours beside the original scripts.

Three faults in one three-server lab per side (wglab.lab.Lab: real WireGuard
tunnels, smokeping probers and Prometheus in network namespaces; needs
root), the health check run at a fixed cadence as its timer would:

- **uplink**: 100% loss between the host and every server (the client's
  WireGuard packets and the external prober's pings) for 10 checks, then
  5 more checks. Counted: switches and tunnel restarts.
- **dead-replacement**: server1 goes dark (100% loss) while one other
  server's WireGuard is stopped (its host still answers pings). Counted:
  checks and seconds from the onset until traffic flows through the working
  server, switches until then and in 5 checks after. Run once with each
  other server dead, so the first pick is the dead one in one of the two.
- **all-down**: every server's WireGuard stopped for 12 checks, then
  started again; 5 more checks. Counted: switches and restarts while down,
  and after.

The cadence is compressed as in benchmarks/restore.py: a check every
``interval`` seconds, each 5-minute window of the original as 5 intervals.
The original runs as ``wg-health-check.sh`` with SEED_TRIGGER =
``bash wg-failover.sh``; ours as ``wg-health-check`` switching in-process
with the default ``failover.probation`` (judged by tunnel data: the lab
config sets no ``health.interface``).

Run: ``sudo .venv/bin/python -m benchmarks.faults [--seed-dir PATH] [--only ours|original]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import common, restore

UPLINK_CHECKS = 10
ALL_DOWN_CHECKS = 12
AFTER_CHECKS = 5
MAX_RESTORE_CHECKS = 15


@dataclasses.dataclass(frozen=True)
class FaultTrial:
    who: str
    scenario: str
    switches: int  # while the fault lasted (until restored, for dead-replacement)
    restarts: int
    switches_after: int  # in AFTER_CHECKS checks once the fault is gone (or restored)
    restored_checks: int | None = None  # dead-replacement: checks from onset until traffic flows; None: never
    restored_seconds: float | None = None
    path: str = ""  # the servers the tunnel went through
    exit_codes: tuple[int, ...] = ()


class Side:
    """One side (ours or the original) driving one lab at a fixed cadence."""

    def __init__(self, who: str, lab: Any, seed_dir: Path | None, interval: float) -> None:
        self.who = who
        self.lab = lab
        self.interval = interval
        window = self.window = f"{int(interval * 5)}s"
        if who == "ours":
            config = lab.write_config(
                lab.workdir / "config.toml",
                failover={"window": window},
                health={"window": window, "min_window": "5s", "max_failures": restore.MAX_FAILURES},
            )
            self.argv, self.env = [common.command("wg-health-check"), "--config", str(config)], {}
        else:
            script = common.seed_script(seed_dir, "wg-health-check.sh")
            failover = common.seed_script(seed_dir, "wg-failover.sh")
            if script is None or failover is None:
                raise RuntimeError(f"the original scripts are not in {seed_dir}")
            self.argv = ["bash", str(script)]
            self.env = common.lab_seed_env(lab, failover, window)
        self.next_tick = time.monotonic()
        self.codes: list[int] = []

    def reset(self) -> None:
        """Back to server1 with no fault, a fresh state and a full healthy window."""
        from wglab.processes import wait_until

        self.lab.clear_loss()
        # The previous scenario's losses must be out of every window first,
        # or the baseline checks would judge them and switch.
        wait_until(lambda: self.lab.is_clean(self.window), 180, 1.0, what=f"a clean {self.window} window")
        shutil.rmtree(self.lab.state_dir, ignore_errors=True)
        self.lab.state_dir.mkdir(parents=True)
        (self.lab.state_dir / "current").write_text("server1\n")
        self.lab.switch_to("server1")
        for _ in range(3):
            self.check()
        if self.lab.active_server() != "server1":
            raise RuntimeError(f"{self.who} left server1 during the healthy baseline")
        self.codes = []

    def check(self) -> int:
        self.next_tick += self.interval
        time.sleep(max(0.0, self.next_tick - time.monotonic()))
        result = common.run_timed(self.argv, self.env, timeout=300)
        self.next_tick = max(self.next_tick, time.monotonic())
        self.codes.append(result.returncode)
        return result.returncode

    def path(self, path: list[str]) -> None:
        active = self.lab.active_server() or "down"
        if not path or path[-1] != active:
            path.append(active)


def _fault_for(side: Side, name: str, checks: int, start: Callable[[], None], stop: Callable[[], None]) -> FaultTrial:
    """Given a fault's start and stop, run `checks` checks under it and AFTER_CHECKS after; count what moved."""
    lab = side.lab
    side.reset()
    restarts, path = lab.restart_count(), ["server1"]
    start()
    for _ in range(checks):
        side.check()
        side.path(path)
    stop()
    during, restarts = len(path) - 1, lab.restart_count() - restarts
    for _ in range(AFTER_CHECKS):
        side.check()
        side.path(path)
    return FaultTrial(
        side.who, name, during, restarts, len(path) - 1 - during, path=" > ".join(path), exit_codes=tuple(side.codes)
    )


def uplink(side: Side) -> FaultTrial:
    lab = side.lab
    return _fault_for(side, "uplink", UPLINK_CHECKS, lambda: lab.set_uplink_loss(100), lambda: lab.set_uplink_loss(0))


def dead_replacement(side: Side, dead: str) -> FaultTrial:
    lab = side.lab
    side.reset()
    working = next(name for name in lab.server_names if name not in ("server1", dead))
    lab.set_wireguard_up(dead, False)
    restarts, path = lab.restart_count(), ["server1"]
    lab.set_loss("server1", 100)
    onset = time.monotonic()
    restored = seconds = None
    for index in range(1, MAX_RESTORE_CHECKS + 1):
        side.check()
        side.path(path)
        if lab.active_server() == working and lab.ping_through_tunnel():
            restored, seconds = index, time.monotonic() - onset
            break
    during, restarts = len(path) - 1, lab.restart_count() - restarts
    for _ in range(AFTER_CHECKS if restored else 0):
        side.check()
        side.path(path)
    return FaultTrial(
        side.who,
        f"dead-replacement ({dead} dead)",
        during,
        restarts,
        len(path) - 1 - during,
        restored,
        seconds,
        " > ".join(path),
        tuple(side.codes),
    )


def all_down(side: Side) -> FaultTrial:
    lab = side.lab

    def set_all(up: bool) -> None:
        for name in lab.server_names:
            lab.set_wireguard_up(name, up)

    return _fault_for(side, "all-down", ALL_DOWN_CHECKS, lambda: set_all(False), lambda: set_all(True))


SCENARIOS: tuple[tuple[str, Callable[[Side], FaultTrial]], ...] = (
    ("uplink", uplink),
    ("dead-replacement (server2 dead)", lambda side: dead_replacement(side, "server2")),
    ("dead-replacement (server3 dead)", lambda side: dead_replacement(side, "server3")),
    ("all-down", all_down),
)


def measure(seed_dir: Path | None, who: list[str], interval: float) -> list[FaultTrial]:
    """Given the seed directory, the sides to run and the cadence, run every scenario; return the trials."""
    from wglab.lab import Lab

    trials = []
    for side_name in who:
        with Lab(servers=3) as lab:
            lab.wait_for_metrics(timeout=90)
            side = Side(side_name, lab, seed_dir, interval)
            for _, scenario in SCENARIOS:
                trial = scenario(side)
                print(f"faults: {trial}", file=sys.stderr, flush=True)
                trials.append(trial)
    return trials


def report(trials: list[FaultTrial], interval: float) -> str:
    """Given the trials, return them as a markdown table."""
    table = common.markdown_table(
        (
            "who",
            "scenario",
            "switches (tunnel restarts) during",
            "restored after",
            "switches after",
            "servers the tunnel was on after each check",
            "check exit codes",
        ),
        [
            (
                t.who,
                t.scenario,
                # Every switch restarts the tunnel, and several may happen
                # within one check (a probation episode): restarts count them all.
                t.restarts,
                (
                    f"{t.restored_checks} checks, {t.restored_seconds:.0f} s"
                    if t.restored_checks is not None and t.restored_seconds is not None
                    else ("never" if t.scenario.startswith("dead") else "-")
                ),
                t.switches_after,
                t.path,
                " ".join(str(code) for code in t.exit_codes),
            )
            for t in trials
        ],
    )
    return f"{table}\n\nChecks every {interval:g} s; max_failures = {restore.MAX_FAILURES}."


def main(argv: list[str] | None = None) -> int:
    """Run the fault benchmark and print its markdown; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed-dir", type=Path, default=common.DEFAULT_SEED_DIR)
    parser.add_argument("--interval", type=float, default=6.0, help="seconds between checks (default 6)")
    parser.add_argument("--only", choices=("ours", "original"), action="append", help="run one side (repeatable)")
    args = parser.parse_args(argv)
    why = restore.lab_missing()
    if why:
        print(f"benchmarks.faults: skipped: {why}", file=sys.stderr)
        return 1
    who = args.only or ["ours", "original"]
    if common.seed_script(args.seed_dir, "wg-health-check.sh") is None:
        who = [side for side in who if side != "original"]
    trials = measure(args.seed_dir, who, args.interval)
    print(report(trials, args.interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
