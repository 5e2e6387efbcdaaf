#!/usr/bin/env bash
# Local stand-ins for the base images the Dockerfiles and docker-compose.yml pull, for machines
# that reach package registries (Debian, PyPI) but no image registry. Users with registry access
# never need this: the real images are pulled under the same names.
#
#   sudo deploy/docker/offline-bases.sh          # idempotent: names that already exist are kept
#   FORCE=1 deploy/docker/offline-bases.sh       # rebuild every stand-in
#
# Made here, under the exact names used (deploy/docker/offline/*.Dockerfile):
#   python:3.11-slim-bookworm   Debian bookworm + Debian's python3.11 (linked as /usr/local/bin)
#   ghcr.io/astral-sh/uv:0.13.9 /uv and /uvx from uv's PyPI wheel
#   redis:7.4-alpine            Debian's redis-server (7.0) on bookworm, user redis, /data
#   prom/prometheus:v2.55.1     Debian's prometheus (2.42) + wget, user prometheus, /prometheus
# NOT made here (no Debian/PyPI package provides them; pull them where a registry is reachable):
#   grafana/grafana:11.3.0, nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 (Dockerfile.gpu),
#   nvcr.io/nvidia/k8s/dcgm-exporter (compose profile `gpu`).
#
# All stand-ins share one base: a Debian bookworm minbase from debootstrap, `docker import`ed as
# disco-offline/bookworm. Its root tarball is cached in $CACHE (default
# /var/cache/disco-offline-bases), so a re-run (or a CI run with that cache) skips debootstrap.
# The host's CA bundle (/etc/ssl/certs/ca-certificates.crt: HTTPS to the registries goes through a
# proxy whose CA it holds) is baked into the stand-in bases only, never into the project's own
# Dockerfiles: images built FROM the python stand-in inherit it, as they would inherit the real
# image's CA bundle. Needs root (debootstrap), docker with BuildKit, and pip or uv on the host.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OFFLINE="$HERE/offline"
CACHE="${CACHE:-/var/cache/disco-offline-bases}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# Debian's CLI builds with BuildKit (DOCKER_BUILDKIT=1); another docker CLI on PATH may lack buildx
DOCKER="${DOCKER:-$(test -x /usr/bin/docker && echo /usr/bin/docker || echo docker)}"
export DOCKER_BUILDKIT=1
UV_VERSION="0.13.9"
BASE=disco-offline/bookworm:latest
HOST_CA=/etc/ssl/certs/ca-certificates.crt

log() { echo "offline-bases: $*" >&2; }
have() { [ -z "${FORCE:-}" ] && "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

mkdir -p "$CACHE"
rootfs_tar="$CACHE/$SUITE-minbase.tar"

# -- the shared base: debootstrap once, cached as a tarball ----------------------------------------
if ! have "$BASE"; then
  if [ ! -s "$rootfs_tar" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install debootstrap)"; exit 1; }
    [ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }
    work="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    log "debootstrap $SUITE minbase from $MIRROR (once; cached in $rootfs_tar)"
    debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$work/root" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    # slim it like the official images: no apt lists, caches, docs or man pages
    rm -rf "$work/root"/var/lib/apt/lists/* "$work/root"/var/cache/apt/*.bin \
      "$work/root"/var/cache/apt/archives/*.deb "$work/root"/usr/share/doc/* \
      "$work/root"/usr/share/man/* "$work/root"/usr/share/info/* "$work/root"/var/log/*.log
    tar -C "$work/root" --numeric-owner -cf "$rootfs_tar.part" .
    mv "$rootfs_tar.part" "$rootfs_tar"
    rm -rf "$work"; trap - EXIT
  fi
  log "docker import $rootfs_tar -> $BASE"
  "$DOCKER" import -c 'CMD ["bash"]' -c 'ENV LANG=C.UTF-8' "$rootfs_tar" "$BASE" >/dev/null
fi

# -- per-image stand-ins: each a small Dockerfile on the shared base ------------------------------
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$HOST_CA" "$ctx/ca-certificates.crt"

build() {  # build NAME DOCKERFILE
  local name="$1" file="$2"
  if have "$name"; then log "$name: present"; return; fi
  log "building $name"
  "$DOCKER" build -q -f "$OFFLINE/$file" --build-arg BASE="$BASE" -t "$name" "$ctx" >/dev/null
}

if ! have "ghcr.io/astral-sh/uv:$UV_VERSION"; then
  # uv's static binaries from its PyPI wheel (downloaded on the host, which trusts the proxy CA)
  wheel_dir="$CACHE/uv-$UV_VERSION"
  if ! ls "$wheel_dir"/uv-*.whl >/dev/null 2>&1; then
    mkdir -p "$wheel_dir"
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      -d "$wheel_dir" "uv==$UV_VERSION"
  fi
  python3 - "$wheel_dir" "$ctx" <<'PY'
import sys, zipfile, pathlib, glob
wheel = glob.glob(f"{sys.argv[1]}/uv-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename.rsplit("/", 1)[-1]
        if info.filename.endswith((".data/scripts/uv", ".data/scripts/uvx")):
            out = pathlib.Path(sys.argv[2]) / name
            out.write_bytes(z.read(info))
            out.chmod(0o755)
PY
  build "ghcr.io/astral-sh/uv:$UV_VERSION" uv.Dockerfile
fi
build python:3.11-slim-bookworm python.Dockerfile
build redis:7.4-alpine redis.Dockerfile
build prom/prometheus:v2.55.1 prometheus.Dockerfile
for missing in grafana/grafana:11.3.0 nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04; do
  "$DOCKER" image inspect "$missing" >/dev/null 2>&1 ||
    log "$missing: cannot be made from Debian/PyPI packages (pull it where a registry is reachable)"
done
log "done"
