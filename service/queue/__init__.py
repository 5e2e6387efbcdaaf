"""The job queue and the batching worker (arq's split: producer, consumer, job model).

* `jobs`: `JobStatus`, `JobDef`, `JobResult`, `JobInfo` and their serializers;
* `base`: the `JobQueue` (API side) and `JobSource` (worker side) protocols;
* `memory`: `MemoryQueue`, `memory://`, for the embedded single-process default;
* `redis_streams` (+ `redis_scripts`): `RedisStreamsQueue`, `redis://` / `rediss://`;
* `connections`: `open_queue(url, settings)`;
* `worker`: `Worker`, the batching consumer loop;
* `constants`: Redis key names; `errors`: `QueueFull`, `QueueUnavailable`, `JobNotFound`.

Importing this package never touches Redis (redis-py is imported lazily by `open_queue`).
"""

from .base import Delivery, JobQueue, JobSource, Queue
from .connections import open_queue
from .errors import BatchSizeMismatch, JobNotFound, QueueError, QueueFull, QueueUnavailable
from .jobs import DeadLetter, JobDef, JobInfo, JobResult, JobStatus, WorkerHealth
from .memory import MemoryQueue
from .worker import BatchHandler, BatchReport, Worker, WorkerStats, run_worker

__all__ = [
    "BatchHandler",
    "BatchReport",
    "BatchSizeMismatch",
    "DeadLetter",
    "Delivery",
    "JobDef",
    "JobInfo",
    "JobNotFound",
    "JobQueue",
    "JobResult",
    "JobSource",
    "JobStatus",
    "MemoryQueue",
    "Queue",
    "QueueError",
    "QueueFull",
    "QueueUnavailable",
    "Worker",
    "WorkerHealth",
    "WorkerStats",
    "open_queue",
    "run_worker",
]
