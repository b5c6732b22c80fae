"""Failover scenarios in the lab, runnable against any wg-failover config.

Usage (as root)::

    python -m wglab.scenarios                                # the lab's compressed settings
    python -m wglab.scenarios --config my.toml --scenario outage --scenario blip
    python -m wglab.scenarios --config my.toml --scenario loss --loss 20

With ``--config``, the settings that decide *when* and *where* to fail over
(health.threshold, max_failures, window, min_window, on_no_data,
failover.window, hold_down, on_prometheus_error, tie_epsilon and the
timeouts) are taken from that file, so a user can see what new thresholds do
before trusting them in production. Everything that says *where things are*
(paths, servers, restart command, Prometheus URL and credentials, the
probers' selector and queries) is the lab's.

Every scenario runs the real commands (wg-select, wg-failover,
wg-health-check) as subprocesses against a config file, as the systemd units
would. A "check" is one wg-health-check run, started once Prometheus holds
at least health.min_window (or --interval) of new tunnel samples since the
previous check and the last switch: the lab's stand-in for the timer,
synchronised on data instead of on sleep. The scenarios judge what the
commands did from the state directory (``current``, ``health-failures``,
``history.jsonl``, ``last-check.json``) and from the lab itself (which
server the tunnel really uses, whether pings pass through it).

Used by ``python -m wglab.demo`` (``make demo``) and by
tests/e2e/test_failover_e2e.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from wgfailover.config import (
    DEFAULT_FAILOVER_QUERY,
    DEFAULT_HEALTH_QUERY,
    DEFAULT_LATENCY_QUERY,
    Config,
    format_duration,
    load_config,
)
from wgfailover.errors import ConfigError
from wgfailover.state import StateDir, SwitchRecord
from wglab.lab import SERVER_NAME_RE, Lab, merge, to_toml
from wglab.processes import wait_until

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project supports 3.9+
    import tomli as tomllib

REQUIRED_BINARIES = ["ip", "nft", "ping", "wg", "wireguard-go", "prometheus", "prometheus-smokeping-prober"]
EX_UNAVAILABLE = 69  # sysexits.h: a binary the lab needs is missing
EX_NOPERM = 77  # sysexits.h: not root
EX_CONFIG = 78
MAX_LAB_SERVERS = 8  # a lab per server is a wireguard-go and a namespace; 2 cores
# A loss this close to the threshold may or may not be judged above it: the
# lab's prober sends ~50 pings per 5 s check, so one check's loss is noisy.
EXPECTATION_MARGIN = 0.05


class ScenarioError(Exception):
    """The lab or a command did not behave well enough to run a scenario."""


# --------------------------------------------------------------- the config


def settings_from(user: Config) -> dict[str, Any]:
    """Given a user's validated config, return the settings the lab takes
    from it, as nested dicts for Lab.write_config (defaults included, so an
    unset key behaves as it would in production)."""
    return {
        "restart_timeout": user.restart_timeout,
        "lock_timeout": user.lock_timeout,
        "prometheus": {"timeout": user.prometheus.timeout},
        "failover": {
            "window": user.failover.window,
            "hold_down": user.failover.hold_down,
            "on_prometheus_error": user.failover.on_prometheus_error,
            "tie_epsilon": user.failover.tie_epsilon,
            "failback_after": user.failover.failback_after,  # None: dropped from the TOML
        },
        "health": {
            "threshold": user.health.threshold,
            "max_failures": user.health.max_failures,
            "window": user.health.window,
            "min_window": user.health.min_window,
            "on_no_data": user.health.on_no_data,
        },
    }


def settings_not_used(user: Config) -> list[str]:
    """Given a user's config, return a note for each of its settings the lab
    replaces although the user changed it from the default."""
    notes = []
    if user.health.query != DEFAULT_HEALTH_QUERY:
        notes.append("health.query: the lab's probers are smokeping_prober; the default query is used")
    if user.failover.query != DEFAULT_FAILOVER_QUERY or user.failover.latency_query != DEFAULT_LATENCY_QUERY:
        notes.append("failover.query/latency_query: the lab's probers are smokeping_prober; the defaults are used")
    if user.health.failover_command is not None:
        notes.append("health.failover_command: the lab fails over in-process (no systemd unit to start)")
    if user.health.interface is not None:
        notes.append("health.interface: the handshake fallback needs your interface; not used in the lab")
    return notes


def lab_server_names(user: Config | None, count: int | None = None) -> list[str]:
    """Given a user's config (or None) and an explicit server count (or
    None), return the lab's server names: the user's own names when they
    suit the lab, else server1..N."""
    if count is None and user is not None:
        names = user.server_names
        if 2 <= len(names) <= MAX_LAB_SERVERS and all(SERVER_NAME_RE.match(n) for n in names):
            return list(names)
        count = len(names)
    count = min(max(count or 3, 2), MAX_LAB_SERVERS)
    return [f"server{i}" for i in range(1, count + 1)]


def write_lab_config(lab: Lab, path: Path, user: Config | None = None, **overrides: Any) -> Path:
    """Given a running lab, a path, a user's config (None: the lab's
    compressed defaults) and overrides (as for Lab.write_config), write the
    wg-failover config that drives the lab and return its path."""
    settings = settings_from(user) if user is not None else {}
    return lab.write_config(path, **merge(settings, overrides))


# --------------------------------------------------------- running commands


@dataclasses.dataclass(frozen=True)
class CommandRun:
    """One run of a wg-failover command."""

    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def name(self) -> str:
        return Path(self.argv[0]).name

    @property
    def summary(self) -> str:
        """Return its output as one line: stdout, else the last stderr line."""
        out = " | ".join(line for line in self.stdout.strip().splitlines() if line.strip())
        err = self.stderr.strip().splitlines()
        return out or (err[-1] if err else "")


@dataclasses.dataclass(frozen=True)
class Check:
    """One health check (one wg-health-check run) and what it left behind."""

    number: int
    run: CommandRun
    server: str | None  # the active server when the check started
    judged: bool  # the check recorded a measurement (not waiting, not exit 69)
    loss: float | None  # the tunnel loss it judged (None: no data)
    span: float | None  # seconds it judged
    failures: int  # the counter afterwards
    max_failures: int
    bad: bool  # judged and above the threshold (or no data)
    switch: SwitchRecord | None  # the switch it triggered, if any
    endpoint_loss: dict[str, float]  # the external prober's view over the last 5 s

    def describe(self) -> str:
        """Return two narration lines: the verdict, then the loss per server."""
        server = self.server or "?"
        if self.switch is not None:
            counter = f"switched to {self.switch.to_server}"
        else:
            counter = f"counter {self.failures}/{self.max_failures}"
        code = "" if self.run.exit_code == 0 else f" (exit {self.run.exit_code})"
        endpoints = format_losses(self.endpoint_loss, active=self.server)
        return (
            f"check {self.number:>2} on {server}: {counter}{code} | {self.run.summary}\n"
            f"         endpoint loss (last 5s): {endpoints}"
        )


def format_loss(loss: float | None) -> str:
    """Given a loss ratio or None, return it as a percentage ('-' for none)."""
    return "-" if loss is None else f"{100 * loss:.0f}%"


def format_losses(losses: Mapping[str, float | None], active: str | None = None) -> str:
    """Given {server: loss}, return 'server1* 100%  server2 0%' (* = active)."""
    if not losses:
        return "(no data)"
    return "  ".join(f"{name}{'*' if name == active else ''} {format_loss(loss)}" for name, loss in losses.items())


def find_command(name: str) -> str:
    """Given a console script name, return its path: beside this Python
    (the venv), else on PATH. Raise ScenarioError if it is nowhere."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ScenarioError(f"{name} not found beside {sys.executable} nor on PATH (run `make venv`)")
    return found


