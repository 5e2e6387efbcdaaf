"""POST /colorize, /colorize/diverse and /anchors: enqueue, then wait (or 202 with Prefer)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from service.params import (
    MAX_ANCHORS,
    MAX_DIVERSE,
    ColorizeParams,
    ImageFormat,
    JobKind,
    OutputSize,
)
from service.pipeline import seed_from_bytes
from service.queue import JobDef, JobStatus

from ..deps import QueueDep, RuntimeDep
from ..errors import ApiError, ErrorBody, error_body
from ..responses import raise_for_job, result_response
from ..security import request_digest, request_key_id, scoped_idempotency_key
from ..uploads import read_upload

router = APIRouter(tags=["colorize"])

IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "anchors": {"type": "integer", "minimum": 1, "maximum": MAX_ANCHORS},
                    "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
                    "count": {"type": "integer", "minimum": 1, "maximum": MAX_DIVERSE},
                    "format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
                    "quality": {"type": "integer", "minimum": 1, "maximum": 100},
                    "size": {"type": "string", "enum": ["original", "model"]},
                    "hints": {"type": "string", "description": "JSON list of anchors"},
                },
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _error(status: int, desc: str) -> dict[str, Any]:
    return {
        "model": ErrorBody,
        "description": desc,
        "content": {"application/json": {"example": error_body("code", "what went wrong")}},
    }


ERRORS = {
    400: _error(400, "Bad options or a corrupt image"),
    413: _error(413, "Upload or image dimensions over the limit"),
    415: _error(415, "Not a supported image"),
    422: _error(422, "Invalid parameters"),
    429: _error(429, "At capacity; see Retry-After"),
    503: _error(503, "Queue unreachable or service not ready"),
    504: _error(504, "The job's deadline passed"),
}
ACCEPTED = {202: {"description": "Accepted (Prefer: respond-async); poll Location"}}

Anchors = Annotated[
    int | None, Query(ge=1, le=MAX_ANCHORS, description="Automatic anchors (default 8).")
]
Seed = Annotated[
    int | None,
    Query(ge=0, le=2**32 - 1, description="k-means seed (default: from the image bytes)."),
]
Format = Annotated[ImageFormat | None, Query(description="Output format (default png).")]
Quality = Annotated[int | None, Query(ge=1, le=100, description="JPEG/WebP quality (default 90).")]
Size = Annotated[OutputSize | None, Query(description="original (default) or model (256x256).")]
Hints = Annotated[str | None, Query(description='JSON list, e.g. [{"token": 18, "ab": [20, 60]}]')]
Timeout = Annotated[float | None, Query(gt=0, description="Deadline in seconds (default 30).")]
Prefer = Annotated[str | None, Header(description="`respond-async`: answer 202 at once.")]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


async def _submit(
    request: Request,
    rt: RuntimeDep,
    queue: QueueDep,
    kind: JobKind,
    timeout_s: float | None,
    prefer: str | None,
    idem: str | None,
) -> Response:
    settings = rt.settings
    payload, form_fields = await read_upload(request, settings)
    raw: dict[str, Any] = {
        k: v for k, v in request.query_params.items() if k in ColorizeParams.model_fields
    }
    raw.update({k: v for k, v in form_fields.items() if k in ColorizeParams.model_fields})
    if kind is not JobKind.diverse:
        raw.pop("count", None)
    elif "count" not in raw:
        raw["count"] = 3
    try:
        params = ColorizeParams.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ApiError(400, "invalid_params", f"{where}: {err['msg']}") from None
    if params.hints and kind is JobKind.diverse:
        raise ApiError(400, "invalid_params", "hints fix the anchor colours: use /colorize")
    if params.seed is None:  # identical requests -> identical results, on any worker
        params = params.model_copy(update={"seed": seed_from_bytes(payload)})
    timeout = min(timeout_s or settings.job_timeout_s, settings.max_job_timeout_s)
    job_params = params.to_job()
    digest = request_digest(kind.value, job_params, payload)
    job = JobDef.create(
        kind.value,
        payload,
        params=job_params,
        timeout_s=timeout,
        idempotency_key=scoped_idempotency_key(request, idem, digest),
        owner=request_key_id(request),
    )
    job = await queue.enqueue(job)
    rt.monitor.jobs.labels("accepted").inc()
    if prefer and "respond-async" in prefer.lower():
        return JSONResponse(
            {"id": job.id, "status": "queued", "links": {"self": f"/jobs/{job.id}"}},
            status_code=202,
            headers={"Location": f"/jobs/{job.id}", "X-Request-Id": job.id},
        )
    return await _wait_for_result(request, rt, queue, job, timeout)


async def _disconnected(request: Request) -> None:
    """Resolves when the client goes away (the body is already consumed)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _wait_for_result(
    request: Request, rt: RuntimeDep, queue: QueueDep, job: JobDef, timeout: float
) -> Response:
    remaining = max(0.0, (job.deadline or time.time() + timeout) - time.time())
    waiter = asyncio.create_task(queue.wait(job.id, remaining + 2.0))
    watcher = asyncio.create_task(_disconnected(request))
    try:
        done, _ = await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, watcher):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    if waiter not in done:  # the client left: drop the job unless a worker already has it
        if await queue.cancel(job.id):
            rt.monitor.jobs.labels("cancelled").inc()
        return Response(status_code=499)
    info = waiter.result()
    if info.status is JobStatus.DONE:
        result = await queue.result(job.id)
        if result is not None:
            rt.monitor.jobs.labels("done").inc()
            return result_response(info, result)
    if not info.terminal:
        rt.monitor.jobs.labels("expired").inc()
        raise ApiError(
            504,
            "timeout",
            f"job {job.id} did not finish within {timeout:g} s; poll /jobs/{job.id}",
            job_id=job.id,
        )
    rt.monitor.jobs.labels(
        "expired" if info.status is JobStatus.EXPIRED else info.status.value
    ).inc()
    raise_for_job(info)
    raise ApiError(500, "result_missing", f"job {job.id} finished but its result is gone")


