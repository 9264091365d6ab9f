{
  description = "wcu-ai-server: API and singleton task runner images built from uv.lock";

  inputs = {
    nixpkgs.url = "github:nixos/nixpkgs/nixos-unstable";

    pyproject-nix = {
      url = "github:pyproject-nix/pyproject.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    uv2nix = {
      url = "github:pyproject-nix/uv2nix";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    pyproject-build-systems = {
      url = "github:pyproject-nix/build-system-pkgs";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.uv2nix.follows = "uv2nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  # Only wiring: every output is defined in ./nix (see nix/README.md).
  outputs =
    {
      self,
      nixpkgs,
      pyproject-nix,
      uv2nix,
      pyproject-build-systems,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = lib.genAttrs systems;

      rev = self.rev or "dirty";
      python = import ./nix/python.nix {
        inherit
          lib
          pyproject-nix
          uv2nix
          pyproject-build-systems
          ;
      };

      perSystem =
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          py = python.forPkgs pkgs;
          images = import ./nix/images.nix {
            inherit pkgs lib rev;
            inherit (py) app;
          };
          sboms = import ./nix/sbom.nix {
            inherit
              pkgs
              python
              py
              rev
              images
              ;
          };
          # Only this system's images: building apps.<system>.push never needs another
          # architecture (.ci/nix-check checks the requisites on the offline evaluation).
          push = import ./nix/push.nix {
            inherit
              pkgs
              lib
              rev
              system
              images
              sboms
              ;
          };
        in
        {
          inherit
            pkgs
            py
            images
            sboms
            push
            ;
        };
      for = lib.genAttrs systems perSystem;
    in
    {
      packages = forAllSystems (system: {
        default = for.${system}.py.venv;
        inherit (for.${system}.py) venv app;
        inherit (for.${system}.images) api-image runner-image;
        api-image-sbom = for.${system}.sboms.api-image;
        runner-image-sbom = for.${system}.sboms.runner-image;
      });

      checks = forAllSystems (
        system:
        import ./nix/checks.nix {
          inherit lib python;
          inherit (for.${system})
            pkgs
            py
            images
            push
            ;
        }
      );

      apps = forAllSystems (system: {
        inherit (for.${system}.push) push push-manifest;
      });

      devShells = forAllSystems (system: {
        default = import ./nix/devshell.nix {
          inherit (for.${system}) pkgs;
          inherit (for.${system}.images) office popplerUtils;
        };
      });

      formatter = forAllSystems (system: for.${system}.pkgs.nixfmt-tree);
    };
}
