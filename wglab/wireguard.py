"""WireGuard for the lab: keys, userspace interfaces and client configs.

The kernel here has no WireGuard module, so every interface is a
`wireguard-go` process (one per interface) started inside its namespace with
`ip netns exec`. Pitfalls learnt the hard way:

- wireguard-go's control sockets live in /var/run/wireguard, which is NOT
  per-namespace: two interfaces with the same name in different namespaces
  would fight over one socket. Lab interface names therefore carry the lab
  id (e.g. `wgl3f2as1`), and must fit IFNAMSIZ (15 characters).
- `wg` talks to wireguard-go through that socket, so `wg show IFACE` works
  from any namespace; we still run it inside the namespace for parity with
  the kernel implementation.
- wireguard-go has no --help: `wireguard-go --help` creates an interface
  called "--help" and daemonises. We always pass `-f` (foreground) so the
  pid we record is the daemon's, and stop it by that pid; when the process
  exits its TUN device and socket disappear with it.
- It prints a banner asking to use the kernel module; the environment
  variable WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 is what upstream
  documents to run it anyway where a module might exist.
- `wg setconf` accepts only wg(8) keys; wg-quick keys (Address, DNS, MTU,
  Table, Pre/PostUp/Down, SaveConfig) must be stripped and applied with
  `ip`, which is what :func:`apply_client_config` does, like wg-quick.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from wglab import processes
from wglab.netns import ns_argv, ns_run
from wglab.processes import GiveUp, kill_pid, pid_alive, wait_until

WG_SOCKET_DIR = Path("/var/run/wireguard")
WIREGUARD_GO = "/usr/bin/wireguard-go"
WG_QUICK_ONLY_KEYS = {"address", "dns", "mtu", "table", "preup", "postup", "predown", "postdown", "saveconfig"}
IFNAMSIZ = 15


@dataclass(frozen=True)
class Keypair:
    """A WireGuard private key and its public key (base64)."""

    private: str
    public: str

    @classmethod
    def generate(cls) -> Keypair:
        """Given nothing, return a fresh keypair from `wg genkey`/`wg pubkey`."""
        private = processes.run(["wg", "genkey"]).stdout.strip()
        public = processes.run(["wg", "pubkey"], input_text=private + "\n").stdout.strip()
        return cls(private=private, public=public)


@dataclass
class WgQuickConfig:
    """A wg-quick style config split into what `wg setconf` accepts and the
    interface settings wg-quick applies itself."""

    setconf_text: str
    addresses: list[str] = field(default_factory=list)
    mtu: int | None = None
    allowed_ips: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)


def parse_wg_quick(text: str) -> WgQuickConfig:
    """Given the text of a wg-quick config, return it split into setconf
    text (wg-quick-only keys removed) and the interface settings."""
    kept: list[str] = []
    cfg = WgQuickConfig(setconf_text="")
    section = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.lower()
            kept.append(line)
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not a key = value line: {raw!r}")
        key_l, value = key.strip().lower(), value.strip()
        values = [v.strip() for v in value.split(",") if v.strip()]
        if section == "[interface]" and key_l in WG_QUICK_ONLY_KEYS:
            if key_l == "address":
                cfg.addresses.extend(values)
            elif key_l == "mtu":
                cfg.mtu = int(value)
            continue
        if section == "[peer]" and key_l == "allowedips":
            cfg.allowed_ips.extend(values)
        if section == "[peer]" and key_l == "endpoint":
            cfg.endpoints.append(value)
        kept.append(f"{key.strip()} = {value}")
    cfg.setconf_text = "\n".join(kept) + "\n"
    return cfg


def client_config_text(
    private_key: str,
    address: str,
    server_public_key: str,
    endpoint: str,
    allowed_ips: Sequence[str],
    keepalive: int | None = 5,
) -> str:
    """Given the client's key and address and one server's key, endpoint
    and routed networks, return a wg-quick style client config."""
    lines = [
        "[Interface]",
        f"PrivateKey = {private_key}",
        f"Address = {address}",
        "",
        "[Peer]",
        f"PublicKey = {server_public_key}",
        f"Endpoint = {endpoint}",
        f"AllowedIPs = {', '.join(allowed_ips)}",
    ]
    if keepalive:
        # A keepalive makes the handshake happen right after a restart,
        # before the first probe, and keeps it fresh for handshake checks.
        lines.append(f"PersistentKeepalive = {keepalive}")
    return "\n".join(lines) + "\n"


def socket_path(iface: str) -> Path:
    """Given an interface name, return its wireguard-go control socket."""
    return WG_SOCKET_DIR / f"{iface}.sock"


def check_iface_name(iface: str) -> None:
    """Given an interface name, raise ValueError unless Linux accepts it."""
    if not re.fullmatch(rf"[A-Za-z0-9_.-]{{1,{IFNAMSIZ}}}", iface) or iface.startswith("-"):
        raise ValueError(f"bad interface name {iface!r} (max {IFNAMSIZ} chars, no leading '-')")


def start_interface(ns: str, iface: str, log_path: Path, timeout: float = 10.0) -> int:
    """Given a namespace and a (globally unique) interface name, start
    wireguard-go for it inside the namespace and return its pid once `wg`
    can talk to it.

    The process is detached (own session, output to log_path) so it outlives
    the caller: the restart CLI exits right after bringing the tunnel up.
    """
    check_iface_name(iface)
    if socket_path(iface).exists():
        raise RuntimeError(f"{socket_path(iface)} exists: interface {iface} already runs (or leftover; run cleanup)")
    proc = processes.start(
        f"wireguard-go {iface}",
        ns_argv(ns, [WIREGUARD_GO, "-f", iface]),
        log_path,
        env={"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"},
    )

    def up() -> bool:
        if not proc.alive():
            raise GiveUp(f"wireguard-go {iface} exited: {proc.log_tail(1000)}")
        return processes.run(ns_argv(ns, ["wg", "show", iface]), check=False).returncode == 0

    wait_until(up, timeout, 0.05, what=f"wireguard-go {iface} in {ns}")
    return proc.pid


def stop_interface(ns: str, iface: str, pid: int | None) -> None:
    """Given a namespace, an interface and the wireguard-go pid (if known),
    stop it and make sure the interface and its socket are gone."""
    if pid is not None:
        kill_pid(pid)
    # If the pid was unknown or stale, deleting the TUN makes wireguard-go
    # exit on its own.
    processes.run(["ip", "-n", ns, "link", "del", iface], check=False)
    deadline = time.monotonic() + 5
    while socket_path(iface).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if socket_path(iface).exists():
        # A socket without a live owner would make the next start fail.
        socket_path(iface).unlink(missing_ok=True)


def setconf(ns: str, iface: str, conf_text: str, workdir: Path) -> None:
    """Given an interface and wg(8) config text, apply it with `wg setconf`.

    The text goes through a 0600 file because it holds a private key and
    `wg` warns about (and some versions refuse) readable key files.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f".{iface}.setconf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(conf_text)
    try:
        ns_run(ns, ["wg", "setconf", iface, str(path)])
    finally:
        path.unlink(missing_ok=True)


