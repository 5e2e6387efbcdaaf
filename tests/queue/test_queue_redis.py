"""Redis-only behaviour: key layout and TTLs, trimming, outages, and a worker process killed
with SIGKILL mid-batch. Every server here is a redis-server process this session started."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import anyio
import pytest

from service.queue import JobDef, JobStatus, QueueUnavailable, Worker, open_queue
from service.queue import constants as C
from service.settings import Settings

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


def _settings(url: str, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "queue_url": url,
        "result_ttl_s": 60,
        "job_timeout_s": 30,
        "visibility_timeout_s": 1.0,
        "worker_health_ttl_s": 0.6,
        "max_backlog": 32,
        "redis_connect_timeout_s": 1.0,
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
async def rqueue(redis_url):
    queue = open_queue(redis_url, _settings(redis_url))
    yield queue
    await queue.close()


async def _ok(jobs: list[JobDef]):
    from service.queue import JobResult

    return [JobResult.ok([job.payload[::-1]]) for job in jobs]


async def test_key_layout_and_ttls(rqueue):
    client = rqueue.client
    queued = await rqueue.enqueue(
        JobDef.create("colorize", b"x" * 1000, idempotency_key="k1", timeout_s=20)
    )
    # the stream entry is small: the payload has its own key
    [(_, fields)] = await client.xrange(C.STREAM_KEY)
    assert fields == {b"job": queued.id.encode()}
    assert await client.get(C.payload_key(queued.id)) == b"x" * 1000
    for key in (C.job_key(queued.id), C.payload_key(queued.id), C.idempotency_key("k1")):
        ttl = await client.pttl(key)
        assert 60_000 + 19_000 < ttl <= 60_000 + 20_000, (key, ttl)

    worker = Worker(queue=rqueue, handler=_ok, name="w1", health_ttl_s=5)
    await worker.run_check()

    assert await client.xlen(C.STREAM_KEY) == 0  # acknowledged and deleted
    assert await client.exists(C.payload_key(queued.id)) == 0  # payload dropped when done
    for key in (C.job_key(queued.id), C.result_key(queued.id), C.idempotency_key("k1")):
        assert 0 < await client.pttl(key) <= 60_000, key
    assert await client.lrange(C.result_key(queued.id), 0, -1) == [b"x" * 1000]
    # nothing but the stream lives without a TTL (worker keys are gone after run_check)
    async for key in client.scan_iter(match="disco:*"):
        if key != C.STREAM_KEY.encode():
            assert await client.pttl(key) > 0, key


async def test_health_key_has_a_ttl(rqueue):
    await rqueue.heartbeat("w-ttl", {"pid": 1}, 5.0)
    assert 0 < await rqueue.client.pttl(C.worker_key("w-ttl")) <= 5000
    assert [w.name for w in await rqueue.workers()] == ["w-ttl"]
    await rqueue.client.delete(C.worker_key("w-ttl"))  # as if its TTL ran out
    assert await rqueue.workers() == []


async def test_trimming_never_drops_unacknowledged_entries(rqueue):
    client = rqueue.client
    jobs = [await rqueue.enqueue(JobDef.create("colorize", b"p")) for _ in range(6)]
    held = await rqueue.read("holder", 2, None)  # delivered, not acknowledged
    worker = Worker(queue=rqueue, handler=_ok, name="w2", visibility_timeout_s=30)
    stats = await worker.run_check()
    assert stats.jobs_done == 4

    # the stream keeps exactly the unacknowledged entries; the finished ones are deleted
    pending = await client.xpending_range(C.STREAM_KEY, C.GROUP_NAME, "-", "+", 10)
    assert sorted(p["message_id"].decode() for p in pending) == sorted(d.token for d in held)
    entries = await client.xrange(C.STREAM_KEY)
    assert sorted(e[0].decode() for e in entries) == sorted(d.token for d in held)
    assert await rqueue.depth() == 2
    # and the dead-letter stream's MAXLEN never touches the job stream
    assert await client.exists(C.DEAD_LETTER_STREAM_KEY) == 0
    held_ids = {d.job_id for d in held}
    for queued in jobs:
        status = (await rqueue.info(queued.id)).status
        assert status is (JobStatus.QUEUED if queued.id in held_ids else JobStatus.DONE)


async def test_dead_letter_stream_is_capped(redis_url):
    queue = open_queue(redis_url, _settings(redis_url, stream_maxlen=1))
    try:
        for i in range(300):
            queued = await queue.enqueue(JobDef.create("colorize", b"p"))
            [delivery] = await queue.read("c", 1, None)
            await queue.dead_letter("c", [delivery], f"reason {i}")
            assert (await queue.info(queued.id)).status is JobStatus.FAILED
        # approximate MAXLEN: far below 300 (whole macro nodes are dropped)
        assert await queue.client.xlen(C.DEAD_LETTER_STREAM_KEY) < 300
        assert (await queue.dead_letters(1))[0].reason == "reason 299"
    finally:
        await queue.close()


async def test_short_blocking_reads_end_on_time_at_a_coarse_redis_tick(redis_server_factory):
    """Redis ends an expired BLOCK only on its timer tick (1 s at --hz 1): the batch-fill wait's
    short reads must not depend on it, yet still pick up an entry that arrives during them."""
    server = redis_server_factory("--hz", "1")
    queue = open_queue(server.url, _settings(server.url))
    try:
        await queue.register("w")
        t0 = time.monotonic()
        for _ in range(5):
            assert await queue.read("w", 4, 10) == []
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, f"5 x 10 ms reads took {elapsed:.2f} s (the server tick is 1 s)"

        async def enqueue_later():
            await asyncio.sleep(0.02)
            return await queue.enqueue(JobDef.create("colorize", b"p"))

        later = asyncio.create_task(enqueue_later())
        got = await queue.read("w", 4, 90)
        assert [d.job_id for d in got] == [(await later).id]
    finally:
        await queue.close()


async def test_redis_outage_raises_unavailable_then_recovers(redis_server_factory):
    server = redis_server_factory()
    queue = open_queue(server.url, _settings(server.url))
    try:
        first = await queue.enqueue(JobDef.create("colorize", b"p"))
        await queue.ping()
        server.stop()
        with anyio.fail_after(10):  # fails fast, no hang
            with pytest.raises(QueueUnavailable):
                await queue.enqueue(JobDef.create("colorize", b"p"))
            with pytest.raises(QueueUnavailable):
                await queue.ping()
            with pytest.raises(QueueUnavailable):
                await queue.info(first.id)
            with pytest.raises(QueueUnavailable):
                await queue.wait(first.id, 1)
            with pytest.raises(QueueUnavailable):
                await queue.depth()
        server.start()  # same port, empty (no persistence)
        with anyio.fail_after(10):
            await queue.ping()  # the same queue object: redis-py reconnects by itself
            again = await queue.enqueue(JobDef.create("colorize", b"p"))
        assert (await queue.info(again.id)).status is JobStatus.QUEUED
    finally:
        await queue.close()


async def test_worker_loop_survives_a_redis_restart(redis_server_factory, eventually, caplog):
    server = redis_server_factory()
    settings = _settings(server.url)
    api = open_queue(server.url, settings)  # the API's queue object
    wq = open_queue(server.url, settings)  # the worker's own (as in another process)
    worker = Worker(queue=wq, handler=_ok, name="survivor", poll_block_ms=50, max_backoff_s=0.2)
    caplog.set_level(logging.WARNING, logger="disco.worker")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            first = await api.enqueue(JobDef.create("colorize", b"abc"))
            with anyio.fail_after(10):
                assert (await api.wait(first.id, 10)).status is JobStatus.DONE

            server.stop()
            await eventually(lambda: worker.stats.queue_errors > 0, 10)
            server.start()

            with anyio.fail_after(15):
                second = await api.enqueue(JobDef.create("colorize", b"xyz"))
                info = await api.wait(second.id, 15)
            assert info.status is JobStatus.DONE
            assert (await api.result(second.id)).outputs == [b"zyx"]
            await worker.close()
    finally:
        await api.close()
        await wq.close()
    assert any("queue unavailable" in r.getMessage() for r in caplog.records)


async def test_a_worker_killed_mid_batch_loses_nothing(redis_url):
    settings = _settings(redis_url, visibility_timeout_s=1.0)
    queue = open_queue(redis_url, settings)
    jobs = [await queue.enqueue(JobDef.create("colorize", f"p{i}".encode())) for i in range(6)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("crash_worker.py")),
        redis_url,
        "doomed",
        "hang",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        with anyio.fail_after(20):
            line = (await proc.stdout.readline()).decode().strip()
        assert line.startswith("BATCH "), line
        held = line.removeprefix("BATCH ").split(",")
        assert len(held) == 4
        for job_id in held:
            assert (await queue.info(job_id)).status is JobStatus.RUNNING
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    seen: list[str] = []

    async def handler(batch: list[JobDef]):
        seen.extend(job.id for job in batch)
        return await _ok(batch)

    rescuer = Worker(queue=queue, handler=handler, name="rescuer", visibility_timeout_s=1.0)
    t0 = time.monotonic()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(rescuer.run)
            with anyio.fail_after(15):
                infos = [await queue.wait(job.id, 15) for job in jobs]
            await rescuer.close()
        # every accepted job completed exactly once, as seen by its client
        assert sorted(seen) == sorted(job.id for job in jobs)
        for job, info in zip(jobs, infos, strict=True):
            assert info.status is JobStatus.DONE
            assert info.attempts == (2 if job.id in held else 1)
            assert (await queue.result(job.id)).outputs == [job.payload[::-1]]
        assert rescuer.stats.jobs_reclaimed == 4
        assert time.monotonic() - t0 < 10
        assert await queue.depth() == 0
    finally:
        await queue.close()


async def test_a_second_completion_is_dropped(rqueue):
    """Two workers finishing the same job (one was presumed dead): the first result wins."""
    from service.queue import JobResult

    queued = await rqueue.enqueue(JobDef.create("colorize", b"p"))
    [d1] = await rqueue.read("slow", 1, None)
    await rqueue.begin("slow", [d1])
    [d2] = await rqueue.reclaim("fast", 0, 1)
    assert d2.deliveries == 2
    assert await rqueue.complete("fast", [(d2, JobResult.ok([b"fast"]))]) == [True]
    assert await rqueue.complete("slow", [(d1, JobResult.ok([b"slow"]))]) == [False]
    assert (await rqueue.result(queued.id)).outputs == [b"fast"]
    assert await rqueue.depth() == 0
    # no staging keys left behind
    assert [k async for k in rqueue.client.scan_iter(match="disco:result:*:staging:*")] == []


async def test_reclaim_finds_idle_entries_behind_many_busy_ones(rqueue):
    for _ in range(25):
        await rqueue.enqueue(JobDef.create("colorize", b"p"))
    busy = await rqueue.read("busy", 24, None)  # in flight, recently delivered
    [idle] = await rqueue.read("ghost", 1, None)  # the newest entry
    await rqueue.release("ghost", [idle])  # idle at once, but behind 24 busy entries
    found = []
    for _ in range(5):  # XAUTOCLAIM scans 10 x COUNT entries per call: the cursor carries on
        found += await rqueue.reclaim("rescuer", 60_000, 1)
        if found:
            break
    assert [d.token for d in found] == [idle.token] and found[0].deliveries == 2
    assert len(busy) == 24


async def test_sigterm_drains_the_batch_in_flight(redis_url):
    queue = open_queue(redis_url, _settings(redis_url))
    jobs = [await queue.enqueue(JobDef.create("colorize", f"p{i}".encode())) for i in range(2)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("crash_worker.py")),
        redis_url,
        "drainer",
        "slow",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        with anyio.fail_after(20):
            line = (await proc.stdout.readline()).decode().strip()
            assert sorted(line.removeprefix("BATCH ").split(",")) == sorted(j.id for j in jobs)
            proc.send_signal(signal.SIGTERM)  # mid-batch
            late = await queue.enqueue(JobDef.create("colorize", b"late"))
            proc.stdin.write(b"go\n")  # let the batch finish
            await proc.stdin.drain()
            rest = (await proc.stdout.read()).decode()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    try:
        assert "STOPPED" in rest and "BATCH" not in rest  # no new batch after SIGTERM
        for job in jobs:
            info = await queue.info(job.id)
            assert info.status is JobStatus.DONE and info.attempts == 1
        assert (await queue.info(late.id)).status is JobStatus.QUEUED
        # the drained batch was acknowledged: only the late job is left, and nobody holds it
        assert await queue.depth() == 1
        assert await queue.client.xpending(C.STREAM_KEY, C.GROUP_NAME) == {
            "pending": 0, "min": None, "max": None, "consumers": []
        }  # fmt: skip
        assert await queue.workers() == []
    finally:
        await queue.close()
