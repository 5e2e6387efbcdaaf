#!/usr/bin/env bash
# The docker compose topology without Docker (redis-server, the API, the workers as processes):
#   bash deploy/run-local.sh [--model DIR] [--workers N] [--smoke] [--print-env]
# See deploy/run_local.py. Uses the repository's .venv (make install) unless PYTHON is set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
exec "$PYTHON" deploy/run_local.py "$@"
