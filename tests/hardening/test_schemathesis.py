"""Schemathesis against the live OpenAPI: every operation, valid and invalid inputs.

The API runs for real (uvicorn on 127.0.0.1, embedded queue and worker, tiny ONNX model) with
API keys on, so the generated requests also check that the security scheme is enforced. Checks:
no 5xx, status codes / content types / bodies as documented, invalid data rejected with 4xx,
and (schemathesis' `ignored_auth`) nothing answers without the key. Bounded: a fixed number of
examples per operation, deterministic generation, no shrinking.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
from e2e.stack import free_port

schemathesis = pytest.importorskip("schemathesis")
uvicorn = pytest.importorskip("uvicorn")
from hypothesis import HealthCheck, settings  # noqa: E402 (after the skip)
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

pytestmark = pytest.mark.slow

API_KEY = "schemathesis-key-0123456789"
MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def live_api(tiny_repo):
    from service.api import create_app
    from service.settings import Settings

    settings_ = Settings(
        queue_url="memory://",
        model_dir=tiny_repo,
        threads=1,
        max_wait_ms=5,
        api_keys=API_KEY,
        metrics_auth=True,
        job_timeout_s=20,
    )
    port = free_port()
    config = uvicorn.Config(
        create_app(settings_), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="schemathesis-api", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        raise TimeoutError("the API did not become ready")
    yield url
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def tally():
    """Statuses of every generated request, printed at the end (run with -s to see them)."""
    counts: Counter[int] = Counter()
    yield counts
    print(
        f"\n[schemathesis] {sum(counts.values())} requests, statuses {dict(sorted(counts.items()))}"
    )


def _document() -> dict:
    """The OpenAPI document exactly as the live app serves it (same settings, no lifespan)."""
    from service.api import create_app
    from service.settings import Settings

    return create_app(Settings(api_keys=API_KEY, metrics_auth=True)).openapi()


# Built at collection (schemathesis makes one test per operation from it); the requests go to
# the live server of the `live_api` fixture. (The lazy `from_fixture` loader breaks on pytest 9.)
schema = schemathesis.openapi.from_dict(_document())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
    no_shrink=True,
)
# Schema-valid is not request-valid where a schema cannot say it: a `binary` image field holds
# any bytes (415 unless they are an image, 413 past the pixel limit, 400 when empty or corrupt)
# and `hints` is any string (400 unless it is a JSON list of anchors).
schema.config.checks.positive_data_acceptance.expected_statuses = [
    "2xx", "400", "401", "404", "409", "413", "415", "429", "504",
]  # fmt: skip


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_openapi_conformance(case, live_api, tally):
    response = case.call_and_validate(
        base_url=live_api,
        headers={"X-API-Key": API_KEY},
        excluded_checks=[not_a_server_error],
        timeout=60,
    )
    tally[response.status_code] += 1
    if response.status_code >= 500:
        # The one 5xx by design: 504 when the job's own deadline passed (README): this request
        # asked for a tiny `timeout_s`, or its Idempotency-Key names an earlier job that did.
        code = response.json().get("error", {}).get("code")
        asked = float((case.query or {}).get("timeout_s", 0) or 0)
        replay = "Idempotency-Key" in (case.headers or {})
        assert response.status_code == 504 and code in ("expired", "timeout"), response.text
        assert 0 < asked < 1.0 or replay, f"504 for a {asked} s deadline: {response.text}"


def test_openapi_declares_security_and_errors(live_api):
    doc = httpx.get(f"{live_api}/openapi.json", headers={"X-API-Key": API_KEY}).json()
    assert "APIKeyHeader" in doc["components"]["securitySchemes"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            public = path in ("/healthz", "/readyz")
            assert ("security" in op) != public, (method, path)
            assert public or "401" in op["responses"], (method, path)
            for status, resp in op["responses"].items():
                if status.startswith("4") and status != "404":
                    content = resp.get("content", {}).get("application/json", {})
                    assert content.get("schema", {}).get("$ref", "").endswith("ErrorBody"), (
                        method,
                        path,
                        status,
                    )
