"""What the WAIT-for-a-replica after XADD costs per accepted job (DISCO_REDIS_WAIT_REPLICAS).

Starts its own redis-server primary + replica (no persistence) on free local ports, then times
`RedisStreamsQueue.enqueue` (what POST /colorize does before its 202: payload SET + enqueue
script [+ WAIT], one round trip) with WAIT off (`0`) and on (`auto`, which finds the online
replica and waits for it), alternating rounds so both see the same machine load; `--concurrency`
enqueues run at once per round. Prints medians and p99 per mode and the difference. Usage:
    .venv/bin/python tools/bench_redis_wait.py --jobs 2000 --payload-kb 50 --concurrency 1 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import redis

from service.queue import JobDef, open_queue
from service.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(workdir: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not installed")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--logfile", "", *args],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with redis.Redis(port=port) as r:
                r.ping()
            return proc, port
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _round(queue, payload: bytes, n: int, concurrency: int) -> list[float]:
    out: list[float] = []

    async def one() -> None:
        t0 = time.perf_counter()
        job = await queue.enqueue(JobDef.create("colorize", payload))
        out.append(time.perf_counter() - t0)
        await queue.client.delete(f"disco:job:{job.id}", f"disco:payload:{job.id}")
        await queue.client.xtrim("disco:jobs", maxlen=0)  # keep the backlog bound away

    for _ in range(n // concurrency):
        await asyncio.gather(*(one() for _ in range(concurrency)))
    return out


async def bench(port: int, jobs: int, payload_kb: int, concurrency: int) -> dict[str, list[float]]:
    url = f"redis://127.0.0.1:{port}/0"
    queues = {
        mode: open_queue(url, Settings(queue_url=url, redis_wait_replicas=mode, max_backlog=10**6))
        for mode in ("0", "auto")
    }
    payload = os.urandom(payload_kb * 1024)
    times: dict[str, list[float]] = {mode: [] for mode in queues}
    try:
        for q in queues.values():  # warm up: connections, script load, the auto replica check
            await _round(q, payload, 50, concurrency)
        assert await queues["auto"]._replicas_to_wait() == 1, "the replica is not online"
        rounds = 20
        for _ in range(rounds):
            for mode, q in queues.items():
                times[mode] += await _round(q, payload, max(1, jobs // rounds), concurrency)
        times["unreplicated"] = [float(queues["auto"].unreplicated_jobs)]
    finally:
        for q in queues.values():
            await q.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000, help="enqueues per mode")
    ap.add_argument("--payload-kb", type=int, default=50)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(f"{tmp}/p")
        os.mkdir(f"{tmp}/r")
        primary, port = _server(f"{tmp}/p")
        replica, _ = _server(f"{tmp}/r", "--replicaof", "127.0.0.1", str(port))
        try:
            with redis.Redis(port=port) as r:
                while "online" not in str(r.info("replication").get("slave0", {})):
                    time.sleep(0.05)
            for c in args.concurrency:
                t = asyncio.run(bench(port, args.jobs, args.payload_kb, c))
                off, on = (statistics.median(t[m]) * 1e3 for m in ("0", "auto"))
                p99_off, p99_on = (_p(t[m], 0.99) * 1e3 for m in ("0", "auto"))
                print(
                    f"concurrency={c} payload={args.payload_kb} KiB jobs/mode={len(t['0'])}: "
                    f"enqueue median WAIT off {off:.3f} ms, on {on:.3f} ms (+{on - off:.3f} ms, "
                    f"x{on / off:.2f}); p99 off {p99_off:.3f} ms, on {p99_on:.3f} ms; "
                    f"unacknowledged {int(t['unreplicated'][0])}"
                )
        finally:
            for proc in (replica, primary):
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
