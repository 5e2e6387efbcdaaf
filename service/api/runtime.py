"""What the API process holds while it runs: settings, queue, monitor and (embedded mode)
the engine and an in-process batching worker. Built once by the lifespan, closed on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
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
    engines: list[Engine] = field(default_factory=list)  # embedded: one per in-process worker
    workers: list[Worker] = field(default_factory=list)
    worker_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    warmed_up: bool = False
    startup_error: str | None = None

    @property
    def embedded(self) -> bool:
        return self.settings.queue_backend == "memory"

    async def start(self, engine: Engine | None = None) -> None:
        s = self.settings
        self.queue = open_queue(s.queue_url, s)
        self.monitor.watch_queue(self.queue)
        if not self.embedded:
            return  # workers run elsewhere; readiness checks that one is alive
        try:
            if engine is not None:
                self.engines = [engine]
            for _ in range(s.embedded_workers - len(self.engines)):  # one at a time: memory
                self.engines.append(await asyncio.to_thread(self._open_engine))
            for e in self.engines:
                await asyncio.to_thread(_warmup, e)
            self.warmed_up = True
        except Exception as e:  # the API still answers /healthz and says why it is not ready
            self.startup_error = f"{type(e).__name__}: {e}"
            log.exception("engine failed to load")
            return
        first = self.engines[0]
        self.model = dict(getattr(first, "info", {"name": "?", "engine": first.name}))
        self.monitor.set_model(self.model)
        for i, eng in enumerate(self.engines):
            handler = ColorizeHandler(
                eng, max_pixels=s.max_pixels, observe=self.monitor.observe_stage,
                queue=self.queue, video_batch=s.max_batch,
            )  # fmt: skip
            named = {"name": f"{s.worker_name}-{i}"} if s.worker_name and i else {}
            worker = Worker.from_settings(
                queue=self.queue, handler=handler, settings=s, on_batch=self.monitor.on_batch,
                **named,
            )  # type: ignore[arg-type]  # fmt: skip
            self.monitor.watch_worker(worker)
            self.workers.append(worker)
            self.worker_tasks.append(asyncio.create_task(worker.run(), name=f"embedded-worker-{i}"))

    @property
    def worker_alive(self) -> bool:
        return any(not w.stopping for w in self.workers)

    def _open_engine(self) -> Engine:
        from service.engine.factory import open_engine

        s = self.settings
        threads = s.threads
        if not threads and s.embedded_workers > 1:  # share the cores out, one engine per share
            threads = max(1, (os.cpu_count() or 1) // s.embedded_workers)
        return open_engine(s.engine, s.model_dir, threads, variant=s.precision)

    async def stop(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers), return_exceptions=True)
        for task in self.worker_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, self.settings.job_completion_wait_s + 5)
        if self.queue is not None:
            await self.queue.close()
        for eng in self.engines:
            close = getattr(eng, "close", None)
            if close is not None:
                close()


def _warmup(engine: Engine) -> None:
    warm = getattr(engine, "warmup", None)
    if warm is not None:
        warm()
