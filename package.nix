# Builds wg-failover from this source tree: `pkgs.callPackage ./package.nix { }`.
# Needs nixpkgs 24.05 or later (buildPythonApplication's build-system/dependencies).
{
  lib,
  python3Packages,
}:
let
  # The version has one home: pyproject.toml.
  project = (lib.importTOML ./pyproject.toml).project;
in
python3Packages.buildPythonApplication {
  pname = "wg-failover";
  inherit (project) version;
  pyproject = true;

  # Only what git would track; no result links or caches.
  src = lib.cleanSource ./.;

  build-system = [ python3Packages.setuptools ];

  # Keep in step with [project.dependencies] in pyproject.toml
  # (tests/unit/test_packaging.py checks every name appears here).
  dependencies =
    with python3Packages;
    [
      click
      requests
    ]
    ++ lib.optionals (pythonOlder "3.11") [ tomli ];

  nativeCheckInputs = with python3Packages; [
    pytestCheckHook
    requests-mock
    hypothesis
  ];
  # The build sandbox has no Prometheus, prober, network or root: unit tests only.
  pytestFlagsArray = [ "tests/unit" ];

  pythonImportsCheck = [ "wgfailover" ];

  meta = {
    inherit (project) description;
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "wg-failover";
  };
}
