"""The queue contract, run against both implementations (memory:// and a real redis-server).

No sleeping as synchronisation: tests await `run_check()`, `wait()`, events and futures under
timeouts (`anyio.fail_after`), or poll state with a bounded deadline where nothing can be awaited.
"""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from service.queue import (
    JobDef,
    JobNotFound,
    JobResult,
    JobStatus,
    QueueFull,
)

pytestmark = pytest.mark.anyio


async def test_enqueue_worker_result_exactly_once(queue, make_worker, recorder, job):
    handler = recorder()
    jobs = [await queue.enqueue(job(payload=f"img{i}".encode())) for i in range(5)]
    assert await queue.depth() == 5
    info = await queue.info(jobs[0].id)
    assert info.status is JobStatus.QUEUED and info.n_outputs == 0

    stats = await make_worker(queue, handler).run_check()

    assert stats.jobs_done == 5 and stats.jobs_failed == 0
    assert all(n == 1 for n in handler.seen.values()) and set(handler.seen) == {j.id for j in jobs}
    assert await queue.depth() == 0
    for i, queued in enumerate(jobs):
        info = await queue.info(queued.id)
        assert info.status is JobStatus.DONE and info.terminal
        assert info.n_outputs == 1 and info.attempts == 1
        assert info.started_at is not None and info.finished_at >= info.started_at
        assert {"queue_s", "compute_s"} <= set(info.timings)
        result = await queue.result(queued.id)
        assert result.status is JobStatus.DONE
        assert result.outputs == [f"img{i}".encode()[::-1]]
        assert result.meta["content_type"] == "image/png"
    # a second worker finds nothing left to do
    assert (await make_worker(queue, handler).run_check()).batches == 0


async def test_job_ids_are_unguessable(queue, job):
    ids = {(await queue.enqueue(job())).id for _ in range(10)}
    assert len(ids) == 10
    assert all(len(i) >= 22 for i in ids)  # 128 random bits, URL-safe


async def test_unknown_job(queue):
    assert await queue.info("nope") is None
    assert await queue.result("nope") is None
    assert await queue.cancel("nope") is False
    with pytest.raises(JobNotFound):
        await queue.wait("nope", 0.1)


async def test_result_is_none_until_finished(queue, job):
    queued = await queue.enqueue(job())
    assert await queue.result(queued.id) is None


async def test_enqueue_fills_the_default_deadline_and_keeps_params(queue, job):
    before = time.time()
    stored = await queue.enqueue(job(params={"anchors": 8, "hints": [{"x": 0.5}]}))
    assert before + 29 <= stored.deadline <= time.time() + 31  # job_timeout_s = 30
    custom = await queue.enqueue(job(timeout_s=5.0))
    assert custom.deadline == pytest.approx(custom.created_at + 5.0)
    with pytest.raises(ValueError, match="already exists"):
        await queue.enqueue(JobDef(kind="colorize", payload=b"other", id=stored.id))
    # the job it collided with is untouched, payload included
    [delivery] = await queue.read("c", 1, None)
    [started] = await queue.begin("c", [delivery])
    assert started.id == stored.id and started.payload == b"img"


async def test_batches_respect_max_batch(queue, make_worker, recorder, job):
    handler = recorder()
    for _ in range(10):
        await queue.enqueue(job())
    stats = await make_worker(queue, handler, max_batch=4).run_check()
    assert [len(b) for b in handler.batches] == [4, 4, 2]
    assert stats.batch_sizes == {4: 2, 2: 1}
    assert stats.jobs_done == 10


async def test_a_lone_job_waits_at_most_max_wait(queue, make_worker, recorder, job):
    handler = recorder()
    worker = make_worker(queue, handler, max_batch=8, max_wait_ms=150)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        t0 = time.monotonic()
        queued = await queue.enqueue(job())
        with anyio.fail_after(5):
            info = await queue.wait(queued.id, 5)
        elapsed = time.monotonic() - t0
        await worker.close()
    assert info.status is JobStatus.DONE
    assert handler.batches == [[queued.id]]
    # it waited for company (150 ms) but not much longer
    assert 0.14 <= handler.called_at[0] - t0 <= 1.0, handler.called_at[0] - t0
    assert elapsed < 1.5


