"""The queue contract, as two protocols: what the API uses and what a worker uses.

`JobQueue` is the producer side (enqueue, look-up, wait, cancel) that the API depends on;
`JobSource` is the consumer side that `Worker` drives (read, reclaim, begin, complete, ...).
`MemoryQueue` (in-process) and `RedisStreamsQueue` (Redis Streams) implement both with the same
semantics, and one parametrized test suite checks them both.

Delivery semantics: at-least-once delivery, exactly-once completion. A job is delivered to one
worker at a time; a delivery whose worker stops touching it for the visibility timeout is
reclaimed by another worker; the first completion of a job wins and later ones are dropped, so a
client sees exactly one result. A job delivered `max_deliveries` times without finishing is
dead-lettered and fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .jobs import DeadLetter, JobDef, JobInfo, JobResult, JobStatus, WorkerHealth

# XCLAIM IDLE for a released delivery: far above any visibility timeout, so the next reclaim
# by any worker takes it at once.
RELEASED_IDLE_MS = 1_000_000_000


@dataclass(frozen=True)
class Delivery:
    """One delivery of one job to one consumer (a pending stream entry)."""

    job_id: str
    token: str  # the stream entry id (Redis) or sequence number (memory)
    deliveries: int  # how many times the entry was delivered, this delivery included


@runtime_checkable
class JobQueue(Protocol):
    """The producer side, used by the API. Every method raises `QueueUnavailable` when the
    backend cannot be reached."""

    async def enqueue(self, job: JobDef) -> JobDef:
        """Accept a job; returns it as stored (deadline filled in from the default timeout).

        With an idempotency key already used by a job that still exists (result TTL), nothing
        is queued and that earlier job is returned (its payload is not loaded: `b""`); compare
        ids to tell. Raises `QueueFull` past the backlog bound, `ValueError` on a reused job id.
        """
        ...

    async def info(self, job_id: str) -> JobInfo | None:
        """Status, times and error of a job; None if unknown or expired."""
        ...

    async def result(self, job_id: str) -> JobResult | None:
        """Outputs and meta of a finished job; None if unknown, expired or not finished yet."""
        ...

    async def wait(self, job_id: str, timeout_s: float) -> JobInfo:
        """Wait until the job is finished (woken by the completion, no polling) or `timeout_s`
        passed, or the deadline of a still-queued job passed; returns its info either way.
        Raises `JobNotFound` for an unknown job."""
        ...

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not started: True if it was queued and is now cancelled;
        False if it is unknown, running or already finished."""
        ...

    async def request_cancel(self, job_id: str) -> bool:
        """Ask a RUNNING job to stop (video jobs check between frames and end cancelled): True
        if the request was recorded; False if the job is unknown or not running."""
        ...

    async def depth(self) -> int:
        """Unfinished jobs (queued + running): what the backlog bound limits."""
        ...

    async def ping(self) -> None:
        """Raise `QueueUnavailable` unless the backend answers."""
        ...

    async def workers(self) -> list[WorkerHealth]:
        """Workers whose health key is alive (readiness: is anybody consuming?)."""
        ...

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The newest dead-lettered jobs, newest first."""
        ...

    async def close(self) -> None:
        """Release connections and wake waiters; later calls raise `QueueUnavailable`."""
        ...


@runtime_checkable
class JobSource(Protocol):
    """The consumer side, driven by `Worker`. `consumer` is the worker's unique name."""

    async def register(self, consumer: str) -> None:
        """Make sure the stream and the consumer group exist."""
        ...

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Delivery]:
        """Up to `count` never-delivered entries; wait up to `block_ms` (>= 1) for the first
        one, or not at all with None."""
        ...

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over up to `count` entries other consumers left idle for `min_idle_ms`
        (crashed or released); their delivery count goes up by one."""
        ...

    # optional: `reclaim_dead(consumer, min_idle_ms, count)` takes over the deliveries of
    # consumers whose health key expired (RedisStreamsQueue; an in-process queue has none)

    async def begin(
        self, consumer: str, deliveries: Sequence[Delivery]
    ) -> list[JobDef | JobStatus | None]:
        """Start delivered jobs, atomically per job, in order: a JobDef (payload loaded, status
        now running) for each job that may run; otherwise the entry is acknowledged and the
        status that stops it is returned (EXPIRED: the deadline passed and the job ends expired
        now; CANCELLED or another final status: it had ended already; FAILED: its payload was
        gone) or None when the job record itself is gone."""
        ...

    async def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """Reset the idle time of deliveries this consumer still owns (lease extension)."""
        ...

    async def complete(
        self, consumer: str, items: Sequence[tuple[Delivery, JobResult]]
    ) -> list[bool]:
        """Store each result with the TTL, then acknowledge and delete the entry, then publish
        the completion. False where the job had already ended (another delivery won)."""
        ...

    async def progress(self, job_id: str, attempt: int, done: int, total: int) -> str:
        """Record a running job's progress (frames done / total) for `GET /jobs/{id}`, if the
        job is running at this attempt. Answers "ok" (go on), "cancel" (a cancel was
        requested: stop and complete it cancelled) or "superseded" (the job ended, or another
        delivery runs it now: stop and store nothing)."""
        ...

    async def release(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """Give deliveries back unfinished (the batch failed or the worker is stopping): the
        jobs read as queued again and the next reclaim by any worker redelivers them."""
        ...

    async def dead_letter(self, consumer: str, deliveries: Sequence[Delivery], reason: str) -> None:
        """Record the entries on the dead-letter stream, end their jobs failed, acknowledge."""
        ...

    async def heartbeat(self, name: str, info: dict[str, Any], ttl_s: float) -> None:
        """Write the worker's health key with a TTL."""
        ...

    async def unregister(self, name: str) -> None:
        """Delete the worker's health key (clean shutdown)."""
        ...


class Queue(JobQueue, JobSource, Protocol):
    """What both implementations are: the API's producer side and the workers' consumer side."""
