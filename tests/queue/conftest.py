"""Fixtures of the queue suite: one `queue` fixture parametrized over memory:// and redis://,
a worker factory with test-sized knobs (arq's `burst=True, poll_delay=0` idea: `run_check()`),
and a recording batch handler. Redis is a real redis-server (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from service.queue import JobDef, JobResult, Worker, open_queue
from service.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def queue_settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    """Settings of the queue under test; tests tweak them with `model_copy(update=...)`."""
    url = "memory://" if backend == "memory" else request.getfixturevalue("redis_url")
    return Settings(
        queue_url=url,
        max_backlog=16,
        result_ttl_s=60,
        job_timeout_s=30,
        visibility_timeout_s=1.0,
        max_deliveries=3,
        max_wait_ms=5,
        worker_health_ttl_s=0.6,
        job_completion_wait_s=5,
    )


@pytest.fixture
async def open_test_queue(queue_settings: Settings):
    """Factory: open a queue on the test's backend (settings overridable); closed afterwards.
    For memory:// every call returns the same in-process queue (there is only one)."""
    opened = []
    memory = None

    def open_(**overrides: object):
        nonlocal memory
        settings = queue_settings.model_copy(update=overrides)
        if settings.queue_backend == "memory":
            if memory is None or overrides:
                memory = open_queue(settings.queue_url, settings)
                opened.append(memory)
            return memory
        queue = open_queue(settings.queue_url, settings)
        opened.append(queue)
        return queue

    yield open_
    for queue in opened:
        await queue.close()


@pytest.fixture
async def queue(open_test_queue):
    return open_test_queue()


@pytest.fixture
async def make_worker(queue_settings: Settings, open_test_queue):
    """Factory: a Worker with fast test knobs; closed at the end of the test (before the
    queues, which is why it depends on `open_test_queue`)."""
    workers: list[Worker] = []

    def make(queue, handler, **overrides: object) -> Worker:
        kwargs: dict[str, object] = {
            "max_batch": 4,
            "max_wait_ms": 5,
            "visibility_timeout_s": queue_settings.visibility_timeout_s,
            "max_deliveries": queue_settings.max_deliveries,
            "health_ttl_s": 5.0,
            "job_completion_wait_s": 5.0,
            "poll_block_ms": 50,
            "max_backoff_s": 0.2,
        }
        kwargs.update(overrides)
        worker = Worker(queue=queue, handler=handler, **kwargs)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await asyncio.wait_for(worker.close(), 10)


class Recorder:
    """A batch handler that records its batches and answers `payload[::-1]` per job.

    `gate`: when set, every call waits for it (a batch "in flight"); `started` is set when a
    call begins; `fail`: job id -> exception to return for that job; `crash`: how many calls
    raise before the handler starts to succeed.
    """

    def __init__(self, *, gate: asyncio.Event | None = None, crash: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.started = asyncio.Event()
        self.gate = gate
        self.crash = crash
        self.fail: dict[str, Exception] = {}
        self.called_at: list[float] = []

    async def __call__(self, jobs: list[JobDef]) -> list[JobResult | Exception]:
        self.batches.append([job.id for job in jobs])
        self.called_at.append(time.monotonic())
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.crash > 0:
            self.crash -= 1
            raise RuntimeError("engine exploded")
        return [
            self.fail.get(job.id) or JobResult.ok([job.payload[::-1]], content_type="image/png")
            for job in jobs
        ]

    @property
    def seen(self) -> Counter[str]:
        return Counter(job_id for batch in self.batches for job_id in batch)


@pytest.fixture
def recorder() -> type[Recorder]:
    return Recorder


async def _eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0
) -> None:
    """Bounded wait for a state we cannot await directly (checks every 10 ms)."""
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


@pytest.fixture
def eventually():
    return _eventually


def new_job(payload: bytes = b"img", **kwargs: object) -> JobDef:
    return JobDef.create("colorize", payload, **kwargs)


@pytest.fixture
def job():
    """Factory: `job(payload=b"..", timeout_s=.., idempotency_key=..)` -> a new JobDef."""
    return new_job
