"""`make bench`: run the benchmarks and print the results as markdown.

    python -m benchmarks.run [--seed-dir PATH] [--quick] [--only NAME ...] [--full-fleet] [--restore]

The original article's scripts are taken from --seed-dir (default
../shared/anchors/seed beside the repository) and run side by side with
ours; if they are not there, only ours is measured. The output is the body
of docs/performance.md: paste it there with the command you ran.

The fleet benchmark (benchmarks/fleet.py) runs with 100 deciding clients
unless --full-fleet: the backend holds all 1,000 clients' series either
way, so its query latencies are at full size, but the spread table of 1,000
decisions takes about five minutes more (35 s against 310 s on 2 cores).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from benchmarks import cold_start, common, fleet, hung_prometheus, ranking, restore

BENCHMARKS = ("ranking", "hung", "cold-start", "fleet")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark wg-failover against a real Prometheus, beside the original scripts; print markdown.",
    )
    parser.add_argument(
        "--seed-dir",
        type=Path,
        default=common.DEFAULT_SEED_DIR,
        help="directory holding the original wg-failover.sh, wg-health-check.sh (default: %(default)s); "
        "skipped if absent",
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs and N up to 300 only (a smoke run)")
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run only this benchmark (repeatable; default: all)"
    )
    parser.add_argument(
        "--full-fleet",
        action="store_true",
        help=f"let all {fleet.CLIENTS} clients of the fleet benchmark decide (about five minutes more; "
        f"default: {fleet.QUICK_CLIENTS})",
    )
    parser.add_argument(
        "--restore",
        action="store_true",
        help="also run the time-to-restore benchmark in the WireGuard lab (root; about 20 minutes)",
    )
    parser.add_argument(
        "--no-hyperfine", action="store_true", help="time with the built-in wait4 timer even if hyperfine is installed"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks, print their markdown on stdout and return the exit code."""
    args = parse_args(argv)
    seed_dir: Path | None = args.seed_dir
    if seed_dir is None or common.seed_script(seed_dir, "wg-failover.sh") is None:
        print(f"benchmarks: no original scripts in {seed_dir}; measuring ours only", file=sys.stderr)
        seed_dir = None
    chosen = args.only or list(BENCHMARKS)
    started = time.monotonic()
    sections = ["## Machine", "", common.markdown_table(("", ""), list(common.machine().items()))]
    command = "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    sections += ["", f"Command: `{command.strip()}`"]
    if "ranking" in chosen:
        rows = ranking.measure(seed_dir, quick=args.quick, use_hyperfine=not args.no_hyperfine)
        sections += ["", "## Ranking cost against the number of servers", "", ranking.report(rows)]
    if "hung" in chosen:
        outcomes = hung_prometheus.measure(seed_dir, quick=args.quick)
        sections += ["", "## A hung Prometheus", "", hung_prometheus.report(outcomes)]
    if "cold-start" in chosen:
        entries, costs, total = cold_start.measure(seed_dir, quick=args.quick)
        sections += ["", "## Cold start", "", cold_start.report(entries, costs, total)]
    if "fleet" in chosen:
        results = fleet.measure(quick=args.quick or not args.full_fleet)
        sections += ["", "## A fleet on one backend", "", fleet.report(results)]
    if args.restore:
        why = restore.lab_missing()
        if why:
            sections += ["", "## Time to restore in the lab", "", f"Skipped: {why}."]
        else:
            trials = restore.measure(seed_dir)
            sections += ["", "## Time to restore in the lab", "", restore.report(trials, 10.0)]
    sections += ["", f"Total benchmark time: {time.monotonic() - started:.0f} s."]
    print("\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
