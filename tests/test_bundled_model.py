"""The bundled model repository: shipped with the package, the default of `disco serve`/`worker`,
and exported from the committed checkpoint (re-export with `make bundled-model` after training)."""

from __future__ import annotations

import json
from pathlib import Path

from service.settings import BUNDLED_MODEL_DIR, Settings

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "models" / "disco-demo" / "disco-demo.pth.tar"


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_default_model_dir_is_the_bundled_repository(monkeypatch):
    monkeypatch.delenv("DISCO_MODEL_DIR", raising=False)
    assert Settings().model_dir == BUNDLED_MODEL_DIR
    assert (BUNDLED_MODEL_DIR / "manifest.json").is_file()


def test_bundled_repository_matches_the_committed_checkpoint():
    manifest = json.loads((BUNDLED_MODEL_DIR / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == _sha256(CHECKPOINT), (
        "service/data/models/disco-demo was not exported from models/disco-demo/disco-demo.pth.tar:"
        " run `make bundled-model`"
    )
    for graph in manifest["graphs"].values():
        assert _sha256(BUNDLED_MODEL_DIR / graph["file"]) == graph["sha256"]


def test_disco_serve_with_no_flags_serves_the_bundled_model(tmp_path):
    """A new user's `disco serve`: no flags, no DISCO_* variables (only the port, to stay off
    :8000), from a directory with no models/: ready, and the result is in colour."""
    import io
    import os
    import subprocess
    import sys

    import httpx
    import numpy as np
    from PIL import Image

    from tests.e2e.stack import free_port, wait_until

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
    env["DISCO_PORT"] = str(port)
    disco = Path(sys.executable).with_name("disco")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([str(disco), "serve"], cwd=tmp_path, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = wait_until(
            lambda: (r := httpx.get(f"{base}/readyz", timeout=2)).status_code == 200 and r,
            timeout_s=120,
            what="disco serve /readyz 200",
            every_s=0.25,
        )
        assert "disco-demo" in ready.text
        photo = ROOT / "service" / "data" / "samples" / "astronaut_gray.jpg"
        r = httpx.post(f"{base}/colorize", files={"image": photo.read_bytes()}, timeout=120)
        assert r.status_code == 200, r.text
        rgb = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(np.float32)
        assert rgb.shape[:2] == Image.open(photo).size[::-1]
        chroma = np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean()
        assert chroma > 3.0, f"the result is nearly grey (mean |channel - grey| = {chroma:.2f})"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
