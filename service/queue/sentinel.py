"""`redis+sentinel://` URLs: the queue's Redis found through Redis Sentinel (high availability).

    redis+sentinel://[[user]:password@]host1[:26379][,host2[:26379]...]/service_name[/db]
    rediss+sentinel://...   (TLS to the Redis servers and to the sentinels)

redis-py has no URL form for Sentinel, so this module parses one (the form other clients use:
hosts are sentinels, the first path segment is the monitored master's name, the second the
database) and builds a client with redis-py's `Sentinel(...).master_for(...)`. That client asks
the sentinels for the master's address on every new connection and drops connections to a
demoted master (a READONLY reply becomes a ConnectionError), so after a failover the queue's
next command reaches the new master; the queue maps the errors in between to QueueUnavailable
(503). A password in the URL (or DISCO_REDIS_PASSWORD) is the Redis servers' password; the
sentinels' own AUTH, if any, is DISCO_REDIS_SENTINEL_PASSWORD.

Parsing does not import redis-py, so settings can validate a URL at startup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import redis.asyncio as aioredis

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def is_sentinel_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelURL:
    """Split a `redis+sentinel://` URL; ValueError says what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a sentinel URL (redis+sentinel://...): {url!r}")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    sentinels = tuple(_host_port(h) for h in hostlist.split(",") if h.strip())
    if not sentinels:
        raise ValueError(f"sentinel URL {url!r} names no sentinel host")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError(
            f"sentinel URL {url!r} must end in /service_name or /service_name/db "
            "(the master name the sentinels monitor, e.g. /mymaster/0)"
        )
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"sentinel URL {url!r}: database {segments[1]!r} is not a number")
        db = int(segments[1])
    return SentinelURL(
        sentinels=sentinels,
        service_name=segments[0],
        db=db,
        username=username,
        password=password,
        tls=scheme == "rediss+sentinel",
    )


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"sentinel address {item!r} has no host")
    if port and not port.isdigit():
        raise ValueError(f"sentinel address {item!r}: port {port!r} is not a number")
    return host, int(port) if port else DEFAULT_SENTINEL_PORT


def sentinel_client(
    url: str,
    connection_kwargs: dict[str, Any],
    *,
    password: str | None = None,
    sentinel_password: str | None = None,
    tls: bool = False,
    ca_file: str | None = None,
) -> aioredis.Redis:
    """An asyncio client of the master `url` names, with `connection_kwargs` (timeouts, retry,
    decode_responses, ...) for the Redis connections; the sentinels get the same timeouts."""
    from redis.asyncio.sentinel import Sentinel

    spec = parse_sentinel_url(url)
    tls = tls or spec.tls
    redis_kwargs = dict(connection_kwargs)
    redis_kwargs["db"] = spec.db
    if spec.username:
        redis_kwargs["username"] = spec.username
    if spec.password is not None or password is not None:
        redis_kwargs["password"] = spec.password if spec.password is not None else password
    sentinel_kwargs: dict[str, Any] = {
        k: v for k, v in connection_kwargs.items() if k.startswith("socket_")
    }
    if sentinel_password is not None:
        sentinel_kwargs["password"] = sentinel_password
    if tls:
        for kwargs in (redis_kwargs, sentinel_kwargs):
            kwargs["ssl"] = True
            if ca_file is not None:
                kwargs["ssl_ca_certs"] = ca_file
    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_kwargs)
    # check_connection: PING a fresh connection, so a dead master fails at connect time
    return sentinel.master_for(spec.service_name, check_connection=True, **redis_kwargs)
