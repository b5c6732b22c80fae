"""The packaging around the Python tool: Nix files, systemd units, docs.

Each check runs the real tool that judges the file (nix-instantiate,
systemd-analyze, promtool) and skips, saying which tool is missing, where it
is not installed. The NixOS module is evaluated for real with nixpkgs'
lib.evalModules, from WGF_NIXPKGS_LIB or else ../shared/nixpkgs-lib/lib
beside the checkout (nix-community/nixpkgs.lib, where CI puts it); only
where neither exists do those tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.commands import write_command_wrappers
from tests.nix_module import (
    NIX_TESTS,
    build_stub,
    config_file,
    default_nixpkgs_lib,
    evaluate_module,
    read_built,
)
from tests.systemd.render import render_units

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "contrib" / "systemd"
SYSTEM_UNIT_DIR = Path("/usr/lib/systemd/system")

TEXTFILE_METRICS = [
    "vpn_server_info",
    "wg_failover_switches_total",
    "wg_failover_last_switch_info",
    "wg_failover_server_endpoint_info",
    "wg_failover_last_switch_timestamp_seconds",
    "wg_failover_server_loss_ratio",
    "wg_failover_health_consecutive_failures",
    "wg_failover_tunnel_loss_ratio",
    "wg_failover_last_check_timestamp_seconds",
]

# Not the copies that builds, the virtualenv and the lab leave in the checkout.
NOT_SOURCE = {".git", "result", "build", ".venv", ".lab"}
NIX_FILES = sorted(
    path.relative_to(ROOT) for path in ROOT.rglob("*.nix") if not NOT_SOURCE & set(path.relative_to(ROOT).parts)
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


def test_the_plain_units_are_templates_named_after_the_tunnel_interface() -> None:
    # One set of units per tunnel: wg-quick@wg0 <-> wg-select@wg0, config /etc/wg-failover/wg0.toml.
    assert [str(unit) for unit in UNIT_FILES] == [
        "prometheus-smokeping-vpn@.service",
        "wg-failover@.service",
        "wg-health-check@.service",
        "wg-health-check@.timer",
        "wg-select@.service",
    ]
    for name in ("wg-select", "wg-failover", "wg-health-check"):
        text = (UNITS / f"{name}@.service").read_text()
        assert re.search(rf"^ExecStart=/usr/local/bin/{name} --config /etc/wg-failover/%i\.toml( |$)", text, re.M), name
        assert re.search(r"^StateDirectory=wg-failover/%i$", text, re.M), name


@pytest.mark.parametrize("unit", UNIT_FILES, ids=str)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    require("systemd-analyze")
    # A template is verified as an instance, the way systemd loads it.
    result = verify(make_unit_root(tmp_path), str(unit).replace("@.", "@wg0."))
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
        "OnFailure=wg-failover@%i.service",
        "Restart=no",
        "Wants=wg-select@%i.service",
        "After=wg-select@%i.service",
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


def test_recording_rules_pass_promtool() -> None:
    promtool = require("promtool")
    result = run([promtool, "check", "rules", str(ROOT / "docs" / "recording-rules.yml")])
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


def switch_annotation() -> dict[str, Any]:
    (annotation,) = [a for a in load_dashboard()["annotations"]["list"] if a["name"] == "Switches"]
    return annotation


def test_dashboard_marks_switches_as_annotations_that_say_why() -> None:
    annotation = switch_annotation()
    assert annotation["enable"]
    assert "wg_failover_last_switch_info" in annotation["expr"]
    assert "{{reason}}" in annotation["textFormat"]


# Four switches between two scrapes, the last one a health check's. The
# info series carries the reason; the counter says when it changed.
PROMTOOL_SERIES = [
    {"series": 'wg_failover_switches_total{instance="host:9100",job="node"}', "values": "0 0 0 4 4 4 4 4"},
    {
        "series": 'wg_failover_last_switch_timestamp_seconds{instance="host:9100",job="node"}',
        "values": "0 0 0 170 170 170 170 170",
    },
    {
        "series": 'wg_failover_last_switch_info{instance="host:9100",job="node",from="server1",to="server2",'
        'reason="health-check: loss 1 > 0.15 for 3 checks"}',
        "values": "_ _ _ 1 1 1 1 1",
    },
]


def promtool_test(tmp_path: Path, test: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    promtool = require("promtool")
    test_file = tmp_path / "test.yml"
    # YAML is a superset of JSON: no YAML library needed.
    test_file.write_text(
        json.dumps(
            {
                "rule_files": [str(ROOT / "docs" / "alert-rules.yml")],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": PROMTOOL_SERIES, **test}],
            }
        )
    )
    return run([promtool, "test", "rules", str(test_file)])


def test_the_switch_annotation_query_returns_the_reason_at_the_switch_only(tmp_path: Path) -> None:
    expr = switch_annotation()["expr"].replace("$instance", "host")
    reason_series = {
        "labels": 'wg_failover_last_switch_info{instance="host:9100",job="node",from="server1",to="server2",'
        'reason="health-check: loss 1 > 0.15 for 3 checks"}',
        "value": 1,
    }
    result = promtool_test(
        tmp_path,
        {
            "promql_expr_test": [
                {"expr": expr, "eval_time": "3m", "exp_samples": [reason_series]},
                {"expr": expr, "eval_time": "7m", "exp_samples": []},
            ]
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_flapping_counts_every_switch_even_several_between_two_scrapes(tmp_path: Path) -> None:
    result = promtool_test(
        tmp_path,
        {
            "promql_expr_test": [
                # What the alert used before: four switches seen as one change.
                {
                    "expr": "changes(wg_failover_last_switch_timestamp_seconds[1h])",
                    "eval_time": "5m",
                    "exp_samples": [
                        {"labels": '{instance="host:9100",job="node"}', "value": 1},
                    ],
                }
            ],
            "alert_rule_test": [
                {
                    "eval_time": "5m",
                    "alertname": "WgFailoverFlapping",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "instance": "host:9100", "job": "node"},
                            "exp_annotations": {
                                "summary": "VPN on host:9100 switched servers 4 times in the last hour",
                                "description": "Read the reasons with `wg-failover --history` or "
                                "`journalctl -u wg-failover -u wg-health-check`.",
                            },
                        }
                    ],
                },
                {"eval_time": "2m", "alertname": "WgFailoverFlapping", "exp_alerts": []},
            ],
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr


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

# The tunnel unit is the user's; the module only adds to it.
TUNNEL = {"script": "wg-quick up /run/wg-failover/active.conf"}

BASE_CONFIG = {
    "systemd": {"services": {"wg": TUNNEL}},
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

OWN_UNITS = ["wg-select", "wg-failover", "wg-health-check"]


def with_options(**options: object) -> dict[str, Any]:
    config = json.loads(json.dumps(BASE_CONFIG))
    config["services"]["wg-failover"].update(options)
    return config


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = config["services"]["wg-failover"]["settings"]
    return settings


Evaluate = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the package's store path: bin/ runs the installed commands."""
    package = tmp_path_factory.mktemp("wg-failover-package")
    write_command_wrappers(package / "bin")
    return package


