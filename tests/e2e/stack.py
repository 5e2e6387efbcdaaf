"""Run the production topology as local processes: redis-server, the API, N workers.

Real processes, real HTTP on 127.0.0.1, real Redis: what docker compose runs, minus Docker.
Used by the end-to-end and fault tests (kill -9 a worker, stop Redis) and by deploy/run-local.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    """Poll `check` until it returns a truthy value; bounded, and says what it waited for."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError) as e:
            last = e
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")


class Stack:
    def __init__(
        self,
        redis_url: str,
        model_dir: Path | None,
        logdir: Path,
        env: dict[str, str] | None = None,
    ):
        """`model_dir` None: the bundled default model (no --model flag, as a user runs it)."""
        self.redis_url = redis_url
        self.model_dir = model_dir
        self.logdir = logdir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "DISCO_THREADS": "1", **(env or {})}
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}.log").open("wb")
        cmd = [sys.executable, "-m", "service.cli", *args]
        return subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **extra}, stdout=log, stderr=log)

    def start_api(self, **env: str) -> Stack:
        self.api = self._spawn(
            "api",
            [
                "serve",
                "--port",
                str(self.port),
                "--queue",
                self.redis_url,
                *self._model_args(),
                "--log-level",
                "warning",
            ],
            env,
        )
        wait_until(
            lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200, 60, "API"
        )
        return self

    def _model_args(self) -> list[str]:
        return [] if self.model_dir is None else ["--model", str(self.model_dir)]

    def start_worker(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """A `disco worker` with default flags (metrics off, the default) plus `args`."""
        proc = self._spawn(
            name,
            ["worker", "--queue", self.redis_url, *self._model_args(), *args],
            {"DISCO_WORKER_NAME": name, **env},
        )
        self.workers[name] = proc
        return proc

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_until(
            lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200,
            timeout_s,
            "readyz",
        )

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.workers[name]
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in self.logdir.glob("*.log")
        )

    def stop(self) -> None:
        procs = [*self.workers.values(), *([self.api] if self.api else [])]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
