#!/usr/bin/env bash
# Air-gapped side of the offline bundle written by package.sh. Run it from anywhere:
#
#   ./load-and-run.sh              verify checksums, load the image(s), start the compose service
#   ./load-and-run.sh --no-start   verify and load only
#   ./load-and-run.sh --profile replicas
#                                  start the two-replica + nginx profile (bundle built --with-nginx)
#
# Nothing is loaded unless every file listed in SHA256SUMS matches: a corrupted or tampered
# bundle stops here. Needs bash, sha256sum (coreutils) or shasum, Docker and Compose v2 (>= 2.24).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: load-and-run.sh [--no-start] [--profile NAME] [-h|--help]

Verifies every file of this offline bundle against SHA256SUMS, loads the image archives under
images/ with `docker load`, then starts the service with `docker compose up -d`.

  --no-start       verify and load only
  --profile NAME   compose profile to enable as well (e.g. "replicas": 2 instances + nginx)
  -h, --help       this help
EOF
}

die() {
    echo "load-and-run: $*" >&2
    exit 1
}

start=1
profiles=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --no-start) start=0 ;;
        --profile)
            [ "$#" -ge 2 ] || die "--profile needs a value"
            profiles+=(--profile "$2")
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

bundle_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$bundle_dir"

[ -f SHA256SUMS ] || die "no SHA256SUMS in $bundle_dir: not a complete bundle"

# 1. Integrity. --strict also rejects malformed manifest lines; a missing file fails too.
echo "==> verifying checksums (SHA256SUMS)"
if command -v sha256sum >/dev/null 2>&1; then
    sha256sum --check --strict --quiet SHA256SUMS || die "checksum verification FAILED: nothing was loaded"
elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 --check --strict --quiet SHA256SUMS || die "checksum verification FAILED: nothing was loaded"
else
    die "neither sha256sum nor shasum found"
fi
echo "    all files match"

command -v docker >/dev/null 2>&1 || die "docker not found"

# 2. Images: only the archives the (verified) manifest lists, never whatever else lies around.
images=()
while read -r _sum path; do
    path="${path#\*}" # binary-mode marker
    path="${path#./}"
    case "$path" in
        images/*.tar.gz | images/*.tar) images+=("$path") ;;
    esac
done <SHA256SUMS
[ "${#images[@]}" -gt 0 ] || die "SHA256SUMS lists no image archive under images/"

for archive in "${images[@]}"; do
    echo "==> docker load -i $archive"
    docker load -i "$archive"
done

[ "$start" -eq 1 ] || {
    echo "==> loaded; not starting (--no-start)"
    exit 0
}

# 3. Start. Compose v2 plugin first, the standalone v2 binary as a fallback.
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    die "Docker Compose v2 not found (docker compose / docker-compose)"
fi

# The image name as packaged (package.sh --image): compose reads it as ${IMAGE}. An IMAGE set in
# the shell or in .env wins.
if [ -z "${IMAGE:-}" ] && [ -f bundle.env ] && ! grep -q '^IMAGE=' .env 2>/dev/null; then
    IMAGE="$(sed -n 's/^IMAGE=//p' bundle.env)"
    export IMAGE
fi

# Bind-mount source: create it ourselves so it is not created root-owned by the daemon.
mkdir -p models
if [ ! -f .env ]; then
    echo "    note: no .env here; defaults apply (cp .env.example .env to change settings)"
fi

echo "==> ${compose[*]}${profiles[*]+ ${profiles[*]}} up -d --no-build"
# --no-build: never try to build (or pull a base image) on the air-gapped host.
# (${a[@]+"${a[@]}"}: an empty array under `set -u` on bash < 4.4.)
"${compose[@]}" -f docker-compose.yaml ${profiles[@]+"${profiles[@]}"} up -d --no-build

echo "==> started. Check: ${compose[*]} ps   (health: curl -fsS http://127.0.0.1:8000/ready)"
