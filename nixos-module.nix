# NixOS module for wg-failover: usable as `imports = [ ./nixos-module.nix ];`
# or from the flake as `nixosModules.default`.
#
# It wires the three commands exactly as the original units did (see
# docs/install.md): wg-select before the tunnel unit, wg-failover as the
# tunnel's OnFailure= hook, wg-health-check on a timer, plus the two smokeping
# probers whose metrics the decisions are made from.
#
# One host may fail over several tunnels: each of
# `services.wg-failover.instances.<name>` is a whole setup of its own (units
# wg-select-<name>, wg-failover-<name>, ...). The options directly under
# `services.wg-failover` are one more instance, without a suffix, so a
# configuration written for a single tunnel keeps its units and paths.
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

  # The confinement every unit of the module shares, the tool's and the
  # probers': the whole file system read-only (each unit adds the paths it
  # writes), no home directories, private /tmp and no devices; kernel
  # settings, modules, logs, the clock, the hostname and the cgroup tree
  # never theirs to change (systemctl talks to PID 1 over a socket); no
  # privileges gained, no SUID/SGID files, no realtime scheduling, no
  # personality changes, native syscalls only; files they create private.
  confinement = {
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
    NoNewPrivileges = true;
    RestrictSUIDSGID = true;
    RestrictRealtime = true;
    LockPersonality = true;
    SystemCallArchitectures = "native";
    UMask = "0077";
  };

  # Which `[prometheus]` keys are secret files, and the credential name each
  # gets inside the units.
  credentialNames = {
    bearer_token_file = "prometheus-bearer-token";
    password_file = "prometheus-password";
  };

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
    unsafeName: value:
    let
      # An invalid instance name has its own assertion, which must be reached.
      name = lib.strings.sanitizeDerivationName unsafeName;
      file = settingsFormat.generate name value;
    in
    if cfg.checkConfig then
      pkgs.runCommand name { } ''
        ${checkCommand file}
        cp ${file} "$out"
      ''
    else
      file;

  # The units may write the whole directory of the link (it is replaced by
  # a rename beside it), so it must not be a directory other services share.
  sharedDirs = [
    "/"
    "/run"
    "/var/run"
    "/etc"
    "/var"
    "/var/lib"
    "/tmp"
  ];

  # An instance's name becomes part of unit names, paths, a Prometheus job
  # and the tool's `instance` key, so it is kept to what all of them accept.
  # `config` would take /etc/wg-failover/config.toml from the unnamed instance.
  validInstanceName = name: builtins.match "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}" name != null && name != "config";

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

  sectionOf =
    options:
    types.submodule {
      freeformType = settingsFormat.type;
      inherit options;
    };

  # What an instance's units, files and Prometheus job are called: the
  # unnamed instance (name = null) keeps today's names, a named one gets
  # `-<name>` after each unit and its own directories.
  namesOf = name: rec {
    suffix = if name == null then "" else "-${name}";
    select = "wg-select${suffix}";
    failover = "wg-failover${suffix}";
    healthCheck = "wg-health-check${suffix}";
    prober = "prometheus-smokeping-vpn${suffix}";
    proberJob = "vpn-prober${suffix}";
    stateDirectory = if name == null then "wg-failover" else "wg-failover/${name}";
    activeLink = if name == null then "/run/wg-failover/active.conf" else "/run/wg-failover/${name}/active.conf";
    etcFile = if name == null then "wg-failover/config.toml" else "wg-failover/${name}.toml";
    optionPath = if name == null then "services.wg-failover" else "services.wg-failover.instances.${name}";
  };

  # Everything one instance has, declared once for `services.wg-failover`
  # (name = null) and for each `services.wg-failover.instances.<name>`.
  # `self` is that instance's own configuration, `opts` its options.
  instanceOptions =
    {
      name,
      self,
      opts,
    }:
    let
      names = namesOf name;
      tunnelService = "${self.tunnelUnit}.service";
    in
    {
      enable =
        if name == null then
          mkEnableOption "automatic failover of a WireGuard tunnel between VPN servers, decided from Prometheus metrics"
        else
          mkOption {
            type = types.bool;
            default = true;
            description = "Whether this instance's units are installed; false keeps its definition but runs nothing.";
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
          otherwise. This module adds ${names.select} before it,
          `OnFailure=${names.failover}.service`, and by default (`mkDefault`)
          `Restart=on-failure` and `RestartSec=30s`. Each instance needs a
          tunnel unit of its own.
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
          `/etc/${names.etcFile}` for running the commands by hand.
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
            instance = mkOption {
              type = types.nullOr types.str;
              default = name;
              description = ''
                The tool's instance name: it writes its metrics to
                `wg_failover_<instance>.prom` and labels every series
                `wg_instance="<instance>"`, so several instances share one
                `textfile_dir`. A named instance sets its own name; null
                leaves the key out (one instance per host).
              '';
            };
            config_dir = mkOption {
              type = types.str;
              default = "/run/secrets/wireguard";
              description = "Directory holding one WireGuard config per server, named after the server.";
            };
            active_link = mkOption {
              type = types.strMatching "/.+";
              default = names.activeLink;
              description = ''
                The symlink the tunnel unit reads (e.g. `configFile` of
                `networking.wg-quick.interfaces.wg0`). Its directory, created
                by this module, is the only place under `/run` the units may
                write, so it must be a directory of its own: `/run` itself,
                `/etc` and the like are refused. No two instances may share a link.
              '';
            };
            state_dir = mkOption {
              type = types.str;
              default = "/var/lib/${names.stateDirectory}";
              description = ''
                Holds `current`, `health-failures` and the lock (compatible
                with the original scripts); systemd's `StateDirectory=`
                creates the default. No two instances may share one.
              '';
            };
            servers = mkOption {
              type = types.attrsOf (types.submodule serverModule);
              default = { };
              description = "The servers (`[servers.NAME]`); `servers` beside `settings` is merged in here.";
            };
            restart_command = mkOption {
              type = types.listOf types.str;
              default = [
                "systemctl"
                "restart"
                tunnelService
              ];
              defaultText = literalExpression ''[ "systemctl" "restart" "''${${names.optionPath}.tunnelUnit}.service" ]'';
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
                `wg_failover.prom` there (`wg_failover_<instance>.prom` for a
                named instance; mode 0644). Created by this module and made
                writable for the units. Null: no metrics file.
              '';
            };

            prometheus = mkOption {
              default = { };
              description = "How to reach Prometheus (`[prometheus]`).";
              type = sectionOf {
                url = mkOption {
                  type = types.either types.str (types.nonEmptyListOf types.str);
                  example = "https://prometheus.example.com";
                  description = "Base URL of the Prometheus HTTP API, or a list of them (an HA pair), tried in turn within one `timeout`.";
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
                probation = toolDefault duration "Confirm each new server within this long after a switch (a handshake with health.interface, else tunnel data over min_window); one that fails is left at once. 0 (a number) disables (tool default 20s). The units' TimeoutStartSec (10min) covers a pass through the servers.";
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
                selector = mkOption {
                  type = types.nullOr types.str;
                  # Each instance's tunnel probes come from its own internal
                  # prober; with one shared job every health check would sum
                  # all the host's tunnels.
                  default = if name == null then null else ''job="${names.proberJob}"'';
                  description = ''
                    Label matchers of the internal prober's series. Null: the
                    tool's default, `job="vpn-prober"`. A named instance
                    selects its own internal prober, `job="vpn-prober-<name>"`
                    (the job `scrapeProbers` gives it).
                  '';
                };
                on_no_data = toolDefault (types.enum [
                  "failure"
                  "ignore"
                ]) "Whether a check without data counts as failed (tool default failure).";
                failover_command = toolDefault (types.listOf types.str) ''
                  Command (argv) run when the health check decides to fail over,
                  e.g. `[ "systemctl" "start" "${names.failover}.service" ]`.
                  Null: switch in-process.
                '';
                interface = toolDefault types.str ''
                  WireGuard interface for the handshake fallback. Setting it
                  gives the health check CAP_SYS_ADMIN and CAP_NET_ADMIN.
                '';
                netns = toolDefault types.str "Network namespace name of `interface`.";
                handshake_timeout = toolDefault duration "Handshake age that counts as a dead tunnel (tool default 180s).";
              };
            };

            fleet = mkOption {
              default = { };
              description = "Which probes in a shared backend are this host's (`[fleet]`, see docs/fleets.md).";
              type = sectionOf {
                client_label = mkOption {
                  type = types.nullOr types.str;
                  default = cfg.fleet.clientLabel;
                  defaultText = literalExpression "config.services.wg-failover.fleet.clientLabel";
                  description = "The label naming this host on its probers' series; null: not scoped.";
                };
                client = mkOption {
                  type = types.nullOr types.str;
                  default = if cfg.fleet.clientLabel != null then cfg.fleet.client else null;
                  defaultText = literalExpression "config.services.wg-failover.fleet.client (with fleet.clientLabel set)";
                  description = "This host's value of `client_label`; null: the tool takes the short hostname at run time.";
                };
                ranking_scope = toolDefault (types.enum [
                  "client"
                  "fleet"
                ]) "Rank servers by this host's own probes (\"client\", the tool's default) or every host's (\"fleet\").";
              };
            };
          };
        };
      };

      probers.external = {
        enable = mkEnableOption ''
          the external smokeping prober (services.prometheus.exporters.smokeping)
          pinging every server's endpoint, so wg-failover can rank servers it
          is not connected to. Every server then needs an `endpoint`. One
          exporter serves every instance that enables it
        '';
      };

      probers.internal = {
        enable = mkEnableOption ''
          the internal smokeping prober, `${names.prober}.service`,
          which pings through the tunnel from inside the VPN network namespace
          and gives the health check its tunnel loss. Scrape it with the job
          name that `settings.health.selector` expects (`${names.proberJob}`;
          `services.wg-failover.scrapeProbers` does)
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
        # Whether `netns` was given at all (it has no default, and null is a
        # meaningful value); read by the assertion, per instance.
        netnsChosen = mkOption {
          type = types.bool;
          internal = true;
          readOnly = true;
          default = opts.probers.internal.netns.isDefined;
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
          description = ''
            Port the metrics are served on, inside the VPN namespace. Internal
            probers of two instances in the same namespace need different
            ports, and one in the main namespace a port other than the
            external prober's (an assertion says so).
          '';
        };
        extraFlags = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "--ping.interval=500ms" ];
          description = "Extra command line flags for the prober.";
        };
      };
    };

  # Unset (null) keys are dropped so a server given in both places merges
  # instead of conflicting.
  serversIntoSettings = servers: lib.mapAttrs (_: lib.filterAttrs (_: value: value != null)) servers;

  instanceModule =
    {
      name,
      config,
      options,
      ...
    }:
    {
      options = instanceOptions {
        inherit name;
        self = config;
        opts = options;
      };
      config.settings.servers = serversIntoSettings config.servers;
    };

  # Every enabled instance: the unnamed one first, then the named ones.
  instances =
    lib.optional cfg.enable (instanceFacts null cfg)
    ++ lib.mapAttrsToList instanceFacts (lib.filterAttrs (_: self: self.enable) cfg.instances);

  ownUnitNames = lib.concatMap (instance: instance.ownUnits) instances;

  # What the units, files and assertions of one instance are made of.
  instanceFacts =
    name: self:
    let
      names = namesOf name;
      path = names.optionPath;
      settings = self.settings;
      tunnelService = "${self.tunnelUnit}.service";
      internal = self.probers.internal;

      givenCredentials = lib.filterAttrs (key: _: settings.prometheus.${key} != null) credentialNames;
      loadCredential = lib.mapAttrsToList (
        key: credential: "${credential}:${settings.prometheus.${key}}"
      ) givenCredentials;

      # TOML has no null; unset typed options simply disappear, and so does
      # an empty [fleet] (a configuration without fleet options renders as
      # it did before they existed).
      renderedSettings =
        let
          given = lib.filterAttrsRecursive (_: value: value != null) settings;
        in
        if given.fleet == { } then removeAttrs given [ "fleet" ] else given;

      # TOML cannot expand $CREDENTIALS_DIRECTORY, and that directory is per unit
      # (/run/credentials/<unit>/), so each unit gets its own copy of the
      # configuration that differs only in the secret paths.
      configFileFor =
        unit:
        checkedConfig "wg-failover-${unit}.toml" (
          lib.recursiveUpdate renderedSettings {
            prometheus = lib.mapAttrs (_: credential: "/run/credentials/${unit}.service/${credential}") givenCredentials;
          }
        );

      command =
        tool: unit: extraArgs:
        utils.escapeSystemdExecArgs (
          [
            (lib.getExe' cfg.package tool)
            "--config"
            (configFileFor unit)
          ]
          ++ extraArgs
        );

      # The WireGuard handshake fallback enters another network namespace and
      # reads the interface over netlink; only then does the health check need
      # more than an ordinary client's privileges.
      handshakeFallback = settings.health.interface != null;

      # Every server, wherever it was given: `servers` is merged into
      # `settings.servers`, so the prober, the assertions and the TOML all read
      # this one list.
      allServers = settings.servers;
      serversWithoutEndpoint = lib.attrNames (lib.filterAttrs (_: server: server.endpoint == null) allServers);

      # The tunnel unit must exist elsewhere: the module only adds to it, and a
      # typo in tunnelUnit would otherwise define a phantom unit that starts
      # nothing while the real tunnel gets no OnFailure=.
      tunnelDefinition = config.systemd.services.${self.tunnelUnit};
      tunnelStartsSomething =
        tunnelDefinition.script != ""
        || tunnelDefinition.serviceConfig ? ExecStart
        # wg-quick@NAME comes from wireguard-tools' own unit files.
        || (lib.hasPrefix "wg-quick@" self.tunnelUnit && lib.elem pkgs.wireguard-tools config.systemd.packages);
      # Services that could be the one meant, for the error message.
      tunnelCandidates = lib.filter (
        unit: unit != self.tunnelUnit && !lib.elem unit ownUnitNames && lib.hasInfix "wg" unit
      ) (
        lib.attrNames (
          lib.filterAttrs (_: unit: unit.script != "" || unit.serviceConfig ? ExecStart) config.systemd.services
        )
      );

      linkDir = dirOf settings.active_link;

      netnsService = lib.optional (internal.netnsUnit != null) "${internal.netnsUnit}.service";

      # What every wg-failover unit shares. The units run as root: they swap a
      # link in /run, read WireGuard configs that hold private keys, and
      # wg-failover / wg-health-check must run `systemctl restart` on the tunnel,
      # which systemd only allows root (no polkit on a headless box). So the
      # sandbox cannot drop root; it narrows what root can touch instead.
      sandbox = confinement // {
        # The tool takes a lock and writes `current` and `health-failures` here;
        # systemd creates it, owned by root, 0700. A named instance's is
        # wg-failover/<name>, so instances never share a lock or a state.
        StateDirectory = names.stateDirectory;
        StateDirectoryMode = "0700";
        # The whole file system is read-only (confinement) except the paths
        # listed below. The active link is replaced atomically by a rename beside it, so its
        # own directory (/run/wg-failover by default, never all of /run) must be
        # writable, as must the node_exporter textfile dir and
        # a state_dir moved away from StateDirectory.
        ReadWritePaths = lib.unique (
          [ linkDir ]
          ++ lib.optional (settings.state_dir != "/var/lib/${names.stateDirectory}") settings.state_dir
          ++ lib.optional (settings.textfile_dir != null) settings.textfile_dir
        );
        # Reading WireGuard configs and secrets whatever their owner is all the
        # capability the tool needs; restarting units goes through PID 1.
        CapabilityBoundingSet = [ "CAP_DAC_READ_SEARCH" ];
        # State files are private (UMask, in confinement). The textfile is
        # written 0644 by the tool itself, so node_exporter can still read it.
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

      # Where Prometheus on this host reaches the internal prober.
      proberAddress =
        if lib.hasInfix ":" internal.listenAddress then "[${internal.listenAddress}]" else internal.listenAddress;
    in
    {
      inherit
        name
        names
        path
        self
        settings
        ;
      ownUnits = [
        names.select
        names.failover
        names.healthCheck
      ];
      endpoints = lib.filter (endpoint: endpoint != null) (
        lib.mapAttrsToList (_: server: server.endpoint) allServers
      );
      # A prober whose namespace is not chosen has its own assertion.
      internalProber = lib.optionalAttrs (internal.enable && internal.netnsChosen) {
        # The network namespace it listens in, for the port collision check.
        namespace = if internal.netns == null then "the main network namespace" else internal.netns;
        inherit (internal) port listenAddress netns;
        target = "${proberAddress}:${toString internal.port}";
        job = names.proberJob;
      };

      assertions = [
        {
          assertion = name == null || validInstanceName name;
          message = ''services.wg-failover.instances."${toString name}": an instance name is 1 to 64 letters, digits, "_", "." or "-", starting with a letter or digit, and not "config" (it names units, /etc/wg-failover/<name>.toml and a Prometheus job).'';
        }
        {
          assertion = allServers != { };
          message = "${path}.servers must name at least one server.";
        }
        {
          assertion = !lib.hasSuffix ".service" self.tunnelUnit;
          message = ''${path}.tunnelUnit = "${self.tunnelUnit}": give the unit name without ".service" (tunnelUnit = "${lib.removeSuffix ".service" self.tunnelUnit}").'';
        }
        {
          assertion = !lib.elem self.tunnelUnit ownUnitNames;
          message = ''${path}.tunnelUnit = "${self.tunnelUnit}" is one of wg-failover's own units; name the service that runs the WireGuard tunnel.'';
        }
        {
          assertion =
            lib.hasSuffix ".service" self.tunnelUnit || lib.elem self.tunnelUnit ownUnitNames || tunnelStartsSomething;
          message =
            ''${path}.tunnelUnit = "${self.tunnelUnit}": no such service starts anything (systemd.services.${self.tunnelUnit} has no ExecStart= or script).''
            + (
              if tunnelCandidates == [ ] then
                " Define the tunnel's unit, e.g. networking.wg-quick.interfaces.wg0 (tunnelUnit = \"wg-quick-wg0\")."
              else
                " Services that do: ${lib.concatStringsSep ", " tunnelCandidates}."
            );
        }
        {
          assertion = !lib.elem linkDir sharedDirs;
          message = ''${path}.settings.active_link = "${settings.active_link}": put the link in a directory of its own (e.g. ${names.activeLink}); the units may write its whole directory, and ${linkDir} is shared with other services.'';
        }
        {
          # No default: null (the main namespace) for a tunnel that lives in
          # its own would silently measure a path that is not the tunnel.
          assertion = !internal.enable || internal.netnsChosen;
          message = ''${path}.probers.internal.netns must be set: the VPN network namespace the prober pings from (e.g. "/run/netns/wg"), or null when the tunnel's routes are in the main namespace (nixpkgs' networking.wg-quick).'';
        }
        {
          assertion = !self.probers.external.enable || serversWithoutEndpoint == [ ];
          message = "${path}.probers.external needs an endpoint for every server; missing for: ${lib.concatStringsSep ", " serversWithoutEndpoint}.";
        }
        {
          assertion = lib.all (file: !lib.hasPrefix builtins.storeDir file) (
            lib.mapAttrsToList (key: _: settings.prometheus.${key}) givenCredentials
          );
          message = "${path}.settings.prometheus secret files must not be in the Nix store.";
        }
        {
          # From the main namespace, Prometheus cannot reach a loopback
          # address inside another one.
          assertion =
            !(cfg.scrapeProbers && internal.enable && internal.netns != null && isLoopback internal.listenAddress);
          message = ''${path}.probers.internal.listenAddress = "${internal.listenAddress}" is loopback inside ${toString internal.netns}, which services.wg-failover.scrapeProbers cannot reach from the main namespace; listen on an address Prometheus reaches there (e.g. a veth pair's).'';
        }
      ];

      # For running the commands by hand (`wg-failover --dry-run`): as root
      # the secret files are readable where they are.
      etc = lib.optionalAttrs (name == null || validInstanceName name) {
        ${names.etcFile}.source = checkedConfig "wg-failover${names.suffix}.toml" renderedSettings;
      };

      # The link's directory must exist before the units start: ReadWritePaths=
      # refuses a missing path. 0755: the tunnel unit reads the link.
      tmpfiles = [
        "d ${linkDir} 0755 root root -"
      ]
      ++ lib.optional (settings.textfile_dir != null) "d ${settings.textfile_dir} 0755 root root -";

      services = [
        {
          ${names.select} = {
            description = "Select the VPN server for the WireGuard tunnel${lib.optionalString (name != null) " ${name}"}";
            wantedBy = [ tunnelService ];
            before = [ tunnelService ];
            serviceConfig = sandbox // {
              Type = "oneshot";
              # Stays "active" so the tunnel's ordering holds and it runs once per boot.
              RemainAfterExit = true;
              ExecStart = command "wg-select" names.select [ ];
              # wg-select only restores or picks a name and swaps the link; it
              # never asks Prometheus, so it gets no network at all.
              PrivateNetwork = true;
              RestrictAddressFamilies = [ "AF_UNIX" ];
              RestrictNamespaces = true;
              SystemCallFilter = [ "@system-service" ];
              LoadCredential = loadCredential;
            };
          };

          ${names.failover} = {
            description = "Switch the WireGuard tunnel${lib.optionalString (name != null) " ${name}"} to the best other VPN server";
            path = [ config.systemd.package ];
            serviceConfig = clientSandbox // {
              Type = "oneshot";
              # This unit is the tunnel's OnFailure= hook, so that is the reason
              # it records, unless the health check started it (failover_command)
              # and left its own reason in the state directory; run
              # `wg-failover` by hand for a manual switch.
              ExecStart = command "wg-failover" names.failover [
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

          ${names.healthCheck} = {
            description = "Check the WireGuard tunnel${lib.optionalString (name != null) " ${name}"}'s packet loss and fail over on sustained loss";
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
              ExecStart = command "wg-health-check" names.healthCheck [ ];
              # A check may switch in-process, probation included: same bound as wg-failover.
              TimeoutStartSec = lib.mkDefault "10min";
            };
          };
        }

        # Apart from the units above, so a tunnelUnit that names one of them
        # reaches its assertion instead of a Nix attribute clash.
        {
          ${self.tunnelUnit} = {
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
            onFailure = [ "${names.failover}.service" ];
          };
        }

        (mkIf internal.enable {
          ${names.prober} = {
            description = "Smokeping prober inside the VPN namespace (tunnel loss for ${names.healthCheck})";
            after = [ tunnelService ] ++ netnsService;
            wants = [ tunnelService ];
            # Restarted with the tunnel or the namespace's unit: a namespace
            # recreated under it would leave it pinging inside a dead one.
            partOf = [ tunnelService ] ++ netnsService;
            wantedBy = [ "multi-user.target" ];
            # The namespace may appear only once the tunnel is up: keep retrying
            # instead of giving up after the default start limit.
            startLimitIntervalSec = 0;
            serviceConfig = confinement // {
              ExecStart = utils.escapeSystemdExecArgs (
                [
                  (lib.getExe' internal.package "smokeping_prober")
                  "--privileged"
                  "--web.listen-address=${proberAddress}:${toString internal.port}"
                ]
                ++ internal.extraFlags
                ++ internal.targets
              );
              # Pings go through the tunnel, from inside the VPN namespace (or the
              # main one, when the tunnel's routes live there).
              NetworkNamespacePath = lib.mkIf (internal.netns != null) internal.netns;
              Restart = "always";
              RestartSec = "10s";
              # An unprivileged throwaway user is enough for a prober.
              DynamicUser = true;
              # --privileged opens raw ICMP sockets: CAP_NET_RAW, and nothing else.
              AmbientCapabilities = [ "CAP_NET_RAW" ];
              CapabilityBoundingSet = [ "CAP_NET_RAW" ];
              # Ambient capabilities survive exec even with no_new_privs
              # (confinement sets it); the prober writes nothing anywhere.
              # ICMP and HTTP only; AF_UNIX for the journal.
              RestrictAddressFamilies = [
                "AF_UNIX"
                "AF_INET"
                "AF_INET6"
              ];
              RestrictNamespaces = true;
              # A Go binary never needs writable executable memory.
              MemoryDenyWriteExecute = true;
              SystemCallFilter = [ "@system-service" ];
            };
          };
        })
      ];

      timers.${names.healthCheck} = {
        description = "Run the WireGuard tunnel${lib.optionalString (name != null) " ${name}"} health check periodically";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnBootSec = self.timer.onBootSec;
          OnUnitActiveSec = self.timer.onUnitActiveSec;
          RandomizedDelaySec = self.timer.randomizedDelaySec;
          # systemd's default of 1min would let each check run up to a minute late.
          AccuracySec = lib.mkDefault "1s";
        };
      };
    };

  isLoopback = address: lib.hasPrefix "127." address || address == "::1" || address == "localhost";

  # Two instances that share one of these would fight over it: one tunnel
  # restarted by two failovers, one link or state (and lock) written by two
  # tools, or two probers that cannot both listen.
  collisions =
    what: valueOf: why: candidates:
    lib.mapAttrsToList (
      value: group:
      let
        first = lib.head group;
      in
      {
        assertion = lib.length group < 2;
        message = "${first.path}.${what} = ${builtins.toJSON (valueOf first)} is also ${
          lib.concatMapStringsSep " and " (other: "${other.path}.${what}") (lib.tail group)
        }: ${why}";
      }
    ) (lib.groupBy (instance: toString (valueOf instance)) candidates);

  withInternalProber = lib.filter (instance: instance.internalProber != { }) instances;

  # The external exporter listens on every address of the main namespace.
  external = config.services.prometheus.exporters.smokeping;
  anyExternal = lib.any (instance: instance.self.probers.external.enable) instances;
  externalTarget =
    let
      address = external.listenAddress;
    in
    if address == "0.0.0.0" || address == "" then
      "127.0.0.1:${toString external.port}"
    else if address == "::" then
      "[::1]:${toString external.port}"
    else if lib.hasInfix ":" address then
      "[${address}]:${toString external.port}"
    else
      "${address}:${toString external.port}";

  fleetLabels = lib.optionalAttrs (cfg.fleet.clientLabel != null && cfg.fleet.client != null) {
    ${cfg.fleet.clientLabel} = cfg.fleet.client;
  };

  # The scrape jobs the default queries select: `smokeping` for the external
  # prober (the ranking's job-free query matches it by `host`), and
  # `vpn-prober` / `vpn-prober-<name>` for each internal one (health.selector).
  scrapeConfigs =
    lib.optional anyExternal {
      job_name = "smokeping";
      static_configs = [
        {
          targets = [ externalTarget ];
          labels = fleetLabels;
        }
      ];
    }
    ++ map (instance: {
      job_name = instance.internalProber.job;
      static_configs = [
        {
          targets = [ instance.internalProber.target ];
          labels = fleetLabels;
        }
      ];
    }) withInternalProber;
