"""The TensorRT engine's buffer management (service/engine/tensorrt_buffers.py) with numpy as xp.

The same class holds CuPy device buffers and pinned host buffers on a GPU node; its logic (sizes
per max batch, views for a smaller batch, reuse across calls, refusing a batch above the profile
max, device-side row gathers, stale-buffer detection) is array-module code and is tested here.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from service.engine.tensorrt_buffers import DeviceRows, EngineBuffers, StaleBuffer

MAX = 4
SPECS = {
    "l_norm": ((MAX, 1, 8, 8), np.float32),
    "init_idx": ((MAX, 64), np.int64),
    "affinity": ((MAX, 9, 8, 8), np.float32),
    "ab": ((MAX, 2, 8, 8), np.float32),
}


@pytest.fixture
def bufs() -> EngineBuffers:
    calls: list[tuple[int, np.dtype]] = []

    def host_empty(n: int, dtype: np.dtype) -> np.ndarray:
        calls.append((n, np.dtype(dtype)))
        return np.empty(n, dtype)

    b = EngineBuffers(SPECS, xp=np, host_empty=host_empty)
    b.host_calls = calls  # type: ignore[attr-defined]
    return b


def test_sizes_follow_the_profile_max(bufs):
    assert bufs.device_allocations == len(SPECS) and bufs.host_allocations == 0
    assert bufs.max_batch == MAX
    for name, (shape, dtype) in SPECS.items():
        full = bufs.device(name, shape)
        assert full.shape == shape and full.dtype == dtype
        assert full.base is not None and full.base.size == np.prod(shape)


def test_smaller_batches_are_views_of_the_same_memory(bufs):
    full = bufs.device("init_idx", (MAX, 64))
    small = bufs.device("init_idx", (2, 8))  # fewer images and fewer anchors
    assert small.shape == (2, 8) and np.shares_memory(small, full)
    assert small.__array_interface__["data"][0] == full.__array_interface__["data"][0]
    small[...] = np.arange(16).reshape(2, 8)
    assert np.array_equal(full.reshape(-1)[:16], np.arange(16))


def test_upload_download_reuse_buffers_across_calls(bufs):
    rng = np.random.default_rng(0)
    before = bufs.device_allocations
    ptrs = set()
    for n in (1, 3, 4, 2, 4):
        x = rng.standard_normal((n, 2, 8, 8)).astype(np.float32)
        dev = bufs.upload("ab", x)
        assert np.array_equal(dev, x)
        host = bufs.download("ab", (n, 2, 8, 8))
        assert np.array_equal(host, x)
        ptrs.add(host.__array_interface__["data"][0])
    assert bufs.device_allocations == before, "no device allocation per call"
    assert bufs.host_allocations == 1 and bufs.host_calls == [(MAX * 2 * 8 * 8, np.float32)]
    assert len(ptrs) == 1, "the host staging buffer is reused"


@pytest.mark.parametrize(
    ("name", "shape"),
    [("l_norm", (MAX + 1, 1, 8, 8)), ("init_idx", (2, 65)), ("ab", (2, 2, 8))],
)
def test_refuses_shapes_above_the_profile(bufs, name, shape):
    with pytest.raises(ValueError, match="exceeds the buffers' max"):
        bufs.device(name, shape)
    with pytest.raises(ValueError, match="max batch is"):
        bufs.upload(name, np.zeros(shape, SPECS[name][1]))


def test_device_rows_gather_into_generator_buffer(bufs):
    gen = EngineBuffers({"affinity": ((MAX, 9, 8, 8), np.float32)}, xp=np)
    x = np.random.default_rng(1).standard_normal((3, 9, 8, 8)).astype(np.float32)
    bufs.upload("affinity", x)
    rows = DeviceRows(bufs, "affinity", x.shape)
    assert rows.shape == x.shape and np.array_equal(np.asarray(rows), x)
    take = rows[np.array([2, 0, 0, 1])]
    assert isinstance(take, DeviceRows) and take.shape == (4, 9, 8, 8)
    assert np.array_equal(take.numpy(), x[[2, 0, 0, 1]])
    assert np.array_equal(take[np.array([1, 3])].numpy(), x[[0, 1]])  # a selection of one
    dst = gen.device("affinity", (2, 9, 8, 8))
    take.gather_into(dst, 2, 4)  # a chunk of the selection, straight into the input buffer
    assert np.array_equal(gen.device("affinity", (2, 9, 8, 8)), x[[0, 1]])
    assert rows[1, 3, 2, 1] == x[1, 3, 2, 1]  # other indexing reads a host copy
    with pytest.raises(IndexError):
        rows[np.array([3])]


def test_device_rows_refuse_after_the_next_encode(bufs):
    bufs.upload("affinity", np.zeros((2, 9, 8, 8), np.float32))
    rows = DeviceRows(bufs, "affinity", (2, 9, 8, 8))
    bufs.epoch += 1  # what TensorRTEngine.encode does before overwriting the buffers
    with pytest.raises(StaleBuffer):
        rows.numpy()
    with pytest.raises(StaleBuffer):
        rows[np.array([0])].gather_into(np.empty((1, 9, 8, 8), np.float32))


@pytest.mark.skipif(importlib.util.find_spec("cupy") is None, reason="CuPy is not installed")
def test_cupy_buffers_are_device_arrays():
    cp = pytest.importorskip("cupy")
    try:
        cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError as e:
        pytest.skip(f"no CUDA device: {e}")
    import cupyx

    stream = cp.cuda.Stream(non_blocking=True)
    b = EngineBuffers(SPECS, xp=cp, stream=stream,
                      host_empty=lambda n, dtype: cupyx.empty_pinned((n,), dtype))  # fmt: skip
    x = np.arange(2 * 2 * 64, dtype=np.float32).reshape(2, 2, 8, 8)
    ptr = b.device_ptr("ab")
    b.upload("ab", x)
    host = b.download("ab", x.shape)
    stream.synchronize()
    assert np.array_equal(host, x) and b.device_ptr("ab") == ptr
