"""What the benchmarks share: timing a command, the seed scripts, configs, the machine.

Timings are of whole processes, as systemd runs them: a fresh interpreter (or
bash) per decision, wall time from the parent's monotonic clock, CPU time
(user + sys) from os.wait4() of that very child. hyperfine, when installed,
times the ranking runs instead (it warms up and takes the median for us).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wglab.lab import toml_value

REPO_ROOT = Path(__file__).resolve().parent.parent
# The original article's scripts, made runnable; never copied into the project.
DEFAULT_SEED_DIR = REPO_ROOT.parent / "shared" / "anchors" / "seed"
BIN_DIR = Path(sys.executable).parent


def command(name: str) -> str:
    """Given a console script name (wg-failover, ...), return its path beside this interpreter."""
    path = BIN_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `make venv` (pip install -e .) first")
    return str(path)


def seed_script(seed_dir: Path | None, name: str) -> Path | None:
    """Given the seed directory (None: skip the original) and a script name, return its path, or None if absent."""
    if seed_dir is None:
        return None
    path = seed_dir / name
    return path if path.is_file() else None


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished child process."""

    wall: float  # seconds
    cpu: float  # user + sys seconds of the child
    returncode: int
    stdout: str
    stderr: str


def run_timed(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> Run:
    """
    Given an argv (and extra environment), run it to completion and return
    its wall and CPU time, exit code and output. Output goes to temp files,
    not pipes, so the child never blocks on us and wait4() sees only it.
    Raise TimeoutError (after killing it) if it runs longer than timeout.
    """
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=full_env)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                os.wait4(process.pid, 0)
                raise TimeoutError(f"{argv[0]} ran longer than {timeout:g}s")
            time.sleep(0.002)
        wall = time.monotonic() - started
        # Popen must not try to reap the child a second time.
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            returncode=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


@dataclasses.dataclass(frozen=True)
class Timing:
    """Median wall and CPU time of several runs of one command."""

    wall: float
    cpu: float
    runs: int
    spread: float  # max - min wall time, to show how noisy the median is
    tool: str  # "hyperfine" or "wait4"


def time_builtin(
    argv: Sequence[str],
    runs: int,
    env: Mapping[str, str] | None = None,
    prepare: Sequence[str] | None = None,
    ok_codes: Sequence[int] = (0,),
) -> Timing:
    """
    Given an argv and a number of runs (plus an optional prepare argv run
    untimed before each), return the median wall and CPU time. One untimed
    warm-up run fills the page cache (none for 3 runs or fewer, as hyperfine). Raise RuntimeError if a run exits with
    a code outside ok_codes.
    """
    samples: list[Run] = []
    warmup = 1 if runs > 3 else 0
    for index in range(runs + warmup):
        if prepare:
            subprocess.run(list(prepare), check=True, env={**os.environ, **(env or {})})
        result = run_timed(argv, env)
        if result.returncode not in ok_codes:
            raise RuntimeError(f"{' '.join(argv[:3])} ... exited {result.returncode}: {result.stderr.strip()[-500:]}")
        if index >= warmup:
            samples.append(result)
    walls = [s.wall for s in samples]
    return Timing(
        wall=statistics.median(walls),
        cpu=statistics.median(s.cpu for s in samples),
        runs=runs,
        spread=max(walls) - min(walls),
        tool="wait4",
    )


def time_hyperfine(
    argv: Sequence[str],
    runs: int,
    env: Mapping[str, str] | None = None,
    prepare: Sequence[str] | None = None,
) -> Timing:
    """
    Given an argv and a number of runs (plus an optional prepare argv),
    return hyperfine's median wall time and mean user + sys time. No shell
    (-N), so nothing of a shell's start-up is counted. Raise RuntimeError if
    a run fails.
    """
    with tempfile.TemporaryDirectory(prefix="wgf-bench-hyperfine-") as tmp:
        export = Path(tmp) / "result.json"
        hyperfine = [
            "hyperfine",
            "-N",
            "--style=none",
            # Few runs are the slow cases (the original at large N), whose
            # counted run just before has already warmed the caches.
            f"--warmup={1 if runs > 3 else 0}",
            f"--runs={runs}",
            f"--export-json={export}",
        ]
        if prepare:
            hyperfine.append("--prepare=" + " ".join(prepare))
        completed = subprocess.run(
            [*hyperfine, " ".join(argv)],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )
        if completed.returncode != 0:
            raise RuntimeError(f"hyperfine failed: {completed.stderr.strip()[-800:]}")
        result = json.loads(export.read_text())["results"][0]
    return Timing(
        wall=result["median"],
        cpu=result["user"] + result["system"],
        runs=runs,
        spread=result["max"] - result["min"],
        tool="hyperfine",
    )


