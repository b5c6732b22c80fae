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

from wgfailover.config import Config
from wgfailover.errors import ActionError, UsageError
from wgfailover.evidence.readings import ServerReading
from wgfailover.evidence.servers_loss import find_endpoints, measure_servers
from wgfailover.policy.ranking import RankedServer, better_than_chosen, first_choice, rank_servers
from wgfailover.servers import Server
from wgfailover.state import StateDir, SwitchRecord
from wgfailover.switch import switch_to

log = logging.getLogger(__name__)


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
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> FailoverResult:
    """
    Given the config and the reason to record, rank the other servers from
    Prometheus (or take ``to``, a configured server's name, without asking
    it), then, unless dry_run, switch to the choice under the state lock and
    restart the tunnel. Return the FailoverResult.

    If another switch was recorded while this one waited for the lock (a
    timer-triggered and an OnFailure-triggered failover at once), nothing
    is done and ``skipped`` says why; a ``to`` switch is always done. Must
    not be called while holding the state lock (flock is per open file, so
    it would wait for itself).

    Raise UsageError if ``to`` is not a configured server; ActionError if
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
        return _decide(config, state, history, reason=reason, to=to, rng=rng, now=wall_clock(), dry_run=True)

    seen = _last_seq(state.read_history())
    started = wall_clock()
    with state.locked(config.lock_timeout):
        waited = wall_clock() - started
        if waited >= 1:
            log.info("waited %.0fs for another wg-failover command to finish", waited)
        # Read once under the lock: it both detects a switch made meanwhile
        # and feeds the hold-down of the ranking.
        history = state.read_history()
        if to is None and _last_seq(history) != seen:
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
        result = _decide(config, state, history, reason=reason, to=to, rng=rng, now=wall_clock(), dry_run=False)
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
    return dataclasses.replace(result, record=record)


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
) -> FailoverResult:
    """Given the state as it is now, return the decision (nothing is written)."""
    current = state.read_current(config.server_names)
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
    )
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
    )


def _manual_rows(
    config: Config, current: str | None, to: str, readings: Sequence[ServerReading]
) -> Iterable[RankedServer]:
    """Given a switch by hand and what Prometheus measured, return the rows to show: the target first."""
    by_name = {reading.name: reading for reading in readings}

    def row(name: str, rank: int | None, why: str) -> RankedServer:
        measured = by_name.get(name, ServerReading(name))
        return RankedServer(name=name, loss=measured.loss, latency=measured.latency, rank=rank, reason=why)

    yield row(to, 1, "asked for with --to")
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
