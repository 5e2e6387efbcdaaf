"""ONNX Runtime I/O binding: the encoder's outputs stay on the device and feed the generator.

With the plain `session.run` path every encoder output comes back to the host as numpy and the
generator copies affinity and tokens (~2.4 MB per image) back to the device. Here the encoder
runs with an `IOBinding` whose large outputs (affinity, tokens, enc_out, pal_logit,
spixel_sizes) are left where the execution provider produced them, as `OrtValue`s wrapped in
`DeviceTensor`; only hint_mask and sampled_bins (what the pipeline reads per request) are bound
to host memory. The generator binds the DeviceTensors as its inputs, and only its ab comes back.

The pipeline indexes encoder outputs by rows (`enc.affinity[take]`, one image repeated for K
diverse results): a DeviceTensor answers an integer row index with a device-side gather (a
one-node `Gather` graph on the same provider), so repeated rows never pass through the host
either. Any other use (`np.asarray`, scalar indexing, `.astype`) copies to the host once and
caches it, so `automatic_anchors` keeps working unchanged.

`device="cpu"` runs the same code with CPU OrtValues on the CPU EP: that is how the tests
exercise it, and it must give exactly the plain path's results.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

# What the pipeline reads on the host per request (and the small anchor indices).
HOST_OUTPUTS = ("hint_mask", "sampled_bins", "anchor_idx")
_ORT_FLOAT, _ORT_INT64 = 1, 7  # TensorProto.DataType
_ELEM_TYPES = {  # OrtValue.data_type() -> (TensorProto.DataType, numpy dtype)
    "tensor(float)": (_ORT_FLOAT, np.float32),
    "tensor(float16)": (10, np.float16),
    "tensor(int64)": (_ORT_INT64, np.int64),
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes | str | int) -> bytes:
    """One protobuf field: varint for int, length-delimited for bytes/str."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, elem_type: int, dims: tuple[str, ...]) -> bytes:
    shape = b"".join(_field(1, _field(2, d)) for d in dims)  # Dimension{dim_param}
    tensor_type = _field(1, elem_type) + _field(2, shape)  # TypeProto.Tensor{elem_type, shape}
    return _field(1, name) + _field(2, _field(1, tensor_type))  # ValueInfoProto{name, type}


@functools.cache
def gather_model(elem_type: int = _ORT_FLOAT, rank: int = 4) -> bytes:
    """A serialized ModelProto `y = Gather(x, idx, axis=0)` (opset 13) for rank-`rank` x, built
    without `onnx` (a dependency of the export side only)."""
    rest = tuple(f"d{i}" for i in range(1, rank))
    axis = _field(1, "axis") + _field(3, 0) + _field(20, 2)  # AttributeProto{name, i, type=INT}
    node = _field(1, "x") + _field(1, "idx") + _field(2, "y") + _field(4, "Gather")
    node += _field(5, axis)
    graph = _field(1, node) + _field(2, "disco_gather_rows")
    graph += _field(11, _value_info("x", elem_type, ("n", *rest)))
    graph += _field(11, _value_info("idx", _ORT_INT64, ("m",)))
    graph += _field(12, _value_info("y", elem_type, ("m", *rest)))
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 8) + _field(2, "disco-serve") + _field(7, graph) + _field(8, opset)


class DeviceTensor:
    """An encoder output left on the device: shape, row gathers on the device, lazy host copy."""

    def __init__(self, value: Any, binder: OrtBinder):
        self.value = value  # onnxruntime.OrtValue
        self.shape: tuple[int, ...] = tuple(int(d) for d in value.shape())
        self.elem_type, dtype = _ELEM_TYPES[value.data_type()]
        self.dtype = np.dtype(dtype)
        self._binder = binder
        self._host: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numpy(self) -> np.ndarray:
        """The host copy (made once, then cached)."""
        if self._host is None:
            self._host = self.value.numpy()
        return self._host

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        host = self.numpy()
        return host if dtype is None else host.astype(dtype)

    def __getitem__(self, key: Any) -> Any:
        rows = _row_index(key)
        if rows is None:
            return self.numpy()[key]
        if rows.shape == (self.shape[0],) and np.array_equal(rows, np.arange(self.shape[0])):
            return self
        if rows.size and (rows.min() < -self.shape[0] or rows.max() >= self.shape[0]):
            raise IndexError(f"rows {rows.tolist()} out of range for batch {self.shape[0]}")
        return self._binder.gather(self, rows % max(self.shape[0], 1))

    def astype(self, dtype: Any) -> np.ndarray:
        return self.numpy().astype(dtype)


