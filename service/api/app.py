"""`create_app(settings)`: the FastAPI application, its lifespan and its request middleware."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.routing import Match

from service.engine.base import Engine
from service.monitoring import Monitor
from service.settings import Settings
from service.web import mount_web

from .errors import exception_handlers
from .routes import api_router
from .runtime import Runtime
from .security import install_cors, install_security


def create_app(
    settings: Settings, *, engine: Engine | None = None, monitor: Monitor | None = None
) -> FastAPI:
    """The API. `engine` overrides the one the settings would load (embedded mode, tests)."""
    runtime = Runtime(settings=settings, monitor=monitor or Monitor())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(engine)
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="disco-serve",
        summary="DISCO image colorization: grayscale in, colour out.",
        version="0.1.0",
        lifespan=lifespan,
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
    )
    app.state.runtime = runtime
    app.include_router(api_router)
    mount_web(app)  # the browser UI at / (after the API, so API routes win)
    install_security(app, settings)  # API keys, rate limits: inside `record`, so 401/429 count

    @app.middleware("http")
    async def record(request: Request, call_next) -> Response:
        start = time.perf_counter()
        endpoint = _route_template(app, request)  # before routing rewrites the scope (mounts)
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            endpoint = getattr(request.scope.get("route"), "path", None) or endpoint
            runtime.monitor.requests.labels(endpoint, request.method, str(status)).inc()
            runtime.monitor.request_latency.labels(endpoint).observe(time.perf_counter() - start)
            if status == 429 and not getattr(request.state, "rate_limited", False):
                runtime.monitor.jobs.labels("rejected").inc()

    install_cors(app, settings)  # outermost: preflights and error answers get CORS headers
    return app


def _route_template(app: FastAPI, request: Request) -> str:
    """The matched route's path template (bounded label cardinality), else 'unmatched'.

    Recent FastAPI keeps each included router as one entry of `app.router.routes`, so the routes
    are flattened through `iter_route_contexts` where it exists (the router also records the
    route it picked in the scope, which `record` prefers once the request was routed)."""
    for route in _flat_routes(app):
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return getattr(route, "path", None) or "unmatched"
    return "unmatched"


def _flat_routes(app: FastAPI) -> list[Any]:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are plain entries already
        return list(app.router.routes)
    return list(iter_route_contexts(app.router.routes))
