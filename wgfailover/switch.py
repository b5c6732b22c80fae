"""Point the tunnel at a server: state, link, history, metrics, restart.

Every file a switch changes is first written in full beside its target and
fsynced; only when all of them are on disk are they renamed into place, so
a full disk fails the switch before anything changed. The renames keep the
order that matters for crash safety: the choice is recorded first, then the
link swapped, then the history appended. A crash between two renames
leaves a state that names a configured server and a link to an existing
config, and the next wg-select or wg-failover reconciles the rest.
"""

from __future__ import annotations

import logging
import os

from wgfailover.config import Config
from wgfailover.errors import ActionError
from wgfailover.external import run_command
from wgfailover.fsutil import StagedChanges, remove_stale_temps
from wgfailover.metrics import write_metrics
from wgfailover.state import CURRENT_FILE, FAILURES_FILE, HISTORY_FILE, CurrentServer, StateDir, SwitchRecord

log = logging.getLogger(__name__)


def recorded_server(config: Config, state: StateDir) -> CurrentServer:
    """
    Given the config and the state directory, return the current server:
    the one `current` names if it is usable. When `current` exists but is
    unusable (garbage, a FIFO, an unknown name), return the configured
    server active_link points at, if any, logged: that is the server the
    tunnel runs on. Treating it as "none" would make it a candidate of its
    own failover, and "switch from none to" the very server already in use.
    """
    current = state.read_current(config.server_names)
    if current.name is not None or current.first_boot:
        return current
    try:
        target = os.readlink(config.active_link)
    except OSError:
        return current
    linked = next((server.name for server in config.servers if str(server.config_path) == target), None)
    if linked is None:
        return current
    log.warning("%s; %s points at %s, so that is the current server", current.problem, config.active_link, linked)
    return CurrentServer(linked, problem=current.problem)


def point_link(config: Config, state: StateDir, name: str) -> None:
    """
    Record name as current and point active_link at its config (call under
    the lock). What is already right is left alone, so restoring an
    unchanged state at boot writes nothing and works on a full or
    read-only disk. Raise StateError if it cannot be written; then nothing
    was changed.
    """
    with StagedChanges() as staged:
        _stage_link(config, state, name, staged)
        staged.commit()


def _stage_link(config: Config, state: StateDir, name: str, staged: StagedChanges) -> None:
    """Stage `current` naming name and the link to its config, each only if it differs."""
    server = config.server(name)
    if server is None:  # callers pass configured names; guard against path use anyway
        raise ActionError(f"{name!r} is not a configured server")
    if not state.holds_current(name):
        staged.write(state.file(CURRENT_FILE), f"{name}\n".encode())
    try:
        linked = os.readlink(config.active_link)
    except OSError:
        linked = None
    # Always, not only when the link changes: a switch killed between
    # staging and its renames leaves a link temp beside a link that is right.
    remove_stale_temps(config.active_link)
    if linked != str(server.config_path):
        staged.symlink(server.config_path, config.active_link)


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
    metrics, then run restart_command. Return the history record.

    Every file of the switch is written in full and fsynced first; only then
    are they renamed into place. So a full disk (or any failed write) raises
    StateError with nothing changed: never `current` and the link on the new
    server while the history, and so the hold-down, lacks the switch and the
    tunnel was not restarted. Raise ActionError if the restart fails; the
    state is then already consistent with the new server, so a later restart
    (systemd's Restart=) uses it.
    """
    record, history = state.history_with(
        time=now, from_server=from_server, to_server=to_server, reason=reason, losses=losses
    )
    with StagedChanges() as staged:
        # Renamed in this order (see the module docstring for a crash between two).
        _stage_link(config, state, to_server, staged)
        staged.write(state.file(HISTORY_FILE), history)
        # Evidence gathered against the old server says nothing about the new one.
        staged.write(state.file(FAILURES_FILE), b"0\n")
        staged.commit()
    # After the commit, from the new state; a failure here is a warning only.
    write_metrics(config.textfile_dir, state, config.servers, instance=config.instance)
    # Debug: the command's own result line says it, once (one journal line per event).
    log.debug("switched from %s to %s (%s)", from_server or "none", to_server, reason)
    run_command(config.restart_command, config.restart_timeout, "restarting the tunnel failed")
    return record
