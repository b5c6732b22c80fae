"""Point the tunnel at a server: state, link, history, metrics, restart.

Order matters for crash safety: the choice is recorded first, then the link
swapped, then the history appended. A crash between any two steps leaves a
state that names a configured server and a link to an existing config, and
the next wg-select or wg-failover reconciles the rest.
"""

from __future__ import annotations

import logging
import os

from wgfailover.config import Config
from wgfailover.errors import ActionError
from wgfailover.external import run_command
from wgfailover.fsutil import atomic_symlink, remove_stale_temps
from wgfailover.metrics import write_metrics
from wgfailover.state import StateDir, SwitchRecord

log = logging.getLogger(__name__)


def point_link(config: Config, state: StateDir, name: str) -> None:
    """
    Record name as current and point active_link at its config (call under
    the lock). What is already right is left alone, so restoring an
    unchanged state at boot writes nothing and works on a full or
    read-only disk.
    """
    server = config.server(name)
    if server is None:  # callers pass configured names; guard against path use anyway
        raise ActionError(f"{name!r} is not a configured server")
    if not state.holds_current(name):
        state.write_current(name)
    try:
        linked = os.readlink(config.active_link)
    except OSError:
        linked = None
    if linked != str(server.config_path):
        remove_stale_temps(config.active_link)
        atomic_symlink(server.config_path, config.active_link)


def switch_to(
    config: Config,
    state: StateDir,
    *,
    to_server: str,
    from_server: str | None,
    reason: str,
    losses: dict[str, float | None],
    now: float,
) -> SwitchRecord:
    """
    Switch the tunnel to to_server (call under the state lock): record it,
    swap the link, append the history, reset the health counter, rewrite the
    metrics, then run restart_command. Return the history record. Raise
    ActionError if the restart fails; the state is then already consistent
    with the new server, so a later restart (systemd's Restart=) uses it.
    """
    point_link(config, state, to_server)
    record = state.append_history(time=now, from_server=from_server, to_server=to_server, reason=reason, losses=losses)
    # Evidence gathered against the old server says nothing about the new one.
    state.write_failures(0)
    write_metrics(config.textfile_dir, state, config.servers)
    # Debug: the command's own result line says it, once (one journal line per event).
    log.debug("switched from %s to %s (%s)", from_server or "none", to_server, reason)
    run_command(config.restart_command, config.restart_timeout, "restarting the tunnel failed")
    return record
