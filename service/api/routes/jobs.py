"""GET /jobs/{id} (status), GET /jobs/{id}/result[/{k}], DELETE /jobs/{id} (cancel)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from service.params import JobKind
from service.queue import JobInfo, JobStatus

from ..deps import QueueDep, RuntimeDep
from ..errors import ApiError, error_responses
from ..responses import raise_for_job, result_response
from ..security import request_key_id

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    responses=error_responses(
        {
            404: "Unknown or expired job",
            422: "Invalid job id or index",
            503: "Queue unreachable or service not ready",
        }
    ),
)
# GET .../result answers the job's own error when it failed (as POST /colorize would have).
RESULT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The result: image bytes, or JSON (diverse: all results; anchors)",
        "content": {
            "image/png": {},
            "image/jpeg": {},
            "image/webp": {},
            "video/mp4": {},
            "application/json": {},
        },
    },
    **error_responses(
        {
            400: "The job failed: bad options or a corrupt image",
            409: "Not finished yet (Retry-After), or cancelled",
            413: "The job failed: image over the limits",
            415: "The job failed: not a supported image",
            504: "The job's deadline passed",
        }
    ),
}
JobId = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


async def _info(request: Request, queue: QueueDep, job_id: str) -> JobInfo:
    info = await queue.info(job_id)
    # another key's job reads exactly like an unknown one: no existence oracle
    if info is None or not info.visible_to(request_key_id(request)):
        raise ApiError(404, "job_not_found", f"no job {job_id} (unknown, or its result expired)")
    return info


def _links(info: JobInfo) -> dict[str, Any]:
    links: dict[str, Any] = {"self": f"/jobs/{info.id}"}
    if info.status is JobStatus.DONE:
        links["result"] = f"/jobs/{info.id}/result"
        if info.kind == JobKind.diverse:
            links["results"] = [f"/jobs/{info.id}/result/{k}" for k in range(info.n_outputs)]
    return links


@router.get("/{job_id}")
async def job_status(request: Request, job_id: JobId, queue: QueueDep) -> dict[str, Any]:
    """Status (queued, running, done, failed, expired, cancelled), timings and result links."""
    info = await _info(request, queue, job_id)
    return {**info.to_dict(), "links": _links(info)}


async def _result(request: Request, queue: QueueDep, job_id: str, index: int | None) -> Response:
    info = await _info(request, queue, job_id)
    raise_for_job(info)
    result = await queue.result(job_id)
    if result is None:
        raise ApiError(404, "job_not_found", f"the result of job {job_id} expired")
    return result_response(info, result, index)


@router.get("/{job_id}/result", responses=RESULT_RESPONSES)
async def job_result(request: Request, job_id: JobId, queue: QueueDep) -> Response:
    """The result: image bytes (colorize), JSON (diverse: all results; anchors)."""
    return await _result(request, queue, job_id, None)


@router.get("/{job_id}/result/{index}", responses=RESULT_RESPONSES)
async def job_result_k(
    request: Request, job_id: JobId, queue: QueueDep, index: Annotated[int, Path(ge=0, le=63)]
) -> Response:
    """The k-th image of a diverse job (k = 0 for a single one)."""
    return await _result(request, queue, job_id, index)


@router.delete(
    "/{job_id}",
    responses={
        202: {"description": "A running video job was asked to stop (it ends cancelled)"},
        **error_responses({409: "Already started (image jobs) or finished"}),
    },
)
async def cancel_job(request: Request, job_id: JobId, queue: QueueDep, rt: RuntimeDep) -> Response:
    """Cancel a job that has not started; a running video job is stopped between frames (202);
    a running image job or a finished job cannot be cancelled."""
    info = await _info(request, queue, job_id)
    cancelled = await queue.cancel(job_id)
    if not cancelled and info.kind == JobKind.video and await queue.request_cancel(job_id):
        rt.monitor.jobs.labels("cancelled").inc()
        return JSONResponse({"id": job_id, "status": "cancelling"}, status_code=202)
    if not cancelled:
        raise ApiError(
            409,
            "not_cancellable",
            f"job {job_id} is {info.status.value}",
            job_status=info.status.value,
        )
    rt.monitor.jobs.labels("cancelled").inc()
    return JSONResponse({"id": job_id, "status": JobStatus.CANCELLED.value})
