"""Turning a finished job into the HTTP response a client asked for."""

from __future__ import annotations

import base64
from typing import Any

from fastapi.responses import JSONResponse, Response

from service.params import JobKind
from service.queue import JobInfo, JobResult, JobStatus

from .errors import JOB_ERROR_STATUS, ApiError


def server_timing(timings: dict[str, float]) -> str:
    """`Server-Timing: queue;dur=…, compute;dur=…, encode;dur=…` (milliseconds)."""
    parts = []
    for name, key in (
        ("queue", "queue_s"),
        ("decode", "decode_s"),
        ("compute", "compute_s"),
        ("encode", "encode_s"),
    ):
        if key in timings:
            parts.append(f"{name};dur={1000 * float(timings[key]):.1f}")
    return ", ".join(parts)


def raise_for_job(info: JobInfo) -> None:
    """A job that ended without a result -> the matching HTTP error."""
    if info.status is JobStatus.DONE:
        return
    if not info.terminal:
        raise ApiError(
            409,
            "not_ready",
            f"job {info.id} is {info.status.value}",
            {"Retry-After": "1"},
            job_id=info.id,
            job_status=info.status.value,
        )
    err = info.error or {"code": info.status.value, "message": f"job {info.status.value}"}
    status = JOB_ERROR_STATUS.get(err["code"], 504 if info.status is JobStatus.EXPIRED else 500)
    raise ApiError(status, err["code"], err["message"], job_id=info.id)


def _headers(info: JobInfo, result: JobResult) -> dict[str, str]:
    headers = {"X-Request-Id": info.id}
    timing = server_timing(result.meta.get("timings", {}))
    if timing:
        headers["Server-Timing"] = timing
    return headers


def result_response(info: JobInfo, result: JobResult, index: int | None = None) -> Response:
    """Single results as image bytes; diverse and anchors results as JSON."""
    meta = result.meta
    headers = _headers(info, result)
    if info.kind == JobKind.anchors:
        body = {
            "id": info.id,
            "width": meta.get("width"),
            "height": meta.get("height"),
            "anchors": meta.get("anchors", []),
        }
        return JSONResponse(body, headers=headers)
    ctype = meta.get("content_type", "application/octet-stream")
    if info.kind in (JobKind.colorize, JobKind.video) or index is not None:
        k = index or 0
        if not 0 <= k < len(result.outputs):
            raise ApiError(404, "not_found", f"job {info.id} has {len(result.outputs)} results")
        if info.kind == JobKind.video:
            headers["Content-Disposition"] = f'inline; filename="{info.id}.mp4"'
        return Response(result.outputs[k], media_type=ctype, headers=headers)
    return JSONResponse(diverse_body(info, result), headers=headers)


def diverse_body(info: JobInfo, result: JobResult) -> dict[str, Any]:
    anchors = result.meta.get("anchors", [])
    return {
        "id": info.id,
        "content_type": result.meta.get("content_type"),
        "results": [
            {
                "index": k,
                "image": base64.b64encode(blob).decode("ascii"),
                "anchors": anchors[k] if k < len(anchors) else [],
            }
            for k, blob in enumerate(result.outputs)
        ],
    }
