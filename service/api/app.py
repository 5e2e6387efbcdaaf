"""`create_app(settings)`: the FastAPI application, its lifespan and its request middleware."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from starlette.routing import Match

from service.engine.base import Engine
from service.monitoring import Monitor
from service.settings import Settings

from .errors import exception_handlers
from .routes import api_router
from .runtime import Runtime


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

    @app.middleware("http")
    async def record(request: Request, call_next) -> Response:
        start = time.perf_counter()
        endpoint = _route_template(app, request)
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            runtime.monitor.requests.labels(endpoint, request.method, str(status)).inc()
            runtime.monitor.request_latency.labels(endpoint).observe(time.perf_counter() - start)
            if status == 429:
                runtime.monitor.jobs.labels("rejected").inc()

    return app


def _route_template(app: FastAPI, request: Request) -> str:
    """The matched route's path template (bounded label cardinality), else 'unmatched'."""
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return getattr(route, "path", "unmatched")
    return "unmatched"