def configure_server(
    ns: str,
    iface: str,
    keys: Keypair,
    listen_port: int,
    address: str,
    peers: Sequence[tuple[str, Sequence[str]]],
    workdir: Path,
) -> None:
    """Given a running server interface, its keys, port and address, and
    (peer public key, allowed IPs) pairs, configure it and bring it up."""
    lines = ["[Interface]", f"PrivateKey = {keys.private}", f"ListenPort = {listen_port}"]
    for public, allowed in peers:
        lines += ["[Peer]", f"PublicKey = {public}", f"AllowedIPs = {', '.join(allowed)}"]
    setconf(ns, iface, "\n".join(lines) + "\n", workdir)
    processes.run(["ip", "-n", ns, "addr", "add", address, "dev", iface])
    processes.run(["ip", "-n", ns, "link", "set", iface, "up"])


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Given a lock file path, hold an exclusive flock for the block, so two
    restarts (timer and OnFailure) cannot interleave teardown and setup."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_pidfile(path: Path) -> int | None:
    """Given a pid file, return the pid in it if that process is alive."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def apply_client_config(ns: str, iface: str, config_path: Path, workdir: Path) -> int:
    """Given the client namespace and interface, a wg-quick config (usually
    the `active_link` symlink) and a work dir, tear the client interface down,
    bring it up again with that config, and return the new wireguard-go pid.

    This is the lab's `systemctl restart wg.service`: it reads the file the
    link points at *now*, strips wg-quick-only keys for `wg setconf`, then
    applies Address/MTU and a route per AllowedIPs with `ip`, like wg-quick.
    The pid goes to workdir/IFACE.pid so the next restart and the lab's
    teardown can stop it.
    """
    # Parse before tearing anything down: a bad or dangling config fails
    # the restart (as wg.service would) without a half-configured tunnel.
    cfg = parse_wg_quick(Path(config_path).read_text())
    pidfile = workdir / f"{iface}.pid"
    with _locked(workdir / f"{iface}.lock"):
        stop_interface(ns, iface, read_pidfile(pidfile))
        pid = start_interface(ns, iface, workdir / f"wireguard-go-{iface}.log")
        pidfile.write_text(f"{pid}\n")
        setconf(ns, iface, cfg.setconf_text, workdir)
        for address in cfg.addresses:
            processes.run(["ip", "-n", ns, "addr", "add", address, "dev", iface])
        if cfg.mtu:
            processes.run(["ip", "-n", ns, "link", "set", iface, "mtu", str(cfg.mtu)])
        processes.run(["ip", "-n", ns, "link", "set", iface, "up"])
        for cidr in cfg.allowed_ips:
            processes.run(["ip", "-n", ns, "route", "replace", cidr, "dev", iface])
    return pid


def endpoints(ns: str, iface: str) -> dict[str, str]:
    """Given an interface, return {peer public key: endpoint "IP:PORT"}
    (peers without an endpoint are left out)."""
    out = ns_run(ns, ["wg", "show", iface, "endpoints"], check=False)
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] != "(none)":
            result[parts[0]] = parts[1]
    return result


def transfer(ns: str, iface: str) -> dict[str, tuple[int, int]]:
    """Given an interface, return {peer public key: (rx bytes, tx bytes)}."""
    out = ns_run(ns, ["wg", "show", iface, "transfer"], check=False)
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            result[parts[0]] = (int(parts[1]), int(parts[2]))
    return result


def latest_handshakes(ns: str, iface: str) -> dict[str, int]:
    """Given an interface, return {peer public key: unix time of the latest
    handshake} (0 = never)."""
    out = ns_run(ns, ["wg", "show", iface, "latest-handshakes"], check=False)
    return {p[0]: int(p[1]) for p in (line.split() for line in out.splitlines()) if len(p) == 2}
