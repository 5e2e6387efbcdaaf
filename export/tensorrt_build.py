"""`disco export --tensorrt`: an fp16 TensorRT variant of a model repository (on a GPU node).

For each graph of the repository (`encoder.onnx`, `generator.onnx`):

1. a COPY of the ONNX model gets the string attribute `plugin_namespace = "disco"` on its anchor
   k-means node, so TensorRT's ONNX parser maps the node onto the `disco::DiscoKMeansAnchors`
   plugin (`service/engine/tensorrt_plugin.py`); the repository's own ONNX files, which ONNX
   Runtime loads, are never modified;
2. TensorRT parses the copy and builds an fp16 engine (`BuilderFlag.FP16`, fp32 I/O) with one
   optimization profile: batch 1 / 32 / 64 (min / opt / max) on every input and 1 / 8 / 64
   anchors on `init_idx`;
3. the serialized engine is written as `encoder.plan` / `generator.plan`.

The plans are then recorded in `manifest["variants"]["tensorrt_fp16"]` (like the int8 variant,
`quantize.py`) with the TensorRT version and the GPU they were built on, and the accuracy cost
against the fp32 ONNX graphs on CPU is measured and stored beside them.

Plans are tied to the TensorRT version and GPU architecture: build on (a twin of) the serving
node. TensorRT 11 removed `BuilderFlag.FP16` (strong typing only); this module needs 10.7-10.x.
Everything that needs TensorRT is imported lazily; the ONNX rewrite, the profile shapes and the
manifest bookkeeping are plain functions, tested on CPU.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx

from service.engine.plugin import DOMAIN, OP_TYPE
from service.engine.tensorrt import VARIANT
from service.engine.tensorrt_plugin import (
    PLUGIN_ID,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    TensorRTUnavailable,
    import_tensorrt,
    register_plugin,
)

from .onnx_export import file_sha256

BATCH_PROFILE = (1, 32, 64)  # min, opt, max images per call; opt = the GPU DISCO_MAX_BATCH (k8s)
ANCHORS_PROFILE = (1, 8, 64)  # min, opt, max k-means K (init_idx columns)
WORKSPACE_BYTES = 8 << 30
GRAPHS = ("encoder", "generator")

__all__ = [
    "ANCHORS_PROFILE",
    "BATCH_PROFILE",
    "TensorRTUnavailable",
    "add_plugin_namespace",
    "build_engine",
    "build_tensorrt_variant",
    "profile_shapes",
    "record_variant",
]


# ------------------------------------------------------------------------------------------------
# CPU-side pieces: graph rewrite, profiles, manifest bookkeeping
# ------------------------------------------------------------------------------------------------
def add_plugin_namespace(
    model: onnx.ModelProto, namespace: str = PLUGIN_NAMESPACE
) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` whose k-means nodes carry `plugin_namespace`; returns (copy, count).

    TensorRT's ONNX parser imports an unknown node as the plugin named by its op_type, in the
    namespace named by its `plugin_namespace` attribute (plugin version: `plugin_version`, "1" by
    default). Only the plugin's registered attributes (iters, tol) reach the plugin.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    count = 0
    for node in out.graph.node:
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
            keep = [
                a for a in node.attribute if a.name not in ("plugin_namespace", "plugin_version")
            ]
            del node.attribute[:]
            node.attribute.extend(keep)
            node.attribute.extend(
                [
                    onnx.helper.make_attribute("plugin_namespace", namespace),
                    onnx.helper.make_attribute("plugin_version", PLUGIN_VERSION),
                ]
            )
            count += 1
    return out, count


def profile_shapes(
    model: onnx.ModelProto,
    batch: Sequence[int] = BATCH_PROFILE,
    anchors: Sequence[int] = ANCHORS_PROFILE,
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape of every graph input: "batch" and "anchors" dims from the profiles,
    static dims as exported. Any other symbolic dim is an error (the exporter makes none)."""
    sizes = {"batch": tuple(batch), "anchors": tuple(anchors)}
    for name, (lo, opt, hi) in sizes.items():
        if not 1 <= lo <= opt <= hi:
            raise ValueError(
                f"{name} profile must satisfy 1 <= min <= opt <= max, got {lo, opt, hi}"
            )
    initializers = {i.name for i in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims: list[tuple[int, int, int]] = []
        for d in inp.type.tensor_type.shape.dim:
            if d.dim_param:
                if d.dim_param not in sizes:
                    raise ValueError(
                        f"input {inp.name}: no profile for dynamic dim {d.dim_param!r}"
                    )
                dims.append(sizes[d.dim_param])  # type: ignore[arg-type]
            elif d.dim_value > 0:
                dims.append((d.dim_value,) * 3)
            else:
                raise ValueError(f"input {inp.name}: a dim without a size or a name")
        shapes[inp.name] = tuple(tuple(d[i] for d in dims) for i in range(3))  # type: ignore[assignment]
    return shapes  # type: ignore[return-value]


def variant_entry(
    repo: Path,
    manifest: dict[str, Any],
    *,
    plugin: bool,
    tensorrt_version: str,
    device: str,
    compute_capability: str,
    batch: Sequence[int] = BATCH_PROFILE,
    anchors: Sequence[int] = ANCHORS_PROFILE,
) -> dict[str, Any]:
    """The manifest record of the plans `encoder.plan` / `generator.plan` in `repo`."""
    graphs = {}
    for key in GRAPHS:
        src = manifest["graphs"][key]
        graphs[key] = {
            "file": f"{key}.plan",
            "sha256": file_sha256(repo / f"{key}.plan"),
            "onnx": src["file"],
            "onnx_sha256": src.get("sha256"),
        }
    return {
        "precision": "fp16",
        "runtime": "tensorrt",
        "graphs": graphs,
        "plugin": (
            {
                "id": PLUGIN_ID,
                "version": PLUGIN_VERSION,
                "onnx_op": f"{DOMAIN}::{OP_TYPE}",
                "implementation": "tensorrt.plugin JIT impl, host copy + numpy reference",
            }
            if plugin
            else None
        ),
        "profiles": {"batch": list(batch), "anchors": list(anchors)},
        "tensorrt_version": tensorrt_version,
        "device": device,
        "compute_capability": compute_capability,
        "built": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def record_variant(repo: Path, entry: dict[str, Any], name: str = VARIANT) -> dict[str, Any]:
    """Write `entry` as `manifest["variants"][name]`, leaving everything else as it was."""
    path = Path(repo) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.setdefault("variants", {})[name] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
    return manifest


# ------------------------------------------------------------------------------------------------
# GPU side: build
# ------------------------------------------------------------------------------------------------
def _device() -> tuple[str, str]:
    """(name, "major.minor") of CUDA device 0, through CuPy or torch, whichever is there."""
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return name, f"{props['major']}.{props['minor']}"
    except Exception:  # no CuPy or no device through it: ask torch
        pass
    try:
        import torch

        major, minor = torch.cuda.get_device_capability(0)
        return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except Exception as e:
        raise TensorRTUnavailable(f"no CUDA device found (via CuPy or torch): {e}") from e


def build_engine(
    model: onnx.ModelProto,
    *,
    fp16: bool = True,
    batch: Sequence[int] = BATCH_PROFILE,
    anchors: Sequence[int] = ANCHORS_PROFILE,
    workspace_bytes: int = WORKSPACE_BYTES,
    optimization_level: int | None = None,
    verbose: bool = False,
    timing_cache: Path | None = None,
) -> bytes:
    """Parse an ONNX model (plugin namespace already added) and build a serialized engine.

    `timing_cache`: a file read before and rewritten after the build, so a rebuild (another
    graph, a rerun of gpu-check, a new lease with the same folder) skips the kernel timing.
    """
    trt = import_tensorrt()
    if fp16 and not hasattr(trt.BuilderFlag, "FP16"):
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} has no BuilderFlag.FP16 (removed in TensorRT 11, which "
            "builds strongly typed networks only): build with TensorRT 10.7-10.x"
        )
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if optimization_level is not None:
        config.builder_optimization_level = optimization_level
    if timing_cache is not None:
        old = timing_cache.read_bytes() if timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(old), False)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(model, batch, anchors).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT could not build the engine (see its log above)")
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def build_tensorrt_variant(
    repo: Path,
    progress: Callable[[str], None] | None = None,
    *,
    batch: Sequence[int] = BATCH_PROFILE,
    anchors: Sequence[int] = ANCHORS_PROFILE,
    optimization_level: int | None = None,
    measure: bool = True,
    timing_cache: Path | None = None,
) -> dict[str, Any]:
    """Build `encoder.plan` / `generator.plan` in `repo`, record the variant; returns its entry.

    With `measure`, the variant is compared with the fp32 ONNX graphs on CPU (ONNX Runtime) on
    the bundled photos and the result is stored as `accuracy_vs_fp32`.
    """
    say = progress or (lambda msg: None)
    repo = Path(repo)
    trt = import_tensorrt()  # fail before touching anything
    name, cc = _device()
    manifest = json.loads((repo / "manifest.json").read_text())
    uses_plugin = manifest.get("kmeans") == "plugin"
    if uses_plugin:
        register_plugin()
    with tempfile.TemporaryDirectory(dir=repo, prefix=".tensorrt.") as tmp:
        for key in GRAPHS:
            src = onnx.load(repo / manifest["graphs"][key]["file"])
            model, n_plugin = add_plugin_namespace(src)
            extra = f", {n_plugin} plugin node(s) -> {PLUGIN_ID}" if n_plugin else ""
            say(f"building the {key} TensorRT engine (fp16, TensorRT {trt.__version__}{extra})")
            plan = build_engine(
                model,
                batch=batch,
                anchors=anchors,
                optimization_level=optimization_level,
                timing_cache=timing_cache,
            )
            (Path(tmp) / f"{key}.plan").write_bytes(plan)
        for key in GRAPHS:  # both built: move them in together
            (Path(tmp) / f"{key}.plan").replace(repo / f"{key}.plan")
    entry = variant_entry(
        repo,
        manifest,
        plugin=uses_plugin,
        tensorrt_version=trt.__version__,
        device=name,
        compute_capability=cc,
        batch=batch,
        anchors=anchors,
    )
    record_variant(repo, entry)
    if measure:
        say("measuring the TensorRT fp16 accuracy against the fp32 ONNX graphs (CPU)")
        entry["accuracy_vs_fp32"] = measure_accuracy(repo)
        record_variant(repo, entry)
        acc = entry["accuracy_vs_fp32"]
        say(
            f"tensorrt fp16: max |ab| diff {acc['fixed_max_abs']:.2e} (fixed anchors), "
            f"anchor agreement {acc['anchor_rows_equal']:.2f}"
        )
    return entry


def measure_accuracy(repo: Path) -> dict[str, Any]:
    """The TensorRT variant against ONNX Runtime CPU on the bundled photos (see gpu_check)."""
    from service.engine.onnx import OnnxEngine
    from service.engine.tensorrt import TensorRTEngine

    from .gpu_check import compare_engines, parity_images

    ref = OnnxEngine(repo, providers="cpu")
    report = compare_engines(ref, TensorRTEngine(repo), parity_images(ref.input_size))
    report["note"] = "TensorRT fp16 vs ONNX Runtime CPU fp32, ab/110 units"
    return report
