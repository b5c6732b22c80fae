"""A throwaway machine with a real systemd as PID 1, for running the units.

The container is `systemd-nspawn --boot` on an overlay mount whose lower
layer is the host's `/` and whose upper layer is a tmpfs: it sees every
installed package (and a virtualenv anywhere under `/`) without a copy, and
whatever it writes, or the tests install into it, vanishes with the tmpfs.
Its network is an existing namespace (the lab's VPN client namespace), so
WireGuard tunnels it brings up live beside the lab's probers.

Recipe (what boot() runs; see docs/lab.md)::

    mount -t tmpfs tmpfs DIR/rw; mkdir DIR/rw/upper DIR/rw/work
    mount -t overlay overlay -o lowerdir=/,upperdir=DIR/rw/upper,workdir=DIR/rw/work DIR/root
    systemd-nspawn -D DIR/root --boot --register=no --keep-unit --link-journal=no \\
        --console=pipe --network-namespace-path=/run/netns/NS

`--register=no` because no systemd-machined runs on the host (so
`machinectl` cannot reach the container: commands enter it with `nsenter`
instead), `--keep-unit` because the host's PID 1 may not be systemd either.
The host's enabled services (its databases, its Prometheus) are masked in
the overlay before booting, so the container starts only systemd's own
units and the ones installed into it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from wglab import processes
from wglab.processes import GiveUp, wait_until

NSPAWN = "systemd-nspawn"
HOST_UNIT_DIR = Path("/etc/systemd/system")
# Pulled in by Debian's own units, yet noise in a test machine: a login
# prompt on the console and the clock daemon (nspawn forbids setting the clock).
ALWAYS_MASKED = ("console-getty.service", "getty@tty1.service", "systemd-timesyncd.service")
# What systemctl and journalctl see inside: the container's own PATH and no pager.
INSIDE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "LANG": "C.UTF-8",
}


def host_enabled_units(unit_dir: Path = HOST_UNIT_DIR) -> list[str]:
    """Given the host's unit directory, return the names of the units it
    enables (the entries of its *.wants and *.requires directories)."""
    names = {entry.name for pattern in ("*.wants/*", "*.requires/*") for entry in unit_dir.glob(pattern)}
    return sorted(names)


class SystemdContainer:
    """A systemd-nspawn container booted from an overlay of `/`.

    with SystemdContainer(netns="wgl1a2b-vpn") as box:
        box.install_file("/etc/systemd/system/x.service", text)
        box.boot()
        box.systemctl("start", "x.service")
    """

    def __init__(self, netns: str | None = None, workdir: Path | None = None, boot_timeout: float = 120.0) -> None:
        self.netns = netns
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="wglab-container-"))
        self.boot_timeout = boot_timeout
        self.rw = self.workdir / "rw"
        self.root = self.workdir / "root"
        self.console_log = self.workdir / "console.log"
        self.name = f"wgf-{secrets.token_hex(3)}"
        self.boots = 0
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._mounted: list[Path] = []

    # ------------------------------------------------------------- the image
    def mount(self) -> None:
        """Given a new container, mount its overlay of `/` (a tmpfs upper
        layer) and mask the host's enabled services in it."""
        for directory in (self.rw, self.root):
            directory.mkdir(parents=True, exist_ok=True)
        processes.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(self.rw)])
        self._mounted.append(self.rw)
        (self.rw / "upper").mkdir()
        (self.rw / "work").mkdir()
        options = f"lowerdir=/,upperdir={self.rw / 'upper'},workdir={self.rw / 'work'}"
        processes.run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)])
        self._mounted.append(self.root)
        for unit in [*host_enabled_units(), *ALWAYS_MASKED]:
            self.mask(unit)

    def path(self, inside: str | Path) -> Path:
        """Given an absolute path inside the container, return where it is on
        the host (in the overlay, so writing there changes only the container)."""
        inside = Path(inside)
        if not inside.is_absolute():
            raise ValueError(f"not an absolute path: {inside}")
        return self.root / inside.relative_to("/")

    def install_file(self, inside: str | Path, text: str, mode: int = 0o644) -> Path:
        """Given a path inside the container, its text and mode, write it
        (creating parent directories) and return the host-side path."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(target, mode)
        return target

    def install_symlink(self, inside: str | Path, points_to: str | Path) -> None:
        """Given a path inside the container and a target, make the symlink
        (replacing what was there)."""
        link = self.path(inside)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.is_file():
            link.unlink()
        link.symlink_to(points_to)

    def remove(self, inside: str | Path) -> None:
        """Given a path inside the container, remove the file, link or tree."""
        target = self.path(inside)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    def mask(self, unit: str) -> None:
        """Given a unit name, mask it in the container (also where the host
        enabled it: its .wants links are removed)."""
        for link in self.path(HOST_UNIT_DIR).glob(f"*.wants/{unit}"):
            link.unlink()
        self.install_symlink(HOST_UNIT_DIR / unit, "/dev/null")

    def run_in_image(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Given an argv (and environment variables), run it in the
        powered-off container's image (a one-off `systemd-nspawn` without
        booting, like a build step) and return the result; raise
        RuntimeError with its output on failure."""
        if self.running:
            raise RuntimeError("the container is running: use run()")
        settings = [f"--setenv={key}={value}" for key, value in (env or {}).items()]
        return processes.run(
            [NSPAWN, "-D", str(self.root), "--register=no", "--keep-unit", "--quiet", "--pipe", *settings, *argv],
            timeout=timeout,
        )

    # -------------------------------------------------------------- running
    @property
    def running(self) -> bool:
        """Given a container, return whether it is booted (nspawn runs)."""
        return self._nspawn is not None and self._nspawn.poll() is None

    def leader_pid(self) -> int:
        """Given a running container, return the host pid of its PID 1 (the
        one child of systemd-nspawn)."""
        if self._nspawn is None or self._nspawn.poll() is not None:
            raise GiveUp(f"systemd-nspawn is not running; console:\n{self.console_tail()}")
        pid = self._nspawn.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) != 1:
            raise RuntimeError(f"systemd-nspawn {pid} has children {children}, expected the container's init")
        return int(children[0])

    def boot(self) -> None:
        """Given a mounted container, boot it and return once systemd inside
        has finished starting up (running, or degraded: a failed unit is for
        the caller to judge). Raise TimeoutError with the console's tail."""
        if self.running:
            raise RuntimeError("the container is already running")
        argv = [
            NSPAWN,
            "-D",
            str(self.root),
            "--boot",
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            # The console (systemd's boot messages) goes to console.log.
            "--console=pipe",
            # WireGuard tunnels (wireguard-go's TUN device, addresses, routes)
            # are made inside: nspawn drops CAP_NET_ADMIN unless told.
            "--capability=CAP_NET_ADMIN",
            # /etc/resolv.conf is the image's own, not a copy of the host's.
            "--resolv-conf=off",
            # The hostname inside; unique, for the journal of whoever reads it.
            f"--machine={self.name}",
        ]
        if self.netns:
            argv.append(f"--network-namespace-path=/run/netns/{self.netns}")
        with open(self.console_log, "ab") as log:
            self._nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.boots += 1

        def booted() -> str | None:
            result = self.run(["systemctl", "is-system-running"], check=False)
            state = result.stdout.strip()
            return state if state in ("running", "degraded") else None

        wait_until(booted, self.boot_timeout, 0.2, what="systemd in the container to finish booting")

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = 60.0, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Given an argv, run it inside the booted container (all of its
        namespaces, its root) and return the result; with check, raise
        RuntimeError with its stderr when it fails."""
        pid = self.leader_pid()
        env = ["env", "-i", *(f"{key}={value}" for key, value in INSIDE_ENV.items())]
        return processes.run(
            ["nsenter", "--target", str(pid), "--all", *env, *argv],
            check=check,
            timeout=timeout,
            input_text=input_text,
        )

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Given systemctl arguments, run `systemctl ARGS` inside."""
        return self.run(["systemctl", "--no-pager", *args], check=check)

    def unit_property(self, unit: str, name: str) -> str:
        """Given a unit and a property name, return its value as systemd has it."""
        return self.systemctl("show", "--value", "-p", name, unit).stdout.strip()

    def journal(self, *args: str) -> str:
        """Given journalctl arguments (e.g. "-u", "wg-select.service"),
        return the current boot's journal lines they select."""
        return self.run(["journalctl", "--no-pager", "-b", "-o", "short-precise", *args]).stdout

    def console_tail(self, max_chars: int = 3000) -> str:
        """Given a container, return the end of its console log."""
        try:
            return self.console_log.read_text(errors="replace")[-max_chars:]
        except OSError:
            return ""

    def poweroff(self, timeout: float = 60.0) -> None:
        """Given a container, shut it down (SIGTERM makes nspawn power the
        container off cleanly; SIGKILL after timeout). Idempotent."""
        if self._nspawn is None:
            return
        if self._nspawn.poll() is None:
            self._nspawn.terminate()
            try:
                self._nspawn.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._nspawn.kill()
                self._nspawn.wait(timeout=timeout)
        self._nspawn = None

    def unmount(self) -> None:
        """Given a powered-off container, unmount its overlay and tmpfs
        (everything written into it is gone)."""
        for mountpoint in reversed(self._mounted):
            if processes.run(["umount", str(mountpoint)], check=False).returncode != 0:
                # Something still holds it (a process entering the container
                # as it died): detach it, it goes once freed.
                processes.run(["umount", "--lazy", str(mountpoint)], check=False)
        self._mounted.clear()

    def reimage(self) -> None:
        """Given a container, power it off and start over from a fresh
        overlay of `/`, as if newly created."""
        self.poweroff()
        self.unmount()
        self.mount()

    def teardown(self) -> None:
        """Given a container in any state, power it off, unmount its overlay
        and tmpfs and remove its work directory. Safe to call twice."""
        try:
            self.poweroff()
        finally:
            self.unmount()
            # Never remove the tree through a live overlay (that would be
            # the host's `/` seen through it): only once nothing is mounted.
            if not any(os.path.ismount(p) for p in (self.root, self.rw)):
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SystemdContainer:
        try:
            self.mount()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()


def nspawn_missing_reason() -> str | None:
    """Given this machine, return why a container cannot boot here (None
    when it can): not root, or no systemd-nspawn."""
    if os.geteuid() != 0:
        return "booting systemd in a container needs root (mounts, namespaces)"
    if shutil.which(NSPAWN) is None:
        return "systemd-nspawn is not installed (Debian package systemd-container; run scripts/install-deps.sh)"
    return None
