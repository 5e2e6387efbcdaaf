"""Speed options of the torch engine (export/torch_engine.py): parsing, bf16 autocast on CPU,
the DLPack k-means bridge, and the CUDA-only options (skipped here with the reason).

bf16 tolerance: on the committed (anchor-following) demo checkpoint and the test photos, bf16
autocast against fp32 measured ab-PSNR 48.8 dB, mean |ab| 0.0025, 99.9th percentile 0.096 and
max 0.31 at a few edge pixels (ab / 110 units; torch 2.13 CPU, 2026-12-03; the earlier demo
model: max 0.071, mean 0.0029). The test asks for >= 45 dB, mean <= 0.01, 99.9th pct <= 0.15.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.torch_engine import (  # noqa: E402
    OptionUnavailable,
    TorchEngine,
    TorchOptions,
    kmeans_via_dlpack,
    open_torch_engine,
)
from service import colorspace  # noqa: E402
from service.imageio import read_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "models" / "disco-demo" / "disco-demo.pth.tar"
# bf16 vs fp32 with the same anchors (ab/110). A max bound is fragile: on the anchor-following
# disco-demo a few pixels at sharp edges differ by 0.31 while ab-PSNR is 48.8 dB and the mean
# 0.0025 (measured on CPU); so: the bar `auto` sets for bf16 (45 dB), the mean, the 99.9th pct.
BF16_MIN_PSNR_DB, BF16_MEAN_ABS, BF16_P999_ABS = 45.0, 0.01, 0.15


def _assert_bf16_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    diff = np.abs(got - want)
    psnr = 10 * np.log10(220.0**2 / max(float(np.mean((diff * 110.0) ** 2)), 1e-12))
    assert psnr >= BF16_MIN_PSNR_DB, f"{what}: ab-PSNR {psnr:.1f} dB"
    assert diff.mean() <= BF16_MEAN_ABS, f"{what}: mean |ab| diff {diff.mean():.4f}"
    p999 = float(np.quantile(diff, 0.999))
    assert p999 <= BF16_P999_ABS, f"{what}: 99.9th pct |ab| diff {p999:.4f}"


CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="no CUDA device (torch.cuda.is_available() is False)"
)
HAS_CUPY = __import__("importlib.util").util.find_spec("cupy") is not None


# -- parsing -------------------------------------------------------------------------------------


def test_defaults_are_the_fp32_eager_reference():
    opts = TorchOptions.parse("")
    assert opts == TorchOptions()
    assert (opts.autocast, opts.cuda_graphs, opts.compile, opts.kmeans) == (
        "none",
        False,
        False,
        "auto",
    )
    assert opts.suffix == ""


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("bf16", TorchOptions(autocast="bf16")),
        ("FP16, cuda_graphs", TorchOptions(autocast="fp16", cuda_graphs=True)),
        ("autocast=bf16,graphs=off", TorchOptions(autocast="bf16")),
        ("compile", TorchOptions(compile=True)),
        ("compile=max-autotune,kmeans=cupy",
         TorchOptions(compile=True, compile_mode="max-autotune", kmeans="cupy")),
        ("bf16,fp32", TorchOptions()),
    ],
)  # fmt: skip
def test_parse(spec, want):
    assert TorchOptions.parse(spec) == want


@pytest.mark.parametrize(
    "spec", ["int8", "autocast=fp8", "kmeans=gpu", "graphs=maybe", "compile=fastest"]
)
def test_parse_rejects_unknown(spec):
    with pytest.raises(ValueError):
        TorchOptions.parse(spec)


def test_suffix_names_the_engine(tiny_model):
    assert TorchOptions.parse("bf16,graphs,compile").suffix == "-bf16-graphs-compile"
    assert TorchEngine(tiny_model, options="bf16").name == "torch-bf16"
    assert TorchEngine(tiny_model, autocast=torch.bfloat16).options.autocast == "bf16"  # old kw


def test_env_options(tiny_model, monkeypatch):
    monkeypatch.setenv("DISCO_TORCH_OPTIONS", "bf16,kmeans=numpy")
    eng = open_torch_engine(None)
    assert eng.options == TorchOptions(autocast="bf16", kmeans="numpy") and eng.kmeans == "numpy"


@pytest.mark.skipif(CUDA, reason="this machine has CUDA: the CPU refusals do not apply")
@pytest.mark.parametrize(
    ("spec", "why"),
    [("fp16", "fp16 autocast needs CUDA"), ("cuda-graphs", "CUDA graphs need a CUDA device"),
     ("kmeans=cupy", "kmeans=cupy needs a CUDA device")],
)  # fmt: skip
def test_cuda_only_options_refused_on_cpu(tiny_model, spec, why):
    with pytest.raises(OptionUnavailable, match=why):
        TorchEngine(tiny_model, "cpu", options=spec)


def test_kmeans_auto_is_torch_on_cpu(tiny_model):
    assert TorchEngine(tiny_model).kmeans == "torch"


# -- numerics on CPU -----------------------------------------------------------------------------


def _photos() -> np.ndarray:
    files = sorted((ROOT / "tests" / "data" / "photos").glob("*.jpg"))
    assert files, "tests/data/photos has no photos"
    return np.concatenate([colorspace.preprocess(read_image(f)) for f in files])


def _init(n: int) -> np.ndarray:
    init = np.tile(np.arange(0, 256, 32, dtype=np.int64), (n, 1))
    init[-1, 5:] = -1
    return init


@pytest.fixture(scope="module")
def demo_model():
    if not CKPT.is_file():
        pytest.skip(f"{CKPT} is not in this checkout")
    from export.model.checkpoint import load_checkpoint

    torch.set_num_threads(2)
    return load_checkpoint(CKPT)


def test_bf16_autocast_close_to_fp32(demo_model):
    l_norm = _photos()
    ref, bf = TorchEngine(demo_model), TorchEngine(demo_model, options="bf16")
    enc = ref.encode(l_norm, _init(len(l_norm)))
    enc_bf = bf.encode(l_norm, _init(len(l_norm)))
    assert np.abs(enc_bf.pal_logit - enc.pal_logit).max() > 0, "autocast changed nothing"
    bins = enc.sampled_bins[:, 0]
    ab = ref.generate(l_norm, enc.affinity, enc.tokens, enc.hint_mask, bins)
    ab_bf = bf.generate(l_norm, enc_bf.affinity, enc_bf.tokens, enc.hint_mask, bins)
    assert ab_bf.dtype == np.float32 and np.isfinite(ab_bf).all()
    _assert_bf16_close(ab_bf, ab, "bf16")


def test_default_engine_unchanged_by_the_options_code(demo_model):
    """The fp32 eager default equals the model's own forward (no autocast, torch k-means)."""
    from export.model.anchors import locate_anchors

    l_norm = _photos()
    eng = TorchEngine(demo_model)
    enc = eng.encode(l_norm, _init(len(l_norm)))
    with torch.inference_mode():
        raw = demo_model.encode(torch.from_numpy(l_norm))
        mask, _, _ = locate_anchors(
            raw.enc_out, raw.spixel_sizes, torch.from_numpy(_init(len(l_norm)))
        )
    assert np.array_equal(enc.affinity, raw.affinity.numpy())
    assert np.array_equal(enc.hint_mask, mask.numpy())


