"""Redis key names: one prefix per kind of key, the job id appended (arq `constants.py` style).

Every key below carries a TTL except the job stream itself, whose length is bounded by the
backlog limit because finished entries are acknowledged and deleted (XACK + XDEL).
"""

from __future__ import annotations

STREAM_KEY = "disco:jobs"  # stream of unfinished jobs, entries are {"job": <id>}
GROUP_NAME = "disco:workers"  # the consumer group every worker reads through
DEAD_LETTER_STREAM_KEY = "disco:jobs:dead"  # jobs that exhausted their deliveries (MAXLEN ~)
DONE_CHANNEL = "disco:done"  # pub/sub: a job id is published when that job reaches a final state

JOB_KEY_PREFIX = "disco:job:"  # hash: status, kind, params, times, meta (TTL)
PAYLOAD_KEY_PREFIX = "disco:payload:"  # string: the uploaded bytes, deleted once the job ends
RESULT_KEY_PREFIX = "disco:result:"  # list: the encoded outputs of a done job (TTL)
IDEMPOTENCY_KEY_PREFIX = "disco:idem:"  # string: Idempotency-Key -> job id (TTL = the job's)
WORKER_KEY_PREFIX = "disco:worker:"  # string: JSON health record of a live worker (TTL)
WORKER_INDEX_KEY = "disco:worker-index"  # sorted set: worker name -> last heartbeat (TTL)


def job_key(job_id: str) -> str:
    return JOB_KEY_PREFIX + job_id


def payload_key(job_id: str) -> str:
    return PAYLOAD_KEY_PREFIX + job_id


def result_key(job_id: str) -> str:
    return RESULT_KEY_PREFIX + job_id


def result_staging_key(job_id: str, consumer: str) -> str:
    """Where a worker writes outputs before the completion script moves them into place."""
    return f"{RESULT_KEY_PREFIX}{job_id}:staging:{consumer}"


def idempotency_key(key: str) -> str:
    return IDEMPOTENCY_KEY_PREFIX + key


def worker_key(name: str) -> str:
    return WORKER_KEY_PREFIX + name
