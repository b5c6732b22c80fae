"""The WireGuard failover lab: servers, a router, a VPN client, probers and
Prometheus, all on one machine, as root.

Topology (every box is a network namespace named `wglID-...`)::

    vpn (client)              router                    server1 .. serverN
    wglIDc  10.201.0.2        nft table inet wglab      wglIDsK 10.201.0.1
    eth0    10.200.0.2 ------ to-vpn 10.200.0.1         lo 10.200.250.1, .2
    vpn-prober (smokeping)    to-sK  10.200.K.1 ------- eth0 10.200.K.2:51820
    -> 10.200.250.1, .2       to-mon 10.200.254.1
                                 |
    mon (the "hypervisor")       |
    eth0 10.200.254.2 -----------+
    external smokeping prober -> every 10.200.K.2

- Each server runs wireguard-go and owns the same two "internet" addresses
  (10.200.250.1 and .2, like the original's two root DNS servers), so they
  answer through whichever tunnel is up.
- The external prober ("smokeping" job) runs in its own `mon` namespace and
  pings every server endpoint 10.200.K.2 through the router. Loss for a
  server is an nft rule in the router's forward hook matching
  `ip daddr 10.200.K.2`, so the client's WireGuard packets and the external
  prober's pings cross the same rule and see the same loss. (The prober is
  not in the router itself because a drop in the output hook makes
  sendto() fail with EPERM: smokeping then counts no request at all, and
  the loss is invisible.)
- Three more faults: the host's own uplink (Lab.set_uplink_loss: the
  client's and the external prober's traffic to every server, dropped in
  the router's forward hook by input interface), a server whose WireGuard
  died while its host still answers pings (Lab.set_wireguard_up), and
  tunnel loss inside a server (Lab.set_tunnel_loss). Lab.restart_count
  counts the tunnel restarts.
- The internal prober (job "vpn-prober", or Lab(internal_job=...)) runs in
  the vpn namespace and pings the two internet addresses through the
  tunnel.
- Prometheus runs in the root namespace on 127.0.0.1; it scrapes the probers
  through loopback forwarders (wglab.forward), so nothing of the lab touches
  the root namespace's interfaces or addresses.
- The tunnel is (re)built from `active_link` by `workdir/restart.py`
  (wglab.restart), the lab's `systemctl restart wg.service`.

Several tunnels on one host (wg-failover instances) are several labs that
share one Prometheus, as one host's Prometheus scrapes every prober on it::

    a = Lab(servers=["a1", "a2"], prometheus=False, internal_job="vpn-prober-a")
    b = Lab(servers=["b1", "b2"], prometheus=False, internal_job="vpn-prober-b", subnet_offset=2)
    prometheus = PrometheusServer([*a.scrape_jobs, *b.scrape_jobs])   # after both are up
    a.use_prometheus(prometheus); b.use_prometheus(prometheus)

- subnet_offset moves the servers to 10.200.(offset+K).0/24, so the two
  tunnels' endpoints are disjoint, as two VPN providers' are. Both external
  probers are targets of the one "smokeping" job, as with the NixOS
  module's instances: the ranking selects external probes by endpoint
  address alone, so shared endpoints would mix both tunnels' views of them.
- The internal probers need jobs of their own ("vpn-prober-NAME", the
  module's names); each lab's write_config sets health.selector to its own.
- Everything else (namespaces, the tunnel's and the internet addresses,
  workdir, active_link, state_dir) is per lab and needs no change: the
  random prefix keeps names unique, and namespaces keep equal addresses
  apart. A lab never stops a Prometheus it was given (use_prometheus).

Everything is torn down by teardown() (idempotent; also run at exit and on
SIGTERM), and `python -m wglab.cleanup` removes leftovers of crashed labs.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from wglab import netns, processes, wireguard
from wglab.cleanup import LabRecord, cleanup_lab, register
from wglab.prometheus import PrometheusServer, SmokepingProber, parse_duration
from wglab.restart import RESTARTS_LOG
from wglab.wireguard import Keypair

REPO_ROOT = Path(__file__).resolve().parent.parent
INTERNET_ADDRESSES = ("10.200.250.1", "10.200.250.2")
INTERNET_NET = "10.200.250.0/24"
TUNNEL_NET = "10.201.0.0/24"
CLIENT_TUNNEL_ADDR = "10.201.0.2"
SERVER_TUNNEL_ADDR = "10.201.0.1"
WG_PORT = 51820
SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{0,30}$")
# The lab's windows, counted in pings per target rather than in seconds, so
# a lab that pings faster keeps the same statistics in less time: at the
# default 200 ms, min_window 5s, health.window 60s, failover.window 30s.
MIN_WINDOW_PINGS = 25
HEALTH_WINDOW_PINGS = 300
FAILOVER_WINDOW_PINGS = 150


def toml_value(value: Any) -> str:
    """Given a str, number, bool or list of them, return its TOML literal.

    JSON string escapes are valid TOML basic-string escapes.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def to_toml(data: Mapping[str, Any], _path: tuple[str, ...] = ()) -> str:
    """Given nested dicts of TOML values, return the TOML document (scalars
    first, then one [table] per nested dict)."""
    lines = []
    tables = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {toml_value(value)}")
    out = ""
    if _path and (lines or not tables):
        out += f"[{'.'.join(_path)}]\n"
    if lines:
        out += "\n".join(lines) + "\n"
    for key, value in tables:
        if out:
            out += "\n"
        out += to_toml(value, (*_path, key))
    return out


def merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Given a nested dict and overrides (nested dicts merge, "a.b" keys
    address nested keys, None deletes), return the merged dict."""
    result = dict(base)
    for key, value in overrides.items():
        if "." in key:
            head, rest = key.split(".", 1)
            value, key = {rest: value}, head
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(dict(result[key]), value)
        else:
            result[key] = value
    return result


class Lab:
    """A complete failover lab; use as a context manager or call up() and
    teardown().

    with Lab(servers=3) as lab:
        lab.wait_for_metrics()
        lab.write_config(lab.workdir / "config.toml")
        lab.set_loss("server1", 100)
    """

    def __init__(
        self,
        servers: int | Sequence[str] = 3,
        workdir: Path | None = None,
        ping_interval: float | str = "200ms",
        scrape_interval: float | str = "1s",
        initial_server: str | None = None,
        prometheus: bool = True,
        keep_workdir: bool = False,
        subnet_offset: int = 0,
        internal_job: str = "vpn-prober",
    ) -> None:
        names = [f"server{i}" for i in range(1, servers + 1)] if isinstance(servers, int) else list(servers)
        # 10.200.K.0/24 per server, K < 250 (.250 and .254 are taken).
        if not names or subnet_offset < 0 or subnet_offset + len(names) > 200:
            raise ValueError("a lab has 1..200 servers, subnet_offset + servers <= 200")
        for name in names:
            if not SERVER_NAME_RE.match(name):
                raise ValueError(f"server name {name!r} must match {SERVER_NAME_RE.pattern}")
        self.server_names = names
        self.lab_id = secrets.token_hex(2)
        self.prefix = f"wgl{self.lab_id}"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"wglab-{self.lab_id}-"))
        self.keep_workdir = keep_workdir
        self.ping_interval = ping_interval
        self.scrape_interval = scrape_interval
        self.initial_server = initial_server or names[0]
        self.with_prometheus = prometheus
        self.subnet_offset = subnet_offset
        self.internal_job = internal_job
        self._owns_prometheus = prometheus

        self.router_ns = f"{self.prefix}-router"
        self.vpn_ns = f"{self.prefix}-vpn"
        self.mon_ns = f"{self.prefix}-mon"
        self.server_ns = {name: f"{self.prefix}-{name}" for name in names}
        self.server_iface = {name: f"{self.prefix}s{i}" for i, name in enumerate(names, 1)}
        self.client_iface = f"{self.prefix}c"
        self.endpoint_ip = {name: f"10.200.{subnet_offset + i}.2" for i, name in enumerate(names, 1)}
        self.config_dir = self.workdir / "configs"
        self.active_link = self.workdir / "wg-active.conf"
        self.state_dir = self.workdir / "state"
        self.textfile_dir = self.workdir / "textfile"
        self.lab_state_path = self.workdir / "lab.json"
        self.restart_script = self.workdir / "restart.py"

        self.server_keys: dict[str, Keypair] = {}
        self.client_keys: Keypair | None = None
        self._server_pids: dict[str, int] = {}
        self.external_prober: SmokepingProber | None = None
        self.internal_prober: SmokepingProber | None = None
        self.prometheus: PrometheusServer | None = None
        self._torn_down = False
        self._teardown_lock = threading.Lock()
        self._old_sigterm: Any = None

    # ------------------------------------------------------------------ setup
    @property
    def restart_command(self) -> list[str]:
        """Given a lab, return the argv that restarts its tunnel from
        active_link (for wg-failover's restart_command)."""
        return [sys.executable, str(self.restart_script)]

    def endpoint(self, server: str) -> str:
        """Given a server name, return its WireGuard endpoint "IP:PORT"."""
        return f"{self.endpoint_ip[server]}:{WG_PORT}"

    def up(self) -> Lab:
        """Given a configured lab, build everything and return self once the
        tunnel is up and Prometheus runs (metrics may still be sparse; see
        wait_for_metrics)."""
        if os.geteuid() != 0:
            raise PermissionError("the lab needs root (network namespaces, nftables, TUN devices)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Register before creating anything, so a crash mid-setup is found.
        register(self.lab_id, os.getpid(), self.workdir)
        atexit.register(self.teardown)
        if threading.current_thread() is threading.main_thread():
            # SIGTERM would kill us without running finally blocks; make it
            # an exception so the lab is torn down. (Ctrl-C already is one.)
            self._old_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._build_network()
        self._build_wireguard()
        self.restart()
        self._start_monitoring()
        return self

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def _build_network(self) -> None:
        for ns in (self.router_ns, self.vpn_ns, self.mon_ns, *self.server_ns.values()):
            netns.add_netns(ns)
        netns.enable_forwarding(self.router_ns)
        netns.add_veth(self.router_ns, "to-vpn", self.vpn_ns, "eth0")
        netns.add_address(self.router_ns, "to-vpn", "10.200.0.1/24")
        netns.add_address(self.vpn_ns, "eth0", "10.200.0.2/24")
        netns.add_veth(self.router_ns, "to-mon", self.mon_ns, "eth0")
        netns.add_address(self.router_ns, "to-mon", "10.200.254.1/24")
        netns.add_address(self.mon_ns, "eth0", "10.200.254.2/24")
        for i, name in enumerate(self.server_names, 1):
            ns, net = self.server_ns[name], f"10.200.{self.subnet_offset + i}"
            netns.add_veth(self.router_ns, f"to-s{i}", ns, "eth0")
            netns.add_address(self.router_ns, f"to-s{i}", f"{net}.1/24")
            netns.add_address(ns, "eth0", f"{net}.2/24")
            netns.add_route(ns, "10.200.0.0/24", via=f"{net}.1")
            netns.add_route(ns, "10.200.254.0/24", via=f"{net}.1")
            netns.add_route(self.mon_ns, f"{net}.0/24", via="10.200.254.1")
            # Only the endpoints are routed via the router: the internet
            # addresses must never be reachable outside the tunnel.
            netns.add_route(self.vpn_ns, f"{net}.0/24", via="10.200.0.1")
            for addr in INTERNET_ADDRESSES:
                netns.add_address(ns, "lo", f"{addr}/32")

    def _build_wireguard(self) -> None:
        self.client_keys = Keypair.generate()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.config_dir, 0o700)
        # node_exporter's textfile directory exists before the tool runs.
        self.textfile_dir.mkdir(parents=True, exist_ok=True)
        for name in self.server_names:
            keys = self.server_keys[name] = Keypair.generate()
            self._server_pids[name] = self._start_server(name)
            path = self.config_dir / name
            path.write_text(
                wireguard.client_config_text(
                    self.client_keys.private,
                    f"{CLIENT_TUNNEL_ADDR}/24",
                    keys.public,
                    self.endpoint(name),
                    [TUNNEL_NET, INTERNET_NET],
                )
            )
            os.chmod(path, 0o600)
        self.lab_state_path.write_text(
            json.dumps(
                {
                    "lab_id": self.lab_id,
                    "vpn_ns": self.vpn_ns,
                    "client_iface": self.client_iface,
                    "active_link": str(self.active_link),
                    "workdir": str(self.workdir),
                    "servers": {n: self.endpoint(n) for n in self.server_names},
                },
                indent=2,
            )
        )
        # A standalone script rather than `python -m wglab.restart`, so the
        # restart command works whatever the caller's cwd and sys.path.
        self.restart_script.write_text(
            f"import sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
            "from wglab.restart import main\n"
            f"raise SystemExit(main(['--lab-state', {str(self.lab_state_path)!r}]))\n"
        )
        self.point_link(self.initial_server)

    def _start_monitoring(self) -> None:
        self.external_prober = SmokepingProber(
            [self.endpoint_ip[n] for n in self.server_names],
            netns=self.mon_ns,
            interval=self.ping_interval,
            workdir=self.workdir,
            name="smokeping-external",
        )
        self.external_prober.start()
        self.internal_prober = SmokepingProber(
            list(INTERNET_ADDRESSES),
            netns=self.vpn_ns,
            interval=self.ping_interval,
            workdir=self.workdir,
            name="smokeping-vpn",
        )
        self.internal_prober.start()
        if self.with_prometheus:
            self.prometheus = PrometheusServer(
                self.scrape_jobs,
                scrape_interval=self.scrape_interval,
                workdir=self.workdir / "prometheus",
            )
            self.prometheus.start()

    @property
    def scrape_jobs(self) -> list[tuple[str, list[str]]]:
        """Given a lab that is up, return its probers as (job, [target])
        pairs for a Prometheus scrape config: its own Prometheus's, or one
        shared by several labs (see use_prometheus)."""
        if self.external_prober is None or self.internal_prober is None:
            raise RuntimeError("the lab's probers are not running yet (call up() first)")
        return [
            ("smokeping", [self.external_prober.scrape_target]),
            (self.internal_job, [self.internal_prober.scrape_target]),
        ]

    def use_prometheus(self, server: PrometheusServer) -> None:
        """Given a running Prometheus that scrapes this lab's probers (its
        scrape_jobs among others), query it and point configs at it from
        now on; teardown leaves it running (its starter stops it). Raise
        ValueError if the lab runs its own."""
        if self._owns_prometheus:
            raise ValueError("this lab runs its own Prometheus; build it with prometheus=False")
        self.prometheus = server

    # ------------------------------------------------------------- operations
    @property
    def prometheus_url(self) -> str:
        """Given a running lab, return its Prometheus base URL."""
        if self.prometheus is None:
            raise RuntimeError("this lab runs without Prometheus")
        return self.prometheus.url

    def point_link(self, server: str) -> None:
        """Given a server name, atomically point active_link at its config
        (what wg-select/wg-failover do; for tests that switch by hand)."""
        tmp = self.active_link.with_name(f".{self.active_link.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.config_dir / server)
        os.replace(tmp, self.active_link)

    def restart(self) -> None:
        """Given a lab, run its restart command (rebuild the tunnel from
        active_link); raise RuntimeError with its stderr if it fails."""
        processes.run(self.restart_command, timeout=60)

    def switch_to(self, server: str) -> None:
        """Given a server name, point the link at it and restart the tunnel."""
        self.point_link(server)
        self.restart()

    def stop_client(self) -> None:
        """Given a lab, stop its own client tunnel and leave the VPN namespace
        without one, for another client to take over (a container booted in
        that namespace running the units under systemd). Its probers keep
        measuring whichever tunnel comes up there."""
        pidfile = self.workdir / f"{self.client_iface}.pid"
        wireguard.stop_interface(self.vpn_ns, self.client_iface, wireguard.read_pidfile(pidfile))
        pidfile.unlink(missing_ok=True)

    def active_server(self) -> str | None:
        """Given a lab, return the server the client's WireGuard peer
        endpoint points at now (None when the tunnel interface is down)."""
        by_endpoint = {self.endpoint(n): n for n in self.server_names}
        for endpoint in wireguard.endpoints(self.vpn_ns, self.client_iface).values():
            if endpoint in by_endpoint:
                return by_endpoint[endpoint]
        return None

    def ping_through_tunnel(self, target: str = INTERNET_ADDRESSES[0], count: int = 3) -> bool:
        """Given an internet address, return whether at least one of count
        pings from the vpn namespace got a reply (one timeout of 1 s each)."""
        result = processes.run(
            netns.ns_argv(self.vpn_ns, ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", target]),
            check=False,
        )
        return result.returncode == 0

    def server_rx_bytes(self, server: str) -> int:
        """Given a server name, return the bytes its WireGuard interface has
        received from the client (to see where traffic goes)."""
        stats = wireguard.transfer(self.server_ns[server], self.server_iface[server])
        return sum(rx for rx, _ in stats.values())

    def _loss_key(self, server: str) -> str:
        return re.sub(r"[^A-Za-z0-9_]", "_", server)

    def set_loss(self, server: str, percent: float) -> None:
        """Given a server name and a percentage, drop that share of packets
        towards its endpoint in the router: both the client's WireGuard
        traffic and the external prober's pings cross it. 0 removes it."""
        netns.set_loss(
            self.router_ns,
            percent,
            match=f"ip daddr {self.endpoint_ip[server]}",
            key=f"ep_{self._loss_key(server)}",
            hooks=("forward",),
        )

    def set_tunnel_loss(self, percent: float, server: str | None = None) -> None:
        """Given a percentage (and a server, default all), drop that share of
        tunnelled packets to the internet addresses inside the server: the
        tunnel is bad while the endpoint still answers the external prober
        (a server that pings fine but does not carry traffic)."""
        for name in [server] if server else self.server_names:
            netns.set_loss(
                self.server_ns[name],
                percent,
                match=f'iifname "{self.server_iface[name]}" ip daddr {INTERNET_NET}',
                key="tunnel",
                hooks=("input",),
            )

    def set_uplink_loss(self, percent: float) -> None:
        """Given a percentage, drop that share of everything the host sends
        out: the VPN client's WireGuard packets and the external prober's
        pings alike, towards every server, in the router's forward hook. It
        is the host's own uplink failing (the ISP, the Wi-Fi): the external
        prober shares the host's uplink (it runs on the host, or on the
        hypervisor behind the same line), so it sees every endpoint lost at
        once, the current one included. 0 removes it. Prometheus scrapes
        the probers through loopback forwarders, so it keeps answering, as a
        Prometheus on the host or the LAN would."""
        netns.set_loss(
            self.router_ns,
            percent,
            match='iifname { "to-vpn", "to-mon" }',
            key="uplink",
            hooks=("forward",),
        )

    def set_wireguard_up(self, server: str, up: bool) -> None:
        """Given a server name, stop its WireGuard (False: wireguard-go is
        killed and its interface goes) or start it again as it was (True:
        same keys, port, address and peer). Stopped, handshakes get nowhere
        while the server's host still answers the external prober's pings:
        a server whose WireGuard died ranks as healthy. (Only `ip link set
        down` is not enough: wireguard-go keeps answering handshakes.)
        Either way is idempotent."""
        ns, iface = self.server_ns[server], self.server_iface[server]
        running = self._server_pids.get(server)
        if not up:
            if running is not None:
                wireguard.stop_interface(ns, iface, running)
                del self._server_pids[server]
            return
        if running is not None:
            return
        self._server_pids[server] = self._start_server(server)

    def _start_server(self, server: str) -> int:
        ns, iface = self.server_ns[server], self.server_iface[server]
        pid = wireguard.start_interface(ns, iface, self.workdir / f"wireguard-go-{iface}.log")
        assert self.client_keys is not None  # noqa: S101 - generated first
        wireguard.configure_server(
            ns,
            iface,
            self.server_keys[server],
            WG_PORT,
            f"{SERVER_TUNNEL_ADDR}/24",
            [(self.client_keys.public, [f"{CLIENT_TUNNEL_ADDR}/32"])],
            self.workdir,
        )
        return pid

    def restart_count(self) -> int:
        """Given a lab, return how many times its restart command has run
        (wglab.restart appends a line to workdir/restarts.log per attempt)."""
        try:
            return len((self.workdir / RESTARTS_LOG).read_text().splitlines())
        except FileNotFoundError:
            return 0

    def wait_for_metrics(self, timeout: float = 60.0) -> None:
        """Given a running lab, return once Prometheus has rate() data for
        every server endpoint and both internet addresses."""
        if self.prometheus is None:
            return
        # By host: another lab's external prober may share the job.
        hosts = "|".join(self.endpoint_ip.values())
        self.prometheus.wait_for_series(
            f'rate(smokeping_requests_total{{job="smokeping",host=~"{hosts}"}}[5s]) > 0',
            timeout,
            min_series=len(self.server_names),
        )
        self.prometheus.wait_for_series(
            f'rate(smokeping_requests_total{{job="{self.internal_job}"}}[5s]) > 0',
            timeout,
            min_series=len(INTERNET_ADDRESSES),
        )

    def endpoint_loss(self, window: str = "5s") -> dict[str, float]:
        """Given a rate() window, return {server name: loss ratio} as the
        external prober's data in Prometheus shows it (missing = no data)."""
        if self.prometheus is None:
            raise RuntimeError("this lab runs without Prometheus")
        sel = 'job="smokeping"'
        expr = (
            f"1 - sum by (host) (rate(smokeping_response_duration_seconds_count{{{sel}}}[{window}]))"
            f" / sum by (host) (rate(smokeping_requests_total{{{sel}}}[{window}]))"
        )
        by_ip = self.prometheus.query_values(expr, "host")
        return {n: by_ip[ip] for n, ip in self.endpoint_ip.items() if ip in by_ip}

    def tunnel_loss(self, window: str = "5s") -> float | None:
        """Given a rate() window, return the tunnel loss over every vpn-prober
        series, as the health check's default query sees it (None: no data)."""
        if self.prometheus is None:
            raise RuntimeError("this lab runs without Prometheus")
        sel = f'job="{self.internal_job}"'
        result = self.prometheus.query(
            f"1 - sum(rate(smokeping_response_duration_seconds_count{{{sel}}}[{window}]))"
            f" / sum(rate(smokeping_requests_total{{{sel}}}[{window}]))"
        )
        value = float(result[0]["value"][1]) if result else float("nan")
        return value if value == value else None  # NaN: nothing was sent

    @property
    def clean_window(self) -> str:
        """Given a lab, return the rate() window is_clean judges by default:
        its min_window, as a PromQL range."""
        return f"{self.window_seconds(MIN_WINDOW_PINGS)}s"

    def is_clean(self, window: str | None = None, tolerance: float = 0.05) -> bool:
        """Given a rate() window (default: the lab's min_window), return
        whether Prometheus shows no loss on any endpoint nor in the tunnel
        over it. A reply counted a scrape after its request can make an
        undisturbed series differ from 0 by a sample's worth, never by the
        default 5%."""
        window = window or self.clean_window
        loss = self.endpoint_loss(window)
        values = [loss.get(name) for name in self.server_names] + [self.tunnel_loss(window)]
        return all(v is not None and abs(v) < tolerance for v in values)

    def clear_loss(self) -> None:
        """Given a lab, remove every injected fault (endpoint, tunnel and
        uplink loss; WireGuard interfaces down)."""
        for name in self.server_names:
            self.set_loss(name, 0)
        self.set_tunnel_loss(0)
        self.set_uplink_loss(0)
        for name in self.server_names:
            self.set_wireguard_up(name, True)

    def window_seconds(self, pings: int) -> int:
        """Given a number of pings per target, return the whole seconds
        (PromQL ranges are whole seconds) the lab's probers take to send them."""
        return math.ceil(pings * parse_duration(self.ping_interval) - 1e-9)

    def config_dict(self) -> dict[str, Any]:
        """Given a lab, return the default wg-failover config pointing at it
        (compressed cadence: windows of a few hundred pings suit a lab whose
        probers ping every 200 ms and whose Prometheus scrapes every second;
        see MIN_WINDOW_PINGS)."""
        return {
            "config_dir": str(self.config_dir),
            "active_link": str(self.active_link),
            "state_dir": str(self.state_dir),
            "restart_command": self.restart_command,
            "textfile_dir": str(self.textfile_dir),
            "servers": {n: {"endpoint": self.endpoint_ip[n]} for n in self.server_names},
            "prometheus": {"url": self.prometheus.url if self.prometheus else "http://127.0.0.1:9", "timeout": 5},
            "failover": {"window": f"{self.window_seconds(FAILOVER_WINDOW_PINGS)}s"},
            "health": {
                "threshold": 0.15,
                "max_failures": 3,
                "window": f"{self.window_seconds(HEALTH_WINDOW_PINGS)}s",
                "min_window": self.clean_window,
                "selector": f'job="{self.internal_job}"',
            },
        }

    def write_config(self, path: Path | str, **overrides: Any) -> Path:
        """Given a path and overrides (nested dicts merge, e.g.
        health={"threshold": 0.3}; "health.threshold" style keys via
        **{...}; None removes a key), write the wg-failover TOML config for
        this lab and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_toml(merge(self.config_dict(), overrides)))
        return path

    # --------------------------------------------------------------- teardown
    def teardown(self) -> None:
        """Given a lab in any state (even half built), remove everything it
        created; safe to call more than once."""
        with self._teardown_lock:
            if self._torn_down:
                return
            self._torn_down = True
        # Stop in reverse order of start so nothing scrapes or pings a
        # vanished peer for long; each step is independent of the others.
        own_prometheus = self.prometheus if self._owns_prometheus else None
        for comp in (own_prometheus, self.internal_prober, self.external_prober):
            if comp is not None:
                try:
                    comp.stop()
                except Exception as exc:  # noqa: BLE001 - keep tearing down
                    print(f"wglab: stopping {comp!r} failed: {exc}", file=sys.stderr)
        wireguard_pidfile = self.workdir / f"{self.client_iface}.pid"
        client_pid = wireguard.read_pidfile(wireguard_pidfile)
        if client_pid is not None:
            processes.kill_pid(client_pid)
        for pid in self._server_pids.values():
            processes.kill_pid(pid)
        record = LabRecord(self.lab_id, os.getpid(), None if self.keep_workdir else self.workdir)
        cleanup_lab(record)
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.teardown)
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def __enter__(self) -> Lab:
        try:
            return self.up()
        except BaseException:
            self.teardown()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()
