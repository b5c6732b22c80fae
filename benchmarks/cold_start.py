"""Cold start: what one run of wg-health-check costs a host every minute.

Wall and CPU time (user + sys of the child, from wait4) of:
``python -c pass`` (the floor), ``wg-health-check --help``, a full check
against a real Prometheus (promdata.py; the tunnel is healthy, so the
counter is reset and nothing else happens), and the original
``wg-health-check.sh`` on the same Prometheus. Then ``python -X importtime``
of the command module, to see which imports the time goes to and what a
lazy import would save.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common
from benchmarks.promdata import make_endpoints, prometheus_with_data

_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


@dataclasses.dataclass(frozen=True)
class Entry:
    what: str
    timing: common.Timing


@dataclasses.dataclass(frozen=True)
class ImportCost:
    module: str
    depth: int
    cumulative: float  # seconds, median over runs


def measure(seed_dir: Path | None, quick: bool = False) -> tuple[list[Entry], list[ImportCost], float]:
    """
    Given the seed directory (None or missing: ours only), return the
    timings, the import costs of the command module (biggest first) and the
    median total import time of that module.
    """
    runs = 5 if quick else 15
    python = sys.executable
    health = common.command("wg-health-check")
    entries = [
        Entry("python -c pass", common.time_builtin([python, "-c", "pass"], runs)),
        Entry("python -c 'import requests'", common.time_builtin([python, "-c", "import requests"], runs)),
        Entry("python -c 'import click'", common.time_builtin([python, "-c", "import click"], runs)),
        # What --help would cost if the command module imported the library
        # (wgfailover.actions.health_check, hence requests) only inside main(): click, the
        # config loader and the shared options, nothing else.
        Entry(
            "python -c 'import wgfailover.commands.common' (--help with a lazy library import)",
            common.time_builtin([python, "-c", "import wgfailover.commands.common"], runs),
        ),
        Entry("wg-health-check --help", common.time_builtin([health, "--help"], runs)),
    ]
    fleet = make_endpoints(3)
    servers = {endpoint.name: endpoint.ip for endpoint in fleet}
    with tempfile.TemporaryDirectory(prefix="wgf-bench-cold-") as tmp, prometheus_with_data(fleet) as prometheus:
        workdir = Path(tmp)
        config = common.write_config(
            workdir / "config.toml",
            workdir,
            servers,
            prometheus.url,
            health={"window": "5m", "min_window": "30s"},
        )
        entries.append(
            Entry("wg-health-check (full check)", common.time_builtin([health, "--config", str(config)], runs))
        )
        script = common.seed_script(seed_dir, "wg-health-check.sh")
        if script is not None:
            env = common.seed_env(workdir, servers, prometheus.url)
            entries.append(Entry("original wg-health-check.sh", common.time_builtin(["bash", str(script)], runs, env)))
    costs, total = import_costs("wgfailover.commands.wg_health_check", runs=5 if quick else 11)
    print("cold start: done", flush=True)
    return entries, costs, total


def import_costs(module: str, runs: int) -> tuple[list[ImportCost], float]:
    """
    Given a module, import it in runs fresh interpreters under -X importtime
    and return each imported module's median cumulative time (biggest
    first) and the median total for the module itself.
    """
    samples: dict[tuple[str, int], list[float]] = {}
    for _ in range(runs):
        completed = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in completed.stderr.splitlines():
            match = _IMPORTTIME.match(line)
            if match:
                depth = len(match.group(3)) // 2
                samples.setdefault((match.group(4), depth), []).append(int(match.group(2)) / 1e6)
    costs = [
        ImportCost(name, depth, statistics.median(values))
        for (name, depth), values in samples.items()
        if len(values) == runs
    ]
    costs.sort(key=lambda cost: cost.cumulative, reverse=True)
    total = next((cost.cumulative for cost in costs if cost.module == module), 0.0)
    return costs, total


def report(entries: list[Entry], costs: list[ImportCost], total: float) -> str:
    """Given the measurements, return markdown tables and a note on lazy imports."""
    floor = entries[0].timing
    table = common.markdown_table(
        ("command", "wall (median)", "CPU user+sys (median)", "wall above python -c pass", "runs"),
        [
            (
                entry.what,
                common.ms(entry.timing.wall),
                common.ms(entry.timing.cpu),
                common.ms(entry.timing.wall - floor.wall) if entry is not entries[0] else "-",
                entry.timing.runs,
            )
            for entry in entries
        ],
    )
    shown = [cost for cost in costs if cost.depth <= 2][:14]
    imports = common.markdown_table(
        ("module", "nesting depth", "cumulative import time (median)", "share"),
        [(cost.module, cost.depth, common.ms(cost.cumulative), f"{cost.cumulative / total:.0%}") for cost in shown],
    )
    by_name = {cost.module: cost.cumulative for cost in costs}
    requests = max((cost.cumulative for cost in costs if cost.module == "requests"), default=0.0)
    note = (
        f"`requests` (with urllib3, charset_normalizer, idna, certifi) is {common.ms(requests)} of the "
        f"{common.ms(total)} that importing the command module takes ({requests / total:.0%}). "
        "Every full check needs it, so a lazy import would only shorten `--help`, `--check-config` "
        "and the runs that never reach Prometheus."
    )
    if "click" in by_name:
        note += f" `click` is {common.ms(by_name['click'])}; the CLI needs it on every run."
    return table + "\n\n" + imports + "\n\n" + note
