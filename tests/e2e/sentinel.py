"""Three real `redis-sentinel` processes watching a primary + replica pair (failover tests).

Failover is tuned fast (down after 1 s, failover timeout 3 s), as a test can afford and a
production deployment may not (see SECURITY.md for the values to use there).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from .stack import free_port, wait_until

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def sentinel_binary() -> str:
    exe = shutil.which("redis-sentinel")
    if exe is None:
        pytest.skip(
            "redis-sentinel not installed (Debian package redis-sentinel; "
            "scripts/system-deps.sh installs it, so CI runs this test)"
        )
    return exe


class Sentinels:
    """`n` sentinels (quorum n // 2 + 1) monitoring `SERVICE` at 127.0.0.1:`primary_port`."""

    def __init__(self, workdir: Path, primary_port: int, n: int = 3) -> None:
        self.workdir = workdir
        self.primary_port = primary_port
        self.ports = [free_port() for _ in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> Sentinels:
        exe = sentinel_binary()
        quorum = len(self.ports) // 2 + 1
        for i, port in enumerate(self.ports):
            conf = self.workdir / f"sentinel{i}.conf"  # sentinel rewrites its config: writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.workdir}\n"
                f"logfile {self.workdir}/sentinel{i}.log\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} {quorum}\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.procs.append(
                subprocess.Popen(
                    [exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        return self

    def client(self, i: int = 0) -> redis.Redis:
        return redis.Redis(port=self.ports[i], socket_timeout=1, decode_responses=True)

    def wait_ready(self, replicas: int, timeout_s: float = 20) -> None:
        """Every sentinel sees the master, its replicas and the other sentinels."""

        def ready() -> bool:
            for i in range(len(self.ports)):
                with self.client(i) as c:
                    try:
                        m = c.sentinel_master(SERVICE)
                    except (redis.ConnectionError, redis.ResponseError):
                        return False
                    if int(m["num-other-sentinels"]) < len(self.ports) - 1:
                        return False
                    if int(m["num-slaves"]) < replicas:
                        return False
            return True

        wait_until(ready, timeout_s, "sentinels to see each other and the replica", every_s=0.2)

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers sees it."""
        for i in range(len(self.ports)):
            with self.client(i) as c:
                try:
                    addr = c.sentinel_get_master_addr_by_name(SERVICE)
                except redis.ConnectionError:
                    continue
                return int(addr[1]) if addr else None
        return None

    def wait_failover(self, old_port: int, timeout_s: float) -> float:
        """Seconds until the sentinels name a master other than `old_port`."""
        t0 = time.monotonic()
        wait_until(lambda: self.master_port() not in (None, old_port), timeout_s, "failover")
        return time.monotonic() - t0

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.workdir.glob("sentinel*.log"))
        )

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
