"""Security defaults: optional API keys, per-key rate limits, CORS, a few response headers.

Everything here is off until configured (see SECURITY.md and `service/settings.py`):

* API keys (`DISCO_API_KEYS`, `DISCO_API_KEYS_FILE`): when set, every request needs
  `X-API-Key: <key>` or `Authorization: Bearer <key>` except the public paths (health probes,
  the web UI's page and static files, and `/metrics` with `DISCO_METRICS_AUTH=false`). Keys are
  kept as SHA-256 digests and looked up by digest, so no comparison leaks a key's prefix; a key
  is named in logs and state only by its `key_id` (a digest prefix).
* Rate limits (`DISCO_RATE_LIMIT_PER_MIN`): one token bucket per API key (per client address
  without keys), in process memory: each API replica enforces the limit on its own.
* CORS (`DISCO_CORS_ORIGINS`): Starlette's `CORSMiddleware`, only when origins are listed.
* Every response gets `X-Content-Type-Options: nosniff` (results are user-derived bytes).

`install_security(app, settings)` goes *inside* the request-metrics middleware (so 401 and 429
are counted) and `install_cors(app, settings)` outside everything (preflights need no key).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.settings import Settings

from .errors import error_response

API_KEY_HEADER = "X-API-Key"
MIN_KEY_CHARS = 16
# Health probes and the web UI's page are public; static-file mounts are found at request time.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})
PUBLIC_PREFIXES = ("/v2/health/",)
MAX_BUCKETS = 10_000  # most rate-limit buckets kept (LRU): bounded memory under many clients
CORS_HEADERS = ["X-API-Key", "Authorization", "Content-Type", "Idempotency-Key", "Prefer"]
CORS_EXPOSE = ["Location", "Retry-After", "X-Request-Id", "Server-Timing"]
_NOSNIFF = (b"x-content-type-options", b"nosniff")


def key_id(key: str) -> str:
    """A stable, non-secret name for an API key (logs, rate-limit buckets, namespaces)."""
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys, as SHA-256 digest -> key id."""

    digests: dict[bytes, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys | None:
        """The configured keys, or None when API keys are off. Raises ValueError on a bad key."""
        raw: list[str] = []
        if settings.api_keys is not None:
            raw += settings.api_keys.get_secret_value().split(",")
        if settings.api_keys_file is not None:
            for line in settings.api_keys_file.read_text().splitlines():
                if not line.lstrip().startswith("#"):
                    raw.append(line)
        keys = [k.strip() for k in raw if k.strip()]
        if not keys:
            if settings.api_keys is not None or settings.api_keys_file is not None:
                raise ValueError("DISCO_API_KEYS / DISCO_API_KEYS_FILE are set but hold no key")
            return None
        for k in keys:
            if len(k) < MIN_KEY_CHARS or not k.isascii() or not k.isprintable() or " " in k:
                raise ValueError(
                    f"API key {key_id(k)} is not {MIN_KEY_CHARS}+ printable ASCII characters "
                    "without spaces (generate one with `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'`)"
                )
        return cls({hashlib.sha256(k.encode()).digest(): key_id(k) for k in keys})

    def identify(self, presented: str) -> str | None:
        """The key id of a presented key, or None if it is not one of ours."""
        return self.digests.get(hashlib.sha256(presented.encode()).digest())


@dataclass
class TokenBuckets:
    """One token bucket per client: `rate_per_s` tokens a second, at most `burst` stored."""

    rate_per_s: float
    burst: float
    max_entries: int = MAX_BUCKETS
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenBuckets | None:
        per_min = settings.rate_limit_per_min
        if per_min <= 0:
            return None
        return cls(rate_per_s=per_min / 60.0, burst=float(settings.rate_limit_burst or per_min))

    def take(self, who: str) -> float:
        """Spend one token: 0.0 if allowed, else the seconds until a token is available."""
        now = self.clock()
        tokens, last = self._buckets.pop(who, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[who] = (tokens, now)
        while len(self._buckets) > self.max_entries:  # forget the least recently seen client
            self._buckets.popitem(last=False)
        return wait


def request_key_id(request: Request) -> str | None:
    """The id of the API key the request was authenticated with (None with keys off)."""
    return request.scope.get("state", {}).get("api_key_id")


def request_digest(kind: str, params: Mapping[str, Any], payload: bytes) -> str:
    """What a request asks for (endpoint, options, image), as a short hex digest."""
    h = hashlib.sha256(kind.encode() + b"\0")
    h.update(json.dumps(params, sort_keys=True, separators=(",", ":")).encode() + b"\0")
    h.update(payload)
    return h.hexdigest()[:32]


def scoped_idempotency_key(request: Request, key: str | None, digest: str) -> str | None:
    """The queue's idempotency key for a client's `Idempotency-Key`: namespaced per API key (two
    callers never share a job) and per request (`request_digest`: the same key sent with another
    image, options or endpoint starts a new job instead of answering with the first one)."""
    if key is None:
        return None
    scoped = f"{request_key_id(request) or '-'}:{digest}:{key}"
    if len(scoped) > 255:  # keep within the queue's key limit, still unique
        scoped = (
            f"{request_key_id(request) or '-'}:{digest}:#{hashlib.sha256(key.encode()).hexdigest()}"
        )
    return scoped


class SecurityMiddleware:
    """Pure ASGI: nosniff on every response, then API-key check, then the rate limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: ApiKeys | None,
        buckets: TokenBuckets | None,
        metrics_public: bool,
    ) -> None:
        self.app = app
        self.keys = keys
        self.buckets = buckets
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != _NOSNIFF[0]]
                message = {**message, "headers": [*headers, _NOSNIFF]}
            await send(message)

        if (self.keys is None and self.buckets is None) or self._public(scope):
            await self.app(scope, receive, send_nosniff)
            return
        state = scope.setdefault("state", {})
        who: str | None = None
        if self.keys is not None:
            presented = _presented_key(scope)
            if presented is None:
                await _reject(scope, receive, send_nosniff, 401, "missing_api_key",
                              f"this endpoint needs an API key in the {API_KEY_HEADER} header "
                              "(or Authorization: Bearer)")  # fmt: skip
                return
            who = self.keys.identify(presented)
            if who is None:
                await _reject(scope, receive, send_nosniff, 401, "invalid_api_key",
                              "the API key is not valid")  # fmt: skip
                return
            state["api_key_id"] = who
        if self.buckets is not None:
            client = scope.get("client")
            who = who or (f"addr:{client[0]}" if client else "addr:?")
            wait = self.buckets.take(who)
            if wait > 0:
                state["rate_limited"] = True
                retry = max(1, math.ceil(wait))
                await _reject(scope, receive, send_nosniff, 429, "rate_limited",
                              f"rate limit exceeded; retry in {retry} s",
                              {"Retry-After": str(retry)})  # fmt: skip
                return
        await self.app(scope, receive, send_nosniff)

    def _public(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        if path == "/metrics":
            return self.metrics_public
        app = scope.get("app")
        for route in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = route.matches(scope)
            if match is Match.FULL:  # the route that will answer: public if it is static files
                return isinstance(route, Mount) and isinstance(route.app, StaticFiles)
        return False


def _presented_key(scope: Scope) -> str | None:
    key = None
    for name, value in scope.get("headers", []):
        if name == b"x-api-key":
            key = value.decode("latin-1").strip()
        elif name == b"authorization" and key is None:
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                key = token.strip()
    return key or None


async def _reject(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="disco-serve"'
    await error_response(status, code, message, headers)(scope, receive, send)


def install_security(app: FastAPI, settings: Settings) -> None:
    """API keys + rate limits (+ nosniff). Add it before the metrics middleware (inner)."""
    keys = ApiKeys.from_settings(settings)
    buckets = TokenBuckets.from_settings(settings)
    app.add_middleware(
        SecurityMiddleware,
        keys=keys,
        buckets=buckets,
        metrics_public=not settings.metrics_auth,
    )
    if keys is not None or buckets is not None:
        _document(app, keys is not None, buckets is not None, not settings.metrics_auth)


def install_cors(app: FastAPI, settings: Settings) -> None:
    """CORS only for the listed origins; add it last (outermost). Off when none are listed."""
    origins = settings.cors_origin_list
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=CORS_HEADERS,
        expose_headers=CORS_EXPOSE,
        allow_credentials=False,
        max_age=600,
    )


def _document(app: FastAPI, keys: bool, limits: bool, metrics_public: bool) -> None:
    """Declare the API-key schemes and the 401/429 answers in the OpenAPI document."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {})
        if keys:
            components.setdefault("securitySchemes", {}).update({
                "APIKeyHeader": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
                "BearerKey": {"type": "http", "scheme": "bearer"},
            })  # fmt: skip
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for path, operations in schema.get("paths", {}).items():
            if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
                continue
            if path == "/metrics" and metrics_public:
                continue
            for op in operations.values():
                responses = op.setdefault("responses", {})
                if keys:
                    op["security"] = [{"APIKeyHeader": []}, {"BearerKey": []}]
                    responses.setdefault(
                        "401", {"description": "Missing or invalid API key", "content": error}
                    )
                if limits:
                    limited = {"description": "Rate limit; see Retry-After", "content": error}
                    responses.setdefault("429", limited)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "ApiKeys",
    "SecurityMiddleware",
    "TokenBuckets",
    "install_cors",
    "install_security",
    "key_id",
    "request_digest",
    "request_key_id",
    "scoped_idempotency_key",
]
