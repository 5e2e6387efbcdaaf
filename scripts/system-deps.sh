#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real, when they are missing:
#   redis-server (queue tests), redis-sentinel (the failover test), chromium + fonts (browser
#   tests), prometheus (promtool checks), docker.io + debootstrap (the live compose test:
#   scripts/install-docker.sh starts dockerd and makes the base images' stand-ins from a Debian
#   minbase).
# Idempotent and quick when everything is there; needs root or sudo and apt-get otherwise.
# Tests that need a missing tool skip with a clear reason, so this is best-effort off Debian.
set -uo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ -x /usr/bin/docker ] || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: no apt-get; install ${need[*]} yourself (their tests will skip meanwhile)" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "system-deps: installing ${need[*]}" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
# --no-install-recommends keeps prometheus from pulling its web UI assets; one package failing
# must not block the others.
for pkg in "${need[@]}"; do
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" \
    >/dev/null 2>&1 || echo "system-deps: could not install $pkg (its tests will skip)" >&2
done
# Debian starts prometheus and redis-sentinel daemons on install; the tests only need the
# binaries (the failover test starts its own sentinels on free ports).
if command -v systemctl >/dev/null 2>&1; then
  $sudo systemctl stop prometheus redis-sentinel >/dev/null 2>&1 || true
fi
pkill -x prometheus >/dev/null 2>&1 || true
exit 0
