"""``wg-failover --status`` and ``--history``: what the state says, read alone.

Neither asks Prometheus nor takes the lock, so both answer while Prometheus
is down and while another command runs, and neither needs root where the
files are readable (the units keep ``state_dir`` at mode 0700: a file that
cannot be read is named in ``problems``, never a traceback). The tunnel
unit's state comes from ``systemctl show`` when ``restart_command`` is a
``systemctl restart UNIT``, which any user may ask.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from wgfailover.config import Config
from wgfailover.errors import StateError
from wgfailover.policy.probation import all_failed_holds
from wgfailover.policy.ranking import held_down_servers
from wgfailover.state import ALL_FAILED_FILE, AllFailedRecord, CheckRecord, StateDir, SwitchRecord

# `systemctl show` answers at once; a hung PID 1 must not hang a status query.
_SYSTEMCTL_TIMEOUT = 5.0
STATUS_SWITCHES = 5


@dataclasses.dataclass(frozen=True)
class LinkState:
    path: Path
    target: str | None  # what the link points at; None: no link
    server: str | None  # the configured server whose config that is
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class UnitState:
    unit: str | None  # None: restart_command is not `systemctl restart UNIT`
    active_state: str | None = None
    sub_state: str | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class HeldDown:
    server: str
    left_ago: float  # seconds since the switch away from it
    remaining: float  # seconds of hold-down left


@dataclasses.dataclass(frozen=True)
class Status:
    """Everything --status shows, as read at ``now``."""

    now: float
    instance: str | None  # which of several tunnels on this host; None: the only one
    current: str | None
    current_problem: str | None
    link: LinkState
    unit: UnitState
    failures: int | None  # None: health-failures could not be read
    max_failures: int
    last_check: CheckRecord | None
    held_down: tuple[HeldDown, ...]
    local_fault: str | None  # what the last check saw, when every server was lossy
    all_failed: AllFailedRecord | None  # every server tried in one episode failed its probation
    all_failed_held: float  # seconds failovers stay held back because of it (0: not held)
    switches: tuple[SwitchRecord, ...]  # the last few, oldest first
    problems: tuple[str, ...]  # what could not be read

    @property
    def link_agrees(self) -> bool:
        return self.current is not None and self.link.server == self.current


def read_status(
    config: Config,
    now: float,
    systemctl: Callable[[str], UnitState] | None = None,
    switches: int = STATUS_SWITCHES,
) -> Status:
    """
    Given the config and the unix time now, read the state directory, the
    link and the tunnel unit; return the Status. ``systemctl`` (given a unit,
    return its UnitState) defaults to asking systemd. Never raises for what
    it reads: an unreadable file is a line of ``problems``.
    """
    state = StateDir(config.state_dir)
    problems: list[str] = []
    current = state.read_current(config.server_names)
    history = _read_history(state, problems)
    last_check = state.read_last_check() if _readable(state, "last-check.json", problems) else None
    failures = state.read_failures() if _readable(state, "health-failures", problems) else None
    held = held_down_servers(history, now, config.failover.hold_down)
    all_failed = state.read_all_failed() if _readable(state, ALL_FAILED_FILE, problems) else None
    unit = tunnel_unit(config.restart_command)
    return Status(
        now=now,
        instance=config.instance,
        current=current.name,
        current_problem=None if current.first_boot else current.problem,
        link=read_link(config),
        unit=UnitState(None) if unit is None else (systemctl or ask_systemctl)(unit),
        failures=failures,
        max_failures=config.health.max_failures,
        last_check=last_check,
        held_down=tuple(
            HeldDown(name, ago, config.failover.hold_down - ago)
            for name, ago in sorted(held.items(), key=lambda i: i[1])
        ),
        local_fault=last_check.local_fault if last_check is not None else None,
        all_failed=all_failed,
        all_failed_held=(
            max(0.0, config.failover.hold_down - (now - all_failed.time))
            if all_failed is not None and all_failed_holds(all_failed.time, now, config.failover.hold_down)
            else 0.0
        ),
        switches=tuple(history[-switches:]) if switches > 0 else (),
        problems=tuple(problems),
    )


def read_history(config: Config) -> list[SwitchRecord]:
    """Given the config, return the switch history, oldest first. Raise StateError if it can't be read."""
    return StateDir(config.state_dir).read_history()


def read_link(config: Config) -> LinkState:
    """Given the config, return where active_link points and which server's config that is."""
    path = config.active_link
    try:
        target = os.readlink(path)
    except FileNotFoundError:
        return LinkState(path, None, None, "does not exist (wg-select has not run)")
    except OSError as error:
        why = "is not a symlink" if error.errno == errno.EINVAL else f"cannot be read: {error.strerror}"
        return LinkState(path, None, None, why)
    server = next((s.name for s in config.servers if str(s.config_path) == target), None)
    return LinkState(path, target, server, None if server is not None else "points at no configured server's config")


def tunnel_unit(restart_command: Sequence[str]) -> str | None:
    """Given restart_command, return the unit it restarts if it is `systemctl restart UNIT`, else None."""
    if len(restart_command) < 3 or Path(restart_command[0]).name != "systemctl":
        return None
    arguments = [arg for arg in restart_command[1:] if not arg.startswith("-")]
    if len(arguments) != 2 or arguments[0] not in ("restart", "try-restart", "reload-or-restart"):
        return None
    return arguments[1]


def ask_systemctl(unit: str) -> UnitState:
    """Given a unit, return its ActiveState and SubState as systemd reports them."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return UnitState(unit, error="systemctl not found")
    try:
        result = subprocess.run(
            [systemctl, "show", "--property=ActiveState,SubState", unit],
            capture_output=True,
            text=True,
            timeout=_SYSTEMCTL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return UnitState(unit, error=f"systemctl failed: {error}")
    if result.returncode != 0:
        detail = " ".join(result.stderr.split()) or f"exit {result.returncode}"
        return UnitState(unit, error=f"systemd cannot be asked ({detail})")
    values = dict(line.partition("=")[::2] for line in result.stdout.splitlines() if "=" in line)
    return UnitState(unit, values.get("ActiveState") or None, values.get("SubState") or None)


def _read_history(state: StateDir, problems: list[str]) -> list[SwitchRecord]:
    try:
        return state.read_history()
    except StateError as error:
        problems.append(str(error))
        return []


def _readable(state: StateDir, name: str, problems: list[str]) -> bool:
    """Return whether the state file can be read (a missing one can: it means "none yet")."""
    path = state.file(name)
    try:
        with open(path, "rb"):
            return True
    except FileNotFoundError:
        return True
    except OSError as error:
        problems.append(f"cannot read {path}: {error.strerror}")
        return False