class Narrator:
    """Prints narration lines with the time since the start, flushed at once."""

    def __init__(self, stream: Any = None) -> None:
        self.start = time.monotonic()
        self.stream = stream

    def __call__(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.start)
        prefix = f"[{elapsed // 60}:{elapsed % 60:02d}] "
        lines = text.splitlines() or [""]
        out = self.stream or sys.stdout
        print(prefix + lines[0], file=out)
        for line in lines[1:]:
            print(" " * len(prefix) + line, file=out)
        out.flush()


class Runner:
    """Runs the real commands against one lab config and reads what they did.

    runner = Runner(lab, write_lab_config(lab, path))
    runner.start()             # wg-select, then the tunnel comes up
    outcome = outage(runner)
    """

    def __init__(
        self,
        lab: Lab,
        config_path: Path,
        say: Callable[[str], None] = print,
        interval: float | None = None,
    ) -> None:
        self.lab = lab
        self.config_path = Path(config_path)
        self.config = load_config(self.config_path)
        self.state = StateDir(self.config.state_dir)
        self.say = say
        # The timer period: never shorter than min_window, since a check run
        # sooner would only re-judge the previous check's data.
        self.interval = max(interval or 0.0, self.config.health.min_window)
        self.checks_run = 0

    # ----------------------------------------------------------- commands
    def command(self, name: str, *args: str, config_path: Path | None = None, timeout: float = 180.0) -> CommandRun:
        """Given a command name and its arguments, run it with --config and
        return what it did (never raises for a non-zero exit)."""
        argv = [find_command(name), "--config", str(config_path or self.config_path), *args]
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return CommandRun(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)

    def variant_config(self, suffix: str, **overrides: Any) -> Path:
        """Given a suffix and overrides (as for Lab.write_config), write a
        copy of the config with them applied beside it and return its path."""
        document = tomllib.loads(self.config_path.read_text())
        path = self.config_path.with_name(f"{self.config_path.stem}-{suffix}.toml")
        path.write_text(to_toml(merge(document, overrides)))
        return path

    # -------------------------------------------------------------- state
    @property
    def threshold(self) -> float:
        return self.config.health.threshold

    @property
    def max_failures(self) -> int:
        return self.config.health.max_failures

    def current(self) -> str | None:
        """Return the server named in state_dir/current (None: none valid)."""
        return self.state.read_current(self.config.server_names).name

    def last_switch(self) -> SwitchRecord | None:
        """Return the newest history record."""
        return self.state.last_switch()

    def link_target(self) -> Path | None:
        """Return where active_link points (None: no link)."""
        try:
            return Path(os.readlink(self.config.active_link))
        except OSError:
            return None

    def endpoint_loss(self) -> dict[str, float]:
        """Return the external prober's loss per server over the last 5 s
        (empty if Prometheus does not answer)."""
        try:
            return self.lab.endpoint_loss("5s")
        except Exception:  # noqa: BLE001 - narration only; Prometheus may be frozen
            return {}

    # ------------------------------------------------------------ the lab
    def start(self) -> str:
        """Boot: run wg-select, then bring the tunnel up from the link (the
        unit ordering of the NixOS module). Return the selected server."""
        result = self.command("wg-select")
        if result.exit_code != 0:
            raise ScenarioError(f"wg-select failed (exit {result.exit_code}): {result.summary}")
        server = result.stdout.strip()
        said = "; ".join(line.split(": ", 1)[-1] for line in result.stderr.strip().splitlines())
        self.say(f"wg-select -> {server}" + (f" ({said})" if said else ""))
        self.lab.restart()
        self.wait_for_traffic(server)
        return server

    def sync_tunnel(self) -> None:
        """If the tunnel does not use the server the link points at (a
        failed restart), restart it, as systemd's Restart= would."""
        target = self.link_target()
        if target is not None and self.lab.active_server() != target.name:
            self.say(f"the tunnel is not on {target.name} as the link says; restarting it")
            self.lab.restart()

    def wait_for_traffic(self, server: str | None = None, timeout: float = 30.0) -> int:
        """Given the server the tunnel should use, return the bytes it
        received once pings pass through the tunnel and reach it; raise
        ScenarioError if they do not within timeout seconds."""
        server = server or self.lab.active_server()
        if server is None or self.lab.active_server() != server:
            raise ScenarioError(f"the tunnel is on {self.lab.active_server()}, not on {server}")
        before = self.lab.server_rx_bytes(server)
        try:
            wait_until(self.lab.ping_through_tunnel, timeout, 0.2, what=f"a ping through the tunnel via {server}")
            received = wait_until(
                lambda: max(0, self.lab.server_rx_bytes(server) - before),
                timeout,
                0.2,
                what=f"{server} receiving tunnel traffic",
            )
        except TimeoutError as exc:
            raise ScenarioError(str(exc)) from exc
        self.say(f"traffic flows through {server}: pings answered, {server} received {received} more bytes")
        return received

    def settle(self, checks: bool = True, timeout: float = 120.0) -> None:
        """Remove every injected loss, make sure the tunnel runs where the
        link points, wait until Prometheus shows a clean lab, and (with
        checks) run health checks until one is healthy with the counter at 0,
        so a scenario starts from a clean slate and a fresh check."""
        self.lab.clear_loss()
        self.sync_tunnel()
        try:
            wait_until(self.lab.ping_through_tunnel, 30, 0.5, what="a ping through the tunnel")
            # Short rate() windows can still hold the previous scenario's
            # losses for a few seconds after the rules are gone.
            window = self.lab.clean_window
            wait_until(self.lab.is_clean, timeout, 0.5, what=f"Prometheus showing no loss over the last {window}")
        except TimeoutError as exc:
            raise ScenarioError(f"the lab did not settle: {exc}") from exc
        if not checks:
            return
        for _ in range(self.max_failures + 2):
            check = self.check(label="settling")
            if check.switch is not None:
                self.sync_tunnel()
            elif check.judged and not check.bad and check.failures == 0:
                return
        raise ScenarioError("the lab did not settle: health checks kept failing with no loss injected")

    # ------------------------------------------------------------- checks
    def newest_tunnel_sample(self) -> float | None:
        """Return the time of the newest tunnel-prober sample every series
        has in Prometheus (None: none yet)."""
        assert self.lab.prometheus is not None  # noqa: S101 - a lab always has one here
        result = self.lab.prometheus.query(f"min(timestamp(smokeping_requests_total{{{self.config.health.selector}}}))")
        return float(result[0]["value"][1]) if result else None

    def wait_for_data(self) -> None:
        """Return once Prometheus holds a timer period (at least min_window)
        of tunnel samples newer than the last check, and min_window newer
        than the last switch: the next check then judges a full span."""
        due = 0.0
        last_check = self.state.read_last_check()
        if last_check is not None:
            due = last_check.time + self.interval
        last_switch = self.last_switch()
        if last_switch is not None:
            due = max(due, last_switch.time + self.config.health.min_window)

        def fresh() -> float | None:
            newest = self.newest_tunnel_sample()
            return newest if newest is not None and newest >= due else None

        wait_until(fresh, max(0.0, due - time.time()) + 60, 0.25, what="new tunnel samples in Prometheus")

    def check(self, label: str = "check") -> Check:
        """Run one health check once its data is there; return what it did."""
        self.wait_for_data()
        server = self.current()
        before = self.last_switch()
        previous = self.state.read_last_check()
        endpoint_loss = self.endpoint_loss()
        run = self.command("wg-health-check")
        record = self.state.read_last_check()
        judged = record is not None and record != previous
        after = self.last_switch()
        switched = after is not None and (before is None or after.seq != before.seq)
        loss = record.loss if judged and record is not None else None
        self.checks_run += 1
        check = Check(
            number=self.checks_run,
            run=run,
            server=server,
            judged=judged,
            loss=loss,
            span=record.span if judged and record is not None else None,
            failures=self.state.read_failures(),
            max_failures=self.max_failures,
            bad=judged and (loss is None or loss > self.threshold),
            switch=after if switched else None,
            endpoint_loss=endpoint_loss,
        )
        self.say(("(settling) " if label == "settling" else "") + check.describe())
        return check

    def checks_until_switch(self, budget: int) -> list[Check]:
        """Given a number of checks, run them, stopping after a switch."""
        checks = []
        for _ in range(budget):
            checks.append(self.check())
            if checks[-1].switch is not None:
                break
        return checks

    def report_switch(self, record: SwitchRecord) -> None:
        """Narrate a history record: who, why, and the losses it saw."""
        losses = format_losses(record.losses) if record.losses else "none (Prometheus not used)"
        self.say(
            f"history record #{record.seq}: {record.from_server or 'none'} -> {record.to_server}, "
            f"reason {record.reason!r}\n  losses at the switch (failover.window): {losses}"
        )


