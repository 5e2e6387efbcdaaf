"""Settings: env vars with the DISCO_ prefix, CLI overrides, validators, secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("DISCO_"):
            monkeypatch.delenv(name)


def test_defaults():
    s = Settings()
    assert s.queue_url == "memory://" and s.queue_backend == "memory"
    assert (s.max_batch, s.max_wait_ms, s.max_wait_s) == (8, 10.0, 0.01)
    assert (s.result_ttl_s, s.job_timeout_s, s.max_deliveries, s.max_backlog) == (600, 30, 3, 64)
    assert s.max_upload_bytes == 20 * 1024 * 1024 and s.max_pixels == 40_000_000
    assert s.engine == "auto" and s.redis_password is None


def test_env_vars_and_overrides(monkeypatch):
    monkeypatch.setenv("DISCO_QUEUE_URL", "redis://cache:6379/2")
    monkeypatch.setenv("DISCO_MAX_BATCH", "16")
    monkeypatch.setenv("DISCO_REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("DISCO_MAX_WAIT_MS", "")  # empty = unset
    monkeypatch.setenv("OTHER_MAX_BATCH", "99")
    s = Settings()
    assert s.queue_backend == "redis" and s.max_batch == 16 and s.max_wait_ms == 10.0
    assert s.redis_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    # CLI flags win over the environment; None means "flag not given"
    s = Settings.with_overrides(max_batch=4, queue_url=None)
    assert s.max_batch == 4 and s.queue_url == "redis://cache:6379/2"


@pytest.mark.parametrize(
    "bad",
    [
        {"queue_url": "amqp://x"},
        {"max_batch": 0},
        {"max_wait_ms": -1},
        {"port": 70000},
        {"max_deliveries": 0},
        {"job_timeout_s": 0},
        {"job_timeout_s": 400, "max_job_timeout_s": 300},
        {"redis_tls_ca_file": "/does/not/exist.pem"},
        {"engine": "tensorflow"},
        {"queue_url": "redis+sentinel://s1:26379"},  # no master name
        {"redis_wait_replicas": "always"},
        {"redis_wait_timeout_ms": 0},  # WAIT 0 would block forever
    ],
)
def test_validators(bad):
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_open_queue_dispatches_on_the_url_and_wires_the_settings():
    from service.queue import JobQueue, JobSource, MemoryQueue, Worker, open_queue
    from service.queue.redis_streams import RedisStreamsQueue

    s = Settings(max_backlog=5, result_ttl_s=70, job_timeout_s=12, stream_maxlen=9)
    memory = open_queue("memory://", s)
    assert isinstance(memory, MemoryQueue)
    assert (memory.max_backlog, memory.result_ttl_s, memory.default_timeout_s) == (5, 70, 12)
    redis_queue = open_queue("rediss://:pw@cache.example:6380/3", s)  # connects lazily
    assert isinstance(redis_queue, RedisStreamsQueue) and redis_queue.dead_letter_maxlen == 9
    kwargs = redis_queue.client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "cache.example", 6380, 3, "pw",
    )  # fmt: skip
    for queue in (memory, redis_queue):
        assert isinstance(queue, JobQueue) and isinstance(queue, JobSource)
    with pytest.raises(ValueError, match="unsupported queue URL"):
        open_queue("amqp://x", s)

    worker = Worker.from_settings(
        queue=memory, handler=None, settings=s.model_copy(update={"max_batch": 3}), name="w"
    )
    assert (worker.max_batch, worker.name, worker.max_deliveries) == (3, "w", 3)


def test_redis_password_from_settings_unless_the_url_has_one(monkeypatch):
    from service.queue.connections import redis_client

    monkeypatch.setenv("DISCO_REDIS_PASSWORD", "from-env")
    s = Settings(redis_tls=True)
    client = redis_client("redis://cache:6379/0", s)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["password"] == "from-env"
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"  # redis_tls
    assert (
        redis_client("redis://:url-pw@cache/0", s).connection_pool.connection_kwargs["password"]
        == "url-pw"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache/1", "rediss://app:***@cache/1"),
        (
            "redis+sentinel://:s3cret@s1:26379,s2:26379/m/0",
            "redis+sentinel://:***@s1:26379,s2:26379/m/0",
        ),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("memory://", "memory://"),
    ],
)
def test_banners_redact_the_queue_password(url, shown):
    from service.queue.connections import redact_url

    assert redact_url(url) == shown


def test_a_standalone_worker_refuses_the_memory_queue():
    import asyncio

    from service.queue import run_worker

    with pytest.raises(ValueError, match="shared queue"):
        asyncio.run(run_worker(Settings(), handler=None))
