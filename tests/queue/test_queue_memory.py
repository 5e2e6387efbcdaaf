"""memory:// specifics: TTLs as timestamps (a fake clock drives them), the bounded dead-letter
list. Everything else is in the shared contract suite."""

from __future__ import annotations

import pytest

from service.queue import JobDef, JobStatus, MemoryQueue, Worker
from service.queue.jobs import JobResult

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _ok(jobs):
    return [JobResult.ok([b"out"]) for _ in jobs]


async def test_results_and_idempotency_keys_expire_after_the_result_ttl():
    clock = Clock()
    queue = MemoryQueue(result_ttl_s=600, default_timeout_s=30, clock=clock)
    done = await queue.enqueue(JobDef.create("colorize", b"a", idempotency_key="k", now=clock.now))
    await Worker(queue=queue, handler=_ok).run_check()
    assert (await queue.info(done.id)).status is JobStatus.DONE

    clock.now += 599
    assert (await queue.result(done.id)).outputs == [b"out"]
    again = await queue.enqueue(JobDef.create("colorize", b"b", idempotency_key="k"))
    assert again.id == done.id

    clock.now += 2
    assert await queue.info(done.id) is None
    assert await queue.result(done.id) is None
    fresh = await queue.enqueue(JobDef.create("colorize", b"c", idempotency_key="k"))
    assert fresh.id != done.id  # the key expired with its job


async def test_a_never_started_job_is_dropped_after_deadline_plus_ttl():
    clock = Clock()
    queue = MemoryQueue(result_ttl_s=60, default_timeout_s=30, clock=clock)
    queued = await queue.enqueue(JobDef.create("colorize", b"a", now=clock.now))
    clock.now += 31
    assert (await queue.info(queued.id)).status is JobStatus.EXPIRED
    clock.now += 60
    assert await queue.info(queued.id) is None
    assert await queue.depth() == 0


async def test_dead_letters_are_bounded():
    queue = MemoryQueue(dead_letter_maxlen=3)
    for i in range(5):
        await queue.enqueue(JobDef.create("colorize", b"a"))
        [delivery] = await queue.read("c", 1, None)
        await queue.dead_letter("c", [delivery], f"reason {i}")
    assert [d.reason for d in await queue.dead_letters()] == ["reason 4", "reason 3", "reason 2"]


async def test_params_are_copied_as_json():
    queue = MemoryQueue()
    params = {"anchors": 8}
    queued = await queue.enqueue(JobDef.create("colorize", b"a", params=params))
    params["anchors"] = 1
    [delivery] = await queue.read("c", 1, None)
    [started] = await queue.begin("c", [delivery])
    assert started.params == {"anchors": 8} and started.id == queued.id
    with pytest.raises(TypeError):
        await queue.enqueue(JobDef.create("colorize", b"a", params={"blob": b"x"}))