# ---------------------------------------------------------------- scenarios


@dataclasses.dataclass
class Outcome:
    """What one scenario expected, what happened, and whether they agree."""

    scenario: str
    expected: str
    observed: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)
    checks: list[Check] = dataclasses.field(default_factory=list)
    switch: SwitchRecord | None = None
    from_server: str | None = None
    command: CommandRun | None = None
    switches: int = 0  # switches recorded in the history during the scenario
    restarts: int = 0  # tunnel restarts during the scenario
    restored_after: float | None = None  # seconds from the fault until traffic flowed again
    allowed_exit_codes: tuple[int, ...] = (0,)  # of wg-health-check: 4 where every server may fail

    @property
    def failed_checks(self) -> list[str]:
        """Return a problem per check whose wg-health-check exited with a
        code the scenario does not expect (it exits 0 for healthy, failed
        and failed-over checks alike)."""
        return [
            f"check {c.number}: wg-health-check exited {c.run.exit_code}: {c.run.summary}"
            for c in self.checks
            if c.run.exit_code not in self.allowed_exit_codes
        ]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed_checks

    def describe(self) -> str:
        """Return the verdict line(s)."""
        verdict = "as expected" if self.ok else "NOT as expected"
        lines = [f"{self.scenario}: {verdict}: expected {self.expected}; observed {self.observed}"]
        lines += [f"  problem: {p}" for p in [*self.problems, *self.failed_checks]]
        return "\n".join(lines)


def expectation(percent: float, threshold: float) -> str:
    """Given an injected loss in percent and the threshold, return 'switch',
    'stay' or 'either' (too close to the threshold to tell)."""
    if percent / 100 > threshold + EXPECTATION_MARGIN:
        return "switch"
    if percent / 100 < threshold - EXPECTATION_MARGIN:
        return "stay"
    return "either"


def _verify_switch(runner: Runner, outcome: Outcome, record: SwitchRecord, away_from: str | None) -> None:
    """Given a switch, check it went elsewhere and that traffic flows there."""
    runner.report_switch(record)
    if away_from is not None and record.to_server == away_from:
        outcome.problems.append(f"switched to {record.to_server}, the server that was failing")
    try:
        runner.wait_for_traffic(record.to_server)
    except ScenarioError as exc:
        outcome.problems.append(f"no traffic through {record.to_server} after the switch: {exc}")


def _loss_scenario(runner: Runner, name: str, percent: float, budget: int) -> Outcome:
    runner.settle()
    server = runner.current()
    expect = expectation(percent, runner.threshold)
    wording = {
        "switch": f"a switch away from {server} within {budget} checks",
        "stay": f"no switch in {budget} checks ({percent:g}% is below the threshold)",
        "either": f"a switch or not ({percent:g}% is within {EXPECTATION_MARGIN:g} of the threshold)",
    }[expect]
    outcome = Outcome(name, wording, from_server=server)
    if server is None:
        outcome.problems.append("no current server recorded")
        return outcome
    runner.say(
        f"--- {name}: {percent:g}% loss towards {server} (router forward hook; threshold "
        f"{runner.threshold:g}, max_failures {runner.max_failures}) ---"
    )
    runner.lab.set_loss(server, percent)
    outcome.checks = runner.checks_until_switch(budget)
    outcome.switch = outcome.checks[-1].switch if outcome.checks else None
    if outcome.switch is not None:
        outcome.observed = f"switched {server} -> {outcome.switch.to_server} at check {len(outcome.checks)} of {budget}"
        _verify_switch(runner, outcome, outcome.switch, away_from=server)
        if expect == "stay":
            outcome.problems.append(f"{percent:g}% loss is below the threshold, yet it switched")
    else:
        worst = max((c.loss for c in outcome.checks if c.loss is not None), default=None)
        outcome.observed = f"no switch in {len(outcome.checks)} checks (worst tunnel loss {format_loss(worst)})"
        if expect == "switch":
            outcome.problems.append(f"no switch within {budget} checks")
    return outcome


def outage(runner: Runner) -> Outcome:
    """A hard outage (100% loss towards the active server): expect a switch
    to another server within max_failures + 1 checks, and traffic through it."""
    return _loss_scenario(runner, "outage", 100.0, runner.max_failures + 1)


def partial_loss(runner: Runner, percent: float = 30.0) -> Outcome:
    """A partial loss towards the active server: above the threshold, expect
    a switch (allowing checks whose sample fell below the threshold: up to
    2 * max_failures + 1); below it, expect none in as many checks."""
    return _loss_scenario(runner, "loss", percent, 2 * runner.max_failures + 1)


