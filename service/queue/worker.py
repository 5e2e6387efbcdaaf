"""The consumer side: `Worker` pulls batches off a queue and feeds them to a batch handler.

    async def handler(jobs: list[JobDef]) -> list[JobResult | Exception]:
        ...  # one result (or exception) per job, in order; CPU/GPU work in a thread

    worker = Worker.from_settings(queue=queue, handler=handler, settings=settings)
    await worker.run(install_signal_handlers=True)   # until SIGTERM/SIGINT or close()

One loop, one batch at a time (the engine is the bottleneck):

1. reclaim entries other workers left idle past the visibility timeout (periodically; at once
   after a failed batch); past `max_deliveries` they go to the dead-letter stream and fail;
2. read new entries, up to the free batch slots; after the first one, wait at most `max_wait_ms`
   for the batch to fill (Ray's `_BatchQueue`: the wait is recomputed on every read), but only
   while there is company: when this read or the previous batch brought more than one job. A
   lone request at low load runs at once (the wait would be pure latency: 10 ms of a 15 ms
   overhead budget), while closed-loop clients that return within the wait still fill the
   batch (BENCHMARKS.md: 8 users, 2-thread CPU engine, batch 4 -> 8, +12 % images/s);
3. `begin`: jobs past their deadline end expired, cancelled ones are dropped, the rest run;
4. call the handler, extending the leases of the batch while it runs (so a slow batch is not
   reclaimed by another worker), and check it returned one result per job;
5. store every result with its TTL, then acknowledge, then publish the completion. A per-job
   exception fails that job alone; a handler that raises fails the batch: its jobs are given
   back for a retry, or dead-lettered once they used their `max_deliveries`.

A health key (`disco:worker:<name>`, TTL `health_ttl_s`) is refreshed every third of its TTL.
The loop survives the queue going away (Redis down): it logs, backs off and carries on, and the
Redis client reconnects by itself. `close()` (SIGTERM) stops intake, lets the in-flight batch
finish and be acknowledged within `job_completion_wait_s` (keep it below Kubernetes'
terminationGracePeriodSeconds), and otherwise cancels it and gives its jobs back.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import os
import secrets
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import Delivery, JobSource
from .errors import BatchSizeMismatch, QueueUnavailable
from .jobs import (
    ERROR_BATCH_SIZE,
    ERROR_HANDLER,
    JobDef,
    JobResult,
    JobStatus,
    dump_json,
)

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("disco.worker")

BatchHandler = Callable[[list[JobDef]], Awaitable[Sequence[JobResult | BaseException]]]

RECLAIMED_REASON = "its worker stopped touching it for the visibility timeout (crash or hang)"


def default_worker_name() -> str:
    """`<host>-<pid>-<random>`: unique per process, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class BatchReport:
    """What `on_batch` gets after every handled batch (for metrics: sizes, waits, compute)."""

    size: int
    queue_wait_s: list[float]  # per job: from creation to start of this attempt
    compute_s: float  # the handler call
    done: int
    failed: int
    retried: int  # given back after the handler raised
    dead_lettered: int


@dataclass
class WorkerStats:
    """Counters since the worker was created; plain ints, read them from a metrics collector."""

    batches: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0  # failures of single jobs (exceptions, failed results, dead letters)
    jobs_expired: int = 0  # dropped by this worker because their deadline had passed
    jobs_cancelled: int = 0  # delivered after they were cancelled
    jobs_skipped: int = 0  # delivered after they had ended anyway (or their record expired)
    jobs_reclaimed: int = 0  # taken over from a worker that went quiet, or retried
    jobs_retried: int = 0  # given back after a failed batch or a cut-short shutdown
    jobs_dead_lettered: int = 0
    batch_errors: int = 0  # handler calls that raised
    queue_errors: int = 0  # loop iterations lost to an unreachable queue (or a bug)
    batch_sizes: Counter[int] = field(default_factory=Counter)

    def snapshot(self) -> WorkerStats:
        return copy.deepcopy(self)


