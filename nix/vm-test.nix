# Integration test in a NixOS VM: both images loaded into Docker, PostgreSQL 16 with
# pgvector as a NixOS service, the runner started first (Agno tables, migrations), then
# the API; health probes, a PDF and a DOCX uploaded and parsed, a clean runner stop.
# The test script itself is ./vm-test.py; the values it needs are prepended here.
{ pkgs, images }:
let
  inherit (images) api-image runner-image;

  fixtures = pkgs.runCommand "wcu-ai-fixtures" { nativeBuildInputs = [ pkgs.python3 ]; } ''
    python3 ${./fixtures.py} "$out"
  '';

  params = ''
    api_image = "${api-image}"
    runner_image = "${runner-image}"
    api_ref = "${api-image.imageName}:${api-image.imageTag}"
    runner_ref = "${runner-image.imageName}:${runner-image.imageTag}"
    fixtures = "${fixtures}"
  '';
in
pkgs.testers.runNixOSTest {
  name = "wcu-ai-integration";

  nodes.machine = {
    virtualisation = {
      # LibreOffice alone is several hundred MB unpacked; images are loaded twice
      # (tarball in the store, layers in /var/lib/docker).
      diskSize = 8192;
      memorySize = 4096;
      cores = 2;
      docker.enable = true;
    };

    services.postgresql = {
      enable = true;
      package = pkgs.postgresql_16;
      extensions = ps: [ ps.pgvector ];
    };

    environment.systemPackages = [
      pkgs.curl
      pkgs.jq
    ];
  };

  testScript = params + builtins.readFile ./vm-test.py;
}
