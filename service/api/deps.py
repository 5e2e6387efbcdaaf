"""Dependency aliases: routes read the lifespan's `Runtime` through these, never globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.queue import JobQueue
from service.settings import Settings

from .errors import ApiError
from .runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_queue(request: Request) -> JobQueue:
    queue = request.app.state.runtime.queue
    if queue is None:
        raise ApiError(503, "not_ready", "the service is starting")
    return queue


def get_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
