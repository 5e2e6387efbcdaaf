"""Preallocated engine buffers for the TensorRT engine, over an array module (CuPy or numpy).

`EngineBuffers` holds, for every I/O tensor of one plan, a device buffer sized for the
optimization profile's max shape (allocated once, at construction) and a host staging buffer
(pinned with CuPy, allocated on first use, then reused). A call with a smaller batch, or fewer
k-means anchors, gets views of the first `prod(shape)` elements, so the device address TensorRT
was given never changes and nothing is allocated per call. A shape above the profile max raises.

`DeviceRows` is an encoder output left in those device buffers: the pipeline's row selection
(`enc.affinity[take]`) stays lazy and is gathered on the device, straight into the generator's
input buffer (`gather_into`). The buffers are reused by the next encode, so a DeviceRows carries
the encode's epoch and refuses to be read after it was overwritten (`StaleBuffer`).

Only `xp` (empty, take) is used, plus `.set`/`.get` for host <-> device copies when xp is not
numpy: with numpy as xp (the CPU tests) the "device" is host memory and copies are assignments.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Shape = tuple[int, ...]


class StaleBuffer(RuntimeError):
    """A device-resident encoder output was overwritten by a later encode on the same engine."""


class EngineBuffers:
    """Device buffers (max shape, allocated once) and reusable host staging buffers.

    specs: {tensor name: (max shape, dtype)}; xp: the device array module; host_empty(n, dtype)
    makes a flat host buffer (`cupyx.empty_pinned` on GPU; `np.empty` by default); stream: the
    CUDA stream copies run on (ignored with numpy).
    """

    def __init__(
        self,
        specs: Mapping[str, tuple[Shape, Any]],
        *,
        xp: Any,
        host_empty: Callable[[int, Any], np.ndarray] | None = None,
        stream: Any = None,
    ):
        self.xp = xp
        self.stream = stream
        self.max_shapes = {name: tuple(int(d) for d in shape) for name, (shape, _) in specs.items()}
        self.dtypes = {name: np.dtype(dtype) for name, (_, dtype) in specs.items()}
        self._host_empty = host_empty or (lambda n, dtype: np.empty(n, dtype))
        self._on_host_xp = xp is np
        self.device_allocations = 0
        self.host_allocations = 0
        self.epoch = 0  # bumped by whoever overwrites the buffers (each encode)
        self._device: dict[str, Any] = {}
        self._host: dict[str, np.ndarray] = {}
        for name, shape in self.max_shapes.items():
            self._device[name] = xp.empty(math.prod(shape), dtype=self.dtypes[name])
            self.device_allocations += 1

    @property
    def max_batch(self) -> int:
        return min(shape[0] for shape in self.max_shapes.values())

    def _check(self, name: str, shape: Shape) -> Shape:
        shape = tuple(int(d) for d in shape)
        top = self.max_shapes[name]
        if len(shape) != len(top) or any(d > t for d, t in zip(shape, top, strict=True)):
            raise ValueError(
                f"{name}: shape {shape} exceeds the buffers' max {top} (the optimization "
                f"profile's max batch is {top[0]}): split the batch"
            )
        return shape

    def device(self, name: str, shape: Shape) -> Any:
        """A view of the device buffer: the first prod(shape) elements, reshaped."""
        shape = self._check(name, shape)
        return self._device[name][: math.prod(shape)].reshape(shape)

    def device_ptr(self, name: str) -> int:
        """The device address of the buffer (constant for the engine's life; CuPy only)."""
        return int(self._device[name].data.ptr)

    def host(self, name: str, shape: Shape) -> np.ndarray:
        """A view of the host staging buffer (allocated at max size on first use, then reused)."""
        shape = self._check(name, shape)
        if name not in self._host:
            self._host[name] = self._host_empty(math.prod(self.max_shapes[name]), self.dtypes[name])
            self.host_allocations += 1
        return self._host[name][: math.prod(shape)].reshape(shape)

    def upload(self, name: str, array: np.ndarray) -> Any:
        """Host array -> staging buffer -> device buffer (async on the stream); the device view."""
        array = np.asarray(array)
        dev = self.device(name, array.shape)
        if self._on_host_xp:
            dev[...] = array
            return dev
        staging = self.host(name, array.shape)
        np.copyto(staging, array, casting="same_kind")
        dev.set(staging, stream=self.stream)
        return dev

    def download(self, name: str, shape: Shape) -> np.ndarray:
        """Device buffer -> host staging view (async with CuPy: synchronise the stream, then read
        it, and copy it out before the next call reuses it)."""
        host = self.host(name, shape)
        dev = self.device(name, shape)
        if self._on_host_xp:
            host[...] = dev
        else:
            dev.get(stream=self.stream, out=host)
        return host


class DeviceRows:
    """Rows of one tensor in `EngineBuffers` (all n rows, or a selection), valid for one epoch."""

    def __init__(
        self,
        buffers: EngineBuffers,
        name: str,
        shape: Shape,
        rows: np.ndarray | None = None,
        epoch: int | None = None,
    ):
        self.buffers, self.name = buffers, name
        self.full_shape = tuple(int(d) for d in shape)
        self.rows = rows
        self.epoch = buffers.epoch if epoch is None else epoch  # a selection keeps its source's
        n = len(rows) if rows is not None else self.full_shape[0]
        self.shape: Shape = (n, *self.full_shape[1:])
        self.dtype = buffers.dtypes[name]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _source(self) -> Any:
        if self.buffers.epoch != self.epoch:
            raise StaleBuffer(
                f"{self.name}: the engine's buffers were overwritten by a later encode; "
                "generate from an Encoded before encoding the next batch on the same engine"
            )
        return self.buffers.device(self.name, self.full_shape)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, list | np.ndarray):
            idx = np.asarray(key)
            if idx.ndim == 1 and (idx.dtype.kind in "iu" or idx.size == 0):
                idx = idx.astype(np.int64)
                n = len(self)  # indices into this selection
                if idx.size and (idx.min() < -n or idx.max() >= n):
                    raise IndexError(f"rows {idx.tolist()} out of range for batch {n}")
                base = idx % n if self.rows is None else self.rows[idx]
                return DeviceRows(self.buffers, self.name, self.full_shape, base, self.epoch)
        return self.numpy()[key]

    def gather_into(self, out: Any, start: int = 0, stop: int | None = None) -> Any:
        """Rows [start:stop] of this selection into `out` (a device view), on the device."""
        src = self._source()
        stop = len(self) if stop is None else stop
        rows = np.arange(start, stop) if self.rows is None else self.rows[start:stop]
        xp = self.buffers.xp
        if xp is np:
            return np.take(src, rows, axis=0, out=out)
        with self.buffers.stream or contextlib.nullcontext():
            return xp.take(src, xp.asarray(rows), axis=0, out=out)

    def numpy(self) -> np.ndarray:
        """A host copy (a new array; the staging buffers are not used, they belong to calls)."""
        src = self._source()
        xp = self.buffers.xp
        if xp is np:
            host = np.array(src)
        else:
            if self.buffers.stream is not None:
                self.buffers.stream.synchronize()
            host = xp.asnumpy(src)
        return host if self.rows is None else host[self.rows]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        host = self.numpy()
        return host if dtype is None else host.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        return self.numpy().astype(dtype)
