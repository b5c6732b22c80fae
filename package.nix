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

  # The checkout without version-control files, result links, and the
  # local state `make` and the lab leave in it (virtualenv, builds, caches).
  src = lib.cleanSourceWith {
    src = lib.cleanSource ./.;
    filter =
      path: _type:
      !lib.elem (baseNameOf path) [
        ".venv"
        "build"
        "dist"
        ".lab"
        ".hypothesis"
        ".pytest_cache"
        ".mypy_cache"
        ".ruff_cache"
        "__pycache__"
      ];
  };

  # click: setup.py writes the man pages (share/man/man1) from the --help texts.
  build-system = with python3Packages; [
    setuptools
    click
  ];

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
  # The build sandbox has no Prometheus, prober, network or root: unit tests
  # only. They run the commands through the installed entry points
  # (tests/commands.py), and the checks needing nix-instantiate,
  # systemd-analyze or promtool skip, saying so.
  enabledTestPaths = [ "tests/unit" ];
  # It builds a wheel with pip, whose isolated build environment needs the
  # network; this build is that check (the pages land in share/man/man1).
  disabledTests = [ "test_the_wheel_installs_a_man_page_per_command" ];

  pythonImportsCheck = [ "wgfailover" ];

  meta = {
    inherit (project) description;
    homepage = project.urls.Homepage;
    changelog = project.urls.Changelog;
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "wg-failover";
  };
}
