#!/usr/bin/env bash
# GPU check: export the seed-0 test weights, run every backend this machine has (TensorRT fp16 if
# tensorrt + cupy are installed, ONNX Runtime's CUDAExecutionProvider, the torch engine on CUDA in
# fp32 and with bf16 autocast), check parity against the CPU result, and print images/s at batch
# 1, 8, 32, 64.
#
#   bash deploy/gpu-check.sh --out "$OUT/gpu-check"   # a lease: JSON after every step, reusable
#   bash deploy/gpu-check.sh                  # on a GPU machine, from anywhere in the repo
#   bash deploy/gpu-check.sh --cpu-dry-run    # the same logic on CPU, in seconds
#   bash deploy/gpu-check.sh --help           # options (backend, batches, runs, tolerances)
#
# Uses the system python3 (or $PYTHON) with PYTHONPATH set to the repository: nothing is
# installed and no network is needed. Needs numpy, onnx, onnxruntime, torch, pillow, opencv;
# uses onnxruntime-extensions, tensorrt and cupy when present. Exit status: 0 parity passed,
# 1 parity failed, 2 cannot run here. The logic lives in export/gpu_check.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gpu-check: $PYTHON not found (set PYTHON=/path/to/python3)" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "gpu-check: $("$PYTHON" -V 2>&1) is too old, the repository needs Python >= 3.11" \
        "(set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PYTHON" -m export.gpu_check "$@"