def test_dlpack_kmeans_bridge_equals_torch_kmeans(tiny_model):
    """The array-namespace k-means through DLPack (numpy here, CuPy on a GPU) gives the torch
    engine's anchors."""
    rng = np.random.default_rng(0)
    l_norm = rng.uniform(-1, 1, (3, 1, 256, 256)).astype(np.float32)
    a = TorchEngine(tiny_model, options="kmeans=torch").encode(l_norm, _init(3))
    b = TorchEngine(tiny_model, options="kmeans=numpy").encode(l_norm, _init(3))
    assert a.hint_mask.sum() > 0
    assert np.array_equal(a.hint_mask, b.hint_mask)
    with pytest.raises(ValueError, match="unknown k-means backend"):
        kmeans_via_dlpack(
            "jax", *(torch.zeros(1, 2, 4), torch.zeros(1, 4), torch.zeros(1, 1, dtype=torch.int64))
        )


# -- CUDA only -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda_model(demo_model):
    return demo_model.to("cuda") if CUDA else None


def _cuda_pair(model, spec: str, tol: float | None = None) -> None:
    """`spec` on CUDA vs fp32 eager on CUDA: max |ab| <= tol, or bf16-close when tol is None."""
    l_norm = _photos()
    ref = TorchEngine(model, "cuda")
    eng = TorchEngine(model, "cuda", options=spec)
    for _ in range(2):  # the second call replays captured graphs / reuses compiled code
        enc, enc2 = ref.encode(l_norm, _init(len(l_norm))), eng.encode(l_norm, _init(len(l_norm)))
        bins = enc.sampled_bins[:, 0]
        ab = ref.generate(l_norm, enc.affinity, enc.tokens, enc.hint_mask, bins)
        ab2 = eng.generate(l_norm, enc2.affinity, enc2.tokens, enc.hint_mask, bins)
        if tol is None:
            _assert_bf16_close(ab2, ab, spec)
        else:
            diff = np.abs(ab2 - ab).max()
            assert diff <= tol, f"{spec}: max |ab| diff {diff:.3e}"


@needs_cuda
def test_cuda_bf16_and_fp16_autocast(cuda_model):
    _cuda_pair(cuda_model, "bf16")
    _cuda_pair(cuda_model, "fp16")


@needs_cuda
def test_cuda_graphs_equal_eager(cuda_model):
    _cuda_pair(cuda_model, "cuda-graphs", 1e-4)
    _cuda_pair(cuda_model, "bf16,cuda-graphs")


@needs_cuda
def test_torch_compile_close_to_eager(cuda_model):
    _cuda_pair(cuda_model, "compile", 1e-3)


@needs_cuda
@pytest.mark.skipif(not HAS_CUPY, reason="CuPy is not installed")
def test_cupy_kmeans_on_device(cuda_model):
    l_norm = _photos()
    a = TorchEngine(cuda_model, "cuda", options="kmeans=torch").encode(l_norm, _init(len(l_norm)))
    b = TorchEngine(cuda_model, "cuda", options="kmeans=cupy").encode(l_norm, _init(len(l_norm)))
    overlap = np.minimum(a.hint_mask, b.hint_mask).sum() / a.hint_mask.sum()
    assert overlap >= 0.9, f"anchor overlap {overlap:.3f} (near-ties may differ on a GPU)"