async def test_the_fill_wait_needs_company(queue, make_worker, recorder, job):
    """A batch waits for more jobs only when this read or the previous batch brought more than
    one: at low load a lone job runs at once instead of paying max_wait in latency."""
    gate = asyncio.Event()
    handler = recorder(gate=gate)
    worker = make_worker(queue, handler, max_batch=8, max_wait_ms=1000)

    async def lone_job_delay() -> float:
        t0 = time.monotonic()
        queued = await queue.enqueue(job())
        await queue.wait(queued.id, 5)
        return handler.called_at[-1] - t0

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(15):
            first = await queue.enqueue(job())
            await handler.started.wait()  # the first batch runs; two more queue up meanwhile
            pair = [await queue.enqueue(job()) for _ in range(2)]
            gate.set()
            for queued in [first, *pair]:
                await queue.wait(queued.id, 5)
            after_pair = await lone_job_delay()  # the last batch had company: it waits
            after_lone = await lone_job_delay()  # the last batch was alone: no wait
        await worker.close()
    assert [len(b) for b in handler.batches] == [1, 2, 1, 1]
    assert 0.95 <= after_pair <= 3.0, after_pair
    assert after_lone < 0.5, after_lone


async def test_a_batch_fills_without_waiting_the_full_max_wait(queue, make_worker, recorder, job):
    handler = recorder()
    worker = make_worker(queue, handler, max_batch=3, max_wait_ms=3000)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        t0 = time.monotonic()
        jobs = [await queue.enqueue(job()) for _ in range(3)]
        with anyio.fail_after(5):
            for queued in jobs:
                assert (await queue.wait(queued.id, 5)).status is JobStatus.DONE
        await worker.close()
    assert [len(b) for b in handler.batches] == [3]
    assert handler.called_at[0] - t0 < 2.0  # full: no need to wait the 3 s


async def test_backlog_full_raises_queue_full(open_test_queue, make_worker, recorder, job):
    queue = open_test_queue(max_backlog=3, retry_after_s=7)
    for _ in range(3):
        await queue.enqueue(job())
    with pytest.raises(QueueFull) as caught:
        await queue.enqueue(job())
    assert caught.value.retry_after_s == 7 and caught.value.depth == 3 and caught.value.limit == 3
    assert await queue.depth() == 3
    await make_worker(queue, recorder()).run_check()
    assert await queue.depth() == 0
    await queue.enqueue(job())  # room again


async def test_expired_job_is_skipped(queue, make_worker, recorder, job):
    handler = recorder()
    late = await queue.enqueue(job(timeout_s=-1.0))  # deadline already passed
    fine = await queue.enqueue(job())
    # no worker has looked yet, but nobody will start it: it reads as expired already
    assert (await queue.info(late.id)).status is JobStatus.EXPIRED

    stats = await make_worker(queue, handler).run_check()

    assert handler.seen == {fine.id: 1}
    assert stats.jobs_expired == 1 and stats.jobs_done == 1
    info = await queue.info(late.id)
    assert info.status is JobStatus.EXPIRED and info.error["code"] == "expired"
    assert info.started_at is None
    result = await queue.result(late.id)
    assert result.status is JobStatus.EXPIRED and result.outputs == []
    assert await queue.depth() == 0


async def test_wait_reports_expiry_at_the_deadline_without_a_worker(queue, job):
    queued = await queue.enqueue(job(timeout_s=0.3))
    t0 = time.monotonic()
    with anyio.fail_after(5):
        info = await queue.wait(queued.id, 10)
    assert info.status is JobStatus.EXPIRED
    assert time.monotonic() - t0 < 3


