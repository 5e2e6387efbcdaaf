"""Liveness, readiness (model warmed up, queue reachable, a worker alive) and /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.queue import QueueError

from ..deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
@router.get("/v2/health/live", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Alive: the process answers (restart it if not)."""
    return {"status": "ok"}


async def readiness(rt: RuntimeDep) -> tuple[bool, dict[str, Any]]:
    """(ready, checks); with a shared queue it also takes the model a live worker serves."""
    checks: dict[str, Any] = {}
    if rt.embedded:
        checks["model"] = "ok" if rt.warmed_up else (rt.startup_error or "loading")
    try:
        if rt.queue is None:
            raise QueueError("not started")
        await rt.queue.ping()
        checks["queue"] = "ok"
        if rt.embedded:
            alive = rt.worker_alive
        else:
            workers = await rt.queue.workers()
            alive = len(workers) > 0
            served = [w.info["model"] for w in workers if w.info.get("model")]
            if served:  # the workers load the model, not the API
                rt.model = served[0]
        checks["workers"] = "ok" if alive else "no live worker"
    except (QueueError, OSError) as e:
        checks["queue"] = f"unreachable: {e}"
    ok = all(v == "ok" for v in checks.values()) and "workers" in checks
    rt.monitor.ready.set(1 if ok else 0)
    return ok, checks


@router.get("/readyz", responses={503: {"description": "Not ready (see checks)"}})
@router.get("/v2/health/ready", include_in_schema=False)
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """Ready: model loaded and warmed up (or a worker alive), queue reachable; else 503."""
    ok, checks = await readiness(rt)
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks, "model": rt.model},
        status_code=200 if ok else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
async def metrics(rt: RuntimeDep) -> Response:
    """Prometheus exposition (every metric is documented in the README)."""
    if rt.queue is not None:
        try:
            rt.monitor.queue_depth.set(await rt.queue.depth())
            rt.monitor.workers_alive.set(len(await rt.queue.workers()))
        except (QueueError, OSError):
            pass  # keep the last values; readiness reports the outage
    return Response(generate_latest(rt.monitor.registry), media_type=CONTENT_TYPE_LATEST)
