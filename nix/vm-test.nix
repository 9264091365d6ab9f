# Integration test in a NixOS VM: the two images and a PostgreSQL 16 + pgvector image
# (./pgvector-image.nix, check-only) loaded into Docker; the containers reach the
# database by name over a user-defined Docker network, as they would reach RDS. The
# runner starts first (Agno tables, migrations) with the hardening deployment.md
# recommends (--read-only, tmpfs /tmp and /home/app), then the API; health probes, a PDF
# and a DOCX uploaded and parsed, a clean runner stop, and the images' sizes in the log.
# The test script itself is ./vm-test.py; the values it needs are prepended here.
{
  pkgs,
  images,
  # ./pgvector-image.nix's image and ./fixtures.nix, shared with the other checks
  pgvector-image,
  fixtures,
}:
let
  inherit (images) api-image runner-image;

  ref = image: "${image.imageName}:${image.imageTag}";
  params = ''
    images = ["${runner-image}", "${api-image}", "${pgvector-image}"]
    api_ref = "${ref api-image}"
    runner_ref = "${ref runner-image}"
    db_ref = "${ref pgvector-image}"
    fixtures = "${fixtures}"
  '';
in
pkgs.testers.runNixOSTest {
  name = "wcu-ai-integration";

  nodes.machine = {
    virtualisation = {
      # Three images, each twice: the tarball in the store and its layers in
      # /var/lib/docker; LibreOffice's closure alone is about 1.7 GB unpacked.
      diskSize = 16384;
      memorySize = 4096;
      cores = 2;
      docker.enable = true;
    };

    environment.systemPackages = [
      pkgs.curl
      pkgs.jq
    ];
  };

  testScript = params + builtins.readFile ./vm-test.py;
}