def _row_index(key: Any) -> np.ndarray | None:
    """A 1-D integer row index (array or list) -> int64 array; anything else -> None."""
    if isinstance(key, list | np.ndarray):
        arr = np.asarray(key)
        if arr.ndim == 1 and (arr.dtype.kind in "iu" or arr.size == 0):
            return arr.astype(np.int64)
    return None


class OrtBinder:
    """Runs the encoder and generator sessions with I/O binding on one device.

    `device` is the OrtValue device type: "cuda" beside the CUDA EP, "cpu" beside the CPU EP
    (tests). `providers` is the session provider list, reused for the gather graph.
    """

    def __init__(
        self,
        encoder: Any,
        generator: Any,
        *,
        device: str = "cuda",
        device_id: int = 0,
        providers: list[Any] | None = None,
    ):
        import onnxruntime as ort

        self._ort = ort
        self.encoder, self.generator = encoder, generator
        self.device, self.device_id = device, device_id
        self.encoder_outputs = [o.name for o in encoder.get_outputs()]
        self.generator_inputs = [i.name for i in generator.get_inputs()]
        self._providers = providers or ["CPUExecutionProvider"]
        self._gathers: dict[tuple[int, int], Any] = {}  # (elem type, rank) -> Gather session
        self._gather_lock = threading.Lock()

    def _gather_session(self, elem_type: int, rank: int) -> Any:
        key = (elem_type, rank)
        if key not in self._gathers:
            so = self._ort.SessionOptions()
            so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            model = gather_model(elem_type, rank)
            self._gathers[key] = self._ort.InferenceSession(model, so, providers=self._providers)
        return self._gathers[key]

    def _sync(self, binding: Any) -> None:
        if self.device != "cpu":
            binding.synchronize_outputs()

    def encode(self, l_norm: np.ndarray, init_idx: np.ndarray) -> dict[str, Any]:
        """-> {name: numpy (HOST_OUTPUTS) or DeviceTensor (the rest)}."""
        binding = self.encoder.io_binding()
        binding.bind_cpu_input("l_norm", np.ascontiguousarray(l_norm, np.float32))
        binding.bind_cpu_input("init_idx", np.ascontiguousarray(init_idx, np.int64))
        for name in self.encoder_outputs:
            if name in HOST_OUTPUTS:
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, self.device, self.device_id)
        self.encoder.run_with_iobinding(binding)
        self._sync(binding)
        outs = binding.get_outputs()
        named: dict[str, Any] = {}
        for name, value in zip(self.encoder_outputs, outs, strict=True):
            named[name] = value.numpy() if name in HOST_OUTPUTS else DeviceTensor(value, self)
        return named

    def gather(self, tensor: DeviceTensor, rows: np.ndarray) -> DeviceTensor:
        """Rows of a device tensor, gathered on the device (a new OrtValue there)."""
        with self._gather_lock:
            session = self._gather_session(tensor.elem_type, tensor.ndim)
            binding = session.io_binding()
            binding.bind_ortvalue_input("x", tensor.value)
            binding.bind_cpu_input("idx", np.ascontiguousarray(rows, np.int64))
            binding.bind_output("y", self.device, self.device_id)
            session.run_with_iobinding(binding)
            self._sync(binding)
            (value,) = binding.get_outputs()
        return DeviceTensor(value, self)

    def generate(self, feeds: dict[str, Any]) -> np.ndarray:
        """Generator feeds (numpy or DeviceTensor) -> ab on the host."""
        binding = self.generator.io_binding()
        for name in self.generator_inputs:
            x = feeds[name]
            if isinstance(x, DeviceTensor):
                binding.bind_ortvalue_input(name, x.value)
            else:
                binding.bind_cpu_input(name, x)
        (out,) = (o.name for o in self.generator.get_outputs())
        binding.bind_output(out, "cpu")
        self.generator.run_with_iobinding(binding)
        self._sync(binding)
        (ab,) = binding.copy_outputs_to_cpu()
        return np.asarray(ab)
