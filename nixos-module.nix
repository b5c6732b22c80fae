# NixOS module for wg-failover: usable as `imports = [ ./nixos-module.nix ];`
# or from the flake as `nixosModules.default`.
#
# It wires the three commands exactly as the original units did (see
# docs/install.md): wg-select before the tunnel unit, wg-failover as the
# tunnel's OnFailure= hook, wg-health-check on a timer, plus the two smokeping
# probers whose metrics the decisions are made from.
{
  config,
  options,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib)
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    literalExpression
    types
    ;

  cfg = config.services.wg-failover;
  settingsFormat = pkgs.formats.toml { };

  tunnelService = "${cfg.tunnelUnit}.service";

  # Prometheus durations ("90s", "5m", "1h30m") or a number of seconds, as the
  # tool accepts them; checked here so a typo fails the build, not the boot.
  duration = types.either types.number (types.strMatching "([0-9]+(ms|s|m|h|d|w|y))+");

  # A setting the tool defaults itself: null leaves the key out of the TOML,
  # so the tool's own default (and its documentation) stays the one truth.
  toolDefault =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description;
    };

  # Secret files never enter the Nix store: they are strings (a Nix path
  # would be copied into the store) handed to systemd's LoadCredential=.
  secretFile =
    description:
    mkOption {
      type = types.nullOr (types.strMatching "/.*");
      default = null;
      example = "/run/secrets/prometheus-token";
      description = ''
        ${description} The file is passed to the units with `LoadCredential=`
        and the generated configuration points at the copy systemd places in
        `/run/credentials/<unit>/`, so it never enters the Nix store and may
        stay readable by root only.
      '';
    };

  # Which `[prometheus]` keys are secret files, and the credential name each
  # gets inside the units.
  credentialNames = {
    bearer_token_file = "prometheus-bearer-token";
    password_file = "prometheus-password";
  };
  givenCredentials = lib.filterAttrs (
    key: _: cfg.settings.prometheus.${key} != null
  ) credentialNames;
  loadCredential = lib.mapAttrsToList (
    key: name: "${name}:${cfg.settings.prometheus.${key}}"
  ) givenCredentials;

  # TOML has no null; unset typed options simply disappear.
  renderedSettings = lib.filterAttrsRecursive (_: value: value != null) cfg.settings;

  # The tool's own validator, run at build time on every generated file:
  # --offline checks types, keys (a typo gets the close key suggested) and
  # values, but not the files the config names, which are secrets that only
  # exist on the running system, nor Prometheus.
  checkCommand =
    file:
    utils.escapeSystemdExecArgs [
      (lib.getExe' cfg.package "wg-select")
      "--check-config"
      "--offline"
      "--config"
      file
    ];

  # A unit's --config is the output of this check, so no unit can be built
  # with a configuration the tool would refuse at 3 a.m. with exit 78.
  checkedConfig =
    name: value:
    let
      file = settingsFormat.generate name value;
    in
    if cfg.checkConfig then
      pkgs.runCommand name { } ''
        ${checkCommand file}
        cp ${file} "$out"
      ''
    else
      file;

  # TOML cannot expand $CREDENTIALS_DIRECTORY, and that directory is per unit
  # (/run/credentials/<unit>/), so each unit gets its own copy of the
  # configuration that differs only in the secret paths.
  configFileFor =
    unit:
    checkedConfig "wg-failover-${unit}.toml" (
      lib.recursiveUpdate renderedSettings {
        prometheus = lib.mapAttrs (_: name: "/run/credentials/${unit}.service/${name}") givenCredentials;
      }
    );

  command =
    name: unit: extraArgs:
    utils.escapeSystemdExecArgs (
      [
        (lib.getExe' cfg.package name)
        "--config"
        (configFileFor unit)
      ]
      ++ extraArgs
    );

  # The WireGuard handshake fallback enters another network namespace and
  # reads the interface over netlink; only then does the health check need
  # more than an ordinary client's privileges.
  handshakeFallback = cfg.settings.health.interface != null;

  # Every server, wherever it was given: `servers` is merged into
  # `settings.servers`, so the prober, the assertions and the TOML all read
  # this one list.
  allServers = cfg.settings.servers;

  # Servers without one are reported by an assertion, not a type error.
  endpoints = lib.filter (endpoint: endpoint != null) (
    lib.mapAttrsToList (_: server: server.endpoint) allServers
  );
  serversWithoutEndpoint = lib.attrNames (lib.filterAttrs (_: server: server.endpoint == null) allServers);

  # The tunnel unit must exist elsewhere: the module only adds to it, and a
  # typo in tunnelUnit would otherwise define a phantom unit that starts
  # nothing while the real tunnel gets no OnFailure=.
  tunnelDefinition = config.systemd.services.${cfg.tunnelUnit};
  tunnelStartsSomething =
    tunnelDefinition.script != ""
    || tunnelDefinition.serviceConfig ? ExecStart
    # wg-quick@NAME comes from wireguard-tools' own unit files.
    || (lib.hasPrefix "wg-quick@" cfg.tunnelUnit && lib.elem pkgs.wireguard-tools config.systemd.packages);
  # Services that could be the one meant, for the error message.
  tunnelCandidates = lib.filter (
    name: name != cfg.tunnelUnit && !lib.elem name ownUnits && lib.hasInfix "wg" name
  ) (
    lib.attrNames (
      lib.filterAttrs (_: unit: unit.script != "" || unit.serviceConfig ? ExecStart) config.systemd.services
    )
  );
  ownUnits = [
    "wg-select"
    "wg-failover"
    "wg-health-check"
  ];

  # The units may write the whole directory of the link (it is replaced by
  # a rename beside it), so it must not be a directory other services share.
  linkDir = dirOf cfg.settings.active_link;
  sharedDirs = [
    "/"
    "/run"
    "/var/run"
    "/etc"
    "/var"
    "/var/lib"
    "/tmp"
  ];

  # What every wg-failover unit shares. The units run as root: they swap a
  # link in /run, read WireGuard configs that hold private keys, and
  # wg-failover / wg-health-check must run `systemctl restart` on the tunnel,
  # which systemd only allows root (no polkit on a headless box). So the
  # sandbox cannot drop root; it narrows what root can touch instead.
  sandbox = {
    # The tool takes a lock and writes `current` and `health-failures` here;
    # systemd creates it, owned by root, 0700.
    StateDirectory = "wg-failover";
    StateDirectoryMode = "0700";
    # The whole file system is read-only except the paths listed below.
    ProtectSystem = "strict";
    # The active link is replaced atomically by a rename beside it, so its
    # own directory (/run/wg-failover by default, never all of /run) must be
    # writable, as must the node_exporter textfile dir and
    # a state_dir moved away from StateDirectory.
    ReadWritePaths = lib.unique (
      [ linkDir ]
      ++ lib.optional (cfg.settings.state_dir != "/var/lib/wg-failover") cfg.settings.state_dir
      ++ lib.optional (cfg.settings.textfile_dir != null) cfg.settings.textfile_dir
    );
    # Nothing here lives in home directories.
    ProtectHome = true;
    # Temporary files stay private to one run.
    PrivateTmp = true;
    # No device nodes are needed.
    PrivateDevices = true;
    # Kernel settings, modules, logs, the clock and the hostname are never ours to change.
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectClock = true;
    ProtectHostname = true;
    # systemctl talks to PID 1 over a socket; the cgroup tree itself stays read-only.
    ProtectControlGroups = true;
    # Neither the tool nor systemctl ever needs to gain privileges.
    NoNewPrivileges = true;
    RestrictSUIDSGID = true;
    RestrictRealtime = true;
    LockPersonality = true;
    SystemCallArchitectures = "native";
    # Reading WireGuard configs and secrets whatever their owner is all the
    # capability the tool needs; restarting units goes through PID 1.
    CapabilityBoundingSet = [ "CAP_DAC_READ_SEARCH" ];
    # State files are private. The textfile is written 0644 by the tool
    # itself, so node_exporter can still read it.
    UMask = "0077";
    # Not MemoryDenyWriteExecute: Python's ctypes/libffi closures need
    # writable and executable memory, and a crash there would block failover.
  };

  # Prometheus clients: wg-failover, and wg-health-check which switches
  # in-process by default.
  clientSandbox = sandbox // {
    # HTTP(S) to Prometheus; AF_UNIX for systemctl and the journal.
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
    # No namespaces of its own are created.
    RestrictNamespaces = true;
    # The usual service syscalls; systemctl needs nothing beyond them.
    SystemCallFilter = [ "@system-service" ];
    # Secret files named in [prometheus] (see settings.prometheus.*_file).
    LoadCredential = loadCredential;
  };

  healthSandbox =
    if handshakeFallback then
      clientSandbox
      // {
        # The handshake fallback reads the WireGuard interface over netlink.
        RestrictAddressFamilies = clientSandbox.RestrictAddressFamilies ++ [ "AF_NETLINK" ];
        # Entering the VPN namespace (`ip netns exec`) needs CAP_SYS_ADMIN and
        # a private mount namespace, and `wg show` needs CAP_NET_ADMIN, so
        # the namespace and syscall restrictions cannot apply here.
        CapabilityBoundingSet = sandbox.CapabilityBoundingSet ++ [
          "CAP_SYS_ADMIN"
          "CAP_NET_ADMIN"
        ];
        RestrictNamespaces = false;
        SystemCallFilter = [ ];
      }
    else
      clientSandbox;

  serverModule = {
    # Keys the module does not declare (e.g. a newer tool's) pass through to
    # the TOML, where the tool's validator judges them at build time.
    freeformType = settingsFormat.type;
    options.endpoint = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "203.0.113.10";
      description = ''
        The address the external prober pings for this server, and the
        value of the prober's `host` label that losses are looked up by.
        When null, the tool takes the host of `Endpoint=` in the server's
        WireGuard config; the external prober then cannot be configured from
        it (that config is a secret only readable at run time).
      '';
    };
    options.priority = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = null;
      example = 1;
      description = ''
        Lower is preferred. A failover picks a healthy server of the most
        preferred tier first; with `settings.failover.failback_after` set,
        the tunnel returns to a more preferred server once it has been
        healthy that long. Servers without a priority form the last tier;
        with none at all every server is equal.
      '';
    };
  };

  netnsService = lib.optional (
    cfg.probers.internal.netnsUnit != null
  ) "${cfg.probers.internal.netnsUnit}.service";

  sectionOf = options: types.submodule {
    freeformType = settingsFormat.type;
    inherit options;
  };
