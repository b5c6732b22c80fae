"""A hung Prometheus: it accepts connections and never answers.

What it costs until the tunnel has been switched: ours is a real
``wg-failover`` (not a dry run; ``restart_command = ["true"]``, temp state)
with ``prometheus.timeout`` = 5 and 2, whose random fallback must still run;
the original is ``wg-failover.sh`` with its ``curl --max-time 5`` per server
under ``set -euo pipefail``. "Switched" means the state file names another
server afterwards.
"""

from __future__ import annotations

import dataclasses
import socket
import statistics
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks import common
from benchmarks.promdata import make_endpoints

TIMEOUTS = (5.0, 2.0)
SERVERS = 3


@contextmanager
def hung_server() -> Iterator[str]:
    """Yield the URL of a loopback socket that accepts every connection and never reads or writes."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, name="hung-prometheus", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        for connection in held:
            connection.close()
        thread.join(timeout=2)


@dataclasses.dataclass(frozen=True)
class Outcome:
    who: str
    wall: float  # median seconds until the process exited
    returncode: int
    switched: str  # "yes", "no", or "k of n runs"
    note: str


def _switched(results: list[bool]) -> str:
    if all(results):
        return "yes"
    if not any(results):
        return "no"
    return f"{sum(results)} of {len(results)} runs"


def measure(seed_dir: Path | None, quick: bool = False) -> list[Outcome]:
    """Given the seed directory (None or missing: ours only), return how long each side takes against a hung server."""
    runs = 1 if quick else 3
    fleet = make_endpoints(SERVERS)
    servers = {endpoint.name: endpoint.ip for endpoint in fleet}
    first = fleet[0].name
    outcomes = []
    with hung_server() as url, tempfile.TemporaryDirectory(prefix="wgf-bench-hung-") as tmp:
        for timeout in TIMEOUTS:
            walls, codes, switched = [], [], []
            for index in range(runs):
                workdir = Path(tmp) / f"ours-{timeout:g}-{index}"
                config = common.write_config(workdir / "config.toml", workdir, servers, url, timeout=timeout)
                result = common.run_timed([common.command("wg-failover"), "--config", str(config)], timeout=120)
                walls.append(result.wall)
                codes.append(result.returncode)
                switched.append((workdir / "state" / "current").read_text().strip() != first)
            outcomes.append(
                Outcome(
                    f"ours, prometheus.timeout = {timeout:g}",
                    statistics.median(walls),
                    max(codes),
                    _switched(switched),
                    result.stderr.strip().splitlines()[0] if result.stderr.strip() else "",
                )
            )
        script = common.seed_script(seed_dir, "wg-failover.sh")
        if script is not None:
            walls, codes, switched = [], [], []
            for index in range(runs):
                workdir = Path(tmp) / f"original-{index}"
                common.write_config(workdir / "config.toml", workdir, servers, url)
                env = common.seed_env(workdir, servers, url)
                result = common.run_timed(["bash", str(script)], env, timeout=120)
                walls.append(result.wall)
                codes.append(result.returncode)
                switched.append((Path(env["SEED_STATE"]) / "current").read_text().strip() != first)
            outcomes.append(
                Outcome(
                    "original (curl --max-time 5 per server)",
                    statistics.median(walls),
                    max(codes),
                    _switched(switched),
                    "set -euo pipefail: curl's exit 28 (timeout) aborts the script before the fallback"
                    if codes[-1] == 28
                    else result.stderr.strip()[-200:],
                )
            )
    print("hung prometheus: done", flush=True)
    return outcomes


def report(outcomes: list[Outcome]) -> str:
    """Given the outcomes, return a markdown table and the target's verdict."""
    table = common.markdown_table(
        ("who", "time until exit (median)", "exit code", "switched", "note"),
        [(o.who, common.secs(o.wall), o.returncode, o.switched, o.note.replace("|", "\\|")) for o in outcomes],
    )
    verdicts = []
    for timeout, outcome in zip(TIMEOUTS, outcomes):
        met = outcome.wall <= timeout + 1 and outcome.switched == "yes"
        verdicts.append(
            f"- timeout {timeout:g} s: {outcome.wall:.2f} s and switched={outcome.switched} "
            f"(target: at most {timeout + 1:g} s, and switched) -> {'met' if met else 'MISSED'}."
        )
    return table + "\n\n" + "\n".join(verdicts)
