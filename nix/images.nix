# The two OCI images, built with nixpkgs' dockerTools.buildLayeredImage.
#
# buildLayeredImage (not streamLayeredImage): the result is a .tar.gz in the store, so
# `docker load < result` works, the image checks and the VM test read the same file,
# and skopeo pushes it as `docker-archive:` without the gzip-pipe workaround a stream
# needs. The price is one compressed copy per image in the store.
#
# Shared layers: both images use the same layeringPipeline. Its first step splits the
# closure into "main" (everything reachable from the shared roots: the app/venv, CA
# certificates, tzdata, the passwd/group files) and "rest" (runner-only: LibreOffice,
# poppler, fonts). "main" is layered by popularity on its own, so the api image's store
# layers are byte-identical to the first layers of the runner image (same store paths,
# fixed mtime and owner): pushing or pulling the second image transfers only the rest.
# checks.<system>.images-share-layers verifies this on the built images.
{
  pkgs,
  lib,
  app,
  rev,
}:
let
  uid = 1000;
  home = "/home/app";

  # /etc/passwd, /etc/group (root, nobody and app:1000), nsswitch.conf, /var/empty.
  nss = pkgs.fakeNss.override {
    extraPasswdLines = [ "app:x:${toString uid}:${toString uid}:wcu-ai:${home}:/noshell" ];
    extraGroupLines = [ "app:x:${toString uid}:" ];
  };

  caBundle = "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt";
  zoneinfo = "${pkgs.tzdata}/share/zoneinfo";

  # app puts /bin/wcu-ai at the image root (its links point into the venv).
  baseContents = [
    app
    nss
    pkgs.dockerTools.caCertificates
  ];

  # Every store path the api image needs; the runner image has them too.
  sharedRoots = map toString (
    baseContents
    ++ [
      pkgs.cacert
      pkgs.tzdata
    ]
  );

  layeringPipeline = [
    [
      "subcomponent_out"
      sharedRoots
    ]
    [
      "over"
      "main"
      [
        "pipe"
        [
          [ "popularity_contest" ]
          [
            "limit_layers"
            60
          ]
        ]
      ]
    ]
    [
      "over"
      "rest"
      [
        "pipe"
        [
          [ "popularity_contest" ]
          [
            "limit_layers"
            55
          ]
        ]
      ]
    ]
  ];

  baseEnv = [
    "SSL_CERT_FILE=${caBundle}"
    "TZDIR=${zoneinfo}"
    "PYTHONTZPATH=${zoneinfo}"
    "PYTHONUNBUFFERED=1"
    "AGNO_TELEMETRY=false"
    "HOME=${home}"
    "LANG=C.UTF-8"
  ];

  labels = title: description: {
    "org.opencontainers.image.title" = title;
    "org.opencontainers.image.description" = description;
    "org.opencontainers.image.revision" = rev;
    "org.opencontainers.image.version" = app.version;
  };

  # Fonts metric-compatible with Office documents: Liberation (Arial, Times New Roman,
  # Courier New), Carlito (Calibri), Caladea (Cambria), DejaVu as the fallback.
  # carlito and caladea are looked up by name: they exist in nixpkgs
  # (pkgs/by-name/ca/carlito, pkgs/by-name/ca/caladea) but not in the offline stand-in
  # used to evaluate this flake here; the runner image's build fails without them
  # (requireTools below) and checks.<system>.runner-fonts fails if fontconfig does not find
  # them through the fonts the runner image uses.
  officeFontNames = [
    "carlito"
    "caladea"
  ];
  officeFonts = map (name: pkgs.${name}) (lib.filter (name: pkgs ? ${name}) officeFontNames);
  fontsConf = pkgs.makeFontsConf {
    fontDirectories = [
      pkgs.liberation_ttf
      pkgs.dejavu_fonts
    ]
    ++ officeFonts;
    # fontconfig's own rules (30-metric-aliases.conf: Calibri -> Carlito, Arial ->
    # Liberation Sans, ...). The default, /etc/fonts/conf.d, does not exist in the image.
    includes = [ "${pkgs.fontconfig.out}/etc/fonts/conf.d" ];
  };

  # OCR for scanned PDFs: pdftoppm (poppler-utils) renders, tesseract reads. The default
  # tesseract5 carries every language's data; only English is kept (WCU_OCR_LANGUAGES
  # defaults to eng; add languages here to allow more). prlimit runs every document tool
  # under kernel limits; util-linuxMinimal's `bin` output is the smallest that has it (its
  # `lib` output is in LibreOffice's closure already, through glib's libmount).
  # tesseract5 and util-linuxMinimal are not in the offline stand-in nixpkgs (they are
  # pkgs/applications/graphics/tesseract and pkgs/top-level/all-packages.nix there):
  # looked up by name; the runner image's build fails without them (requireTools below)
  # and checks.<system>.runner-tools runs them.
  ocrLanguages = [ "eng" ];
  ocr = lib.optional (pkgs ? tesseract5) (
    pkgs.tesseract5.override { enableLanguages = ocrLanguages; }
  );
  prlimit = lib.optional (pkgs ? util-linuxMinimal) (lib.getBin pkgs.util-linuxMinimal);

  # libreoffice-still: the build Hydra caches (no Writer-only or headless variant exists;
  # overriding the unwrapped build means hours of compiling). The -qt variants add
  # Qt/KDE, -fresh is the same size on a faster-moving branch. Only the small wrapper is
  # rebuilt: dbusVerify = false stops `soffice` from starting a private dbus-daemon (and
  # making directories under /run or /tmp) on every conversion; headless conversion
  # does not use D-Bus.
  office = pkgs.libreoffice-still.override { dbusVerify = false; };
  popplerUtils = pkgs.poppler-utils;

  # The document tools the runner looks up on PATH, named in ./runner-tools.json
  # (tests/nix/test_runner_tools.py fails when the code needs one the file lacks), and the
  # packages that provide them: the runner image's PATH and the pytest check's, one list so
  # the two cannot drift.
  runnerToolNames = (lib.importJSON ./runner-tools.json).tools;
  runnerTools = [
    office
    popplerUtils
  ]
  ++ ocr
  ++ prlimit;
  runnerPath = lib.makeBinPath ([ app ] ++ runnerTools);

  # Attributes looked up with `pkgs ? name` above: a real nixpkgs without one must fail the
  # image build (a runner without prlimit refuses every document), not drop it silently.
  # The offline stand-in lacks them all; there the image is only evaluated, never built.
  lookedUp = [
    "tesseract5"
    "util-linuxMinimal"
  ]
  ++ officeFontNames;
  missingAttrs = lib.filter (name: !(pkgs ? ${name})) lookedUp;

  # Part of the runner image's extraCommands (a bash build step of the customisation
  # layer): the build fails on a missing attribute or on a tool its PATH does not have.
  requireTools =
    {
      image,
      path,
      tools,
    }:
    lib.optionalString (missingAttrs != [ ]) ''
      echo "${image}: this nixpkgs has no ${lib.concatStringsSep ", " missingAttrs}" >&2
      exit 1
    ''
    + ''
      for tool in ${lib.escapeShellArgs tools}; do
        PATH=${path} command -v "$tool" >/dev/null ||
          { echo "${image}: $tool is not on the image's PATH" >&2; exit 1; }
      done
    '';

  mkImage =
    {
      name,
      description,
      entrypoint,
      extraEnv ? [ ],
      extraConfig ? { },
      extraHomeDirs ? [ ],
      # a bash build step that fails the build (requireTools)
      buildTest ? "",
    }:
    pkgs.dockerTools.buildLayeredImage {
      inherit name layeringPipeline;
      tag = rev;
      contents = baseContents;
      # Runs in the customisation layer's root (relative paths); the mode survives
      # because the layer is tarred inside the build. Layered images have no /tmp.
      extraCommands = ''
        mkdir -m 1777 tmp
      ''
      + buildTest;
      # fakeroot makes the chown stick in the layer: HOME belongs to uid 1000.
      fakeRootCommands = ''
        mkdir -p .${home} ${lib.concatMapStringsSep " " (d: ".${home}/${d}") extraHomeDirs}
        chown -R ${toString uid}:${toString uid} .${home}
      '';
      config = {
        User = "${toString uid}:${toString uid}";
        WorkingDir = home;
        Entrypoint = [
          "${app}/bin/wcu-ai"
          entrypoint
        ];
        StopSignal = "SIGTERM";
        Env = baseEnv ++ extraEnv;
        Labels = labels name description;
      }
      // extraConfig;
    };

  api-image = mkImage {
    name = "wcu-ai-api";
    description = "wcu-ai API server (stateless, port 8000)";
    entrypoint = "api";
    extraEnv = [ "PATH=${app}/bin" ];
    extraConfig.ExposedPorts."8000/tcp" = { };
  };

  runner-image = mkImage {
    name = "wcu-ai-task-runner";
    description = "wcu-ai singleton task runner (documents: LibreOffice, poppler, tesseract)";
    entrypoint = "runner";
    # Prometheus metrics when WCU_RUNNER_METRICS_PORT is set (9464 recommended; off by
    # default). The API's metrics are on its own port, 8000.
    extraConfig.ExposedPorts."9464/tcp" = { };
    extraEnv = [
      "PATH=${runnerPath}"
      "FONTCONFIG_FILE=${fontsConf}"
    ];
    buildTest = requireTools {
      image = "wcu-ai-task-runner";
      path = runnerPath;
      tools = [ "wcu-ai" ] ++ runnerToolNames;
    };
    # LibreOffice writes its user profile under $HOME/.config/libreoffice.
    extraHomeDirs = [
      ".config"
      ".config/libreoffice"
      ".cache"
    ];
  };
in
{
  inherit
    api-image
    runner-image
    fontsConf
    office
    popplerUtils
    runnerToolNames
    runnerTools
    runnerPath
    uid
    home
    ;
}
