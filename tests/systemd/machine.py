"""The pieces of the systemd suite: a Prometheus gate inside the VPN
namespace, and the two ways of installing the units into the container
(the plain files of contrib/systemd/ as on Debian, and the NixOS module
evaluated with lib.evalModules and rendered to unit files).

The container lives in the lab's VPN client namespace: its tunnel unit
brings up the WireGuard interface the lab's internal prober pings through,
and the lab's servers are reachable over the lab's router. Prometheus runs
on the host's loopback, out of the namespace's reach; the gate listens on
the namespace's loopback and relays to it, accepting only requests that
carry the bearer token, so a run that did not read its credentials cannot
measure anything.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project supports 3.9+
    import tomli as tomllib

from tests.nix_module import config_file, evaluate_module
from tests.systemd.render import render_units
from wgfailover.state import CheckRecord, StateDir
from wglab.container import SystemdContainer
from wglab.forward import setns
from wglab.lab import INTERNET_ADDRESSES, Lab, merge, to_toml

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRIB = REPO_ROOT / "contrib" / "systemd"
UNIT_DIR = Path("/etc/systemd/system")
SERVER_CONFIG_DIR = "/etc/wireguard/servers"
TOKEN_PATH = "/etc/wg-failover/prometheus-token"
# The server wg-select finds recorded at boot (as after an earlier boot).
RECORDED_SERVER = "server2"
# The plain units' instances: wg0 runs the tunnel the scenarios drive; wg1
# only shares the boot, to show two instances keep their state and
# textfiles apart (its own server recorded, a health check that never
# fails over, a restart that restarts nothing).
INSTANCE = "wg0"
SECOND_INSTANCE = "wg1"
SECOND_RECORDED_SERVER = "server3"
# The NixOS flavour's second instance runs no WireGuard: its tunnel unit is a stand-in.
SECOND_TUNNEL_UNIT = "wg1-tunnel"
# A path outside every ReadWritePaths=: the sandbox must refuse it.
DENIED_PATH = "/etc/wg-failover/written-from-the-sandbox"
# Short cadence: checks every 5 s, each judging at most 10 s of data, two bad
# checks in a row fail over. The first check waits until the tunnel has
# carried 10 s of pings (boot is a second or two).
HEALTH_SETTINGS = {
    "threshold": 0.15,
    "max_failures": 2,
    "window": "10s",
    "min_window": "5s",
}
TIMER = {"OnBootSec": "15s", "OnUnitActiveSec": "5s", "RandomizedDelaySec": "0", "AccuracySec": "1s"}
# A name that never resolves: with no DNS server in the namespace the
# resolver answers "try again", which is what a dead DNS at boot looks like.
UNRESOLVABLE_ENDPOINT = "vpn-server-gone.invalid:51820"


# ------------------------------------------------------------------ the gate
@dataclass
class GateLog:
    """Requests the gate saw: with the right token, and without."""

    authorized: int = 0
    refused: list[str] = field(default_factory=list)


class PrometheusGate:
    """An HTTP relay listening on the loopback of a network namespace and
    forwarding to Prometheus on the host's loopback, only for requests with
    `Authorization: Bearer TOKEN`; others get 401."""

    def __init__(self, netns: str, upstream: str, token: str) -> None:
        self.netns = netns
        self.upstream = upstream.rstrip("/")
        self.token = token
        self.log = GateLog()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Given a started gate, return its URL as seen inside the namespace."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        """Given a gate, listen inside its namespace and serve in a thread."""
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {gate.token}":
                    gate.log.refused.append(f"{self.command} {self.path}")
                    self.send_error(401, "missing or wrong bearer token")
                    return
                gate.log.authorized += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                url = gate.upstream + self.path  # always the http://127.0.0.1 Prometheus
                request = urllib.request.Request(url, data=body, method=self.command)  # noqa: S310
                if self.headers.get("Content-Type"):
                    request.add_header("Content-Type", self.headers["Content-Type"])
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
                        status, payload, kind = response.status, response.read(), response.headers["Content-Type"]
                except urllib.error.HTTPError as error:
                    status, payload, kind = error.code, error.read(), error.headers["Content-Type"]
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _relay  # noqa: N815 - the names http.server calls

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = listening_socket_in(self.netns)
        server.server_address = server.socket.getsockname()
        self._server = server
        threading.Thread(target=server.serve_forever, name="prometheus-gate", daemon=True).start()

    def stop(self) -> None:
        """Given a gate, stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def listening_socket_in(netns: str) -> socket.socket:
    """Given a namespace name, return a TCP socket listening on its
    127.0.0.1 at a free port. A short-lived thread enters the namespace to
    create it (setns moves only the calling thread; a socket keeps the
    namespace it was made in), so this process stays where it is."""
    made: dict[str, Any] = {}

    def make() -> None:
        try:
            setns(netns)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            made["socket"] = sock
        except OSError as error:
            made["error"] = error

    thread = threading.Thread(target=make, name=f"socket-in-{netns}")
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    return made["socket"]


