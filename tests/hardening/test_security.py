"""Security defaults: API keys, per-key rate limits, idempotency namespaces, CORS, upload limits.

In-process (TestClient, embedded queue and worker, the tiny ONNX model): fast and exact.
"""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api import create_app
from service.api.security import ApiKeys, TokenBuckets, key_id
from service.settings import Settings

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("DISCO_"):
            monkeypatch.delenv(name)


def _png(w: int = 40, h: int = 30, value: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((w, h)).point(lambda v: (v + value) % 256).save(buf, "PNG")
    return buf.getvalue()


def _settings(tiny_repo, **kw) -> Settings:
    return Settings(queue_url="memory://", model_dir=tiny_repo, threads=1, max_wait_ms=5, **kw)


@pytest.fixture(scope="module")
def secured(tiny_repo):
    s = _settings(tiny_repo, api_keys=f"{KEY_A}, {KEY_B}")
    with TestClient(create_app(s)) as client:
        yield client


@pytest.fixture(scope="module")
def open_client(tiny_repo):
    with TestClient(create_app(_settings(tiny_repo))) as client:
        yield client


def test_defaults_are_open_without_cors(open_client):
    r = open_client.post(
        "/anchors?anchors=2", content=_png(), headers={"content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    pre = open_client.options(
        "/colorize",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in pre.headers
    r = open_client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    settings = Settings()
    assert settings.api_keys is None and settings.rate_limit_per_min == 0
    assert settings.cors_origin_list == [] and settings.metrics_auth is True


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"])
def test_probes_need_no_key(secured, path):
    assert secured.get(path).status_code == 200


def test_web_ui_needs_no_key(secured):
    assert secured.get("/").status_code == 200
    r = secured.get("/static/app.js")
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    assert secured.get("/static/missing.js").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/colorize"),
        ("POST", "/colorize/diverse"),
        ("POST", "/anchors"),
        ("GET", "/jobs/abcdefgh12345678"),
        ("GET", "/jobs/abcdefgh12345678/result"),
        ("GET", "/jobs/abcdefgh12345678/result/0"),
        ("DELETE", "/jobs/abcdefgh12345678"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/no/such/path"),
    ],
)
def test_everything_else_needs_a_key(secured, method, path):
    r = secured.request(method, path, content=_png(), headers={"content-type": "image/png"})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "missing_api_key"
    assert r.headers["www-authenticate"].startswith("Bearer")
    bad = secured.request(method, path, headers={"X-API-Key": "not-a-key-but-long-enough"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    wrong_scheme = secured.request(method, path, headers={"Authorization": f"Basic {KEY_A}"})
    assert wrong_scheme.status_code == 401


def test_keys_in_header_or_bearer(secured):
    r = secured.post(
        "/anchors?anchors=2",
        files={"image": ("../../../etc/passwd", _png())},  # the name is never used as a path
        headers={"X-API-Key": KEY_A},
    )
    assert r.status_code == 200, r.text
    r = secured.get("/metrics", headers={"Authorization": f"Bearer {KEY_B}"})
    assert r.status_code == 200 and "disco_http_requests_total" in r.text
    assert 'status="401"' in r.text  # refusals are counted
    doc = secured.get("/openapi.json", headers={"X-API-Key": KEY_B}).json()
    assert doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


def test_idempotency_keys_are_namespaced_per_api_key_and_request(secured):
    def submit(key: str, path: str = "/colorize", image: bytes | None = None) -> str:
        r = secured.post(
            path,
            files={"image": ("a.png", image or _png(value=7))},
            headers={"X-API-Key": key, "Prefer": "respond-async", "Idempotency-Key": "same"},
        )
        assert r.status_code == 202, r.text
        return r.json()["id"]

    a1, a2, b1 = submit(KEY_A), submit(KEY_A), submit(KEY_B)
    assert a1 == a2, "a retry with the same key must return the same job"
    assert b1 != a1, "another API key must not see (or collide with) the first key's job"
    assert submit(KEY_A, "/anchors") != a1, "another endpoint is another request"
    assert submit(KEY_A, image=_png(value=8)) != a1, "another image is another request"
    # job ids stay capabilities: 128 random bits, readable by whoever holds the id and a key
    assert secured.get(f"/jobs/{b1}", headers={"X-API-Key": KEY_B}).status_code == 200


def test_metrics_can_be_left_open(tiny_repo):
    s = _settings(tiny_repo, api_keys=KEY_A, metrics_auth=False)
    with TestClient(create_app(s)) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 401


def test_rate_limit_per_key_with_retry_after(tiny_repo):
    s = _settings(tiny_repo, api_keys=f"{KEY_A},{KEY_B}", rate_limit_per_min=2)
    with TestClient(create_app(s)) as client:
        a = {"X-API-Key": KEY_A}
        assert [client.get("/jobs/unknown-job-1", headers=a).status_code for _ in range(2)] == [
            404,
            404,
        ]
        r = client.get("/jobs/unknown-job-1", headers=a)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 30
        assert client.get("/jobs/unknown-job-1", headers={"X-API-Key": KEY_B}).status_code == 404
        assert client.get("/healthz").status_code == 200  # probes are never limited
        metrics = client.get("/metrics", headers={"X-API-Key": KEY_B}).text
        assert 'endpoint="/jobs/{job_id}",method="GET",status="429"' in metrics
        assert 'disco_jobs_total{outcome="rejected"}' not in metrics  # not a full backlog


def test_rate_limit_without_keys_is_per_client_address(tiny_repo):
    with TestClient(create_app(_settings(tiny_repo, rate_limit_per_min=1))) as client:
        assert client.get("/jobs/unknown-job-1").status_code == 404
        assert client.get("/jobs/unknown-job-1").status_code == 429


def test_token_bucket_refills_and_forgets():
    now = [0.0]
    buckets = TokenBuckets(rate_per_s=1.0, burst=2.0, max_entries=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 1.0]
    now[0] = 0.5
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] = 1.5
    assert buckets.take("a") == 0.0
    for who in "bcde":
        buckets.take(who)
    assert len(buckets._buckets) == 3  # bounded memory: least recently seen forgotten


def test_api_key_sources_and_validation(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# team a\n{KEY_A}\n\n  {KEY_B}  \n")
    keys = ApiKeys.from_settings(Settings(api_keys_file=keys_file))
    assert keys is not None and keys.identify(KEY_B) == key_id(KEY_B)
    assert keys.identify(KEY_A[:-1]) is None and keys.identify("") is None
    assert ApiKeys.from_settings(Settings()) is None
    with pytest.raises(ValueError, match="16"):
        ApiKeys.from_settings(Settings(api_keys="short"))
    with pytest.raises(ValueError, match="no key"):
        ApiKeys.from_settings(Settings(api_keys=" , "))
    assert KEY_A not in key_id(KEY_A)
    with pytest.raises(ValueError):
        create_app(Settings(api_keys="short"))


def test_cors_only_for_listed_origins(tiny_repo):
    s = _settings(tiny_repo, api_keys=KEY_A, cors_origins="https://ui.example, https://b.example/")
    with TestClient(create_app(s)) as client:
        pre = client.options(
            "/colorize",
            headers={
                "Origin": "https://ui.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key, idempotency-key",
            },
        )
        assert pre.status_code == 200, pre.text  # a preflight needs no key
        assert pre.headers["access-control-allow-origin"] == "https://ui.example"
        assert "access-control-allow-credentials" not in pre.headers
        r = client.get("/jobs/unknown-job-1", headers={"Origin": "https://b.example"})
        assert (
            r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://b.example"
        )
        assert "retry-after" in r.headers["access-control-expose-headers"].lower()
        other = client.options(
            "/colorize",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def _chunks(total: int, first: bytes = b""):
    yield first
    sent = len(first)
    while sent < total:
        yield b"\0" * 65536
        sent += 65536


def test_chunked_uploads_are_bounded(tiny_repo):
    s = _settings(tiny_repo, max_upload_bytes=64 * 1024)
    with TestClient(create_app(s)) as client:
        head = (
            b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        r = client.post(
            "/colorize",
            content=_chunks(4 << 20, head),  # no Content-Length: chunked
            headers={"content-type": "multipart/form-data; boundary=xx"},
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        r = client.post(
            "/colorize", content=_chunks(4 << 20), headers={"content-type": "image/png"}
        )
        assert r.status_code == 413
        r = client.post(
            "/colorize",
            content=b"x",
            headers={"content-type": "image/png", "content-length": str(10**12)},
        )
        assert r.status_code == 413


def test_only_the_listed_formats_are_read(open_client):
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (1, 2, 3)).save(buf, "TGA")
    r = open_client.post("/colorize", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_image"


def test_method_not_allowed_lists_every_method(open_client):
    r = open_client.put("/jobs/abcdefgh12345678")
    assert r.status_code == 405 and r.headers["allow"] == "GET, DELETE"
