"""Queue errors. Only the API knows HTTP: it maps QueueFull -> 429 (with Retry-After),
QueueUnavailable -> 503 and JobNotFound -> 404 in its exception handlers."""

from __future__ import annotations


class QueueError(Exception):
    """Base class of every error the queue layer raises on purpose."""


class QueueFull(QueueError):
    """The backlog bound is reached: try again later (`retry_after_s` is a hint)."""

    def __init__(self, depth: int, limit: int, retry_after_s: int = 1) -> None:
        super().__init__(f"queue is full: {depth} unfinished jobs, limit {limit}")
        self.depth = depth
        self.limit = limit
        self.retry_after_s = retry_after_s


class QueueUnavailable(QueueError):
    """The queue backend cannot be reached (Redis down, connection refused, timeout, closed)."""


class JobNotFound(QueueError, LookupError):
    """No such job, or it expired (finished jobs are kept for the result TTL)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found (unknown or expired)")
        self.job_id = job_id


class BatchSizeMismatch(QueueError, ValueError):
    """A batch handler returned a different number of results than it got jobs."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"batch handler returned {got} results for {expected} jobs")
        self.expected = expected
        self.got = got