# --------------------------------------------------------- installed package
PACKAGE_PREFIX = Path("/opt/wg-failover")


def install_package(box: SystemdContainer) -> Path:
    """Given a powered-off container, install this checkout into its image
    as a Debian administrator would, and return the directory of the
    commands inside: a virtualenv of Debian's python3 (using its click and
    requests) in /opt/wg-failover, with this checkout installed editable,
    so the units run exactly the code under test.

    Not the test run's own virtualenv: its interpreter may live under /root
    or /home (pyenv), which ProtectHome=yes hides from the units."""
    box.run_in_image(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(PACKAGE_PREFIX)])
    pip = [str(PACKAGE_PREFIX / "bin" / "pip"), "install", "--quiet", "--no-deps", "--no-build-isolation"]
    box.run_in_image([*pip, "--no-index", "--editable", str(REPO_ROOT)])
    return PACKAGE_PREFIX / "bin"


# ---------------------------------------------------------------- installing
@dataclass(frozen=True)
class ToolUnits:
    """The names of one instance's units: plain (`wg-select.service`) or
    templated (`wg-select@wg0.service`)."""

    select: str
    failover: str
    health: str
    timer: str

    @classmethod
    def named(cls, instance: str | None, separator: str = "@") -> ToolUnits:
        """Given an instance (None: the single, untemplated set) and how its
        name joins the unit's ("@" for the plain templates, "-" for the
        NixOS module's named instances), return its unit names."""
        at = "" if instance is None else f"{separator}{instance}"
        return cls(
            f"wg-select{at}.service",
            f"wg-failover{at}.service",
            f"wg-health-check{at}.service",
            f"wg-health-check{at}.timer",
        )

    @property
    def services(self) -> tuple[str, str, str]:
        return (self.select, self.failover, self.health)


@dataclass
class SecondInstance:
    """A second instance booted beside the first, without a WireGuard tunnel of its own."""

    instance: str
    units: ToolUnits
    active_link: str
    state_dir: str
    recorded_server: str


@dataclass
class Installed:
    """What one way of installing the units put into the container."""

    flavour: str
    instance: str | None  # the config's `instance` (None: unset)
    units: ToolUnits
    tunnel_unit: str  # e.g. "wg-quick@wg0.service"
    interface: str  # the WireGuard interface the tunnel unit brings up
    active_link: str
    state_dir: str
    textfile_dir: str
    config_dir: str
    # The config file each unit (by full name) runs with, inside the container.
    unit_configs: dict[str, str]
    token: str
    second: SecondInstance | None = None


def install_lab_files(box: SystemdContainer, lab: Lab, token: str) -> None:
    """Given a mounted container and a lab, install what an administrator
    provides before the units: one WireGuard config per server (root-only),
    the Prometheus token (root-only), an empty resolver (no DNS in the lab),
    and the node_exporter textfile directory."""
    for name in lab.server_names:
        box.install_file(f"{SERVER_CONFIG_DIR}/{name}", (lab.config_dir / name).read_text(), 0o600)
    box.install_file(TOKEN_PATH, token + "\n", 0o600)
    box.install_file("/etc/resolv.conf", "nameserver 127.0.0.1\n")
    box.remove(DENIED_PATH)


