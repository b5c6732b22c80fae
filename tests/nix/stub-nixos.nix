# Just enough of NixOS and nixpkgs to evaluate nixos-module.nix with nixpkgs'
# lib alone (tests/unit/test_packaging.py): stub declarations of the options
# the module sets, nixpkgs' wg-quick unit shape, and a stub `pkgs` whose
# formats.toml keeps nixpkgs' value type but writes TOML with a small writer
# instead of remarshal, and whose runCommand writes down the script it would
# run, so the test can run that exact script against the real tool.
{
  lib,
  # A directory standing in for the package's store path (bin/ runs the tool).
  packagePath,
  # Where testBuildFailure's stand-in outputs are, for the flake-check test.
  buildFailureDir ? "/stub/build-failures",
}:
let
  inherit (lib) mkOption types;
  stubDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/stub/${name}";
    meta = { };
  };
  tomlValue =
    types.nullOr (
      types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        types.path
        (types.attrsOf tomlValue)
        (types.listOf tomlValue)
      ]
    )
    // {
      description = "TOML value";
    };
  # JSON scalars and arrays of them are valid TOML values; tables become headers.
  toTOML =
    let
      render =
        path: attrs:
        let
          tables = lib.filterAttrs (_: builtins.isAttrs) attrs;
          values = lib.filterAttrs (_: value: !builtins.isAttrs value) attrs;
        in
        lib.optionalString (path != [ ]) "[${lib.concatMapStringsSep "." builtins.toJSON path}]\n"
        + lib.concatStrings (
          lib.mapAttrsToList (key: value: "${builtins.toJSON key} = ${builtins.toJSON value}\n") values
        )
        + lib.concatStrings (lib.mapAttrsToList (key: table: "\n" + render (path ++ [ key ]) table) tables);
    in
    render [ ];

  pkgs = {
    formats.toml = { }: {
      type = types.attrsOf tomlValue;
      generate = name: value: builtins.toFile name (toTOML value);
    };
    runCommand =
      name: _env: script:
      builtins.toFile name (builtins.toJSON {
        runCommand = name;
        inherit script;
      });
    # Like nixpkgs' tester: an output holding the failed build's exit code and log.
    testers.testBuildFailure = drv: {
      type = "derivation";
      name = "build-failure";
      outPath = "${buildFailureDir}/${baseNameOf drv}";
      failingBuild = drv;
    };
    callPackage = _: _: {
      type = "derivation";
      name = "wg-failover";
      outPath = packagePath;
      meta = { };
    };
    prometheus-smokeping-prober = stubDrv "prometheus-smokeping-prober";
    iproute2 = stubDrv "iproute2";
    wireguard-tools = stubDrv "wireguard-tools";
  };
  utils.escapeSystemdExecArgs = lib.concatStringsSep " ";

  # Like nixpkgs' unitOption: lists concatenate, scalars must agree.
  unitScalar = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
  ];
  unitOption = types.either unitScalar (types.listOf unitScalar);
  strs = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  unit = types.submodule {
    freeformType = types.attrsOf types.anything;
    options = {
      after = strs;
      before = strs;
      wants = strs;
      wantedBy = strs;
      partOf = strs;
      onFailure = strs;
      script = mkOption {
        type = types.lines;
        default = "";
      };
      path = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      serviceConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      unitConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      timerConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
    };
  };
  anything = mkOption {
    type = types.anything;
    default = null;
  };

  stubOptions.options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    boot.isContainer = anything;
    system.stateVersion = anything;
    system.build.toplevel = mkOption {
      type = types.anything;
      default = stubDrv "toplevel";
    };
    environment.etc = mkOption {
      type = types.attrsOf (types.attrsOf types.anything);
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    systemd.package = mkOption {
      type = types.package;
      default = stubDrv "systemd";
    };
    systemd.packages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    systemd.tmpfiles.rules = strs;
    systemd.services = mkOption {
      type = types.attrsOf unit;
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf unit;
      default = { };
    };
    services.prometheus.enable = mkOption {
      type = types.bool;
      default = false;
    };
    # nixpkgs' globalConfig is a submodule of typed keys; merged the same way.
    services.prometheus.globalConfig.external_labels = mkOption {
      type = types.attrsOf types.str;
      default = { };
    };
    services.prometheus.scrapeConfigs = mkOption {
      type = types.listOf types.anything;
      default = [ ];
    };
    services.prometheus.exporters.smokeping = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      hosts = strs;
      # nixpkgs' exporter defaults.
      port = mkOption {
        type = types.port;
        default = 9374;
      };
      listenAddress = mkOption {
        type = types.str;
        default = "0.0.0.0";
      };
    };
    networking.hostName = mkOption {
      type = types.str;
      default = "nixos";
    };
    networking.wg-quick.interfaces = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.configFile = mkOption { type = types.nullOr types.str; };
        }
      );
      default = { };
    };
  };

  # As nixpkgs' wg-quick module: one wg-quick-NAME service per interface, run by `script`.
  wgQuick =
    { config, ... }:
    {
      systemd.services = lib.mapAttrs' (
        name: interface:
        lib.nameValuePair "wg-quick-${name}" {
          script = "cp ${interface.configFile} /tmp/${name}.conf\nwg-quick up /tmp/${name}.conf";
        }
      ) config.networking.wg-quick.interfaces;
    };
in
{
  inherit pkgs utils;
  # Modules to evaluate beside nixos-module.nix and the configuration.
  modules = [
    stubOptions
    wgQuick
    { _module.args = { inherit pkgs utils; }; }
  ];
  # A stand-in for the nixpkgs flake, for tests/nix/module-checks.nix.
  nixpkgs = system: {
    lib = lib // {
      nixosSystem =
        { modules, ... }:
        lib.evalModules {
          modules = modules ++ [
            stubOptions
            wgQuick
            { _module.args = { inherit pkgs utils; }; }
          ];
        };
    };
    legacyPackages.${system} = pkgs;
  };
}