def blip(runner: Runner) -> Outcome:
    """100% loss on the active server for one check period only: with
    max_failures >= 2 expect no switch and the counter back to 0."""
    runner.settle()
    server = runner.current()
    many = runner.max_failures >= 2
    expected = (
        "one failure counted, then no switch and the counter back to 0"
        if many
        else "a switch (max_failures = 1: one bad check is enough)"
    )
    outcome = Outcome("blip", expected, from_server=server)
    if server is None:
        outcome.problems.append("no current server recorded")
        return outcome
    runner.say(f"--- blip: 100% loss towards {server} for one check, then none ---")
    runner.lab.set_loss(server, 100)
    try:
        first = runner.check()
    finally:
        runner.lab.set_loss(server, 0)
    runner.say(f"loss towards {server} removed")
    outcome.checks = [first]
    if first.switch is None:
        # As many checks as would fail over if the blip were still counted.
        outcome.checks += runner.checks_until_switch(runner.max_failures)
    switches = [c.switch for c in outcome.checks if c.switch is not None]
    outcome.switch = switches[0] if switches else None
    failed = [c.number for c in outcome.checks if c.bad]
    outcome.observed = (
        f"{len(failed)} failed check(s) of {len(outcome.checks)}, "
        + (f"switched to {outcome.switch.to_server}" if outcome.switch else "no switch")
        + f", counter {outcome.checks[-1].failures}"
    )
    if runner.threshold < 1 - EXPECTATION_MARGIN and not first.bad:
        outcome.problems.append(f"the blip check was not counted as a failure ({first.run.summary})")
    if many:
        if outcome.switch is not None:
            outcome.problems.append("a one-check blip caused a switch")
        if outcome.checks[-1].failures != 0:
            outcome.problems.append("the counter did not return to 0 after the blip")
    elif outcome.switch is None:
        outcome.problems.append("max_failures = 1, yet the bad check did not switch")
    if outcome.switch is not None:
        _verify_switch(runner, outcome, outcome.switch, away_from=server)
    return outcome


def no_cascade(runner: Runner, checks: int = 10) -> Outcome:
    """An outage, then `checks` more checks while the old server stays down:
    expect no further switch (the original's 5-minute window still held the
    old server's losses and failed over again)."""
    first = outage(runner)
    outcome = dataclasses.replace(
        first,
        scenario="no-cascade",
        expected=f"{first.expected}, then no further switch in {checks} checks",
        problems=list(first.problems),
        checks=list(first.checks),
    )
    if first.switch is None:
        outcome.problems.append("no first switch, so no cascade to look for")
        return outcome
    runner.say(f"--- no-cascade: {checks} more checks; {first.from_server} stays down ---")
    after = [runner.check() for _ in range(checks)]
    outcome.checks += after
    again = [c for c in after if c.switch is not None]
    bad = [c for c in after if c.bad]
    outcome.observed = f"{first.observed}; then {len(again)} further switch(es), {len(bad)} failed check(s)"
    if again:
        outcome.problems.append(f"{len(again)} further switch(es) after the first: a cascade")
    return outcome


def frozen_prometheus(runner: Runner) -> Outcome:
    """Prometheus hangs (SIGSTOP): expect wg-failover to give up on it
    within prometheus.timeout and still switch, at random among the others."""
    runner.settle(checks=False)
    server = runner.current()
    prometheus = runner.lab.prometheus
    if prometheus is None or prometheus.process is None:
        raise ScenarioError("this lab runs without Prometheus")
    timeout = runner.config.prometheus.timeout
    outcome = Outcome(
        "frozen-prometheus",
        f"wg-failover switches away from {server} at random, Prometheus given up after {timeout:g}s",
        from_server=server,
    )
    before = runner.last_switch()
    runner.say(f"--- frozen-prometheus: SIGSTOP to Prometheus (pid {prometheus.process.pid}), then wg-failover ---")
    os.kill(prometheus.process.pid, signal.SIGSTOP)
    try:
        outcome.command = runner.command("wg-failover")
    finally:
        os.kill(prometheus.process.pid, signal.SIGCONT)
    runner.say(
        f"SIGCONT to Prometheus; wg-failover took {outcome.command.seconds:.1f}s "
        f"(exit {outcome.command.exit_code}):\n{outcome.command.stdout.rstrip()}"
    )
    record = runner.last_switch()
    new = record is not None and (before is None or record.seq != before.seq)
    outcome.observed = (
        f"exit {outcome.command.exit_code} after {outcome.command.seconds:.1f}s "
        f"(prometheus.timeout {timeout:g}s), " + (f"switched to {record.to_server}" if new and record else "no switch")
    )
    if outcome.command.exit_code != 0:
        outcome.problems.append(f"wg-failover exited {outcome.command.exit_code}: {outcome.command.summary}")
    if not new or record is None:
        outcome.problems.append("no switch recorded")
        return outcome
    outcome.switch = record
    if record.losses:
        outcome.problems.append(f"losses recorded although Prometheus was frozen: {record.losses}")
    _verify_switch(runner, outcome, record, away_from=server)
    return outcome


def restart_fails(runner: Runner) -> Outcome:
    """restart_command fails (["false"]): expect exit 1 and a consistent
    state: current names a configured server, the link points at its
    existing config, the history holds the switch."""
    runner.settle(checks=False)
    server = runner.current()
    outcome = Outcome(
        "restart-fails",
        "exit 1; current, link and history agree on a configured server",
        from_server=server,
    )
    variant = runner.variant_config("restart-fails", restart_command=["false"])
    before = runner.last_switch()
    runner.say('--- restart-fails: wg-failover with restart_command = ["false"] ---')
    try:
        outcome.command = runner.command("wg-failover", config_path=variant)
        runner.say(f"wg-failover: exit {outcome.command.exit_code}: {outcome.command.stderr.strip()}")
        current = runner.current()
        target = runner.link_target()
        record = runner.last_switch()
        outcome.switch = record if record is not None and (before is None or record.seq != before.seq) else None
        outcome.observed = (
            f"exit {outcome.command.exit_code}; current {current}, link -> {target}, "
            f"last history record -> {record.to_server if record else None}"
        )
        if outcome.command.exit_code != 1:
            outcome.problems.append(f"exit {outcome.command.exit_code}, not 1")
        if len(outcome.command.stderr.strip().splitlines()) < 1:
            outcome.problems.append("nothing said on stderr")
        if current not in runner.config.server_names:
            outcome.problems.append(f"state_dir/current names {current!r}, not a configured server")
        elif target != runner.config.config_dir / current or not target.is_file():
            outcome.problems.append(f"the link points at {target}, not at the existing config of {current}")
        if outcome.switch is None:
            outcome.problems.append("no history record of the switch")
        elif outcome.switch.to_server != current:
            outcome.problems.append(f"the history says {outcome.switch.to_server}, current says {current}")
    finally:
        # The state already names the new server; systemd's Restart= would
        # bring the tunnel up on it with a working restart command.
        runner.sync_tunnel()
    if outcome.switch is not None:
        try:
            runner.wait_for_traffic(outcome.switch.to_server)
        except ScenarioError as exc:
            outcome.problems.append(f"the state's server does not carry traffic once restarted: {exc}")
    return outcome


