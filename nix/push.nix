# apps.<system>.push and apps.<system>.push-manifest: the images to Amazon ECR.
#
# push           this system's two images only, as `<rev>-<arch>`, each with its SBOM. Its
#                closure holds this system's images and nothing of the other architecture,
#                so `nix run .#push -- --dry-run` works on a machine that cannot build for
#                the other one (.ci/nix-check proves it on the offline evaluation).
# push-manifest  no image at all: reads the per-architecture manifests back from ECR
#                (`skopeo inspect --raw`; digest = sha256 of exactly those bytes), writes a
#                Docker manifest list with jq and stores it under `<rev>` and `--tag` with
#                `aws ecr put-image` (the API call behind `docker manifest push`; skopeo
#                cannot assemble a list).
#
# Both log in with `skopeo login --authfile` into their own temporary directory (without
# it skopeo writes under /run/containers/$UID, which CI runners do not give a user), and
# pass that file to every skopeo call and, as $DOCKER_CONFIG/config.json (the same
# format), to cosign. With --sign, cosign signs each pushed digest keylessly (the
# workflow's GitHub OIDC identity) and `push` attaches the image's SBOM as a CycloneDX
# attestation.
{
  pkgs,
  lib,
  rev,
  system,
  # this system's { api-image, runner-image }
  images,
  # this system's { api-image, runner-image } CycloneDX SBOM files (nix/sbom.nix)
  sboms,
}:
let
  arch =
    {
      x86_64-linux = "amd64";
      aarch64-linux = "arm64";
    }
    .${system};

  # skopeo looks for /etc/containers/policy.json, which CI runners do not have.
  policy = pkgs.writeText "containers-policy.json" (
    builtins.toJSON {
      default = [ { type = "insecureAcceptAnything"; } ];
    }
  );

  # cosign is not in the offline stand-in nixpkgs (it is pkgs/by-name/co/cosign there):
  # looked up by name. The scripts do not inherit the caller's PATH, so a tool missing from
  # runtimeInputs would fail the first real push: toolsChecked fails the scripts' build
  # instead (they refer to it), and `--check-tools` (checks.<system>.push-tools) checks
  # their PATH when they run.
  cosign = lib.optional (pkgs ? cosign) pkgs.cosign;
  runtimeInputs = [
    pkgs.skopeo
    pkgs.awscli2
    pkgs.jq
    pkgs.coreutils
    pkgs.gnugrep
  ]
  ++ cosign;
  tools = [
    "skopeo"
    "aws"
    "jq"
    "sha256sum"
    "stat"
    "mktemp"
    "grep"
    "cosign"
  ];
  toolsChecked = pkgs.runCommand "wcu-ai-push-tools" { } ''
    for tool in ${lib.escapeShellArgs tools}; do
      PATH=${lib.makeBinPath runtimeInputs} command -v "$tool" ||
        { echo "push apps: $tool is not in their runtime inputs" >&2; exit 1; }
    done >"$out"
  '';

  # Options, login, dry-run and the temporary auth file shared by both scripts.
  common = usage: ''
    usage() {
      cat <<'USAGE'
    ${usage}
      --registry HOST   ECR registry ACCOUNT.dkr.ecr.REGION.amazonaws.com (default: $ECR_REGISTRY)
      --region REGION   AWS region (default: $AWS_REGION, else taken from the registry host)
      --prefix PREFIX   repository name prefix, e.g. "prod/" (default: none)
      --sign            sign with cosign (keyless: needs an OIDC identity, e.g. GitHub Actions)
      --dry-run         print what would be done; no credentials needed, nothing is pushed
                        (without --registry: a placeholder registry)
      --check-tools     check that every tool the push needs is on its PATH, then exit
    Repositories: wcu-ai-api, wcu-ai-task-runner.
    USAGE
    }

    registry=''${ECR_REGISTRY:-}
    region=''${AWS_REGION:-}
    prefix=""
    sign=0
    dry_run=0
    extra_tags=()
    archs=()
    while (($#)); do
      case $1 in
      --registry) registry=$2; shift ;;
      --region) region=$2; shift ;;
      --prefix) prefix=$2; shift ;;
      --tag) extra_tags+=("$2"); shift ;;
      --arch) archs+=("$2"); shift ;;
      --sign) sign=1 ;;
      --dry-run) dry_run=1 ;;
      --check-tools)
        # ${toolsChecked} builds only when every tool is in the runtime inputs, and this
        # script's build needs it; here the PATH of this run is checked.
        for tool in ${lib.escapeShellArgs tools}; do
          command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
        done
        echo "all tools found: ${toString tools}"
        exit 0
        ;;
      -h | --help) usage; exit 0 ;;
      *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
      esac
      shift
    done
    if [[ -z $registry ]]; then
      if ((dry_run)); then
        # A plan can be shown without an AWS account; nothing is pushed anyway.
        registry=ACCOUNT.dkr.ecr.REGION.amazonaws.com
        echo "dry run without --registry or ECR_REGISTRY: the plan shows the placeholder $registry"
      else
        echo "--registry (or ECR_REGISTRY) is required" >&2
        exit 2
      fi
    fi
    if [[ -z $region ]]; then
      region=$(cut -d. -f4 <<<"$registry") # ACCOUNT.dkr.ecr.REGION.amazonaws.com
    fi
    rev=${lib.escapeShellArg rev}
    if [[ $rev == dirty ]]; then
      echo "refusing to push an image built from a dirty work tree (commit first)" >&2
      exit 1
    fi

    run() {
      if ((dry_run)); then
        printf '+'; printf ' %q' "$@"; printf '\n'
      else
        "$@"
      fi
    }

    workdir=$(mktemp -d)
    trap 'rm -rf "$workdir"' EXIT
    mkdir -m 700 "$workdir/auth"
    auth=$workdir/auth/config.json
    export DOCKER_CONFIG=$workdir/auth
    if ((dry_run)); then
      echo "+ aws ecr get-login-password --region $region | skopeo login --authfile $auth --username AWS --password-stdin $registry"
    else
      aws ecr get-login-password --region "$region" |
        skopeo login --authfile "$auth" --username AWS --password-stdin "$registry"
    fi
  '';

  pushScript = pkgs.writeShellApplication {
    name = "wcu-ai-push";
    inherit runtimeInputs;
    inheritPath = false;
    text = ''
      ${common ''
        usage: nix run .#push -- --registry HOST [options]
        Pushes this system's two images (${arch}) as <rev>-${arch}: ${rev}-${arch}.
        The manifest list across architectures is `nix run .#push-manifest`.''}
      if ((''${#extra_tags[@]} || ''${#archs[@]})); then
        echo "--tag and --arch belong to push-manifest; push handles ${arch} only" >&2
        exit 2
      fi

      # The list arrives on fd 3, and the tools get /dev/null: a tool reading its stdin
      # (a prompt, a retry) must not swallow the images still to push.
      while read -r -u 3 repo image sbom; do
        ref="$registry/$prefix$repo:$rev-${arch}"
        digestfile="$workdir/$repo.digest"
        run skopeo --policy ${policy} copy --retry-times 3 --authfile "$auth" \
          --digestfile "$digestfile" "docker-archive:$image" "docker://$ref" </dev/null
        if ((dry_run)); then
          digest="<digest of $ref>"
        else
          digest=$(cat "$digestfile")
          echo "pushed $ref@$digest"
        fi
        if ((sign)); then
          run cosign sign --yes "$registry/$prefix$repo@$digest" </dev/null
          run cosign attest --yes --type cyclonedx --predicate "$sbom" "$registry/$prefix$repo@$digest" </dev/null
        fi
      done 3<<'IMAGES'
      wcu-ai-api ${images.api-image} ${sboms.api-image}
      wcu-ai-task-runner ${images.runner-image} ${sboms.runner-image}
      IMAGES
    '';
    meta.description = "Push this system's wcu-ai images (${arch}) to Amazon ECR";
  };

  manifestScript = pkgs.writeShellApplication {
    name = "wcu-ai-push-manifest";
    inherit runtimeInputs;
    inheritPath = false;
    text = ''
      ${common ''
        usage: nix run .#push-manifest -- --registry HOST [options]
        Joins the pushed <rev>-amd64 and <rev>-arm64 images into one manifest list per
        repository, tagged ${rev} (and every --tag).
          --tag TAG         extra tag for the list, e.g. "latest" (repeatable)
          --arch ARCH       list only this architecture (amd64 or arm64; repeatable)''}
      if ((''${#archs[@]} == 0)); then archs=(amd64 arm64); fi
      tags=("$rev" "''${extra_tags[@]}")

      list_type=application/vnd.docker.distribution.manifest.list.v2+json
      for repo in wcu-ai-api wcu-ai-task-runner; do
        index="$workdir/$repo-index.json"
        entries=()
        for arch in "''${archs[@]}"; do
          ref="$registry/$prefix$repo:$rev-$arch"
          if ((dry_run)); then
            echo "+ skopeo inspect --raw --authfile $auth docker://$ref  # digest, size, mediaType for the list"
            continue
          fi
          manifest="$workdir/$repo-$arch.json"
          skopeo --policy ${policy} inspect --raw --authfile "$auth" "docker://$ref" >"$manifest"
          entries+=("$(jq -c \
            --arg digest "sha256:$(sha256sum "$manifest" | cut -d' ' -f1)" \
            --argjson size "$(stat -c %s "$manifest")" \
            --arg arch "$arch" \
            '{mediaType: .mediaType, digest: $digest, size: $size,
              platform: {architecture: $arch, os: "linux"}}' "$manifest")")
        done
        if ((dry_run)); then
          digest="<sha256 of $index>"
        else
          printf '%s\n' "''${entries[@]}" | jq -s '{
            schemaVersion: 2,
            mediaType: "application/vnd.docker.distribution.manifest.list.v2+json",
            manifests: .
          }' >"$index"
          cat "$index" >&2
          # ECR stores the bytes it is given, so this is the digest the tag resolves to.
          digest="sha256:$(sha256sum "$index" | cut -d' ' -f1)"
        fi
        for tag in "''${tags[@]}"; do
          if ((dry_run)); then
            echo "+ aws ecr put-image --region $region --repository-name $prefix$repo --image-tag $tag --image-manifest-media-type $list_type --image-manifest file://$index"
            continue
          fi
          if ! out=$(aws ecr put-image --region "$region" --repository-name "$prefix$repo" \
            --image-tag "$tag" \
            --image-manifest-media-type "$list_type" \
            --image-manifest "file://$index" 2>&1); then
            # Re-running for the same revision: the tag already points at this list.
            if grep -q ImageAlreadyExistsException <<<"$out"; then
              echo "$registry/$prefix$repo:$tag already points at this manifest list"
              continue
            fi
            echo "$out" >&2
            exit 1
          fi
          echo "pushed $registry/$prefix$repo:$tag@$digest"
        done
        if ((sign)); then
          run cosign sign --yes "$registry/$prefix$repo@$digest"
        fi
      done
    '';
    meta.description = "Join the pushed per-architecture wcu-ai images into manifest lists";
  };

  app = script: description: {
    type = "app";
    program = lib.getExe script;
    meta = { inherit description; };
  };
in
{
  # The scripts and their tool check are exposed for .ci/nix-check, which runs them against
  # stub tools.
  inherit pushScript manifestScript toolsChecked;
  push = app pushScript "Push this system's two images to ECR as <rev>-${arch}, signed, with SBOMs";
  push-manifest = app manifestScript "Join the per-architecture images into one manifest list per tag";
}
