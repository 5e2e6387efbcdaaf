"""`disco`: the one command-line entry point (typer). Subcommands import their heavy parts lazily,
so `disco --help` is instant and the torch-free commands never load torch."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from service.params import OutputSize

app = typer.Typer(
    name="disco",
    help="DISCO colorization: colorize images, export models, serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class EngineName(StrEnum):
    torch = "torch"
    onnx = "onnx"
    openvino = "openvino"


def _warn(msg: str) -> None:
    typer.secho(msg, fg=typer.colors.YELLOW, bold=True, err=True)


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (recursively, sorted)."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
        elif p.is_file():
            files.append(p)
        else:
            raise typer.BadParameter(f"no such file or folder: {p}", param_hint="INPUT")
    return files


def output_stems(files: list[Path]) -> list[str]:
    """Output names from input stems, made unique when two inputs share a stem."""
    seen: dict[str, int] = {}
    stems = []
    for f in files:
        n = seen.get(f.stem, 0)
        seen[f.stem] = n + 1
        stems.append(f.stem if n == 0 else f"{f.stem}-{n}")
    return stems


def _load_engine(engine: EngineName, checkpoint: Path | None, model: Path | None, device: str):
    if engine is EngineName.openvino:  # CPU; precision from DISCO_PRECISION (bf16 where it can)
        import os

        from service.engine.openvino import OpenVinoEngine
        from service.settings import BUNDLED_MODEL_DIR

        return OpenVinoEngine(
            model or BUNDLED_MODEL_DIR, precision=os.environ.get("DISCO_PRECISION")
        )
    if engine is EngineName.onnx:
        from service.engine.onnx import ModelRepositoryError, OnnxEngine
        from service.settings import BUNDLED_MODEL_DIR

        try:
            return OnnxEngine(
                model or BUNDLED_MODEL_DIR,
                providers=None if device.startswith("cuda") else "cpu",
            )
        except ModelRepositoryError as e:
            raise typer.BadParameter(str(e), param_hint="--model") from e
    from service.engine.factory import engine_plugin

    open_torch = engine_plugin("torch")
    if open_torch is None:
        raise typer.BadParameter(
            "--engine torch needs the export extra (pip install 'disco-serve[export]')",
            param_hint="--engine",
        )
    if checkpoint is None:
        _warn(
            "WARNING: no --checkpoint given: using the deterministic seed-0 TEST weights. "
            "They exercise the code but DO NOT colorize; results are meaningless colours."
        )
    return open_torch(checkpoint, device=device)


def _read_hints(path: Path | None) -> list | None:
    """The --hints JSON file, validated; a bad file is a usage error naming it."""
    from service.hints import parse_hints

    if path is None:
        return None
    try:
        return parse_hints(path.read_bytes())
    except (OSError, ValueError) as e:
        raise typer.BadParameter(f"{path}: {e}", param_hint="--hints") from e


@app.command()
def colorize(
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (created).")],
    engine: Annotated[
        EngineName, typer.Option(help="onnx (torch-free) or torch (the reference; export extra).")
    ] = EngineName.onnx,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Official DISCO checkpoint (.pth.tar) for --engine torch.")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Model repository for --engine onnx [the bundled disco-demo]."),
    ] = None,
    anchors: Annotated[int, typer.Option(min=1, max=64, help="Number of anchors (k-means K).")] = 8,
    seed: Annotated[
        int | None, typer.Option(help="k-means init seed; default: derived from the image bytes.")
    ] = None,
    hints: Annotated[
        Path | None,
        typer.Option(
            help="JSON file of anchors, e.g. "
            '[{"token": 18, "ab": [20, 60]}, {"x": 0.25, "y": 0.4, "color": "#c03020"}]'
        ),
    ] = None,
    diverse: Annotated[
        int, typer.Option(min=1, max=10, help="Number of diverse results per image.")
    ] = 1,
    size: Annotated[
        OutputSize,
        typer.Option(help="original: input resolution; model: the official 256x256 output."),
    ] = OutputSize.original,
    save_ab: Annotated[
        bool,
        typer.Option(
            "--save-ab", help="Also write the raw model ab (N,2,256,256, ab/110) as .ab.npy."
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per engine call.")] = 1,
    device: Annotated[
        str, typer.Option(help="torch device for --engine torch (cpu, cuda, cuda:1).")
    ] = "cpu",
) -> None:
    """Colorize grayscale (or color) photos into OUT, with a progress bar."""
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from service.imageio import ImageDecodeError, decode_image
    from service.pipeline import Job, run, seed_from_bytes

    if hints is not None and diverse > 1:
        raise typer.BadParameter(
            "--hints fixes the anchor colours; drop --diverse", param_hint="--hints"
        )
    hint_list = _read_hints(hints)
    files = collect_inputs(inputs)
    if not files:
        raise typer.BadParameter("no image files found", param_hint="INPUT")
    stems = output_stems(files)
    out.mkdir(parents=True, exist_ok=True)
    eng = _load_engine(engine, checkpoint, model, device)

    failed: list[str] = []
    bar = tqdm(total=len(files), unit="img", desc="colorize", file=sys.stderr)
    for start in range(0, len(files), batch_size):
        chunk = list(
            zip(files[start : start + batch_size], stems[start : start + batch_size], strict=True)
        )
        jobs, names = [], []
        for path, stem in chunk:
            try:
                data = path.read_bytes()
                rgb = decode_image(data)
            except (OSError, ImageDecodeError) as e:
                failed.append(f"{path}: {e}")
                bar.update(1)
                continue
            jobs.append(
                Job(
                    rgb,
                    seed_from_bytes(data) if seed is None else seed,
                    anchors,
                    diverse,
                    hint_list,
                    size.value,
                )
            )
            names.append(stem)
        for stem, outputs in zip(names, run(eng, jobs), strict=True):
            for k, o in enumerate(outputs):
                name = stem if len(outputs) == 1 else f"{stem}_c{k}"
                Image.fromarray(o.image).save(out / f"{name}.png")
            if save_ab:
                np.save(
                    out / f"{stem}.ab.npy",
                    np.stack([o.ab_norm for o in outputs]).astype(np.float32),
                )
            bar.update(1)
    bar.close()
    done = len(files) - len(failed)
    typer.echo(f"colorized {done}/{len(files)} images into {out}")
    for f in failed:
        typer.secho(f"failed: {f}", fg=typer.colors.RED, err=True)
    if failed:
        raise typer.Exit(1)


class ServeEngine(StrEnum):
    auto = "auto"
    onnx = "onnx"
    openvino = "openvino"
    tensorrt = "tensorrt"


def _settings(**overrides: object):
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings.with_overrides(**overrides)
    except ValidationError as e:
        raise typer.BadParameter(str(e)) from e


# serve and worker: a variant of the model repository (`disco export --quantize int8`)
PrecisionOption = Annotated[
    str | None, typer.Option(help="Model variant, e.g. int8 [DISCO_PRECISION, fp32].")
]


@app.command("colorize-video")
def colorize_video(
    src: Annotated[Path, typer.Argument(help="Input video (any format FFmpeg reads).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output H.264 MP4.")],
    model: Annotated[
        Path | None, typer.Option(help="Model repository [the bundled disco-demo].")
    ] = None,
    anchors: Annotated[int, typer.Option(min=1, max=64, help="Anchors per shot keyframe.")] = 8,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per engine call.")] = 8,
    seed: Annotated[int, typer.Option(min=0, help="k-means seed of the keyframes.")] = 0,
    hints: Annotated[
        Path | None,
        typer.Option(help="JSON file of anchors for the first frame (as `colorize --hints`)."),
    ] = None,
    independent: Annotated[
        bool, typer.Option("--independent", help="Per-frame k-means (no tracking; flickers).")
    ] = False,
) -> None:
    """Colorize a video with anchors tracked by optical flow; keeps rate, size and audio."""
    from tqdm import tqdm

    from service.video import colorize as vc
    from service.video import io as vio

    if hints is not None and independent:
        raise typer.BadParameter("--hints needs tracked anchors; drop --independent")
    hint_list = _read_hints(hints)
    try:
        _, _, _, total = vio.probe(src)
    except (OSError, vio.VideoError) as e:
        raise typer.BadParameter(f"{src}: {e}", param_hint="SRC") from e
    eng = _load_engine(EngineName.onnx, None, model, "cpu")
    frames = vio.frames(src)
    if independent:
        rgb = vc.colorize_independent(eng, frames, anchors, batch_size)
    else:
        rgb = vc.AnchoredColorizer(eng, anchors, batch_size, seed, hints=hint_list).colorize(frames)
    bar = tqdm(total=total or None, unit="frame", desc="colorize-video", file=sys.stderr)
    try:
        n = vio.write(src, out, rgb, on_frame=lambda: bar.update(1))
    except vio.VideoError as e:
        raise typer.BadParameter(f"{src}: {e}", param_hint="SRC") from e
    finally:
        bar.close()
    typer.echo(f"{n} frames -> {out}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [DISCO_HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [DISCO_PORT, 8000].")] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Model repository from `disco export` [DISCO_MODEL_DIR, bundled demo]."),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(
            help="memory:// (embedded worker), redis://HOST:PORT/DB or "
            "redis+sentinel://S1,S2,S3/SERVICE/DB [DISCO_QUEUE_URL]."
        ),
    ] = None,
    engine: Annotated[
        ServeEngine | None, typer.Option(help="Embedded engine [DISCO_ENGINE].")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Engine threads, 0 = all [DISCO_THREADS].")
    ] = None,
    precision: PrecisionOption = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Embedded worker batch [DISCO_MAX_BATCH].")
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(help="Batch fill wait [DISCO_MAX_WAIT_MS].")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the HTTP API. With memory:// (the default) it also runs the batching worker."""
    import uvicorn

    from service.api import create_app

    settings = _settings(
        host=host,
        port=port,
        model_dir=model,
        queue_url=queue,
        threads=threads,
        precision=precision,
        engine=engine.value if engine else None,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
    )
    from service.queue.connections import redact_url

    queue_shown = redact_url(settings.queue_url)
    typer.echo(
        f"disco serve: http://{settings.host}:{settings.port} queue={queue_shown} "
        f"model={settings.model_dir} engine={settings.engine} "
        f"precision={settings.precision or 'default'}",
        err=True,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.job_completion_wait_s) + 5,
    )


