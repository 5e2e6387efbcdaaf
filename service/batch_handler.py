"""The worker's batch handler: queued jobs -> decode -> pipeline (engine) -> encoded images.

Runs in a worker thread (`asyncio.to_thread`): decoding, the engine (ONNX Runtime releases the
GIL), full-resolution compose and image encoding are CPU work that must never block an event
loop. One handler serves one engine; the worker calls it with one batch at a time.
A job whose input is bad fails alone with a clear error code; the rest of the batch runs.
If the batch itself raises (a runtime error, memory), its jobs are run again one at a time, so
only the job that fails again fails; a single job's error goes back to the worker (a retry).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import cv2
from PIL import Image
from pydantic import ValidationError

from service import pipeline
from service.engine.base import Engine
from service.imageio import UPLOAD_FORMATS, ImageDecodeError, ImageTooLarge, decode_image
from service.params import CONTENT_TYPES, ColorizeParams, ImageFormat, JobKind
from service.queue.jobs import ERROR_CANCELLED, JobDef, JobResult, JobStatus, error_meta
from service.video import job as video_job
from service.video.io import VideoError

# Error codes a job can fail with (the API maps them to HTTP statuses).
ERR_PARAMS = "invalid_params"
ERR_IMAGE = "unsupported_image"
ERR_TOO_LARGE = "image_too_large"
ERR_KIND = "unknown_kind"
ERR_VIDEO_CORRUPT = video_job.ERR_CORRUPT

PROGRESS_INTERVAL_S = 0.5  # how often a running video job's frame count reaches its record

StageObserver = Callable[[str, float], None]

log = logging.getLogger("disco.worker")


# PNG through OpenCV's libpng: zlib level 1 with the RLE strategy is faster than Pillow's level 1
# and gives smaller files on photos (BENCHMARKS.md: 2.8 vs 4.4 ms per 256 px result)
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1,
               cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]  # fmt: skip


def encode_image(rgb: Any, fmt: ImageFormat, quality: int | None) -> bytes:
    """PNG: OpenCV (libpng); JPEG, WebP: Pillow (libjpeg-turbo, libwebp); tuned for latency."""
    if fmt is ImageFormat.png:
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _PNG_PARAMS)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        return png.tobytes()
    buf = io.BytesIO()
    img = Image.fromarray(rgb)
    if fmt is ImageFormat.jpeg:
        img.save(buf, "JPEG", quality=quality or 90, subsampling=0 if (quality or 90) >= 90 else 2)
    else:
        img.save(buf, "WEBP", quality=quality or 90, method=3)
    return buf.getvalue()


class ColorizeHandler:
    """Batch handler for the colorize / diverse / anchors / video job kinds.

    Image jobs of a batch run together; then each video job of the batch runs on its own, its
    frames going through the engine `video_batch` at a time. With `queue` (a `JobQueue` with
    `progress`), a video job's frames done / total reach its record every half second, and a
    cancel request or a lost delivery stops it between frames."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_pixels: int,
        observe: StageObserver | None = None,
        queue: Any = None,
        video_batch: int = 8,
    ) -> None:
        self.engine = engine
        self.max_pixels = max_pixels
        self.observe = observe or (lambda stage, seconds: None)
        self.queue = queue
        self.video_batch = video_batch

    async def __call__(self, jobs: list[JobDef]) -> list[JobResult | Exception]:
        videos = [i for i, j in enumerate(jobs) if j.kind == JobKind.video]
        if not videos:
            return await asyncio.to_thread(self.process, jobs)
        images = [i for i in range(len(jobs)) if i not in videos]
        results: list[JobResult | Exception | None] = [None] * len(jobs)
        if images:
            done = await asyncio.to_thread(self.process, [jobs[i] for i in images])
            for i, r in zip(images, done, strict=True):
                results[i] = r
        for i in videos:
            results[i] = await self._video(jobs[i])
        return results  # type: ignore[return-value]

    async def _video(self, job: JobDef) -> JobResult:
        try:
            params = video_job.VideoParams.model_validate(job.params)
        except ValidationError as e:
            return JobResult.failure(ERR_PARAMS, f"invalid options: {e.errors()[0]['msg']}")
        progress = video_job.Progress(total=params.frames)
        start = time.perf_counter()
        task = asyncio.create_task(asyncio.to_thread(
            video_job.colorize_bytes, self.engine, job.payload, params, self.video_batch, progress
        ))  # fmt: skip
        await self._report(job, progress)  # running: 0 / total at once
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=PROGRESS_INTERVAL_S)
                verdict = await self._report(job, progress)
                if done:
                    break
                if verdict != "ok":
                    progress.stop = verdict
        except asyncio.CancelledError:  # the worker gave the batch back: stop the thread too
            progress.stop = "superseded"
            raise
        try:
            mp4, meta = task.result()
        except video_job.VideoCancelled as e:
            return JobResult(
                JobStatus.CANCELLED, [], {**error_meta(ERROR_CANCELLED, str(e)),
                                          "frames_done": progress.done},
            )  # fmt: skip
        except video_job.Superseded:
            raise  # the batch fails here; the release is a no-op for a lost delivery
        except VideoError as e:
            return JobResult.failure(ERR_VIDEO_CORRUPT, f"corrupt video: {e}")
        seconds = time.perf_counter() - start
        self.observe("compute", seconds)
        return JobResult.ok([mp4], **meta, timings={"video_s": seconds})

    async def _report(self, job: JobDef, progress: video_job.Progress) -> str:
        """Write frames done / total; the queue answers 'ok', 'cancel' or 'superseded'."""
        report = getattr(self.queue, "progress", None)
        if report is None:
            return "ok"
        try:
            return await report(job.id, job.attempts, progress.done, progress.total)
        except Exception as e:  # a missed progress write only delays the next one
            log.warning("progress of job %s not recorded: %s", job.id, e)
            return "ok"

    def _prepare(self, job: JobDef) -> pipeline.Job | JobResult:
        try:
            params = ColorizeParams.model_validate(job.params)
        except ValidationError as e:
            return JobResult.failure(ERR_PARAMS, f"invalid options: {e.errors()[0]['msg']}")
        if job.kind not in {k.value for k in JobKind}:
            return JobResult.failure(ERR_KIND, f"unknown job kind {job.kind!r}")
        start = time.perf_counter()
        try:
            rgb = decode_image(job.payload, max_pixels=self.max_pixels, formats=UPLOAD_FORMATS)
        except ImageTooLarge as e:
            return JobResult.failure(ERR_TOO_LARGE, str(e))
        except ImageDecodeError as e:
            return JobResult.failure(ERR_IMAGE, str(e))
        self.observe("decode", time.perf_counter() - start)
        seed = params.seed if params.seed is not None else pipeline.seed_from_bytes(job.payload)
        count = params.count if job.kind == JobKind.diverse else 1
        try:
            return pipeline.Job(rgb, seed, params.anchors, count, params.hints, params.size.value)
        except ValueError as e:
            return JobResult.failure(ERR_PARAMS, str(e))

    def process(self, jobs: list[JobDef]) -> list[JobResult | Exception]:
        results: list[JobResult | Exception | None] = [None] * len(jobs)
        prepared: dict[str, list[tuple[int, pipeline.Job]]] = {"images": [], "anchors": []}
        for i, job in enumerate(jobs):
            p = self._prepare(job)
            if isinstance(p, JobResult):
                results[i] = p
            else:
                prepared["anchors" if job.kind == JobKind.anchors else "images"].append((i, p))

        for kind, run in (("images", self._colorize), ("anchors", self._anchors)):
            if prepared[kind]:
                self._run_isolated(jobs, prepared[kind], run, results)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _run_isolated(
        self,
        jobs: list[JobDef],
        group: list[tuple[int, pipeline.Job]],
        run: Callable[[list[JobDef], list[tuple[int, pipeline.Job]]], dict[int, JobResult]],
        results: list[JobResult | Exception | None],
    ) -> None:
        """Run `group` as one batch; if that raises, once more job by job, so a bad job fails
        alone instead of sending its batch-mates round the retry loop with it. A batch of one
        job raises: the worker retries it, then dead-letters it after `max_deliveries`."""
        done: dict[int, JobResult | Exception]
        try:
            done = dict(run(jobs, group))
        except Exception as e:
            if len(jobs) == 1:
                raise
            if len(group) == 1:  # its batch-mates are done or failed on their own
                done = {group[0][0]: e}
            else:
                log.warning("a batch of %d failed (%s: %s); running its jobs one at a time",
                            len(group), type(e).__name__, e)  # fmt: skip
                done = {}
                for member in group:
                    try:
                        done.update(run(jobs, [member]))
                    except Exception as single:
                        done[member[0]] = single
        for i, result in done.items():
            results[i] = result

    def _colorize(
        self, jobs: list[JobDef], group: list[tuple[int, pipeline.Job]]
    ) -> dict[int, JobResult]:
        timer = pipeline.Timer()
        idx, pjobs = zip(*group, strict=True)
        outputs = pipeline.run(self.engine, pjobs, timer)
        compute = dict(timer.seconds)
        self.observe("compute", compute.get("encoder", 0) + compute.get("generator", 0))
        done: dict[int, JobResult] = {}
        for i, outs in zip(idx, outputs, strict=True):
            params = ColorizeParams.model_validate(jobs[i].params)
            start = time.perf_counter()
            blobs = [encode_image(o.image, params.format, params.quality) for o in outs]
            encode_s = time.perf_counter() - start
            self.observe("encode", encode_s)
            h, w = outs[0].image.shape[:2]
            done[i] = JobResult.ok(
                blobs,
                content_type=CONTENT_TYPES[params.format],
                width=w,
                height=h,
                anchors=[[a.__dict__ for a in o.anchors] for o in outs],
                timings={**{f"{k}_s": v for k, v in compute.items()}, "encode_s": encode_s},
            )
        return done

    def _anchors(
        self, jobs: list[JobDef], group: list[tuple[int, pipeline.Job]]
    ) -> dict[int, JobResult]:
        timer = pipeline.Timer()
        idx, pjobs = zip(*group, strict=True)
        described = pipeline.automatic_anchors(self.engine, pjobs, timer)
        self.observe("compute", timer.seconds.get("encoder", 0))
        done: dict[int, JobResult] = {}
        for i, job, anchors in zip(idx, pjobs, described, strict=True):
            h, w = job.rgb.shape[:2]
            done[i] = JobResult.ok(
                [], content_type="application/json", width=w, height=h, anchors=anchors,
                timings={f"{k}_s": v for k, v in timer.seconds.items()},
            )  # fmt: skip
        return done
