"""The packaging around the Python tool: Nix files, systemd units, docs.

Each check runs the real tool that judges the file (nix-instantiate,
systemd-analyze, promtool) and skips, saying which tool is missing, where it
is not installed. The NixOS module is evaluated for real with nixpkgs'
lib.evalModules when WGF_NIXPKGS_LIB points at a nixpkgs `lib` directory
(e.g. a checkout of nix-community/nixpkgs.lib: WGF_NIXPKGS_LIB=/path/lib).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "contrib" / "systemd"
SYSTEM_UNIT_DIR = Path("/usr/lib/systemd/system")

TEXTFILE_METRICS = [
    "vpn_server_info",
    "wg_failover_switches",
    "wg_failover_last_switch_timestamp_seconds",
    "wg_failover_server_loss_ratio",
    "wg_failover_health_consecutive_failures",
    "wg_failover_tunnel_loss_ratio",
    "wg_failover_last_check_timestamp_seconds",
]

NIX_FILES = sorted(
    path.relative_to(ROOT) for path in ROOT.rglob("*.nix") if ".git" not in path.parts and "result" not in path.parts
)
UNIT_FILES = sorted(path.relative_to(UNITS) for path in UNITS.glob("*") if path.suffix in (".service", ".timer"))
DROP_INS = sorted(path.relative_to(UNITS) for path in UNITS.glob("*.d/*.conf"))


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


# --- Nix ---------------------------------------------------------------------


def test_the_nix_files_this_test_knows_about_exist() -> None:
    assert {"nixos-module.nix", "package.nix", "flake.nix"} <= {str(p) for p in NIX_FILES}


@pytest.mark.parametrize("nix_file", NIX_FILES, ids=str)
def test_nix_file_parses(nix_file: Path) -> None:
    nix_instantiate = require("nix-instantiate")
    result = run([nix_instantiate, "--parse", str(ROOT / nix_file)])
    assert result.returncode == 0, result.stderr


def test_package_nix_lists_every_runtime_dependency_of_pyproject() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    package_nix = (ROOT / "package.nix").read_text()
    for requirement in project["dependencies"]:
        name = re.split(r"[^A-Za-z0-9_.-]", requirement, maxsplit=1)[0]
        nix_name = re.sub(r"[._]", "-", name.lower())
        assert re.search(rf"\b{re.escape(nix_name)}\b", package_nix), (
            f"{requirement!r} from pyproject.toml is missing from package.nix"
        )


# --- systemd -----------------------------------------------------------------


def make_unit_root(tmp_path: Path) -> Path:
    """Given a temp dir, return a file system root for `systemd-analyze --root`.

    It holds the system's own units (for targets like sysinit.target), ours
    in /etc/systemd/system, a stand-in wg-quick@.service for the drop-in to
    attach to, and a stub executable for every Exec*= binary, since verify
    insists each exists and is executable.
    """
    if not SYSTEM_UNIT_DIR.is_dir():
        pytest.skip(f"{SYSTEM_UNIT_DIR} is missing; systemd's own units are needed")
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNIT_DIR, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    shutil.copytree(UNITS, etc, ignore=shutil.ignore_patterns("*.md"))
    # Shaped like Debian's wireguard-tools unit, so the test needs no WireGuard.
    (etc / "wg-quick@.service").write_text(
        "[Unit]\nDescription=WireGuard via wg-quick(8) for %I\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        "ExecStart=/usr/bin/wg-quick up %i\nExecStop=/usr/bin/wg-quick down %i\n"
        "Environment=WG_ENDPOINT_RESOLUTION_RETRIES=infinity\n"
    )
    for unit in etc.rglob("*"):
        if not unit.is_file():
            continue
        for match in re.finditer(r"^Exec\w*=[-@:+!]*(/\S+)", unit.read_text(), re.MULTILINE):
            binary = root / match.group(1).lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text("#!/bin/sh\nexit 0\n")
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    systemd_analyze = require("systemd-analyze")
    return run([systemd_analyze, "verify", "--man=no", f"--root={root}", unit])


@pytest.mark.parametrize("unit", UNIT_FILES, ids=str)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    require("systemd-analyze")
    result = verify(make_unit_root(tmp_path), str(unit))
    # verify exits 0 on unknown keys but prints them: any output is a finding.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("drop_in", DROP_INS, ids=str)
def test_drop_in_passes_systemd_analyze_verify_on_an_instance(drop_in: Path, tmp_path: Path) -> None:
    require("systemd-analyze")
    instance = drop_in.parent.name.removesuffix(".d").replace("@.", "@wg0.")
    result = verify(make_unit_root(tmp_path), instance)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_tunnel_drop_in_wires_the_original_hooks() -> None:
    drop_in = (UNITS / "wg-quick@.service.d" / "wg-failover.conf").read_text()
    for line in [
        "OnFailure=wg-failover.service",
        "Restart=on-failure",
        "RestartSec=30s",
        "Wants=wg-select.service",
        "After=wg-select.service",
    ]:
        assert re.search(rf"^{re.escape(line)}$", drop_in, re.MULTILINE), line


def test_every_hardening_line_in_the_plain_units_is_commented() -> None:
    """Each sandbox line sits in a block (lines up to a blank) that a comment explains."""
    hardening = re.compile(
        r"^(Protect|Private|Restrict|NoNewPrivileges|Capability|Ambient|SystemCall|"
        r"LockPersonality|MemoryDeny|UMask|DynamicUser|ReadWritePaths|StateDirectory)"
    )
    uncommented = []
    for unit in sorted(UNITS.glob("*.service")):
        explained = False
        for line in unit.read_text().splitlines():
            if not line or line.startswith("["):
                explained = False
            elif line.startswith("#"):
                explained = True
            elif hardening.match(line) and not explained:
                uncommented.append(f"{unit.name}: {line}")
    assert uncommented == []


# --- Prometheus and Grafana --------------------------------------------------


def test_alert_rules_pass_promtool() -> None:
    promtool = require("promtool")
    result = run([promtool, "check", "rules", str(ROOT / "docs" / "alert-rules.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def load_dashboard() -> dict[str, Any]:
    return json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [annotation["expr"] for annotation in dashboard["annotations"]["list"]]
    return queries


def test_dashboard_shows_every_textfile_metric() -> None:
    text = " ".join(dashboard_queries(load_dashboard()))
    missing = [metric for metric in TEXTFILE_METRICS if not re.search(rf"\b{metric}\b", text)]
    assert missing == []


def test_dashboard_marks_switches_as_annotations() -> None:
    annotations = load_dashboard()["annotations"]["list"]
    assert any("vpn_server_info" in a["expr"] and a["enable"] for a in annotations)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = require("promtool")
    variables = {
        "$__rate_interval": "5m",
        "$instance": ".*",
        "$external_job": "smokeping",
        "$internal_job": "vpn-prober",
    }
    rules = []
    for number, query in enumerate(dashboard_queries(load_dashboard())):
        for variable, value in variables.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"unknown dashboard variable in {query}"
        rules.append({"record": f"dashboard:query{number}", "expr": query})
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(rule_file)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- The NixOS module, evaluated ---------------------------------------------

# Evaluates nixos-module.nix with the real lib.evalModules, a stub `pkgs`
# (formats.toml's value type as nixpkgs defines it, but `generate` writes
# JSON so the test can read back exactly what was rendered) and stub
# declarations of the NixOS options the module sets.
HARNESS = r"""
{ libPath, modulePath, configJSON }:
let
  lib = import libPath;
  inherit (lib) mkOption types;
  stubDrv = name: { type = "derivation"; inherit name; outPath = "/stub/${name}"; meta = { }; };
  tomlValue = types.nullOr (types.oneOf [ types.bool types.int types.float types.str types.path
    (types.attrsOf tomlValue) (types.listOf tomlValue) ]) // { description = "TOML value"; };
  pkgs = {
    formats.toml = { }: {
      type = types.attrsOf tomlValue;
      generate = name: value: builtins.toFile name (builtins.toJSON value);
    };
    callPackage = _: _: stubDrv "wg-failover";
    prometheus-smokeping-prober = stubDrv "prometheus-smokeping-prober";
    iproute2 = stubDrv "iproute2";
    wireguard-tools = stubDrv "wireguard-tools";
  };
  utils.escapeSystemdExecArgs = lib.concatStringsSep " ";
  # Like nixpkgs' unitOption: lists concatenate, scalars must agree.
  unitScalar = types.oneOf [ types.bool types.int types.str types.path ];
  unitOption = types.either unitScalar (types.listOf unitScalar);
  strs = mkOption { type = types.listOf types.str; default = [ ]; };
  unit = types.submodule {
    freeformType = types.attrsOf types.anything;
    options = {
      after = strs; before = strs; wants = strs; wantedBy = strs;
      path = mkOption { type = types.listOf types.package; default = [ ]; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      timerConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };
  stubOptions.options = {
    assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
    environment.etc = mkOption { type = types.attrsOf (types.attrsOf types.anything); default = { }; };
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    systemd.package = mkOption { type = types.package; default = stubDrv "systemd"; };
    systemd.tmpfiles.rules = strs;
    systemd.services = mkOption { type = types.attrsOf unit; default = { }; };
    systemd.timers = mkOption { type = types.attrsOf unit; default = { }; };
    services.prometheus.exporters.smokeping = {
      enable = mkOption { type = types.bool; default = false; };
      hosts = strs;
    };
  };
  inherit (lib.evalModules {
    modules = [
      stubOptions
      modulePath
      { _module.args = { inherit pkgs utils; }; }
      (builtins.fromJSON configJSON)
    ];
  }) config;
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  services = lib.mapAttrs (_: unit: unit // { path = map (p: p.name) unit.path; }) config.systemd.services;
  timers = config.systemd.timers;
  smokeping = config.services.prometheus.exporters.smokeping;
  etcConfig = config.environment.etc."wg-failover/config.toml".source;
  tmpfiles = config.systemd.tmpfiles.rules;
}
"""

BASE_CONFIG = {
    # The tunnel unit is the user's; the module only adds to it.
    "systemd": {"services": {"wg": {"script": "wg-quick up /run/wg-active.conf"}}},
    "services": {
        "wg-failover": {
            "enable": True,
            "servers": {
                "server1": {"endpoint": "203.0.113.10"},
                "server2": {"endpoint": "203.0.113.20"},
                "server3": {"endpoint": "203.0.113.30"},
            },
            "settings": {"prometheus": {"url": "https://prometheus.example.com"}},
        }
    },
}


def with_options(**options: object) -> dict[str, Any]:
    config = json.loads(json.dumps(BASE_CONFIG))
    config["services"]["wg-failover"].update(options)
    return config


Evaluate = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture(scope="module")
def evaluate(tmp_path_factory: pytest.TempPathFactory) -> Evaluate:
    nixpkgs_lib = os.environ.get("WGF_NIXPKGS_LIB")
    if not nixpkgs_lib:
        pytest.skip("WGF_NIXPKGS_LIB is not set (path of a nixpkgs lib/ directory)")
    nix_instantiate = require("nix-instantiate")
    harness = tmp_path_factory.mktemp("nix") / "harness.nix"
    harness.write_text(HARNESS)

    def evaluate(config: dict[str, Any]) -> dict[str, Any]:
        # --read-write-mode: the rendered configs (builtins.toFile) must
        # really be written so the test can read them back.
        result = run(
            [nix_instantiate, "--eval", "--strict", "--json", "--read-write-mode", str(harness),
             "--arg", "libPath", str(Path(nixpkgs_lib).resolve()),
             "--arg", "modulePath", str(ROOT / "nixos-module.nix"),
             "--argstr", "configJSON", json.dumps(config)]
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return evaluate


def rendered_config(service: dict[str, Any]) -> dict[str, Any]:
    path = service["serviceConfig"]["ExecStart"].split("--config ", 1)[1].split()[0]
    return json.loads(Path(path).read_text())


def test_module_wires_units_like_the_original(evaluate: Evaluate) -> None:
    result = evaluate(BASE_CONFIG)
    assert result["failedAssertions"] == []
    services = result["services"]

    select = services["wg-select"]
    assert select["before"] == ["wg.service"]
    assert select["wantedBy"] == ["wg.service"]
    assert select["serviceConfig"]["Type"] == "oneshot"
    assert select["serviceConfig"]["RemainAfterExit"] is True
    assert select["serviceConfig"]["ExecStart"].startswith("/stub/wg-failover/bin/wg-select --config ")

    failover = services["wg-failover"]["serviceConfig"]
    assert failover["Type"] == "oneshot"
    assert failover["TimeoutStartSec"] == "5min"
    assert failover["ExecStart"].endswith("--reason unit-failed")

    tunnel = services["wg"]
    assert tunnel["serviceConfig"] == {"Restart": "on-failure", "RestartSec": "30s"}
    assert tunnel["unitConfig"]["OnFailure"] == ["wg-failover.service"]
    assert tunnel["script"] == "wg-quick up /run/wg-active.conf"

    assert services["wg-health-check"]["after"] == ["wg.service"]
    timer = result["timers"]["wg-health-check"]
    assert timer["wantedBy"] == ["timers.target"]
    assert timer["timerConfig"] == {
        "OnBootSec": "2min",
        "OnUnitActiveSec": "1min",
        "RandomizedDelaySec": "10s",
    }
    assert "prometheus-smokeping-vpn" not in services


def test_module_renders_settings_and_servers(evaluate: Evaluate) -> None:
    config = with_options(servers={"server1": {"endpoint": "203.0.113.10"}, "server2": {}})
    config["services"]["wg-failover"]["settings"]["health"] = {"threshold": 0.1}
    rendered = rendered_config(evaluate(config)["services"]["wg-health-check"])
    assert rendered["servers"] == {"server1": {"endpoint": "203.0.113.10"}, "server2": {}}
    assert rendered["restart_command"] == ["systemctl", "restart", "wg.service"]
    assert rendered["health"] == {"threshold": 0.1}
    # Unset typed keys are left to the tool's own defaults.
    assert "hold_down" not in rendered["failover"]
    assert "textfile_dir" not in rendered


def test_module_follows_the_tunnel_unit_name(evaluate: Evaluate) -> None:
    config = with_options(tunnelUnit="wg-quick-wg0")
    config["systemd"]["services"] = {"wg-quick-wg0": {"script": "wg-quick up wg0"}}
    result = evaluate(config)
    assert result["services"]["wg-select"]["before"] == ["wg-quick-wg0.service"]
    assert result["services"]["wg-quick-wg0"]["unitConfig"]["OnFailure"] == ["wg-failover.service"]
    assert rendered_config(result["services"]["wg-failover"])["restart_command"] == [
        "systemctl", "restart", "wg-quick-wg0.service",
    ]  # fmt: skip


def test_module_passes_secrets_as_credentials_not_store_paths(evaluate: Evaluate) -> None:
    config = with_options()
    config["services"]["wg-failover"]["settings"]["prometheus"].update(
        bearer_token_file="/run/secrets/prom-token", username="wg", password_file="/run/secrets/prom-pw"
    )
    result = evaluate(config)
    for unit in ["wg-select", "wg-failover", "wg-health-check"]:
        service = result["services"][unit]
        assert sorted(service["serviceConfig"]["LoadCredential"]) == [
            "prometheus-bearer-token:/run/secrets/prom-token",
            "prometheus-password:/run/secrets/prom-pw",
        ]
        prometheus = rendered_config(service)["prometheus"]
        assert prometheus["bearer_token_file"] == f"/run/credentials/{unit}.service/prometheus-bearer-token"
        assert prometheus["password_file"] == f"/run/credentials/{unit}.service/prometheus-password"
    # The copy for running commands by hand names the files where they are.
    by_hand = json.loads(Path(result["etcConfig"]).read_text())
    assert by_hand["prometheus"]["bearer_token_file"] == "/run/secrets/prom-token"


def test_module_hardens_units_and_opens_only_needed_paths(evaluate: Evaluate) -> None:
    config = with_options()
    config["services"]["wg-failover"]["settings"]["textfile_dir"] = "/var/lib/node-exporter-text"
    result = evaluate(config)
    for unit in ["wg-select", "wg-failover", "wg-health-check"]:
        service = result["services"][unit]["serviceConfig"]
        assert service["ProtectSystem"] == "strict"
        assert service["StateDirectory"] == "wg-failover"
        assert service["NoNewPrivileges"] is True
        assert service["UMask"] == "0077"
        assert service["ReadWritePaths"] == ["/run", "/var/lib/node-exporter-text"]
    assert result["services"]["wg-select"]["serviceConfig"]["PrivateNetwork"] is True
    assert "d /var/lib/node-exporter-text 0755 root root -" in result["tmpfiles"]


def test_module_loosens_health_check_only_for_handshake_fallback(evaluate: Evaluate) -> None:
    config = with_options()
    config["services"]["wg-failover"]["settings"]["health"] = {"interface": "wg0", "netns": "wg"}
    health = evaluate(config)["services"]["wg-health-check"]
    assert "CAP_NET_ADMIN" in health["serviceConfig"]["CapabilityBoundingSet"]
    assert health["serviceConfig"]["RestrictNamespaces"] is False
    assert {"iproute2", "wireguard-tools"} <= set(health["path"])


def test_module_configures_both_probers(evaluate: Evaluate) -> None:
    config = with_options(
        probers={"external": {"enable": True}, "internal": {"enable": True, "netns": "/run/netns/vpn"}}
    )
    result = evaluate(config)
    assert result["smokeping"] == {
        "enable": True,
        "hosts": ["203.0.113.10", "203.0.113.20", "203.0.113.30"],
    }
    prober = result["services"]["prometheus-smokeping-vpn"]
    assert prober["serviceConfig"]["NetworkNamespacePath"] == "/run/netns/vpn"
    assert prober["serviceConfig"]["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert prober["serviceConfig"]["Restart"] == "always"
    assert prober["serviceConfig"]["ExecStart"] == (
        "/stub/prometheus-smokeping-prober/bin/smokeping_prober --privileged"
        " --web.listen-address=0.0.0.0:9374 198.41.0.4 192.33.4.12"
    )


def test_module_external_prober_needs_every_endpoint(evaluate: Evaluate) -> None:
    config = with_options(servers={"server1": {"endpoint": "203.0.113.10"}, "server2": {}})
    config["services"]["wg-failover"]["probers"] = {"external": {"enable": True}}
    assert evaluate(config)["failedAssertions"] == [
        "services.wg-failover.probers.external needs an endpoint for every server; missing for: server2."
    ]
