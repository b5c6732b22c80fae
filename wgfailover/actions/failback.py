"""Failback: after a healthy check, return to a more preferred server if the rule says so.

policy/failback.py decides from the state whether a failback is worth
asking about (most checks stop there, without a query), then from one
query of the prober's history (evidence/servers_loss.py) whether one is
due. The switch itself is wg-failover's (actions/failover.py): the same
state, link, history, metrics, restart and probation as any other switch,
recorded with reason ``failback: NAME healthy for 15m``; a failback that
fails its probation returns to the server it left.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable

from wgfailover.actions.failover import FailoverResult, fail_over, last_seq
from wgfailover.config import Config
from wgfailover.evidence.servers_loss import find_endpoints, measure_preferred
from wgfailover.policy.failback import FailbackDecision, choose_failback, plan_failback
from wgfailover.state import StateDir

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FailbackResult:
    """What the failback step found, and did unless dry_run."""

    decision: FailbackDecision  # target None: no failback, and decision.reason says why
    from_server: str | None
    asked_prometheus: bool  # the prober's history was asked for (every cheaper condition held)
    prometheus_error: str | None = None
    switch: FailoverResult | None = None  # the switch made (None: none, or a dry run)
    dry_run: bool = False


def look_for_failback(
    config: Config,
    *,
    dry_run: bool = False,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> FailbackResult:
    """
    Given the config, after a check found the tunnel healthy, decide whether
    to fail back to a more preferred server and, unless dry_run, switch to
    it. Call without holding the state lock. Return the FailbackResult;
    Prometheus errors mean no failback (logged), never an error. Raise
    ActionError if the switch's restart fails, as for any switch.
    """
    rng = rng or random.SystemRandom()
    state = StateDir(config.state_dir)
    history = state.read_history()
    current = state.read_current(config.server_names).name
    now = wall_clock()
    plan = plan_failback(
        current=current,
        priorities=config.priorities,
        history=history,
        now=now,
        failback_after=config.failover.failback_after,
        hold_down=config.failover.hold_down,
        tunnel_healthy=True,
        unusable={server.name for server in config.servers if not server.config_path.is_file()},
    )
    if plan.skip is not None or config.failover.failback_after is None:
        log.debug("not failing back: %s", plan.skip)
        return FailbackResult(FailbackDecision(None, plan.skip or "no candidate"), current, False, dry_run=dry_run)
    candidates = [server for server in config.servers if server.name in plan.candidates]
    readings, error = measure_preferred(config, find_endpoints(candidates, skip=set(), warn=True), not dry_run)
    if error is not None:
        log.warning("not failing back: the prober's history could not be read: %s", error)
        why = f"the prober's history could not be read: {error}"
        return FailbackResult(FailbackDecision(None, why), current, True, prometheus_error=error, dry_run=dry_run)
    decision = choose_failback(
        plan,
        readings,
        priorities=config.priorities,
        threshold=config.health.threshold,
        failback_after=config.failover.failback_after,
        slice_seconds=config.health.min_window,
        tie_epsilon=config.failover.tie_epsilon,
        rng=rng,
    )
    if decision.target is None:
        log.info("not failing back: %s", decision.reason)
        return FailbackResult(decision, current, True, dry_run=dry_run)
    if dry_run:
        return FailbackResult(decision, current, True, dry_run=True)
    log.warning("%s; failing back from %s", decision.reason, current)
    # Decided on this history: if anything switched meanwhile, the decision
    # is stale. The server left was working, so a failback that fails its
    # probation goes straight back to it (which holds the preferred server
    # down: the history now says we left it).
    switch = fail_over(
        config,
        reason=decision.reason,
        to=decision.target,
        back_if_unconfirmed=True,
        rng=rng,
        wall_clock=wall_clock,
        sleep=sleep,
        after_seq=last_seq(history),
    )
    return FailbackResult(decision, current, True, switch=switch)
