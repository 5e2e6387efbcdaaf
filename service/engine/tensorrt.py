"""TensorRT engine: serves the fp16 TensorRT variant of a model repository, without torch.

`disco export --tensorrt` (on a GPU node) builds `encoder.plan` and `generator.plan` from the
repository's ONNX graphs and records them in `manifest["variants"]["tensorrt_fp16"]`, with the
TensorRT version and GPU they were built for (plans only load there). The encoder's anchor
k-means runs inside the plan as the `disco::DiscoKMeansAnchors` plugin
(`tensorrt_plugin.py`), registered here before the plan is deserialized.

Same API as `OnnxEngine`; calls are serialized (one execution context per graph) on one CUDA
stream per engine. Every I/O tensor has a CuPy device buffer allocated once for the profile's
max shapes, and a reusable pinned host staging buffer (`tensorrt_buffers.EngineBuffers`):
nothing is allocated per call. The encoder's affinity, tokens, ... stay in its device buffers
(`DeviceRows`, valid until the next encode) and are gathered on the device into the
generator's input buffers; only hint_mask, sampled_bins, anchor_idx and ab cross to the host.
Batches larger than the profile are split into chunks (an encode above it returns host
arrays). tensorrt and cupy are imported lazily: this module imports on CPU-only machines,
constructing the engine there raises `TensorRTUnavailable`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .base import Encoded
from .onnx import ModelRepositoryError, load_manifest
from .tensorrt_buffers import DeviceRows, EngineBuffers, StaleBuffer
from .tensorrt_plugin import TensorRTUnavailable, import_cupy, import_tensorrt, register_plugin

VARIANT = "tensorrt_fp16"


HOST_OUTPUTS = ("hint_mask", "sampled_bins", "anchor_idx")  # copied to the host per encode
DEVICE_FEEDS = ("affinity", "tokens")  # generator inputs gathered from the encoder's buffers

__all__ = [
    "VARIANT", "StaleBuffer", "TensorRTEngine", "TensorRTUnavailable", "check_compatible",
    "plan_files",
]  # fmt: skip


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
    """One deserialized engine, its execution context, I/O names and preallocated buffers.

    Buffers are sized for the profile's max shapes (inputs: `get_tensor_profile_shape`; outputs:
    what the context reports with every input at its max) and their device addresses are given
    to the context once; calls only set input shapes.
    """

    def __init__(self, trt: Any, runtime: Any, path: Path, *, cp: Any, stream: Any):
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
        max_shapes = {}
        for name in self.inputs:
            max_shapes[name] = tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
            self.context.set_input_shape(name, max_shapes[name])
        for name in self.outputs:
            max_shapes[name] = tuple(self.context.get_tensor_shape(name))
        import cupyx

        self.buffers = EngineBuffers(
            {n: (max_shapes[n], self.dtypes[n]) for n in names},
            xp=cp, host_empty=lambda n, dtype: cupyx.empty_pinned((n,), dtype), stream=stream,
        )  # fmt: skip
        for name in names:
            self.context.set_tensor_address(name, self.buffers.device_ptr(name))

    @property
    def max_batch(self) -> int:
        return self.buffers.max_batch

    def execute(
        self, stream: Any, shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, tuple[int, ...]]:
        """Run on the stream with the inputs already in their buffers -> output shapes."""
        ctx = self.context
        for name in self.inputs:
            if not ctx.set_input_shape(name, shapes[name]):
                raise ValueError(
                    f"{self.path.name}: input {name} {shapes[name]} lies outside the plan's "
                    "optimization profile"
                )
        if not ctx.execute_async_v3(stream.ptr):
            raise RuntimeError(f"{self.path.name}: TensorRT execution failed (see its log)")
        return {name: tuple(ctx.get_tensor_shape(name)) for name in self.outputs}


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
            self.stream = cp.cuda.Stream(non_blocking=True)
            self.encoder = _Plan(trt, self._runtime, files["encoder"], cp=cp, stream=self.stream)
            self.generator = _Plan(
                trt, self._runtime, files["generator"], cp=cp, stream=self.stream
            )
        self.max_batch = min(self.max_batch, self.encoder.max_batch, self.generator.max_batch)
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

    def _encode_chunk(self, l_norm: np.ndarray, init_idx: np.ndarray) -> dict[str, Any]:
        """One encoder call (n <= max_batch): host outputs copied out, the rest left on the
        device as DeviceRows of the encoder's buffers (valid until the next encode)."""
        buf = self.encoder.buffers
        buf.epoch += 1  # earlier DeviceRows now refuse to read
        dtypes = self.encoder.dtypes
        buf.upload("l_norm", np.ascontiguousarray(l_norm, dtypes["l_norm"]))
        buf.upload("init_idx", np.ascontiguousarray(init_idx, dtypes["init_idx"]))
        shapes = self.encoder.execute(
            self.stream, {"l_norm": l_norm.shape, "init_idx": init_idx.shape}
        )
        host = {n: buf.download(n, shapes[n]) for n in HOST_OUTPUTS if n in shapes}
        self.stream.synchronize()
        out: dict[str, Any] = {n: np.array(v) for n, v in host.items()}  # staging is reused
        for name, shape in shapes.items():
            if name not in out:
                out[name] = DeviceRows(buf, name, shape)
        return out

    def encode(self, l_norm: np.ndarray, init_idx: np.ndarray) -> Encoded:
        if len(l_norm) != len(init_idx):
            raise ValueError(f"{len(l_norm)} images but {len(init_idx)} init_idx rows")
        n = len(l_norm)
        with self._lock, self._cp.cuda.Device(self.device), self.stream:
            if n <= self.max_batch:
                outs = self._encode_chunk(l_norm, init_idx)
            else:  # above the profile: chunks, all outputs on the host (the old path)
                parts = []
                for start in range(0, n, self.max_batch):
                    part = self._encode_chunk(
                        l_norm[start : start + self.max_batch],
                        init_idx[start : start + self.max_batch],
                    )
                    parts.append({k: np.asarray(v) for k, v in part.items()})
                outs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return Encoded(*(outs[f] for f in Encoded.__dataclass_fields__))  # graph output names

    def generate(
        self,
        l_norm: np.ndarray,
        affinity: np.ndarray,
        tokens: np.ndarray,
        hint_mask: np.ndarray,
        hint_bins: np.ndarray,
    ) -> np.ndarray:
        feeds: dict[str, Any] = {
            "l_norm": l_norm,
            "affinity": affinity,
            "tokens": tokens,
            "hint_mask": hint_mask,
            "hint_bins": hint_bins,
        }
        m = len(l_norm)
        buf = self.generator.buffers
        ab = None
        with self._lock, self._cp.cuda.Device(self.device), self.stream:
            for start in range(0, m, self.max_batch):
                stop = min(start + self.max_batch, m)
                shapes = {}
                for name in self.generator.inputs:
                    x = feeds[name]
                    shape = (stop - start, *x.shape[1:])
                    if isinstance(x, DeviceRows) and x.buffers is self.encoder.buffers:
                        x.gather_into(buf.device(name, shape), start, stop)  # device -> device
                    else:
                        x = np.ascontiguousarray(
                            np.asarray(x)[start:stop], self.generator.dtypes[name]
                        )
                        buf.upload(name, x)
                    shapes[name] = shape
                out_shapes = self.generator.execute(self.stream, shapes)
                host = buf.download("ab", out_shapes["ab"])
                self.stream.synchronize()
                if ab is None:
                    ab = np.empty((m, *host.shape[1:]), host.dtype)
                ab[start:stop] = host
        if ab is None:
            raise ValueError("generate needs at least one row")
        return ab

    def warmup(self, batch: int = 1) -> None:
        """One full pass so the first request does not pay for lazy allocations."""
        s = self.input_size
        init = np.tile(np.arange(8, dtype=np.int64), (batch, 1))
        l_norm = np.zeros((batch, 1, s, s), np.float32)
        enc = self.encode(l_norm, init)
        self.generate(l_norm, enc.affinity, enc.tokens, enc.hint_mask, enc.sampled_bins[:, 0])
        self.stream.synchronize()

    def close(self) -> None:
        """Free the contexts and engines (the lifespan calls this on shutdown)."""
        for attr in ("encoder", "generator"):
            plan = getattr(self, attr, None)
            if plan is not None:
                del plan.context, plan.engine
        self.stream.synchronize()
