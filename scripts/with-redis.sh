#!/usr/bin/env bash
# Run a command with a Redis server answering on 127.0.0.1:${REDIS_PORT:-6379}.
# Uses the one that already answers; otherwise installs redis-server (apt-get) if it is missing,
# starts a throwaway one (no persistence) and stops it again when the command ends.
set -euo pipefail
PORT="${REDIS_PORT:-6379}"

redis_answers() {
  # A raw RESP PING over bash's /dev/tcp: needs neither redis-cli nor Python packages.
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null
}

ensure_redis_server() {
  command -v redis-server >/dev/null 2>&1 && return 0
  echo "with-redis: redis-server not found; installing it with apt-get" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "with-redis: no apt-get here: install redis-server (>= 6.2) yourself and retry" >&2
    exit 1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}

ensure_redis_server  # tests that need their own server (fault tests) start redis-server too
STARTED_PID=""
if redis_answers; then
  echo "with-redis: using the Redis already answering on 127.0.0.1:$PORT" >&2
else
  DIR="$(mktemp -d)"
  redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
    --logfile "$DIR/redis.log" --daemonize no &
  STARTED_PID=$!
  trap 'kill "$STARTED_PID" 2>/dev/null || true; wait "$STARTED_PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
  for _ in $(seq 1 50); do redis_answers && break; sleep 0.1; done
  redis_answers || { echo "with-redis: redis-server did not start (see $DIR/redis.log)" >&2; exit 1; }
  echo "with-redis: started redis-server on 127.0.0.1:$PORT (pid $STARTED_PID)" >&2
fi
export DISCO_TEST_REDIS_URL="${DISCO_TEST_REDIS_URL:-redis://127.0.0.1:$PORT/0}"
"$@"
