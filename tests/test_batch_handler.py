"""The worker's batch handler on a real ONNX Runtime engine: a batch that raises is run again
job by job, so one job the engine cannot take fails alone and its batch-mates finish.

The fault is injected by a wrapper around the real engine (a stand-in for an image that
exhausts memory): every call still runs ONNX Runtime unless that image is in the batch.
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from service.batch_handler import ColorizeHandler
from service.engine.onnx import OnnxEngine
from service.queue import JobDef, JobStatus, Worker, open_queue
from service.settings import Settings


class FailsOnWhite:
    """The real engine, except that a batch holding an all-white image raises MemoryError."""

    def __init__(self, engine: OnnxEngine) -> None:
        self.engine = engine
        self.name = engine.name
        self.input_size = engine.input_size
        self.levels = engine.levels
        self.encode_batches: list[int] = []

    def encode(self, l_norm: np.ndarray, init_idx: np.ndarray):
        self.encode_batches.append(len(l_norm))
        if (l_norm.reshape(len(l_norm), -1).min(1) > 0.99).any():
            raise MemoryError("cannot allocate the working set of this image")
        return self.engine.encode(l_norm, init_idx)

    def generate(self, *args: np.ndarray) -> np.ndarray:
        return self.engine.generate(*args)


def _png(value: int | None, photos_dir) -> bytes:
    if value is None:
        img = Image.open(photos_dir / "chelsea.jpg").convert("L").resize((96, 64))
    else:
        img = Image.new("L", (96, 64), value)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine(tiny_repo) -> FailsOnWhite:
    return FailsOnWhite(OnnxEngine(tiny_repo, intra_op_threads=2))


def test_a_failing_batch_is_rerun_job_by_job(engine, photos_dir):
    handler = ColorizeHandler(engine, max_pixels=10_000_000)
    jobs = [
        JobDef.create("colorize", _png(None, photos_dir)),
        JobDef.create("colorize", _png(255, photos_dir)),
        JobDef.create("diverse", _png(None, photos_dir), params={"count": 2}),
        JobDef.create("colorize", b"not an image"),
    ]
    engine.encode_batches.clear()
    results = handler.process(jobs)
    assert engine.encode_batches == [3, 1, 1, 1]  # the batch, then each image job alone
    assert results[0].status is JobStatus.DONE and len(results[0].outputs) == 1
    assert isinstance(results[1], MemoryError)
    assert results[2].status is JobStatus.DONE and len(results[2].outputs) == 2
    assert results[3].status is JobStatus.FAILED  # bad input: failed before the engine
    assert results[3].meta["error"]["code"] == "unsupported_image"
    # the outputs are the images a batch without the bad job gives
    alone = handler.process([jobs[0], jobs[2]])
    assert alone[0].outputs == results[0].outputs and alone[1].outputs == results[2].outputs


def test_a_batch_of_one_raises_for_the_worker_to_retry(engine, photos_dir):
    handler = ColorizeHandler(engine, max_pixels=10_000_000)
    with pytest.raises(MemoryError):
        handler.process([JobDef.create("colorize", _png(255, photos_dir))])


@pytest.mark.anyio
async def test_batch_mates_of_a_bad_job_are_not_retried(engine, photos_dir):
    settings = Settings(queue_url="memory://", max_wait_ms=200, max_deliveries=2)
    queue = open_queue(settings.queue_url, settings)
    handler = ColorizeHandler(engine, max_pixels=10_000_000)
    worker = Worker.from_settings(queue=queue, handler=handler, settings=settings, max_batch=3)
    try:
        ids = [
            (await queue.enqueue(JobDef.create("colorize", _png(v, photos_dir)))).id
            for v in (None, 255, 128)
        ]
        task = asyncio.create_task(worker.run())
        infos = [await queue.wait(i, 60) for i in ids]
        assert [i.status for i in infos] == [JobStatus.DONE, JobStatus.FAILED, JobStatus.DONE]
        assert "MemoryError" in str(infos[1].error)
        assert worker.stats.jobs_retried == 0 and worker.stats.batch_errors == 0
        assert worker.stats.batch_sizes == {3: 1}
    finally:
        await worker.close()
        await asyncio.wait_for(task, 10)
        await queue.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
