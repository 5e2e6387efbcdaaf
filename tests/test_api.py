"""The HTTP API end to end in embedded mode (memory queue, in-process worker, real ONNX Runtime)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service import colorspace
from service.api import create_app
from service.settings import Settings
from tests.images import png_bytes


@pytest.fixture(scope="module")
def gray_photo(photos_dir) -> bytes:
    img = Image.open(photos_dir / "chelsea.jpg").convert("L").resize((200, 120))
    return png_bytes(img)


@pytest.fixture(scope="module")
def client(tiny_repo):
    settings = Settings(queue_url="memory://", model_dir=tiny_repo, threads=2, max_wait_ms=5)
    with TestClient(create_app(settings)) as c:
        yield c


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"model": "ok", "queue": "ok", "workers": "ok"}
    assert r.json()["model"]["name"] == "tiny-test"
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/health/live").status_code == 200


def test_colorize_multipart_keeps_size_and_lightness(client, gray_photo):
    r = client.post("/colorize", files={"image": ("cat.png", gray_photo, "image/png")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-request-id"] and "compute;dur=" in r.headers["server-timing"]
    out = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    src = np.asarray(Image.open(io.BytesIO(gray_photo)).convert("RGB"))
    assert out.shape == src.shape
    assert np.abs(colorspace.lightness(out) - colorspace.lightness(src)).max() <= 1.0


def test_raw_body_formats_and_determinism(client, gray_photo):
    a = client.post(
        "/colorize?format=jpeg&quality=80",
        content=gray_photo,
        headers={"content-type": "image/png"},
    )
    assert a.status_code == 200 and a.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(a.content)).format == "JPEG"
    b = client.post(
        "/colorize?format=jpeg&quality=80",
        content=gray_photo,
        headers={"content-type": "image/png"},
    )
    assert a.content == b.content  # the default seed comes from the image bytes
    w = client.post(
        "/colorize?format=webp&size=model",
        content=gray_photo,
        headers={"content-type": "image/png"},
    )
    assert Image.open(io.BytesIO(w.content)).size == (256, 256)


def test_diverse_shares_one_encoder_pass(client, gray_photo):
    r = client.post(
        "/colorize/diverse", files={"image": ("c.png", gray_photo)}, data={"count": "3"}
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 1, 2]
    images = [base64.b64decode(x["image"]) for x in results]
    assert len(set(images)) == 3
    single = client.post("/colorize", files={"image": ("c.png", gray_photo)})
    assert single.content == images[0]  # T = 0 is the single result
    assert all(len(x["anchors"]) == 8 for x in results)


def test_anchors_then_hints(client, gray_photo):
    r = client.post("/anchors?anchors=5", files={"image": ("c.png", gray_photo)})
    assert r.status_code == 200, r.text
    anchors = r.json()["anchors"]
    assert len(anchors) == 5
    a = anchors[0]
    assert {"token", "x", "y", "superpixel_size", "candidates"} <= a.keys()
    assert len(a["candidates"]) == 5
    probs = [c["probability"] for c in a["candidates"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    hints = [{"token": x["token"], "ab": x["candidates"][-1]["ab"]} for x in anchors]
    auto = client.post("/colorize?anchors=5", files={"image": ("c.png", gray_photo)})
    steered = client.post(
        "/colorize", files={"image": ("c.png", gray_photo)}, data={"hints": json.dumps(hints)}
    )
    assert steered.status_code == 200, steered.text
    assert steered.content != auto.content


def test_async_job_lifecycle(client, gray_photo):
    r = client.post(
        "/colorize",
        files={"image": ("c.png", gray_photo)},
        headers={"Prefer": "respond-async", "Idempotency-Key": "k-1"},
    )
    assert r.status_code == 202 and r.headers["location"] == f"/jobs/{r.json()['id']}"
    job_id = r.json()["id"]
    again = client.post(
        "/colorize",
        files={"image": ("c.png", gray_photo)},
        headers={"Prefer": "respond-async", "Idempotency-Key": "k-1"},
    )
    assert again.json()["id"] == job_id
    queue = client.app.state.runtime.queue
    info = client.portal.call(queue.wait, job_id, 30.0)
    assert info.status.value == "done"
    status = client.get(f"/jobs/{job_id}").json()
    assert status["status"] == "done" and status["links"]["result"] == f"/jobs/{job_id}/result"
    assert status["timings"]["queue_s"] >= 0
    res = client.get(f"/jobs/{job_id}/result")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert client.get(f"/jobs/{job_id}/result/0").content == res.content
    assert client.get(f"/jobs/{job_id}/result/1").status_code == 404
    assert client.delete(f"/jobs/{job_id}").status_code == 409  # finished: not cancellable
    assert client.get("/jobs/doesnotexist00").status_code == 404


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code"),
    [
        (b"", "image/png", 400, "empty_image"),
        (b"hello, I am text", "image/png", 415, "unsupported_image"),
        (b"<html></html>", "text/html", 415, "unsupported_media_type"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png", 415, "unsupported_image"),
    ],
)
def test_bad_uploads(client, body, ctype, status, code):
    r = client.post("/colorize", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_limits_and_bad_options(client, gray_photo):
    bomb = png_bytes(Image.new("L", (10_000, 5_000)))  # 50 MP, a few KB: refused before decoding
    r = client.post("/colorize", content=bomb, headers={"content-type": "image/png"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"
    r = client.post("/colorize?anchors=100", files={"image": ("c.png", gray_photo)})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = client.post(
        "/colorize",
        files={"image": ("c.png", gray_photo)},
        data={"hints": '[{"token": 999, "ab": [1, 2]}]'},
    )
    assert r.status_code == 400 and "token" in r.json()["error"]["message"]
    r = client.post("/colorize", files={"other": ("c.png", gray_photo)})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_image"


def test_metrics_exposed(client, gray_photo):
    client.post("/colorize", files={"image": ("c.png", gray_photo)})
    text = client.get("/metrics").text
    for name in (
        "disco_http_requests_total",
        "disco_http_request_duration_seconds_bucket",
        "disco_queue_depth",
        "disco_batch_size_bucket",
        "disco_stage_duration_seconds",
        "disco_model_info",
        "disco_worker_jobs_reclaimed_total",
        "disco_jobs_total",
    ):
        assert name in text, name
    assert 'stage="decode"' in text and 'stage="encode"' in text and 'stage="compute"' in text


def test_openapi_lists_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in (
        "/colorize",
        "/colorize/diverse",
        "/anchors",
        "/jobs/{job_id}",
        "/jobs/{job_id}/result",
        "/jobs/{job_id}/result/{index}",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert p in paths, p
    body = paths["/colorize"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*"} <= body.keys()


def test_precision_selects_the_model_variant(tmp_path, tiny_model, tiny_repo, gray_photo):
    """DISCO_PRECISION=int8 serves the int8 variant `disco export --quantize int8` wrote; an
    unknown variant keeps the API unready with the reason instead of serving fp32 silently."""
    import shutil

    from export.quantize import add_int8_variant

    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo)
    add_int8_variant(tiny_model, repo)
    answers = {}
    for precision in (None, "int8"):
        settings = Settings(queue_url="memory://", model_dir=repo, threads=2, precision=precision,
                            engine="onnx")  # fmt: skip  # auto may pick OpenVINO bf16 here
        with TestClient(create_app(settings)) as c:
            ready = c.get("/readyz").json()
            assert ready["model"]["precision"] == (precision or "fp32")
            r = c.post("/colorize", files={"image": ("g.png", gray_photo, "image/png")})
            assert r.status_code == 200
            answers[precision] = np.asarray(Image.open(io.BytesIO(r.content)), np.float32)
    assert answers[None].shape == answers["int8"].shape
    assert np.abs(answers[None] - answers["int8"]).max() > 0  # a different graph ran

    settings = Settings(queue_url="memory://", model_dir=repo, precision="int4")
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "no 'int4' variant" in r.json()["checks"]["model"]


def test_embedded_workers_share_the_queue(tiny_repo, gray_photo):
    """DISCO_EMBEDDED_WORKERS=2: two engines with their own batching workers on one queue;
    concurrent requests are spread over both, and the API stays ready while one is left."""
    from concurrent.futures import ThreadPoolExecutor

    settings = Settings(
        queue_url="memory://", model_dir=tiny_repo, threads=1, embedded_workers=2, max_batch=1
    )
    with TestClient(create_app(settings)) as c:
        rt = c.app.state.runtime
        assert len(rt.engines) == len(rt.workers) == 2
        assert rt.engines[0] is not rt.engines[1]
        post = lambda _: c.post("/colorize", files={"image": ("g.png", gray_photo, "image/png")})  # noqa: E731
        with ThreadPoolExecutor(6) as pool:
            codes = [r.status_code for r in pool.map(post, range(12))]
        assert codes == [200] * 12
        done = [w.stats.jobs_done for w in rt.workers]
        assert sum(done) == 12 and min(done) > 0, done
        assert c.get("/readyz").status_code == 200
