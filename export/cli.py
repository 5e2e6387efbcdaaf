"""`disco` commands that need torch (the `export` extra): export, bench, train, eval, and the
model utilities. They register into the service's CLI through the `disco.cli` entry point
(`register`), so `service/` never imports this package."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from export.train.commands import evaluate, train


class KMeansMode(StrEnum):
    plugin = "plugin"
    inline = "inline"


def _warn(msg: str) -> None:
    typer.secho(msg, fg=typer.colors.YELLOW, bold=True, err=True)


def export_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Model repository folder to write.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Official or `disco train` checkpoint; omit for the seed-0 TEST weights."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: checkpoint stem).")] = None,
    version: Annotated[str, typer.Option(help="Model version recorded in the manifest.")] = "1",
    kmeans: Annotated[
        KMeansMode, typer.Option(help="plugin: one custom node; inline: standard ops only.")
    ] = KMeansMode.plugin,
    quantize: Annotated[
        str | None, typer.Option(help="Also write an int8 (QDQ, static) variant: 'int8'.")
    ] = None,
    tensorrt: Annotated[
        bool, typer.Option("--tensorrt", help="Also build an fp16 TensorRT engine (GPU node).")
    ] = False,
) -> None:
    """Export a checkpoint to an ONNX model repository, verified against torch."""
    from export.model.checkpoint import load_checkpoint, test_weights_model
    from export.onnx_export import ExportError, export_repository

    if quantize not in (None, "int8"):
        raise typer.BadParameter("only 'int8' is supported", param_hint="--quantize")
    if checkpoint is None:
        _warn("WARNING: no --checkpoint: exporting the seed-0 TEST weights (they do not colorize).")
        net, pretrained = test_weights_model(0), "disco.test_seed0"
    else:
        net, pretrained = load_checkpoint(checkpoint), None
    name = name or (checkpoint.name.split(".")[0] if checkpoint else "disco-test-seed0")

    def say(msg: str) -> None:
        typer.echo(f"[export] {msg}", err=True)

    try:
        manifest = export_repository(
            net,
            out,
            name=name,
            version=version,
            source=checkpoint,
            pretrained=pretrained,
            kmeans=kmeans.value,
            progress=say,
        )
    except ExportError as e:
        typer.secho(f"export refused: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from e
    if quantize == "int8":
        from export.quantize import add_int8_variant

        add_int8_variant(net, out, progress=say)
    if tensorrt:
        from export.tensorrt_build import TensorRTUnavailable, build_tensorrt_variant

        try:
            build_tensorrt_variant(out, progress=say)
        except TensorRTUnavailable as e:
            typer.secho(f"--tensorrt: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from e
    p = manifest["parity"]
    typer.echo(
        f"wrote {out} ({name} v{version}); parity vs torch: fixed {p['fixed_max_abs']:.1e}, "
        f"k-means {p['kmeans_max_abs']:.1e}, anchors equal: {p['anchors_equal']}"
    )


def bench(
    out_md: Annotated[Path, typer.Option(help="Markdown report to update.")] = Path(
        "BENCHMARKS.md"
    ),
    out_json: Annotated[Path, typer.Option(help="Raw figures.")] = Path("benchmarks/engine.json"),
    batches: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,2,4,8",
    rounds: Annotated[
        int, typer.Option(min=1, help="Alternating rounds; figures are medians.")
    ] = 3,
    threads: Annotated[int, typer.Option(help="Threads per engine, 0 = all cores.")] = 0,
    accuracy_checkpoint: Annotated[
        list[Path] | None, typer.Option(help="Also report fast-path accuracy on these checkpoints.")
    ] = None,
    tiny: Annotated[bool, typer.Option(help="A tiny architecture (smoke test only).")] = False,
) -> None:
    """Engine benchmark: torch fp32 eager vs ONNX Runtime fp32 / int8 (/ bf16), batching,
    diverse vs single, k-means plugin vs inline. Writes JSON and a table into BENCHMARKS.md."""
    import shlex

    from export import bench as bench_mod
    from export.model.checkpoint import load_checkpoint, test_weights_model
    from export.model.disco import disco_demo

    model = disco_demo(n_layers=1).eval() if tiny else test_weights_model(0)
    extra = {p.name: load_checkpoint(p) for p in accuracy_checkpoint or []}
    result = bench_mod.run(
        model=model,
        batches=[int(b) for b in batches.split(",")],
        rounds=rounds,
        threads=threads or None,
        accuracy_models=extra or None,
        progress=lambda m: typer.echo(f"[bench] {m}", err=True),
    )
    args = ["disco", "bench", "--batches", batches, "--rounds", str(rounds)]
    args += ["--threads", str(threads)] if threads else []
    args += ["--tiny"] if tiny else []
    for p in accuracy_checkpoint or []:
        args += ["--accuracy-checkpoint", str(p)]
    command = " ".join(shlex.quote(a) for a in args)
    bench_mod.write_report(result, command, out_md, out_json)
    typer.echo(bench_mod.markdown(result, command))


def test_checkpoint(
    out: Annotated[Path, typer.Argument(help="Where to write the checkpoint (.pth.tar).")],
    seed: Annotated[int, typer.Option(help="Weight seed.")] = 0,
) -> None:
    """Write the deterministic test weights in the official checkpoint format (about 173 MB).

    For tests and for exercising the official loading path; they do not colorize."""
    from export.model.checkpoint import save_test_checkpoint

    save_test_checkpoint(out, seed)
    typer.echo(f"wrote seed-{seed} test checkpoint to {out}")


def info() -> None:
    """Print the known model variants and pretrained configurations."""
    from export.model.disco import VARIANT_CONFIGS, default_cfgs

    typer.echo(
        json.dumps(
            {
                "variants": {k: v.to_dict() for k, v in VARIANT_CONFIGS.items()},
                "pretrained": default_cfgs,
            },
            indent=2,
            default=str,
        )
    )


def register(app: typer.Typer) -> None:
    """The `disco.cli` entry point: add this package's commands to `disco`."""
    app.command("export")(export_cmd)
    app.command()(bench)
    app.command("test-checkpoint")(test_checkpoint)
    app.command()(info)
    app.command("train")(train)
    app.command("eval")(evaluate)
