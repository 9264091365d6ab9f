# `nix flake check`: tests, linters and checks of the built images.
{
  pkgs,
  lib,
  python,
  py,
  images,
  # this system's push scripts (nix/push.nix)
  push,
}:
let
  inherit (images) api-image runner-image;

  postgresql = pkgs.postgresql_16.withPackages (ps: [ ps.pgvector ]);

  fontconfigBin = lib.getBin pkgs.fontconfig;

  # A check script with `inputs` on PATH; it fails on the first failing command.
  mkCheck =
    name: inputs: script:
    pkgs.runCommand name { nativeBuildInputs = inputs; } ''
      set -euo pipefail
      ${script}
    '';
  jqCheck = name: mkCheck name [ pkgs.jq ];

  fixtures = import ./fixtures.nix { inherit pkgs; };

  # The VM test's database image (check-only) and its entrypoint script.
  pgvector = import ./pgvector-image.nix { inherit pkgs lib; };

  # Every writeShellApplication of the flake. Building one runs `bash -n` on it; shellcheck
  # runs in its build in older nixpkgs and is its passthru.tests.shellcheck in newer ones
  # (pkgs/build-support/trivial-builders/default.nix), which no check builds unless named:
  # both are built here. .ci/nix-check fails if the offline evaluation did not lint one of
  # the writeShellApplication scripts in nix/ (it reaches them through this check).
  shellScripts = [
    push.pushScript
    push.manifestScript
    pgvector.entrypoint
  ];

  # Every .nix file of the repository, for the formatting check.
  nixFiles = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
  };

  # Reads an image tarball's manifest and config; the history comments list the store
  # paths of each layer ("store paths: [...]"), which is the layer list checked here.
  imageCheck =
    name: image:
    {
      entrypoint,
      forbidden ? [ ],
      required ? [ ],
    }:
    jqCheck "check-${name}" ''
      image=${image}
      tar -xzOf "$image" manifest.json > manifest.json
      config=$(jq -r '.[0].Config' manifest.json)
      tar -xzOf "$image" "$config" > config.json
      jq . config.json

      jq -e '.config.User == "${toString images.uid}:${toString images.uid}"' config.json
      jq -e '.config.Entrypoint | length == 2 and (.[0] | endswith("/bin/wcu-ai")) and .[1] == "${entrypoint}"' config.json
      jq -e '.config.StopSignal == "SIGTERM"' config.json
      jq -e '.config.Labels["org.opencontainers.image.revision"] | length > 0' config.json
      for var in SSL_CERT_FILE TZDIR PYTHONUNBUFFERED=1 AGNO_TELEMETRY=false HOME=${images.home}; do
        jq -e --arg v "$var" 'any(.config.Env[]; startswith($v))' config.json
      done

      jq -r '.history[].comment' config.json > layers.txt
      for frag in ${lib.escapeShellArgs forbidden}; do
        if grep -q -- "$frag" layers.txt; then
          echo "image ${name} must not contain $frag" >&2
          exit 1
        fi
      done
      for frag in ${lib.escapeShellArgs required}; do
        grep -q -- "$frag" layers.txt || { echo "image ${name} lacks $frag" >&2; exit 1; }
      done

      # Customisation layer (the last one): sticky world-writable /tmp, HOME owned by 1000.
      last=$(jq -r '.[0].Layers[-1]' manifest.json)
      tar -xzOf "$image" "$last" | tar -tv --numeric-owner -f - > custom.txt
      grep -E '^drwxrwxrwt .* \./tmp/?$' custom.txt
      grep -E '^d[rwx-]{9} ${toString images.uid}/${toString images.uid} .* \.${images.home}/?$' custom.txt
      touch $out
    '';