def unit_failed(runner: Runner) -> Outcome:
    """The OnFailure= path: `wg-failover --reason unit-failed` switches and
    records the reason."""
    runner.settle(checks=False)
    server = runner.current()
    outcome = Outcome("unit-failed", "a switch recorded with reason 'unit-failed'", from_server=server)
    before = runner.last_switch()
    runner.say("--- unit-failed: wg-failover --reason unit-failed (what OnFailure= runs) ---")
    outcome.command = runner.command("wg-failover", "--reason", "unit-failed")
    runner.say(f"wg-failover (exit {outcome.command.exit_code}):\n{outcome.command.stdout.rstrip()}")
    record = runner.last_switch()
    new = record is not None and (before is None or record.seq != before.seq)
    outcome.observed = f"exit {outcome.command.exit_code}, " + (
        f"switched to {record.to_server} with reason {record.reason!r}" if new and record else "no switch"
    )
    if outcome.command.exit_code != 0:
        outcome.problems.append(f"wg-failover exited {outcome.command.exit_code}: {outcome.command.summary}")
    if not new or record is None:
        outcome.problems.append("no switch recorded")
        return outcome
    outcome.switch = record
    if record.reason != "unit-failed":
        outcome.problems.append(f"reason {record.reason!r} recorded")
    _verify_switch(runner, outcome, record, away_from=server)
    return outcome


