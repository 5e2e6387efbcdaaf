"""The job model: status, definition, result, info, and their (JSON + raw bytes) serializers.

A job's small metadata lives in a flat `str -> str` record (the Redis hash `disco:job:<id>`, or
the same dict in the memory queue); its payload and its outputs are raw bytes kept apart, so no
blob is ever JSON- or base64-encoded. msgpack is not a dependency: JSON for metadata only.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_KIND_CHARS = 64
MAX_IDEMPOTENCY_KEY_CHARS = 255

# Error codes the queue layer itself writes into `meta["error"]["code"]`.
ERROR_EXPIRED = "expired"  # the deadline passed before a worker started the job
ERROR_CANCELLED = "cancelled"  # the client cancelled it while it was queued
ERROR_DEAD_LETTERED = "max_deliveries"  # delivered max_deliveries times without finishing
ERROR_HANDLER = "handler_error"  # the batch handler raised for this job (default code)
ERROR_BATCH_SIZE = "batch_size_mismatch"  # the handler broke the one-result-per-job contract
ERROR_PAYLOAD_MISSING = "payload_missing"  # the payload key vanished (TTL or manual deletion)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.DONE, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED}
)


def new_job_id() -> str:
    """128 random bits, URL-safe (22 characters): unguessable, so a job id is its own capability."""
    return secrets.token_urlsafe(16)


def error_meta(code: str, message: str) -> dict[str, Any]:
    """The `meta` of a job that did not produce outputs: `{"error": {"code", "message"}}`."""
    return {"error": {"code": code, "message": message}}


@dataclass
class JobDef:
    """What a client asks for. `deadline` (epoch seconds) None means "the queue's default"."""

    kind: str  # "colorize" | "diverse" | "anchors" | ...
    payload: bytes = field(repr=False)  # the uploaded image bytes
    params: dict[str, Any] = field(default_factory=dict)  # JSON-able options
    id: str = field(default_factory=new_job_id)
    created_at: float = field(default_factory=time.time)  # epoch seconds
    deadline: float | None = None  # epoch seconds; workers never start a job past it
    idempotency_key: str | None = None
    attempts: int = 0  # deliveries so far, this one included (set by the worker side)
    owner: str | None = None  # the API key id that created it (object-level authorization)

    def __post_init__(self) -> None:
        if not self.kind or len(self.kind) > MAX_KIND_CHARS:
            raise ValueError(f"job kind must be 1..{MAX_KIND_CHARS} characters, got {self.kind!r}")
        if not self.id:
            raise ValueError("job id must not be empty")
        if not isinstance(self.payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, got {type(self.payload).__name__}")
        if self.idempotency_key is not None and not (
            0 < len(self.idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS
        ):
            raise ValueError(f"idempotency key must be 1..{MAX_IDEMPOTENCY_KEY_CHARS} characters")
        if self.deadline is not None and not math.isfinite(self.deadline):
            raise ValueError("deadline must be a finite epoch time")

    @classmethod
    def create(
        cls,
        kind: str,
        payload: bytes,
        *,
        params: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        now: float | None = None,
        owner: str | None = None,
    ) -> JobDef:
        """A new job; `timeout_s` None leaves the deadline to the queue's default timeout."""
        created = time.time() if now is None else now
        deadline = None if timeout_s is None else created + timeout_s
        return cls(
            kind=kind,
            payload=bytes(payload),
            params=dict(params or {}),
            created_at=created,
            deadline=deadline,
            idempotency_key=idempotency_key,
            owner=owner,
        )


@dataclass
class JobResult:
    """What a worker stores for a finished job: encoded outputs plus JSON `meta`.

    `meta` conventions: `timings` ({"queue_s", "compute_s", ...: seconds}), `content_type`,
    `anchors`, and for failures `error` ({"code", "message"}); see `error_meta`.
    """

    status: JobStatus = JobStatus.DONE
    outputs: list[bytes] = field(default_factory=list, repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, outputs: list[bytes], **meta: Any) -> JobResult:
        return cls(JobStatus.DONE, list(outputs), dict(meta))

    @classmethod
    def failure(
        cls, code: str, message: str, *, status: JobStatus = JobStatus.FAILED, **meta: Any
    ) -> JobResult:
        return cls(status, [], {**meta, **error_meta(code, message)})

    @property
    def error(self) -> dict[str, str] | None:
        error = self.meta.get("error")
        return error if isinstance(error, dict) else None


