"""Soak test: a mixed load at ~70 % of the measured capacity, for a fixed time.

    # against a running service (loopback only), watching the memory of its processes:
    python loadtests/soak.py --url http://127.0.0.1:8000 --duration 600 --pid API_PID --pid W1_PID

    # or start a private stack first (redis-server with AOF + API + 2 workers on 127.0.0.1):
    python loadtests/soak.py --local-stack artifacts/models/disco-demo --duration 600

1. Capacity: a short saturation probe (closed loop, enough concurrent clients to keep every
   worker's batch full) measures finished /colorize requests per second.
2. Soak: open-loop arrivals (seeded, Poisson) at `--load` (0.7) of that capacity, mixed like real
   traffic: synchronous colorize (PNG/JPEG/WebP), async colorize + polling + result, anchors,
   diverse (2 results), invalid requests that must get a 4xx, and status/health/metrics reads.
3. Verdict, per window of `--window-s`: no 5xx and no transport error, 429s under 1 %, wrong
   answers none, errors not growing (the last third has no more than the first), and flat
   memory: each watched process's RSS at the end within `max(32 MiB, 10 %)` of where it stood
   after the first window (warm-up).

Prints one JSON report (figures per window) and exits 1 if the verdict fails. Bounded: it
stops by itself after `--duration` plus at most `--drain-s`. Only 127.0.0.1 / localhost / ::1.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_IN_FLIGHT = 256  # arrivals past this are counted as shed (the load generator's own bound)


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK and not host.startswith("127."):
        raise SystemExit(f"refusing to load {url}: soak tests target loopback addresses only")


def images(seed: int = 0) -> list[bytes]:
    """A small pool of grayscale photos-to-be of different sizes and formats."""
    rng = random.Random(seed)
    out = []
    for i, (w, h) in enumerate([(160, 120), (240, 180), (320, 240), (200, 300), (400, 260)]):
        img = Image.radial_gradient("L").resize((w, h)).rotate(rng.uniform(0, 90))
        buf = io.BytesIO()
        img.save(buf, "JPEG" if i % 2 else "PNG", quality=90)
        out.append(buf.getvalue())
    return out


def memory_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return 0.0
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


@dataclass
class Window:
    start: float
    counts: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None

        return {
            "t_s": round(self.start, 1),
            "counts": dict(self.counts),
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            "rss_mb": {k: round(v, 1) for k, v in self.rss.items()},
        }


class Soak:
    def __init__(
        self, url: str, pids: dict[str, int], *, window_s: float = 10.0, seed: int = 0
    ) -> None:
        check_loopback(url)
        self.url = url
        self.pids = pids
        self.window_s = window_s
        self.rng = random.Random(seed)
        self.pool = images(seed)
        self.windows: list[Window] = []
        self.shed = 0
        self.t0 = 0.0

    # -- one request of each kind: returns the outcome label ---------------------------------

    async def colorize(self, c: httpx.AsyncClient) -> str:
        fmt = self.rng.choice(["png", "jpeg", "webp"])
        r = await c.post(
            f"/colorize?format={fmt}", files={"image": ("p", self.rng.choice(self.pool))}
        )
        return self._expect(r, 200, lambda: r.headers["content-type"] == f"image/{fmt}")

    async def async_job(self, c: httpx.AsyncClient) -> str:
        r = await c.post(
            "/colorize",
            files={"image": ("p", self.rng.choice(self.pool))},
            headers={"Prefer": "respond-async"},
        )
        if r.status_code != 202:
            return self._expect(r, 202)
        job = r.json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = await c.get(f"/jobs/{job}")
            if s.status_code >= 500:
                return "server_error"
            status = s.json().get("status")
            if status == "done":
                res = await c.get(f"/jobs/{job}/result")
                return self._expect(res, 200, lambda res=res: res.content[:4] == b"\x89PNG")
            if status in ("failed", "expired", "cancelled"):
                return "job_" + status
            await asyncio.sleep(0.1)
        return "job_stuck"

    async def anchors(self, c: httpx.AsyncClient) -> str:
        r = await c.post("/anchors?anchors=4", files={"image": ("p", self.rng.choice(self.pool))})
        return self._expect(r, 200, lambda: len(r.json()["anchors"]) == 4)

    async def diverse(self, c: httpx.AsyncClient) -> str:
        r = await c.post(
            "/colorize/diverse?count=2", files={"image": ("p", self.rng.choice(self.pool))}
        )
        return self._expect(r, 200, lambda: len(r.json()["results"]) == 2)

    async def invalid(self, c: httpx.AsyncClient) -> str:
        kind = self.rng.randrange(3)
        if kind == 0:
            r = await c.post("/colorize?anchors=999", files={"image": ("p", self.pool[0])})
            return self._expect(r, 422)
        if kind == 1:
            r = await c.post(
                "/colorize", content=b"not an image", headers={"content-type": "image/png"}
            )
            return self._expect(r, 415)
        r = await c.get(f"/jobs/nosuchjob{self.rng.randrange(10**6):06d}")
        return self._expect(r, 404)

    async def reads(self, c: httpx.AsyncClient) -> str:
        path = self.rng.choice(["/healthz", "/readyz", "/metrics"])
        return self._expect(await c.get(path), 200)

    MIX = (("colorize", 0.55), ("async_job", 0.15), ("anchors", 0.1), ("diverse", 0.05),
           ("invalid", 0.1), ("reads", 0.05))  # fmt: skip

    @staticmethod
    def _expect(r: httpx.Response, status: int, check: Any = None) -> str:
        if r.status_code >= 500:
            return "server_error"
        if r.status_code == 429:
            return "rejected"
        if r.status_code != status:
            return "wrong_status"
        if check is not None and not check():
            return "wrong_body"
        return "ok" if status < 400 else "ok_4xx"

    # -- phases --------------------------------------------------------------------------------

    async def probe_capacity(self, seconds: float, concurrency: int) -> float:
        """Closed loop at `concurrency`: finished /colorize per second (the capacity)."""
        done = 0
        stop = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as c:
            await self.colorize(c)  # warm the path

            async def client() -> None:
                nonlocal done
                while time.monotonic() < stop:
                    r = await c.post(
                        "/colorize", files={"image": ("p", self.rng.choice(self.pool))}
                    )
                    if r.status_code == 200:
                        done += 1

            t = time.monotonic()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            return done / (time.monotonic() - t)

    async def soak(self, rate: float, seconds: float, window_s: float, drain_s: float) -> None:
        self.t0 = time.monotonic()
        names, weights = zip(*self.MIX, strict=True)
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(
            base_url=self.url, timeout=60, limits=httpx.Limits(max_connections=MAX_IN_FLIGHT)
        ) as c:

            async def one(kind: str) -> None:
                start = time.monotonic()
                try:
                    outcome = await getattr(self, kind)(c)
                except httpx.HTTPError as e:
                    outcome = f"transport_{type(e).__name__}"
                window = self._window(start)
                window.counts[outcome] += 1
                window.counts[f"kind_{kind}"] += 1
                if kind in ("colorize", "anchors", "diverse") and outcome == "ok":
                    window.latencies.append(time.monotonic() - start)

            next_at = self.t0
            while (now := time.monotonic()) < self.t0 + seconds:
                if now < next_at:
                    await asyncio.sleep(next_at - now)
                    continue
                next_at += self.rng.expovariate(rate)
                self._window(now)  # samples RSS as windows open
                if len(tasks) >= MAX_IN_FLIGHT:
                    self.shed += 1
                    continue
                kind = self.rng.choices(names, weights)[0]
                task = asyncio.create_task(one(kind))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=drain_s)
        self._sample_rss(self.windows[-1])

    def _window(self, at: float) -> Window:
        index = int((at - self.t0) // self.window_s)
        while len(self.windows) <= index:
            if self.windows:
                self._sample_rss(self.windows[-1])  # the state at the end of that window
            self.windows.append(Window(start=len(self.windows) * self.window_s))
        return self.windows[index]

    def _sample_rss(self, window: Window) -> None:
        for name, pid in self.pids.items():
            try:
                window.rss[name] = memory_mb(pid)
            except (OSError, ValueError):
                window.rss[name] = -1.0

    # -- verdict -------------------------------------------------------------------------------

    def verdict(self) -> dict[str, Any]:
        total: Counter[str] = Counter()
        for w in self.windows:
            total.update(w.counts)
        requests = sum(v for k, v in total.items() if not k.startswith("kind_"))
        bad = {
            k: v for k, v in total.items() if k.startswith(("server", "transport", "wrong", "job_"))
        }
        third = max(1, len(self.windows) // 3)

        def errors(ws: list[Window]) -> int:
            return sum(
                v for w in ws for k, v in w.counts.items()
                if k.startswith(("server", "transport", "wrong", "job_")) or k == "rejected"
            )  # fmt: skip

        first, last = errors(self.windows[:third]), errors(self.windows[-third:])
        memory: dict[str, dict[str, float]] = {}
        flat = True
        if len(self.windows) >= 2:
            for name in self.pids:
                base = self.windows[0].rss.get(name, -1.0)
                end = self.windows[-1].rss.get(name, -1.0)
                allowed = max(32.0, 0.10 * base)
                memory[name] = {
                    "after_warmup_mb": round(base, 1),
                    "end_mb": round(end, 1),
                    "peak_mb": round(max(w.rss.get(name, 0) for w in self.windows), 1),
                    "growth_mb": round(end - base, 1),
                    "allowed_mb": round(allowed, 1),
                }
                flat = flat and base > 0 and end > 0 and end - base <= allowed
        rejected = total["rejected"]
        checks = {
            "no_5xx_or_transport_errors": not bad,
            "rejected_under_1pct": rejected <= 0.01 * max(1, requests),
            "errors_not_growing": last <= first,
            "memory_flat": flat,
            "nothing_shed": self.shed == 0,
        }
        return {
            "ok": all(checks.values()),
            "checks": checks,
            "requests": requests,
            "outcomes": {k: v for k, v in total.items() if not k.startswith("kind_")},
            "mix": {k[5:]: v for k, v in total.items() if k.startswith("kind_")},
            "bad": bad,
            "errors_first_third": first,
            "errors_last_third": last,
            "shed": self.shed,
            "memory": memory,
            "windows": [w.summary() for w in self.windows],
        }


async def run_soak(
    url: str,
    *,
    duration_s: float,
    pids: dict[str, int] | None = None,
    load: float = 0.7,
    probe_s: float = 8.0,
    probe_concurrency: int = 16,
    window_s: float = 10.0,
    drain_s: float = 60.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Probe capacity, soak at `load` of it for `duration_s`, return the report."""
    soak = Soak(url, pids or {}, window_s=window_s, seed=seed)
    capacity = await soak.probe_capacity(probe_s, probe_concurrency)
    if capacity <= 0:
        raise RuntimeError("the capacity probe finished no request")
    rate = load * capacity
    started = time.time()
    await soak.soak(rate, duration_s, window_s, drain_s)
    report = soak.verdict()
    report.update({"capacity_rps": round(capacity, 2), "load": load, "rate_rps": round(rate, 2),
                   "duration_s": duration_s, "started_at": started, "url": url})  # fmt: skip
    return report


