"""Confirm the server just switched to: read its tunnel until policy/probation.py has a verdict.

The evidence is the newest WireGuard handshake of ``health.interface``
(handshake method) or the tunnel loss from the internal prober over the
data gathered since the restart (tunnel data method). Nothing here decides:
judge_probation does, on each reading, until it passes or fails the server.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from wgfailover.config import Config
from wgfailover.errors import ConfigError, MeasurementError, PrometheusError
from wgfailover.evidence.handshake import check_handshake
from wgfailover.evidence.tunnel import measure_tunnel_loss
from wgfailover.policy.probation import (
    HANDSHAKE,
    ProbationJudgement,
    ProbationReading,
    ProbationRules,
    ProbationVerdict,
    judge_probation,
    probation_rules,
)
from wgfailover.prometheus_pool import open_prometheus, own_budget

log = logging.getLogger(__name__)

# How often the tunnel is read while on probation: `wg show` is cheap; a
# Prometheus query per second for at most twice min_window is too.
_POLL_SECONDS = 1.0


def rules_for(config: Config) -> ProbationRules:
    """Given the config, return the probation rules it sets."""
    health = config.health
    return probation_rules(config.failover.probation, health.interface, health.min_window, health.threshold)


def confirm_server(
    config: Config,
    server: str,
    restart_began: float,
    restarted: float,
    *,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> ProbationJudgement:
    """
    Given the config, the server just switched to, the unix times when its
    restart began and when it returned, read the new tunnel every second
    until the probation passes or fails it, and return the judgement (never
    WAITING). Sleeps at most the probation's limit after restart_began.
    """
    rules = rules_for(config)
    log.info("probation of %s: by %s, within %.0fs", server, rules.method, rules.limit)
    while True:
        now = wall_clock()
        reading = _read(config, rules, restart_began, restarted, now)
        judgement = judge_probation(server, reading, rules)
        if judgement.verdict != ProbationVerdict.WAITING:
            return judgement
        log.debug("probation of %s: %s", server, judgement.reason)
        sleep(max(0.0, min(_POLL_SECONDS, restart_began + rules.limit - now)))


def _read(
    config: Config, rules: ProbationRules, restart_began: float, restarted: float, now: float
) -> ProbationReading:
    elapsed = now - restart_began
    health = config.health
    if rules.method == HANDSHAKE and health.interface is not None:
        try:
            newest = check_handshake(health.interface, health.netns, health.handshake_timeout, now).newest
        except MeasurementError as error:
            log.debug("probation: %s", error)
            return ProbationReading(elapsed=elapsed)
        # `wg show` counts whole seconds: a handshake in the second the
        # restart began shows as that second.
        if newest is None or newest < math.floor(restart_began):
            return ProbationReading(elapsed=elapsed)
        return ProbationReading(elapsed=elapsed, handshake_after=max(0.0, newest - restart_began))
    # Only whole seconds after the restart returned: older data is the old server's.
    span = math.floor(now - restarted)
    if span < rules.min_window:
        return ProbationReading(elapsed=elapsed)
    try:
        # Its own budget even within a health check's: a probation waits for
        # the new server's data by design, after the decision's queries.
        with own_budget():
            client = open_prometheus(config.prometheus, config.state_dir, remember=True, wall_clock=lambda: now)
        tunnel = measure_tunnel_loss(client, health, span, config.fleet)
    except (PrometheusError, ConfigError) as error:
        return ProbationReading(elapsed=elapsed, span=span, error=str(error))
    return ProbationReading(elapsed=elapsed, loss=tunnel.loss, span=span)
