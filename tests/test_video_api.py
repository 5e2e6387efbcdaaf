"""POST /videos/colorize end to end (real HTTP app, real ONNX Runtime, the batching worker):
202 + Location, progress, download, decode back with PyAV; limits (413) before any decode; bad
input is a 4xx; cancel of a running job; job ownership by API key."""

from __future__ import annotations

import io
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api import create_app
from service.settings import Settings
from service.video import metrics, synthetic

PHOTO = Path(__file__).parent / "data" / "photos" / "retina.jpg"
KEY_A = "owner-a-0123456789abcdef"
KEY_B = "other-b-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("DISCO_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"))


def clip(tmp: Path, photo: np.ndarray, n: int, w: int, h: int, fps: int) -> bytes:
    frames = synthetic.pan_frames(photo, n=n, size=h, width=w, step=1.0)
    return synthetic.write_clip(tmp / f"clip-{n}-{w}x{h}.mp4", frames, fps=fps).read_bytes()


def settings(repo: Path, **kw) -> Settings:
    return Settings(
        queue_url="memory://", model_dir=repo, engine="onnx", threads=2, max_wait_ms=5, **kw
    )


@pytest.fixture(scope="module")
def client(tiny_repo):
    with TestClient(create_app(settings(tiny_repo))) as c:
        yield c


def wait_done(c: TestClient, loc: str, timeout_s: float = 300, **kw) -> tuple[dict, list]:
    seen, end = [], time.monotonic() + timeout_s
    while time.monotonic() < end:
        j = c.get(loc, **kw).json()
        if j.get("progress"):
            seen.append((j["progress"]["frames_done"], j["progress"]["frames_total"]))
        if j["status"] not in ("queued", "running"):
            return j, seen
        time.sleep(0.2)
    raise AssertionError(f"{loc} did not finish in {timeout_s} s")


def decode(mp4: bytes) -> tuple[list[np.ndarray], Fraction]:
    with av.open(io.BytesIO(mp4)) as c:
        rate = c.streams.video[0].average_rate
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)], rate


def test_ten_second_640x360_clip_end_to_end(client, photo, tmp_path):
    data = clip(tmp_path, photo, n=60, w=640, h=360, fps=6)  # 10 s (6 fps: the engine is the cost)
    r = client.post("/videos/colorize", files={"video": ("c.mp4", data, "video/mp4")})
    assert r.status_code == 202, r.text
    loc = r.headers["location"]
    assert loc == f"/jobs/{r.json()['id']}"
    assert r.json()["video"]["frames"] == 60
    job, seen = wait_done(client, loc)
    assert job["status"] == "done", job
    assert job["progress"] == {"frames_done": 60, "frames_total": 60}
    assert all(d <= t == 60 for d, t in seen)
    res = client.get(job["links"]["result"])
    assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
    frames, rate = decode(res.content)
    assert len(frames) == 60 and frames[0].shape == (360, 640, 3) and rate == 6
    assert metrics.colourfulness(frames[30]) > 1.0  # colour, not the gray input


