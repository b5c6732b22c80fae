"""wg-select: decide which server the tunnel starts with.

Runs before the tunnel unit. It keeps the recorded server when that is still
valid, and otherwise picks one at random among the servers whose config
exists, in the most preferred tier (``priority``) among them. Random, not
the first name, so a fleet booting at once spreads out.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable

from wgfailover.config import Config
from wgfailover.errors import ActionError
from wgfailover.metrics import write_metrics
from wgfailover.policy.ranking import most_preferred
from wgfailover.state import StateDir
from wgfailover.switch import point_link, recorded_server

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Selection:
    server: str
    restored: bool  # True: kept from the state file; False: a new random pick
    problem: str | None = None  # why the state file could not be used


def select_server(
    config: Config,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> Selection:
    """
    Given the config, restore or pick the active server, point active_link
    at its config, record it and rewrite the metrics. Return the Selection.
    Raise ActionError if no configured server has a config file, or the
    state cannot be written; LockBusyError if the lock stays busy.
    """
    rng = rng or random.SystemRandom()
    state = StateDir(config.state_dir)
    with state.locked(config.lock_timeout):
        recorded = recorded_server(config, state)
        usable = [s.name for s in config.servers if s.config_path.is_file()]
        # The most preferred tier: at boot nothing is measured, and a
        # failback would otherwise have to bring the tunnel home later.
        pool = most_preferred(usable, config.priorities)
        if recorded.name is not None and recorded.name in usable:
            selection = Selection(server=recorded.name, restored=True)
        else:
            problem = recorded.problem
            if recorded.name is not None:
                server = config.server(recorded.name)
                where = server.config_path if server else "?"
                problem = f"the config of recorded server {recorded.name!r} ({where}) does not exist"
            if not usable:
                missing = ", ".join(str(s.config_path) for s in config.servers)
                raise ActionError(f"no server has a WireGuard config file (looked for {missing})")
            selection = Selection(server=rng.choice(pool), restored=False, problem=problem)
            if recorded.first_boot:
                log.info("no server recorded yet (first boot)")
            elif problem:
                log.warning("%s; replacing it", problem)
        point_link(config, state, selection.server)
        write_metrics(config.textfile_dir, state, config.servers, instance=config.instance)
    if selection.restored:
        log.info("restored server %s", selection.server)
    else:
        log.info("picked server %s at random among %d", selection.server, len(pool))
    return selection
