"""TensorRT engine: serves the fp16 TensorRT variant of a model repository, without torch.

`disco export --tensorrt` (on a GPU node) builds `encoder.plan` and `generator.plan` from the
repository's ONNX graphs and records them in `manifest["variants"]["tensorrt_fp16"]`, with the
TensorRT version and GPU they were built for (plans only load there). The encoder's anchor
k-means runs inside the plan as the `disco::DiscoKMeansAnchors` plugin
(`tensorrt_plugin.py`), registered here before the plan is deserialized.

Same API as `OnnxEngine` (numpy in, numpy out); device buffers are CuPy arrays on one CUDA
stream per engine, calls are serialized (one execution context per graph). Batches larger than
the plans' optimization profile are split into chunks. tensorrt and cupy are imported lazily:
this module imports on CPU-only machines, constructing the engine there raises
`TensorRTUnavailable`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .base import Encoded
from .onnx import ModelRepositoryError, load_manifest
from .tensorrt_plugin import TensorRTUnavailable, import_cupy, import_tensorrt, register_plugin

VARIANT = "tensorrt_fp16"


__all__ = ["VARIANT", "TensorRTEngine", "TensorRTUnavailable", "check_compatible", "plan_files"]


def plan_files(
    model_dir: str | Path, manifest: dict[str, Any], variant: str = VARIANT
) -> dict[str, Path]:
    """The variant's plan files {"encoder": path, "generator": path}; raises if any is missing."""
    entry = manifest.get("variants", {}).get(variant)
    if entry is None:
        known = sorted(manifest.get("variants", {}))
        raise ModelRepositoryError(
            f"no {variant!r} variant in {model_dir} (has {known}): build it on the GPU node "
            "that will serve it with `disco export --tensorrt`"
        )
    files = {}
    for key in ("encoder", "generator"):
        try:
            f = Path(model_dir) / entry["graphs"][key]["file"]
        except KeyError:
            raise ModelRepositoryError(
                f"{model_dir}: variant {variant!r} lists no {key} plan"
            ) from None
        if not f.is_file():
            raise ModelRepositoryError(f"{model_dir}: {f.name} listed in the manifest is missing")
        files[key] = f
    return files


def check_compatible(
    entry: dict[str, Any], *, tensorrt_version: str, compute_capability: str
) -> None:
    """A plan loads only with the TensorRT version and on the GPU architecture it was built for."""
    built_trt, built_cc = entry.get("tensorrt_version"), entry.get("compute_capability")
    problems = []
    if built_trt and built_trt != tensorrt_version:
        problems.append(f"built with TensorRT {built_trt}, this is TensorRT {tensorrt_version}")
    if built_cc and built_cc != compute_capability:
        problems.append(
            f"built for compute capability {built_cc} ({entry.get('device', '?')}), "
            f"this GPU is {compute_capability}"
        )
    if problems:
        raise ModelRepositoryError(
            "the TensorRT plans do not fit this machine: "
            + "; ".join(problems)
            + ". Rebuild them here with `disco export --tensorrt`"
        )


