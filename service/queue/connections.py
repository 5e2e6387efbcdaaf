"""Opening a queue from its URL: `memory://`, `redis://HOST:PORT/DB`, `rediss://...` (TLS) or
`redis+sentinel://S1:26379,S2:26379,S3:26379/SERVICE/DB` (Redis Sentinel, see `sentinel.py`).

    queue = open_queue(settings.queue_url, settings)   # in the lifespan / worker main
    ...
    await queue.close()

The Redis client fails fast when Redis is down (short connect timeout, one quick retry), so the
API answers 503 instead of hanging; it reconnects by itself on the next command once Redis is
back (with Sentinel: on the new master after a failover), so nothing needs recreating.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .base import Queue
from .memory import MemoryQueue
from .sentinel import SENTINEL_SCHEMES, sentinel_client

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from service.settings import Settings


def redact_url(url: str) -> str:
    """`url` with its password (if any) replaced by ***, for logs and banners."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _connection_kwargs(settings: Settings) -> dict[str, Any]:
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    return {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_keepalive": True,
        "health_check_interval": 30,
        # one quick retry for a dropped connection, then QueueUnavailable (503), no hanging
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1),
        "decode_responses": False,  # payloads and outputs are raw bytes
        "client_name": "disco",
    }


def redis_client(url: str, settings: Settings) -> aioredis.Redis:
    """A redis-py asyncio client for `url`, with the password/TLS/timeout settings applied."""
    import redis.asyncio as aioredis

    parts = urlsplit(url)
    kwargs = _connection_kwargs(settings)
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    ca_file = str(settings.redis_tls_ca_file) if settings.redis_tls_ca_file else None
    if parts.scheme.lower() in SENTINEL_SCHEMES:
        sentinel_pw = settings.redis_sentinel_password
        return sentinel_client(
            url,
            kwargs,
            password=password,
            sentinel_password=sentinel_pw.get_secret_value() if sentinel_pw else None,
            tls=settings.redis_tls,
            ca_file=ca_file,
        )
    if settings.redis_tls and parts.scheme == "redis":
        url = urlunsplit(parts._replace(scheme="rediss"))
    if password is not None and not parts.password:
        kwargs["password"] = password
    if urlsplit(url).scheme == "rediss" and ca_file is not None:
        kwargs["ssl_ca_certs"] = ca_file
    return aioredis.Redis.from_url(url, **kwargs)


def open_queue(url: str, settings: Settings) -> Queue:
    """The queue behind `url`, configured from `settings` (backlog, TTLs, default timeout)."""
    scheme = urlsplit(url).scheme.lower()
    common: dict[str, Any] = {
        "max_backlog": settings.max_backlog,
        "result_ttl_s": settings.result_ttl_s,
        "default_timeout_s": settings.job_timeout_s,
        "retry_after_s": settings.retry_after_s,
        "dead_letter_maxlen": settings.stream_maxlen,
    }
    if scheme == "memory":
        return MemoryQueue(**common)
    if scheme in ("redis", "rediss", *SENTINEL_SCHEMES):
        from .redis_streams import RedisStreamsQueue

        return RedisStreamsQueue(
            redis_client(url, settings),
            wait_replicas=settings.wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
            **common,
        )
    raise ValueError(
        f"unsupported queue URL {url!r}: use memory://, redis://, rediss:// or redis+sentinel://"
    )
