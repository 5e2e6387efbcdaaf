"""Entrypoint of the GPU worker image: TensorRT plans that fit THIS GPU, then the command.

    python /opt/disco/gpu_prepare.py disco worker --metrics-port 9100

With `DISCO_ENGINE=tensorrt`, a model repository's TensorRT plans load only with the TensorRT
version and on the GPU architecture they were built for (`service/engine/tensorrt.py`). When the
plans in `$DISCO_MODEL_DIR` are missing or do not fit, the repository (ONNX graphs + manifest) is
copied to `$DISCO_TRT_CACHE_DIR/<manifest digest>` (default `/tmp/disco-tensorrt`; mount a volume
there to build once per node instead of once per container start) and the plans are built there
(`export/tensorrt_build.py`, a few minutes), then the command runs with `DISCO_MODEL_DIR` pointing
at the copy. With any other engine (`onnx`, the default: CUDA execution provider) the command
runs unchanged. Exit status 2 when the plans cannot be had (no GPU, no TensorRT), with the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path


def _unfit_reason(model_dir: Path) -> str | None:
    """None when `model_dir` holds TensorRT plans this machine can load, else why not."""
    from service.engine.onnx import ModelRepositoryError, load_manifest
    from service.engine.tensorrt import VARIANT, check_compatible, plan_files
    from service.engine.tensorrt_plugin import import_cupy, import_tensorrt

    try:
        manifest = load_manifest(model_dir)
        plan_files(model_dir, manifest)
        trt, cp = import_tensorrt(), import_cupy()
        props = cp.cuda.runtime.getDeviceProperties(0)
        check_compatible(
            manifest["variants"][VARIANT],
            tensorrt_version=trt.__version__,
            compute_capability=f"{props['major']}.{props['minor']}",
        )
    except ModelRepositoryError as e:
        return str(e)
    return None


def prepare_tensorrt(model_dir: Path, cache_dir: Path) -> Path:
    """The model folder to serve: `model_dir` if its plans fit, else a built copy in the cache."""
    from export.tensorrt_build import build_tensorrt_variant

    reason = _unfit_reason(model_dir)
    if reason is None:
        return model_dir
    digest = hashlib.sha256((model_dir / "manifest.json").read_bytes()).hexdigest()[:16]
    target = cache_dir / digest
    if target.is_dir() and _unfit_reason(target) is None:
        print(f"gpu_prepare: using the TensorRT plans in {target}", file=sys.stderr)
        return target
    print(f"gpu_prepare: building TensorRT plans ({reason})", file=sys.stderr)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build.") as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(model_dir, work, ignore=shutil.ignore_patterns("*.plan"))
        build_tensorrt_variant(
            work, progress=lambda m: print(f"gpu_prepare: {m}", file=sys.stderr), measure=False
        )
        if target.exists():  # a stale or foreign build: replace it
            shutil.rmtree(target)
        work.replace(target)
    return target


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get("DISCO_ENGINE", "onnx") == "tensorrt":
        from service.engine.tensorrt_plugin import TensorRTUnavailable

        model_dir = Path(os.environ.get("DISCO_MODEL_DIR", "models"))
        cache_dir = Path(os.environ.get("DISCO_TRT_CACHE_DIR", "/tmp/disco-tensorrt"))
        try:
            os.environ["DISCO_MODEL_DIR"] = str(prepare_tensorrt(model_dir, cache_dir))
        except TensorRTUnavailable as e:
            print(f"gpu_prepare: cannot run the TensorRT engine here: {e}", file=sys.stderr)
            return 2
    os.execvp(argv[0], argv)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