@router.post(
    "/colorize",
    responses={
        200: {
            "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
            "description": "The colorized image",
        },
        **ACCEPTED,
        **ERRORS,
    },
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def colorize(
    request: Request,
    rt: RuntimeDep,
    queue: QueueDep,
    anchors: Anchors = None,
    seed: Seed = None,
    format: Format = None,
    quality: Quality = None,
    size: Size = None,
    hints: Hints = None,
    timeout_s: Timeout = None,
    prefer: Prefer = None,
    idempotency_key: IdemKey = None,
) -> Response:
    """Colorize one image: the best result, at the input's resolution by default."""
    return await _submit(request, rt, queue, JobKind.colorize, timeout_s, prefer, idempotency_key)


@router.post(
    "/colorize/diverse",
    responses={200: {"description": "K results from one encoder pass"}, **ACCEPTED, **ERRORS},
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def colorize_diverse(
    request: Request,
    rt: RuntimeDep,
    queue: QueueDep,
    count: Annotated[int | None, Query(ge=1, le=MAX_DIVERSE)] = None,
    anchors: Anchors = None,
    seed: Seed = None,
    format: Format = None,
    quality: Quality = None,
    size: Size = None,
    timeout_s: Timeout = None,
    prefer: Prefer = None,
    idempotency_key: IdemKey = None,
) -> Response:
    """Several distinct plausible colorizations (`count`, default 3) sharing ONE encoder pass:
    `{"results": [{"index", "image" (base64), "anchors"}]}`."""
    return await _submit(request, rt, queue, JobKind.diverse, timeout_s, prefer, idempotency_key)


@router.post(
    "/anchors",
    responses={200: {"description": "The automatic anchors"}, **ACCEPTED, **ERRORS},
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def anchors_(
    request: Request,
    rt: RuntimeDep,
    queue: QueueDep,
    anchors: Anchors = None,
    seed: Seed = None,
    timeout_s: Timeout = None,
    prefer: Prefer = None,
    idempotency_key: IdemKey = None,
) -> Response:
    """The automatic anchors of an image (token, x, y, superpixel size, top-5 candidate colours
    with probabilities), to edit and send back to /colorize as `hints`."""
    return await _submit(request, rt, queue, JobKind.anchors, timeout_s, prefer, idempotency_key)