in
{
  options.services.wg-failover =
    instanceOptions {
      name = null;
      self = cfg;
      opts = options.services.wg-failover;
    }
    // {
      package = mkOption {
        type = types.package;
        default = pkgs.callPackage ./package.nix { };
        defaultText = literalExpression "pkgs.callPackage ./package.nix { }";
        description = "The wg-failover package (this source tree, built by package.nix), for every instance.";
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

      instances = mkOption {
        type = types.attrsOf (types.submodule instanceModule);
        default = { };
        example = literalExpression ''
          {
            office = {
              tunnelUnit = "wg-quick-office";
              servers.office1.endpoint = "203.0.113.10";
              servers.office2.endpoint = "203.0.113.20";
              settings.prometheus.url = "https://prometheus.example.com";
            };
            vpn = {
              tunnelUnit = "wg-quick-vpn";
              servers.ams1.endpoint = "198.51.100.1";
              servers.fra1.endpoint = "198.51.100.2";
              settings.prometheus.url = "https://prometheus.example.com";
              probers.internal = { enable = true; netns = null; port = 9375; };
            };
          }
        '';
        description = ''
          Further tunnels to fail over, each a whole setup with every option
          `services.wg-failover` has (but `package` and `checkConfig`, which
          are shared). Instance NAME gets the units `wg-select-NAME`,
          `wg-failover-NAME` (its tunnel's `OnFailure=`), `wg-health-check-NAME`
          (and timer) and `prometheus-smokeping-vpn-NAME`, the state directory
          `/var/lib/wg-failover/NAME`, the link `/run/wg-failover/NAME/active.conf`,
          `/etc/wg-failover/NAME.toml`, `instance = "NAME"` in its
          configuration (its own textfile and `wg_instance` label) and a
          health selector `job="vpn-prober-NAME"`. The options directly under
          `services.wg-failover` remain one more instance, with today's names.
        '';
      };

      fleet = {
        clientLabel = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "wg_client";
          description = ''
            For many hosts sharing one metrics backend (docs/fleets.md): the
            label that names this host on its probers' series. Sets
            `settings.fleet.client_label` and `client` in every instance, so
            each host's queries select only its own probes; labels the
            probers' scrape jobs (`scrapeProbers`); and, with
            `fleet.externalLabel`, this host's Prometheus `external_labels`.
          '';
        };
        client = mkOption {
          type = types.nullOr types.str;
          default = if config.networking.hostName != "" then config.networking.hostName else null;
          defaultText = literalExpression "config.networking.hostName";
          description = ''
            This host's value of `clientLabel`. Null (the default when
            `networking.hostName` is empty): each tool takes the short
            hostname at run time, and the module cannot label the probers.
          '';
        };
        externalLabel = mkOption {
          type = types.bool;
          default = true;
          description = ''
            With `clientLabel` set and `services.prometheus.enable`, add
            `clientLabel = client` to `services.prometheus.globalConfig.external_labels`,
            so everything this host's Prometheus (full or agent) remote-writes
            to the fleet's backend carries it. External labels are not on the
            local series: point `settings.prometheus.url` at the backend.
          '';
        };
      };

      scrapeProbers = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Add `services.prometheus.scrapeConfigs` for the probers this module
          runs, with the job names the default queries select: `smokeping`
          for the external prober and `vpn-prober` (`vpn-prober-NAME` for an
          instance) for each internal one, labelled `fleet.clientLabel =
          fleet.client` when that is set, so the series carry the label
          locally and wherever they are remote-written. Needs
          `services.prometheus.enable`.
        '';
      };
    };

  config = mkMerge [
    (mkIf cfg.enable {
      services.wg-failover.settings.servers = serversIntoSettings cfg.servers;
    })
    {
      assertions =
        lib.concatMap (instance: instance.assertions) instances
        ++ collisions "tunnelUnit" (instance: instance.self.tunnelUnit)
          "each instance fails over a tunnel of its own; one tunnel restarted by two instances would flap between them."
          instances
        ++ collisions "settings.active_link" (instance: instance.settings.active_link)
          "each instance needs a link of its own (the tunnels would read each other's servers)."
          instances
        ++ collisions "settings.state_dir" (instance: instance.settings.state_dir)
          "each instance needs a state directory (and so a lock) of its own."
          instances
        ++ lib.concatLists (
          lib.mapAttrsToList (
            namespace: group:
            collisions "probers.internal.port" (instance: instance.internalProber.port)
              "two internal probers in one network namespace (${namespace}) need different ports."
              group
          ) (lib.groupBy (instance: instance.internalProber.namespace) withInternalProber)
        )
        ++ map (instance: {
          # Both listen in the main namespace; the exporter on every address.
          assertion = !(anyExternal && instance.internalProber.netns == null && instance.internalProber.port == external.port);
          message = "${instance.path}.probers.internal.port = ${toString instance.internalProber.port} is also the external prober's port (services.prometheus.exporters.smokeping.port) in the main network namespace; give the internal prober another, e.g. ${toString (external.port + 1)}.";
        }) withInternalProber
        ++ [
          {
            assertion = !cfg.scrapeProbers || config.services.prometheus.enable;
            message = "services.wg-failover.scrapeProbers adds scrape jobs to services.prometheus, which is not enabled; enable it (a full Prometheus or agent mode) or scrape the probers elsewhere.";
          }
          {
            assertion = cfg.fleet.clientLabel == null || cfg.fleet.client != null;
            message = "services.wg-failover.fleet.client must be set when fleet.clientLabel is (networking.hostName is empty): the probers' series are labelled with it at build time.";
          }
        ];

      environment.etc = mkMerge (map (instance: instance.etc) instances);
      environment.systemPackages = mkIf (instances != [ ]) [ cfg.package ];
      systemd.tmpfiles.rules = lib.concatMap (instance: instance.tmpfiles) instances;
      systemd.services = mkMerge (lib.concatMap (instance: instance.services) instances);
      systemd.timers = mkMerge (map (instance: instance.timers) instances);

      services.prometheus.exporters.smokeping = mkIf anyExternal {
        enable = true;
        # Merged with any hosts configured elsewhere; the `host` label is the
        # target as written here, which is what wg-failover queries.
        hosts = lib.unique (
          lib.concatMap (instance: lib.optionals instance.self.probers.external.enable instance.endpoints) instances
        );
      };

      services.prometheus.globalConfig.external_labels = mkIf (
        cfg.fleet.externalLabel && config.services.prometheus.enable && instances != [ ] && fleetLabels != { }
      ) fleetLabels;

      services.prometheus.scrapeConfigs = mkIf (cfg.scrapeProbers && instances != [ ]) scrapeConfigs;
    }
  ];
}
