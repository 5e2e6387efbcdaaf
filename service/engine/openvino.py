"""OpenVINO CPU engine: the exported graphs in bf16 (AMX / AVX512_BF16 CPUs) or f32, torch-free.

OpenVINO has no binding for the encoder's custom `ai.onnx.contrib::DiscoKMeansAnchors` node,
so the encoder is cut at load time just before it (OpenVINO's ONNX frontend extracts the trunk
that ends at the k-means inputs) and the anchors come from the same numpy reference the ONNX
Runtime plugin binds (`service.engine.plugin.kmeans_anchors`): in f32 the anchors equal the ONNX
engine's. Compiled models are cached in OpenVINO's CACHE_DIR, so a restart skips compilation.

Settings (environment): DISCO_THREADS (inference threads, 0 = all cores), DISCO_OV_STREAMS
(parallel inference streams, default 1: the batching worker runs one request at a time) and
DISCO_CACHE_DIR (default $XDG_CACHE_HOME/disco or ~/.cache/disco; OpenVINO blobs under
`openvino/`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .base import Encoded, generator_feeds
from .onnx import ModelRepositoryError, load_manifest
from .plugin import KMEANS_ITERS, KMEANS_TOL, kmeans_anchors

TRUNK_OUTPUTS = ("affinity", "tokens", "enc_out", "pal_logit", "spixel_sizes", "sampled_bins")
PRECISIONS = {"bf16": "bf16", "f32": "f32", "fp32": "f32"}  # DISCO_PRECISION -> OpenVINO hint
log = logging.getLogger("disco.engine")


def cache_dir() -> Path:
    """Writable cache root: DISCO_CACHE_DIR, else $XDG_CACHE_HOME/disco, else ~/.cache/disco."""
    explicit = os.environ.get("DISCO_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "disco"


@contextlib.contextmanager
def cache_lock(cache: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on the model cache while compiling into it.

    OpenVINO writes its blobs without coordinating between processes: with several workers
    starting on one host on a cold cache, one of them died ("cannot set permissions: No such
    file" on a blob another had just replaced) or took SIGBUS reading a blob being rewritten.
    Under the lock the first worker compiles and writes; the others then load its blobs.
    """
    try:
        f = open(cache / ".lock", "a+b") if cache is not None else None  # noqa: SIM115
    except OSError as e:  # a read-only cache: compiling will not write to it either
        log.warning("OpenVINO model cache lock unavailable (%s)", e)
        f = None
    if f is None:
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cpu_has_bf16() -> bool:
    """True when OpenVINO's CPU plugin can run bf16 natively (AMX or AVX512_BF16)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _kmeans_attrs(model_dir: Path) -> tuple[int, float]:
    """iters / tol of the exported k-means node (so the numpy call matches the ONNX engine's)."""
    try:
        import onnx
    except ImportError:  # the runtime image has no onnx: the exporter always writes the defaults
        return KMEANS_ITERS, KMEANS_TOL
    m = onnx.load(str(model_dir / "encoder.onnx"), load_external_data=False)
    for node in m.graph.node:
        if node.op_type == "DiscoKMeansAnchors":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            return int(attrs.get("iters", KMEANS_ITERS)), float(attrs.get("tol", KMEANS_TOL))
    return KMEANS_ITERS, KMEANS_TOL


class OpenVinoEngine:
    name = "openvino"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        precision: str | None = None,
        threads: int | None = None,
        streams: int | None = None,
        cache: str | Path | None = None,
        has_bf16: bool | None = None,
    ):
        import openvino as ov

        self.model_dir = Path(model_dir)
        self.manifest = load_manifest(self.model_dir)
        self.input_size = int(self.manifest["input_size"])
        self.levels = int(self.manifest["diverse_levels"])
        if self.manifest.get("kmeans", "plugin") != "plugin":
            raise ModelRepositoryError(
                f"{self.model_dir}: the OpenVINO engine needs a plugin-k-means export "
                "(`disco export --kmeans plugin`, the default)"
            )
        if precision is None:
            precision = "bf16" if (cpu_has_bf16() if has_bf16 is None else has_bf16) else "f32"
        if precision not in PRECISIONS:
            raise ModelRepositoryError(
                f"OpenVINO precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
            )
        self.precision = PRECISIONS[precision]
        self.selection = ""  # why this engine was chosen (set by `auto`)
        threads = threads if threads is not None else int(os.environ.get("DISCO_THREADS") or 0)
        streams = streams if streams is not None else int(os.environ.get("DISCO_OV_STREAMS") or 1)
        self.cache_dir: Path | None = Path(cache) if cache else cache_dir() / "openvino"
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a read-only home: serve anyway, compile on every start
            log.warning("OpenVINO model cache disabled (%s): set DISCO_CACHE_DIR", e)
            self.cache_dir = None
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "NUM_STREAMS": str(streams),
            "PERFORMANCE_HINT": "LATENCY",
        }
        if self.cache_dir is not None:
            config["CACHE_DIR"] = str(self.cache_dir)
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        enc_file = self.model_dir / self.manifest["graphs"]["encoder"]["file"]
        gen_file = self.model_dir / self.manifest["graphs"]["generator"]["file"]
        trunk = ov.convert_model(str(enc_file), output=list(TRUNK_OUTPUTS))  # init_idx: unused
        with cache_lock(self.cache_dir):
            self.trunk = core.compile_model(trunk, "CPU", config)
            self.generator = core.compile_model(str(gen_file), "CPU", config)
        self._trunk_req = self.trunk.create_infer_request()
        self._trunk_takes_init = any("init_idx" in i.get_names() for i in self.trunk.inputs)
        self._gen_req = self.generator.create_infer_request()
        self.kmeans_iters, self.kmeans_tol = _kmeans_attrs(self.model_dir)

    @property
    def info(self) -> dict[str, str]:
        m = self.manifest
        info = {"name": m["name"], "version": str(m["version"]), "engine": self.name,
                "precision": self.precision, "providers": "openvino:CPU"}  # fmt: skip
        if self.selection:
            info["selection"] = self.selection
        return info

    def encode(self, l_norm: np.ndarray, init_idx: np.ndarray) -> Encoded:
        feeds = {"l_norm": np.ascontiguousarray(l_norm, np.float32)}
        if self._trunk_takes_init:  # the cut leaves k-means' init_idx as a dangling input
            feeds["init_idx"] = np.ascontiguousarray(init_idx, np.int64)
        res = self._trunk_req.infer(feeds)
        out = {name: np.array(res[self.trunk.output(name)]) for name in TRUNK_OUTPUTS}
        hint_mask, _ = kmeans_anchors(
            out["enc_out"].astype(np.float32), out["spixel_sizes"].astype(np.float32),
            np.asarray(init_idx, np.int64), self.kmeans_iters, self.kmeans_tol,
        )  # fmt: skip
        return Encoded(
            out["affinity"], out["tokens"], out["enc_out"], out["pal_logit"],
            out["spixel_sizes"], hint_mask, out["sampled_bins"].astype(np.int64),
        )  # fmt: skip

    def generate(
        self,
        l_norm: np.ndarray,
        affinity: np.ndarray,
        tokens: np.ndarray,
        hint_mask: np.ndarray,
        hint_bins: np.ndarray,
    ) -> np.ndarray:
        feeds = generator_feeds(l_norm, affinity, tokens, hint_mask, hint_bins)
        res = self._gen_req.infer(feeds)
        return np.array(res[self.generator.output(0)])

    def warmup(self, batch: int = 1) -> None:
        """One full pass so the first request does not pay for lazy allocations."""
        s = self.input_size
        n_tokens = (s // 16) ** 2
        init = np.tile(np.arange(8, dtype=np.int64), (batch, 1))
        enc = self.encode(np.zeros((batch, 1, s, s), np.float32), init)
        self.generate(np.zeros((batch, 1, s, s), np.float32), enc.affinity, enc.tokens,
                      enc.hint_mask, enc.sampled_bins[:, 0].reshape(batch, n_tokens))  # fmt: skip
