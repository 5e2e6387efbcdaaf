"""Domain errors -> HTTP. Every error body is `{"error": {"code": ..., "message": ...}}`."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from service.batch_handler import (
    ERR_IMAGE,
    ERR_KIND,
    ERR_PARAMS,
    ERR_TOO_LARGE,
    ERR_VIDEO_CORRUPT,
)
from service.queue import QueueFull, QueueUnavailable
from service.queue.jobs import ERROR_CANCELLED, ERROR_EXPIRED

# A failed job's error code -> the HTTP status a client sees for it.
JOB_ERROR_STATUS = {
    ERR_PARAMS: 400,
    ERR_KIND: 400,
    ERR_IMAGE: 415,
    ERR_TOO_LARGE: 413,
    ERR_VIDEO_CORRUPT: 400,  # the header was fine, the frames were not
    ERROR_EXPIRED: 504,
    ERROR_CANCELLED: 409,
}


class ErrorDetail(BaseModel):
    """`code` is stable (switch on it); `message` is for people; more fields may follow."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {"code": ..., "message": ...}}` (OpenAPI schema)."""

    error: ErrorDetail


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for error statuses, all with the `ErrorBody` schema."""
    return {status: {"model": ErrorBody, "description": d} for status, d in descriptions.items()}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)


async def _queue_full(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFull)
    return error_response(
        429,
        "queue_full",
        f"the service is at capacity ({exc}); retry later",
        {"Retry-After": str(exc.retry_after_s)},
    )


async def _queue_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return error_response(
        503, "queue_unavailable", f"the job queue is unreachable: {exc}", {"Retry-After": "5"}
    )


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "header"))
    return error_response(
        422,
        "invalid_request",
        f"{where}: {first.get('msg')}" if where else str(first.get("msg")),
        details=[_plain(e) for e in errors[:10]],
    )


def _plain(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "loc": [str(p) for p in e.get("loc", ())],
        "msg": str(e.get("msg")),
        "type": e.get("type"),
    }


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette lists the first route's methods only
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return error_response(exc.status_code, code, str(exc.detail), headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (GET and DELETE /jobs/{id}, ...)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        scope = {**request.scope, "method": method}
        for route in request.app.router.routes:
            if not isinstance(route, Mount) and route.matches(scope)[0] is Match.FULL:
                allowed.append(method)
                break
    return allowed


exception_handlers = {
    ApiError: _api_error,
    QueueFull: _queue_full,
    QueueUnavailable: _queue_unavailable,
    RequestValidationError: _validation,
    StarletteHTTPException: _http,
}