async def test_wait_times_out_with_the_current_status(queue, job):
    queued = await queue.enqueue(job())
    with anyio.fail_after(5):
        info = await queue.wait(queued.id, 0.2)
    assert info.status is JobStatus.QUEUED


async def test_wait_wakes_on_completion(queue, make_worker, recorder, job):
    gate = asyncio.Event()
    handler = recorder(gate=gate)
    worker = make_worker(queue, handler)
    queued = await queue.enqueue(job())
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        waiter = asyncio.create_task(queue.wait(queued.id, 30))
        with anyio.fail_after(5):
            await handler.started.wait()
        assert not waiter.done()
        gate.set()
        with anyio.fail_after(5):  # far below the 30 s timeout: woken by the completion
            info = await waiter
        await worker.close()
    assert info.status is JobStatus.DONE


async def test_cancel_a_queued_job(queue, make_worker, recorder, job):
    handler = recorder()
    doomed = await queue.enqueue(job())
    kept = await queue.enqueue(job())
    assert await queue.cancel(doomed.id) is True
    assert await queue.cancel(doomed.id) is False  # once
    info = await queue.info(doomed.id)
    assert info.status is JobStatus.CANCELLED and info.error["code"] == "cancelled"
    assert await queue.depth() == 1

    await make_worker(queue, handler).run_check()

    assert handler.seen == {kept.id: 1}  # never processed
    assert (await queue.info(doomed.id)).status is JobStatus.CANCELLED
    assert (await queue.result(doomed.id)).status is JobStatus.CANCELLED


async def test_cancel_a_running_job_returns_false(queue, make_worker, recorder, job):
    gate = asyncio.Event()
    handler = recorder(gate=gate)
    worker = make_worker(queue, handler)
    queued = await queue.enqueue(job())
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(5):
            await handler.started.wait()
        assert (await queue.info(queued.id)).status is JobStatus.RUNNING
        assert await queue.cancel(queued.id) is False
        gate.set()
        with anyio.fail_after(5):
            info = await queue.wait(queued.id, 5)
        await worker.close()
    assert info.status is JobStatus.DONE


async def test_cancel_a_job_past_its_deadline_ends_it_expired(queue, job):
    late = await queue.enqueue(job(timeout_s=-1.0))
    assert await queue.cancel(late.id) is False
    assert (await queue.info(late.id)).status is JobStatus.EXPIRED
    assert await queue.depth() == 0


async def test_idempotency_key_returns_the_same_job(queue, make_worker, recorder, job):
    first = await queue.enqueue(job(payload=b"one", idempotency_key="req-1"))
    again = await queue.enqueue(job(payload=b"two", idempotency_key="req-1"))
    other = await queue.enqueue(job(payload=b"three", idempotency_key="req-2"))
    assert again.id == first.id and again.payload == b""
    assert again.deadline == pytest.approx(first.deadline)
    assert other.id != first.id
    assert await queue.depth() == 2

    handler = recorder()
    await make_worker(queue, handler).run_check()
    assert set(handler.seen) == {first.id, other.id}
    # still the same job once it is finished (within the result TTL)
    after = await queue.enqueue(job(payload=b"four", idempotency_key="req-1"))
    assert after.id == first.id
    assert (await queue.result(first.id)).outputs == [b"eno"]
    assert await queue.depth() == 0


async def test_a_job_exception_fails_only_that_job(queue, make_worker, recorder, job):
    handler = recorder()
    bad = await queue.enqueue(job())
    good = await queue.enqueue(job())

    class DecodeError(ValueError):
        code = "unsupported_image"

    handler.fail[bad.id] = DecodeError("not an image")
    stats = await make_worker(queue, handler).run_check()
    assert stats.jobs_done == 1 and stats.jobs_failed == 1 and stats.batches == 1
    info = await queue.info(bad.id)
    assert info.status is JobStatus.FAILED
    assert info.error == {
        "code": "unsupported_image",
        "message": "not an image",
        "type": "DecodeError",
    }
    assert (await queue.info(good.id)).status is JobStatus.DONE