def record_server(box: SystemdContainer, state_dir: str, server: str) -> None:
    """Given a mounted container, a state directory and a server, record
    the server there, as an earlier boot would have left it."""
    for directory in (box.path("/var/lib/wg-failover"), box.path(state_dir)):
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    box.install_file(f"{state_dir}/current", server + "\n", 0o600)


def tool_settings(lab: Lab, gate: PrometheusGate, failover_unit: str, **paths: Any) -> dict[str, Any]:
    """Given the lab, the gate, the unit a failed health check starts and
    the install's paths, return the wg-failover settings both installs share."""
    settings = merge(
        lab.config_dict(),
        {
            "servers": {name: {"endpoint": lab.endpoint_ip[name]} for name in lab.server_names},
            "prometheus": {"url": gate.url, "timeout": 5, "bearer_token_file": TOKEN_PATH},
            "failover": {"window": "10s"},
            "health": {**HEALTH_SETTINGS, "failover_command": ["systemctl", "start", failover_unit]},
        },
    )
    return merge(settings, paths)


def install_contrib(box: SystemdContainer, lab: Lab, gate: PrometheusGate, scripts: Path) -> Installed:
    """Given a mounted, powered-off container, install the plain units of
    contrib/systemd/ as its README says for Debian: the commands in
    /usr/local/bin (links to this checkout's installed scripts, as `pipx
    install --global` makes them), the templates in /etc/systemd/system,
    the drop-in for wg-quick@wg0 (Debian's own wg-quick@.service runs the
    tunnel), /etc/wg-failover/wg0.toml with `instance = "wg0"` and the
    instance's defaults for state_dir and restart_command, the timer
    enabled. A second instance, wg1, gets its config, its recorded server,
    wg-select@wg1 at boot and an enabled timer, but no tunnel. Test-only
    drop-ins shorten the timers and add one write outside the sandbox's
    writable paths."""
    install_lab_files(box, lab, gate.token)
    for command in ("wg-select", "wg-failover", "wg-health-check"):
        box.install_symlink(f"/usr/local/bin/{command}", scripts / command)
    for unit in sorted(CONTRIB.glob("*.service")) + sorted(CONTRIB.glob("*.timer")):
        box.install_file(UNIT_DIR / unit.name, unit.read_text())
    box.install_file(
        UNIT_DIR / f"wg-quick@{INSTANCE}.service.d/wg-failover.conf",
        (CONTRIB / "wg-quick@.service.d/wg-failover.conf").read_text(),
    )
    units = ToolUnits.named(INSTANCE)
    # One empty OnBootSec= clears every trigger of the timer (OnUnitActiveSec=
    # too: they are one list), so the reset comes once, before both values.
    # On the template: every instance's timer gets the test cadence.
    timer_lines = "".join(f"{key}={value}\n" for key, value in TIMER.items())
    box.install_file(UNIT_DIR / "wg-health-check@.timer.d/test-cadence.conf", f"[Timer]\nOnBootSec=\n{timer_lines}")
    box.install_file(
        UNIT_DIR / f"{units.select}.d/test-denied-write.conf",
        f"[Service]\nExecStartPre=-/bin/sh -c 'echo x > {DENIED_PATH}'\n",
    )
    textfile_dir = "/var/lib/prometheus/node-exporter"
    settings = instance_settings(lab, gate, INSTANCE, textfile_dir)
    state_dir = f"/var/lib/wg-failover/{INSTANCE}"
    config = f"/etc/wg-failover/{INSTANCE}.toml"
    box.install_file(config, to_toml(settings), 0o644)
    record_server(box, state_dir, RECORDED_SERVER)
    second = install_second_instance(box, lab, gate, textfile_dir)
    box.path(textfile_dir).mkdir(parents=True, exist_ok=True)
    # What `systemctl enable` does, done on the image before it boots.
    systemctl_root(box, "enable", units.timer, second.units.timer, f"wg-quick@{INSTANCE}.service")
    return Installed(
        flavour="contrib",
        instance=INSTANCE,
        units=units,
        tunnel_unit=f"wg-quick@{INSTANCE}.service",
        interface=INSTANCE,
        active_link=settings["active_link"],
        state_dir=state_dir,
        textfile_dir=textfile_dir,
        config_dir=SERVER_CONFIG_DIR,
        unit_configs={unit: config for unit in units.services},
        token=gate.token,
        second=second,
    )


