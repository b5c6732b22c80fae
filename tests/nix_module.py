"""Evaluate nixos-module.nix with nixpkgs' lib alone, and build what it renders.

The module is evaluated with the real lib.evalModules and the stand-ins of
tests/nix/stub-nixos.nix for NixOS's options and nixpkgs' packages. Its
configs come out as stub runCommands (the build-time check): `read_built`
runs each one's script as the Nix builder would, against the real tool, and
returns the checked TOML. Used by tests/unit/test_packaging.py and by
anything that needs the units the module renders (the systemd suite).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NIX_TESTS = ROOT / "tests" / "nix"

HARNESS = r"""
{ libPath, stubPath, modulePath, packagePath, configJSON }:
let
  lib = import libPath;
  stub = import stubPath { inherit lib packagePath; };
  config' = builtins.fromJSON configJSON;
  inherit (lib.evalModules {
    modules = stub.modules ++ [
      modulePath
      (removeAttrs config' [ "useWireguardToolsUnits" ])
      # JSON cannot name a package: this flag puts wireguard-tools in systemd.packages.
      { systemd.packages = lib.optional (config'.useWireguardToolsUnits or false) stub.pkgs.wireguard-tools; }
    ];
  }) config;
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  services = lib.mapAttrs (_: unit: unit // { path = map (p: p.name) unit.path; }) config.systemd.services;
  timers = config.systemd.timers;
  smokeping = { inherit (config.services.prometheus.exporters.smokeping) enable hosts; };
  prometheus = { inherit (config.services.prometheus) globalConfig scrapeConfigs; };
  etcConfig = config.environment.etc."wg-failover/config.toml".source or null;
  etc = lib.mapAttrs (_: file: file.source) config.environment.etc;
  tmpfiles = config.systemd.tmpfiles.rules;
}
"""


def default_nixpkgs_lib() -> Path | None:
    """
    Return nixpkgs' lib/ from WGF_NIXPKGS_LIB, else from shared/ beside the
    repository (where CI puts it), or None. From a git worktree, shared/ sits
    beside the main checkout.
    """
    if os.environ.get("WGF_NIXPKGS_LIB"):
        return Path(os.environ["WGF_NIXPKGS_LIB"])
    checkouts = [ROOT]
    git = ROOT / ".git"
    if git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        checkouts.append(Path(git.read_text().removeprefix("gitdir:").strip()).parents[2])
    for checkout in checkouts:
        candidate = checkout.parent / "shared" / "nixpkgs-lib" / "lib"
        if (candidate / "default.nix").is_file():
            return candidate
    return None


def evaluate_module(config: dict[str, Any], *, nixpkgs_lib: Path, package_dir: Path) -> dict[str, Any]:
    """
    Given a NixOS configuration as JSON data, nixpkgs' lib/ and a directory
    standing in for the package (its bin/ runs the tool), evaluate the module
    and return the failed assertions' messages, the services, timers, the
    smokeping exporter's settings, the Prometheus scrape configs and
    global config, the /etc config of the unnamed instance (null without
    one), every /etc file by name and the tmpfiles rules.
    Raise RuntimeError with Nix's message if evaluation fails.
    """
    with tempfile.TemporaryDirectory() as scratch:
        harness = Path(scratch) / "harness.nix"
        harness.write_text(HARNESS)
        # --read-write-mode: the rendered configs (builtins.toFile) must
        # really be written so they can be read back.
        result = subprocess.run(
            ["nix-instantiate", "--eval", "--strict", "--json", "--read-write-mode", str(harness),
             "--arg", "libPath", str(nixpkgs_lib),
             "--arg", "stubPath", str(NIX_TESTS / "stub-nixos.nix"),
             "--arg", "modulePath", str(ROOT / "nixos-module.nix"),
             "--argstr", "packagePath", str(package_dir),
             "--argstr", "configJSON", json.dumps(config)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"evaluating nixos-module.nix failed: {result.stderr}")
    evaluated: dict[str, Any] = json.loads(result.stdout)
    return evaluated


def config_file(service: dict[str, Any]) -> Path:
    return Path(service["serviceConfig"]["ExecStart"].split("--config ", 1)[1].split()[0])


def build_stub(derivation: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Given a stub runCommand's file, run its script as the Nix builder would, with $out at out."""
    script = json.loads(derivation.read_text())["script"]
    return subprocess.run(
        ["sh", "-e", "-c", script], env={**os.environ, "out": str(out)}, capture_output=True, text=True, timeout=60
    )


def read_built(path: Path) -> dict[str, Any]:
    """Given a config file the module rendered, build it if it is a check, and return its TOML."""
    text = path.read_text()
    if text.startswith('{"runCommand"'):
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "out"
            built = build_stub(path, out)
            if built.returncode != 0:
                raise RuntimeError(f"the build-time check of {path} failed: {built.stderr}")
            text = out.read_text()
    return tomllib.loads(text)