async def test_a_crashed_batch_is_retried(queue, make_worker, recorder, job):
    handler = recorder(crash=1)
    jobs = [await queue.enqueue(job()) for _ in range(3)]
    stats = await make_worker(queue, handler).run_check()
    assert stats.batch_errors == 1 and stats.jobs_retried == 3 and stats.jobs_done == 3
    for queued in jobs:
        info = await queue.info(queued.id)
        assert info.status is JobStatus.DONE and info.attempts == 2
        assert handler.seen[queued.id] == 2


async def test_max_deliveries_dead_letters_with_a_clear_error(
    open_test_queue, make_worker, recorder, job
):
    queue = open_test_queue()
    handler = recorder(crash=100)
    queued = await queue.enqueue(job())
    stats = await make_worker(queue, handler, max_deliveries=2).run_check()
    assert handler.seen[queued.id] == 2
    assert stats.jobs_dead_lettered == 1 and stats.jobs_failed == 1
    info = await queue.info(queued.id)
    assert info.status is JobStatus.FAILED
    assert info.error["code"] == "max_deliveries"
    assert "delivered 2 times" in info.error["message"]
    assert "RuntimeError: engine exploded" in info.error["message"]
    [dead] = await queue.dead_letters()
    assert dead.job_id == queued.id and dead.deliveries == 2 and dead.kind == "colorize"
    assert "engine exploded" in dead.reason
    assert await queue.depth() == 0


async def test_a_wrong_number_of_results_fails_the_batch(queue, make_worker, job):
    async def handler(jobs):
        return [JobResult.ok([b"x"])]  # one result for two jobs

    jobs = [await queue.enqueue(job()) for _ in range(2)]
    stats = await make_worker(queue, handler).run_check()
    assert stats.jobs_failed == 2 and stats.batch_errors == 0
    for queued in jobs:
        info = await queue.info(queued.id)
        assert info.status is JobStatus.FAILED and info.error["code"] == "batch_size_mismatch"
        assert "1 results for 2 jobs" in info.error["message"]


