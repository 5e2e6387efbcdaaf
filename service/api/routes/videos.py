"""POST /videos/colorize: an asynchronous video job (202 + Location: /jobs/{id}).

Admission before any frame is decoded: the byte count (declared and streamed), then the
container header (PyAV: streams, size, duration, frame count) against the video limits. The
clip then travels as the job's payload (a Redis string with the job's TTL, deleted when the job
ends; in memory in embedded mode) to a worker, which decodes, colorizes frames in engine batches
and stores the H.264 MP4 as the job's one output. Progress, cancel and download: /jobs/{id}.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.params import MAX_ANCHORS, JobKind
from service.pipeline import seed_from_bytes
from service.queue import JobDef
from service.video.job import VideoParams
from service.video.probe import VideoRejected, check_limits, probe_bytes

from ..deps import QueueDep, RuntimeDep
from ..errors import ApiError
from ..security import request_digest, request_key_id, scoped_idempotency_key
from ..uploads import read_body
from .colorize import ERRORS, Hints

router = APIRouter(tags=["videos"])

VIDEO_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["video"],
                "properties": {
                    "video": {"type": "string", "format": "binary"},
                    "anchors": {"type": "integer", "minimum": 1, "maximum": MAX_ANCHORS},
                    "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
                    "hints": {"type": "string", "description": "JSON list of first-frame anchors"},
                },
            }
        },
        "video/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


@router.post(
    "/videos/colorize",
    status_code=202,
    responses={
        202: {"description": "Accepted; poll Location (/jobs/{id}) for frames done / total"},
        **{k: v for k, v in ERRORS.items() if k != 504},
    },
    openapi_extra={"requestBody": VIDEO_BODY},
)
async def colorize_video(
    request: Request,
    rt: RuntimeDep,
    queue: QueueDep,
    anchors: Annotated[int | None, Query(ge=1, le=MAX_ANCHORS)] = None,
    seed: Annotated[int | None, Query(ge=0, le=2**32 - 1)] = None,
    hints: Hints = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> JSONResponse:
    """Colorize a clip (H.264 MP4 out, same frame rate, size and audio): anchors are chosen once
    per shot and tracked by optical flow, so colours stay put; `hints` (as for /colorize) set
    the first shot's anchors instead of k-means. Always asynchronous."""
    s = rt.settings
    payload, form_fields = await read_body(request, s.max_video_upload_bytes, "video", "video")
    try:
        info = await asyncio.to_thread(probe_bytes, payload)
        check_limits(
            info,
            max_seconds=s.max_video_seconds,
            max_frames=s.max_video_frames,
            max_pixel_frames=s.max_video_pixel_frames,
            max_pixels=s.max_pixels,
        )
    except VideoRejected as e:
        raise ApiError(e.status, e.code, str(e)) from None
    options = ("anchors", "seed", "hints")
    raw: dict[str, Any] = {k: v for k, v in request.query_params.items() if k in options}
    raw.update({k: v for k, v in form_fields.items() if k in options})
    raw.setdefault("seed", seed_from_bytes(payload))
    try:
        params = VideoParams.model_validate({**raw, "frames": info.frames})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ApiError(400, "invalid_params", f"{where}: {err['msg']}") from None
    job_params = params.model_dump(mode="json")
    digest = request_digest(JobKind.video.value, job_params, payload)
    job = JobDef.create(
        JobKind.video.value,
        payload,
        params=job_params,
        timeout_s=s.video_timeout_s,
        idempotency_key=scoped_idempotency_key(request, idempotency_key, digest),
        owner=request_key_id(request),
    )
    job = await queue.enqueue(job)
    rt.monitor.jobs.labels("accepted").inc()
    return JSONResponse(
        {
            "id": job.id,
            "status": "queued",
            "video": info.to_dict(),
            "links": {"self": f"/jobs/{job.id}"},
        },
        status_code=202,
        headers={"Location": f"/jobs/{job.id}", "X-Request-Id": job.id},
    )
