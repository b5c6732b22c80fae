"""wg-failover: switch the tunnel to the best other server.

Read the current server and the history, ask Prometheus for every server's
loss (evidence/servers_loss.py), rank them (policy/ranking.py) and switch
to the first under the state lock (switch.py). When Prometheus cannot be asked, the pick is random among
the others by default: the original's ``set -euo pipefail`` aborted before
its fallback ever ran, and with every query empty it took the first name.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from wgfailover.actions.probation import confirm_server, rules_for
from wgfailover.config import Config
from wgfailover.errors import ActionError, LocalFaultError, ProbationFailedError, UsageError
from wgfailover.evidence.readings import ServerReading
from wgfailover.evidence.servers_loss import find_endpoints, measure_servers
from wgfailover.metrics import write_metrics
from wgfailover.policy.local_fault import local_fault_of
from wgfailover.policy.probation import ProbationVerdict, describe_all_failed, next_candidate
from wgfailover.policy.ranking import RankedServer, better_than_chosen, first_choice, rank_servers
from wgfailover.servers import Server
from wgfailover.state import AllFailedRecord, StateDir, SwitchRecord
from wgfailover.switch import recorded_server, switch_to

log = logging.getLogger(__name__)

MANUAL_REASON = "asked for with --to"


@dataclasses.dataclass(frozen=True)
class FailoverResult:
    """What wg-failover decided, and did unless dry_run or skipped."""

    rows: tuple[RankedServer, ...]  # every configured server, candidates first in rank order
    choice: str | None  # the server switched to (or a dry run would pick); None when skipped
    from_server: str | None  # the current server when the decision was made
    reason: str  # recorded in the history: "failover", "manual", "unit-failed", ...
    used_prometheus: bool  # the losses come from Prometheus (False: random, or --to)
    record: SwitchRecord | None  # the history record written; None in a dry run or when skipped
    endpoints: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    dry_run: bool = False
    prometheus_error: str | None = None  # why Prometheus could not be used, if it was asked
    skipped: str | None = None  # why nothing was done although this was no dry run
    local_fault: str | None = None  # every server lossy: why a dry run would decline
    probation: str | None = None  # how the server switched to passed its probation
    tried: tuple[tuple[str, str], ...] = ()  # servers that failed their probation first, and why

    @property
    def losses(self) -> dict[str, float | None]:
        """Return each server's loss as measured (empty when Prometheus was not used)."""
        if not self.used_prometheus:
            return {}
        return {row.name: row.loss for row in self.rows}


def fail_over(
    config: Config,
    *,
    reason: str,
    to: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    back_if_unconfirmed: bool = False,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    after_seq: int | None = None,
) -> FailoverResult:
    """
    Given the config and the reason to record, rank the other servers from
    Prometheus (or take ``to``, a configured server's name, without asking
    it), then, unless dry_run, switch to the choice under the state lock and
    restart the tunnel. Unless failover.probation is 0, then confirm the new
    server (probation.py): one that fails is left at once for the next in
    the ranking, each candidate tried once. Return the FailoverResult.

    When every server, the current one included, is losing packets (a
    local fault), switching cannot help: raise LocalFaultError (a dry run
    says so in ``local_fault``) unless ``force`` or ``to`` is given.

    If another switch was recorded while this one waited for the lock (a
    timer-triggered and an OnFailure-triggered failover at once), nothing
    is done and ``skipped`` says why; a ``to`` switch is always done, unless
    ``after_seq`` is given and the newest switch is no longer that one (a
    failback decided on a history that has changed since). Must
    not be called while holding the state lock (flock is per open file, so
    it would wait for itself).

    Raise ProbationFailedError when no server switched to passed (the
    tunnel is left on the best-ranked one, and state_dir/all-failed.json
    written; with ``to``, on that server). With ``to`` and
    ``back_if_unconfirmed`` (a failback: the server left was working), a
    server that fails its probation is left at once for the one the tunnel
    came from, and nothing is raised: ``tried`` says what happened. Raise UsageError if ``to`` is not
    a configured server; ActionError if
    Prometheus can't be asked and failover.on_prometheus_error is "fail", if
    there is no other usable server, or if the restart fails (the switch is
    then recorded); LockBusyError if the lock stays busy; StateError if the
    state can't be written.
    """
    rng = rng or random.SystemRandom()
    if to is not None:
        check_target(config, to)
    state = StateDir(config.state_dir)
    if dry_run:
        # No lock: taking it creates the state directory and the lock file,
        # and a dry run touches nothing.
        history = state.read_history()
        return _decide(
            config, state, history, reason=reason, to=to, rng=rng, now=wall_clock(), dry_run=True, force=force
        )

    seen = last_seq(state.read_history()) if after_seq is None else after_seq
    started = wall_clock()
    with state.locked(config.lock_timeout):
        waited = wall_clock() - started
        if waited >= 1:
            log.info("waited %.0fs for another wg-failover command to finish", waited)
        # Read once under the lock: it both detects a switch made meanwhile
        # and feeds the hold-down of the ranking.
        history = state.read_history()
        if (to is None or after_seq is not None) and last_seq(history) != seen:
            last = history[-1] if history else None  # None: the history was removed meanwhile
            what = f" ({last.from_server or 'none'} to {last.to_server}, {last.reason})" if last else ""
            message = f"another switch{what} was made while this one waited; not switching again"
            log.debug("%s", message)  # the result says it
            return FailoverResult(
                rows=(),
                choice=None,
                from_server=last.to_server if last else None,
                reason=reason,
                used_prometheus=False,
                record=None,
                skipped=message,
            )
        result = _decide(
            config, state, history, reason=reason, to=to, rng=rng, now=wall_clock(), dry_run=False, force=force
        )
        if result.choice is None or result.skipped:
            return result
        record = switch_to(
            config,
            state,
            to_server=result.choice,
            from_server=result.from_server,
            reason=reason,
            losses=result.losses,
            now=wall_clock(),
        )
        restarted = wall_clock()
    result = dataclasses.replace(result, record=record)
    back = result.from_server if to is not None and back_if_unconfirmed else None
    return _probation(config, state, result, record, restarted, back=back, wall_clock=wall_clock, sleep=sleep)