@dataclass(frozen=True)
class JobInfo:
    """What GET /jobs/{id} shows: status, times (epoch seconds), timings, error, output count."""

    id: str
    kind: str
    status: JobStatus
    created_at: float
    deadline: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    n_outputs: int
    meta: dict[str, Any]
    owner: str | None = None  # API key id of the creator; not shown by to_dict
    progress: dict[str, int] | None = None  # video jobs: {"frames_done", "frames_total"}
    cancel_requested: bool = False  # a running job was asked to stop (video jobs)

    def visible_to(self, who: str | None) -> bool:
        """Whether the caller (an API key id, None without keys) may see this job."""
        return self.owner is None or self.owner == who

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def timings(self) -> dict[str, float]:
        timings = self.meta.get("timings")
        return dict(timings) if isinstance(timings, dict) else {}

    @property
    def error(self) -> dict[str, str] | None:
        error = self.meta.get("error")
        return dict(error) if isinstance(error, dict) else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view for the API (meta without the timings/error duplicates)."""
        extra = {k: v for k, v in self.meta.items() if k not in ("timings", "error")}
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status.value,
            "created_at": self.created_at,
            "deadline": self.deadline,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "n_outputs": self.n_outputs,
            "timings": self.timings,
            "error": self.error,
            "meta": extra,
            "progress": self.progress,
            "cancel_requested": self.cancel_requested,
        }


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream (`disco:jobs:dead`)."""

    entry_id: str
    job_id: str
    kind: str
    deliveries: int
    reason: str
    failed_at: float


@dataclass(frozen=True)
class WorkerHealth:
    """A live worker as its health key describes it."""

    name: str
    last_seen: float  # epoch seconds of the last heartbeat
    info: dict[str, Any]


# -- serializers -------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays (meta from engines) without importing numpy here
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, bytes | bytearray):
        raise TypeError("bytes do not belong in meta: return them as outputs")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dump_json(obj: Any) -> str:
    """Compact JSON; raises TypeError/ValueError on what JSON cannot hold (NaN included)."""
    return json.dumps(obj, separators=(",", ":"), default=_json_default, allow_nan=False)


def load_json(data: str | bytes | None, default: Any = None) -> Any:
    if data is None or data == b"" or data == "":
        return default
    return json.loads(data)


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def decode_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    """A Redis hash reply (bytes -> bytes) as str -> str."""
    return {_text(k) or "": _text(v) or "" for k, v in fields.items()}


def job_fields(job: JobDef, *, status: JobStatus = JobStatus.QUEUED) -> dict[str, str]:
    """The metadata record of a newly queued job (everything but the payload)."""
    if job.deadline is None:
        raise ValueError("job_fields needs a deadline: enqueue fills in the default")
    return {
        "id": job.id,
        "kind": job.kind,
        "params": dump_json(job.params),
        "created_at": repr(float(job.created_at)),
        "deadline": repr(float(job.deadline)),
        "idem": job.idempotency_key or "",
        "owner": job.owner or "",
        "status": status.value,
        "attempts": "0",
        "n_outputs": "0",
    }


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value else None


def job_from_fields(fields: Mapping[str, str], payload: bytes, *, attempts: int) -> JobDef:
    """The JobDef a worker hands to the batch handler."""
    return JobDef(
        kind=fields["kind"],
        payload=payload,
        params=load_json(fields.get("params"), {}),
        id=fields["id"],
        created_at=float(fields["created_at"]),
        deadline=float(fields["deadline"]),
        idempotency_key=fields.get("idem") or None,
        attempts=attempts,
        owner=fields.get("owner") or None,
    )


def info_from_fields(fields: Mapping[str, str], *, now: float | None = None) -> JobInfo:
    """JobInfo from a job record. A queued job past its deadline reads as expired: no worker will
    start it any more (the worker that sees it next records the expiry)."""
    status = JobStatus(fields["status"])
    meta = load_json(fields.get("meta"), {})
    deadline = float(fields["deadline"])
    now = time.time() if now is None else now
    if status is JobStatus.QUEUED and deadline < now:
        status = JobStatus.EXPIRED
        meta = {**meta, **error_meta(ERROR_EXPIRED, EXPIRED_MESSAGE)}
    return JobInfo(
        id=fields["id"],
        kind=fields["kind"],
        status=status,
        created_at=float(fields["created_at"]),
        deadline=deadline,
        started_at=_float_or_none(fields.get("started_at")),
        finished_at=_float_or_none(fields.get("finished_at")),
        attempts=int(fields.get("attempts") or 0),
        n_outputs=int(fields.get("n_outputs") or 0),
        meta=meta,
        owner=fields.get("owner") or None,
        progress=_progress(fields.get("progress")),
        cancel_requested=bool(fields.get("cancel")),
    )


def _progress(value: str | None) -> dict[str, int] | None:
    """The record's `progress` field, "done/total" (written by the worker's progress call)."""
    if not value:
        return None
    done, _, total = value.partition("/")
    return {"frames_done": int(done), "frames_total": int(total or 0)}


# What `progress()` answers the worker: go on, stop (cancel requested), stop (not ours any more)
PROGRESS_OK, PROGRESS_CANCEL, PROGRESS_SUPERSEDED = "ok", "cancel", "superseded"


EXPIRED_MESSAGE = "the job's deadline passed before a worker could start it"
CANCELLED_MESSAGE = "the job was cancelled before it started"


def dead_letter_message(deliveries: int, reason: str) -> str:
    return (
        f"the job was delivered {deliveries} times without finishing "
        f"(last: {reason}); it was moved to the dead-letter stream"
    )