def instance_settings(
    lab: Lab, gate: PrometheusGate, instance: str, textfile_dir: str, **overrides: Any
) -> dict[str, Any]:
    """Given the lab, the gate, a plain-template instance, the shared
    textfile directory and overrides, return the instance's settings, as
    contrib/systemd/README.md writes them: `instance` set, the link its
    wg-quick@ reads, state_dir and restart_command left to the instance's
    defaults (/var/lib/wg-failover/INSTANCE, wg-quick@INSTANCE.service)."""
    settings = tool_settings(
        lab,
        gate,
        ToolUnits.named(instance).failover,
        instance=instance,
        config_dir=SERVER_CONFIG_DIR,
        active_link=f"/etc/wireguard/{instance}.conf",
        textfile_dir=textfile_dir,
        state_dir=None,
        restart_command=None,
    )
    return merge(settings, overrides)


def install_second_instance(box: SystemdContainer, lab: Lab, gate: PrometheusGate, textfile_dir: str) -> SecondInstance:
    """Given a container with the templates installed, add instance wg1
    sharing the textfile directory: its config, its recorded server, and
    wg-select@wg1 wanted at boot (no tunnel pulls it in). Its checks
    measure the lab's tunnel but never fail over (threshold 1), and its
    restart restarts nothing, so it cannot disturb wg0's scenarios."""
    units = ToolUnits.named(SECOND_INSTANCE)
    state_dir = f"/var/lib/wg-failover/{SECOND_INSTANCE}"
    settings = instance_settings(
        lab, gate, SECOND_INSTANCE, textfile_dir, restart_command=["true"], health={"threshold": 1.0}
    )
    box.install_file(f"/etc/wg-failover/{SECOND_INSTANCE}.toml", to_toml(settings), 0o644)
    record_server(box, state_dir, SECOND_RECORDED_SERVER)
    box.install_symlink(UNIT_DIR / f"multi-user.target.wants/{units.select}", UNIT_DIR / "wg-select@.service")
    return SecondInstance(SECOND_INSTANCE, units, settings["active_link"], state_dir, SECOND_RECORDED_SERVER)


def systemctl_root(box: SystemdContainer, *args: str) -> None:
    """Given systemctl arguments, run them against the container's image
    from the host (`systemctl --root`), for a container that is not running."""
    subprocess.run(["systemctl", f"--root={box.root}", *args], check=True, capture_output=True, text=True)


# --------------------------------------------------------------- NixOS module
STORE_PATH = re.compile(r"/nix/store/[0-9a-z]{32}-[A-Za-z0-9._+?=-]+")


def build_in_image(box: SystemdContainer, path: str) -> None:
    """Given a file the module rendered (a config, or the runCommand that
    checks one at build time), put what Nix would build at that path into
    the image: a checked config is built there, by the check's own script
    run with the installed tool, as the Nix builder would run it."""
    text = Path(path).read_text()
    if not text.startswith('{"runCommand"'):
        box.install_file(path, text)
        return
    script = json.loads(text)["script"]
    for needed in STORE_PATH.findall(script):
        box.install_file(needed, Path(needed).read_text())
    box.remove(path)
    box.path(path).parent.mkdir(parents=True, exist_ok=True)
    box.run_in_image(["/bin/sh", "-e", "-c", script], env={"out": path})


