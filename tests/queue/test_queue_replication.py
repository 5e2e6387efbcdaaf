"""Redis HA in the queue: `redis+sentinel://` URLs, the bounded WAIT for a replica after XADD,
and the replies of a server changing role mapped to QueueUnavailable (503). Real redis-server
processes (primary + replica); the full failover with sentinels is tests/e2e."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest
from pydantic import ValidationError

from service.queue import JobDef, JobStatus, QueueUnavailable, open_queue
from service.queue.sentinel import SentinelURL, parse_sentinel_url
from service.settings import Settings

WAIT_MS = 150


@pytest.mark.parametrize(
    ("url", "want"),
    [
        (
            "redis+sentinel://s1:26379,s2:26380,s3/mymaster/2",
            SentinelURL((("s1", 26379), ("s2", 26380), ("s3", 26379)), "mymaster", 2),
        ),
        (
            "redis+sentinel://:p%40ss@10.0.0.1/disco",
            SentinelURL((("10.0.0.1", 26379),), "disco", 0, password="p@ss"),
        ),
        (
            "rediss+sentinel://app:pw@[::1]:5000,[fe80::2]/disco/1",
            SentinelURL((("::1", 5000), ("fe80::2", 26379)), "disco", 1, "app", "pw", tls=True),
        ),
    ],
)
def test_sentinel_urls_parse(url, want):
    assert parse_sentinel_url(url) == want
    assert Settings(queue_url=url).queue_backend == "redis"


@pytest.mark.parametrize(
    "bad",
    [
        "redis+sentinel://s1:26379",  # no service name
        "redis+sentinel://s1:26379/",
        "redis+sentinel://s1/mymaster/x",  # db not a number
        "redis+sentinel://s1/mymaster/0/extra",
        "redis+sentinel://s1:port/mymaster",
        "redis+sentinel://:pw@/mymaster",  # no host
    ],
)
def test_bad_sentinel_urls_are_refused_at_startup(bad):
    with pytest.raises(ValueError):
        parse_sentinel_url(bad)
    with pytest.raises(ValidationError):
        Settings(queue_url=bad)


def test_sentinel_client_wiring(monkeypatch):
    from redis.asyncio.sentinel import SentinelConnectionPool

    from service.queue.connections import redis_client

    for name in list(os.environ):
        if name.startswith("DISCO_"):
            monkeypatch.delenv(name)
    s = Settings(redis_password="from-env", redis_sentinel_password="sentinel-pw")
    client = redis_client("redis+sentinel://a:1,b:2/svc/3", s)  # connects lazily
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "svc"
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "from-env"
    assert pool.connection_kwargs["socket_connect_timeout"] == s.redis_connect_timeout_s
    sentinels = pool.sentinel_manager.sentinels
    assert [c.connection_pool.connection_kwargs["port"] for c in sentinels] == [1, 2]
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "sentinel-pw"
    url_pw = redis_client("rediss+sentinel://:url-pw@a/svc", s).connection_pool
    assert url_pw.connection_kwargs["password"] == "url-pw"  # the URL's password wins
    assert url_pw.connection_class.__name__ == "SentinelManagedSSLConnection"


@pytest.fixture
def pair(redis_server_factory):
    """A primary and a replica in sync."""
    import redis

    primary = redis_server_factory()
    replica = redis_server_factory("--replicaof", "127.0.0.1", str(primary.port))
    with redis.Redis(port=replica.port) as r:
        deadline = time.monotonic() + 20
        while r.info("replication")["master_link_status"] != "up":
            assert time.monotonic() < deadline, "replica did not sync"
            time.sleep(0.05)
    with redis.Redis(port=primary.port) as p:  # and the primary counts it online
        while "online" not in str(p.info("replication").get("slave0", {})):
            assert time.monotonic() < deadline, "primary does not see the replica online"
            time.sleep(0.05)
    return primary, replica


def _queue(url: str, wait: str):
    return open_queue(
        url, Settings(queue_url=url, redis_wait_replicas=wait, redis_wait_timeout_ms=WAIT_MS)
    )


async def _timed_enqueue(queue) -> tuple[JobDef, float]:
    t0 = time.perf_counter()
    job = await queue.enqueue(JobDef.create("colorize", b"png"))
    return job, time.perf_counter() - t0


def test_wait_auto_acknowledged_by_the_replica_then_unacknowledged(pair, caplog):
    import redis

    primary, replica = pair

    async def main() -> None:
        queue = _queue(primary.url, "auto")
        try:
            job, _ = await _timed_enqueue(queue)
            assert await queue._replicas_to_wait() == 1  # an online replica: auto waits for it
            assert queue.unreplicated_jobs == 0
            with redis.Redis(port=replica.port) as r:  # on the replica by the time of the 202
                assert r.exists(f"disco:job:{job.id}")
            os.kill(replica.proc.pid, signal.SIGSTOP)  # a replica that stops acknowledging
            try:
                with caplog.at_level(logging.WARNING, "disco.queue"):
                    frozen, took = await _timed_enqueue(queue)
            finally:
                os.kill(replica.proc.pid, signal.SIGCONT)
            assert took >= WAIT_MS / 1000 * 0.9, took  # WAIT was sent and ran out
            assert took < WAIT_MS / 1000 + 2.0, took  # and bounded
            assert queue.unreplicated_jobs == 1
            assert (await queue.info(frozen.id)).status is JobStatus.QUEUED  # still accepted
            assert "replicas acknowledged it" in caplog.text
            await _timed_enqueue(queue)  # the replica is back: acknowledged again
            assert queue.unreplicated_jobs == 1
        finally:
            await queue.close()

    asyncio.run(main())


def test_wait_off_or_no_replica(pair, redis_url):
    primary, replica = pair

    async def main() -> None:
        alone = _queue(redis_url, "auto")  # a Redis without replicas: auto never waits
        off = _queue(primary.url, "0")
        forced = _queue(redis_url, "1")  # asked for a replica that does not exist
        try:
            _, took = await _timed_enqueue(alone)
            assert await alone._replicas_to_wait() == 0 and alone.unreplicated_jobs == 0
            os.kill(replica.proc.pid, signal.SIGSTOP)
            try:
                _, took = await _timed_enqueue(off)  # 0: no WAIT, a frozen replica costs nothing
            finally:
                os.kill(replica.proc.pid, signal.SIGCONT)
            assert took < WAIT_MS / 1000 * 0.9 and off.unreplicated_jobs == 0
            job, took = await _timed_enqueue(forced)
            assert took >= WAIT_MS / 1000 * 0.9 and forced.unreplicated_jobs == 1
            assert await forced.info(job.id) is not None
        finally:
            for q in (alone, off, forced):
                await q.close()

    asyncio.run(main())


def test_a_demoted_master_answers_queue_unavailable(pair):
    """The replies of a role change (READONLY from a replica, UNBLOCKED for a blocked read on a
    master that becomes a replica) are outages (503, retry), not errors (500)."""
    import redis

    primary, replica = pair

    async def main() -> None:
        on_replica = _queue(replica.url, "0")
        on_primary = _queue(primary.url, "0")
        try:
            with pytest.raises(QueueUnavailable):
                await on_replica.enqueue(JobDef.create("colorize", b"png"))
            await on_primary.register("w")
            blocked = asyncio.create_task(on_primary.read("w", 1, 5000))
            await asyncio.sleep(0.3)
            with redis.Redis(port=primary.port) as p:  # demote the primary under the read
                p.replicaof("127.0.0.1", replica.port)
            try:
                with pytest.raises(QueueUnavailable):
                    await asyncio.wait_for(blocked, 5)
            finally:
                with redis.Redis(port=primary.port) as p:
                    p.replicaof("no", "one")
        finally:
            await on_replica.close()
            await on_primary.close()

    asyncio.run(main())


def test_auto_wait_without_permission_for_info_or_wait(redis_url, caplog):
    """An ACL user limited to what the queue needs may lack INFO and WAIT: jobs still go in."""
    import redis

    user, pw = "disco-limited", "limited-pw-0123456789"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{pw}"], keys=["*"], channels=["*"],
        commands=["+@all", "-info", "-wait"],
    )  # fmt: skip
    url = redis_url.replace("redis://", f"redis://{user}:{pw}@")

    async def main() -> None:
        auto, forced = _queue(url, "auto"), _queue(url, "1")
        try:
            with caplog.at_level(logging.WARNING, "disco.queue"):
                job = await auto.enqueue(JobDef.create("colorize", b"png"))
                assert await auto._replicas_to_wait() == 0 and auto.unreplicated_jobs == 0
                job2, took = await _timed_enqueue(forced)  # WAIT refused: no timeout to sit out
            assert took < WAIT_MS / 1000 * 0.9 and forced.unreplicated_jobs == 1
            assert "INFO replication refused" in caplog.text
            assert "WAIT after enqueue failed" in caplog.text
            for q, j in ((auto, job), (forced, job2)):
                assert (await q.info(j.id)).status is JobStatus.QUEUED
        finally:
            await auto.close()
            await forced.close()

    try:
        asyncio.run(main())
    finally:
        admin.acl_deluser(user)
        admin.close()
