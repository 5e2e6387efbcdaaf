"""Fixtures for the browser tests: the API served for real by uvicorn, headless Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.api import create_app
from service.settings import Settings

# Quiet on a closed network: no sandbox (root), no GPU, no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    """$DISCO_CHROMIUM, else Debian's `chromium` (apt-get install chromium) on PATH."""
    configured = os.environ.get("DISCO_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots go: $DISCO_WEB_ARTIFACTS or tests/web/artifacts/ (git-ignored)."""
    path = Path(os.environ.get("DISCO_WEB_ARTIFACTS") or Path(__file__).parent / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nweb UI screenshots: {path}")
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (pip install playwright)"
    )
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set DISCO_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextlib.contextmanager
def serve_ui(model_dir: Path) -> Iterator[str]:
    """The API with its UI, embedded mode (memory queue, in-process worker, ONNX model in
    `model_dir`), served by uvicorn on a free 127.0.0.1 port in a background thread."""
    import httpx
    import uvicorn

    settings = Settings(queue_url="memory://", model_dir=model_dir, threads=2, max_wait_ms=5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:  # bounded wait for startup: uvicorn has no readiness callback
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            if server.started and httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not become ready within 60 s")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def live_server(tiny_repo) -> Iterator[str]:
    """The UI on the tiny test model (random but deterministic colours: fast)."""
    with serve_ui(tiny_repo) as url:
        yield url


@pytest.fixture(scope="module")
def bundled_server() -> Iterator[str]:
    """The UI on the bundled demo model, as `disco serve` runs it with no flags."""
    from service.settings import BUNDLED_MODEL_DIR

    with serve_ui(BUNDLED_MODEL_DIR) as url:
        yield url