def install_nixos(box: SystemdContainer, lab: Lab, gate: PrometheusGate, scripts: Path, lib: Path) -> Installed:
    """Given a mounted, powered-off container with the package installed,
    install the units that nixos-module.nix declares for a typical
    configuration: evaluated with lib.evalModules (tests/nix_module.py),
    the package at the installed tool's prefix, rendered to unit files as
    NixOS writes them, each config built by the module's build-time check.
    The tunnel unit is the module's default name, `wg`, running wg-quick on
    the active link (as nixpkgs' networking.wg-quick does with `configFile`)."""
    install_lab_files(box, lab, gate.token)
    record_server(box, "/var/lib/wg-failover", RECORDED_SERVER)
    tool_units = ToolUnits.named(None)
    prefix = scripts.parent
    # The tunnel unit reads the module's default link: ask the module for
    # it first, then declare the tunnel unit on it.
    first = evaluate_module(nixos_configuration(lab, gate, None), nixpkgs_lib=lib, package_dir=prefix)
    link = rendered_settings(first)["active_link"]
    evaluated = evaluate_module(nixos_configuration(lab, gate, link), nixpkgs_lib=lib, package_dir=prefix)
    if evaluated["failedAssertions"]:
        raise RuntimeError(f"the module's assertions failed: {evaluated['failedAssertions']}")
    units = render_units(evaluated["services"], evaluated["timers"])
    for name, text in units.files.items():
        box.install_file(UNIT_DIR / name, text)
    for link_path, target in units.links.items():
        box.install_symlink(UNIT_DIR / link_path, target)
    box.install_file(
        UNIT_DIR / f"{tool_units.select}.d/test-denied-write.conf",
        f"[Service]\nExecStartPre=-/bin/sh -c 'echo x > {DENIED_PATH}'\n",
    )
    unit_configs = {}
    for unit in tool_units.services:
        path = str(config_file(evaluated["services"][unit.removesuffix(".service")]))
        build_in_image(box, path)
        unit_configs[unit] = path
    build_in_image(box, evaluated["etcConfig"])
    box.install_symlink("/etc/wg-failover/config.toml", evaluated["etcConfig"])
    box.install_file("/etc/tmpfiles.d/wg-failover.conf", "".join(f"{rule}\n" for rule in evaluated["tmpfiles"]))
    second = install_nixos_second_instance(box, evaluated)
    rendered = tomllib.loads(box.path(unit_configs[tool_units.failover]).read_text())
    return Installed(
        flavour="nixos",
        instance=rendered.get("instance"),
        units=tool_units,
        tunnel_unit="wg.service",
        interface=interface_of(rendered["active_link"]),
        active_link=rendered["active_link"],
        state_dir=rendered["state_dir"],
        textfile_dir=rendered["textfile_dir"],
        config_dir=SERVER_CONFIG_DIR,
        unit_configs=unit_configs,
        token=gate.token,
        second=second,
    )


def install_nixos_second_instance(box: SystemdContainer, evaluated: Mapping[str, Any]) -> SecondInstance:
    """Given a container with the module's units installed and the
    evaluation, put into the image what `services.wg-failover.instances.wg1`
    needs beyond its units: each unit's built config, its /etc file and its
    recorded server."""
    units = ToolUnits.named(SECOND_INSTANCE, separator="-")
    for unit in units.services:
        build_in_image(box, str(config_file(evaluated["services"][unit.removesuffix(".service")])))
    etc_file = evaluated["etc"][f"wg-failover/{SECOND_INSTANCE}.toml"]
    build_in_image(box, etc_file)
    box.install_symlink(f"/etc/wg-failover/{SECOND_INSTANCE}.toml", etc_file)
    rendered = tomllib.loads(
        box.path(str(config_file(evaluated["services"][units.failover.removesuffix(".service")]))).read_text()
    )
    record_server(box, rendered["state_dir"], SECOND_RECORDED_SERVER)
    return SecondInstance(
        SECOND_INSTANCE, units, rendered["active_link"], rendered["state_dir"], SECOND_RECORDED_SERVER
    )


