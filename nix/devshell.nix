# devShells.<system>.default: the tools of a developer machine. uv manages .venv from
# uv.lock (as on machines without Nix) but with the Nix python312: UV_PYTHON points at
# it and uv never downloads an interpreter. LibreOffice and poppler are the runner
# image's (nix/images.nix).
{
  pkgs,
  office,
  popplerUtils,
}:
let
  python = pkgs.python312;
in
pkgs.mkShell {
  packages = [
    python
    pkgs.uv
    (pkgs.postgresql_16.withPackages (ps: [ ps.pgvector ]))
    office
    popplerUtils
    pkgs.nixfmt
  ];

  env = {
    UV_PYTHON = python.interpreter;
    UV_PYTHON_DOWNLOADS = "never";
  };

  shellHook = ''
    unset PYTHONPATH
  '';
}
