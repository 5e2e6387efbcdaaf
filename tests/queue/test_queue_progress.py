"""Progress and cancel of a running job (video jobs), on both queues: the running attempt writes
frames done / total; a stale attempt is told it was superseded and writes nothing; a cancel
request reaches the running attempt, which completes the job cancelled; a later completion by
another delivery is dropped, so the job keeps exactly one result."""

from __future__ import annotations

import pytest

from service.queue import JobDef, JobResult, JobStatus
from service.queue.jobs import ERROR_CANCELLED, error_meta

pytestmark = pytest.mark.anyio


async def _start(queue, consumer: str):
    await queue.register(consumer)
    [delivery] = await queue.read(consumer, 1, None)
    [job] = await queue.begin(consumer, [delivery])
    assert isinstance(job, JobDef)
    return delivery, job


async def test_progress_cancel_and_one_result(queue):
    job = await queue.enqueue(JobDef.create("video", b"clip", timeout_s=30))
    assert (await queue.info(job.id)).progress is None
    assert not await queue.request_cancel(job.id)  # queued: DELETE cancels it outright instead
    delivery, started = await _start(queue, "w1")
    assert await queue.progress(job.id, started.attempts, 3, 10) == "ok"
    info = await queue.info(job.id)
    assert info.progress == {"frames_done": 3, "frames_total": 10}
    assert info.to_dict()["progress"] == info.progress and not info.cancel_requested
    assert await queue.progress(job.id, started.attempts + 1, 9, 10) == "superseded"
    assert (await queue.info(job.id)).progress["frames_done"] == 3  # the stale write is dropped
    assert await queue.request_cancel(job.id)
    assert (await queue.info(job.id)).cancel_requested
    assert await queue.progress(job.id, started.attempts, 4, 10) == "cancel"
    cancelled = JobResult(JobStatus.CANCELLED, [], error_meta(ERROR_CANCELLED, "stopped"))
    assert await queue.complete("w1", [(delivery, cancelled)]) == [True]
    assert (await queue.info(job.id)).status is JobStatus.CANCELLED
    assert not await queue.request_cancel(job.id)
    assert await queue.progress(job.id, started.attempts, 5, 10) == "superseded"


async def test_a_late_second_completion_is_dropped(queue):
    job = await queue.enqueue(JobDef.create("video", b"clip", timeout_s=30))
    delivery, _ = await _start(queue, "w1")
    assert await queue.complete("w1", [(delivery, JobResult.ok([b"mp4-a"]))]) == [True]
    assert await queue.complete("w2", [(delivery, JobResult.ok([b"mp4-b"]))]) == [False]
    result = await queue.result(job.id)
    assert result is not None and result.outputs == [b"mp4-a"]
