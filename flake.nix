{
  description = "Automatic failover of a WireGuard tunnel between VPN servers, decided from Prometheus metrics";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      # The units and the probers are Linux-only.
      forAllSystems = nixpkgs.lib.genAttrs [
        "x86_64-linux"
        "aarch64-linux"
      ];
    in
    {
      packages = forAllSystems (system: rec {
        wg-failover = nixpkgs.legacyPackages.${system}.callPackage ./package.nix { };
        default = wg-failover;
      });

      overlays.default = final: _prev: {
        wg-failover = final.callPackage ./package.nix { };
      };

      # The module builds its default package from this tree itself, so it
      # works the same with or without the flake.
      nixosModules.default = ./nixos-module.nix;

      # The package (with its unit tests), and the module evaluated with this
      # nixpkgs: a system built with it, and each mistake refused with its
      # message (tests/nix/module-checks.nix).
      checks = forAllSystems (
        system:
        {
          package = self.packages.${system}.default;
        }
        // import ./tests/nix/module-checks.nix {
          inherit nixpkgs system;
          module = self.nixosModules.default;
        }
      );
    };
}