def test_raw_body_and_bad_inputs_are_4xx(client, photo, tmp_path):
    good = clip(tmp_path, photo, n=6, w=64, h=48, fps=6)
    r = client.post(
        "/videos/colorize?anchors=4", content=good, headers={"content-type": "video/mp4"}
    )
    assert r.status_code == 202, r.text
    job, _ = wait_done(client, r.headers["location"])
    assert (
        job["status"] == "done"
        and len(decode(client.get(f"{job['links']['result']}").content)[0]) == 6
    )

    def post(body: bytes, name: str = "x.mp4") -> tuple[int, str]:
        resp = client.post("/videos/colorize", files={"video": (name, body, "video/mp4")})
        return resp.status_code, resp.json()["error"]["code"]

    assert post(b"not a video at all" * 100) == (415, "unsupported_video")
    assert post(good[: len(good) // 2]) == (415, "unsupported_video")  # truncated: no index
    png = io.BytesIO()
    Image.fromarray(photo).save(png, "PNG")
    assert post(png.getvalue(), "x.png")[0] == 415  # a still image is not a video
    assert post(b"") == (400, "empty_video")
    no_field = client.post("/videos/colorize", files={"image": ("x.mp4", good, "video/mp4")})
    assert no_field.status_code == 400 and no_field.json()["error"]["code"] == "missing_video"
    bad_opt = client.post("/videos/colorize?anchors=0", files={"video": ("x.mp4", good)})
    assert bad_opt.status_code == 422
    # corrupt frames behind a good header: the job fails with a 4xx, never a 5xx
    broken = bytearray(good)
    mid = len(broken) // 3
    broken[mid : mid + 400] = bytes(400)
    r = client.post("/videos/colorize", files={"video": ("b.mp4", bytes(broken))})
    if r.status_code == 202:
        job, _ = wait_done(client, r.headers["location"])
        assert client.get(r.headers["location"] + "/result").status_code < 500
    else:
        assert 400 <= r.status_code < 500


@pytest.mark.parametrize(
    ("limit", "code"),
    [
        ({"max_video_upload_bytes": 2048}, "payload_too_large"),
        ({"max_video_seconds": 1.0}, "video_too_long"),
        ({"max_video_frames": 10}, "video_too_many_frames"),
        ({"max_video_pixel_frames": 64 * 48 * 10}, "video_too_large"),
        ({"max_pixels": 64 * 47}, "video_too_large"),
    ],
)
def test_limits_answer_413_before_any_job(tiny_repo, photo, tmp_path, limit, code):
    data = clip(tmp_path, photo, n=24, w=64, h=48, fps=12)  # 2 s, 24 frames
    assert len(data) > 2048
    with TestClient(create_app(settings(tiny_repo, **limit))) as c:
        r = c.post("/videos/colorize", files={"video": ("c.mp4", data, "video/mp4")})
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == code
        assert c.app.state.runtime.monitor.jobs.labels("accepted")._value.get() == 0  # no job


def test_cancel_a_running_video(client, photo, tmp_path):
    data = clip(tmp_path, photo, n=200, w=320, h=180, fps=20)
    r = client.post("/videos/colorize", files={"video": ("c.mp4", data)})
    loc = r.headers["location"]
    end = time.monotonic() + 60
    while client.get(loc).json()["status"] == "queued" and time.monotonic() < end:
        time.sleep(0.05)
    d = client.delete(loc)
    assert d.status_code in (200, 202), d.text  # 202: running, stopped between frames
    job, _ = wait_done(client, loc)
    assert job["status"] == "cancelled", job
    if d.status_code == 202:
        assert job["cancel_requested"] and job["progress"]["frames_done"] < 200
    assert client.get(loc + "/result").status_code == 409
    assert client.delete(loc).status_code == 409  # finished: nothing to cancel


def test_another_key_cannot_see_or_cancel_a_video_job(tiny_repo, photo, tmp_path):
    data = clip(tmp_path, photo, n=6, w=64, h=48, fps=6)
    with TestClient(create_app(settings(tiny_repo, api_keys=f"{KEY_A},{KEY_B}"))) as c:
        a, b = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
        assert c.post("/videos/colorize", files={"video": ("c.mp4", data)}).status_code == 401
        r = c.post("/videos/colorize", files={"video": ("c.mp4", data)}, headers=a)
        assert r.status_code == 202
        loc = r.headers["location"]
        for resp in (c.get(loc, headers=b), c.get(loc + "/result", headers=b),
                     c.delete(loc, headers=b)):  # fmt: skip
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "job_not_found"
        job, _ = wait_done(c, loc, headers=a)
        assert job["status"] == "done"
        assert c.get(loc + "/result", headers=a).headers["content-type"] == "video/mp4"


def test_worker_killed_mid_video_restarts_and_stores_one_result(
    tiny_repo, redis_url, photo, tmp_path
):
    """Redis Streams: SIGKILL the `disco worker` that is half-way through a video; another
    worker claims the delivery once the dead one's health key expires, starts the video again
    and stores exactly one MP4 (no staging leftovers, payload gone)."""
    import os
    import subprocess
    import sys

    import redis

    knobs = {"DISCO_WORKER_HEALTH_TTL_S": "0.6", "DISCO_VISIBILITY_TIMEOUT_S": "5"}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DISCO_THREADS": "1", "DISCO_ENGINE": "onnx",
           "DISCO_MAX_BATCH": "4", **knobs}  # fmt: skip
    root = Path(__file__).resolve().parents[1]

    def worker(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        cmd = [sys.executable, "-m", "service.cli", "worker", "--queue", redis_url,
               "--model", str(tiny_repo)]  # fmt: skip
        return subprocess.Popen(cmd, cwd=root, env={**env, "DISCO_WORKER_NAME": name},
                                stdout=log, stderr=log)  # fmt: skip

    data = clip(tmp_path, photo, n=32, w=160, h=96, fps=10)
    s = Settings(queue_url=redis_url, model_dir=tiny_repo, worker_health_ttl_s=0.6,
                 visibility_timeout_s=5)  # fmt: skip
    procs = []
    try:
        with TestClient(create_app(s)) as c:
            r = c.post("/videos/colorize", files={"video": ("c.mp4", data)})
            assert r.status_code == 202, r.text
            loc, job_id = r.headers["location"], r.json()["id"]
            procs.append(first := worker("victim"))
            end = time.monotonic() + 180
            while time.monotonic() < end:
                p = c.get(loc).json()["progress"]
                if p and p["frames_done"] >= 4:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError((tmp_path / "victim.log").read_text()[-2000:])
            first.kill()
            first.wait(10)
            assert c.get(loc).json()["status"] == "running"  # the dead worker's delivery
            procs.append(worker("rescuer"))
            job, _ = wait_done(c, loc, 300)
            assert job["status"] == "done", job
            assert job["attempts"] == 2  # redelivered once, restarted from frame 0
            frames, rate = decode(c.get(loc + "/result").content)
            assert len(frames) == 32 and frames[0].shape == (96, 160, 3) and rate == 10
        with redis.Redis.from_url(redis_url) as db:
            assert db.llen(f"disco:result:{job_id}") == 1
            assert not db.keys(f"disco:result:{job_id}:staging:*")
            assert not db.exists(f"disco:payload:{job_id}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_first_frame_hints_travel_with_the_job(client, photo, tmp_path):
    data = clip(tmp_path, photo, n=6, w=64, h=48, fps=6)
    hints = '[{"x": 0.5, "y": 0.5, "color": "#2050e0"}, {"token": 3, "ab": [40, 40]}]'
    r = client.post("/videos/colorize", files={"video": ("c.mp4", data)}, data={"hints": hints})
    assert r.status_code == 202, r.text
    job, _ = wait_done(client, r.headers["location"])
    assert job["status"] == "done", job
    assert len(decode(client.get(job["links"]["result"]).content)[0]) == 6
    for bad in ("[{", '[{"x": 0.5}]', '[{"token": 999, "ab": [0, 0]}]'):
        r = client.post("/videos/colorize", files={"video": ("c.mp4", data)}, data={"hints": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_params", r.text