async def test_idle_deliveries_are_reclaimed_after_the_visibility_timeout(
    open_test_queue, make_worker, recorder, job
):
    queue = open_test_queue(visibility_timeout_s=0.3)
    jobs = [await queue.enqueue(job()) for _ in range(3)]
    # a consumer takes two jobs and dies silently (never touches, completes or releases them)
    taken = await queue.read("ghost", 2, None)
    assert len(taken) == 2
    assert await queue.depth() == 3  # unfinished entries stay counted (and stored)
    handler = recorder()
    worker = make_worker(queue, handler, visibility_timeout_s=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            infos = [await queue.wait(q.id, 10) for q in jobs]
        await worker.close()
    assert all(i.status is JobStatus.DONE for i in infos)
    assert all(n == 1 for n in handler.seen.values()) and len(handler.seen) == 3
    ghost_ids = {d.job_id for d in taken}
    assert {i.id: i.attempts for i in infos} == {q.id: 2 if q.id in ghost_ids else 1 for q in jobs}
    assert worker.stats.jobs_reclaimed == 2


async def test_reclaimed_past_max_deliveries_goes_to_dead_letters(
    open_test_queue, make_worker, recorder, job
):
    queue = open_test_queue(visibility_timeout_s=0.2)
    queued = await queue.enqueue(job())
    await queue.read("ghost", 1, None)
    handler = recorder()
    worker = make_worker(queue, handler, visibility_timeout_s=0.2, max_deliveries=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            info = await queue.wait(queued.id, 10)
        await worker.close()
    assert handler.batches == []
    assert info.status is JobStatus.FAILED and info.error["code"] == "max_deliveries"
    assert "crash or hang" in info.error["message"]
    [dead] = await queue.dead_letters()
    assert dead.job_id == queued.id and dead.deliveries == 2
    assert worker.stats.jobs_dead_lettered == 1


async def test_a_slow_batch_keeps_its_lease(
    open_test_queue, make_worker, recorder, job, eventually
):
    queue = open_test_queue(visibility_timeout_s=0.3)

    async def slow(jobs):
        await asyncio.sleep(1.0)  # simulated compute, 3x the visibility timeout
        return [JobResult.ok([b"slow"]) for _ in jobs]

    queued = await queue.enqueue(job())
    other = recorder()
    slow_worker = make_worker(queue, slow, visibility_timeout_s=0.3)
    watcher = make_worker(queue, other, visibility_timeout_s=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_worker.run)

        async def running() -> bool:
            return (await queue.info(queued.id)).status is JobStatus.RUNNING

        await eventually(running, 5)
        tg.start_soon(watcher.run)  # would reclaim it if the slow worker stopped touching it
        with anyio.fail_after(10):
            info = await queue.wait(queued.id, 10)
        await slow_worker.close()
        await watcher.close()
    assert info.status is JobStatus.DONE and info.attempts == 1
    assert other.batches == [] and watcher.stats.jobs_reclaimed == 0


async def test_close_finishes_the_batch_in_flight(queue, make_worker, recorder, job):
    gate = asyncio.Event()
    handler = recorder(gate=gate)
    worker = make_worker(queue, handler)
    jobs = [await queue.enqueue(job()) for _ in range(2)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(5):
            await handler.started.wait()
        closing = asyncio.create_task(worker.close())
        late = await queue.enqueue(job())  # intake is closed: stays queued
        await asyncio.sleep(0)
        assert not closing.done()
        gate.set()
        with anyio.fail_after(5):
            await closing
    for queued in jobs:
        assert (await queue.info(queued.id)).status is JobStatus.DONE
    assert (await queue.info(late.id)).status is JobStatus.QUEUED
    assert late.id not in handler.seen
    assert await queue.depth() == 1  # only the late job: the batch was acknowledged
    assert await queue.workers() == []


async def test_close_gives_the_batch_back_after_the_completion_wait(
    queue, make_worker, recorder, job
):
    stuck = recorder(gate=asyncio.Event())  # never opens
    worker = make_worker(queue, stuck, job_completion_wait_s=0.2)
    queued = await queue.enqueue(job())
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(5):
            await stuck.started.wait()
        with anyio.fail_after(5):
            await worker.close()
    assert worker.stats.jobs_retried == 1
    assert (await queue.info(queued.id)).status is JobStatus.QUEUED
    # another worker takes it over at once (released deliveries need no visibility timeout)
    handler = recorder()
    stats = await make_worker(queue, handler).run_check()
    assert stats.jobs_done == 1 and stats.jobs_reclaimed == 1
    info = await queue.info(queued.id)
    assert info.status is JobStatus.DONE and info.attempts == 2


async def test_workers_are_visible_while_they_run(queue, make_worker, recorder, eventually):
    worker = make_worker(queue, recorder(), name="w-test")
    assert await queue.workers() == []
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)

        async def listed() -> bool:
            return [w.name for w in await queue.workers()] == ["w-test"]

        await eventually(listed, 5)
        [health] = await queue.workers()
        assert health.info["max_batch"] == 4 and health.last_seen > 0
        await worker.close()
    assert await queue.workers() == []


async def test_on_batch_reports(queue, make_worker, recorder, job):
    reports = []
    for _ in range(3):
        await queue.enqueue(job())
    await make_worker(queue, recorder(), on_batch=reports.append, max_batch=2).run_check()
    assert [r.size for r in reports] == [2, 1]
    assert sum(r.done for r in reports) == 3
    assert all(len(r.queue_wait_s) == r.size and r.compute_s >= 0 for r in reports)


async def test_closed_queue_is_unavailable(open_test_queue, job):
    from service.queue import QueueUnavailable

    queue = open_test_queue(max_backlog=5)
    await queue.close()
    with pytest.raises(QueueUnavailable):
        await queue.enqueue(job())
    with pytest.raises(QueueUnavailable):
        await queue.ping()
