"""`redis://` / `rediss://`: the shared queue, on Redis Streams with one consumer group.

Layout (names in `constants.py`; every key but the stream has a TTL):

* `disco:jobs` (stream): one small entry `{"job": <id>}` per unfinished job. Workers read it
  through the group `disco:workers` (XREADGROUP ... COUNT <free batch slots>); a finished entry
  is acknowledged and deleted (XACK + XDEL) in the same script that stores the result, so the
  stream holds exactly the unfinished jobs: its length is the backlog, and trimming never drops
  an unacknowledged entry (there is no MAXLEN on it).
* `disco:job:<id>` (hash): status, kind, params (JSON), created_at, deadline, attempts, worker,
  started_at, finished_at, meta (JSON), n_outputs, the entry id. TTL: until the deadline plus
  the result TTL, then the result TTL from the moment it finishes.
* `disco:payload:<id>` (string): the uploaded bytes; deleted when the job ends.
* `disco:result:<id>` (list): the encoded outputs, written to a staging key first and renamed
  into place by the completion script (blobs never pass through Lua). TTL: the result TTL.
* `disco:idem:<key>` (string): Idempotency-Key -> job id, SET with the job's TTL.
* `disco:jobs:dead` (stream, MAXLEN ~): dead-lettered jobs with their delivery count and reason.
* `disco:worker:<name>` (string, TTL) + `disco:worker-index` (sorted set): live workers.
* `disco:done` (pub/sub channel): the id of every job that reaches a final state.

Durability across a failover (Sentinel): replication is asynchronous, so a job the master
acknowledged may not have reached a replica when the master dies. `enqueue` therefore sends
`WAIT <n> <timeout>` in the same round trip as the XADD (n = `wait_replicas`; None = `auto`: 1
when INFO replication reports an online replica, re-read every `REPLICA_CHECK_S`), so a 202
means "on a replica too". When no replica acknowledges in time the job is still accepted (the
master has it; refusing would turn a slow replica into an outage), logged and counted in
`unreplicated_jobs`: only such a job can be lost, and only if the master dies before it
replicates.

Completion notification is pub/sub, not a per-job list + BLPOP: each API process holds ONE
subscriber connection and fans messages out to local `asyncio.Event`s, so a thousand waiting
requests cost one connection instead of a thousand blocked ones, and several waiters on the same
job (a retried request with the same Idempotency-Key) all wake, where a BLPOP token wakes only
one. Pub/sub is fire-and-forget, so a waiter subscribes first and then reads the status (no lost
wake-up), and after a reconnection every waiter re-reads its status (messages sent while the
subscriber was away are not replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from . import constants as C
from .base import RELEASED_IDLE_MS, Delivery
from .errors import JobNotFound, QueueFull, QueueUnavailable
from .jobs import (
    CANCELLED_MESSAGE,
    ERROR_CANCELLED,
    ERROR_DEAD_LETTERED,
    ERROR_EXPIRED,
    ERROR_PAYLOAD_MISSING,
    EXPIRED_MESSAGE,
    DeadLetter,
    JobDef,
    JobInfo,
    JobResult,
    JobStatus,
    WorkerHealth,
    dead_letter_message,
    decode_fields,
    dump_json,
    error_meta,
    info_from_fields,
    job_fields,
    job_from_fields,
    load_json,
)
from .redis_scripts import SCRIPTS

# blocking reads shorter than this are polled client-side (see `read`)
SHORT_BLOCK_MS = 100
SHORT_BLOCK_POLL_S = 0.002
DEAD_CONSUMER_FORGET_MS = (
    10 * 60 * 1000
)  # a healthless consumer idle this long with nothing pending

REPLICA_CHECK_S = 5.0  # `auto` WAIT: how long a connected-replica count from INFO is trusted
UNREPLICATED_LOG_EVERY_S = 10.0

log = logging.getLogger("disco.queue")

P = ParamSpec("P")
T = TypeVar("T")

# What "the backend cannot be reached" looks like from redis-py (BusyLoadingError, a Redis still
# loading its data, is a ConnectionError; ReadOnlyError is a replica answering after failover).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    ConnectionError,
    TimeoutError,
    OSError,
)
# Error replies a server sends while it changes role or cannot serve yet (a failover in
# progress): a blocked XREADGROUP on a demoted master gets UNBLOCKED, a replica whose master
# is down MASTERDOWN, min-replicas-to-write NOREPLICAS. They mean "retry soon", like a refusal.
FAILOVER_REPLY = re.compile(r"\b(UNBLOCKED|MASTERDOWN|NOREPLICAS|LOADING|READONLY)\b")


@contextlib.contextmanager
def _unavailable_as_queue_error() -> Iterator[None]:
    try:
        yield
    except QueueUnavailable:
        raise
    except UNAVAILABLE_ERRORS as exc:
        raise QueueUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}") from exc
    except redis_errors.ResponseError as exc:
        if FAILOVER_REPLY.search(str(exc)):
            raise QueueUnavailable(f"redis is failing over: {exc}") from exc
        raise


def _translate_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with _unavailable_as_queue_error():
            return await fn(*args, **kwargs)

    return wrapper


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _now() -> str:
    return repr(time.time())


class _CompletionListener:
    """One pub/sub subscription to `disco:done` per queue object, fanned out to local waiters."""

    def __init__(self, client: aioredis.Redis, reconnect_max_s: float = 2.0) -> None:
        self._client = client
        self._reconnect_max_s = reconnect_max_s
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def ready(self, timeout_s: float) -> None:
        """Start the subscriber if needed and wait until it is subscribed."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="disco-queue-completions")
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError:
            raise QueueUnavailable("could not subscribe to job completions") from None

    @contextlib.contextmanager
    def waiting(self, job_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._wake_all()

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(C.DONE_CHANNEL)
                while not self._closed:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        if backoff > 0.05:
                            log.info("completion subscriber is back")
                        backoff = 0.05
                        self._subscribed.set()
                        self._wake_all()  # re-read statuses: completions may have been missed
                    elif message["type"] == "message":
                        for event in self._waiters.get(_s(message["data"]), ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the subscriber alive, whatever it was
                self._subscribed.clear()
                log.log(
                    logging.WARNING if backoff == 0.05 else logging.DEBUG,  # once per outage
                    "completion subscriber lost its connection (%s: %s); reconnecting",
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._reconnect_max_s)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


class RedisStreamsQueue:
    """`Queue` on Redis Streams (see the module docstring for the key layout)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_backlog: int = 64,
        result_ttl_s: float = 600.0,
        default_timeout_s: float = 30.0,
        retry_after_s: int = 1,
        dead_letter_maxlen: int = 10_000,
        subscribe_timeout_s: float = 5.0,
        wait_replicas: int | None = None,
        wait_timeout_ms: int = 100,
    ) -> None:
        self.client = client
        self.max_backlog = max_backlog
        self.result_ttl_s = result_ttl_s
        self.default_timeout_s = default_timeout_s
        self.retry_after_s = retry_after_s
        self.dead_letter_maxlen = dead_letter_maxlen
        self.subscribe_timeout_s = subscribe_timeout_s
        if wait_replicas is not None and wait_replicas < 0:
            raise ValueError("wait_replicas must be >= 0 or None (auto)")
        if wait_timeout_ms < 1:
            raise ValueError("wait_timeout_ms must be >= 1 (WAIT 0 would block forever)")
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.unreplicated_jobs = 0  # accepted jobs no replica acknowledged within the timeout
        self._replicas: tuple[float, int] | None = None  # auto: (checked at, replicas to wait)
        self._replicas_lock = asyncio.Lock()
        self._unreplicated_logged = (0.0, 0)  # (when, count then): rate-limits the warning
        self._ttl_ms = round(result_ttl_s * 1000)
        self._scripts = {name: client.register_script(src) for name, src in SCRIPTS.items()}
        self._listener = _CompletionListener(client)
        self._reclaim_cursors: dict[str, str] = {}
        self._closed = False
        self._expired_meta = dump_json(error_meta(ERROR_EXPIRED, EXPIRED_MESSAGE))
        self._cancelled_meta = dump_json(error_meta(ERROR_CANCELLED, CANCELLED_MESSAGE))

    def _check_open(self) -> None:
        if self._closed:
            raise QueueUnavailable("the queue is closed")

    # -- producer side ------------------------------------------------------------------------

    @_translate_errors
    async def enqueue(self, job: JobDef) -> JobDef:
        self._check_open()
        now = time.time()
        deadline = job.deadline if job.deadline is not None else now + self.default_timeout_s
        params = load_json(dump_json(job.params), {})
        stored = JobDef(
            kind=job.kind,
            payload=job.payload,
            params=params,
            id=job.id,
            created_at=job.created_at,
            deadline=deadline,
            idempotency_key=job.idempotency_key,
            owner=job.owner,
        )
        ttl_ms = max(1, round((max(deadline, now) - now) * 1000)) + self._ttl_ms
        keys = [C.STREAM_KEY, C.job_key(job.id)]
        if job.idempotency_key is not None:
            keys.append(C.idempotency_key(job.idempotency_key))
        argv: list[Any] = [job.id, self.max_backlog, ttl_ms]
        for name, value in job_fields(stored).items():
            argv += [name, value]
        payload_key = C.payload_key(job.id)
        replicas = await self._replicas_to_wait()
        async with self.client.pipeline(transaction=False) as pipe:
            # the payload first (one round trip with the script): a worker may read the entry
            # as soon as the script added it. NX: never overwrite another job's payload.
            pipe.set(payload_key, bytes(job.payload), px=ttl_ms, nx=True)
            await self._scripts["enqueue"](keys=keys, args=argv, client=pipe)
            if replicas:  # same round trip: WAIT covers every write above on this connection
                pipe.execute_command("WAIT", replicas, self.wait_timeout_ms)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except UNAVAILABLE_ERRORS:
                self._replicas = None  # a failover may change the topology: look again
                raise
        for reply in replies[:2]:  # the SET and the script must have worked
            if isinstance(reply, Exception):
                raise reply
        created, (outcome, value) = replies[0], replies[1]
        outcome, value = _s(outcome), _s(value)
        if outcome == "ok":
            if replicas:
                acked = replies[2]
                if isinstance(acked, Exception):  # e.g. an ACL without WAIT: the job stands
                    log.warning("WAIT after enqueue failed: %s", acked)
                    acked = 0
                if int(acked) < replicas:
                    self._count_unreplicated(job.id, int(acked), replicas)
            return stored
        if created:
            await self.client.delete(payload_key)
        if outcome == "dup":
            fields = decode_fields(await self.client.hgetall(C.job_key(value)))
            if fields:
                return job_from_fields(fields, b"", attempts=int(fields.get("attempts") or 0))
            return await self.enqueue(job)  # it expired just now: the key is free again
        if outcome == "full":
            raise QueueFull(int(value), self.max_backlog, self.retry_after_s)
        raise ValueError(f"job id {job.id!r} already exists")

    async def _replicas_to_wait(self) -> int:
        if self.wait_replicas is not None:
            return self.wait_replicas
        now = time.monotonic()
        cached = self._replicas
        if cached is not None and now - cached[0] < REPLICA_CHECK_S:
            return cached[1]
        async with self._replicas_lock:  # one INFO for all the requests that find it stale
            cached = self._replicas
            if cached is None or now - cached[0] >= REPLICA_CHECK_S:
                try:
                    online = _online_replicas(await self.client.info("replication"))
                except redis_errors.ResponseError as exc:  # e.g. an ACL user without INFO
                    if self._replicas is None:
                        log.warning("INFO replication refused (%s): not waiting for replicas", exc)
                    online = 0
                self._replicas = cached = (time.monotonic(), min(1, online))
        return cached[1]

    def _count_unreplicated(self, job_id: str, acked: int, wanted: int) -> None:
        self.unreplicated_jobs += 1
        when, count = self._unreplicated_logged
        now = time.monotonic()
        if now - when >= UNREPLICATED_LOG_EVERY_S:
            log.warning(
                "job %s accepted but only %d of %d replicas acknowledged it within %d ms; "
                "a failover now would lose it (%d such jobs since the last warning)",
                job_id,
                acked,
                wanted,
                self.wait_timeout_ms,
                self.unreplicated_jobs - count,
            )
            self._unreplicated_logged = (now, self.unreplicated_jobs)

    @_translate_errors
    async def info(self, job_id: str) -> JobInfo | None:
        self._check_open()
        fields = decode_fields(await self.client.hgetall(C.job_key(job_id)))
        return info_from_fields(fields) if fields else None

    @_translate_errors
    async def result(self, job_id: str) -> JobResult | None:
        self._check_open()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(C.job_key(job_id))
            pipe.lrange(C.result_key(job_id), 0, -1)
            raw_fields, outputs = await pipe.execute()
        fields = decode_fields(raw_fields)
        if not fields:
            return None
        status = JobStatus(fields["status"])
        if not status.terminal:
            return None
        return JobResult(status, list(outputs), load_json(fields.get("meta"), {}))

    @_translate_errors
    async def wait(self, job_id: str, timeout_s: float) -> JobInfo:
        self._check_open()
        end = time.monotonic() + max(0.0, timeout_s)
        info = await self._info_or_raise(job_id)  # fails fast while Redis is down
        if info.terminal or timeout_s <= 0:
            return info
        # subscribe first, then re-read the status: a completion in between is not missed
        remaining = end - time.monotonic()
        try:
            await self._listener.ready(min(self.subscribe_timeout_s, max(0.0, remaining)))
        except QueueUnavailable:
            if time.monotonic() < end:
                raise
            return await self._info_or_raise(job_id)  # a short wait simply ran out
        with self._listener.waiting(job_id) as event:
            while True:
                self._check_open()
                event.clear()
                info = await self._info_or_raise(job_id)
                remaining = end - time.monotonic()
                if info.terminal or remaining <= 0:
                    return info
                if info.status is JobStatus.QUEUED:  # wake at the deadline to report the expiry
                    remaining = min(remaining, max(0.0, info.deadline - time.time()) + 0.001)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)

    async def _info_or_raise(self, job_id: str) -> JobInfo:
        info = await self.info(job_id)
        if info is None:
            raise JobNotFound(job_id)
        return info

    @_translate_errors
    async def cancel(self, job_id: str) -> bool:
        self._check_open()
        outcome = await self._scripts["cancel"](
            keys=[C.STREAM_KEY, C.job_key(job_id), C.payload_key(job_id)],
            args=[_now(), self._ttl_ms, self._cancelled_meta, self._expired_meta],
        )
        return int(outcome) == 1

    @_translate_errors
    async def request_cancel(self, job_id: str) -> bool:
        self._check_open()
        return int(await self._scripts["request_cancel"](keys=[C.job_key(job_id)])) == 1

    @_translate_errors
    async def progress(self, job_id: str, attempt: int, done: int, total: int) -> str:
        self._check_open()
        return _s(await self._scripts["progress"](
            keys=[C.job_key(job_id)], args=[attempt, f"{int(done)}/{int(total)}"]
        ))  # fmt: skip

    @_translate_errors
    async def depth(self) -> int:
        self._check_open()
        return int(await self.client.xlen(C.STREAM_KEY))

    @_translate_errors
    async def ping(self) -> None:
        self._check_open()
        await self.client.ping()

    @_translate_errors
    async def workers(self) -> list[WorkerHealth]:
        self._check_open()
        names = [_s(n) for n in await self.client.zrange(C.WORKER_INDEX_KEY, 0, -1)]
        if not names:
            return []
        records = await self.client.mget([C.worker_key(n) for n in names])
        alive: list[WorkerHealth] = []
        gone: list[str] = []
        for name, record in zip(names, records, strict=True):
            if record is None:
                gone.append(name)
                continue
            info = load_json(record, {})
            alive.append(
                WorkerHealth(name=name, last_seen=float(info.get("last_seen", 0)), info=info)
            )
        if gone:
            await self.client.zrem(C.WORKER_INDEX_KEY, *gone)
        return alive

    @_translate_errors
    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        self._check_open()
        entries = await self.client.xrevrange(C.DEAD_LETTER_STREAM_KEY, count=count)
        out: list[DeadLetter] = []
        for entry_id, raw in entries:
            fields = decode_fields(raw)
            out.append(
                DeadLetter(
                    entry_id=fields.get("entry", ""),
                    job_id=fields.get("job", ""),
                    kind=fields.get("kind", ""),
                    deliveries=int(fields.get("deliveries") or 0),
                    reason=fields.get("reason", ""),
                    failed_at=float(fields.get("failed_at") or 0.0),
                )
            )
            del entry_id
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._listener.close()
        with contextlib.suppress(Exception):
            await self.client.aclose()
        sentinels = getattr(self.client.connection_pool, "sentinel_manager", None)
        if sentinels is not None:  # redis+sentinel://: the connections to the sentinels too
            with contextlib.suppress(Exception):
                await sentinels.aclose()

    # -- consumer side ------------------------------------------------------------------------

    @_translate_errors
    async def register(self, consumer: str) -> None:
        self._check_open()
        try:
            await self.client.xgroup_create(C.STREAM_KEY, C.GROUP_NAME, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _on_nogroup(self, exc: redis_errors.ResponseError, consumer: str) -> None:
        if "NOGROUP" not in str(exc):
            raise exc
        # the stream or the group is gone (Redis restarted empty, or someone deleted it)
        log.warning("consumer group %s is missing; creating it again", C.GROUP_NAME)
        await self.register(consumer)

    @_translate_errors
    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Delivery]:
        self._check_open()
        if block_ms is not None and block_ms < 1:
            raise ValueError("block_ms must be >= 1 (0 would block forever) or None")
        if block_ms is None or block_ms >= SHORT_BLOCK_MS:
            return await self._read(consumer, count, block_ms)
        # Redis notices an expired BLOCK only on its next timer tick (every 1000/hz ms, 100 ms
        # at the default hz 10), so a 10 ms batch-fill wait would last 40-90 ms: poll instead
        deadline = time.monotonic() + block_ms / 1000.0
        while True:
            got = await self._read(consumer, count, None)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            await asyncio.sleep(min(SHORT_BLOCK_POLL_S, left))

    async def _read(self, consumer: str, count: int, block_ms: int | None) -> list[Delivery]:
        try:
            reply = await self.client.xreadgroup(
                C.GROUP_NAME, consumer, {C.STREAM_KEY: ">"}, count=count, block=block_ms
            )
        except redis_errors.ResponseError as exc:
            await self._on_nogroup(exc, consumer)
            return []
        entries = _entries_of(reply)
        return await self._deliveries(entries, lambda _msg: 1)

    @_translate_errors
    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        self._check_open()
        # XAUTOCLAIM scans at most 10 x COUNT pending entries per call: carry the cursor over,
        # so idle entries behind many busy ones are found on a later call
        cursor = self._reclaim_cursors.get(consumer, "0-0")
        try:
            reply = await self.client.xautoclaim(
                C.STREAM_KEY, C.GROUP_NAME, consumer, min_idle_ms, cursor, count=count
            )
        except redis_errors.ResponseError as exc:
            self._reclaim_cursors.pop(consumer, None)
            await self._on_nogroup(exc, consumer)
            return []
        self._reclaim_cursors[consumer] = _s(reply[0])
        entries = reply[1]
        if not entries:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for msg, _ in entries:
                pipe.xpending_range(C.STREAM_KEY, C.GROUP_NAME, min=msg, max=msg, count=1)
            pending = await pipe.execute()
        counts = {_s(p[0]["message_id"]): int(p[0]["times_delivered"]) for p in pending if p}
        return await self._deliveries(entries, lambda msg: counts.get(msg, 1))

    @_translate_errors
    async def reclaim_dead(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        """Claim the pending deliveries of consumers whose health key expired (a dead worker),
        without waiting for the visibility timeout. `min_idle_ms` (a heartbeat interval) spares
        a delivery its owner touched a moment ago."""
        self._check_open()
        try:
            consumers = await self.client.xinfo_consumers(C.STREAM_KEY, C.GROUP_NAME)
        except redis_errors.ResponseError as exc:
            await self._on_nogroup(exc, consumer)
            return []
        others = [c for c in consumers if _s(c["name"]) != consumer]
        if not others:
            return []
        alive = await self.client.mget([C.worker_key(_s(c["name"])) for c in others])
        out: list[Delivery] = []
        for info, health in zip(others, alive, strict=True):
            if health is not None:
                continue
            name = _s(info["name"])
            if int(info.get("pending", 0)) == 0:
                if int(info.get("idle", 0)) > DEAD_CONSUMER_FORGET_MS:
                    # long gone and owning nothing: drop it so the consumer list stays short
                    await self.client.xgroup_delconsumer(C.STREAM_KEY, C.GROUP_NAME, name)
                continue
            if len(out) >= count:
                break
            pending = await self.client.xpending_range(
                C.STREAM_KEY, C.GROUP_NAME, "-", "+", count - len(out), consumername=name
            )
            if not pending:
                continue
            times = {_s(p["message_id"]): int(p["times_delivered"]) + 1 for p in pending}
            entries = await self.client.xclaim(
                C.STREAM_KEY, C.GROUP_NAME, consumer, min_idle_ms, list(times)
            )
            got = await self._deliveries(
                [e for e in entries if e and e[1] is not None], lambda m, t=times: t.get(m, 1)
            )
            if got:
                log.warning(
                    "worker %s is dead (health key expired): %s claimed %d of its deliveries",
                    name,
                    consumer,
                    len(got),
                )
            out += got
        return out

    async def _deliveries(
        self, entries: list[Any], deliveries_of: Callable[[str], int]
    ) -> list[Delivery]:
        out: list[Delivery] = []
        broken: list[str] = []
        for msg, fields in entries:
            msg = _s(msg)
            job_id = (fields or {}).get(b"job")
            if job_id is None:  # a deleted entry (Redis 6.2 XAUTOCLAIM) or a foreign one
                broken.append(msg)
                continue
            out.append(Delivery(_s(job_id), msg, deliveries_of(msg)))
        if broken:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xack(C.STREAM_KEY, C.GROUP_NAME, *broken)
                pipe.xdel(C.STREAM_KEY, *broken)
                await pipe.execute()
        return out

    @_translate_errors
    async def begin(
        self, consumer: str, deliveries: Sequence[Delivery]
    ) -> list[JobDef | JobStatus | None]:
        self._check_open()
        if not deliveries:
            return []
        now = _now()
        async with self.client.pipeline(transaction=False) as pipe:
            for d in deliveries:
                await self._scripts["begin"](
                    keys=[C.STREAM_KEY, C.job_key(d.job_id), C.payload_key(d.job_id)],
                    args=[d.token, consumer, now, self._ttl_ms, d.deliveries, self._expired_meta],
                    client=pipe,
                )
            outcomes = [_s(o) for o in await pipe.execute()]
        running = [d for d, o in zip(deliveries, outcomes, strict=True) if o == "running"]
        loaded: dict[str, tuple[dict[str, str], bytes | None]] = {}
        if running:
            async with self.client.pipeline(transaction=False) as pipe:
                for d in running:
                    pipe.hgetall(C.job_key(d.job_id))
                    pipe.get(C.payload_key(d.job_id))
                replies = await pipe.execute()
            for i, d in enumerate(running):
                loaded[d.token] = (decode_fields(replies[2 * i]), replies[2 * i + 1])
        out: list[JobDef | JobStatus | None] = []
        missing: list[tuple[Delivery, JobResult]] = []
        for d, outcome in zip(deliveries, outcomes, strict=True):
            if outcome == "running":
                fields, payload = loaded[d.token]
                if fields and payload is not None:
                    out.append(job_from_fields(fields, payload, attempts=d.deliveries))
                    continue
                missing.append(
                    (d, JobResult.failure(ERROR_PAYLOAD_MISSING, "the job's payload is gone"))
                )
                out.append(JobStatus.FAILED)
            elif outcome == "gone":
                out.append(None)
            else:
                out.append(JobStatus(outcome))
        if missing:
            await self.complete(consumer, missing)
        return out

    @_translate_errors
    async def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        self._check_open()
        if deliveries:
            await self._scripts["touch"](
                keys=[C.STREAM_KEY], args=[consumer, *(d.token for d in deliveries)]
            )

    @_translate_errors
    async def complete(
        self, consumer: str, items: Sequence[tuple[Delivery, JobResult]]
    ) -> list[bool]:
        self._check_open()
        if not items:
            return []
        now = _now()
        async with self.client.pipeline(transaction=False) as pipe:
            for d, result in items:
                staging = C.result_staging_key(d.job_id, consumer)
                outputs = [bytes(o) for o in result.outputs]
                if outputs:
                    pipe.delete(staging)
                    pipe.rpush(staging, *outputs)
                    pipe.pexpire(staging, self._ttl_ms)
                await self._scripts["complete"](
                    keys=[
                        C.STREAM_KEY,
                        C.job_key(d.job_id),
                        C.payload_key(d.job_id),
                        C.result_key(d.job_id),
                        staging,
                    ],
                    args=[
                        d.token,
                        result.status.value,
                        now,
                        self._ttl_ms,
                        dump_json(result.meta),
                        len(outputs),
                    ],
                    client=pipe,
                )
            replies = await pipe.execute()
        # the script's reply is the last command queued for each item
        out: list[bool] = []
        index = -1
        for d, result in items:
            index += 4 if result.outputs else 1
            stored = int(replies[index])
            if stored < 0:
                log.error("staged outputs of job %s vanished; it will be redelivered", d.job_id)
            out.append(stored == 1)
        return out

    @_translate_errors
    async def release(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        self._check_open()
        if not deliveries:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for d in deliveries:
                await self._scripts["release"](
                    keys=[C.STREAM_KEY, C.job_key(d.job_id)],
                    args=[d.token, consumer, RELEASED_IDLE_MS],
                    client=pipe,
                )
            await pipe.execute()

    @_translate_errors
    async def dead_letter(self, consumer: str, deliveries: Sequence[Delivery], reason: str) -> None:
        self._check_open()
        if not deliveries:
            return
        now = _now()
        async with self.client.pipeline(transaction=False) as pipe:
            for d in deliveries:
                meta = error_meta(ERROR_DEAD_LETTERED, dead_letter_message(d.deliveries, reason))
                await self._scripts["dead_letter"](
                    keys=[
                        C.STREAM_KEY,
                        C.job_key(d.job_id),
                        C.payload_key(d.job_id),
                        C.DEAD_LETTER_STREAM_KEY,
                    ],
                    args=[
                        d.token,
                        d.job_id,
                        consumer,
                        now,
                        self._ttl_ms,
                        d.deliveries,
                        reason,
                        dump_json(meta),
                        self.dead_letter_maxlen,
                    ],
                    client=pipe,
                )
            await pipe.execute()

    @_translate_errors
    async def heartbeat(self, name: str, info: dict[str, Any], ttl_s: float) -> None:
        self._check_open()
        now = time.time()
        ttl_ms = max(1, round(ttl_s * 1000))
        record = dump_json({**info, "name": name, "last_seen": now})
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(C.worker_key(name), record, px=ttl_ms)
            pipe.zadd(C.WORKER_INDEX_KEY, {name: now})
            pipe.zremrangebyscore(C.WORKER_INDEX_KEY, "-inf", now - 10 * ttl_s)
            pipe.pexpire(C.WORKER_INDEX_KEY, 10 * ttl_ms)
            await pipe.execute()

    @_translate_errors
    async def unregister(self, name: str) -> None:
        if self._closed:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(C.worker_key(name))
            pipe.zrem(C.WORKER_INDEX_KEY, name)
            await pipe.execute()


def _online_replicas(info: dict[str, Any]) -> int:
    """Replicas in INFO replication that stream from this master (`state=online`): one still
    in its initial sync (`wait_bgsave`, `send_bulk`) would not acknowledge a WAIT."""
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave")
        and key[5:].isdigit()
        and isinstance(value, dict)
        and value.get("state") == "online"
    )


def _entries_of(reply: Any) -> list[Any]:
    """The entries of an XREADGROUP reply on one stream (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(next(iter(reply.values())))
    return list(reply[0][1])