def time_command(
    argv: Sequence[str],
    runs: int,
    env: Mapping[str, str] | None = None,
    prepare: Sequence[str] | None = None,
    use_hyperfine: bool = True,
) -> Timing:
    """Given an argv without spaces in its words, time it with hyperfine if installed, else with time_builtin."""
    if use_hyperfine and shutil.which("hyperfine") and not any(" " in word for word in argv):
        return time_hyperfine(argv, runs, env, prepare)
    return time_builtin(argv, runs, env, prepare)


def write_config(
    path: Path,
    workdir: Path,
    servers: Mapping[str, str],
    prometheus_url: str,
    timeout: float = 5.0,
    failover_window: str = "5m",
    health: Mapping[str, object] | None = None,
) -> Path:
    """
    Given a config path, a work directory and {server name: endpoint IP},
    write a WireGuard config per server under workdir/configs (its Endpoint
    is where the endpoint comes from, as in a real install), the state with
    the first server current, and the wg-failover TOML; return its path.
    """
    configs = workdir / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    for name, ip in servers.items():
        (configs / name).write_text(
            "[Interface]\nPrivateKey = bench\n\n[Peer]\nPublicKey = bench\n"
            f"Endpoint = {ip}:51820\nAllowedIPs = 0.0.0.0/0\n"
        )
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "current").write_text(next(iter(servers)) + "\n")
    lines = [
        f"config_dir = {toml_value(configs)}",
        f"active_link = {toml_value(workdir / 'wg-active.conf')}",
        f"state_dir = {toml_value(state)}",
        'restart_command = ["true"]',
        "",
    ]
    lines += [f"[servers.{name}]" for name in servers]
    lines += [
        "",
        "[prometheus]",
        f"url = {toml_value(prometheus_url)}",
        f"timeout = {toml_value(timeout)}",
        "",
        "[failover]",
        f"window = {toml_value(failover_window)}",
    ]
    if health:
        lines += ["", "[health]"] + [f"{key} = {toml_value(value)}" for key, value in health.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def seed_env(workdir: Path, servers: Mapping[str, str], url: str, window: str = "5m") -> dict[str, str]:
    """
    Given a work directory (holding configs/ and state/ from write_config),
    {name: ip} and the Prometheus URL, return the SEED_* environment of the
    original scripts, with SEED_RESTART=true.
    """
    seed_state = workdir / "seed-state"
    seed_state.mkdir(parents=True, exist_ok=True)
    (seed_state / "current").write_text(next(iter(servers)) + "\n")
    return {
        "SEED_URL": url,
        "SEED_SERVERS": " ".join(f"{name}={ip}" for name, ip in servers.items()),
        "SEED_STATE": str(seed_state),
        "SEED_LINK": str(workdir / "seed-active.conf"),
        "SEED_SECRETS": str(workdir / "configs"),
        "SEED_RESTART": "true",
        "SEED_TRIGGER": "true",
        "SEED_WINDOW": window,
    }


def lab_seed_env(lab: Any, failover_script: Path, window: str) -> dict[str, str]:
    """
    Given a running wglab.lab.Lab, the original wg-failover.sh and the rate()
    window, return the SEED_* environment that runs the original
    wg-health-check.sh against the lab, failing over with wg-failover.sh
    and restarting the lab's tunnel.
    """
    return {
        "SEED_URL": lab.prometheus_url,
        "SEED_SERVERS": " ".join(f"{name}={lab.endpoint_ip[name]}" for name in lab.server_names),
        "SEED_STATE": str(lab.state_dir),
        "SEED_LINK": str(lab.active_link),
        "SEED_SECRETS": str(lab.config_dir),
        # Both are expanded unquoted by the scripts, so words split as in a unit's ExecStart.
        "SEED_RESTART": " ".join(lab.restart_command),
        "SEED_TRIGGER": f"bash {failover_script}",
        "SEED_WINDOW": window,
    }


def machine() -> dict[str, str]:
    """Return what docs/performance.md states about the machine: CPUs, model, load, Python, Prometheus."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        prometheus = subprocess.run(
            ["prometheus", "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError):
        prometheus = "not installed"
    hyperfine = shutil.which("hyperfine")
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "load average (1, 5, 15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "prometheus": prometheus,
        "hyperfine": subprocess.run(["hyperfine", "--version"], capture_output=True, text=True).stdout.strip()
        if hyperfine
        else "not installed (wait4 timer)",
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Given a header and rows, return a GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float | None) -> str:
    """Given seconds (or None), return them as milliseconds for a table."""
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def secs(seconds: float | None) -> str:
    """Given seconds (or None), return them with two decimals for a table."""
    return "-" if seconds is None else f"{seconds:.2f} s"
