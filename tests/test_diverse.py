"""POST /colorize/diverse over real HTTP (the app's TestClient: lifespan, in-process worker,
memory queue) on the bundled disco-demo model, with the engine `auto` picks on this machine
and with ONNX Runtime: K distinct images of the input's size, their anchors, the single result
as variant 0, and 4xx for a bad `count`."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api import create_app
from service.params import MAX_DIVERSE
from service.settings import BUNDLED_MODEL_DIR, Settings
from tests.images import png_bytes

SIZE = (203, 131)  # (width, height): not the model's 256 x 256, not square, odd


@pytest.fixture(scope="module")
def photo(photos_dir) -> bytes:
    return png_bytes(Image.open(photos_dir / "chelsea.jpg").convert("L").resize(SIZE))


@pytest.fixture(scope="module", params=["auto", "onnx"])
def client(request, tmp_path_factory):
    settings = Settings(
        queue_url="memory://", model_dir=BUNDLED_MODEL_DIR, engine=request.param, threads=2,
        max_wait_ms=0,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:  # OpenVINO's compiled-model cache
        mp.setenv("DISCO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ov-cache"))
        with TestClient(create_app(settings)) as c:
            ready = c.get("/readyz")
            assert ready.status_code == 200, ready.text
            if request.param == "onnx":
                assert ready.json()["model"]["engine"] == "onnx"
            yield c


def _diverse(client: TestClient, photo: bytes, **data: str) -> list[dict]:
    r = client.post("/colorize/diverse", files={"image": ("cat.png", photo)}, data=data)
    assert r.status_code == 200, r.text
    assert r.json()["content_type"] == "image/png"
    return r.json()["results"]


def _rgb(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def test_k3_distinct_images_of_the_input_size_with_anchors(client, photo):
    results = _diverse(client, photo, count="3")
    assert [x["index"] for x in results] == [0, 1, 2]
    images = [_rgb(base64.b64decode(x["image"])) for x in results]
    for img in images:
        assert img.shape == (SIZE[1], SIZE[0], 3)
    for i in range(3):
        for j in range(i + 1, 3):
            diff = np.abs(images[i].astype(np.int16) - images[j].astype(np.int16))
            assert diff.max() > 0, f"results {i} and {j} are the same image"
    anchors = [x["anchors"] for x in results]
    assert [len(a) for a in anchors] == [8, 8, 8]  # the default anchor count
    for a in anchors:
        for anchor in a:
            assert {"token", "row", "col", "bin", "ab"} <= anchor.keys()
            assert anchor["token"] == 16 * anchor["row"] + anchor["col"]
            assert 0 <= anchor["bin"] < 313 and len(anchor["ab"]) == 2
    # one k-means for the job: the same anchor tokens in every result, other colours
    tokens = [sorted(x["token"] for x in a) for a in anchors]
    assert tokens[0] == tokens[1] == tokens[2]
    bins = [[x["bin"] for x in sorted(a, key=lambda x: x["token"])] for a in anchors]
    assert bins[0] != bins[1] and bins[0] != bins[2]


def test_anchors_and_count_options(client, photo):
    results = _diverse(client, photo, count="5", anchors="4", seed="77")
    assert len(results) == 5
    assert all(len(x["anchors"]) == 4 for x in results)
    assert len({x["image"] for x in results}) == 5


@pytest.mark.parametrize("seed", [None, "12345"])
def test_single_result_is_diverse_variant_0(client, photo, seed):
    """`count` results are the diversity levels T = 0..count-1 of one encoder pass and one
    k-means (`pipeline.Job`), and /colorize is T = 0 with the same seed (default: from the
    image bytes, on both routes) and anchors, so its PNG is variant 0 byte for byte."""
    extra = {} if seed is None else {"seed": seed}
    results = _diverse(client, photo, count="3", **extra)
    single = client.post("/colorize", files={"image": ("cat.png", photo)}, data=extra)
    assert single.status_code == 200, single.text
    assert single.content == base64.b64decode(results[0]["image"])
    one = _diverse(client, photo, count="1", **extra)
    assert len(one) == 1 and one[0]["image"] == results[0]["image"]
    assert one[0]["anchors"] == results[0]["anchors"]


@pytest.mark.parametrize("count", ["0", "-1", str(MAX_DIVERSE + 1), "three", "2.5"])
def test_bad_count_is_a_client_error(client, photo, count):
    image = {"image": ("c.png", photo)}
    form = client.post("/colorize/diverse", files=image, data={"count": count})
    assert form.status_code == 400, form.text
    assert form.json()["error"]["code"] == "invalid_params"
    query = client.post(f"/colorize/diverse?count={count}", files=image)
    assert 400 <= query.status_code < 500, query.text


def test_diverse_refuses_hints(client, photo):
    r = client.post(
        "/colorize/diverse",
        files={"image": ("c.png", photo)},
        data={"hints": '[{"token": 18, "ab": [20, 60]}]'},
    )
    assert r.status_code == 400, r.text
