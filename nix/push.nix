# apps.<system>.push: push both images to Amazon ECR, both architectures joined in one
# manifest list (image index) per tag.
#
# skopeo copies each single-architecture image (docker-archive tarball from
# buildLayeredImage) to ECR as `<rev>-<arch>` (Docker v2 schema 2 manifests), but it
# cannot assemble a manifest list. The list is written with jq from the manifests skopeo
# reads back (`inspect --raw`; digest = sha256 of exactly those bytes) and stored under
# `<rev>` and the optional extra tag with `aws ecr put-image`: ECR accepts a Docker
# manifest list whose manifests are already in the repository (the API call behind
# `docker manifest push`). No further tool (manifest-tool, crane, buildah) is needed.
{
  pkgs,
  lib,
  rev,
  # images.<system>.{api-image,runner-image}
  images,
}:
let
  archOf = {
    x86_64-linux = "amd64";
    aarch64-linux = "arm64";
  };

  # skopeo looks for /etc/containers/policy.json, which CI runners do not have.
  policy = pkgs.writeText "containers-policy.json" (
    builtins.toJSON {
      default = [ { type = "insecureAcceptAnything"; } ];
    }
  );

  imageLines = lib.concatStringsSep "\n" (
    lib.concatLists (
      lib.mapAttrsToList (system: imgs: [
        "wcu-ai-api ${archOf.${system}} ${imgs.api-image}"
        "wcu-ai-task-runner ${archOf.${system}} ${imgs.runner-image}"
      ]) images
    )
  );

  script = pkgs.writeShellApplication {
    name = "wcu-ai-push";
    runtimeInputs = [
      pkgs.skopeo
      pkgs.awscli2
      pkgs.jq
      pkgs.coreutils
    ];
    text = ''
      usage() {
        cat <<'USAGE'
      usage: nix run .#push -- --registry ACCOUNT.dkr.ecr.REGION.amazonaws.com [options]

        --registry HOST     ECR registry (default: $ECR_REGISTRY)
        --region REGION     AWS region (default: $AWS_REGION, else taken from the registry host)
        --prefix PREFIX     repository name prefix, e.g. "prod/" (default: none)
        --tag TAG           extra tag for the image index, e.g. "latest" or "v1.2.0"
        --arch ARCH         push only this architecture (amd64 or arm64; repeatable)
        --dry-run           print what would be done, push nothing
      Repositories: wcu-ai-api, wcu-ai-task-runner. Tags: ${rev}-<arch> per
      architecture, ${rev} (and --tag) for the multi-architecture manifest list.
      USAGE
      }

      registry=''${ECR_REGISTRY:-}
      region=''${AWS_REGION:-}
      prefix=""
      extra_tag=""
      archs=()
      dry_run=0
      while (($#)); do
        case $1 in
        --registry) registry=$2; shift ;;
        --region) region=$2; shift ;;
        --prefix) prefix=$2; shift ;;
        --tag) extra_tag=$2; shift ;;
        --arch) archs+=("$2"); shift ;;
        --dry-run) dry_run=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
        esac
        shift
      done
      [[ -n $registry ]] || { echo "--registry (or ECR_REGISTRY) is required" >&2; exit 2; }
      if [[ -z $region ]]; then
        # ACCOUNT.dkr.ecr.REGION.amazonaws.com
        region=$(cut -d. -f4 <<<"$registry")
      fi
      if ((''${#archs[@]} == 0)); then archs=(amd64 arm64); fi
      rev=${lib.escapeShellArg rev}
      if [[ $rev == dirty ]]; then
        echo "refusing to push an image built from a dirty work tree (commit first)" >&2
        exit 1
      fi
      tags=("$rev")
      if [[ -n $extra_tag ]]; then tags+=("$extra_tag"); fi

      run() {
        if ((dry_run)); then
          printf '+'; printf ' %q' "$@"; printf '\n'
        else
          "$@"
        fi
      }
      want_arch() {
        local a
        for a in "''${archs[@]}"; do [[ $a == "$1" ]] && return 0; done
        return 1
      }

      if ((dry_run)); then
        echo "+ aws ecr get-login-password --region $region | skopeo login --username AWS --password-stdin $registry"
      else
        aws ecr get-login-password --region "$region" |
          skopeo login --username AWS --password-stdin "$registry"
      fi

      workdir=$(mktemp -d)
      trap 'rm -rf "$workdir"' EXIT

      list_type=application/vnd.docker.distribution.manifest.list.v2+json
      declare -A pushed=()
      while read -r repo arch image; do
        want_arch "$arch" || continue
        ref="$registry/$prefix$repo:$rev-$arch"
        run skopeo --policy ${policy} copy --retry-times 3 \
          "docker-archive:$image" "docker://$ref"
        pushed[$repo]="''${pushed[$repo]:-} $arch"
      done <<'IMAGES'
      ${imageLines}
      IMAGES

      for repo in "''${!pushed[@]}"; do
        index="$workdir/$repo-index.json"
        entries=()
        for arch in ''${pushed[$repo]}; do
          ref="$registry/$prefix$repo:$rev-$arch"
          if ((dry_run)); then
            echo "+ skopeo inspect --raw docker://$ref  # digest, size, mediaType for the index"
            continue
          fi
          manifest="$workdir/$repo-$arch.json"
          skopeo --policy ${policy} inspect --raw "docker://$ref" >"$manifest"
          entries+=("$(jq -c \
            --arg digest "sha256:$(sha256sum "$manifest" | cut -d' ' -f1)" \
            --argjson size "$(stat -c %s "$manifest")" \
            --arg arch "$arch" \
            '{mediaType: .mediaType, digest: $digest, size: $size,
              platform: {architecture: $arch, os: "linux"}}' "$manifest")")
        done
        if ((!dry_run)); then
          printf '%s\n' "''${entries[@]}" | jq -s '{
            schemaVersion: 2,
            mediaType: "application/vnd.docker.distribution.manifest.list.v2+json",
            manifests: .
          }' >"$index"
          cat "$index" >&2
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
            # Re-running for the same revision: the tag already points at this index.
            if grep -q ImageAlreadyExistsException <<<"$out"; then
              echo "$registry/$prefix$repo:$tag already points at this manifest list"
              continue
            else
              echo "$out" >&2
              exit 1
            fi
          fi
          echo "pushed $registry/$prefix$repo:$tag"
        done
      done
    '';
    meta.description = "Push wcu-ai-api and wcu-ai-task-runner to Amazon ECR";
  };
in
{
  # The script is exposed for .ci/nix-check, which runs it against stub skopeo/aws.
  inherit script;
  app = {
    type = "app";
    program = lib.getExe script;
    meta.description = "Push both images to ECR, one multi-arch manifest list per tag";
  };
}
