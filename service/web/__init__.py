"""The browser UI: plain HTML, CSS and ES modules (no build step, no CDN) served by the API.

`GET /` answers `index.html`; its assets live under `/static/`. Both stay out of the OpenAPI
schema, and `mount_web` goes after the API routers so the API's routes always win. The page
calls the API with relative URLs (`colorize`, `anchors`), so it also works behind a path prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent
INDEX_HTML = WEB_DIR / "index.html"
STATIC_DIR = WEB_DIR / "static"

# The page loads nothing from elsewhere; results are blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
    "script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


class _RevalidatedStaticFiles(StaticFiles):
    """Static files that browsers revalidate (ETag) before reuse, so an upgrade shows at once."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_HEADERS)
        return response


router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def index() -> FileResponse:
    """The single page."""
    return FileResponse(
        INDEX_HTML,
        media_type="text/html; charset=utf-8",
        headers={**_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )


def mount_web(app: FastAPI) -> None:
    """Serve the UI at `/` and its assets at `/static/`. Call after including the API routers."""
    app.include_router(router)
    app.mount("/static", _RevalidatedStaticFiles(directory=STATIC_DIR), name="web")
