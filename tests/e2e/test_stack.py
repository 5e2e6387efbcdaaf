"""End to end over real HTTP: redis-server + API process + worker processes, and their faults."""

from __future__ import annotations

import io
import json
import signal
from collections import Counter

import httpx
import pytest
from PIL import Image

from .stack import Stack, wait_until

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.slow


def _image(i: int) -> bytes:
    img = Image.linear_gradient("L").resize((96 + 8 * (i % 4), 80)).rotate(7 * i)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def stack(tmp_path, tiny_repo, redis_server_factory):
    server = redis_server_factory()
    s = Stack(
        server.url,
        tiny_repo,
        tmp_path,
        env={"DISCO_MAX_BATCH": "4", "DISCO_MAX_WAIT_MS": "20"},
    )
    s.redis = server
    yield s
    s.stop()


def _post_async(client: httpx.Client, i: int) -> str:
    r = client.post(
        "/colorize",
        content=_image(i),
        headers={"content-type": "image/png", "Prefer": "respond-async"},
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_worker_killed_mid_batch_loses_nothing(stack):
    stack.start_api()
    stack.start_worker("w1")
    stack.start_worker("w2")
    stack.wait_ready()
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        ids = [_post_async(client, i) for i in range(24)]
        r = redis.Redis.from_url(stack.redis.url)

        def holder() -> str | None:
            pending = r.xpending("disco:jobs", "disco:workers")
            owners = {c["name"].decode(): c["pending"] for c in pending.get("consumers", [])}
            return next((w for w in ("w1", "w2") if owners.get(w, 0) > 0), None)

        victim = wait_until(holder, 30, "a worker holding a batch", every_s=0.005)
        stack.kill_worker(victim)

        def all_final() -> list[dict] | None:
            infos = [client.get(f"/jobs/{i}").json() for i in ids]
            return (
                infos if all(x["status"] in ("done", "failed", "expired") for x in infos) else None
            )

        infos = wait_until(all_final, 90, "every job to finish", every_s=0.2)
        statuses = Counter(x["status"] for x in infos)
        assert statuses == {"done": 24}, (statuses, stack.logs())
        assert any(x["attempts"] > 1 for x in infos), "the killed batch was not redelivered"
        bodies = [client.get(f"/jobs/{i}/result") for i in ids]
        assert all(b.status_code == 200 and b.content[:4] == b"\x89PNG" for b in bodies)
        # exactly once: one stored result per job, nothing left pending or queued
        assert r.xlen("disco:jobs") == 0
        assert r.xpending("disco:jobs", "disco:workers")["pending"] == 0
        r.close()


def test_redis_outage_and_recovery(stack):
    stack.start_api(DISCO_REDIS_CONNECT_TIMEOUT_S="0.5")
    stack.start_worker("w1")
    stack.wait_ready()
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        # the API loads no model: /readyz names the one a live worker heartbeats
        manifest = json.loads((stack.model_dir / "manifest.json").read_text())
        assert client.get("/readyz").json()["model"]["name"] == manifest["name"]
        assert (
            client.post(
                "/colorize", content=_image(0), headers={"content-type": "image/png"}
            ).status_code
            == 200
        )
        stack.redis.stop()
        r = client.post("/colorize", content=_image(1), headers={"content-type": "image/png"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable"
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
        stack.redis.start()
        stack.wait_ready(60)  # the worker re-registers, the API reconnects: no restarts
        r = client.post("/colorize", content=_image(2), headers={"content-type": "image/png"})
        assert r.status_code == 200, (r.text, stack.logs())
    assert all(p.poll() is None for p in stack.workers.values())


def test_backpressure_deadline_and_cancel(stack):
    stack.start_api(DISCO_MAX_BACKLOG="2")  # no worker: jobs stay queued
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        assert client.get("/readyz").json()["checks"]["workers"] == "no live worker"
        first, second = _post_async(client, 0), _post_async(client, 1)
        r = client.post(
            "/colorize",
            content=_image(2),
            headers={"content-type": "image/png", "Prefer": "respond-async"},
        )
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert client.delete(f"/jobs/{first}").json()["status"] == "cancelled"
        assert client.get(f"/jobs/{first}").json()["status"] == "cancelled"
        assert client.get(f"/jobs/{first}/result").status_code == 409
        assert client.delete(f"/jobs/{second}").status_code == 200
        r = client.post(
            "/colorize?timeout_s=1", content=_image(3), headers={"content-type": "image/png"}
        )
        assert r.status_code == 504, r.text
        # a worker that arrives later skips the expired job instead of computing it
        stack.start_worker("late")
        job = r.json()["error"]["job_id"]
        wait_until(lambda: client.get(f"/jobs/{job}").json()["status"] == "expired", 30, "expiry")
        metrics = client.get("/metrics").text
        assert 'disco_jobs_total{outcome="rejected"}' in metrics


def test_sigterm_drains_a_worker(stack):
    stack.start_api()
    stack.start_worker("w1")
    stack.wait_ready()
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        ids = [_post_async(client, i) for i in range(8)]
        stack.kill_worker("w1", signal.SIGTERM)
        assert stack.workers["w1"].wait(timeout=40) == 0
        stack.start_worker("w2")
        wait_until(
            lambda: all(client.get(f"/jobs/{i}").json()["status"] == "done" for i in ids),
            60,
            "jobs after a drained worker",
        )


def test_every_endpoint_in_redis_mode(stack):
    import base64

    import numpy as np

    from service import colorspace

    stack.start_api()
    stack.start_worker("w1")
    stack.wait_ready()
    src = _image(5)
    with httpx.Client(base_url=stack.url, timeout=60) as client:
        r = client.post("/colorize", files={"image": ("a.png", src)})
        assert r.status_code == 200, r.text
        out = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
        inp = np.asarray(Image.open(io.BytesIO(src)).convert("RGB"))
        assert out.shape == inp.shape
        assert np.abs(colorspace.lightness(out) - colorspace.lightness(inp)).max() <= 1.0
        d = client.post("/colorize/diverse?count=2", files={"image": ("a.png", src)})
        assert d.status_code == 200 and len(d.json()["results"]) == 2
        assert base64.b64decode(d.json()["results"][0]["image"]) == r.content
        a = client.post("/anchors?anchors=4", files={"image": ("a.png", src)})
        assert a.status_code == 200 and len(a.json()["anchors"]) == 4
        job = client.post(
            "/colorize/diverse",
            files={"image": ("a.png", src)},
            headers={"Prefer": "respond-async"},
        ).json()["id"]
        wait_until(lambda: client.get(f"/jobs/{job}").json()["status"] == "done", 60, "async job")
        links = client.get(f"/jobs/{job}").json()["links"]
        assert len(links["results"]) == 3
        assert client.get(links["results"][2]).headers["content-type"] == "image/png"
        assert len(client.get(f"/jobs/{job}/result").json()["results"]) == 3
        assert client.delete(f"/jobs/{job}").status_code == 409
        assert "disco_http_requests_total" in client.get("/metrics").text
