"""Time to restore in the lab, ours beside the original scripts.

For a hard outage (100% loss) and for 30% loss towards the active server's
endpoint, in a fresh three-server lab (wglab.lab.Lab: real WireGuard
tunnels, smokeping probers and Prometheus in network namespaces; needs
root): health checks run at a fixed cadence, and we count

- the checks from loss onset until traffic flows through another server
  (the client's peer is another server and pings cross the tunnel);
- the switches made in the 10 checks after that (0 is right: the new
  server is healthy).

The lab's cadence is compressed: checks every ``interval`` seconds (10 s
for the original's 1 minute), probers pinging every 200 ms, scrapes every
second, and every 5-minute window of the original scaled the same way
(``window`` = 5 intervals). The original runs as ``wg-health-check.sh`` with
SEED_TRIGGER = ``bash wg-failover.sh`` and SEED_RESTART = the lab's restart
command; ours as ``wg-health-check`` switching in-process.

Run alone: ``sudo .venv/bin/python -m benchmarks.restore [--seed-dir PATH]``;
``python -m benchmarks.run --restore`` includes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

from benchmarks import common

SCENARIOS = (("hard outage", 100.0), ("30% loss", 30.0))
REQUIRED_BINARIES = ("ip", "nft", "ping", "wg", "wireguard-go", "prometheus", "prometheus-smokeping-prober")
MAX_FAILURES = 3


@dataclasses.dataclass(frozen=True)
class Trial:
    who: str
    scenario: str
    restored_after: int | None  # checks from onset until traffic flows through a new server; None: never
    seconds: float | None  # from onset to that check's end
    switches_after: int  # switches in the checks after the restore
    checks_after: int
    exit_codes: tuple[int, ...]  # of every check after onset, to spot "could not measure"
    last_error: str = ""  # stderr of the last failing check, if any


def lab_missing() -> str | None:
    """Return why the lab can't run here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, TUN)"
    missing = [name for name in REQUIRED_BINARIES if shutil.which(name) is None]
    if missing:
        return "missing binaries: " + ", ".join(missing)
    try:
        import wglab.lab  # noqa: F401 - only whether it is there
    except ImportError as error:
        return f"wglab.lab not importable: {error}"
    return None


def run_trial(
    who: str,
    scenario: str,
    percent: float,
    seed_dir: Path | None,
    interval: float,
    max_checks: int,
    after_checks: int,
) -> Trial:
    """
    Given ours or "original", a scenario and its loss percentage, build a
    lab, run healthy checks, break server1, and return the Trial. Raise
    RuntimeError if the lab or a command can't run at all.
    """
    from wglab.lab import Lab

    window = f"{int(interval * 5)}s"
    with Lab(servers=3) as lab:
        lab.wait_for_metrics(timeout=90)
        names = lab.server_names
        lab.state_dir.mkdir(parents=True, exist_ok=True)
        # The lab's config names a textfile_dir it does not create, as node_exporter's package would.
        lab.textfile_dir.mkdir(parents=True, exist_ok=True)
        (lab.state_dir / "current").write_text(names[0] + "\n")
        if who == "ours":
            config = lab.write_config(
                lab.workdir / "config.toml",
                failover={"window": window},
                health={"window": window, "min_window": "5s", "max_failures": MAX_FAILURES, "threshold": 0.15},
            )
            argv, env = [common.command("wg-health-check"), "--config", str(config)], {}
        else:
            script = common.seed_script(seed_dir, "wg-health-check.sh")
            failover = common.seed_script(seed_dir, "wg-failover.sh")
            if script is None or failover is None:
                raise RuntimeError(f"the original scripts are not in {seed_dir}")
            argv = ["bash", str(script)]
            env = common.lab_seed_env(lab, failover, window)

        next_tick = time.monotonic()
        last_error = ""

        def check() -> int:
            nonlocal next_tick, last_error
            next_tick += interval
            time.sleep(max(0.0, next_tick - time.monotonic()))
            result = common.run_timed(argv, env, timeout=120)
            if result.returncode not in (0,):
                last_error = result.stderr.strip()[-300:]
            return result.returncode

        for _ in range(3):  # healthy baseline: the counter is 0 and the cadence set
            check()
        lab.set_loss(names[0], percent)
        onset = time.monotonic()
        codes = []
        restored_after = None
        seconds = None
        for index in range(1, max_checks + 1):
            codes.append(check())
            if lab.active_server() not in (None, names[0]) and lab.ping_through_tunnel():
                restored_after = index
                seconds = time.monotonic() - onset
                break
        switches = 0
        done = 0
        if restored_after is not None:
            active = lab.active_server()
            for _ in range(after_checks):
                codes.append(check())
                done += 1
                now_active = lab.active_server()
                if now_active != active:
                    switches += 1
                    active = now_active
    return Trial(who, scenario, restored_after, seconds, switches, done, tuple(codes), last_error)


def measure(
    seed_dir: Path | None,
    interval: float = 10.0,
    max_checks: int = 12,
    after_checks: int = 10,
) -> list[Trial]:
    """
    Given the seed directory (None or missing: ours only) and the cadence,
    run every scenario in a fresh lab per side and return the trials.
    """
    original = common.seed_script(seed_dir, "wg-health-check.sh") is not None
    trials = []
    for scenario, percent in SCENARIOS:
        for who in ("ours", "original") if original else ("ours",):
            trial = run_trial(who, scenario, percent, seed_dir, interval, max_checks, after_checks)
            print(f"restore: {who}, {scenario}: {trial}", flush=True)
            trials.append(trial)
    return trials


def report(trials: list[Trial], interval: float) -> str:
    """Given the trials, return a markdown table and the target's verdict."""
    table = common.markdown_table(
        ("who", "scenario", "checks until restored", "seconds", "switches in the next checks", "check exit codes"),
        [
            (
                t.who,
                t.scenario,
                t.restored_after if t.restored_after is not None else "never (within the checks run)",
                f"{t.seconds:.0f} s" if t.seconds is not None else "-",
                f"{t.switches_after} in {t.checks_after}",
                " ".join(str(code) for code in t.exit_codes),
            )
            for t in trials
        ],
    )
    lines = [table, "", f"Checks every {interval:g} s; max_failures = {MAX_FAILURES}."]
    for t in trials:
        if t.who == "ours":
            met = t.restored_after is not None and t.restored_after <= MAX_FAILURES + 1 and t.switches_after == 0
            lines.append(
                f"- ours, {t.scenario}: target restore within {MAX_FAILURES + 1} checks with 0 extra switches "
                f"-> {'met' if met else 'MISSED'}."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the restore benchmark alone and print its markdown; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restore", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed-dir", type=Path, default=common.DEFAULT_SEED_DIR)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between checks (default 10)")
    args = parser.parse_args(argv)
    why = lab_missing()
    if why:
        print(f"benchmarks.restore: skipped: {why}", file=sys.stderr)
        return 1
    trials = measure(args.seed_dir, interval=args.interval)
    print(report(trials, args.interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
