"""`memory://`: the in-process queue behind the embedded single-process default.

Same contract as the Redis Streams queue (see `base.py`), kept in plain Python objects on one
event loop: an ordered "stream" of unfinished entries, a pending list with owners and delivery
times (visibility timeout, reclaim, delivery counts), TTLs as timestamps, a backlog bound,
deadlines, cancel, idempotency keys, a bounded dead-letter list, and waits woken by one
`asyncio.Event` per job. Nothing survives the process, which is the point of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import Delivery
from .errors import JobNotFound, QueueFull, QueueUnavailable
from .jobs import (
    CANCELLED_MESSAGE,
    ERROR_CANCELLED,
    ERROR_DEAD_LETTERED,
    ERROR_EXPIRED,
    ERROR_PAYLOAD_MISSING,
    EXPIRED_MESSAGE,
    PROGRESS_CANCEL,
    PROGRESS_OK,
    PROGRESS_SUPERSEDED,
    DeadLetter,
    JobDef,
    JobInfo,
    JobResult,
    JobStatus,
    WorkerHealth,
    dead_letter_message,
    dump_json,
    error_meta,
    info_from_fields,
    job_fields,
    job_from_fields,
    load_json,
)


@dataclass
class _Record:
    """A job: the same str -> str fields as the Redis hash, plus payload and outputs."""

    fields: dict[str, str]
    payload: bytes | None
    expires_at: float
    token: str
    outputs: list[bytes] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.fields["status"])


@dataclass
class _Pending:
    consumer: str
    delivered_at: float  # monotonic seconds of the last delivery or touch
    deliveries: int


class MemoryQueue:
    """In-process `Queue`. Use from one event loop; not thread-safe (neither is asyncio)."""

    def __init__(
        self,
        *,
        max_backlog: int = 64,
        result_ttl_s: float = 600.0,
        default_timeout_s: float = 30.0,
        retry_after_s: int = 1,
        dead_letter_maxlen: int = 10_000,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_backlog = max_backlog
        self.result_ttl_s = result_ttl_s
        self.default_timeout_s = default_timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._monotonic = monotonic
        self._records: dict[str, _Record] = {}
        self._entries: dict[str, str] = {}  # token -> job id: the unfinished "stream" entries
        self._ready: deque[str] = deque()  # tokens never delivered, oldest first
        self._pending: dict[str, _Pending] = {}  # token -> delivery state
        self._idempotency: dict[str, str] = {}  # key -> job id
        self._dead: deque[DeadLetter] = deque(maxlen=dead_letter_maxlen)
        self._workers: dict[str, WorkerHealth] = {}
        self._worker_expiry: dict[str, float] = {}
        self._expiry_heap: list[tuple[float, str]] = []
        self._seq = itertools.count(1)
        self._arrived = asyncio.Event()
        self._closed = False

    # -- producer side ------------------------------------------------------------------------

    async def enqueue(self, job: JobDef) -> JobDef:
        self._check_open()
        now = self._clock()
        self._sweep(now)
        key = job.idempotency_key
        if key is not None:
            existing = self._records.get(self._idempotency.get(key, ""))
            if existing is not None:
                return job_from_fields(
                    existing.fields, b"", attempts=int(existing.fields["attempts"])
                )
        if job.id in self._records:
            raise ValueError(f"job id {job.id!r} already exists")
        depth = len(self._entries)
        if depth >= self.max_backlog:
            raise QueueFull(depth, self.max_backlog, self.retry_after_s)
        deadline = job.deadline if job.deadline is not None else now + self.default_timeout_s
        # a JSON round trip: the same validation and the same copy semantics as Redis
        params = load_json(dump_json(job.params), {})
        stored = dataclasses.replace(job, params=params, deadline=deadline, attempts=0)
        token = str(next(self._seq))
        record = _Record(
            fields=job_fields(stored),
            payload=bytes(job.payload),
            expires_at=max(deadline, now) + self.result_ttl_s,
            token=token,
        )
        record.fields["msg"] = token
        self._records[job.id] = record
        self._push_expiry(record.expires_at, job.id)
        if key is not None:
            self._idempotency[key] = job.id
        self._entries[token] = job.id
        self._ready.append(token)
        self._arrived.set()
        return stored

    async def info(self, job_id: str) -> JobInfo | None:
        self._check_open()
        now = self._clock()
        self._sweep(now)
        record = self._records.get(job_id)
        return None if record is None else info_from_fields(record.fields, now=now)

    async def result(self, job_id: str) -> JobResult | None:
        self._check_open()
        self._sweep(self._clock())
        record = self._records.get(job_id)
        if record is None or not record.status.terminal:
            return None
        return JobResult(
            record.status, list(record.outputs), load_json(record.fields.get("meta"), {})
        )

    async def wait(self, job_id: str, timeout_s: float) -> JobInfo:
        self._check_open()
        record = self._records.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        end = self._monotonic() + max(0.0, timeout_s)
        while True:
            self._check_open()
            now = self._clock()
            info = info_from_fields(record.fields, now=now)
            remaining = end - self._monotonic()
            if info.terminal or remaining <= 0:
                return info
            if info.status is JobStatus.QUEUED:  # wake at the deadline to report the expiry
                remaining = min(remaining, max(0.0, info.deadline - now) + 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(record.done.wait(), remaining)

    async def cancel(self, job_id: str) -> bool:
        self._check_open()
        now = self._clock()
        record = self._records.get(job_id)
        if record is None or record.status is not JobStatus.QUEUED:
            return False
        if float(record.fields["deadline"]) < now:
            self._finish(record, JobStatus.EXPIRED, error_meta(ERROR_EXPIRED, EXPIRED_MESSAGE))
            return False
        self._finish(record, JobStatus.CANCELLED, error_meta(ERROR_CANCELLED, CANCELLED_MESSAGE))
        return True

    async def request_cancel(self, job_id: str) -> bool:
        self._check_open()
        record = self._records.get(job_id)
        if record is None or record.status is not JobStatus.RUNNING:
            return False
        record.fields["cancel"] = "1"
        return True

    async def depth(self) -> int:
        self._check_open()
        return len(self._entries)

    async def ping(self) -> None:
        self._check_open()

    async def workers(self) -> list[WorkerHealth]:
        self._check_open()
        now = self._clock()
        for name in [n for n, t in self._worker_expiry.items() if t <= now]:
            del self._worker_expiry[name], self._workers[name]
        return list(self._workers.values())

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        self._check_open()
        return list(reversed(self._dead))[:count]

    async def close(self) -> None:
        self._closed = True
        self._arrived.set()
        for record in self._records.values():
            record.done.set()

    # -- consumer side ------------------------------------------------------------------------

    async def register(self, consumer: str) -> None:
        self._check_open()

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Delivery]:
        self._check_open()
        self._drop_stale_ready()
        if not self._ready and block_ms:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), block_ms / 1000.0)
            except TimeoutError:
                return []
            self._check_open()
        out: list[Delivery] = []
        while self._ready and len(out) < count:
            token = self._ready.popleft()
            job_id = self._entries.get(token)
            if job_id is None:  # finished (cancelled) before delivery
                continue
            self._pending[token] = _Pending(consumer, self._monotonic(), 1)
            out.append(Delivery(job_id, token, 1))
        return out

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        self._check_open()
        now = self._monotonic()
        out: list[Delivery] = []
        for token, pending in list(self._pending.items()):
            if len(out) >= count:
                break
            if (now - pending.delivered_at) * 1000.0 < min_idle_ms:
                continue
            job_id = self._entries.get(token)
            if job_id is None:
                del self._pending[token]
                continue
            pending.consumer, pending.delivered_at = consumer, now
            pending.deliveries += 1
            out.append(Delivery(job_id, token, pending.deliveries))
        return out

    async def begin(
        self, consumer: str, deliveries: Sequence[Delivery]
    ) -> list[JobDef | JobStatus | None]:
        self._check_open()
        now = self._clock()
        out: list[JobDef | JobStatus | None] = []
        for delivery in deliveries:
            record = self._records.get(delivery.job_id)
            if record is None:
                self._ack(delivery.token)
                out.append(None)
            elif record.status.terminal:
                self._ack(delivery.token)
                out.append(record.status)
            elif float(record.fields["deadline"]) < now:
                self._finish(record, JobStatus.EXPIRED, error_meta(ERROR_EXPIRED, EXPIRED_MESSAGE))
                self._ack(delivery.token)
                out.append(JobStatus.EXPIRED)
            elif record.payload is None:
                meta = error_meta(ERROR_PAYLOAD_MISSING, "the job's payload is gone")
                self._finish(record, JobStatus.FAILED, meta)
                self._ack(delivery.token)
                out.append(JobStatus.FAILED)
            else:
                record.fields.update(
                    status=JobStatus.RUNNING.value,
                    started_at=repr(now),
                    worker=consumer,
                    attempts=str(delivery.deliveries),
                )
                out.append(
                    job_from_fields(record.fields, record.payload, attempts=delivery.deliveries)
                )
        return out

    async def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        self._check_open()
        now = self._monotonic()
        for delivery in deliveries:
            pending = self._pending.get(delivery.token)
            if pending is not None and pending.consumer == consumer:
                pending.delivered_at = now

    async def complete(
        self, consumer: str, items: Sequence[tuple[Delivery, JobResult]]
    ) -> list[bool]:
        self._check_open()
        out: list[bool] = []
        for delivery, result in items:
            meta = load_json(dump_json(result.meta), {})  # the same JSON contract as Redis
            record = self._records.get(delivery.job_id)
            self._ack(delivery.token)
            if record is None or record.status.terminal:
                out.append(False)
                continue
            self._finish(record, result.status, meta, [bytes(o) for o in result.outputs])
            out.append(True)
        return out

    async def progress(self, job_id: str, attempt: int, done: int, total: int) -> str:
        self._check_open()
        record = self._records.get(job_id)
        if (
            record is None
            or record.status is not JobStatus.RUNNING
            or record.fields.get("attempts") != str(attempt)
        ):
            return PROGRESS_SUPERSEDED
        record.fields["progress"] = f"{int(done)}/{int(total)}"
        return PROGRESS_CANCEL if record.fields.get("cancel") else PROGRESS_OK

    async def release(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        self._check_open()
        for delivery in deliveries:
            pending = self._pending.get(delivery.token)
            if pending is None or pending.consumer != consumer:
                continue
            pending.delivered_at = float("-inf")
            record = self._records.get(delivery.job_id)
            if (
                record is not None
                and record.fields.get("worker") == consumer
                and record.status is JobStatus.RUNNING
            ):
                record.fields["status"] = JobStatus.QUEUED.value

    async def dead_letter(self, consumer: str, deliveries: Sequence[Delivery], reason: str) -> None:
        self._check_open()
        now = self._clock()
        for delivery in deliveries:
            record = self._records.get(delivery.job_id)
            kind = record.fields["kind"] if record is not None else ""
            self._dead.append(
                DeadLetter(
                    entry_id=delivery.token,
                    job_id=delivery.job_id,
                    kind=kind,
                    deliveries=delivery.deliveries,
                    reason=reason,
                    failed_at=now,
                )
            )
            if record is not None and not record.status.terminal:
                message = dead_letter_message(delivery.deliveries, reason)
                self._finish(record, JobStatus.FAILED, error_meta(ERROR_DEAD_LETTERED, message))
            self._ack(delivery.token)

    async def heartbeat(self, name: str, info: dict[str, Any], ttl_s: float) -> None:
        self._check_open()
        now = self._clock()
        self._workers[name] = WorkerHealth(name=name, last_seen=now, info=dict(info))
        self._worker_expiry[name] = now + ttl_s

    async def unregister(self, name: str) -> None:
        self._workers.pop(name, None)
        self._worker_expiry.pop(name, None)

    # -- internals ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise QueueUnavailable("the in-process queue is closed")

    def _ack(self, token: str) -> None:
        """XACK + XDEL: the entry leaves the pending list and the stream."""
        self._pending.pop(token, None)
        self._entries.pop(token, None)

    def _drop_stale_ready(self) -> None:
        while self._ready and self._ready[0] not in self._entries:
            self._ready.popleft()

    def _finish(
        self,
        record: _Record,
        status: JobStatus,
        meta: dict[str, Any],
        outputs: list[bytes] | None = None,
    ) -> None:
        now = self._clock()
        outputs = outputs or []
        record.fields.update(
            status=status.value,
            finished_at=repr(now),
            meta=dump_json(meta),
            n_outputs=str(len(outputs)),
        )
        record.outputs = outputs
        record.payload = None
        record.expires_at = now + self.result_ttl_s
        self._push_expiry(record.expires_at, record.fields["id"])
        self._ack(record.token)
        record.done.set()

    def _push_expiry(self, when: float, job_id: str) -> None:
        heapq.heappush(self._expiry_heap, (when, job_id))

    def _sweep(self, now: float) -> None:
        """Drop records whose TTL ran out (lazy, amortised: a heap of expiry times)."""
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            _, job_id = heapq.heappop(heap)
            record = self._records.get(job_id)
            if record is None or record.expires_at > now:
                continue  # gone already, or its TTL was extended (a newer heap entry exists)
            del self._records[job_id]
            self._ack(record.token)
            key = record.fields.get("idem")
            if key and self._idempotency.get(key) == job_id:
                del self._idempotency[key]