@pytest.fixture(scope="module")
def nixpkgs_lib() -> Path:
    found = default_nixpkgs_lib()
    if found is None:
        pytest.skip("nixpkgs' lib is not at ../shared/nixpkgs-lib/lib and WGF_NIXPKGS_LIB is not set")
    return found.resolve()


@pytest.fixture(scope="module")
def evaluate(package_dir: Path, nixpkgs_lib: Path) -> Evaluate:
    require("nix-instantiate")

    def evaluate(config: dict[str, Any]) -> dict[str, Any]:
        return evaluate_module(config, nixpkgs_lib=nixpkgs_lib, package_dir=package_dir)

    return evaluate


def rendered_config(service: dict[str, Any]) -> dict[str, Any]:
    return read_built(config_file(service))


# package.nix called with a stub python3Packages whose builder returns its
# arguments, so the test reads what Nix would build with (never `src`, which
# would copy the checkout into the store).
PACKAGE_HARNESS = r"""
{ libPath, packagePath }:
let
  lib = import libPath;
  python3Packages = {
    buildPythonApplication = args: args;
    pythonOlder = _: false;
  } // lib.genAttrs [ "setuptools" "click" "requests" "tomli" "pytestCheckHook" "requests-mock" "hypothesis" ] (name: { inherit name; });
  package = import packagePath { inherit lib python3Packages; };
in
{
  inherit (package) pname version enabledTestPaths meta;
  dependencies = map (p: p.name) package.dependencies;
}
"""