def nixos_configuration(lab: Lab, gate: PrometheusGate, link: str | None) -> dict[str, Any]:
    """Given the lab, the gate and the
    active link (None: not known yet), return the NixOS configuration the
    suite evaluates: the lab's servers and settings, the test cadence, and
    the user's tunnel unit `wg` (when the link is known)."""
    settings = tool_settings(
        lab,
        gate,
        ToolUnits.named(None).failover,
        config_dir=SERVER_CONFIG_DIR,
        textfile_dir="/var/lib/prometheus-node-exporter",
        # Left to the module: active_link, state_dir, restart_command.
        active_link=None,
        state_dir=None,
        restart_command=None,
    )
    del settings["servers"]  # the module renders them from `servers`
    # The second instance: its own units, state, link and config by the
    # module's defaults for a named instance; the lab's tunnel probes
    # (explicit selector), a check that never fails over (threshold 1) and a
    # restart that restarts nothing, so it cannot disturb the scenarios.
    second_settings = merge(
        settings,
        {
            "restart_command": ["true"],
            "health": {
                "threshold": 1.0,
                "failover_command": ["systemctl", "start", ToolUnits.named(SECOND_INSTANCE, separator="-").failover],
            },
        },
    )
    services = {SECOND_TUNNEL_UNIT: second_tunnel_declaration()}
    if link is not None:
        services["wg"] = tunnel_unit_declaration(link)
    servers = {name: {"endpoint": lab.endpoint_ip[name]} for name in lab.server_names}
    timer = {
        "onBootSec": TIMER["OnBootSec"],
        "onUnitActiveSec": TIMER["OnUnitActiveSec"],
        "randomizedDelaySec": TIMER["RandomizedDelaySec"],
    }
    accuracy = {"timerConfig": {"AccuracySec": TIMER["AccuracySec"]}}
    return {
        "systemd": {
            "services": services,
            "timers": {"wg-health-check": accuracy, f"wg-health-check-{SECOND_INSTANCE}": accuracy},
        },
        "services": {
            "wg-failover": {
                "enable": True,
                "servers": servers,
                "timer": timer,
                "settings": settings,
                "instances": {
                    SECOND_INSTANCE: {
                        "tunnelUnit": SECOND_TUNNEL_UNIT,
                        "servers": servers,
                        "timer": timer,
                        "settings": second_settings,
                    }
                },
            }
        },
    }


def second_tunnel_declaration() -> dict[str, Any]:
    """Return the second instance's tunnel unit: a stand-in that brings up
    no WireGuard interface (the lab has one client tunnel), but is a real
    unit the module wires: wanted at boot, it pulls in wg-select-wg1."""
    return {
        "description": "Stand-in for a second tunnel (no interface)",
        "wantedBy": ["multi-user.target"],
        "serviceConfig": {"Type": "oneshot", "RemainAfterExit": True, "ExecStart": "/bin/true", "Restart": "no"},
    }


def rendered_settings(evaluated: Mapping[str, Any]) -> dict[str, Any]:
    """Given the evaluation's result, return the settings the module
    rendered for wg-failover.service (from the TOML its check copies)."""
    text = config_file(evaluated["services"]["wg-failover"]).read_text()
    if text.startswith('{"runCommand"'):
        toml_file = next(p for p in STORE_PATH.findall(json.loads(text)["script"]) if p.endswith(".toml"))
        text = Path(toml_file).read_text()
    return tomllib.loads(text)


def interface_of(config_path: str) -> str:
    """Given a wg-quick config path, return the interface wg-quick names
    after it (the file name without .conf)."""
    return Path(config_path).name.removesuffix(".conf")


