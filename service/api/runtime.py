"""What the API process holds while it runs: settings, queue, monitor and (embedded mode)
the engine and an in-process batching worker. Built once by the lifespan, closed on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from service.batch_handler import ColorizeHandler
from service.engine.base import Engine
from service.monitoring import Monitor
from service.queue import JobQueue, Worker, open_queue
from service.settings import Settings

log = logging.getLogger("disco.api")


@dataclass
class Runtime:
    settings: Settings
    monitor: Monitor
    queue: JobQueue | None = None
    engine: Engine | None = None
    worker: Worker | None = None
    worker_task: asyncio.Task[None] | None = None
    model: dict[str, Any] = field(default_factory=dict)
    warmed_up: bool = False
    startup_error: str | None = None

    @property
    def embedded(self) -> bool:
        return self.settings.queue_backend == "memory"

    async def start(self, engine: Engine | None = None) -> None:
        s = self.settings
        self.queue = open_queue(s.queue_url, s)
        if not self.embedded:
            return  # workers run elsewhere; readiness checks that one is alive
        try:
            self.engine = engine or await asyncio.to_thread(self._open_engine)
            await asyncio.to_thread(_warmup, self.engine)
            self.warmed_up = True
        except Exception as e:  # the API still answers /healthz and says why it is not ready
            self.startup_error = f"{type(e).__name__}: {e}"
            log.exception("engine failed to load")
            return
        info = getattr(self.engine, "info", {"name": "?", "engine": self.engine.name})
        self.model = dict(info)
        self.monitor.set_model(self.model)
        handler = ColorizeHandler(
            self.engine, max_pixels=s.max_pixels, observe=self.monitor.observe_stage
        )
        self.worker = Worker.from_settings(
            queue=self.queue, handler=handler, settings=s, on_batch=self.monitor.on_batch
        )  # type: ignore[arg-type]
        self.monitor.watch_worker(self.worker)
        self.worker_task = asyncio.create_task(self.worker.run(), name="embedded-worker")

    def _open_engine(self) -> Engine:
        from service.engine.factory import open_engine

        s = self.settings
        return open_engine(s.engine, s.model_dir, s.threads, variant=s.precision)

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.close()
        if self.worker_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.worker_task, self.settings.job_completion_wait_s + 5)
        if self.queue is not None:
            await self.queue.close()
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


def _warmup(engine: Engine) -> None:
    warm = getattr(engine, "warmup", None)
    if warm is not None:
        warm()
