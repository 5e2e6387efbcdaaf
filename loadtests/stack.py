"""The service under load, as local processes on 127.0.0.1: bounded start, certain cleanup.

* `embedded`: `disco serve --queue memory://` (the API runs the batching worker in-process).
* `redis`: a private `redis-server` on a free port (AOF `everysec` and `noeviction`, as
  docker-compose.yml runs it, data in a temporary folder) + `disco serve --queue redis://...`
  + N `disco worker`s, each with its Prometheus port.

Every process gets a clean environment: the caller's `DISCO_*` variables are dropped (an API key
or a queue URL in the shell must not change what is measured) and the stack's own are set:
`DISCO_MAX_BATCH`, `DISCO_MAX_WAIT_MS`, `DISCO_THREADS` (engine threads per engine),
`DISCO_EMBEDDED_WORKERS` (engines of the embedded API).

    with start(StackConfig("redis", max_batch=8), model_dir, logdir) as stack:
        stack.url, stack.metrics_urls, stack.scrape()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass(frozen=True)
class StackConfig:
    """What to start. `threads` = engine threads per engine process (0 = the runtime's
    default, all cores); None = all cores for embedded, cores / workers for redis."""

    topology: str  # "embedded" | "redis"
    workers: int = 2
    max_batch: int = 8
    max_wait_ms: float = 10.0
    threads: int | None = None
    redis_hz: int | None = None  # redis-server --hz (None: its default, 10, as deployed)
    embedded_workers: int = 1  # DISCO_EMBEDDED_WORKERS of the embedded stack

    @property
    def engines(self) -> int:
        return self.embedded_workers if self.topology == "embedded" else self.workers

    @property
    def engine_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        if self.topology == "embedded" and self.engines == 1:
            return 0
        return max(1, (os.cpu_count() or 1) // self.engines)

    def label(self) -> str:
        shape = "embedded" if self.topology == "embedded" else f"redis+{self.workers}w"
        if self.topology == "embedded" and self.embedded_workers > 1:
            shape += f"x{self.embedded_workers}"
        if self.topology == "redis" and self.redis_hz:
            shape += f" hz{self.redis_hz}"
        return f"{shape} b{self.max_batch} w{self.max_wait_ms:g}ms t{self.engine_threads}"


@dataclass
class Stack:
    config: StackConfig
    model_dir: Path
    logdir: Path
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics_urls: list[str] = field(default_factory=list)  # where disco_batch_size lives
    redis_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    # -- processes -------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
        env.update(
            PYTHONUNBUFFERED="1",
            DISCO_MAX_BATCH=str(self.config.max_batch),
            DISCO_MAX_WAIT_MS=f"{self.config.max_wait_ms:g}",
            DISCO_THREADS=str(self.config.engine_threads),
            DISCO_EMBEDDED_WORKERS=str(self.config.embedded_workers),
        )
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.logdir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def _disco(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "service.cli", *args]

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}\n{self.logs(name)}")

    def wait(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError, urllib.error.URLError):
                if check():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}\n{self.logs()}")

    def start(self, ready_timeout_s: float = 180.0) -> Stack:
        env = self._env()
        queue = "memory://"
        if self.config.topology == "redis":
            exe = shutil.which("redis-server")
            if exe is None:
                raise RuntimeError(
                    "redis-server is not on PATH (scripts/system-deps.sh installs it)"
                )
            self.redis_dir = Path(tempfile.mkdtemp(prefix="disco-loadtest-redis-"))
            redis_port = free_port()
            self._spawn(
                "redis",
                [exe, "--port", str(redis_port), "--bind", HOST, "--dir", str(self.redis_dir),
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                 "--maxmemory-policy", "noeviction",
                 *(["--hz", str(self.config.redis_hz)] if self.config.redis_hz else [])],
                env,
            )  # fmt: skip
            self.wait(lambda: _redis_ping(redis_port), 20, "redis-server")
            queue = f"redis://{HOST}:{redis_port}/0"
        self._spawn(
            "api",
            self._disco("serve", "--host", HOST, "--port", str(self.port), "--queue", queue,
                        "--model", str(self.model_dir), "--log-level", "warning"),
            env,
        )  # fmt: skip
        if self.config.topology == "embedded":
            self.metrics_urls = [f"{self.url}/metrics"]
        else:
            for i in range(self.config.workers):
                port = free_port()
                self._spawn(
                    f"worker{i + 1}",
                    self._disco("worker", "--queue", queue, "--model", str(self.model_dir),
                                "--metrics-port", str(port)),
                    {**env, "DISCO_WORKER_NAME": f"loadtest-w{i + 1}"},
                )  # fmt: skip
                self.metrics_urls.append(f"http://{HOST}:{port}/metrics")
        self.wait(lambda: http_get(f"{self.url}/readyz", 2)[0] == 200, ready_timeout_s, "/readyz")
        for url in self.metrics_urls:
            self.wait(lambda url=url: http_get(url, 2)[0] == 200, ready_timeout_s, url)
        if self.config.topology == "redis":  # every worker registered, not only the first
            self.wait(
                lambda: (
                    _gauge(http_get(f"{self.url}/metrics")[1], "disco_workers_alive")
                    >= self.config.workers
                ),
                ready_timeout_s,
                f"{self.config.workers} live workers",
            )
        return self

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM the API and workers (they drain), then Redis; SIGKILL what outlives it."""
        groups = [[p for n, p in self.procs.items() if n != "redis"]]
        groups.append([p for n, p in self.procs.items() if n == "redis"])
        for group in groups:
            for p in group:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for p in group:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        if self.redis_dir is not None:
            shutil.rmtree(self.redis_dir, ignore_errors=True)

    # -- observations ----------------------------------------------------------------------------

    def scrape(self) -> dict[str, float]:
        """Counters summed over the engine processes: batches, jobs in batches, stage seconds."""
        out: dict[str, float] = {}
        for url in self.metrics_urls:
            for key, value in _samples(http_get(url)[1]).items():
                out[key] = out.get(key, 0.0) + value
        return out

    def queue_depth(self) -> int:
        return int(_gauge(http_get(f"{self.url}/metrics")[1], "disco_queue_depth"))

    def drain(self, timeout_s: float = 120.0) -> None:
        """Wait until no job is queued or running (abandoned requests finish or are dropped)."""
        self.wait(lambda: self.queue_depth() == 0, timeout_s, "an empty queue")

    def logs(self, only: str | None = None) -> str:
        return "\n".join(
            f"--- {p.stem}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.logdir.glob("*.log"))
            if only is None or p.stem == only
        )


@contextlib.contextmanager
def start(
    config: StackConfig, model_dir: Path, logdir: Path, ready_timeout_s: float = 180.0
) -> Iterator[Stack]:
    logdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(config, model_dir.resolve(), logdir)
    try:
        yield stack.start(ready_timeout_s)
    finally:
        stack.stop()


# -- Prometheus text and Redis, without extra dependencies -------------------------------------

_KEEP = (
    "disco_batch_size_sum",
    "disco_batch_size_count",
    "disco_stage_duration_seconds_sum",
    "disco_stage_duration_seconds_count",
    "disco_worker_jobs_done_total",
)


def _samples(text: bytes) -> dict[str, float]:
    """The few counters the driver needs, `name{labels}` -> value."""
    out: dict[str, float] = {}
    for line in text.decode(errors="replace").splitlines():
        if line.startswith(_KEEP):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


def _gauge(text: bytes, name: str) -> float:
    for line in text.decode(errors="replace").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _redis_ping(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=2) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        return s.recv(64).startswith(b"+PONG")