class Tally:
    """Counts what the commands did from a starting point: switches in the
    history, tunnel restarts, seconds."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        last = runner.last_switch()
        self.seq = last.seq if last is not None else 0
        self.restarts = runner.lab.restart_count()
        self.started = time.monotonic()

    def switches(self) -> list[SwitchRecord]:
        """Return the history records made since the tally began."""
        return [r for r in self.runner.state.read_history() if r.seq > self.seq]

    def restarts_since(self) -> int:
        return self.runner.lab.restart_count() - self.restarts

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def fill(self, outcome: Outcome) -> None:
        """Record the switches and restarts counted so far in the outcome."""
        outcome.switches = len(self.switches())
        outcome.restarts = self.restarts_since()


def _path(records: Sequence[SwitchRecord]) -> str:
    """Given switch records, return 'server1 -> server2 (reason) -> server3 (reason)'."""
    if not records:
        return "no switch"
    steps = [records[0].from_server or "none"]
    steps += [f"{r.to_server} ({r.reason})" for r in records]
    return " -> ".join(steps)


def uplink(runner: Runner, checks: int = 10) -> Outcome:
    """The host's own uplink fails: 100% loss between the host and every
    server (the client's WireGuard packets and the external prober's pings
    alike) for `checks` checks, then none. Expect no switch and no tunnel
    restart, every check under the outage reporting a local fault with the
    counter standing still, and afterwards normal checks, still no switch."""
    runner.settle()
    server = runner.current()
    after = runner.max_failures + 1
    outcome = Outcome(
        "uplink",
        f"0 switches and 0 tunnel restarts over {checks} checks with the uplink down (each a local fault) "
        f"and {after} checks after it comes back, the last one healthy",
        from_server=server,
    )
    tally = Tally(runner)
    runner.say(f"--- uplink: 100% loss between the host and every server for {checks} checks ---")
    runner.lab.set_uplink_loss(100)
    try:
        down = [runner.check() for _ in range(checks)]
    finally:
        runner.lab.set_uplink_loss(0)
    runner.say("the uplink is back")
    back = [runner.check() for _ in range(after)]
    outcome.checks = down + back
    tally.fill(outcome)
    local = [c for c in down if "local fault" in c.run.stdout]
    outcome.observed = (
        f"{len(local)} of {checks} checks reported a local fault, counter at most "
        f"{max(c.failures for c in down)}; {outcome.switches} switches, {outcome.restarts} restarts; "
        f"after: {back[-1].run.summary}"
    )
    if outcome.switches:
        outcome.problems.append(f"switched although every server was lost: {_path(tally.switches())}")
    if outcome.restarts:
        outcome.problems.append(f"the tunnel was restarted {outcome.restarts} times")
    # The first check may still judge data from before the outage, when
    # the prober's window had not filled: allow it to be an ordinary check.
    if len(local) < checks - 1:
        outcome.problems.append(f"only {len(local)} of {checks} checks under the outage reported a local fault")
    if back[-1].bad or back[-1].failures:
        outcome.problems.append(f"the last check after the outage is not healthy: {back[-1].run.summary}")
    if runner.current() != server or runner.lab.active_server() != server:
        outcome.problems.append(f"the tunnel is no longer on {server}")
    return outcome


def dead_replacement(runner: Runner, dead: str | None = None) -> Outcome:
    """A hard outage of the active server while one other server's WireGuard
    is down (its host still answers pings, so it ranks as healthy). Expect
    traffic through the working server within max_failures checks plus the
    probation, and at most 2 switches, whichever server the random tie-break
    picks first."""
    runner.settle()
    server = runner.current()
    others = [name for name in runner.config.server_names if name != server]
    if server is None or len(others) < 2:
        raise ScenarioError("dead-replacement needs a current server and two others")
    dead = dead if dead in others else others[0]
    working = [name for name in others if name != dead]
    outcome = Outcome(
        "dead-replacement",
        f"traffic through {' or '.join(working)} within {runner.max_failures} checks plus the probation, "
        "at most 2 switches",
        from_server=server,
    )
    runner.say(f"--- dead-replacement: {dead}'s WireGuard down (pings still answered), then 100% loss to {server} ---")
    runner.lab.set_wireguard_up(dead, False)
    tally = Tally(runner)
    runner.lab.set_loss(server, 100)
    outcome.checks = runner.checks_until_switch(runner.max_failures + 1)
    switches = tally.switches()
    outcome.switch = switches[-1] if switches else None
    if outcome.switch is not None:
        try:
            runner.wait_for_traffic(outcome.switch.to_server)
            outcome.restored_after = tally.seconds()
        except ScenarioError as exc:
            outcome.problems.append(str(exc))
    tally.fill(outcome)
    first = switches[0].to_server if switches else None
    outcome.observed = f"picked {first} first; {_path(switches)}; restored after {len(outcome.checks)} checks" + (
        f" ({outcome.restored_after:.0f}s)" if outcome.restored_after is not None else ""
    )
    if outcome.switch is None:
        outcome.problems.append(f"no switch within {runner.max_failures + 1} checks")
    elif outcome.switch.to_server not in working:
        outcome.problems.append(f"the tunnel ended on {outcome.switch.to_server}, not on {' or '.join(working)}")
    if len(switches) > 2:
        outcome.problems.append(f"{len(switches)} switches")
    if first == dead and not any(r.reason.startswith("probation failed") for r in switches):
        outcome.problems.append(f"{dead} was left without a 'probation failed' reason")
    runner.lab.set_wireguard_up(dead, True)
    return outcome


def all_down(runner: Runner, checks_after: int = 5) -> Outcome:
    """Every server's WireGuard down (every endpoint still answers pings).
    Expect one pass through the other servers, then `all servers failed`
    (wg-health-check exits 4), and no further switch or tunnel restart in
    `checks_after` checks; once the servers are back, a healthy check on
    the server it stayed on, still without a switch."""
    runner.settle()
    server = runner.current()
    others = len(runner.config.server_names) - 1
    outcome = Outcome(
        "all-down",
        f"one pass ({others} switches and a return to the best-ranked server at most), 'all servers failed', "
        f"then no switch or restart in {checks_after} checks, and healthy once the servers are back",
        from_server=server,
        allowed_exit_codes=(0, 4),
    )
    runner.say("--- all-down: every server's WireGuard down (their hosts still answer pings) ---")
    for name in runner.config.server_names:
        runner.lab.set_wireguard_up(name, False)
    tally = Tally(runner)
    try:
        outcome.checks = runner.checks_until_switch(runner.max_failures + 1)
        episode = tally.switches()
        restarts = tally.restarts_since()
        failed_check = outcome.checks[-1] if outcome.checks else None
        runner.say(f"--- all-down: {checks_after} more checks with every server still down ---")
        held = Tally(runner)
        later = [runner.check() for _ in range(checks_after)]
        outcome.checks += later
        more_switches, more_restarts = len(held.switches()), held.restarts_since()
    finally:
        for name in runner.config.server_names:
            runner.lab.set_wireguard_up(name, True)
    runner.say("--- all-down: every server's WireGuard is back ---")
    stayed = runner.current()
    try:
        runner.wait_for_traffic(stayed)
    except ScenarioError as exc:
        outcome.problems.append(f"no traffic once the servers are back: {exc}")
    recovered = Tally(runner)
    back = [runner.check() for _ in range(2)]
    outcome.checks += back
    tally.fill(outcome)
    outcome.observed = (
        f"{_path(episode)} ({restarts} restarts); the failing-over check exited "
        f"{failed_check.run.exit_code if failed_check else '-'}; then {more_switches} switches and "
        f"{more_restarts} restarts in {checks_after} checks; after recovery: {back[-1].run.summary}"
    )
    if not episode:
        outcome.problems.append("no switch at all")
    if len(episode) > others + 1:
        outcome.problems.append(f"{len(episode)} switches in the episode: more than one pass")
    if failed_check is None or failed_check.run.exit_code != 4 or "all servers failed" not in failed_check.run.stderr:
        outcome.problems.append("the failing-over check did not exit 4 with 'all servers failed'")
    if more_switches or more_restarts:
        outcome.problems.append(f"{more_switches} switches and {more_restarts} restarts after all servers failed")
    if recovered.switches():
        outcome.problems.append(f"switched after the servers came back: {_path(recovered.switches())}")
    if back[-1].bad:
        outcome.problems.append(f"not healthy once the servers were back: {back[-1].run.summary}")
    return outcome


# ------------------------------------------------- preferred servers, failback

# The lab's failback_after unless the config sets one: four min_window
# slices (20s at the lab's default cadence), short enough that a scenario
# takes about a minute.
LAB_FAILBACK_SLICES = 4
# Injected loss of a preferred server that flaps: far above any threshold
# the lab uses, yet not an outage.
FLAP_LOSS = 50.0


def preferred_runner(
    runner: Runner,
    suffix: str,
    *,
    failback: bool = True,
    hold_down: float | None = None,
    probation: float | None = None,
) -> Runner:
    """
    Given a runner, return one on the same lab and state directory whose
    config puts the first server in tier 1 and the others in tier 2. With
    failback, failback_after is the config's, else the lab's
    (LAB_FAILBACK_SLICES x min_window) with
    hold_down no longer than it; without, failback is off. hold_down and
    probation, if given, replace the config's.
    """
    names = runner.config.server_names
    failover: dict[str, Any] = {}
    if not failback:
        failover["failback_after"] = None
    elif runner.config.failover.failback_after is None:
        after = LAB_FAILBACK_SLICES * runner.config.health.min_window
        failover["failback_after"] = after
        failover["hold_down"] = min(runner.config.failover.hold_down, after)
    if hold_down is not None:
        failover["hold_down"] = hold_down
    if probation is not None:
        failover["probation"] = probation
    path = runner.variant_config(
        suffix,
        servers={name: {"priority": 1 if name == names[0] else 2} for name in names},
        failover=failover,
    )
    other = Runner(runner.lab, path, say=runner.say, interval=runner.interval)
    other.checks_run = runner.checks_run
    return other


def go_to(runner: Runner, server: str) -> None:
    """Given a server, switch to it by hand (wg-failover --to) unless the
    tunnel is already there, and wait for traffic through it."""
    if runner.current() != server:
        run = runner.command("wg-failover", "--to", server)
        if run.exit_code != 0:
            raise ScenarioError(f"wg-failover --to {server} failed (exit {run.exit_code}): {run.summary}")
        runner.say(f"wg-failover --to {server}: {run.summary}")
    runner.sync_tunnel()
    runner.wait_for_traffic(server)


def _switches_after(runner: Runner, record: SwitchRecord) -> list[SwitchRecord]:
    return [r for r in runner.state.read_history() if r.seq > record.seq]


def _fail_over_from(runner: Runner, outcome: Outcome, server: str) -> SwitchRecord | None:
    """Given a server the tunnel is on, black it out until a health check
    fails over (at most max_failures + 1 checks); return the switch."""
    runner.say(f"--- 100% loss towards {server} until the health check fails over ---")
    runner.lab.set_loss(server, 100)
    checks = runner.checks_until_switch(runner.max_failures + 1)
    outcome.checks += checks
    record = checks[-1].switch if checks else None
    if record is None:
        outcome.problems.append(f"no failover away from {server} within {runner.max_failures + 1} checks")
        return None
    _verify_switch(runner, outcome, record, away_from=server)
    return record


def failback(runner: Runner) -> Outcome:
    """Priorities server1 = 1, the others 2; start on server1; an outage
    fails over to a tier-2 server; once server1 is clear again the tunnel
    returns to it within failback_after plus two checks, exactly once, with
    traffic flowing."""
    runner = preferred_runner(runner, "failback")
    names = runner.config.server_names
    preferred = names[0]
    after = runner.config.failover.failback_after or 0.0
    budget = math.ceil(after / runner.interval) + 2
    outcome = Outcome(
        "failback",
        f"a failover from {preferred} to a tier-2 server, then back to {preferred} within failback_after "
        f"({format_duration(after)}) plus two checks ({budget} checks), exactly once",
        from_server=preferred,
    )
    runner.settle(checks=False)
    go_to(runner, preferred)
    away = _fail_over_from(runner, outcome, preferred)
    runner.lab.set_loss(preferred, 0)
    if away is None:
        return outcome
    runner.say(f"--- {preferred} is clear again; checks until the failback (at most {budget}) ---")
    back_checks = runner.checks_until_switch(budget)
    outcome.checks += back_checks
    back = back_checks[-1].switch if back_checks else None
    if back is None:
        outcome.observed = f"failed over to {away.to_server}; no switch in {len(back_checks)} checks after"
        outcome.problems.append(f"no failback to {preferred} within {budget} checks")
        return outcome
    outcome.switch = back
    runner.report_switch(back)
    if back.to_server != preferred or not back.reason.startswith("failback: "):
        outcome.problems.append(f"the switch went to {back.to_server} with reason {back.reason!r}, not a failback")
    try:
        runner.wait_for_traffic(preferred)
    except ScenarioError as exc:
        outcome.problems.append(f"no traffic through {preferred} after the failback: {exc}")
    # Exactly once: more checks on the preferred server switch nothing.
    outcome.checks += [runner.check() for _ in range(2)]
    later = _switches_after(runner, back)
    outcome.observed = (
        f"failed over {preferred} -> {away.to_server} ({away.reason!r}); back to {back.to_server} at check "
        f"{len(back_checks)} of {budget} after clearing, {back.time - away.time:.0f}s after the failover "
        f"({back.reason!r}); {len(later)} switch(es) in the 2 checks after"
    )
    if later:
        outcome.problems.append(f"{len(later)} switch(es) after the failback")
    return outcome


def flapping_preferred(runner: Runner) -> Outcome:
    """After a failover away from server1 (priority 1), server1 is lossy for
    two checks and clean for two, over and over, for longer than 3 x
    failback_after: expect no failback at all, and no switch after the
    first failover."""
    runner = preferred_runner(runner, "flapping")
    preferred = runner.config.server_names[0]
    after = runner.config.failover.failback_after or 0.0
    checks = 4 * math.ceil((3 * after / runner.interval + 1) / 4)  # whole lossy+clean cycles
    outcome = Outcome(
        "flapping-preferred",
        f"no switch in {checks} checks (> 3 x failback_after {format_duration(after)}) while {preferred} "
        f"is {FLAP_LOSS:g}% lossy for two checks and clean for two",
        from_server=preferred,
    )
    runner.settle(checks=False)
    go_to(runner, preferred)
    away = _fail_over_from(runner, outcome, preferred)
    if away is None:
        runner.lab.set_loss(preferred, 0)
        return outcome
    runner.say(f"--- {preferred} flaps: {FLAP_LOSS:g}% loss for two checks, none for two, {checks} checks ---")
    started = time.monotonic()
    flaps = []
    try:
        for number in range(checks):
            if number % 2 == 0:
                lossy = number % 4 == 0
                runner.lab.set_loss(preferred, FLAP_LOSS if lossy else 0)
            flaps.append(runner.check())
    finally:
        runner.lab.set_loss(preferred, 0)
    outcome.checks += flaps
    elapsed = time.monotonic() - started
    later = _switches_after(runner, away)
    considered = sum("not failing back" in c.run.stderr for c in flaps)
    outcome.observed = (
        f"failed over {preferred} -> {away.to_server}; then {len(flaps)} checks over {elapsed:.0f}s "
        f"({elapsed / after:.1f} x failback_after), {considered} of them looked at a failback and declined; "
        f"{len(later)} switch(es) after the first failover"
    )
    if later:
        listed = ", ".join(f"{r.from_server} -> {r.to_server} ({r.reason})" for r in later)
        outcome.problems.append(f"switched while {preferred} flapped: {listed}")
    if elapsed < 3 * after:
        outcome.problems.append(f"flapped for {elapsed:.0f}s only, not longer than 3 x failback_after")
    return outcome


def tiers(runner: Runner) -> Outcome:
    """server1 (priority 1) 40% lossy, server2 and server3 (priority 2)
    clean, the active tier-2 server dies: expect the other tier-2 server,
    never server1. Then server1 only 5% lossy (healthy, but worse than the
    clean tier-2 server) and the active server dies: expect server1, the
    healthy preferred one. Hold-down, failback and probation are off, so
    only the tiers decide (a 5% lossy server may lose the new tunnel's
    first handshake, and the probation then rightly moves on)."""
    runner = preferred_runner(runner, "tiers", failback=False, hold_down=0, probation=0)
    preferred, first, second = runner.config.server_names[:3]
    window = format_duration(runner.config.failover.window)
    threshold = runner.threshold
    outcome = Outcome(
        "tiers",
        f"with {preferred} 40% lossy, {first} dying switches to {second}, never {preferred}; "
        f"with {preferred} 5% lossy, {second} dying switches to {preferred}",
        from_server=first,
    )
    runner.settle(checks=False)
    go_to(runner, first)

    def failover_window_loss(server: str) -> float | None:
        return runner.lab.endpoint_loss(window).get(server)

    def wait_for_losses(what: str, ok: Callable[[float, float], bool]) -> None:
        # First a whole failover window of samples taken since the loss
        # changed, so the ranking's window holds none of the earlier losses.
        since = time.time()

        def window_full() -> bool:
            assert runner.lab.prometheus is not None  # noqa: S101 - a lab always has one here
            newest = runner.lab.prometheus.query('min(timestamp(smokeping_requests_total{job="smokeping"}))')
            return bool(newest) and float(newest[0]["value"][1]) >= since + runner.config.failover.window

        def seen() -> bool:
            preferred_loss, other = failover_window_loss(preferred), failover_window_loss(first)
            return preferred_loss is not None and other is not None and ok(preferred_loss, other)

        try:
            wait_until(window_full, runner.config.failover.window + 30, 0.5, what=f"{window} of new endpoint samples")
            wait_until(seen, runner.config.failover.window + 30, 0.5, what=what)
        except TimeoutError as exc:
            raise ScenarioError(str(exc)) from exc

    try:
        runner.say(f"--- tiers: {preferred} 40% lossy; wait until the failover window ({window}) shows it ---")
        runner.lab.set_loss(preferred, 40)
        wait_for_losses(f"{preferred} lossy over {window}", lambda p, _: p > threshold + EXPECTATION_MARGIN)
        lossy_pick = _fail_over_from(runner, outcome, first)
        if lossy_pick is None:
            return outcome
        if lossy_pick.to_server == preferred:
            outcome.problems.append(f"picked {preferred}, 40% lossy, over a healthy tier-2 server")
        runner.lab.set_loss(first, 0)
        runner.lab.set_loss(preferred, 5)
        runner.say(f"--- tiers: {preferred} 5% lossy, {first} clean again; wait for the window to show it ---")
        wait_for_losses(
            f"{preferred} healthy and {first} clean over {window}",
            lambda p, other: p <= threshold - EXPECTATION_MARGIN and other < 0.01,
        )
        healthy_pick = _fail_over_from(runner, outcome, lossy_pick.to_server)
    finally:
        runner.lab.clear_loss()
    if healthy_pick is None:
        return outcome
    outcome.switch = healthy_pick
    if healthy_pick.to_server != preferred:
        outcome.problems.append(f"picked {healthy_pick.to_server}, not {preferred}, the healthy preferred server")
    outcome.observed = (
        f"{first} died with {preferred} at {format_loss(lossy_pick.losses.get(preferred))}: picked "
        f"{lossy_pick.to_server}; {lossy_pick.to_server} died with {preferred} at "
        f"{format_loss(healthy_pick.losses.get(preferred))} and {first} at "
        f"{format_loss(healthy_pick.losses.get(first))}: picked {healthy_pick.to_server}"
    )
    return outcome


SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "outage": outage,
    "loss": partial_loss,
    "blip": blip,
    "no-cascade": no_cascade,
    "frozen-prometheus": frozen_prometheus,
    "restart-fails": restart_fails,
    "unit-failed": unit_failed,
    "uplink": uplink,
    "dead-replacement": dead_replacement,
    "all-down": all_down,
    "failback": failback,
    "flapping-preferred": flapping_preferred,
    "tiers": tiers,
}


def run_scenario(runner: Runner, scenario: Callable[[Runner], Outcome], name: str) -> Outcome:
    """Given a runner and a scenario, run it; a lab or command that breaks
    down mid-way becomes an outcome with that problem, not a traceback."""
    try:
        outcome = scenario(runner)
    except (ScenarioError, TimeoutError, RuntimeError, subprocess.TimeoutExpired) as exc:
        outcome = Outcome(name, "the scenario to run", observed="it broke down", problems=[str(exc)])
    runner.say(outcome.describe())
    return outcome


# ---------------------------------------------------------------------- CLI


def preflight() -> str | None:
    """Return why the lab cannot run here (not root, binaries missing), or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, nftables, TUN devices): run it with sudo"
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        return f"missing binaries: {', '.join(missing)} (run `make deps`, or .ci/run)"
    return None


