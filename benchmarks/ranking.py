"""Ranking cost against the number of servers, ours beside the original.

For N = 3, 30, 300, 1000 servers, one real Prometheus on loopback holds
smokeping data for every fleet (promdata.py); each decision is one fresh
process, as under systemd:

- ours: ``wg-failover --dry-run --json`` (the issue's measure), and a real
  switch (lock, state, history, symlink, ``restart_command = ["true"]``);
- the original: ``wg-failover.sh`` with SEED_RESTART=true, its state reset
  to the same current server before every run.

HTTP requests per decision come from Prometheus's own
``prometheus_http_requests_total`` before and after one counted run, which
also checks that both picked the known best server.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from benchmarks import common
from benchmarks.promdata import api_requests, make_endpoints, prometheus_with_data

SIZES = (3, 30, 300, 1000)
QUICK_SIZES = (3, 30, 300)


@dataclasses.dataclass(frozen=True)
class Side:
    """One implementation at one N."""

    timing: common.Timing
    requests: int  # HTTP API requests to Prometheus for one decision
    picked_best: bool


@dataclasses.dataclass(frozen=True)
class Row:
    servers: int
    ours: Side
    ours_switch: common.Timing
    original: Side | None


def runs_for(servers: int, quick: bool, original: bool) -> int:
    """Given N, quick mode and whether it is the original, return how many timed runs to make."""
    if quick:
        return 3
    if not original:
        return 10
    return 10 if servers <= 30 else 5 if servers <= 300 else 3


def measure(seed_dir: Path | None, quick: bool = False, use_hyperfine: bool = True) -> list[Row]:
    """
    Given the seed directory (None or missing: ours only), run the ranking
    benchmark and return one Row per N. Raise RuntimeError if a command
    fails or a decision is not the known best server.
    """
    sizes = QUICK_SIZES if quick else SIZES
    fleets = {n: make_endpoints(n, subnet=index + 1) for index, n in enumerate(sizes)}
    script = common.seed_script(seed_dir, "wg-failover.sh")
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="wgf-bench-ranking-") as tmp,
        prometheus_with_data([endpoint for fleet in fleets.values() for endpoint in fleet]) as prometheus,
    ):
        for n, fleet in fleets.items():
            workdir = Path(tmp) / f"n{n}"
            servers = {endpoint.name: endpoint.ip for endpoint in fleet}
            best = fleet[-1].name
            config = common.write_config(workdir / "config.toml", workdir, servers, prometheus.url)

            dry_run = [common.command("wg-failover"), "--config", str(config), "--dry-run", "--json"]
            before = api_requests(prometheus.url)
            counted = common.run_timed(dry_run)
            requests = api_requests(prometheus.url) - before
            if counted.returncode != 0:
                raise RuntimeError(f"wg-failover --dry-run failed at N={n}: {counted.stderr.strip()}")
            choice = json.loads(counted.stdout)["choice"]
            ours = Side(
                common.time_command(dry_run, runs_for(n, quick, False), use_hyperfine=use_hyperfine),
                requests,
                choice == best,
            )
            switch = [common.command("wg-failover"), "--config", str(config)]
            ours_switch = common.time_command(switch, runs_for(n, quick, False), use_hyperfine=use_hyperfine)

            original = None
            if script is not None:
                env = common.seed_env(workdir, servers, prometheus.url)
                current = Path(env["SEED_STATE"]) / "current"
                reset = workdir / "seed-current"
                reset.write_text(current.read_text())
                argv = ["bash", str(script)]
                before = api_requests(prometheus.url)
                counted = common.run_timed(argv, env)
                requests = api_requests(prometheus.url) - before
                if counted.returncode != 0:
                    raise RuntimeError(f"wg-failover.sh failed at N={n}: {counted.stderr.strip()}")
                picked = current.read_text().strip() == best
                original = Side(
                    common.time_command(
                        argv,
                        runs_for(n, quick, True),
                        env,
                        prepare=["cp", str(reset), str(current)],
                        use_hyperfine=use_hyperfine,
                    ),
                    requests,
                    picked,
                )
            rows.append(Row(n, ours, ours_switch, original))
            print(f"ranking: N={n} done", flush=True)
    return rows


def report(rows: list[Row]) -> str:
    """Given the rows, return the markdown tables and the two targets' verdicts."""
    table = common.markdown_table(
        (
            "servers",
            "ours --dry-run (median)",
            "ours CPU",
            "ours switching",
            "requests (ours)",
            "original (median)",
            "original CPU",
            "requests (original)",
            "original / ours",
            "both picked the best",
        ),
        [
            (
                row.servers,
                common.ms(row.ours.timing.wall),
                common.ms(row.ours.timing.cpu),
                common.ms(row.ours_switch.wall),
                row.ours.requests,
                common.ms(row.original.timing.wall) if row.original else "-",
                common.ms(row.original.timing.cpu) if row.original else "-",
                row.original.requests if row.original else "-",
                f"{row.original.timing.wall / row.ours.timing.wall:.1f}x" if row.original else "-",
                "yes"
                if row.ours.picked_best and (row.original is None or row.original.picked_best)
                else f"ours {row.ours.picked_best}, original {row.original.picked_best if row.original else '-'}",
            )
            for row in rows
        ],
    )
    runs = ", ".join(
        f"N={row.servers}: {row.ours.timing.runs}"
        + (f"/{row.original.timing.runs}" if row.original else "")
        + f" runs, spread {common.ms(row.ours.timing.spread)}"
        + (f"/{common.ms(row.original.timing.spread)}" if row.original else "")
        for row in rows
    )
    lines = [
        table,
        "",
        f"Runs (ours/original) and max-min spread of wall time: {runs}; timer: {rows[0].ours.timing.tool}.",
    ]
    by_n = {row.servers: row for row in rows}
    smallest = rows[0]
    largest = rows[-1]
    flat = largest.ours.timing.wall / smallest.ours.timing.wall
    lines.append(
        f"- Flat in N: N={largest.servers} takes {flat:.2f}x the time of N={smallest.servers} "
        f"(target: within 2x) -> {'met' if flat <= 2 else 'MISSED'}."
    )
    if 300 in by_n and by_n[300].original:
        ratio = by_n[300].original.timing.wall / by_n[300].ours.timing.wall
        lines.append(
            f"- At N=300 ours is {ratio:.1f}x faster than the original (target: at least 20x) -> "
            f"{'met' if ratio >= 20 else 'MISSED'}."
        )
    return "\n".join(lines)