def last_seq(history: Sequence[SwitchRecord]) -> int:
    """Given the history, return the sequence number of its newest switch (0: none)."""
    return history[-1].seq if history else 0


def check_target(config: Config, name: str) -> Server:
    """
    Given the config and a server name asked for by hand, return the server.
    Raise UsageError listing the configured names if there is none by that name.
    """
    server = config.server(name)
    if server is None:
        names = ", ".join(config.server_names)
        raise UsageError(f"{name!r} is not a configured server (configured: {names})")
    return server


# --- internals ----------------------------------------------------------------


def _probation(
    config: Config,
    state: StateDir,
    result: FailoverResult,
    record: SwitchRecord,
    restarted: float,
    *,
    back: str | None,
    wall_clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> FailoverResult:
    """
    Given a switch just made (its result, record and the time its restart
    returned) and the server to return to if it fails (None: see below),
    run the probation episode: confirm the server, move on to the next
    candidate while one fails, and return the result of the switch that
    passed (or of the return to ``back``, unconfirmed: it was working). The
    lock is released while waiting, so a health check or another failover
    is never held up by it; a switch made meanwhile by someone else ends the
    episode. Raise ProbationFailedError when none passed.
    """
    rules = rules_for(config)
    if not rules.enabled:
        _clear_all_failed(config, state)
        return result
    # One pass through the ranking made when the episode began; by hand,
    # only the server asked for.
    by_hand = bool(result.rows) and result.rows[0].reason == MANUAL_REASON
    order = [] if by_hand else [row.name for row in result.rows if row.rank is not None]
    tried: dict[str, str] = {}

    def leave(failed: str, to: str, reason: str) -> SwitchRecord:
        # Every move of the episode records the losses the ranking saw when it began.
        return switch_to(
            config, state, to_server=to, from_server=failed, reason=reason, losses=result.losses, now=wall_clock()
        )

    server = record.to_server
    while True:
        judgement = confirm_server(config, server, record.time, restarted, wall_clock=wall_clock, sleep=sleep)
        if judgement.verdict == ProbationVerdict.PASSED:
            log.info("%s passed its probation: %s", server, judgement.reason)
            _clear_all_failed(config, state)
            return dataclasses.replace(
                result, choice=server, record=record, probation=judgement.reason, tried=tuple(tried.items())
            )
        log.warning("%s failed its probation: %s", server, judgement.reason)
        tried[server] = judgement.reason
        following = next_candidate(order, tried)
        with state.locked(config.lock_timeout):
            last = state.last_switch()
            if last is None or last.seq != record.seq:
                message = "another switch was made during the probation; leaving the tunnel to it"
                log.info("%s", message)
                return dataclasses.replace(result, record=record, skipped=message, tried=tuple(tried.items()))
            if back is not None and back != server:
                record = leave(server, back, f"probation failed: {judgement.reason}; back to {back}")
                return dataclasses.replace(result, choice=back, record=record, tried=tuple(tried.items()))
            if following is None:
                stay = order[0] if order else server
                if stay != server:
                    record = leave(server, stay, f"all servers failed: back to the best-ranked {stay}")
                message = describe_all_failed(tried, stay)
                if order:
                    state.write_all_failed(AllFailedRecord(time=wall_clock(), failed=dict(tried), stayed_on=stay))
                else:
                    message = f"{server} failed its probation ({judgement.reason}); staying on it as asked"
                write_metrics(config.textfile_dir, state, config.servers, instance=config.instance)
                raise ProbationFailedError(message)
            record = leave(server, following, f"probation failed: {judgement.reason}")
            restarted = wall_clock()
        server = following


def _clear_all_failed(config: Config, state: StateDir) -> None:
    """A server passed (or no probation is run): forget that all servers failed."""
    with state.locked(config.lock_timeout):
        if state.clear_all_failed():
            log.info("no longer in 'all servers failed'")
            write_metrics(config.textfile_dir, state, config.servers, instance=config.instance)


def _last_seq(history: Sequence[SwitchRecord]) -> int:
    return history[-1].seq if history else 0


def _decide(
    config: Config,
    state: StateDir,
    history: Sequence[SwitchRecord],
    *,
    reason: str,
    to: str | None,
    rng: random.Random,
    now: float,
    dry_run: bool,
    force: bool = False,
) -> FailoverResult:
    """
    Given the state as it is now, return the decision (nothing is written).
    Raise LocalFaultError if every server is lossy, unless dry_run or force.
    """
    current = recorded_server(config, state)
    if current.name is None and not current.first_boot:
        log.warning("%s; every server is a candidate", current.problem)
    unusable = {
        server.name: f"config missing: {server.config_path}"
        for server in config.servers
        if server.name != current.name and not server.config_path.is_file()
    }
    if to is not None:
        target = check_target(config, to)
        if to in unusable:
            raise ActionError(f"cannot switch to {to}: its WireGuard config {target.config_path} does not exist")
        already = f"already using {to}; nothing to do" if to == current.name else None
        endpoints = find_endpoints(config.servers, skip=set(unusable), warn=False)
        readings: list[ServerReading] = []
        error = None
        if already:
            log.debug("%s", already)  # the result says it
        else:
            # Asked, not waited on: the switch is made whatever Prometheus
            # says, but the history (and the loss panel, and the
            # all-servers-lossy alert) keep every server's loss at that moment.
            readings, error = measure_servers(config, endpoints, remember=not dry_run)
            if error is not None:
                log.info("%s; switching without recording the servers' losses", error)
            else:
                _warn_if_lossier(readings, to, config.failover.tie_epsilon)
        return FailoverResult(
            rows=tuple(_manual_rows(config, current.name, to, readings)),
            choice=to,
            from_server=current.name,
            reason=reason,
            used_prometheus=bool(readings),
            record=None,
            endpoints=endpoints,
            dry_run=dry_run,
            prometheus_error=error,
            skipped=already,
        )

    endpoints = find_endpoints(config.servers, skip=set(unusable), warn=True)
    readings, error = measure_servers(config, endpoints, remember=not dry_run)
    if error is not None:
        if config.failover.on_prometheus_error == "fail":
            raise ActionError(f'{error}; not switching (failover.on_prometheus_error = "fail")')
        log.warning("%s; picking at random among the other servers", error)
        readings = [ServerReading(server.name) for server in config.servers]
    elif not any(m.loss is not None for m in readings if m.name != current.name and m.name not in unusable):
        log.warning(
            "Prometheus has no loss for any other server (is failover.label %r on the prober's series, "
            "and do the endpoints match its values?); picking at random",
            config.failover.label,
        )
    rows = rank_servers(
        readings,
        current=current.name,
        history=history,
        now=now,
        hold_down=config.failover.hold_down,
        tie_epsilon=config.failover.tie_epsilon,
        rng=rng,
        unusable=unusable,
        priorities=config.priorities,
        threshold=config.health.threshold,
        weights=config.weights,
        latency_tie=config.failover.latency_tie,
    )
    fault = None
    if error is None:
        fault = local_fault_of(readings, config.health.threshold)
    if fault is not None and not dry_run:
        if not force:
            raise LocalFaultError(
                f"{fault.describe()}; not switching: the fault is on this side and no server would do better "
                "(--force or --to NAME to switch anyway)"
            )
        log.warning("%s; switching anyway (--force)", fault.describe())
    best = first_choice(rows)
    if best is None:
        excluded = "; ".join(f"{row.name}: {row.reason}" for row in rows)
        raise ActionError(f"no other server to switch to ({excluded})")
    log.debug("chose %s: %s", best.name, best.reason)  # the result says it
    return FailoverResult(
        rows=tuple(rows),
        choice=best.name,
        from_server=current.name,
        reason=reason,
        used_prometheus=error is None,
        record=None,
        endpoints=endpoints,
        dry_run=dry_run,
        prometheus_error=error,
        local_fault=fault.describe() if fault is not None and not force else None,
    )


def _manual_rows(
    config: Config, current: str | None, to: str, readings: Sequence[ServerReading]
) -> Iterable[RankedServer]:
    """Given a switch by hand and what Prometheus measured, return the rows to show: the target first."""
    by_name = {reading.name: reading for reading in readings}

    def row(name: str, rank: int | None, why: str) -> RankedServer:
        measured = by_name.get(name, ServerReading(name))
        return RankedServer(name=name, loss=measured.loss, latency=measured.latency, rank=rank, reason=why)

    yield row(to, 1, MANUAL_REASON)
    for server in config.servers:
        if server.name != to:
            yield row(server.name, None, "current" if server.name == current else "not asked for")


def _warn_if_lossier(readings: Sequence[ServerReading], to: str, tie_epsilon: float) -> None:
    best = better_than_chosen(readings, to, tie_epsilon)
    if best is not None and best.loss is not None:
        chosen = next(reading for reading in readings if reading.name == to)
        log.warning(
            "%s loses %.1f%% now, more than %s (%.1f%%); switching to it as asked",
            to,
            (chosen.loss or 0.0) * 100,
            best.name,
            best.loss * 100,
        )