in
{
  options.services.wg-failover = {
    enable = mkEnableOption "automatic failover of a WireGuard tunnel between VPN servers, decided from Prometheus metrics";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The wg-failover package (this source tree, built by package.nix).";
    };

    tunnelUnit = mkOption {
      type = types.str;
      default = "wg";
      example = "wg-quick-wg0";
      description = ''
        Name of the systemd service (without `.service`) that brings the
        tunnel up from `settings.active_link`, e.g. `wg-quick-wg0` for
        nixpkgs' `networking.wg-quick.interfaces.wg0`. It must be defined
        elsewhere with an `ExecStart=` or `script` (or be `wg-quick@NAME`
        with wireguard-tools in `systemd.packages`); evaluation fails
        otherwise. This module adds wg-select before it,
        `OnFailure=wg-failover.service`, and by default (`mkDefault`)
        `Restart=on-failure` and `RestartSec=30s`.
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Validate every generated configuration at build time with the tool's
        own `--check-config --offline` (types, unknown keys with the close
        key suggested, values; not the secret files, which only exist at run
        time, nor Prometheus). A mistake then fails `nixos-rebuild` instead
        of every unit at run time. Turn off only when the build machine
        cannot run the package (cross-compilation).
      '';
    };

    servers = mkOption {
      type = types.attrsOf (types.submodule serverModule);
      default = { };
      example = literalExpression ''
        {
          server1 = { endpoint = "203.0.113.10"; priority = 1; };
          server2.endpoint = "203.0.113.20";
          server3 = { };
        }
      '';
      description = ''
        The VPN servers to fail over between. Server NAME's WireGuard config
        is `settings.config_dir/NAME`. Rendered into `[servers.NAME]`.
        Merged into `settings.servers`: servers may be given in either place
        (or both), and the probers and checks see them all.
      '';
    };

    timer = {
      onBootSec = mkOption {
        type = types.str;
        default = "2min";
        description = "First health check this long after boot (systemd time span).";
      };
      onUnitActiveSec = mkOption {
        type = types.str;
        default = "1min";
        description = "Health check cadence: this long after the previous check started.";
      };
      randomizedDelaySec = mkOption {
        type = types.str;
        default = "10s";
        description = "Random delay added to each health check.";
      };
    };

    settings = mkOption {
      default = { };
      description = ''
        The wg-failover configuration, rendered to TOML (see
        docs/configuration.md for every key). Keys not declared here are
        passed through as written. Typed keys left null are omitted, so the
        tool's own default applies. The units get the file with `--config`;
        a copy with the secret files' original paths is installed as
        `/etc/wg-failover/config.toml` for running the commands by hand.
      '';
      example = literalExpression ''
        {
          textfile_dir = "/var/lib/prometheus-node-exporter";
          prometheus.url = "https://prometheus.example.com";
          prometheus.bearer_token_file = "/run/secrets/prometheus-token";
          health.threshold = 0.1;
        }
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          config_dir = mkOption {
            type = types.str;
            default = "/run/secrets/wireguard";
            description = "Directory holding one WireGuard config per server, named after the server.";
          };
          active_link = mkOption {
            type = types.strMatching "/.+";
            default = "/run/wg-failover/active.conf";
            description = ''
              The symlink the tunnel unit reads (e.g. `configFile` of
              `networking.wg-quick.interfaces.wg0`). Its directory, created
              by this module, is the only place under `/run` the units may
              write, so it must be a directory of its own: `/run` itself,
              `/etc` and the like are refused.
            '';
          };
          state_dir = mkOption {
            type = types.str;
            default = "/var/lib/wg-failover";
            description = "Holds `current` and `health-failures` (compatible with the original scripts).";
          };
          servers = mkOption {
            type = types.attrsOf (types.submodule serverModule);
            default = { };
            description = "The servers (`[servers.NAME]`); `services.wg-failover.servers` is merged in here.";
          };
          restart_command = mkOption {
            type = types.listOf types.str;
            default = [
              "systemctl"
              "restart"
              tunnelService
            ];
            defaultText = literalExpression ''[ "systemctl" "restart" "''${config.services.wg-failover.tunnelUnit}.service" ]'';
            description = "Command (argv, no shell) that restarts the tunnel after a switch.";
          };
          restart_timeout = toolDefault duration "Bound on `restart_command` (tool default 60s).";
          lock_timeout = toolDefault duration "How long to wait for the state lock (tool default 30s).";
          textfile_dir = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "/var/lib/prometheus-node-exporter";
            description = ''
              node_exporter textfile collector directory; the tool writes
              `wg_failover.prom` there (mode 0644). Created by this module
              and made writable for the units. Null: no metrics file.
            '';
          };

          prometheus = mkOption {
            default = { };
            description = "How to reach Prometheus (`[prometheus]`).";
            type = sectionOf {
              url = mkOption {
                type = types.str;
                example = "https://prometheus.example.com";
                description = "Base URL of the Prometheus HTTP API.";
              };
              timeout = toolDefault duration "Bound on all queries of one command (tool default 5 seconds).";
              ca_file = toolDefault types.str "CA bundle to verify Prometheus' certificate with.";
              insecure_skip_verify = toolDefault types.bool "Skip TLS verification (tool default false).";
              username = toolDefault types.str "User for HTTP basic auth, with `password_file`.";
              password_file = secretFile "File holding the HTTP basic auth password.";
              bearer_token_file = secretFile "File holding a bearer token for Prometheus.";
            };
          };

          failover = mkOption {
            default = { };
            description = "How the next server is chosen (`[failover]`).";
            type = sectionOf {
              window = toolDefault duration "rate() window for endpoint loss (tool default 5m).";
              hold_down = toolDefault duration "How long a server just left stays ranked last (tool default 30m).";
              on_prometheus_error = toolDefault (types.enum [
                "random"
                "fail"
              ]) "What to do when Prometheus cannot be asked (tool default random).";
              tie_epsilon = toolDefault types.number "Losses closer than this count as equal (tool default 0.02).";
              latency_tie = toolDefault (types.numbers.between 0 1) "Round-trip times within this fraction of the lowest count as equal, so servers' weights decide among them (tool default 0.10).";
              failback_after = toolDefault duration "Return to a more preferred server (see servers.<name>.priority) once the prober saw it healthy this long, e.g. \"15m\" (tool default: never).";
              probation = toolDefault duration "Confirm each new server within this long after a switch (a handshake with health.interface, else tunnel data over min_window); one that fails is left at once. \"0\" disables (tool default 20s). The units' TimeoutStartSec (10min) covers a pass through the servers.";
            };
          };

          health = mkOption {
            default = { };
            description = "How the tunnel is judged (`[health]`).";
            type = sectionOf {
              threshold = toolDefault (types.numbers.between 0 1) "Tunnel loss ratio above which a check fails (tool default 0.15).";
              max_failures = toolDefault types.ints.positive "Consecutive failed checks that trigger a failover (tool default 3).";
              window = toolDefault duration "Longest span one check judges (tool default 5m).";
              min_window = toolDefault duration "Shortest span one check judges (tool default 30s).";
              on_no_data = toolDefault (types.enum [
                "failure"
                "ignore"
              ]) "Whether a check without data counts as failed (tool default failure).";
              failover_command = toolDefault (types.listOf types.str) ''
                Command (argv) run when the health check decides to fail over.
                Null: switch in-process.
              '';
              interface = toolDefault types.str ''
                WireGuard interface for the handshake fallback. Setting it
                gives wg-health-check CAP_SYS_ADMIN and CAP_NET_ADMIN.
              '';
              netns = toolDefault types.str "Network namespace name of `interface`.";
              handshake_timeout = toolDefault duration "Handshake age that counts as a dead tunnel (tool default 180s).";
            };
          };
        };
      };
    };

    probers.external = {
      enable = mkEnableOption ''
        the external smokeping prober (services.prometheus.exporters.smokeping)
        pinging every server's endpoint, so wg-failover can rank servers it
        is not connected to. Every server then needs an `endpoint`
      '';
    };

    probers.internal = {
      enable = mkEnableOption ''
        the internal smokeping prober, `prometheus-smokeping-vpn.service`,
        which pings through the tunnel from inside the VPN network namespace
        and gives wg-health-check its tunnel loss. Scrape it with the job
        name that `settings.health.selector` expects (`vpn-prober`)
      '';
      package = lib.mkPackageOption pkgs "prometheus-smokeping-prober" { };
      netns = mkOption {
        type = types.nullOr types.str;
        example = "/run/netns/wg";
        description = ''
          Path of the VPN network namespace the prober runs in
          (`NetworkNamespacePath=`), or null to run it in the main namespace
          when the tunnel lives there (nixpkgs' `networking.wg-quick`, whose
          routes send the targets through the tunnel). Must be set when the
          prober is enabled (an assertion says so): a prober in the wrong
          namespace would measure a path that is not the tunnel.
        '';
      };
      netnsUnit = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "netns-wg";
        description = ''
          Service (without `.service`) that creates `netns`, if one does. The
          prober is ordered after it and is part of it, so a recreated
          namespace restarts the prober inside the new one.
        '';
      };
      targets = mkOption {
        type = types.listOf types.str;
        default = [
          "198.41.0.4"
          "192.33.4.12"
        ];
        description = ''
          Hosts pinged through the tunnel (default: a.root-servers.net and
          c.root-servers.net). The health check aggregates over all of them.
        '';
      };
      listenAddress = mkOption {
        type = types.str;
        default = "127.0.0.1";
        description = ''
          Address the metrics are served on, in the prober's namespace.
          Loopback by default, so the VPN peer cannot read them; with a
          `netns`, set the address Prometheus reaches there (e.g. a veth
          pair's), never `0.0.0.0`, which the tunnel's peer can reach too.
        '';
      };
      port = mkOption {
        type = types.port;
        default = 9374;
        description = "Port the metrics are served on, inside the VPN namespace.";
      };
      extraFlags = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--ping.interval=500ms" ];
        description = "Extra command line flags for the prober.";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = allServers != { };
          message = "services.wg-failover.servers must name at least one server.";
        }
        {
          assertion = !lib.hasSuffix ".service" cfg.tunnelUnit;
          message = ''services.wg-failover.tunnelUnit = "${cfg.tunnelUnit}": give the unit name without ".service" (tunnelUnit = "${lib.removeSuffix ".service" cfg.tunnelUnit}").'';
        }
        {
          assertion = !lib.elem cfg.tunnelUnit ownUnits;
          message = ''services.wg-failover.tunnelUnit = "${cfg.tunnelUnit}" is one of wg-failover's own units; name the service that runs the WireGuard tunnel.'';
        }
        {
          assertion = lib.hasSuffix ".service" cfg.tunnelUnit || lib.elem cfg.tunnelUnit ownUnits || tunnelStartsSomething;
          message =
            ''services.wg-failover.tunnelUnit = "${cfg.tunnelUnit}": no such service starts anything (systemd.services.${cfg.tunnelUnit} has no ExecStart= or script).''
            + (
              if tunnelCandidates == [ ] then
                " Define the tunnel's unit, e.g. networking.wg-quick.interfaces.wg0 (tunnelUnit = \"wg-quick-wg0\")."
              else
                " Services that do: ${lib.concatStringsSep ", " tunnelCandidates}."
            );
        }
        {
          assertion = !lib.elem linkDir sharedDirs;
          message = ''services.wg-failover.settings.active_link = "${cfg.settings.active_link}": put the link in a directory of its own (e.g. /run/wg-failover/active.conf); the units may write its whole directory, and ${linkDir} is shared with other services.'';
        }
        {
          # No default: null (the main namespace) for a tunnel that lives in
          # its own would silently measure a path that is not the tunnel.
          assertion = !cfg.probers.internal.enable || options.services.wg-failover.probers.internal.netns.isDefined;
          message = ''services.wg-failover.probers.internal.netns must be set: the VPN network namespace the prober pings from (e.g. "/run/netns/wg"), or null when the tunnel's routes are in the main namespace (nixpkgs' networking.wg-quick).'';
        }
        {
          assertion = !cfg.probers.external.enable || serversWithoutEndpoint == [ ];
          message = "services.wg-failover.probers.external needs an endpoint for every server; missing for: ${lib.concatStringsSep ", " serversWithoutEndpoint}.";
        }
        {
          assertion = lib.all (path: !lib.hasPrefix builtins.storeDir path) (
            lib.mapAttrsToList (key: _: cfg.settings.prometheus.${key}) givenCredentials
          );
          message = "services.wg-failover.settings.prometheus secret files must not be in the Nix store.";
        }
      ];

      # Unset (null) keys are dropped so a server given in both places
      # merges instead of conflicting.
      services.wg-failover.settings.servers = lib.mapAttrs (
        _: lib.filterAttrs (_: value: value != null)
      ) cfg.servers;

      # For running the commands by hand (`wg-failover --dry-run`): as root
      # the secret files are readable where they are.
      environment.etc."wg-failover/config.toml".source = checkedConfig "wg-failover.toml" renderedSettings;
      environment.systemPackages = [ cfg.package ];

      # The link's directory must exist before the units start: ReadWritePaths=
      # refuses a missing path. 0755: the tunnel unit reads the link.
      systemd.tmpfiles.rules = [
        "d ${linkDir} 0755 root root -"
      ]
      ++ lib.optional (cfg.settings.textfile_dir != null) "d ${cfg.settings.textfile_dir} 0755 root root -";

      systemd.services.wg-select = {
        description = "Select the VPN server for the WireGuard tunnel";
        wantedBy = [ tunnelService ];
        before = [ tunnelService ];
        serviceConfig = sandbox // {
          Type = "oneshot";
          # Stays "active" so the tunnel's ordering holds and it runs once per boot.
          RemainAfterExit = true;
          ExecStart = command "wg-select" "wg-select" [ ];
          # wg-select only restores or picks a name and swaps the link; it
          # never asks Prometheus, so it gets no network at all.
          PrivateNetwork = true;
          RestrictAddressFamilies = [ "AF_UNIX" ];
          RestrictNamespaces = true;
          SystemCallFilter = [ "@system-service" ];
          LoadCredential = loadCredential;
        };
      };

      systemd.services.wg-failover = {
        description = "Switch the WireGuard tunnel to the best other VPN server";
        path = [ config.systemd.package ];
        serviceConfig = clientSandbox // {
          Type = "oneshot";
          # This unit is the tunnel's OnFailure= hook, so that is the reason
          # it records, unless wg-health-check started it (failover_command)
          # and left its own reason in the state directory; run
          # `wg-failover` by hand for a manual switch.
          ExecStart = command "wg-failover" "wg-failover" [
            "--reason"
            "unit-failed"
          ];
          # Must cover lock_timeout + prometheus.timeout and, for each server
          # a probation episode may try, restart_timeout + failover.probation
          # (twice health.min_window when judged by tunnel data): 30s + 5s +
          # 3 x (60s + 60s) for three servers by default, with room to spare.
          TimeoutStartSec = lib.mkDefault "10min";
        };
      };

      systemd.services.wg-health-check = {
        description = "Check the WireGuard tunnel's packet loss and fail over on sustained loss";
        after = [ tunnelService ];
        path = [
          config.systemd.package
        ]
        ++ lib.optionals handshakeFallback [
          pkgs.iproute2
          pkgs.wireguard-tools
        ];
        serviceConfig = healthSandbox // {
          Type = "oneshot";
          ExecStart = command "wg-health-check" "wg-health-check" [ ];
          # A check may switch in-process, probation included: same bound as wg-failover.
          TimeoutStartSec = lib.mkDefault "10min";
        };
      };

      systemd.timers.wg-health-check = {
        description = "Run the WireGuard tunnel health check periodically";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnBootSec = cfg.timer.onBootSec;
          OnUnitActiveSec = cfg.timer.onUnitActiveSec;
          RandomizedDelaySec = cfg.timer.randomizedDelaySec;
          # systemd's default of 1min would let each check run up to a minute late.
          AccuracySec = lib.mkDefault "1s";
        };
      };

    }

    # Apart from the units above, so a tunnelUnit that names one of them
    # reaches its assertion instead of a Nix attribute clash.
    {
      systemd.services.${cfg.tunnelUnit} = {
        # The tunnel fails e.g. when an endpoint name does not resolve at
        # boot. systemd passes a failing unit through the "failed" state
        # before each automatic restart (unless RestartMode=direct), so
        # OnFailure= fires every time and wg-failover moves to another
        # server while the restart keeps retrying.
        # Defaults only: the tunnel unit is the user's.
        serviceConfig = {
          Restart = lib.mkDefault "on-failure";
          RestartSec = lib.mkDefault "30s";
        };
        onFailure = [ "wg-failover.service" ];
      };
    }

    (mkIf cfg.probers.external.enable {
      services.prometheus.exporters.smokeping = {
        enable = true;
        # Merged with any hosts configured elsewhere; the `host` label is the
        # target as written here, which is what wg-failover queries.
        hosts = endpoints;
      };
    })

    (mkIf cfg.probers.internal.enable {
      systemd.services.prometheus-smokeping-vpn = {
        description = "Smokeping prober inside the VPN namespace (tunnel loss for wg-health-check)";
        after = [ tunnelService ] ++ netnsService;
        wants = [ tunnelService ];
        # Restarted with the tunnel or the namespace's unit: a namespace
        # recreated under it would leave it pinging inside a dead one.
        partOf = [ tunnelService ] ++ netnsService;
        wantedBy = [ "multi-user.target" ];
        # The namespace may appear only once the tunnel is up: keep retrying
        # instead of giving up after the default start limit.
        startLimitIntervalSec = 0;
        serviceConfig = {
          ExecStart = utils.escapeSystemdExecArgs (
            [
              (lib.getExe' cfg.probers.internal.package "smokeping_prober")
              "--privileged"
              "--web.listen-address=${
                if lib.hasInfix ":" cfg.probers.internal.listenAddress then
                  "[${cfg.probers.internal.listenAddress}]"
                else
                  cfg.probers.internal.listenAddress
              }:${toString cfg.probers.internal.port}"
            ]
            ++ cfg.probers.internal.extraFlags
            ++ cfg.probers.internal.targets
          );
          # Pings go through the tunnel, from inside the VPN namespace (or the
          # main one, when the tunnel's routes live there).
          NetworkNamespacePath = lib.mkIf (cfg.probers.internal.netns != null) cfg.probers.internal.netns;
          Restart = "always";
          RestartSec = "10s";
          # An unprivileged throwaway user is enough for a prober.
          DynamicUser = true;
          # --privileged opens raw ICMP sockets: CAP_NET_RAW, and nothing else.
          AmbientCapabilities = [ "CAP_NET_RAW" ];
          CapabilityBoundingSet = [ "CAP_NET_RAW" ];
          # Ambient capabilities survive exec even with no_new_privs.
          NoNewPrivileges = true;
          # It writes nothing anywhere.
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectClock = true;
          ProtectHostname = true;
          ProtectControlGroups = true;
          # ICMP and HTTP only; AF_UNIX for the journal.
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          RestrictNamespaces = true;
          RestrictSUIDSGID = true;
          RestrictRealtime = true;
          LockPersonality = true;
          # A Go binary never needs writable executable memory.
          MemoryDenyWriteExecute = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [ "@system-service" ];
          UMask = "0077";
        };
      };
    })
  ]);
}
