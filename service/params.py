"""Request options shared by the API (validation, OpenAPI) and the worker (what a job asks for).

A job's `params` travel through the queue as JSON; the worker re-validates them with the same
model, so a job written by an older or foreign producer fails with a clear error, not a crash.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.hints import MAX_HINTS, Hint, hints_field

MAX_ANCHORS = 64
MAX_DIVERSE = 10


class ImageFormat(StrEnum):
    png = "png"
    jpeg = "jpeg"
    webp = "webp"


class OutputSize(StrEnum):
    original = "original"
    model = "model"


class JobKind(StrEnum):
    colorize = "colorize"
    diverse = "diverse"
    anchors = "anchors"
    video = "video"


CONTENT_TYPES = {
    ImageFormat.png: "image/png",
    ImageFormat.jpeg: "image/jpeg",
    ImageFormat.webp: "image/webp",
}


class ColorizeParams(BaseModel):
    """Options of one colorization request (query or form fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    anchors: Annotated[
        int, Field(ge=1, le=MAX_ANCHORS, description="Number of automatic anchors.")
    ] = 8
    seed: Annotated[
        int | None,
        Field(
            ge=0, le=2**32 - 1, description="k-means seed; default derived from the image bytes."
        ),
    ] = None
    count: Annotated[
        int, Field(ge=1, le=MAX_DIVERSE, description="Diverse results (1 = single).")
    ] = 1
    format: Annotated[ImageFormat, Field(description="Output image format.")] = ImageFormat.png
    quality: Annotated[
        int | None, Field(ge=1, le=100, description="JPEG/WebP quality (default 90).")
    ] = None
    size: Annotated[
        OutputSize, Field(description="original: input resolution; model: official 256x256.")
    ] = OutputSize.original
    hints: Annotated[
        list[Hint] | None,
        Field(max_length=MAX_HINTS, description="User anchors, overriding the automatic ones."),
    ] = None

    _hints_json = field_validator("hints", mode="before")(hints_field)

    def to_job(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
