"""Object-level authorization (OWASP API Security #1): with API keys on, a job belongs to the key
that created it. Another valid key gets the unknown-job 404 on every /jobs/{id} route (no
existence oracle), in both queue modes. In-process API (TestClient) over the real queues: the
embedded memory queue with its worker, and a real redis-server (no worker: the job stays queued,
which is enough to ask who may see it)."""

from __future__ import annotations

import io
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api import create_app
from service.settings import Settings

KEY_A = "owner-a-0123456789abcdef"
KEY_B = "other-b-0123456789abcdef"
UNKNOWN = "0" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("DISCO_"):
            monkeypatch.delenv(name)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((40, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(params=["memory", "redis"])
def client(request, tiny_repo):
    queue = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    s = Settings(
        queue_url=queue,
        model_dir=tiny_repo,
        engine="onnx",
        threads=1,
        max_wait_ms=5,
        api_keys=f"{KEY_A},{KEY_B}",
    )
    with TestClient(create_app(s)) as c:
        c.queue_mode = request.param
        yield c


def _as(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_another_key_gets_404_on_every_job_route(client):
    r = client.post(
        "/colorize",
        files={"image": ("a.png", _png())},
        headers={**_as(KEY_A), "Prefer": "respond-async"},
    )
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    assert client.get(f"/jobs/{job}", headers=_as(KEY_A)).status_code == 200
    if client.queue_mode == "memory":  # the embedded worker finishes it: the owner reads it
        deadline = time.monotonic() + 60
        while client.get(f"/jobs/{job}", headers=_as(KEY_A)).json()["status"] != "done":
            assert time.monotonic() < deadline, "the embedded worker did not finish the job"
            time.sleep(0.05)
        assert client.get(f"/jobs/{job}/result", headers=_as(KEY_A)).status_code == 200

    unknown = client.get(f"/jobs/{UNKNOWN}", headers=_as(KEY_B))
    assert unknown.status_code == 404
    for method, path in [
        ("GET", f"/jobs/{job}"),
        ("GET", f"/jobs/{job}/result"),
        ("GET", f"/jobs/{job}/result/0"),
        ("DELETE", f"/jobs/{job}"),
    ]:
        r = client.request(method, path, headers=_as(KEY_B))
        assert r.status_code == 404, f"{method} {path} as another key: {r.status_code} {r.text}"
        assert r.json().keys() == unknown.json().keys(), "the 404 must look like an unknown job's"
    # the other key's DELETE did nothing: the owner still sees the job
    assert client.get(f"/jobs/{job}", headers=_as(KEY_A)).status_code == 200
