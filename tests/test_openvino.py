"""The OpenVINO engine: f32 parity with the conformance vectors, bf16 accuracy on the bundled
model, `auto` selection and its fallbacks, and the engine behind the HTTP API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

pytest.importorskip("openvino")

from service.api import create_app
from service.cli import app
from service.engine.factory import choose_engine, open_engine
from service.engine.onnx import OnnxEngine
from service.engine.openvino import OpenVinoEngine, cpu_has_bf16
from service.settings import BUNDLED_MODEL_DIR, Settings

runner = CliRunner()
FIXED = [(18, (20, 60)), (29, (-30, 40)), (74, (0, -40)), (87, (50, 30)),
         (133, (10, 10)), (154, (-10, -20)), (200, (30, -50)), (237, (0, 70))]  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISCO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ov-cache"))


def _run_cli(*args):
    result = runner.invoke(app, ["colorize", *map(str, args)])
    assert result.exit_code == 0, result.output + repr(result.exception)


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_f32_engine_reproduces_vectors(tmp_path, seed0_repo, vectors_dir, image, monkeypatch):
    monkeypatch.setenv("DISCO_PRECISION", "f32")
    src = vectors_dir / f"{image}_gray256.png"
    _run_cli(src, "-o", tmp_path / "km", "--engine", "openvino", "--model", seed0_repo,
             "--seed", 130, "--save-ab")  # fmt: skip
    ref = np.load(vectors_dir / f"{image}_seed0_kmeans_rng130.npz")
    ab = np.load(tmp_path / "km" / f"{image}_gray256.ab.npy")
    assert np.abs(ab - ref["final_ab"]).max() <= 5e-4
    hints = tmp_path / "hints.json"
    hints.write_text(json.dumps([{"token": t, "ab": list(ab)} for t, ab in FIXED]))
    _run_cli(src, "-o", tmp_path / "fx", "--engine", "openvino", "--model", seed0_repo,
             "--hints", hints, "--save-ab")  # fmt: skip
    ref = np.load(vectors_dir / f"{image}_seed0_fixed.npz")
    ab = np.load(tmp_path / "fx" / f"{image}_gray256.ab.npy")
    assert np.abs(ab - ref["final_ab"]).max() <= 5e-4


def test_f32_anchors_equal_the_onnx_engine(seed0_repo, vectors_dir):
    ov, ort = OpenVinoEngine(seed0_repo, precision="f32"), OnnxEngine(seed0_repo)
    for image in ("astronaut", "coffee"):
        v = np.load(vectors_dir / f"{image}_seed0_kmeans_rng130.npz")
        l_norm = np.load(vectors_dir / f"{image}_seed0_fixed.npz")["input_L"]
        a, b = (
            ort.encode(l_norm, v["kmeans_init_idx"][None]),
            ov.encode(l_norm, v["kmeans_init_idx"][None]),
        )
        assert np.array_equal(a.hint_mask, b.hint_mask)
        assert np.array_equal(a.sampled_bins, b.sampled_bins)


def test_export_records_openvino_accuracy(seed0_repo):
    m = json.loads((seed0_repo / "manifest.json").read_text())["openvino"]
    assert m["available"] and m["f32"]["max_abs"] <= 5e-4
    if m["cpu_bf16"]:
        assert 30 < m["bf16"]["ab_psnr_db"] < m["f32"]["ab_psnr_db"]


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16")
def test_bf16_accuracy_on_the_bundled_model(photos_dir):
    """Measured here, not read from the manifest: bf16 vs fp32 ONNX Runtime, same anchors."""
    from service import colorspace
    from service.anchors import init_indices
    from service.imageio import read_image

    images = [read_image(p) for p in sorted(photos_dir.glob("*.jpg"))[:3]]
    l_norm = np.concatenate([colorspace.preprocess(im) for im in images])
    ort, ov = OnnxEngine(BUNDLED_MODEL_DIR), OpenVinoEngine(BUNDLED_MODEL_DIR, precision="bf16")
    init = np.stack([init_indices(i, 8, 256) for i in range(len(images))])
    a, b = ort.encode(l_norm, init), ov.encode(l_norm, init)
    ref = ort.generate(l_norm, a.affinity, a.tokens, a.hint_mask, a.sampled_bins[:, 0])
    got = ov.generate(l_norm, b.affinity, b.tokens, a.hint_mask, a.sampled_bins[:, 0])
    rmse = np.sqrt(np.mean(((ref - got) * 110.0) ** 2))
    psnr = 20 * np.log10(220.0 / rmse)
    print(f"bundled model, OpenVINO bf16 vs ONNX Runtime fp32: {psnr:.1f} dB")
    assert psnr >= 45.0


def test_auto_prefers_openvino_bf16_where_it_measured_well():
    """The bundled (trained) model's export measured bf16 >= 45 dB: auto serves it in bf16."""
    acc = json.loads((BUNDLED_MODEL_DIR / "manifest.json").read_text())["openvino"]["bf16"]
    kind, precision, why = choose_engine(BUNDLED_MODEL_DIR, has_bf16=lambda: True)
    assert acc["ab_psnr_db"] >= 45 and (kind, precision) == ("openvino", "bf16"), why
    assert f"{acc['ab_psnr_db']:.1f} dB" in why


