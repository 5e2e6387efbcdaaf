"""ONNX Runtime engine: serves a model repository written by `disco export`, without torch.

CPUExecutionProvider by default; with ``providers=None`` the CUDA EP when this onnxruntime has
it; TensorRT only when asked for. Provider options (HEURISTIC conv search, arena, TensorRT fp16,
caches and DISCO_MAX_BATCH profiles) come from `ort_providers.provider_config`. Sessions are
built once (the API / worker lifespan owns the engine) and reused.

On a GPU EP (``io_binding=None``, the default, turns it on there) the two graphs run with I/O
binding (`ort_binding.OrtBinder`): the encoder's affinity, tokens, ... stay on the device as
OrtValues and feed the generator directly; only hint_mask, sampled_bins and the final ab are
copied to the host. On CPU the plain numpy `session.run` path is kept (``io_binding=True``
forces the bound path there too, with CPU OrtValues: the tests hold it equal to the plain one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import Encoded, generator_feeds
from .ort_binding import DeviceTensor, OrtBinder
from .ort_providers import CPU, TENSORRT, provider_config

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
TRT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "disco" / "ort-trt"


class ModelRepositoryError(ValueError):
    """The model folder is missing, incomplete or from an incompatible exporter."""


def load_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "manifest.json"
    if not path.is_file():
        raise ModelRepositoryError(
            f"{model_dir} is not a model repository (no manifest.json): create one with "
            "`disco export --checkpoint PATH --out DIR`"
        )
    manifest = json.loads(path.read_text())
    for key in ("encoder", "generator"):
        f = Path(model_dir) / manifest["graphs"][key]["file"]
        if not f.is_file():
            raise ModelRepositoryError(f"{model_dir}: {f.name} listed in the manifest is missing")
    return manifest


_EMPTY = np.empty(0, np.float32)


def _on_device(x: Any) -> Any:
    """A DeviceTensor as it is (bound in place); a host array as the generator declares it."""
    return x if isinstance(x, DeviceTensor) else np.ascontiguousarray(x, np.float32)


class OnnxEngine:
    name = "onnx"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        providers: str | None = "cpu",
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = 1,
        variant: str | None = None,
        max_batch: int | None = None,
        trt_cache_dir: str | Path | None = None,
        io_binding: bool | None = None,
    ):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        self.manifest = load_manifest(self.model_dir)
        self.input_size = int(self.manifest["input_size"])
        self.levels = int(self.manifest["diverse_levels"])
        self.variant = variant or self.manifest.get("precision", "fp32")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = intra_op_threads or int(os.environ.get("DISCO_THREADS", "0") or 0)
        if inter_op_threads:
            so.inter_op_num_threads = inter_op_threads
        if self.manifest.get("custom_ops"):
            from .plugin import register

            so.register_custom_ops_library(register())
        files = self._files(variant)
        available = ort.get_available_providers()
        max_batch = max_batch or int(os.environ.get("DISCO_MAX_BATCH", "8") or 8)
        cache_dir = Path(trt_cache_dir or TRT_CACHE_DIR) / f"{self.manifest['name']}-{self.variant}"
        sessions = {}
        for graph in ("encoder", "generator"):
            config = provider_config(
                providers, available, inputs=self.manifest["graphs"][graph].get("inputs", ()),
                max_batch=max_batch, cache_dir=cache_dir,
            )  # fmt: skip
            if config[0][0] == "TensorrtExecutionProvider":
                cache_dir.mkdir(parents=True, exist_ok=True)
            sessions[graph] = ort.InferenceSession(str(files[graph]), so, providers=config)
        self.encoder, self.generator = sessions["encoder"], sessions["generator"]
        self.providers = [p for p, _ in config]
        on_gpu = self.providers[0] != CPU
        self.binder: OrtBinder | None = None
        if io_binding or (io_binding is None and on_gpu):
            gpu = [(p, o) for p, o in config if p not in (TENSORRT, CPU)]  # the gather graph
            self.binder = OrtBinder(
                self.encoder, self.generator,
                device="cuda" if on_gpu else "cpu",
                device_id=int(gpu[0][1].get("device_id", 0)) if gpu else 0,
                providers=[*gpu, (CPU, {})],
            )  # fmt: skip

    def _files(self, variant: str | None) -> dict[str, Path]:
        graphs = self.manifest["graphs"]
        if variant and variant != self.manifest.get("precision", "fp32"):
            if variant.startswith("tensorrt"):
                raise ModelRepositoryError(f"{variant} holds TensorRT plans: use --engine tensorrt")
            try:
                graphs = {**graphs, **self.manifest["variants"][variant]["graphs"]}
            except KeyError:
                known = sorted(self.manifest.get("variants", {}))
                msg = f"no {variant!r} variant in {self.model_dir} (has {known})"
                raise ModelRepositoryError(msg) from None
        return {k: self.model_dir / v["file"] for k, v in graphs.items()}

    @property
    def info(self) -> dict[str, str]:
        m = self.manifest
        info = {"name": m["name"], "version": str(m["version"]), "engine": self.name,
                "precision": self.variant, "providers": ",".join(self.providers)}  # fmt: skip
        if getattr(self, "selection", ""):  # why `auto` chose this engine
            info["selection"] = self.selection
        return info

    def encode(self, l_norm: np.ndarray, init_idx: np.ndarray) -> Encoded:
        if self.binder is not None:
            named = self.binder.encode(l_norm, init_idx)
            return Encoded(*(named[f] for f in Encoded.__dataclass_fields__))  # graph names
        outs = self.encoder.run(
            None,
            {"l_norm": np.ascontiguousarray(l_norm, np.float32),
             "init_idx": np.ascontiguousarray(init_idx, np.int64)},
        )  # fmt: skip
        named = dict(zip((o.name for o in self.encoder.get_outputs()), outs, strict=True))
        return Encoded(
            named["affinity"], named["tokens"], named["enc_out"], named["pal_logit"],
            named["spixel_sizes"], named["hint_mask"], named["sampled_bins"],
        )  # fmt: skip

    def generate(
        self,
        l_norm: np.ndarray,
        affinity: np.ndarray,
        tokens: np.ndarray,
        hint_mask: np.ndarray,
        hint_bins: np.ndarray,
    ) -> np.ndarray:
        if self.binder is not None and (
            isinstance(affinity, DeviceTensor) or isinstance(tokens, DeviceTensor)
        ):
            feeds: dict[str, Any] = {
                **generator_feeds(l_norm, _EMPTY, _EMPTY, hint_mask, hint_bins)
            }
            feeds.update(affinity=_on_device(affinity), tokens=_on_device(tokens))
            return self.binder.generate(feeds)
        feeds = generator_feeds(l_norm, affinity, tokens, hint_mask, hint_bins)
        (ab,) = self.generator.run(None, feeds)
        return ab

    def warmup(self, batch: int = 1) -> None:
        """One full pass so the first request does not pay for lazy allocations."""
        s = self.input_size
        n_tokens = (s // 16) ** 2
        init = np.tile(np.arange(8, dtype=np.int64), (batch, 1))
        enc = self.encode(np.zeros((batch, 1, s, s), np.float32), init)
        self.generate(np.zeros((batch, 1, s, s), np.float32), enc.affinity, enc.tokens,
                      enc.hint_mask, enc.sampled_bins[:, 0].reshape(batch, n_tokens))  # fmt: skip