class Worker:
    """Pulls jobs off `queue` in batches and runs `handler` on them.

    Keyword-only knobs:

    * `queue`: the consumer side of a queue (`MemoryQueue` or `RedisStreamsQueue`).
    * `handler`: async `list[JobDef] -> list[JobResult | Exception]`, one per job, in order.
      It owns the compute: run blocking engine calls in a thread (`asyncio.to_thread`).
    * `max_batch` (8): most jobs per handler call.
    * `max_wait_ms` (10): after the first job of a batch arrives, how long to wait for more
      while there is company (see step 2 above).
    * `visibility_timeout_s` (10): a delivery nobody touched for this long is reclaimed. The
      worker touches its in-flight batch every third of it, so only dead or hung workers lose
      their jobs. Also how long it retries storing results while the queue is unreachable.
    * `max_deliveries` (3): deliveries of one job before it is dead-lettered and fails.
    * `name`: the consumer name; must be unique among live workers (default host-pid-random).
    * `health_ttl_s` (2): TTL of the health key, refreshed every third of it. Once a worker's
      key expires (it died), the others claim its pending deliveries at once (`reclaim_dead`).
    * `job_completion_wait_s` (25): how long `close()` lets the in-flight batch finish.
    * `poll_block_ms` (500): longest single blocking read while idle (bounds shutdown latency).
    * `reclaim_interval_s`: how often to look for dead workers' and idle deliveries (default:
      a heartbeat interval or a quarter of the visibility timeout, whichever is shorter).
    * `max_backoff_s` (5): longest pause between retries while the queue is unreachable.
    * `on_batch`: called with a `BatchReport` after every batch (metrics); must not raise.
    """

    def __init__(
        self,
        *,
        queue: JobSource,
        handler: BatchHandler,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        visibility_timeout_s: float = 10.0,
        max_deliveries: int = 3,
        name: str | None = None,
        health_ttl_s: float = 2.0,
        job_completion_wait_s: float = 25.0,
        poll_block_ms: int = 500,
        reclaim_interval_s: float | None = None,
        max_backoff_s: float = 5.0,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be >= 1")
        if visibility_timeout_s <= 0 or health_ttl_s <= 0:
            raise ValueError("visibility_timeout_s and health_ttl_s must be > 0")
        self.queue = queue
        self.handler = handler
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_ms) / 1000.0
        self.visibility_timeout_s = visibility_timeout_s
        self.max_deliveries = max_deliveries
        self.name = name or default_worker_name()
        self.health_ttl_s = health_ttl_s
        self.job_completion_wait_s = job_completion_wait_s
        self.poll_block_ms = max(1, poll_block_ms)
        self.reclaim_interval_s = (
            reclaim_interval_s
            if reclaim_interval_s is not None
            else min(10.0, max(0.05, min(visibility_timeout_s / 4, health_ttl_s / 3)))
        )
        self._heartbeat_ms = max(1, round(health_ttl_s / 3 * 1000))
        self.max_backoff_s = max_backoff_s
        self.on_batch = on_batch
        self.stats = WorkerStats()
        self.started_at = time.time()
        self._visibility_ms = max(1, round(visibility_timeout_s * 1000))
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._next_reclaim = 0.0
        self._reclaim_now = False
        self._handler_task: asyncio.Task[list[JobResult | BaseException]] | None = None
        self._in_flight: list[Delivery] = []
        self._signal_task: asyncio.Task[None] | None = None
        self._stop_deadline = math.inf  # monotonic time by which close() wants to be done
        self._last_batch_size = max_batch  # assume company until a batch of one says otherwise

    @classmethod
    def from_settings(
        cls, *, queue: JobSource, handler: BatchHandler, settings: Settings, **overrides: Any
    ) -> Worker:
        """A worker configured from `Settings` (any knob can be overridden by keyword)."""
        kwargs: dict[str, Any] = {
            "max_batch": settings.max_batch,
            "max_wait_ms": settings.max_wait_ms,
            "visibility_timeout_s": settings.visibility_timeout_s,
            "max_deliveries": settings.max_deliveries,
            "name": settings.worker_name,
            "health_ttl_s": settings.worker_health_ttl_s,
            "job_completion_wait_s": settings.job_completion_wait_s,
        }
        kwargs.update(overrides)
        return cls(queue=queue, handler=handler, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Process batches until `close()` (or SIGTERM/SIGINT with `install_signal_handlers`)."""
        if self._running:
            raise RuntimeError(f"worker {self.name} is already running")
        self._running = True
        self._stopped.clear()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if install_signal_handlers else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"{self.name}-health")
        registered = False
        backoff = 0.05
        log.info("worker %s started (max_batch=%d)", self.name, self.max_batch)
        try:
            while not self._stopping:
                try:
                    if not registered:
                        await self.queue.register(self.name)
                        registered = True
                    await self._step(block=True)
                    if backoff > 0.05:
                        log.info("worker %s: the queue is back", self.name)
                    backoff = 0.05
                except QueueUnavailable as exc:
                    self.stats.queue_errors += 1
                    registered = False
                    log.warning("queue unavailable (%s); retrying in %.2f s", exc, backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                except Exception:
                    self.stats.queue_errors += 1
                    log.exception("worker loop error; retrying in %.2f s", backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            for sig in signals:
                loop.remove_signal_handler(sig)
            with contextlib.suppress(Exception):
                await self.queue.unregister(self.name)
            self._running = False
            self._stopped.set()
            log.info("worker %s stopped", self.name)

    async def run_check(self) -> WorkerStats:
        """Burst mode (tests, cron): process everything there is now, new entries and idle
        ones past the visibility timeout, then return a snapshot of the counters."""
        await self.queue.register(self.name)
        await self.queue.heartbeat(self.name, self._health(), self.health_ttl_s)
        try:
            while not self._stopping and await self._step(block=False):
                pass
        finally:
            with contextlib.suppress(Exception):
                await self.queue.unregister(self.name)
        return self.stats.snapshot()

    async def close(self) -> None:
        """Stop intake; let the in-flight batch finish within `job_completion_wait_s`, else
        cancel it and give its jobs back; remove the health key. Idempotent."""
        if not self._stopping:
            self._stop_deadline = time.monotonic() + self.job_completion_wait_s
        self._stopping = True
        self._stop_event.set()
        if not self._running:
            with contextlib.suppress(Exception):
                await self.queue.unregister(self.name)
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped.wait()), self.job_completion_wait_s)
        except TimeoutError:
            task = self._handler_task
            log.warning(
                "worker %s: in-flight batch did not finish within %.1f s; giving it back",
                self.name,
                self.job_completion_wait_s,
            )
            if task is not None:
                task.cancel()
            await self._stopped.wait()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._signal_task is None:
            log.info("worker %s: %s received, draining", self.name, sig.name)
            self._signal_task = asyncio.create_task(self.close())
        else:
            log.info("worker %s: %s received again; still draining", self.name, sig.name)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once on close()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    def _health(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "max_batch": self.max_batch,
            "in_flight": len(self._in_flight),
            "batches": self.stats.batches,
            "jobs_done": self.stats.jobs_done,
            "jobs_failed": self.stats.jobs_failed,
            "stopping": self._stopping,
            # what it serves (the engine's info: model name, version, engine), for /readyz
            "model": dict(getattr(getattr(self.handler, "engine", None), "info", None) or {}),
        }

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.queue.heartbeat(self.name, self._health(), self.health_ttl_s)
            except Exception as exc:  # the main loop reports queue outages
                log.debug("heartbeat failed: %s", exc)
            await asyncio.sleep(self.health_ttl_s / 3)

    # -- one batch ----------------------------------------------------------------------------

    async def _step(self, *, block: bool) -> int:
        """Collect and process one batch; returns how many deliveries it handled."""
        batch = await self._collect(block=block)
        if not batch:
            return 0
        if self._stopping and block:
            # read while stopping: intake is closed, so hand these back to the other workers
            await self.queue.release(self.name, batch)
            return len(batch)
        await self._process(batch)
        return len(batch)

    def _first_block_ms(self) -> int:
        until_reclaim = max(0.0, self._next_reclaim - time.monotonic())
        return max(1, min(self.poll_block_ms, math.ceil(until_reclaim * 1000)))

    async def _collect(self, *, block: bool) -> list[Delivery]:
        batch: list[Delivery] = []
        now = time.monotonic()
        if not block or self._reclaim_now or now >= self._next_reclaim:
            self._reclaim_now = False
            self._next_reclaim = now + self.reclaim_interval_s
            batch = await self._reclaim()
        if len(batch) < self.max_batch and not self._stopping:
            first_block = self._first_block_ms() if block and not batch else None
            batch += await self.queue.read(self.name, self.max_batch - len(batch), first_block)
        if not batch:
            return batch
        company = len(batch) > 1 or self._last_batch_size > 1
        fill_until = time.monotonic() + (self.max_wait_s if company else 0.0)
        while len(batch) < self.max_batch and not self._stopping:
            remaining_ms = (fill_until - time.monotonic()) * 1000.0
            if remaining_ms < 1.0:
                break
            block_ms = min(self.poll_block_ms, math.ceil(remaining_ms))
            batch += await self.queue.read(self.name, self.max_batch - len(batch), block_ms)
        self._last_batch_size = len(batch)
        return batch

    async def _reclaim(self) -> list[Delivery]:
        # first the deliveries of dead workers (health key expired: seconds), then those idle
        # past the visibility timeout (the backstop for a worker that heartbeats but hangs)
        claimed: list[Delivery] = []
        reclaim_dead = getattr(self.queue, "reclaim_dead", None)
        if reclaim_dead is not None:
            claimed = await reclaim_dead(self.name, self._heartbeat_ms, self.max_batch)
        if len(claimed) < self.max_batch:
            claimed += await self.queue.reclaim(
                self.name, self._visibility_ms, self.max_batch - len(claimed)
            )
        if not claimed:
            return []
        self.stats.jobs_reclaimed += len(claimed)
        exhausted = [d for d in claimed if d.deliveries > self.max_deliveries]
        if exhausted:
            await self.queue.dead_letter(self.name, exhausted, RECLAIMED_REASON)
            self._count_dead_letters(exhausted, RECLAIMED_REASON)
        log.info(
            "worker %s reclaimed %d idle deliveries (%d dead-lettered)",
            self.name,
            len(claimed),
            len(exhausted),
        )
        return [d for d in claimed if d.deliveries <= self.max_deliveries]

    def _count_dead_letters(self, deliveries: Sequence[Delivery], reason: str) -> None:
        self.stats.jobs_dead_lettered += len(deliveries)
        self.stats.jobs_failed += len(deliveries)
        for d in deliveries:
            log.error(
                "job %s dead-lettered after %d deliveries: %s", d.job_id, d.deliveries, reason
            )

    async def _process(self, batch: list[Delivery]) -> None:
        started = await self.queue.begin(self.name, batch)
        jobs: list[JobDef] = []
        live: list[Delivery] = []
        for delivery, outcome in zip(batch, started, strict=True):
            if isinstance(outcome, JobDef):
                jobs.append(outcome)
                live.append(delivery)
            elif outcome is JobStatus.EXPIRED:
                self.stats.jobs_expired += 1
            elif outcome is JobStatus.CANCELLED:
                self.stats.jobs_cancelled += 1
            elif outcome is JobStatus.FAILED:
                self.stats.jobs_failed += 1
            else:
                self.stats.jobs_skipped += 1
        if not jobs:
            return
        self._in_flight = live
        began = time.time()
        t0 = time.monotonic()
        leases = asyncio.create_task(self._keep_leases(live), name=f"{self.name}-leases")
        task = asyncio.create_task(self._call_handler(jobs), name=f"{self.name}-batch")
        self._handler_task = task
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            # run() itself was cancelled: give the jobs back before going down
            task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.queue.release(self.name, live))
            raise
        finally:
            leases.cancel()
            self._handler_task = None
            self._in_flight = []
        compute_s = time.monotonic() - t0
        self.stats.batches += 1
        self.stats.batch_sizes[len(jobs)] += 1
        waits = [max(0.0, began - job.created_at) for job in jobs]
        retried = dead = 0

        if task.cancelled():  # close() ran out of time: another worker takes them over
            await self.queue.release(self.name, live)
            self.stats.jobs_retried += len(live)
            self._report(jobs, waits, compute_s, [], len(live), 0)
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, BatchSizeMismatch):
            self.stats.batch_errors += 1
            log.error(
                "worker %s: batch handler raised on %d jobs",
                self.name,
                len(jobs),
                exc_info=exc,
            )
            retry = [d for d in live if d.deliveries < self.max_deliveries]
            exhausted = [d for d in live if d.deliveries >= self.max_deliveries]
            if retry:
                await self.queue.release(self.name, retry)
                self.stats.jobs_retried += len(retry)
                self._reclaim_now = True
            if exhausted:
                reason = f"the batch handler raised {type(exc).__name__}: {exc}"
                await self.queue.dead_letter(self.name, exhausted, reason)
                self._count_dead_letters(exhausted, reason)
            retried, dead = len(retry), len(exhausted)
            self._report(jobs, waits, compute_s, [], retried, dead)
            return
        if exc is not None:  # BatchSizeMismatch: a broken handler, retrying will not help
            log.error("worker %s: %s", self.name, exc)
            results = [JobResult.failure(ERROR_BATCH_SIZE, str(exc)) for _ in jobs]
        else:
            results = [self._result_of(outcome) for outcome in task.result()]
        finished = [
            _with_timings(result, job, waits[i], compute_s, len(jobs))
            for i, (job, result) in enumerate(zip(jobs, results, strict=True))
        ]
        stored = await self._complete(list(zip(live, finished, strict=True)))
        for result, ok in zip(finished, stored, strict=True):
            if not ok:
                self.stats.jobs_skipped += 1
            elif result.status is JobStatus.DONE:
                self.stats.jobs_done += 1
            elif result.status is JobStatus.CANCELLED:  # a running video job stopped on request
                self.stats.jobs_cancelled += 1
            else:
                self.stats.jobs_failed += 1
        self._report(jobs, waits, compute_s, finished, retried, dead)

    async def _call_handler(self, jobs: list[JobDef]) -> list[JobResult | BaseException]:
        results = list(await self.handler(jobs))
        if len(results) != len(jobs):
            raise BatchSizeMismatch(len(jobs), len(results))
        return results

    @staticmethod
    def _result_of(outcome: object) -> JobResult:
        if isinstance(outcome, BaseException):
            code = getattr(outcome, "code", None)
            error = {
                "code": code if isinstance(code, str) and code else ERROR_HANDLER,
                "message": str(outcome) or type(outcome).__name__,
                "type": type(outcome).__name__,
            }
            return JobResult(JobStatus.FAILED, [], {"error": error})
        if not isinstance(outcome, JobResult):
            return JobResult.failure(
                ERROR_HANDLER, f"the handler returned {type(outcome).__name__}, not a JobResult"
            )
        if outcome.status not in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED):
            return JobResult.failure(
                ERROR_HANDLER, f"the handler returned status {outcome.status.value!r}"
            )
        return outcome

    async def _keep_leases(self, deliveries: list[Delivery]) -> None:
        """Touch the in-flight deliveries every third of the visibility timeout."""
        while True:
            await asyncio.sleep(self.visibility_timeout_s / 3)
            try:
                await self.queue.touch(self.name, deliveries)
            except Exception as exc:  # a missed touch only risks a redelivery
                log.warning("worker %s could not extend its leases: %s", self.name, exc)

    async def _complete(self, items: list[tuple[Delivery, JobResult]]) -> list[bool]:
        """Store the results, retrying while the queue is unreachable for up to the visibility
        timeout (after that the entries get reclaimed and redone anyway), or until close()
        runs out of time."""
        give_up = time.monotonic() + self.visibility_timeout_s
        backoff = 0.05
        while True:
            try:
                return await self.queue.complete(self.name, items)
            except QueueUnavailable as exc:
                if time.monotonic() + backoff > min(give_up, self._stop_deadline):
                    log.error(
                        "worker %s could not store %d results (%s); they will be redone",
                        self.name,
                        len(items),
                        exc,
                    )
                    raise
                log.warning("storing results failed (%s); retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    def _report(
        self,
        jobs: list[JobDef],
        waits: list[float],
        compute_s: float,
        finished: list[JobResult],
        retried: int,
        dead: int,
    ) -> None:
        if self.on_batch is None:
            return
        report = BatchReport(
            size=len(jobs),
            queue_wait_s=waits,
            compute_s=compute_s,
            done=sum(r.status is JobStatus.DONE for r in finished),
            failed=sum(r.status is JobStatus.FAILED for r in finished) + dead,
            retried=retried,
            dead_lettered=dead,
        )
        try:
            self.on_batch(report)
        except Exception:
            log.exception("on_batch hook raised")


def _with_timings(
    result: JobResult, job: JobDef, queue_s: float, compute_s: float, batch_size: int
) -> JobResult:
    """The stored result: the handler's meta plus queue/compute timings, made JSON-safe."""
    handler_timings = result.meta.get("timings")
    timings = {
        "queue_s": round(queue_s, 6),
        "compute_s": round(compute_s, 6),
        **(handler_timings if isinstance(handler_timings, dict) else {}),
    }
    meta = {**result.meta, "timings": timings, "batch_size": batch_size, "attempts": job.attempts}
    try:
        dump_json(meta)
    except (TypeError, ValueError) as exc:
        return JobResult.failure(
            ERROR_HANDLER,
            f"the handler's result meta is not JSON: {exc}",
            timings=timings,
            batch_size=batch_size,
            attempts=job.attempts,
        )
    return JobResult(result.status, result.outputs, meta)


async def run_worker(settings: Settings, handler: BatchHandler, **overrides: Any) -> WorkerStats:
    """`disco worker`: serve the shared queue of `settings.queue_url` until SIGTERM/SIGINT."""
    from .connections import open_queue

    if settings.queue_backend != "redis":
        raise ValueError(
            "a standalone worker needs a shared queue (redis:// or rediss://); with memory:// "
            "the API runs its worker in-process"
        )
    queue = open_queue(settings.queue_url, settings)
    try:
        worker = Worker.from_settings(queue=queue, handler=handler, settings=settings, **overrides)
        await worker.run(install_signal_handlers=True)
        return worker.stats.snapshot()
    finally:
        await queue.close()