def exit_on_hangup() -> None:
    """Turn SIGHUP (a closed terminal) into SystemExit, so `with Lab()` tears
    the lab down (Lab.up does the same for SIGTERM; Ctrl-C already is one)."""

    def hangup(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGHUP, hangup)


def describe_settings(user: Config | None, config: Config) -> str:
    """Given the user's config (or None) and the lab's, return what the lab uses."""
    h, f = config.health, config.failover
    values = (
        f"health.threshold {h.threshold:g}, max_failures {h.max_failures}, window {format_duration(h.window)}, "
        f"min_window {format_duration(h.min_window)}, on_no_data {h.on_no_data}; "
        f"failover.window {format_duration(f.window)}, hold_down {format_duration(f.hold_down)}, "
        f"on_prometheus_error {f.on_prometheus_error}; prometheus.timeout {config.prometheus.timeout:g}s"
    )
    where = "from " + str(user.path) if user is not None else "the lab's compressed defaults"
    lines = [f"settings ({where}): {values}"]
    lines.append(
        "the lab's own: config_dir, active_link, state_dir, restart_command, textfile_dir, servers, "
        "prometheus.url, health.selector, failover.label"
    )
    if user is not None:
        lines += [f"not used: {note}" for note in settings_not_used(user)]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m wglab.scenarios",
        description="Run failover scenarios in a throwaway WireGuard lab (needs root), "
        "optionally with the thresholds and windows of your own wg-failover config.",
        epilog="Exit codes: 0 every scenario as expected, 1 not, 2 usage, 69 binaries missing, "
        "77 not root, 78 bad config.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="your wg-failover config: its thresholds, windows and timeouts are used (default: the lab's)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, "all"],
        help="a scenario to run (repeatable; default: all)",
    )
    parser.add_argument("--loss", type=float, default=30.0, help="percent loss for the 'loss' scenario (default 30)")
    parser.add_argument(
        "--checks",
        type=int,
        default=10,
        help="checks after the switch in 'no-cascade', with the uplink down in 'uplink' (default 10)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        help="seconds between checks, the timer period (default and minimum: health.min_window)",
    )
    parser.add_argument("--servers", type=int, help="number of lab servers (default: as many as your config's, 2..8)")
    args = parser.parse_args(argv)
    if args.loss < 0 or args.loss > 100:
        parser.error("--loss must be between 0 and 100")
    if args.checks < 0:
        parser.error("--checks must not be negative")
    return args