def test_auto_falls_back_without_bf16_or_openvino(tiny_repo, tmp_path, monkeypatch):
    kind, precision, why = choose_engine(tiny_repo, has_bf16=lambda: False)
    assert (kind, precision) == ("onnx", None) and "no bf16" in why
    eng = open_engine("auto", tiny_repo)  # the real CPU check; then without OpenVINO at all
    assert eng.info["selection"].startswith("auto: ")
    kind, _, why = choose_engine(tiny_repo, variant="int8", has_bf16=lambda: True)
    assert kind == "onnx" and "int8" in why
    low = tmp_path / "low"  # a model whose bf16 export measured under 45 dB
    low.mkdir()
    for f in tiny_repo.iterdir():
        (low / f.name).symlink_to(f)
    m = json.loads((tiny_repo / "manifest.json").read_text())
    m["openvino"] = {"available": True, "cpu_bf16": True, "bf16": {"ab_psnr_db": 40.0}}
    (low / "manifest.json").unlink()
    (low / "manifest.json").write_text(json.dumps(m))
    kind, _, why = choose_engine(low, has_bf16=lambda: True)
    assert kind == "onnx" and "40.0 dB" in why
    monkeypatch.setitem(__import__("sys").modules, "service.engine.openvino", None)
    eng = open_engine("auto", tiny_repo)
    assert eng.name == "onnx" and "openvino is not installed" in eng.info["selection"]


def test_openvino_engine_through_the_api(tiny_repo, photos_dir):
    from PIL import Image

    gray = Image.open(photos_dir / "chelsea.jpg").convert("L").resize((200, 150))
    import io

    buf = io.BytesIO()
    gray.save(buf, format="PNG")
    settings = Settings(queue_url="memory://", model_dir=tiny_repo, threads=2, engine="openvino",
                        precision="f32", max_wait_ms=5)  # fmt: skip
    with TestClient(create_app(settings)) as c:
        ready = c.get("/readyz").json()
        assert ready["model"]["engine"] == "openvino" and ready["model"]["precision"] == "f32"
        r = c.post("/colorize", files={"image": ("g.png", buf.getvalue(), "image/png")})
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(r.content)).size == (200, 150)
        assert 'engine="openvino"' in c.get("/metrics").text
    settings = Settings(queue_url="memory://", model_dir=tiny_repo, threads=2, max_wait_ms=5)
    with TestClient(create_app(settings)) as c:  # the default, auto: says what and why
        model = c.get("/readyz").json()["model"]
        assert model["engine"] in ("openvino", "onnx") and model["selection"].startswith("auto: ")
        assert "selection=" in c.get("/metrics").text


def test_compiled_models_are_cached(tiny_repo, tmp_path):
    """A second engine on the same cache dir loads the compiled blobs instead of compiling."""
    first = OpenVinoEngine(tiny_repo, precision="f32", cache=tmp_path / "c", threads=1)
    blobs = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert any(b.endswith(".blob") for b in blobs), blobs
    second = OpenVinoEngine(tiny_repo, precision="f32", cache=tmp_path / "c", threads=1)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == blobs  # nothing recompiled
    x = np.zeros((1, 1, 256, 256), np.float32)
    init = np.arange(8, dtype=np.int64)[None]
    assert np.array_equal(first.encode(x, init).enc_out, second.encode(x, init).enc_out)


def test_workers_starting_together_share_a_cold_cache(tmp_path):
    """Several workers on one host, one cold model cache: every one must come up. Without the
    cache lock, 6 processes started together failed in about half the trials here: one died on
    "cannot set permissions: No such file" for a blob another had replaced, or took SIGBUS."""
    import subprocess
    import sys

    code = (
        "import sys; from service.engine.openvino import OpenVinoEngine; "
        "from service.settings import BUNDLED_MODEL_DIR; "
        "OpenVinoEngine(BUNDLED_MODEL_DIR, cache=sys.argv[1], threads=1)"
    )
    for trial in range(3):
        cache = tmp_path / f"cache{trial}"
        cache.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", code, str(cache)], stderr=subprocess.PIPE)
                 for _ in range(6)]  # fmt: skip
        results = [(p.wait(timeout=300), p.stderr.read().decode(errors="replace")[-400:])
                   for p in procs]  # fmt: skip
        assert all(rc == 0 for rc, _ in results), results
        assert list(cache.glob("*.blob")), "the cache was not written"
