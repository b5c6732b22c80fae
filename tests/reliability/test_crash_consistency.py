"""A crash at any point leaves a state the next run can use.

wg-failover (`--to NAME`, and plain with Prometheus refusing connections, so
the random fallback switches) and wg-select are SIGKILLed after a random
delay spread over the measured length of a run, over and over, in several
installations at once. After every kill `current` names a configured
server, the link points at an existing config, every history line parses
with consecutive seqs, the counter and the metrics file are complete, and
the state directory holds nothing a reader could mistake. A completed
wg-select afterwards makes link and `current` agree and sweeps the temp
files the killed runs left.

No fault-injection hook: the children are real processes, killed from
outside. Most of them are forked from a driver interpreter that has
already imported the package, so a kill lands in the command's work rather
than in Python's start-up; the rest exec the installed console scripts.
The driver runs in a fresh interpreter (no threads of pytest's around
fork()) and reports its counts as JSON.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.commands import command_argv
from tests.reliability.helpers import SERVERS, Install, check_state, refusing_port, temp_files, write_install

REPO = Path(__file__).resolve().parents[2]
LANES = 4  # installations killed in parallel (2 cores: work overlaps sleep and fsync)
FORKED_ITERATIONS = 1000
EXEC_ITERATIONS = 120
RECONCILE_EVERY = 25  # per lane: a completed wg-select, then no temp file may remain
MEASURE_ROUNDS = 8  # unkilled runs per lane to learn how long a run takes


@pytest.fixture
def port() -> Iterator[int]:
    yield from refusing_port()


@pytest.fixture
def lanes(tmp_path: Path, port: int) -> list[Install]:
    return [
        write_install(
            tmp_path / f"lane{index}",
            prometheus_url=f"http://127.0.0.1:{port}",
            top='lock_timeout = "60s"',
            extra='[failover]\nhold_down = "0s"\n',
        )
        for index in range(LANES)
    ]


def run_driver(lanes: list[Install], mode: str, iterations: int, seed: int) -> dict[str, Any]:
    spec = {"roots": [str(lane.root) for lane in lanes], "mode": mode, "iterations": iterations, "seed": seed}
    code = "import json, sys; from tests.reliability.test_crash_consistency import drive; drive(json.load(sys.stdin))"
    completed = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    summary: dict[str, Any] = json.loads(completed.stdout)
    print(f"\n{mode}: {json.dumps({k: v for k, v in summary.items() if k != 'problems'})}")
    return summary


def seed_for_this_run() -> int:
    # Printed with every failure; set it to replay a run.
    return int(os.environ.get("WG_FAILOVER_CRASH_SEED") or random.SystemRandom().randrange(2**32))


def assert_survived(summary: dict[str, Any], iterations: int, seed: int) -> None:
    assert summary["problems"] == [], f"seed {seed}: " + "\n".join(summary["problems"])
    assert summary["iterations"] == iterations
    assert summary["killed_mid_run"] + summary["exited_before_kill"] == iterations
    # The delays cover the length of a run, so most kills land inside one.
    assert summary["killed_mid_run"] >= iterations // 10, f"seed {seed}: kills missed the runs: {summary}"
    assert summary["reconciles"] >= LANES


def test_forked_commands_killed_at_random_points_leave_a_usable_state(lanes: list[Install]) -> None:
    seed = seed_for_this_run()
    summary = run_driver(lanes, "fork", FORKED_ITERATIONS, seed)
    assert_survived(summary, FORKED_ITERATIONS, seed)


def test_console_scripts_killed_at_random_points_leave_a_usable_state(lanes: list[Install]) -> None:
    seed = seed_for_this_run()
    summary = run_driver(lanes, "exec", EXEC_ITERATIONS, seed)
    assert_survived(summary, EXEC_ITERATIONS, seed)


# --- the driver (runs in its own interpreter) ------------------------------------


@dataclass
class Child:
    pid: int
    command: str
    started: float
    kill_at: float = 0.0


def _argv(rng: random.Random, install: Install) -> tuple[str, list[str]]:
    roll = rng.random()
    if roll < 0.4:
        return "wg-failover", ["--to", rng.choice(install.servers)]
    if roll < 0.75:
        return "wg-failover", []
    return "wg-select", []


def _spawn(mode: str, command: str, args: list[str], install: Install) -> int:
    argv = [command, "--config", str(install.config), *args]
    if mode == "exec":
        actions = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        spawned = [*command_argv(command), *argv[1:]]
        return os.posix_spawn(spawned[0], spawned, os.environ, file_actions=actions)
    pid = os.fork()
    if pid:
        return pid
    code = 98
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if command == "wg-select":
            from wgfailover.commands.wg_select import main
        else:
            from wgfailover.commands.wg_failover import main
        main(args=argv[1:], prog_name=command)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException:  # noqa: BLE001 - a forked child must never return into the driver
        code = 99
    finally:
        os._exit(code)


def _run_to_completion(mode: str, command: str, args: list[str], install: Install) -> tuple[int, float]:
    started = time.monotonic()
    pid = _spawn(mode, command, args, install)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), time.monotonic() - started


def drive(spec: dict[str, Any]) -> None:
    """Given the lanes, mode, iterations and seed, kill runs at random points; print the counts as JSON."""
    # Imported before forking, so a child's time is the command's work.
    import wgfailover.commands.wg_failover
    import wgfailover.commands.wg_select  # noqa: F401

    rng = random.Random(spec["seed"])
    mode = spec["mode"]
    installs = [Install(Path(root), Path(root) / "config.toml", tuple(SERVERS)) for root in spec["roots"]]
    problems: list[str] = []
    for install in installs:
        code, _ = _run_to_completion(mode, "wg-select", [], install)
        if code != 0:
            problems.append(f"initial wg-select exited {code}")

    # How long a run takes with every lane busy, so the kills cover it.
    durations: list[float] = []
    for _ in range(MEASURE_ROUNDS):
        started = {_spawn(mode, *_argv(rng, install), install): time.monotonic() for install in installs}
        while started:
            pid, status = os.wait()  # whichever ends first, so its time is its own
            durations.append(time.monotonic() - started.pop(pid))
            if os.waitstatus_to_exitcode(status) != 0:
                problems.append(f"unkilled run exited {os.waitstatus_to_exitcode(status)}")
    durations.sort()
    horizon = 1.2 * durations[int(0.9 * (len(durations) - 1))]

    counts: Counter[str] = Counter()
    children: dict[int, Child] = {}
    per_lane: Counter[int] = Counter()
    done = 0

    def start(lane: int) -> None:
        command, args = _argv(rng, installs[lane])
        now = time.monotonic()
        children[lane] = Child(_spawn(mode, command, args, installs[lane]), command, now, now + rng.uniform(0, horizon))

    for lane in range(len(installs)):
        start(lane)
    while children:
        lane = min(children, key=lambda index: children[index].kill_at)
        child = children.pop(lane)
        install = installs[lane]
        time.sleep(max(0.0, child.kill_at - time.monotonic()))
        os.kill(child.pid, signal.SIGKILL)
        _, status = os.waitpid(child.pid, 0)
        done += 1
        per_lane[lane] += 1
        if os.WIFSIGNALED(status):
            counts["killed_mid_run"] += 1
            counts[f"killed_mid_run:{child.command}"] += 1
        else:
            counts["exited_before_kill"] += 1
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                problems.append(f"{child.command} exited {code} without being killed")
            elif temp_files(install.state_dir):
                # It held the lock, so every temp file there was a dead run's.
                problems.append(f"a completed {child.command} left {temp_files(install.state_dir)}")
        problems += [f"after killing {child.command} (iteration {done}): {p}" for p in check_state(install)]
        # Evidence that kills landed between the steps of a switch.
        counts["kills_leaving_temp_files"] += bool(temp_files(install.state_dir) + temp_files(install.root))
        current = (install.read("current") or b"").strip().decode()
        if install.link.is_symlink() and Path(os.readlink(install.link)).name != current:
            counts["kills_between_current_and_link"] += 1
        history = install.history()
        if history and history[-1].to_server != current:
            counts["kills_between_link_and_history"] += 1

        last = done + len(children) >= spec["iterations"]
        if last or per_lane[lane] % RECONCILE_EVERY == 0:
            code, _ = _run_to_completion(mode, "wg-select", [], install)
            counts["reconciles"] += 1
            current = (install.read("current") or b"").strip().decode()
            leftovers = temp_files(install.state_dir) + temp_files(install.root)
            if code != 0 or Path(os.readlink(install.link)).name != current or leftovers or check_state(install):
                problems.append(f"wg-select did not reconcile: exit {code}, link vs {current!r}, left {leftovers}")
        if not last:
            start(lane)

    summary = {
        "iterations": done,
        "horizon_seconds": round(horizon, 4),
        "median_run_seconds": round(durations[len(durations) // 2], 4),
        **counts,
        "problems": problems[:20],
    }
    print(json.dumps(summary))