@app.command()
def worker(
    queue: Annotated[
        str | None,
        typer.Option(
            help="redis://HOST:PORT/DB or redis+sentinel://S1,S2,S3/SERVICE/DB [DISCO_QUEUE_URL]."
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model repository [DISCO_MODEL_DIR, bundled demo].")
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Jobs per batch [DISCO_MAX_BATCH, 8].")
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(help="Batch fill wait [DISCO_MAX_WAIT_MS, 10].")
    ] = None,
    engine: Annotated[ServeEngine | None, typer.Option(help="Engine [DISCO_ENGINE, auto].")] = None,
    threads: Annotated[int | None, typer.Option(help="Engine threads [DISCO_THREADS].")] = None,
    precision: PrecisionOption = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            help="Prometheus metrics port of this worker (0 = off, the default, so that several "
            "workers on one host never collide; compose and k8s set 9100)."
        ),
    ] = 0,
) -> None:
    """Run a batching worker on a shared Redis queue (any number, on any hosts)."""
    import asyncio
    import logging

    from prometheus_client import start_http_server

    from service.batch_handler import ColorizeHandler
    from service.engine.factory import open_engine
    from service.monitoring import Monitor
    from service.queue import Worker, open_queue
    from service.queue.connections import redact_url

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings(
        queue_url=queue,
        model_dir=model,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        engine=engine.value if engine else None,
        threads=threads,
        precision=precision,
    )
    if settings.queue_backend != "redis":
        raise typer.BadParameter("a worker needs --queue redis://... (memory:// runs inside serve)")
    eng = open_engine(
        settings.engine, settings.model_dir, settings.threads, variant=settings.precision
    )
    getattr(eng, "warmup", lambda: None)()
    monitor = Monitor()
    monitor.set_model(getattr(eng, "info", {"engine": eng.name}))
    if metrics_port:
        start_http_server(metrics_port, registry=monitor.registry)

    async def main() -> None:
        q = open_queue(settings.queue_url, settings)
        handler = ColorizeHandler(
            eng, max_pixels=settings.max_pixels, observe=monitor.observe_stage,
            queue=q, video_batch=settings.max_batch,
        )  # fmt: skip
        w = Worker.from_settings(
            queue=q, handler=handler, settings=settings, on_batch=monitor.on_batch
        )
        monitor.watch_worker(w)
        typer.echo(
            f"disco worker {w.name}: {redact_url(settings.queue_url)} batch={w.max_batch}", err=True
        )
        try:
            await w.run(install_signal_handlers=True)
        finally:
            await q.close()

    asyncio.run(main())


def register_plugins(app: typer.Typer) -> list[str]:
    """The composition root: commands of other installed parts (the `export` package's export,
    train, eval and bench) register through the `disco.cli` entry points, so the service never
    imports them and a service-only install (the runtime image) simply lacks those commands."""
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group="disco.cli"):
        try:
            register = ep.load()
        except ImportError:  # that part is not installed here (e.g. no export/ in the image)
            continue
        register(app)
        loaded.append(ep.name)
    return loaded


register_plugins(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
