"""The hostile-input corpus against the real stack: redis-server + API process + 2 workers.

Every file gets a 2xx with a correct image (the input's displayed size, its lightness kept) or a
4xx JSON error; never a 5xx; no worker crash, no failed batch, nothing dead-lettered; the API and
worker RSS stay under the bounds documented in SECURITY.md.
"""

from __future__ import annotations

import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from service import colorspace
from service.imageio import decode_image

from .corpus import CORPUS_MAX_PIXELS, Case, build_corpus
from .harness import STACK_ENV, RssSampler, ensure_workers, live_workers

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.slow

# Peak RSS bounds (SECURITY.md): the API never decodes pixels, so it stays small. A worker holds
# the runtime and sessions, the engine's activations for a full batch (ONNX Runtime's arena keeps
# them: measured ~160 MiB per batch row with the tiny test model), and ~120 bytes per input pixel
# while it composes a full-resolution result (measured: +540 MiB for a 4 MP image).
API_RSS_BOUND_MB = 300
WORKER_BASE_MB = 400
WORKER_PER_BATCH_ROW_MB = 200
WORKER_BYTES_PER_PIXEL = 150
WORKER_RSS_BOUND_MB = (
    WORKER_BASE_MB
    + WORKER_PER_BATCH_ROW_MB * int(STACK_ENV["DISCO_MAX_BATCH"])
    + WORKER_BYTES_PER_PIXEL * CORPUS_MAX_PIXELS / 2**20
)
GEOMETRY = ("one_pixel.png", "strip_10000x8.png", "strip_8x10000.png", "line_4000x1.png")


def _send(client: httpx.Client, case: Case, how: str) -> httpx.Response:
    if how == "multipart":
        return client.post("/colorize", files={"image": (case.name, case.data, case.content_type)})
    if how == "raw":
        return client.post("/colorize", content=case.data, headers={"content-type": "image/png"})
    if how == "diverse":
        return client.post("/colorize/diverse?count=2", files={"image": (case.name, case.data)})
    return client.post("/anchors?anchors=3", files={"image": (case.name, case.data)})


def _check(case: Case, how: str, r: httpx.Response) -> str | None:
    """None if the answer is right, else what is wrong with it."""
    if r.status_code >= 500:
        return f"{r.status_code} {r.text[:200]}"
    if 400 <= r.status_code < 500:
        if case.expect == "ok":
            return f"expected an image, got {r.status_code} {r.text[:200]}"
        if isinstance(case.expect, int) and r.status_code != case.expect:
            return f"expected {case.expect}, got {r.status_code} {r.text[:200]}"
        body = r.json()
        if not (body.get("error", {}).get("code") and body["error"].get("message")):
            return f"4xx without a JSON error body: {r.text[:200]}"
        return None
    if r.status_code != 200:
        return f"unexpected {r.status_code}"
    if isinstance(case.expect, int):
        return f"expected {case.expect}, got 200"
    w, h = case.size or (0, 0)
    if how == "anchors":
        body = r.json()
        ok = (body["width"], body["height"]) == (w, h) and len(body["anchors"]) == 3
        return None if ok else f"anchors answer {body['width']}x{body['height']}"
    if how == "diverse":
        import base64

        images = [base64.b64decode(x["image"]) for x in r.json()["results"]]
        sizes = {Image.open(io.BytesIO(b)).size for b in images}
        return None if sizes == {(w, h)} and len(images) == 2 else f"diverse sizes {sizes}"
    if r.headers["content-type"] != "image/png":
        return f"content-type {r.headers['content-type']}"
    out = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    if (out.shape[1], out.shape[0]) != (w, h):
        return f"answer is {out.shape[1]}x{out.shape[0]}, expected {w}x{h}"
    src = decode_image(case.data)  # what the service saw: orientation applied, frame 0
    dl = np.abs(colorspace.lightness(out) - colorspace.lightness(src)).max()
    return None if dl <= 1.0 else f"lightness changed by {dl:.2f}"


def test_hostile_corpus(hard_stack):
    stack, server = hard_stack
    workers = ensure_workers(stack, 2)
    cases = build_corpus(CORPUS_MAX_PIXELS)
    plan = [(c, "multipart") for c in cases]
    plan += [(c, "raw") for c in cases if c.expect != "ok"]  # non-images as raw image/* bodies
    plan += [(c, how) for c in cases if c.name in GEOMETRY for how in ("diverse", "anchors")]
    pids = {"api": stack.api.pid, **{n: stack.workers[n].pid for n in workers}}
    logs_at = {n: (stack.logdir / f"{n}.log").stat().st_size for n in workers}
    with redis.Redis.from_url(server.url) as r:  # the shared stack: chaos may dead-letter first
        dead_before = r.xlen("disco:jobs:dead")
    with (
        RssSampler(pids) as rss,
        httpx.Client(base_url=stack.url, timeout=180) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        answers = list(pool.map(lambda item: _send(client, *item), plan))
        ready = client.get("/readyz")
    problems = {
        f"{case.name} ({how})": p
        for (case, how), r in zip(plan, answers, strict=True)
        if (p := _check(case, how, r)) is not None
    }
    statuses = Counter(r.status_code for r in answers)
    api_peak = rss.peak["api"]
    worker_peak = max(rss.peak[n] for n in workers)
    print(
        f"\n[corpus] {len(cases)} files, {len(plan)} requests, statuses {dict(statuses)}, "
        f"5xx={sum(v for k, v in statuses.items() if k >= 500)}, "
        f"peak RSS api={api_peak:.0f} MiB worker={worker_peak:.0f} MiB "
        f"(bounds {API_RSS_BOUND_MB} / {WORKER_RSS_BOUND_MB:.0f} MiB)"
    )
    assert not problems, (problems, stack.logs())
    assert ready.status_code == 200, ready.text
    assert live_workers(stack) == workers, stack.logs()  # no worker crashed
    assert stack.api.poll() is None
    logs = "".join(
        (stack.logdir / f"{n}.log").read_bytes()[logs_at[n] :].decode(errors="replace")
        for n in workers
    )  # what the workers said during the corpus run
    assert "batch handler raised" not in logs and "Traceback" not in logs, logs
    with redis.Redis.from_url(server.url) as r:
        assert r.xlen("disco:jobs:dead") == dead_before  # the corpus dead-lettered no job
        assert r.xlen("disco:jobs") == 0
    assert api_peak < API_RSS_BOUND_MB, f"API peak RSS {api_peak:.0f} MiB"
    assert worker_peak < WORKER_RSS_BOUND_MB, f"worker peak RSS {worker_peak:.0f} MiB"