def _local_stack(model_dir: Path, workdir: Path):  # pragma: no cover - a manual convenience
    """redis-server (AOF) + API + 2 workers from tests/e2e/stack.py, on loopback ports."""
    sys.path.insert(0, str(ROOT / "tests"))
    from e2e.stack import Stack, free_port
    from hardening.harness import AofRedisServer

    server = AofRedisServer(workdir / "redis", free_port()).start()
    stack = Stack(server.url, model_dir, workdir, env={"DISCO_MAX_BACKLOG": "256"})
    stack.start_api()
    stack.start_worker("soak-w1")
    stack.start_worker("soak-w2")
    stack.wait_ready()
    return stack, server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--local-stack", type=Path, metavar="MODEL_DIR", help="start a private stack")
    p.add_argument("--duration", type=float, default=600.0, help="soak seconds (600)")
    p.add_argument("--load", type=float, default=0.7, help="fraction of capacity (0.7)")
    p.add_argument("--probe-s", type=float, default=10.0)
    p.add_argument("--window-s", type=float, default=30.0)
    p.add_argument("--pid", action="append", type=int, default=[], help="process to watch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the JSON report here")
    args = p.parse_args(argv)
    if not 0 < args.load <= 1.0 or args.duration > 3600:
        p.error("--load must be in (0, 1] and --duration at most 3600 s")
    stack = server = None
    pids = {f"pid{p_}": p_ for p_ in args.pid}
    url = args.url
    if args.local_stack:
        import tempfile

        stack, server = _local_stack(args.local_stack, Path(tempfile.mkdtemp(prefix="soak-")))
        url = stack.url
        pids = {"api": stack.api.pid, **{n: w.pid for n, w in stack.workers.items()}}
    check_loopback(url)
    try:
        report = asyncio.run(
            run_soak(url, duration_s=args.duration, pids=pids, load=args.load,
                     probe_s=args.probe_s, window_s=args.window_s, seed=args.seed)
        )  # fmt: skip
    finally:
        if stack is not None:
            stack.stop()
            server.kill()
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
