"""Shared pieces of the hardening tests: memory probes, an AOF redis-server, a completion counter.

Everything runs on 127.0.0.1 only, bounded in time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .corpus import CORPUS_MAX_PIXELS

# The shared stack's knobs (conftest.py): the union of what the corpus, chaos and soak need.
STACK_ENV = {
    "DISCO_MAX_PIXELS": str(CORPUS_MAX_PIXELS),
    "DISCO_MAX_BATCH": "4",
    "DISCO_MAX_WAIT_MS": "20",
    "DISCO_VISIBILITY_TIMEOUT_S": "2",
    "DISCO_WORKER_HEALTH_TTL_S": "1",
    "DISCO_MAX_DELIVERIES": "5",
    "DISCO_JOB_TIMEOUT_S": "120",
    "DISCO_MAX_BACKLOG": "256",
    "DISCO_REDIS_CONNECT_TIMEOUT_S": "0.5",
}


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB: /proc VmRSS / VmHWM, else psutil (no peak)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        fields = {}
        for line in status.read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024.0
        return fields.get("VmRSS", 0.0), fields.get("VmHWM", fields.get("VmRSS", 0.0))
    psutil = pytest.importorskip("psutil")
    rss = psutil.Process(pid).memory_info().rss / 2**20
    return rss, rss


class RssSampler:
    """Samples the RSS of named processes in a thread; keeps each one's peak (VmHWM too)."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.1) -> None:
        self.pids = dict(pids)
        self.every_s = every_s
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.peak.setdefault(name, 0.0)
        self.samples.setdefault(name, [])

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def sample(self) -> None:
        now = time.monotonic()
        for name, pid in list(self.pids.items()):
            try:
                rss, hwm = memory_mb(pid)
            except (OSError, ValueError):
                continue  # exited (killed on purpose)
            self.samples[name].append((now, rss))
            self.peak[name] = max(self.peak[name], hwm, rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


class AofRedisServer:
    """A private redis-server with AOF (`appendfsync always`) in its own directory; `stop()`
    kills it (SIGKILL) and `start()` brings it back on the same port with the same data."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> AofRedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed (make test installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
                "--logfile", str(self.workdir / "redis.log")]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as r:
                    if r.ping():
                        return self
            except redis.exceptions.BusyLoadingError:
                pass
            except (redis.exceptions.ConnectionError, OSError):
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on {self.port}: see {self.workdir}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down_s: float = 1.0) -> None:
        self.kill()
        time.sleep(down_s)  # a real outage: clients see connection refused meanwhile
        self.start()
        self.restarts += 1


class CompletionCounter:
    """Counts the `disco:done` publications per job id: a job answered twice shows up here.

    Pub/sub is lossy while Redis is down, so across a Redis restart it gives a lower bound."""

    def __init__(self, url: str, channel: str = "disco:done") -> None:
        self.url = url
        self.channel = channel
        self.counts: Counter[str] = Counter()
        self.reconnects = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import redis

        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=2)
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self._ready.set()
                    elif msg["type"] == "message":
                        self.counts[msg["data"].decode()] += 1
                pubsub.close()
                client.close()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                self.reconnects += 1
                self._stop.wait(0.1)

    def __enter__(self) -> CompletionCounter:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("could not subscribe to job completions")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def live_workers(stack: Any) -> list[str]:
    """Names of the stack's worker processes that are still running."""
    return [name for name, proc in stack.workers.items() if proc.poll() is None]


def ensure_workers(stack: Any, n: int = 2) -> list[str]:
    """Top the stack up to `n` live workers (fresh names, like new pods) and wait until each new
    one consumes; returns the live names."""
    from e2e.stack import wait_until

    started = []
    while len(live_workers(stack)) < n:
        stack.generation = getattr(stack, "generation", 0) + 1
        name = f"w{stack.generation}"
        stack.start_worker(name)
        started.append(name)
    for name in started:
        log = stack.logdir / f"{name}.log"
        wait_until(lambda log=log: " started (max_batch" in log.read_text(), 60, f"{name} up")
    stack.wait_ready()
    return live_workers(stack)