def run_and_report(
    program: str,
    body: Callable[[], list[Outcome]],
    went_well: str | None = None,
    went_badly: str | None = None,
) -> int:
    """
    Given the program's name and a body that builds a lab, runs scenarios in
    it and tears it down, run it, print each outcome, and return the exit
    code: 0 all as expected, 1 not (or the lab broke down), 130 on Ctrl-C.
    A SIGTERM or SIGHUP (a SystemExit) is reported and passed on.
    """
    try:
        outcomes = body()
    except KeyboardInterrupt:
        print("\ninterrupted; the lab was torn down", file=sys.stderr)
        return 130
    except SystemExit as stop:
        # SIGTERM (Lab.up) and SIGHUP (exit_on_hangup) arrive as SystemExit.
        print(f"\nstopped by a signal (exit {stop.code}); the lab was torn down", file=sys.stderr)
        raise
    except (ScenarioError, TimeoutError, RuntimeError, PermissionError) as exc:
        print(f"{program}: the lab broke down (it was torn down): {exc}", file=sys.stderr)
        return 1
    print()
    for outcome in outcomes:
        print(("ok   " if outcome.ok else "FAIL ") + outcome.describe())
    if all(outcome.ok for outcome in outcomes):
        if went_well:
            print(f"\n{went_well}")
        return 0
    if went_badly:
        print(f"\n{went_badly}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Given command-line arguments, run the scenarios and return the exit code."""
    args = parse_args(argv)
    names = list(SCENARIOS) if not args.scenario or "all" in args.scenario else list(dict.fromkeys(args.scenario))
    problem = preflight()
    if problem:
        print(f"wglab.scenarios: {problem}", file=sys.stderr)
        return EX_NOPERM if os.geteuid() != 0 else EX_UNAVAILABLE
    user = None
    if args.config is not None:
        try:
            user = load_config(args.config)
        except ConfigError as error:
            print(f"wglab.scenarios: {error}", file=sys.stderr)
            return EX_CONFIG
    exit_on_hangup()
    say = Narrator()
    kwargs: dict[str, dict[str, Any]] = {
        "loss": {"percent": args.loss},
        "no-cascade": {"checks": args.checks},
        "uplink": {"checks": args.checks},
    }

    def run_all() -> list[Outcome]:
        outcomes = []
        servers = lab_server_names(user, args.servers)
        say(f"building a lab with {len(servers)} servers ({', '.join(servers)})")
        with Lab(servers=servers) as lab:
            lab.wait_for_metrics(timeout=60)
            path = write_lab_config(lab, lab.workdir / "config.toml", user)
            runner = Runner(lab, path, say=say, interval=args.interval)
            say(describe_settings(user, runner.config))
            runner.start()
            for name in names:
                scenario = functools.partial(SCENARIOS[name], **kwargs.get(name, {}))
                outcomes.append(run_scenario(runner, scenario, name))
            say("tearing the lab down")
        return outcomes

    return run_and_report("wglab.scenarios", run_all)


if __name__ == "__main__":
    raise SystemExit(main())