def tunnel_unit_declaration(link: str) -> dict[str, Any]:
    """Given the active link, return the user's own tunnel unit, `wg`, as a NixOS
    configuration declares it: wg-quick up/down on the active link, like
    nixpkgs' networking.wg-quick with `configFile`. The module adds
    wg-select, Restart= and OnFailure= to it."""
    return {
        "description": "WireGuard tunnel from the active server's config",
        "after": ["network.target"],
        "wantedBy": ["multi-user.target"],
        "environment": {"WG_ENDPOINT_RESOLUTION_RETRIES": "5"},
        "serviceConfig": {
            "Type": "oneshot",
            "RemainAfterExit": True,
            # The container runs Debian's systemd 252, where a unit restarted
            # automatically never passes through "failed", so the module's
            # Restart=on-failure default would hold OnFailure= back (systemd
            # 254 and later, as on NixOS 24.05+, fire it at every failure).
            "Restart": "no",
            "ExecStart": f"/usr/bin/wg-quick up {link}",
            "ExecStop": f"/usr/bin/wg-quick down {link}",
        },
    }


@contextmanager
def gate_in(lab: Lab, token: str) -> Iterator[PrometheusGate]:
    """Given a lab and a token, yield a started gate in its VPN namespace."""
    gate = PrometheusGate(lab.vpn_ns, lab.prometheus_url, token)
    gate.start()
    try:
        yield gate
    finally:
        gate.stop()


# ------------------------------------------------------------ the booted box
@dataclass
class Machine:
    """A booted container with one install of the units, in a lab."""

    box: SystemdContainer
    lab: Lab
    gate: PrometheusGate
    installed: Installed

    def state(self) -> StateDir:
        """Given a machine, return its state directory, read from the host."""
        return StateDir(self.box.path(self.installed.state_dir))

    def current(self) -> str | None:
        """Given a machine, return the server recorded in `current`."""
        try:
            return self.box.path(f"{self.installed.state_dir}/current").read_text().strip() or None
        except FileNotFoundError:
            return None

    def link_target(self) -> str:
        """Given a machine, return where its active link points, read inside
        (the container's /run is its own tmpfs, not in the overlay)."""
        return self.box.run(["readlink", self.installed.active_link]).stdout.strip()

    def tunnel_server(self) -> str | None:
        """Given a machine, return the lab server its WireGuard interface
        talks to now (None: no interface or no peer)."""
        result = self.box.run(["wg", "show", self.installed.interface, "endpoints"], check=False)
        by_endpoint = {self.lab.endpoint(name): name for name in self.lab.server_names}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in by_endpoint:
                return by_endpoint[parts[1]]
        return None

    def ping_through_tunnel(self) -> bool:
        """Given a machine, return whether a ping from inside it to the lab's
        internet address gets an answer (only the tunnel routes there)."""
        argv = ["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", INTERNET_ADDRESSES[0]]
        return self.box.run(argv, check=False).returncode == 0

    def cursor(self) -> str:
        """Given a machine, return the journal cursor of its latest entry."""
        out = self.box.run(["journalctl", "-n", "0", "--show-cursor", "--no-pager"]).stdout
        return out.strip().rsplit("-- cursor: ", 1)[1]

    def journal(self, *units: str, after: str | None = None) -> str:
        """Given units (and a cursor), return their journal lines of this
        boot, systemd's own lines about them included."""
        args = [f"--unit={unit}" for unit in units]
        if after:
            args.append(f"--after-cursor={after}")
        return self.box.journal(*args)

    def healthy_check_since(self, since: float) -> CheckRecord | None:
        """Given a unix time, return the last health check if it ran after
        it, judged the tunnel healthy and left the counter at 0."""
        state = self.state()
        record = state.read_last_check()
        threshold = HEALTH_SETTINGS["threshold"]
        assert isinstance(threshold, float)
        if record is None or record.time <= since or record.loss is None or record.loss > threshold:
            return None
        return record if state.read_failures() == 0 else None


def lines_matching(journal: str, *patterns: str) -> list[str]:
    """Given journal text and regular expressions, return the first line
    matching each pattern, in the order given; raise AssertionError naming
    the first pattern that has no match after the previous one's line."""
    lines = journal.splitlines()
    found, position = [], 0
    for pattern in patterns:
        for index in range(position, len(lines)):
            if re.search(pattern, lines[index]):
                found.append(lines[index])
                position = index + 1
                break
        else:
            raise AssertionError(f"no journal line matching {pattern!r} after {found[-1:]!r}:\n{journal}")
    return found