class _Plan:
    """One deserialized engine with its execution context and I/O names."""

    def __init__(self, trt: Any, runtime: Any, path: Path):
        self.path = path
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelRepositoryError(
                f"{path}: TensorRT could not deserialize the plan (see the TensorRT log above)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}

    def run(self, cp: Any, stream: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ctx, keep = self.context, []
        for name in self.inputs:
            host = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            if not ctx.set_input_shape(name, host.shape):
                raise ValueError(
                    f"{self.path.name}: input {name} {host.shape} lies outside the plan's "
                    "optimization profile"
                )
            dev = cp.empty(host.shape, host.dtype)
            dev.set(host, stream=stream)
            ctx.set_tensor_address(name, dev.data.ptr)
            keep.append(dev)
        outs = {}
        for name in self.outputs:
            dev = cp.empty(tuple(ctx.get_tensor_shape(name)), self.dtypes[name])
            ctx.set_tensor_address(name, dev.data.ptr)
            outs[name] = dev
        if not ctx.execute_async_v3(stream.ptr):
            raise RuntimeError(f"{self.path.name}: TensorRT execution failed (see its log)")
        result = {name: dev.get(stream=stream) for name, dev in outs.items()}
        stream.synchronize()
        del keep  # inputs stay alive until the stream is done with them
        return result


class TensorRTEngine:
    name = "tensorrt"

    def __init__(self, model_dir: str | Path, *, variant: str = VARIANT, device: int = 0):
        trt = import_tensorrt()
        cp = import_cupy()
        try:
            n_devices = cp.cuda.runtime.getDeviceCount()
        except cp.cuda.runtime.CUDARuntimeError as e:
            raise TensorRTUnavailable(f"no usable CUDA device: {e}") from e
        if not 0 <= device < n_devices:
            raise TensorRTUnavailable(f"CUDA device {device} requested, {n_devices} present")
        self.model_dir = Path(model_dir)
        self.manifest = load_manifest(self.model_dir)
        self.variant = variant
        files = plan_files(self.model_dir, self.manifest, variant)
        self.entry = self.manifest["variants"][variant]
        self.input_size = int(self.manifest["input_size"])
        self.levels = int(self.manifest["diverse_levels"])
        self.max_batch = int(self.entry.get("profiles", {}).get("batch", [1, 1, 64])[-1])
        self.device = device
        self._cp = cp
        with cp.cuda.Device(device):
            cc = cp.cuda.Device(device).compute_capability  # "90" for 9.0
            check_compatible(
                self.entry,
                tensorrt_version=trt.__version__,
                compute_capability=f"{cc[:-1]}.{cc[-1]}",
            )
            if self.entry.get("plugin"):
                register_plugin()
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.encoder = _Plan(trt, self._runtime, files["encoder"])
            self.generator = _Plan(trt, self._runtime, files["generator"])
            self.stream = cp.cuda.Stream(non_blocking=True)
        self._lock = threading.Lock()

    @property
    def info(self) -> dict[str, str]:
        m = self.manifest
        return {
            "name": m["name"],
            "version": str(m["version"]),
            "engine": self.name,
            "precision": self.entry.get("precision", "fp16"),
            "providers": f"tensorrt {self.entry.get('tensorrt_version', '?')}",
        }

    def _run(self, plan: _Plan, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(feeds.values())))
        chunks = []
        with self._lock, self._cp.cuda.Device(self.device), self.stream:
            for start in range(0, n, self.max_batch):
                part = {k: v[start : start + self.max_batch] for k, v in feeds.items()}
                chunks.append(plan.run(self._cp, self.stream, part))
        if len(chunks) == 1:
            return chunks[0]
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    def encode(self, l_norm: np.ndarray, init_idx: np.ndarray) -> Encoded:
        if len(l_norm) != len(init_idx):
            raise ValueError(f"{len(l_norm)} images but {len(init_idx)} init_idx rows")
        outs = self._run(self.encoder, {"l_norm": l_norm, "init_idx": init_idx})
        return Encoded(*(outs[f] for f in Encoded.__dataclass_fields__))  # graph output names

    def generate(
        self,
        l_norm: np.ndarray,
        affinity: np.ndarray,
        tokens: np.ndarray,
        hint_mask: np.ndarray,
        hint_bins: np.ndarray,
    ) -> np.ndarray:
        feeds = {
            "l_norm": l_norm,
            "affinity": affinity,
            "tokens": tokens,
            "hint_mask": hint_mask,
            "hint_bins": hint_bins,
        }
        return self._run(self.generator, feeds)["ab"]

    def warmup(self, batch: int = 1) -> None:
        """One full pass so the first request does not pay for lazy allocations."""
        s = self.input_size
        init = np.tile(np.arange(8, dtype=np.int64), (batch, 1))
        l_norm = np.zeros((batch, 1, s, s), np.float32)
        enc = self.encode(l_norm, init)
        self.generate(l_norm, enc.affinity, enc.tokens, enc.hint_mask, enc.sampled_bins[:, 0])

    def close(self) -> None:
        """Free the contexts and engines (the lifespan calls this on shutdown)."""
        for attr in ("encoder", "generator"):
            plan = getattr(self, attr, None)
            if plan is not None:
                del plan.context, plan.engine
        self.stream.synchronize()
