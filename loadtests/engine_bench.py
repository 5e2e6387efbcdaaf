"""Engine-only images/s: the ceiling the serving stack is compared with (no torch).

`disco bench`'s approach (export/bench.py `_run_once`) on the served model repository: the load
test's own 256 px inputs, decoded and preprocessed once up front; then only
`engine.encode` + `engine.generate` (one anchor set per image, the seed the API would derive
from the bytes) are timed, per batch size. `engines` > 1 runs that many independent OnnxEngine
sessions concurrently, one Python thread each (ONNX Runtime releases the GIL), which is what
N single-threaded `disco worker` processes do with the machine.

Each figure is the median of the timed calls (at least `rounds`, and at least `min_s` seconds
of them) after one warm-up call per engine.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loadtests import inputs
from service import colorspace, pipeline
from service.imageio import decode_image


def _batch(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(l_norm (n,1,256,256), init rows (n, 8)) for the load test's first n 256 px images."""
    jobs = []
    for data in inputs.pool(inputs.SMALL, n):
        rgb = decode_image(data)
        jobs.append(pipeline.Job(rgb, pipeline.seed_from_bytes(data), 8, 1, None, "original"))
    l_norm = np.concatenate([colorspace.preprocess(j.rgb) for j in jobs])
    return l_norm, pipeline.init_rows(jobs, (l_norm.shape[-1] // 16) ** 2)


def _call(engine: Any, l_norm: np.ndarray, init: np.ndarray) -> float:
    start = time.perf_counter()
    enc = engine.encode(l_norm, init)
    engine.generate(l_norm, enc.affinity, enc.tokens, enc.hint_mask, enc.sampled_bins[:, 0])
    return time.perf_counter() - start


def _concurrent(
    sessions: Sequence[Any], l_norm: np.ndarray, init: np.ndarray, rounds: int, min_s: float
) -> list[list[float]]:
    """Every session: one warm-up call, then (all together) timed calls: at least `rounds`,
    and more (up to 50) until they add up to `min_s` seconds."""
    times: list[list[float]] = [[] for _ in sessions]
    errors: list[BaseException] = []
    gate = threading.Barrier(len(sessions))

    def loop(k: int) -> None:
        try:
            _call(sessions[k], l_norm, init)  # warm-up: allocations, kernel choices
            gate.wait(timeout=600)
            while len(times[k]) < rounds or (sum(times[k]) < min_s and len(times[k]) < 50):
                times[k].append(_call(sessions[k], l_norm, init))
        except BaseException as e:  # re-raised below, in the caller's thread
            errors.append(e)
            gate.abort()

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return times


def measure(
    model_dir: Path,
    *,
    batches: Sequence[int] = (1, 2, 4, 8),
    engines: int = 1,
    threads: int = 0,
    rounds: int = 3,
    min_s: float = 5.0,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """images/s (all engines together) and seconds per call, per batch size."""
    from service.engine.onnx import OnnxEngine

    sessions = [OnnxEngine(model_dir, intra_op_threads=threads or None) for _ in range(engines)]
    out: dict[str, Any] = {"engines": engines, "threads": threads, "rounds": rounds, "batch": {}}
    for b in batches:
        l_norm, init = _batch(b)
        progress(f"engine-only: {engines} engine(s) x {threads or 'all'} threads, batch {b}")
        times = _concurrent(sessions, l_norm, init, rounds, min_s)
        per_call = [statistics.median(t) for t in times]
        out["batch"][str(b)] = {
            "images_per_s": round(sum(b / s for s in per_call), 3),
            "s_per_call": [round(s, 4) for s in per_call],
            "calls": [len(t) for t in times],
        }
    return out


def at_batch(result: dict[str, Any], batch: float) -> float:
    """images/s at a (mean, fractional) batch size: linear in per-image time between the
    measured sizes, clamped to the measured range."""
    sizes = sorted(int(b) for b in result["batch"])
    per_image = [1.0 / result["batch"][str(b)]["images_per_s"] for b in sizes]
    return 1.0 / float(np.interp(batch, sizes, per_image))