def test_package_nix_runs_the_unit_tests_and_links_home_and_changelog(nixpkgs_lib: Path, tmp_path: Path) -> None:
    nix_instantiate = require("nix-instantiate")
    harness = tmp_path / "package-harness.nix"
    harness.write_text(PACKAGE_HARNESS)
    result = run(
        [nix_instantiate, "--eval", "--strict", "--json", str(harness),
         "--arg", "libPath", str(nixpkgs_lib), "--arg", "packagePath", str(ROOT / "package.nix")]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    package = json.loads(result.stdout)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (package["pname"], package["version"]) == (project["name"], project["version"])
    assert package["enabledTestPaths"] == ["tests/unit"]
    assert package["meta"]["homepage"] == project["urls"]["Homepage"]
    assert package["meta"]["changelog"] == project["urls"]["Changelog"]
    assert package["meta"]["mainProgram"] in project["scripts"]
    assert package["dependencies"] == ["click", "requests"]


def test_nixpkgs_lib_defaults_to_shared_beside_the_repository() -> None:
    if os.environ.get("WGF_NIXPKGS_LIB"):
        pytest.skip("WGF_NIXPKGS_LIB overrides the default")
    found = default_nixpkgs_lib()
    if found is None:
        pytest.skip("no ../shared/nixpkgs-lib/lib beside this checkout")
    assert found.parts[-3:] == ("shared", "nixpkgs-lib", "lib")


MISTAKES = json.loads((NIX_TESTS / "module-mistakes.json").read_text())


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Given two JSON objects, return base with extra merged in, table by table (as Nix modules merge)."""
    result = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def test_the_mistakes_base_config_is_accepted_with_nixpkgs_wg_quick(evaluate: Evaluate) -> None:
    result = evaluate(MISTAKES["base"])
    assert result["failedAssertions"] == []
    assert result["services"]["wg-quick-wg0"]["onFailure"] == ["wg-failover.service"]
    assert result["services"]["wg-select"]["before"] == ["wg-quick-wg0.service"]
    assert result["services"]["prometheus-smokeping-vpn"]["partOf"] == ["wg-quick-wg0.service"]


def test_the_instances_case_is_accepted_with_each_instances_units(evaluate: Evaluate) -> None:
    case = MISTAKES["instances"]
    result = evaluate(merged(MISTAKES["base"], case["config"]))
    assert result["failedAssertions"] == []
    assert set(case["units"]) <= set(result["services"])
    for tunnel, hook in case["onFailure"].items():
        assert result["services"][tunnel]["onFailure"] == [hook]


@pytest.mark.parametrize("name", sorted(MISTAKES["assertions"]))
def test_module_mistake_fails_evaluation_with_its_message(evaluate: Evaluate, name: str) -> None:
    case = MISTAKES["assertions"][name]
    assert evaluate(merged(MISTAKES["base"], case["config"]))["failedAssertions"] == [case["message"]]


@pytest.mark.parametrize("name", sorted(MISTAKES["builds"]))
def test_module_mistake_fails_the_build_with_the_tools_message(evaluate: Evaluate, name: str, tmp_path: Path) -> None:
    case = MISTAKES["builds"][name]
    result = evaluate(merged(MISTAKES["base"], case["config"]))
    assert result["failedAssertions"] == []  # the tool's validator decides, at build time
    for unit in OWN_UNITS:
        built = build_stub(config_file(result["services"][unit]), tmp_path / unit)
        assert built.returncode == case["exitCode"]
        assert built.stderr.endswith(f": {case['stderr']}\n")
        assert not (tmp_path / unit).exists()


def test_module_wires_units_like_the_original(evaluate: Evaluate, package_dir: Path) -> None:
    result = evaluate(BASE_CONFIG)
    assert result["failedAssertions"] == []
    services = result["services"]

    select = services["wg-select"]
    assert select["before"] == ["wg.service"]
    assert select["wantedBy"] == ["wg.service"]
    assert select["serviceConfig"]["Type"] == "oneshot"
    assert select["serviceConfig"]["RemainAfterExit"] is True
    assert select["serviceConfig"]["ExecStart"].startswith(f"{package_dir}/bin/wg-select --config ")

    failover = services["wg-failover"]["serviceConfig"]
    assert failover["Type"] == "oneshot"
    assert failover["TimeoutStartSec"] == "10min"
    assert failover["ExecStart"].endswith("--reason unit-failed")

    tunnel = services["wg"]
    assert tunnel["serviceConfig"] == {"Restart": "on-failure", "RestartSec": "30s"}
    assert tunnel["onFailure"] == ["wg-failover.service"]
    assert tunnel["script"] == TUNNEL["script"]

    assert services["wg-health-check"]["after"] == ["wg.service"]
    timer = result["timers"]["wg-health-check"]
    assert timer["wantedBy"] == ["timers.target"]
    assert timer["timerConfig"] == {
        "OnBootSec": "2min",
        "OnUnitActiveSec": "1min",
        "RandomizedDelaySec": "10s",
        "AccuracySec": "1s",  # not systemd's 1min default, which would delay checks
    }
    assert "prometheus-smokeping-vpn" not in services


def test_module_leaves_the_tunnels_restart_policy_to_its_owner(evaluate: Evaluate) -> None:
    config = with_options()
    config["systemd"]["services"]["wg"] = {**TUNNEL, "serviceConfig": {"Restart": "always", "RestartSec": "5s"}}
    result = evaluate(config)
    assert result["services"]["wg"]["serviceConfig"] == {"Restart": "always", "RestartSec": "5s"}
    assert result["services"]["wg"]["onFailure"] == ["wg-failover.service"]


def test_module_renders_settings_and_servers(evaluate: Evaluate) -> None:
    config = with_options(servers={"server1": {"endpoint": "203.0.113.10"}, "server2": {}})
    settings_of(config)["health"] = {"threshold": 0.1}
    rendered = rendered_config(evaluate(config)["services"]["wg-health-check"])
    assert rendered["servers"] == {"server1": {"endpoint": "203.0.113.10"}, "server2": {}}
    assert rendered["restart_command"] == ["systemctl", "restart", "wg.service"]
    assert rendered["active_link"] == "/run/wg-failover/active.conf"
    assert rendered["health"] == {"threshold": 0.1}
    # Unset typed keys are left to the tool's own defaults.
    assert "hold_down" not in rendered["failover"]
    assert "textfile_dir" not in rendered


def test_module_renders_priorities_and_failback_after(evaluate: Evaluate) -> None:
    config = with_options(servers={"server1": {"endpoint": "203.0.113.10", "priority": 1}, "server2": {}})
    settings_of(config)["failover"] = {"failback_after": "15m"}
    result = evaluate(config)
    assert result["failedAssertions"] == []
    rendered = rendered_config(result["services"]["wg-health-check"])
    assert rendered["servers"] == {"server1": {"endpoint": "203.0.113.10", "priority": 1}, "server2": {}}
    assert rendered["failover"] == {"failback_after": "15m"}


def test_module_renders_probation_and_its_units_allow_a_whole_pass(evaluate: Evaluate) -> None:
    config = with_options()
    settings_of(config)["failover"] = {"probation": "30s"}
    result = evaluate(config)
    assert result["failedAssertions"] == []
    assert rendered_config(result["services"]["wg-failover"])["failover"] == {"probation": "30s"}
    for unit in ("wg-failover", "wg-health-check"):
        assert result["services"][unit]["serviceConfig"]["TimeoutStartSec"] == "10min"


def test_module_takes_servers_from_settings_alone(evaluate: Evaluate) -> None:
    config = with_options(servers={}, probers={"external": {"enable": True}})
    settings_of(config)["servers"] = {"ams1": {"endpoint": "203.0.113.40"}, "fra1": {"endpoint": "203.0.113.50"}}
    result = evaluate(config)
    assert result["failedAssertions"] == []
    assert rendered_config(result["services"]["wg-failover"])["servers"] == {
        "ams1": {"endpoint": "203.0.113.40"},
        "fra1": {"endpoint": "203.0.113.50"},
    }
    assert result["smokeping"]["hosts"] == ["203.0.113.40", "203.0.113.50"]


def test_module_merges_a_server_given_in_both_places(evaluate: Evaluate) -> None:
    config = with_options(servers={"server1": {}, "server2": {"endpoint": "203.0.113.20"}})
    settings_of(config)["servers"] = {"server1": {"endpoint": "203.0.113.10"}}
    result = evaluate(config)
    assert rendered_config(result["services"]["wg-select"])["servers"] == {
        "server1": {"endpoint": "203.0.113.10"},
        "server2": {"endpoint": "203.0.113.20"},
    }


def test_module_follows_the_tunnel_unit_name(evaluate: Evaluate) -> None:
    config = with_options(tunnelUnit="wg-quick-wg0")
    config["systemd"]["services"] = {"wg-quick-wg0": {"script": "wg-quick up wg0"}}
    result = evaluate(config)
    assert result["failedAssertions"] == []
    assert result["services"]["wg-select"]["before"] == ["wg-quick-wg0.service"]
    assert result["services"]["wg-quick-wg0"]["onFailure"] == ["wg-failover.service"]
    assert rendered_config(result["services"]["wg-failover"])["restart_command"] == [
        "systemctl", "restart", "wg-quick-wg0.service",
    ]  # fmt: skip


def test_module_accepts_a_tunnel_unit_defined_by_exec_start(evaluate: Evaluate) -> None:
    config = with_options(tunnelUnit="tunnel")
    config["systemd"]["services"] = {"tunnel": {"serviceConfig": {"ExecStart": "/bin/wg-quick up wg0"}}}
    assert evaluate(config)["failedAssertions"] == []


def test_module_accepts_wg_quick_template_units_from_wireguard_tools(evaluate: Evaluate) -> None:
    config = with_options(tunnelUnit="wg-quick@wg0")
    config["systemd"]["services"] = {}
    assert evaluate(config)["failedAssertions"] == [
        'services.wg-failover.tunnelUnit = "wg-quick@wg0": no such service starts anything'
        " (systemd.services.wg-quick@wg0 has no ExecStart= or script)."
        ' Define the tunnel\'s unit, e.g. networking.wg-quick.interfaces.wg0 (tunnelUnit = "wg-quick-wg0").'
    ]
    config["useWireguardToolsUnits"] = True
    assert evaluate(config)["failedAssertions"] == []


@pytest.mark.parametrize(
    ("secrets", "credential", "key"),
    [
        ({"bearer_token_file": "/run/secrets/prom-token"}, "prometheus-bearer-token", "bearer_token_file"),
        ({"username": "wg", "password_file": "/run/secrets/prom-token"}, "prometheus-password", "password_file"),
    ],
)
def test_module_passes_secrets_as_credentials_not_store_paths(
    evaluate: Evaluate, secrets: dict[str, str], credential: str, key: str
) -> None:
    config = with_options()
    settings_of(config)["prometheus"].update(secrets)
    result = evaluate(config)
    for unit in OWN_UNITS:
        service = result["services"][unit]
        assert service["serviceConfig"]["LoadCredential"] == [f"{credential}:/run/secrets/prom-token"]
        assert rendered_config(service)["prometheus"][key] == f"/run/credentials/{unit}.service/{credential}"
    # The copy for running commands by hand names the file where it is.
    by_hand = read_built(Path(result["etcConfig"]))
    assert by_hand["prometheus"][key] == "/run/secrets/prom-token"


def test_every_rendered_config_is_the_output_of_the_tools_offline_check(evaluate: Evaluate, package_dir: Path) -> None:
    result = evaluate(BASE_CONFIG)
    for path in [config_file(result["services"][unit]) for unit in OWN_UNITS] + [Path(result["etcConfig"])]:
        script = json.loads(path.read_text())["script"].strip().splitlines()
        assert len(script) == 2
        check = script[0].split()
        assert check[:-1] == [f"{package_dir}/bin/wg-select", "--check-config", "--offline", "--config"]
        assert script[1] == f'cp {check[-1]} "$out"'


def test_a_wrong_type_in_settings_fails_the_build(evaluate: Evaluate, tmp_path: Path) -> None:
    config = with_options()
    settings_of(config)["failover"] = {"label": 7}
    built = build_stub(config_file(evaluate(config)["services"]["wg-failover"]), tmp_path / "out")
    assert built.returncode == 78
    assert "failover.label: " in built.stderr


def test_the_build_time_check_can_be_turned_off(evaluate: Evaluate) -> None:
    config = with_options(checkConfig=False)
    settings_of(config)["health"] = {"treshold": 0.1}
    rendered = config_file(evaluate(config)["services"]["wg-select"]).read_text()
    assert tomllib.loads(rendered)["health"] == {"treshold": 0.1}


def test_module_hardens_units_and_opens_only_needed_paths(evaluate: Evaluate) -> None:
    config = with_options()
    settings_of(config)["textfile_dir"] = "/var/lib/node-exporter-text"
    result = evaluate(config)
    for unit in OWN_UNITS:
        service = result["services"][unit]["serviceConfig"]
        assert service["ProtectSystem"] == "strict"
        assert service["StateDirectory"] == "wg-failover"
        assert service["NoNewPrivileges"] is True
        assert service["UMask"] == "0077"
        assert service["ReadWritePaths"] == ["/run/wg-failover", "/var/lib/node-exporter-text"]
    assert result["services"]["wg-select"]["serviceConfig"]["PrivateNetwork"] is True
    assert result["tmpfiles"] == [
        "d /run/wg-failover 0755 root root -",
        "d /var/lib/node-exporter-text 0755 root root -",
    ]


def test_module_loosens_health_check_only_for_handshake_fallback(evaluate: Evaluate) -> None:
    config = with_options()
    settings_of(config)["health"] = {"interface": "wg0", "netns": "wg"}
    health = evaluate(config)["services"]["wg-health-check"]
    assert "CAP_NET_ADMIN" in health["serviceConfig"]["CapabilityBoundingSet"]
    assert health["serviceConfig"]["RestrictNamespaces"] is False
    assert {"iproute2", "wireguard-tools"} <= set(health["path"])


def test_module_configures_both_probers(evaluate: Evaluate) -> None:
    config = with_options(
        probers={
            "external": {"enable": True},
            "internal": {"enable": True, "netns": "/run/netns/vpn", "netnsUnit": "netns-vpn"},
        }
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
    # A namespace recreated with the tunnel or its own unit restarts the prober inside it.
    assert prober["partOf"] == ["wg.service", "netns-vpn.service"]
    assert prober["after"] == ["wg.service", "netns-vpn.service"]
    # Loopback: the VPN peer cannot read the metrics.
    assert prober["serviceConfig"]["ExecStart"] == (
        "/stub/prometheus-smokeping-prober/bin/smokeping_prober --privileged"
        " --web.listen-address=127.0.0.1:9374 198.41.0.4 192.33.4.12"
    )


def test_module_runs_the_internal_prober_in_the_main_namespace_when_netns_is_null(evaluate: Evaluate) -> None:
    config = with_options(probers={"internal": {"enable": True, "netns": None}})
    prober = evaluate(config)["services"]["prometheus-smokeping-vpn"]
    assert "NetworkNamespacePath" not in prober["serviceConfig"]
    assert prober["partOf"] == ["wg.service"]


def test_module_with_no_server_anywhere_is_refused(evaluate: Evaluate) -> None:
    assert evaluate(with_options(servers={}))["failedAssertions"] == [
        "services.wg-failover.servers must name at least one server."
    ]


# --- Several tunnels: services.wg-failover.instances.<name> -----------------

# Two tunnels, neither of them the unnamed instance: `office` run by nixpkgs'
# wg-quick in the main namespace, `home` a unit of the user's own whose
# tunnel lives in a namespace that another unit creates.
TWO_INSTANCES: dict[str, Any] = {
    "networking": {"wg-quick": {"interfaces": {"office": {"configFile": "/run/wg-failover/office/active.conf"}}}},
    "systemd": {"services": {"home-tunnel": {"serviceConfig": {"ExecStart": "/bin/wg-quick up home"}}}},
    "services": {
        "wg-failover": {
            "instances": {
                "office": {
                    "tunnelUnit": "wg-quick-office",
                    "servers": {"office1": {"endpoint": "203.0.113.10"}, "office2": {"endpoint": "203.0.113.20"}},
                    "settings": {"prometheus": {"url": "https://prometheus.example.com"}},
                    "probers": {
                        "external": {"enable": True},
                        "internal": {"enable": True, "netns": None, "port": 9375},
                    },
                },
                "home": {
                    "tunnelUnit": "home-tunnel",
                    "servers": {"ams1": {"endpoint": "198.51.100.1"}, "fra1": {"endpoint": "198.51.100.2"}},
                    "timer": {"onUnitActiveSec": "30s"},
                    "settings": {
                        "prometheus": {"url": "https://prometheus.example.com"},
                        "textfile_dir": "/var/lib/prometheus-node-exporter",
                    },
                    "probers": {
                        "external": {"enable": True},
                        "internal": {
                            "enable": True,
                            "netns": "/run/netns/home",
                            "netnsUnit": "netns-home",
                            "listenAddress": "10.200.0.2",
                        },
                    },
                },
            }
        }
    },
}


def instance_config(**options: object) -> dict[str, Any]:
    """Return TWO_INSTANCES with options set directly under services.wg-failover."""
    config: dict[str, Any] = json.loads(json.dumps(TWO_INSTANCES))
    config["services"]["wg-failover"].update(options)
    return config


def units_of(instance: str) -> list[str]:
    return [f"{unit}-{instance}" for unit in OWN_UNITS]


def test_each_instance_gets_units_named_after_it_and_nothing_unnamed(evaluate: Evaluate) -> None:
    result = evaluate(TWO_INSTANCES)
    assert result["failedAssertions"] == []
    ours = {name for name in result["services"] if name not in ("wg-quick-office", "home-tunnel")}
    assert ours == {
        *units_of("office"), "prometheus-smokeping-vpn-office",
        *units_of("home"), "prometheus-smokeping-vpn-home",
    }  # fmt: skip
    assert set(result["timers"]) == {"wg-health-check-office", "wg-health-check-home"}
    assert result["etcConfig"] is None
    assert sorted(result["etc"]) == ["wg-failover/home.toml", "wg-failover/office.toml"]


@pytest.mark.parametrize(("instance", "tunnel"), [("office", "wg-quick-office"), ("home", "home-tunnel")])
def test_each_instance_hooks_into_its_own_tunnel(evaluate: Evaluate, instance: str, tunnel: str) -> None:
    services = evaluate(TWO_INSTANCES)["services"]
    assert services[tunnel]["onFailure"] == [f"wg-failover-{instance}.service"]
    assert services[tunnel]["serviceConfig"]["Restart"] == "on-failure"
    assert services[f"wg-select-{instance}"]["before"] == [f"{tunnel}.service"]
    assert services[f"wg-select-{instance}"]["wantedBy"] == [f"{tunnel}.service"]
    assert services[f"wg-health-check-{instance}"]["after"] == [f"{tunnel}.service"]
    assert services[f"wg-failover-{instance}"]["serviceConfig"]["ExecStart"].endswith("--reason unit-failed")


@pytest.mark.parametrize("instance", ["office", "home"])
def test_each_instance_has_its_own_config_state_link_and_job(evaluate: Evaluate, instance: str) -> None:
    result = evaluate(TWO_INSTANCES)
    tunnel = TWO_INSTANCES["services"]["wg-failover"]["instances"][instance]["tunnelUnit"]
    for unit in units_of(instance):
        service = result["services"][unit]["serviceConfig"]
        assert service["StateDirectory"] == f"wg-failover/{instance}"
        assert service["ReadWritePaths"][0] == f"/run/wg-failover/{instance}"
        # Built by the real tool's --check-config, which knows `instance`.
        rendered = rendered_config(result["services"][unit])
        assert rendered["instance"] == instance
        assert rendered["state_dir"] == f"/var/lib/wg-failover/{instance}"
        assert rendered["active_link"] == f"/run/wg-failover/{instance}/active.conf"
        assert rendered["restart_command"] == ["systemctl", "restart", f"{tunnel}.service"]
        assert rendered["health"]["selector"] == f'job="vpn-prober-{instance}"'
        assert f"wg-failover-{unit}.toml" in str(config_file(result["services"][unit]))
    by_hand = read_built(Path(result["etc"][f"wg-failover/{instance}.toml"]))
    assert by_hand["instance"] == instance
    assert f"d /run/wg-failover/{instance} 0755 root root -" in result["tmpfiles"]


def test_each_instance_has_its_own_servers_timer_and_probers(evaluate: Evaluate) -> None:
    result = evaluate(TWO_INSTANCES)
    services, timers = result["services"], result["timers"]
    assert set(rendered_config(services["wg-failover-office"])["servers"]) == {"office1", "office2"}
    assert set(rendered_config(services["wg-failover-home"])["servers"]) == {"ams1", "fra1"}
    assert timers["wg-health-check-office"]["timerConfig"]["OnUnitActiveSec"] == "1min"
    assert timers["wg-health-check-home"]["timerConfig"]["OnUnitActiveSec"] == "30s"
    assert timers["wg-health-check-home"]["wantedBy"] == ["timers.target"]

    office = services["prometheus-smokeping-vpn-office"]
    assert "NetworkNamespacePath" not in office["serviceConfig"]
    assert "--web.listen-address=127.0.0.1:9375" in office["serviceConfig"]["ExecStart"]
    assert office["partOf"] == ["wg-quick-office.service"]
    home = services["prometheus-smokeping-vpn-home"]
    assert home["serviceConfig"]["NetworkNamespacePath"] == "/run/netns/home"
    assert "--web.listen-address=10.200.0.2:9374" in home["serviceConfig"]["ExecStart"]
    assert home["partOf"] == ["home-tunnel.service", "netns-home.service"]
    # One external exporter pings every instance's servers.
    assert result["smokeping"] == {
        "enable": True,
        "hosts": ["198.51.100.1", "198.51.100.2", "203.0.113.10", "203.0.113.20"],
    }


def test_instances_share_a_textfile_dir_and_only_that(evaluate: Evaluate) -> None:
    config = instance_config()
    config["services"]["wg-failover"]["instances"]["office"]["settings"]["textfile_dir"] = (
        "/var/lib/prometheus-node-exporter"
    )
    result = evaluate(config)
    assert result["failedAssertions"] == []
    for instance in ("office", "home"):
        service = result["services"][f"wg-health-check-{instance}"]["serviceConfig"]
        assert service["ReadWritePaths"] == [f"/run/wg-failover/{instance}", "/var/lib/prometheus-node-exporter"]


def test_instance_secrets_are_credentials_of_its_own_units(evaluate: Evaluate) -> None:
    config = instance_config()
    settings = config["services"]["wg-failover"]["instances"]["home"]["settings"]
    settings["prometheus"]["bearer_token_file"] = "/run/secrets/home-token"
    result = evaluate(config)
    for unit in units_of("home"):
        service = result["services"][unit]
        assert service["serviceConfig"]["LoadCredential"] == ["prometheus-bearer-token:/run/secrets/home-token"]
        assert rendered_config(service)["prometheus"]["bearer_token_file"] == (
            f"/run/credentials/{unit}.service/prometheus-bearer-token"
        )
    assert result["services"]["wg-select-office"]["serviceConfig"]["LoadCredential"] == []


def test_a_mistake_in_one_instances_settings_fails_only_its_build(evaluate: Evaluate, tmp_path: Path) -> None:
    config = instance_config()
    config["services"]["wg-failover"]["instances"]["home"]["settings"]["health"] = {"treshold": 0.1}
    result = evaluate(config)
    built = build_stub(config_file(result["services"]["wg-health-check-home"]), tmp_path / "home")
    assert built.returncode == 78
    assert built.stderr.endswith(": health.treshold: unknown key (did you mean 'health.threshold'?)\n")
    assert rendered_config(result["services"]["wg-health-check-office"])["instance"] == "office"


def test_a_disabled_instance_installs_nothing(evaluate: Evaluate) -> None:
    config = instance_config()
    config["services"]["wg-failover"]["instances"]["home"]["enable"] = False
    result = evaluate(config)
    assert not [name for name in [*result["services"], *result["timers"]] if name.endswith("-home")]
    assert result["services"]["home-tunnel"]["onFailure"] == []


def test_the_unnamed_instance_keeps_todays_names_beside_named_ones(evaluate: Evaluate) -> None:
    config = instance_config(**json.loads(json.dumps(BASE_CONFIG["services"]["wg-failover"])))
    config["systemd"]["services"]["wg"] = TUNNEL
    result = evaluate(config)
    assert result["failedAssertions"] == []
    services = result["services"]
    assert services["wg"]["onFailure"] == ["wg-failover.service"]
    assert services["wg-select"]["before"] == ["wg.service"]
    assert services["wg-select"]["serviceConfig"]["StateDirectory"] == "wg-failover"
    assert "wg-health-check" in result["timers"]
    rendered = rendered_config(services["wg-failover"])
    assert "instance" not in rendered
    assert (rendered["state_dir"], rendered["active_link"]) == ("/var/lib/wg-failover", "/run/wg-failover/active.conf")
    assert "selector" not in rendered["health"]  # the tool's job="vpn-prober"
    assert rendered_config(services["wg-failover-office"])["instance"] == "office"
    assert Path(result["etcConfig"]) == Path(result["etc"]["wg-failover/config.toml"])
    assert sorted(result["etc"]) == ["wg-failover/config.toml", "wg-failover/home.toml", "wg-failover/office.toml"]


def test_each_instances_rendered_units_pass_systemd_analyze_verify(evaluate: Evaluate, tmp_path: Path) -> None:
    require("systemd-analyze")
    if not SYSTEM_UNIT_DIR.is_dir():
        pytest.skip(f"{SYSTEM_UNIT_DIR} is missing; systemd's own units are needed")
    result = evaluate(TWO_INSTANCES)
    ours = [*units_of("office"), *units_of("home"), "prometheus-smokeping-vpn-office", "prometheus-smokeping-vpn-home"]
    rendered = render_units({name: result["services"][name] for name in ours}, result["timers"])
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNIT_DIR, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    # The users' tunnels, as stand-ins the instances' units attach to.
    for tunnel in ("wg-quick-office", "home-tunnel", "netns-home"):
        (etc / f"{tunnel}.service").write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    for name, text in rendered.files.items():
        (etc / name).write_text(text)
        for match in re.finditer(r"^Exec\w*=[-@:+!]*(/\S+)", text, re.MULTILINE):
            binary = root / match.group(1).lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text("#!/bin/sh\nexit 0\n")
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    for name in rendered.files:
        outcome = verify(root, name)
        assert (outcome.returncode, outcome.stdout + outcome.stderr) == (0, ""), name


# The options' documentation, as NixOS's manual builds it: every visible
# option's description and default, a named instance's computed from the
# placeholder name.
OPTION_DOCS_HARNESS = r"""
{ libPath, stubPath, modulePath, packagePath }:
let
  lib = import libPath;
  stub = import stubPath { inherit lib packagePath; };
  eval = lib.evalModules { modules = stub.modules ++ [ modulePath ]; };
  visible = lib.filter (o: o.visible && !o.internal) (lib.optionAttrSetToDocList eval.options.services.wg-failover);
in
lib.listToAttrs (map (o: lib.nameValuePair o.name { inherit (o) description; default = o.default.text or null; }) visible)
"""


def test_the_option_docs_evaluate_and_show_a_named_instances_own_defaults(
    nixpkgs_lib: Path, package_dir: Path, tmp_path: Path
) -> None:
    harness = tmp_path / "option-docs.nix"
    harness.write_text(OPTION_DOCS_HARNESS)
    result = run(
        [require("nix-instantiate"), "--eval", "--strict", "--json", str(harness),
         "--arg", "libPath", str(nixpkgs_lib), "--arg", "stubPath", str(NIX_TESTS / "stub-nixos.nix"),
         "--arg", "modulePath", str(ROOT / "nixos-module.nix"), "--argstr", "packagePath", str(package_dir)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = json.loads(result.stdout)
    instance = "services.wg-failover.instances.<name>"
    assert docs[f"{instance}.settings.state_dir"]["default"] == '"/var/lib/wg-failover/\u2039name\u203a"'
    assert docs[f"{instance}.settings.active_link"]["default"] == '"/run/wg-failover/\u2039name\u203a/active.conf"'
    assert docs["services.wg-failover.settings.state_dir"]["default"] == '"/var/lib/wg-failover"'
    # Declared once: every option of the unnamed instance exists per instance, and
    # only package, checkConfig, instances, fleet and scrapeProbers are global.
    top = {name.removeprefix("services.wg-failover.") for name in docs if not name.startswith(instance)}
    per_instance = {name.removeprefix(f"{instance}.") for name in docs if name.startswith(f"{instance}.")}
    shared = {"package", "checkConfig", "instances", "scrapeProbers"}
    assert {name for name in top - per_instance if not name.startswith("fleet.")} == shared


# --- Fleet scope from the module ---------------------------------------------


def fleet_config(**fleet: object) -> dict[str, Any]:
    config = instance_config(fleet={"clientLabel": "wg_client", **fleet}, scrapeProbers=True)
    config["networking"]["hostName"] = "laptop-17"
    config["services"]["prometheus"] = {"enable": True}
    return config


def test_the_fleet_label_scopes_every_instance_to_this_host(evaluate: Evaluate) -> None:
    result = evaluate(fleet_config())
    assert result["failedAssertions"] == []
    for instance in ("office", "home"):
        for unit in units_of(instance):
            rendered = rendered_config(result["services"][unit])  # the tool accepts the scope
            assert rendered["fleet"] == {"client_label": "wg_client", "client": "laptop-17"}


def test_the_fleet_label_goes_on_everything_this_hosts_prometheus_ships(evaluate: Evaluate) -> None:
    prometheus = evaluate(fleet_config())["prometheus"]
    assert prometheus["globalConfig"]["external_labels"] == {"wg_client": "laptop-17"}
    # The jobs the default queries select, labelled as the scope expects.
    label = {"wg_client": "laptop-17"}
    assert prometheus["scrapeConfigs"] == [
        {"job_name": "smokeping", "static_configs": [{"targets": ["127.0.0.1:9374"], "labels": label}]},
        {"job_name": "vpn-prober-home", "static_configs": [{"targets": ["10.200.0.2:9374"], "labels": label}]},
        {"job_name": "vpn-prober-office", "static_configs": [{"targets": ["127.0.0.1:9375"], "labels": label}]},
    ]


def test_each_instances_health_selector_matches_its_scrape_job(evaluate: Evaluate) -> None:
    result = evaluate(fleet_config())
    jobs = {config["job_name"] for config in result["prometheus"]["scrapeConfigs"]}
    for instance in ("office", "home"):
        selector = rendered_config(result["services"][f"wg-health-check-{instance}"])["health"]["selector"]
        assert re.fullmatch(r'job="([^"]+)"', selector)[1] in jobs  # type: ignore[index]


def test_an_explicit_fleet_client_wins_over_the_hostname(evaluate: Evaluate) -> None:
    result = evaluate(fleet_config(client="vpn-client-0042"))
    assert rendered_config(result["services"]["wg-select-home"])["fleet"]["client"] == "vpn-client-0042"
    assert result["prometheus"]["globalConfig"]["external_labels"] == {"wg_client": "vpn-client-0042"}


def test_the_fleet_label_leaves_prometheus_alone_when_asked_or_absent(evaluate: Evaluate) -> None:
    assert evaluate(fleet_config(externalLabel=False))["prometheus"]["globalConfig"]["external_labels"] == {}
    config = fleet_config()
    config["services"]["prometheus"]["enable"] = False
    config["services"]["wg-failover"]["scrapeProbers"] = False
    result = evaluate(config)
    assert result["failedAssertions"] == []
    assert result["prometheus"] == {"globalConfig": {"external_labels": {}}, "scrapeConfigs": []}
    # The tools are still scoped: the label may come from elsewhere (a central scrape config).
    assert rendered_config(result["services"]["wg-failover-office"])["fleet"]["client_label"] == "wg_client"


def test_without_fleet_options_nothing_is_scoped_or_labelled(evaluate: Evaluate) -> None:
    config = with_options()
    config["services"]["prometheus"] = {"enable": True}
    result = evaluate(config)
    assert "fleet" not in rendered_config(result["services"]["wg-failover"])
    assert result["prometheus"] == {"globalConfig": {"external_labels": {}}, "scrapeConfigs": []}


def test_scrape_probers_without_a_fleet_uses_the_jobs_alone(evaluate: Evaluate) -> None:
    config = with_options(scrapeProbers=True, probers={"internal": {"enable": True, "netns": None, "port": 9375}})
    config["services"]["prometheus"] = {"enable": True}
    result = evaluate(config)
    assert result["failedAssertions"] == []
    assert result["prometheus"]["scrapeConfigs"] == [
        {"job_name": "vpn-prober", "static_configs": [{"targets": ["127.0.0.1:9375"], "labels": {}}]},
    ]


# The flake's checks (tests/nix/module-checks.nix) with the stand-in nixpkgs:
# each check's script, which the test runs as the builder would.
FLAKE_CHECKS_HARNESS = r"""
{ libPath, stubPath, checksPath, modulePath, packagePath, buildFailureDir }:
let
  lib = import libPath;
  stub = import stubPath { inherit lib packagePath buildFailureDir; };
  checks = import checksPath { nixpkgs = stub.nixpkgs "x86_64-linux"; system = "x86_64-linux"; module = modulePath; };
in
lib.mapAttrs (name: check: if name == "module-system" then check.name else "${check}") checks
"""


def test_the_flake_checks_refuse_every_mistake_as_the_unit_tests_do(
    nixpkgs_lib: Path, package_dir: Path, tmp_path: Path
) -> None:
    nix_instantiate = require("nix-instantiate")
    harness = tmp_path / "flake-checks.nix"
    harness.write_text(FLAKE_CHECKS_HARNESS)
    failures = tmp_path / "build-failures"
    result = run(
        [nix_instantiate, "--eval", "--strict", "--json", "--read-write-mode", str(harness),
         "--arg", "libPath", str(nixpkgs_lib), "--arg", "stubPath", str(NIX_TESTS / "stub-nixos.nix"),
         "--arg", "checksPath", str(NIX_TESTS / "module-checks.nix"),
         "--arg", "modulePath", str(ROOT / "nixos-module.nix"),
         "--argstr", "packagePath", str(package_dir), "--argstr", "buildFailureDir", str(failures)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    checks = json.loads(result.stdout)
    expected = {f"module-{name}" for name in [*MISTAKES["assertions"], *MISTAKES["builds"]]}
    assert set(checks) == {"module-system", "module-instances"} | expected
    assert checks.pop("module-system") == "toplevel"
    for name, check in checks.items():
        script = json.loads(Path(check).read_text())["script"]
        exit_file = re.search(rf"{re.escape(str(failures))}/([^/]+)/testBuildFailure.exit", script)
        if exit_file is not None:
            # As testBuildFailure: build the failing derivation, keep its exit code and log.
            failed = failures / exit_file.group(1)
            failed.mkdir(parents=True)
            inner = build_stub(Path(builtins_store_dir()) / exit_file.group(1), tmp_path / f"{name}-inner")
            (failed / "testBuildFailure.exit").write_text(f"{inner.returncode}\n")
            (failed / "testBuildFailure.log").write_text(inner.stdout + inner.stderr)
        built = build_stub(Path(check), tmp_path / name)
        assert built.returncode == 0, f"{name}: {built.stderr}"


def builtins_store_dir() -> str:
    """Return the Nix store directory builtins.toFile writes to."""
    result = run([require("nix-instantiate"), "--eval", "--json", "--expr", "builtins.storeDir"])
    assert result.returncode == 0, result.stderr
    store_dir: str = json.loads(result.stdout)
    return store_dir


def test_the_internal_probers_namespace_must_be_chosen(evaluate: Evaluate) -> None:
    assert evaluate(with_options(probers={"internal": {"enable": True}}))["failedAssertions"] == [
        "services.wg-failover.probers.internal.netns must be set: the VPN network namespace the prober pings"
        ' from (e.g. "/run/netns/wg"), or null when the tunnel\'s routes are in the main namespace'
        " (nixpkgs' networking.wg-quick)."
    ]


# flake.nix's outputs function called with the stand-in nixpkgs as its input.
FLAKE_HARNESS = r"""
{ libPath, stubPath, flakePath, packagePath }:
let
  lib = import libPath;
  stub = import stubPath { inherit lib packagePath; };
  self = (import flakePath).outputs { inherit self; nixpkgs = stub.nixpkgs "x86_64-linux"; };
in
builtins.attrNames self.checks.x86_64-linux
"""


def test_the_flakes_checks_are_the_package_and_the_module_checks(
    nixpkgs_lib: Path, package_dir: Path, tmp_path: Path
) -> None:
    nix_instantiate = require("nix-instantiate")
    harness = tmp_path / "flake.nix"
    harness.write_text(FLAKE_HARNESS)
    result = run(
        [nix_instantiate, "--eval", "--strict", "--json", str(harness),
         "--arg", "libPath", str(nixpkgs_lib), "--arg", "stubPath", str(NIX_TESTS / "stub-nixos.nix"),
         "--arg", "flakePath", str(ROOT / "flake.nix"), "--argstr", "packagePath", str(package_dir)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cases = [*MISTAKES["assertions"], *MISTAKES["builds"]]
    assert set(json.loads(result.stdout)) == {"package", "module-system", "module-instances"} | {
        f"module-{name}" for name in cases
    }
