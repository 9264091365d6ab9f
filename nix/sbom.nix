# packages.<system>.{api-image,runner-image}-sbom: one CycloneDX JSON file per image.
#
# cyclonedx-py (uv.lock's dev group, in the checks' environment) reports the production
# venv's distributions (name, version, purl, licences); ./sbom.py adds the SHA-256 uv.lock
# pins for the file uv2nix installed each one from, and one component per store path in
# the image's layers (name and version split as Nix names store paths), and fails when
# the venv, the lock and the list of installed files disagree. The output is reproducible
# (no timestamp, no random serial number): the same image gives the same bytes.
{
  pkgs,
  python,
  py,
  rev,
  images,
}:
let
  # The file each Python package of the venv was built from: uv2nix fetches a wheel under
  # its file name, an sdist under its URL's base name; the project is its source tree.
  artifacts = pkgs.writeText "wcu-ai-python-artifacts.json" (
    builtins.toJSON (
      map (p: {
        name = p.pname;
        inherit (p) version;
        file = if p.pname == python.projectName then null else p.src.name;
      }) py.venvPackages
    )
  );

  environment = pkgs.runCommand "wcu-ai-env.cdx.json" { nativeBuildInputs = [ py.devVenv ]; } ''
    export HOME=$TMPDIR
    cyclonedx-py environment --output-reproducible --pyproject ${python.src}/pyproject.toml \
      -o "$out" ${py.venv}/bin/python
  '';

  mkSbom =
    image:
    pkgs.runCommand "${image.imageName}-sbom.cdx.json" { nativeBuildInputs = [ py.devVenv ]; } ''
      export HOME=$TMPDIR
      python3 ${./sbom.py} --environment ${environment} --artifacts ${artifacts} \
        --lock ${python.src}/uv.lock --image ${image} \
        --name ${image.imageName} --version ${rev} --output "$out"
    '';
in
{
  api-image = mkSbom images.api-image;
  runner-image = mkSbom images.runner-image;
}
