"""wg-health-check --backtest: replay the live rule over Prometheus's history.

Check by check, at the timer's period, the replay asks the policy exactly
what the live check asks it: which span to judge (policy/spans.py, with
``min_window`` after a replayed switch), whether the check counts and when
a failover is due (policy/health.py), and, for each failover, which server
would have been picked (policy/ranking.py, from the external prober's
history at that moment, with ``hold_down`` over the replayed switches). A
failed check while every server was lossy over the same span is a local
fault, not counted, as live (policy/local_fault.py). With
``failover.failback_after`` set, a healthy check may fail back, as live
(policy/failback.py), judged on the external prober's history of the
preferred servers at that moment; failovers and failbacks are listed apart.
Nothing is written: no state, no link, no restart, no metrics.

What cannot be replayed: after a replayed failover, the recorded tunnel
data is still that of the server the tunnel really used, so the checks
that follow judge what really happened, not what the switch would have
changed; the output says so once. For the same reason the probation of a
replayed switch (and "all servers failed", which follows from it) cannot
be judged: every replayed switch is taken as confirmed.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from wgfailover.config import Config, HealthSettings, describe_duration, parse_duration
from wgfailover.errors import MeasurementError, UsageError
from wgfailover.evidence.history import TunnelHistory, read_retention
from wgfailover.evidence.readings import PreferredReading, ServerReading, TunnelReading
from wgfailover.evidence.servers_loss import find_endpoints
from wgfailover.policy.failback import FailbackPlan, choose_failback, plan_failback
from wgfailover.policy.health import CheckEvidence, CheckState, HealthOutcome, decide_check, is_failure
from wgfailover.policy.local_fault import local_fault_of
from wgfailover.policy.ranking import LATENCY_TIE_RATIO, first_choice, rank_servers
from wgfailover.policy.spans import plan_span
from wgfailover.state import CheckRecord, StateDir, SwitchRecord

log = logging.getLogger(__name__)

# The settings a replay may override, with the type each value takes.
SWEEP_KEYS = ("threshold", "max_failures", "window", "min_window")
DAY = 86400.0


class Evidence(Protocol):
    """What a replay needs to know about the past (evidence/history.py, or a table in tests)."""

    def tunnel(self, time: float, seconds: float) -> TunnelReading: ...

    def servers(self, time: float, window: float | None = None) -> list[ServerReading]: ...

    def preferred(
        self, time: float, names: Sequence[str], failback_after: float, slice_seconds: float
    ) -> Mapping[str, PreferredReading]: ...


@dataclasses.dataclass(frozen=True)
class ReplayedFailover:
    """One failover the replay triggered."""

    time: float  # unix time of the check that reached max_failures
    from_server: str | None
    to_server: str | None  # None: there was no other server to pick
    loss: float | None  # the tunnel loss that check saw (None: no data)
    reason: str
    counted: tuple[float, ...]  # the times of the checks that counted towards it
    choice_reason: str  # why the ranking picked to_server


@dataclasses.dataclass(frozen=True)
class ReplayedFailback:
    """One failback the replay made: a healthy check returned to a more preferred server."""

    time: float  # unix time of the healthy check
    from_server: str | None
    to_server: str
    reason: str  # "failback: NAME healthy for 15m", as live


@dataclasses.dataclass(frozen=True)
class Replay:
    """The outcome of replaying one set of settings."""

    health: HealthSettings
    checks: int  # checks that judged a span (waiting ones not included)
    waiting: int  # checks that waited for data after a switch
    failures: int  # checks counted as failures (the one that triggered a failover included)
    failovers: tuple[ReplayedFailover, ...]
    local_faults: int = 0  # failed checks not counted: every server was lossy over the same span
    failbacks: tuple[ReplayedFailback, ...] = ()  # with failover.failback_after set


@dataclasses.dataclass(frozen=True)
class Backtest:
    """What --backtest found: the replay of the configured (or overridden) settings, and any sweep."""

    start: float  # unix time of the first check replayed
    end: float  # unix time of the last one
    asked_start: float  # where DURATION would have begun; earlier than start when history is shorter
    every: float
    initial_server: str | None
    replay: Replay
    sweep: tuple[Replay, ...] = ()
    failback_after: float | None = None  # failover.failback_after: failbacks were replayed too

    @property
    def days(self) -> float:
        return max(self.end - self.start + self.every, self.every) / DAY


def replay(
    times: Sequence[float],
    health: HealthSettings,
    evidence: Evidence,
    *,
    current: str | None,
    history: Sequence[SwitchRecord],
    hold_down: float,
    tie_epsilon: float,
    priorities: Mapping[str, int | None],
    unusable: Mapping[str, str],
    rng: random.Random,
    failback_after: float | None = None,
    weights: Mapping[str, float] | None = None,
    latency_tie: float = LATENCY_TIE_RATIO,
) -> Replay:
    """
    Given the check times (oldest first), the health settings, the evidence
    of the past, the server in use before the first check, the switches
    recorded before it, the ranking's settings (hold_down, tie_epsilon,
    priorities, weights, latency_tie: the live failover's) and
    failback_after (None: never fail back), run the live rule check by
    check and return what it would have done: failovers on failed checks, failbacks on healthy ones
    (policy/failback.py, with the prober's history of the preferred servers
    at that moment). ``rng`` breaks ties, as the live random source does.
    """
    history = list(history)
    last_switch = history[-1] if history else None
    last_check: CheckRecord | None = None
    failures = 0
    checks = waiting = counted_total = local_faults = 0
    counted: list[float] = []
    failovers: list[ReplayedFailover] = []
    failbacks: list[ReplayedFailback] = []

    def switch(now: float, to_server: str, reason: str, losses: dict[str, float | None]) -> None:
        nonlocal current, last_switch
        record = SwitchRecord(
            seq=(history[-1].seq + 1) if history else 1,
            time=now,
            from_server=current,
            to_server=to_server,
            reason=reason,
            losses=losses,
        )
        history.append(record)
        last_switch = record
        current = to_server

    for now in times:
        span = plan_span(health, now, last_check, last_switch)
        if span.waiting:
            waiting += 1
            continue
        reading = evidence.tunnel(now, span.seconds)
        local_fault = None
        if is_failure(reading, health):
            # As live: every server's loss over the same span tells a dead uplink from a dead server.
            local_fault = local_fault_of(evidence.servers(now, span.seconds), health.threshold)
        decision = decide_check(
            CheckEvidence(time=now, tunnel=reading, local_fault=local_fault), health, CheckState(failures=failures)
        )
        checks += 1
        failures = decision.failures
        last_check = CheckRecord(time=now, loss=reading.loss, span=reading.span)
        if decision.outcome == HealthOutcome.HEALTHY:
            counted = []
            back = _failback(now, evidence, health, current, history, priorities, unusable, hold_down, failback_after)
            if back is not None:
                target, why, losses = _choose(back, health, priorities, failback_after, tie_epsilon, rng)
                if target is not None:
                    failbacks.append(ReplayedFailback(time=now, from_server=current, to_server=target, reason=why))
                    switch(now, target, why, losses)
        elif decision.outcome in (HealthOutcome.FAILURE, HealthOutcome.FAILOVER):
            counted_total += 1
            counted.append(now)
        elif decision.outcome == HealthOutcome.LOCAL_FAULT:
            local_faults += 1
        if decision.outcome != HealthOutcome.FAILOVER:
            continue
        rows = rank_servers(
            evidence.servers(now),
            current=current,
            history=history,
            now=now,
            hold_down=hold_down,
            tie_epsilon=tie_epsilon,
            rng=rng,
            unusable=unusable,
            priorities=priorities,
            threshold=health.threshold,
            weights=weights,
            latency_tie=latency_tie,
        )
        best = first_choice(rows)
        reason = decision.reason or "health-check"
        failovers.append(
            ReplayedFailover(
                time=now,
                from_server=current,
                to_server=best.name if best else None,
                loss=reading.loss,
                reason=reason,
                counted=tuple(counted),
                choice_reason=best.reason if best else "no other server to switch to",
            )
        )
        counted = []
        if best is not None:
            switch(now, best.name, reason, {row.name: row.loss for row in rows})
    return Replay(
        health=health,
        checks=checks,
        waiting=waiting,
        failures=counted_total,
        failovers=tuple(failovers),
        local_faults=local_faults,
        failbacks=tuple(failbacks),
    )


def _failback(
    now: float,
    evidence: Evidence,
    health: HealthSettings,
    current: str | None,
    history: Sequence[SwitchRecord],
    priorities: Mapping[str, int | None],
    unusable: Mapping[str, str],
    hold_down: float,
    failback_after: float | None,
) -> tuple[FailbackPlan, Mapping[str, PreferredReading]] | None:
    """
    Given a healthy check, return the failback plan with the prober's
    history of its candidates, as the live check would have read them; None
    when the plan rules a failback out without asking (most checks).
    """
    plan = plan_failback(
        current=current,
        priorities=priorities,
        history=history,
        now=now,
        failback_after=failback_after,
        hold_down=hold_down,
        tunnel_healthy=True,
        unusable=set(unusable),
    )
    if plan.skip is not None or failback_after is None:
        return None
    return plan, evidence.preferred(now, plan.candidates, failback_after, health.min_window)


def _choose(
    asked: tuple[FailbackPlan, Mapping[str, PreferredReading]],
    health: HealthSettings,
    priorities: Mapping[str, int | None],
    failback_after: float | None,
    tie_epsilon: float,
    rng: random.Random,
) -> tuple[str | None, str, dict[str, float | None]]:
    plan, readings = asked
    decision = choose_failback(
        plan,
        readings,
        priorities=priorities,
        threshold=health.threshold,
        failback_after=failback_after or 0.0,
        slice_seconds=health.min_window,
        tie_epsilon=tie_epsilon,
        rng=rng,
    )
    return decision.target, decision.reason, {name: reading.worst_loss for name, reading in readings.items()}


def parse_sweep(specs: Sequence[str]) -> dict[str, list[float]]:
    """
    Given sweep specs like "threshold=0.05,0.1" and "max_failures=2,3",
    return {key: values}. Raise UsageError naming the bad spec.
    """
    sweep: dict[str, list[float]] = {}
    for spec in specs:
        key, equals, raw = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or key not in SWEEP_KEYS:
            raise UsageError(f"--sweep {spec!r}: expected KEY=V,V,... with KEY one of {', '.join(SWEEP_KEYS)}")
        if key in sweep:
            raise UsageError(f"--sweep: {key} is given twice")
        try:
            sweep[key] = [_setting(key, value) for value in raw.split(",") if value.strip()]
        except ValueError as error:
            raise UsageError(f"--sweep {spec!r}: {error}") from None
        if not sweep[key]:
            raise UsageError(f"--sweep {spec!r}: no values")
    return sweep


def override(health: HealthSettings, overrides: Mapping[str, float]) -> HealthSettings:
    """
    Given the configured health settings and the --threshold, --max-failures,
    --window, --min-window values given (by sweep key), return the settings
    to replay. Raise UsageError if the result is one the config would refuse.
    """
    replayed = dataclasses.replace(
        health,
        threshold=float(overrides.get("threshold", health.threshold)),
        max_failures=int(overrides.get("max_failures", health.max_failures)),
        window=float(overrides.get("window", health.window)),
        min_window=float(overrides.get("min_window", health.min_window)),
    )
    if not 0 <= replayed.threshold <= 1:
        raise UsageError(f"threshold {replayed.threshold:g} is not a ratio between 0 and 1")
    if replayed.max_failures < 1:
        raise UsageError(f"max_failures {replayed.max_failures} must be at least 1")
    if replayed.min_window <= 0 or replayed.window <= 0:
        raise UsageError("window and min_window must be longer than 0s")
    if replayed.min_window > replayed.window:
        raise UsageError(
            f"min_window ({describe_duration(replayed.min_window)}) is longer than window "
            f"({describe_duration(replayed.window)})"
        )
    return replayed


def run_backtest(
    config: Config,
    *,
    duration: float,
    every: float,
    overrides: Mapping[str, float],
    sweep: Mapping[str, Sequence[float]],
    wall_clock: Callable[[], float] = time.time,
    seed: int = 0,
) -> Backtest:
    """
    Given the config, DURATION and the check period in seconds, the
    overridden settings and the sweep, replay the live rule over the past
    DURATION and return the Backtest. Reads the state (the server in use
    then, the switches before) and never writes it.

    Raise UsageError (exit 2) for settings the config would refuse or a
    DURATION beyond Prometheus's retention; PrometheusError (exit 69) if
    Prometheus cannot be asked; MeasurementError (69) if it has no tunnel
    data for the health selector in that time.
    """
    if every <= 0 or duration < every:
        raise UsageError(
            f"--backtest {describe_duration(duration)} must be at least one --every ({describe_duration(every)})"
        )
    health = override(config.health, overrides)
    combinations = itertools.product(*sweep.values()) if sweep else ()
    replays = [override(health, dict(zip(sweep, values))) for values in combinations]

    if config.prometheus.url is None:
        raise UsageError("--backtest needs prometheus.url: the history is in Prometheus")
    retention = read_retention(config)
    if retention is not None and duration > retention:
        raise UsageError(
            f"--backtest {describe_duration(duration)} reaches beyond Prometheus's retention "
            f"({describe_duration(retention)}); ask for {describe_duration(retention)} or less"
        )
    # Check times on multiples of the period, so two runs replay the same checks.
    last = math.floor(wall_clock() / every) * every
    count = int(duration // every)
    first = last - (count - 1) * every
    unusable = {
        server.name: f"config missing: {server.config_path}"
        for server in config.servers
        if not server.config_path.is_file()
    }
    endpoints = find_endpoints(config.servers, skip=set(unusable), warn=True)
    evidence = TunnelHistory(config, health, first=first, last=last, every=every, endpoints=endpoints)

    start_index = None
    for settings in [health, *replays]:
        found = evidence.preload(_usual_span(settings, every))
        if found is None:
            raise MeasurementError(
                f"Prometheus has no tunnel loss for {health.selector} in the last {describe_duration(duration)} "
                f"(health.selector and health.query; is the VPN namespace's prober scraped?)"
            )
        start_index = found if start_index is None else min(start_index, found)
    times = evidence.times[start_index or 0 :]
    if start_index:
        log.info("Prometheus's tunnel data begins at %s; the replay starts there", _utc(times[0]))
    current, before = _state_at(StateDir(config.state_dir), config, times[0])

    def replay_with(settings: HealthSettings) -> Replay:
        return replay(
            times,
            settings,
            evidence,
            current=current,
            history=before,
            hold_down=config.failover.hold_down,
            tie_epsilon=config.failover.tie_epsilon,
            priorities=config.priorities,
            unusable=unusable,
            rng=random.Random(seed),
            failback_after=config.failover.failback_after,
            weights=config.weights,
            latency_tie=config.failover.latency_tie,
        )

    return Backtest(
        start=times[0],
        end=times[-1],
        asked_start=first,
        every=every,
        initial_server=current,
        replay=replay_with(health),
        sweep=tuple(replay_with(settings) for settings in replays),
        failback_after=config.failover.failback_after,
    )


def _usual_span(health: HealthSettings, every: float) -> float:
    """Given the settings and the period, return the span a check judges one period after the last."""
    return float(max(1, round(min(max(every, health.min_window), health.window))))


def _state_at(state: StateDir, config: Config, first: float) -> tuple[str | None, list[SwitchRecord]]:
    """
    Given the state, the config and the first check time, return the server
    in use then and the switches recorded before it (for hold_down).
    """
    history = state.read_history()
    before = [record for record in history if record.time < first]
    after = [record for record in history if record.time >= first]
    if before:
        return before[-1].to_server, before
    if after:
        return after[0].from_server, []
    return state.read_current(config.server_names).name, []


def _setting(key: str, raw: str) -> float:
    text = raw.strip()
    if key == "max_failures":
        if not text.isdigit():
            raise ValueError(f"{text!r} is not a whole number")
        return float(int(text))
    if key == "threshold":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    return parse_duration(text)


def _utc(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))
