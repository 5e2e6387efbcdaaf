"""Opening a queue from its URL: `memory://`, `redis://HOST:PORT/DB` or `rediss://...` (TLS).

    queue = open_queue(settings.queue_url, settings)   # in the lifespan / worker main
    ...
    await queue.close()

The Redis client fails fast when Redis is down (short connect timeout, one quick retry), so the
API answers 503 instead of hanging; it reconnects by itself on the next command once Redis is
back, so nothing needs recreating.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .base import Queue
from .memory import MemoryQueue

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from service.settings import Settings


def redis_client(url: str, settings: Settings) -> aioredis.Redis:
    """A redis-py asyncio client for `url`, with the password/TLS/timeout settings applied."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    parts = urlsplit(url)
    if settings.redis_tls and parts.scheme == "redis":
        url = urlunsplit(parts._replace(scheme="rediss"))
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_keepalive": True,
        "health_check_interval": 30,
        # one quick retry for a dropped connection, then QueueUnavailable (503), no hanging
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1),
        "decode_responses": False,  # payloads and outputs are raw bytes
        "client_name": "disco",
    }
    if settings.redis_password is not None and not parts.password:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if urlsplit(url).scheme == "rediss" and settings.redis_tls_ca_file is not None:
        kwargs["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
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
    if scheme in ("redis", "rediss"):
        from .redis_streams import RedisStreamsQueue

        return RedisStreamsQueue(redis_client(url, settings), **common)
    raise ValueError(f"unsupported queue URL {url!r}: use memory://, redis:// or rediss://")