in
{
  pytest = pkgs.stdenv.mkDerivation {
    name = "wcu-ai-pytest";
    src = python.testSrc;
    dontConfigure = true;
    dontBuild = true;
    doCheck = true;

    # The runner image's document tools (soffice, poppler, tesseract, prlimit): with CI=true
    # a test fails when the code's tools are not on PATH.
    nativeCheckInputs = [
      py.devVenv
      postgresql
      pkgs.postgresqlTestHook
    ]
    ++ images.runnerTools;

    # postgresqlTestHook: a server in the build sandbox (unix socket under $NIX_BUILD_TOP,
    # no TCP; PGUSER=test_user, PGDATABASE=test_db). tests/conftest.py creates a fresh
    # database per test and the code creates the vector extension in it, so the test role
    # is a superuser here (on RDS: rds_superuser once, see deployment.md).
    postgresqlTestUserOptions = "LOGIN SUPERUSER";

    checkPhase = ''
      runHook preCheck
      export HOME=$(mktemp -d)
      export CI=true
      export FONTCONFIG_FILE=${images.fontsConf}
      export WCU_TEST_DATABASE_URL="postgresql:///$PGDATABASE?host=$PGHOST"
      # `wcu-ai dev` on its embedded PostgreSQL (pgserver) is a developer convenience
      # that no image contains, and pgserver is not in this environment (no linux-aarch64
      # wheel). The runner-as-PID-1 tests need root to create PID namespaces; the VM test
      # runs the real image as PID 1 instead. .ci/run runs both.
      pytest -p no:cacheprovider -m "not embedded_postgres and not pid_namespace"
      runHook postCheck
    '';

    installPhase = ''
      touch $out
    '';
  };

  # The ruff of uv.lock's dev group with pyproject.toml's settings, as .ci/run runs it.
  ruff = pkgs.runCommand "wcu-ai-ruff" { nativeBuildInputs = [ py.devVenv ]; } ''
    cd ${python.testSrc}
    ruff check --no-cache .
    ruff format --no-cache --check .
    touch $out
  '';

  nixfmt = pkgs.runCommand "wcu-ai-nixfmt" { nativeBuildInputs = [ pkgs.nixfmt ]; } ''
    find ${nixFiles} -name '*.nix' -print0 | xargs -0 nixfmt --check
    touch $out
  '';

  api-image = imageCheck "api-image" api-image {
    entrypoint = "api";
    forbidden = [
      "libreoffice"
      "poppler"
    ];
  };

  runner-image = imageCheck "runner-image" runner-image {
    entrypoint = "runner";
    required = [
      "libreoffice"
      "poppler"
    ];
  };

  # The api image's store layers must be layers of the runner image too (see images.nix).
  images-share-layers = jqCheck "check-images-share-layers" ''
    tar -xzOf ${api-image} manifest.json | jq -r '.[0].Layers[:-1][]' | sort > api.txt
    tar -xzOf ${runner-image} manifest.json | jq -r '.[0].Layers[]' | sort > runner.txt
    missing=$(comm -23 api.txt runner.txt)
    if [ -n "$missing" ]; then
      echo "api layers not shared with the runner image:" >&2
      echo "$missing" >&2
      exit 1
    fi
    echo "$(wc -l < api.txt) api store layers, all shared"
    touch $out
  '';

  # The fonts LibreOffice needs for Office documents are found through FONTCONFIG_FILE,
  # and fontconfig's metric aliases apply: a DOCX in Calibri is laid out in Carlito.
  runner-fonts = mkCheck "check-runner-fonts" [ fontconfigBin ] ''
    export HOME=$TMPDIR
    export FONTCONFIG_FILE=${images.fontsConf}
    fc-list : family > families.txt
    for family in "Liberation Sans" "Liberation Serif" Carlito Caladea "DejaVu Sans"; do
      grep -q "$family" families.txt || { echo "missing font $family" >&2; exit 1; }
    done
    for alias in Calibri:Carlito Cambria:Caladea Arial:"Liberation Sans" "Times New Roman":"Liberation Serif"; do
      got=$(fc-match -f '%{family[0]}' "''${alias%%:*}")
      [ "$got" = "''${alias#*:}" ] || { echo "fc-match ''${alias%%:*}: $got, not ''${alias#*:}" >&2; exit 1; }
    done
    touch $out
  '';

  # The runner's document tools, on the image's PATH: OCR of a rendered PDF page reads
  # the text back (pdftoppm + tesseract with English data), prlimit runs.
  runner-tools = mkCheck "check-runner-tools" [ ] ''
    export HOME=$TMPDIR
    export FONTCONFIG_FILE=${images.fontsConf}
    for tool in ${lib.escapeShellArgs images.runnerToolNames}; do
      PATH=${images.runnerPath} command -v "$tool" || { echo "runner image: $tool is not on PATH" >&2; exit 1; }
    done
    # The image's PATH first; the sandbox's own tools (grep, tee, touch) after it.
    export PATH=${images.runnerPath}:$PATH
    tesseract --list-langs | grep -qx eng
    prlimit --as=4294967296 --cpu=60 -- pdfinfo ${fixtures}/sample.pdf
    pdftoppm -r 200 -png -f 1 -l 1 ${fixtures}/sample.pdf page
    tesseract page-1.png - -l eng | tee ocr.txt
    grep -qi "integration test document" ocr.txt
    touch $out
  '';

  # The push apps find every tool they run on their own PATH (they do not inherit the
  # caller's). Their build already fails without one (push.toolsChecked); this runs them.
  push-tools = mkCheck "check-push-tools" [ ] ''
    ${lib.getExe push.pushScript} --check-tools
    ${lib.getExe push.manifestScript} --check-tools
    touch $out
  '';

  shell-scripts = pkgs.linkFarm "wcu-ai-shell-scripts" (
    map (script: {
      inherit (script) name;
      path = script;
    }) shellScripts
    ++ lib.concatMap (
      script:
      lib.mapAttrsToList (test: path: {
        name = "${script.name}-${test}";
        inherit path;
      }) (script.tests or { })
    ) shellScripts
  );

  # Built on every runner, also those without KVM that skip the VM test.
  pgvector-image = pgvector.image;

  vm = import ./vm-test.nix {
    inherit pkgs images fixtures;
    pgvector-image = pgvector.image;
  };
}
