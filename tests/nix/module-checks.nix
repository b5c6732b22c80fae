# The flake's checks of the NixOS module, with the real nixpkgs:
#
# - module-system: a NixOS system (a container) built with the module and
#   nixpkgs' own networking.wg-quick, which also runs the tool's build-time
#   `--check-config --offline` on every configuration it generates;
# - module-<case> for each case of module-mistakes.json: an evaluation that
#   must fail one assertion with exactly its message, or a generated
#   configuration whose build must fail with the tool's exit code and message;
# - module-instances: the `instances` configuration of module-mistakes.json
#   (two named instances beside the unnamed one) accepted, with its units.
#
# tests/unit/test_packaging.py evaluates the same cases with nixpkgs' lib
# alone, and these checks with a stand-in nixpkgs (tests/nix/stub-nixos.nix).
{
  nixpkgs,
  system,
  module,
}:
let
  inherit (nixpkgs) lib;
  pkgs = nixpkgs.legacyPackages.${system};
  cases = lib.importJSON ./module-mistakes.json;

  evalSystem =
    extra:
    nixpkgs.lib.nixosSystem {
      inherit system;
      modules = [
        module
        # Merged table by table, as two module definitions would be.
        (lib.recursiveUpdate cases.base extra)
        {
          # A container needs no boot loader or file systems to build.
          boot.isContainer = true;
          system.stateVersion = lib.trivial.release;
        }
      ];
    };

  failedAssertions =
    extra: map (a: a.message) (lib.filter (a: !a.assertion) (evalSystem extra).config.assertions);

  refusedAtEvaluation =
    name: case:
    let
      got = failedAssertions case.config;
    in
    pkgs.runCommand "wg-failover-module-${name}" { } (
      if got == [ case.message ] then
        ''touch "$out"''
      else
        ''
          echo ${lib.escapeShellArg "expected: ${builtins.toJSON [ case.message ]}"} >&2
          echo ${lib.escapeShellArg "got:      ${builtins.toJSON got}"} >&2
          exit 1
        ''
    );

  refusedAtBuild =
    name: case:
    let
      failed = pkgs.testers.testBuildFailure (evalSystem case.config).config.environment.etc."wg-failover/config.toml".source;
    in
    pkgs.runCommand "wg-failover-module-${name}" { } ''
      [ "$(cat ${failed}/testBuildFailure.exit)" = ${toString case.exitCode} ]
      grep -F -- ${lib.escapeShellArg case.stderr} ${failed}/testBuildFailure.log
      touch "$out"
    '';

  named = check: lib.mapAttrs' (name: case: lib.nameValuePair "module-${name}" (check name case));

  # Two named instances beside the unnamed one: accepted, each with its own
  # units hooked into its own tunnel, and the whole system built (so every
  # instance's configuration passes the tool's build-time check).
  instances =
    let
      case = cases.instances;
      system = evalSystem case.config;
      services = system.config.systemd.services;
      problems =
        failedAssertions case.config
        ++ map (unit: "missing unit ${unit}") (lib.filter (unit: !services ? ${unit}) case.units)
        ++ lib.mapAttrsToList (tunnel: hook: "${tunnel} lacks OnFailure=${hook}") (
          lib.filterAttrs (tunnel: hook: !lib.elem hook services.${tunnel}.onFailure) case.onFailure
        );
    in
    pkgs.runCommand "wg-failover-module-instances" { } (
      if problems == [ ] then
        ''echo ${system.config.system.build.toplevel} > "$out"''
      else
        ''
          echo ${lib.escapeShellArg (builtins.toJSON problems)} >&2
          exit 1
        ''
    );
in
{
  module-system = (evalSystem { }).config.system.build.toplevel;
  module-instances = instances;
}
// named refusedAtEvaluation cases.assertions
// named refusedAtBuild cases.builds
