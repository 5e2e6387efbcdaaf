"""Chaos against redis-server (AOF, fsync always) + API + 2 workers, all on 127.0.0.1.

* kill -9 workers again and again while a load of jobs runs (a fresh worker replaces each);
* kill -9 Redis during load and restart it on the same port from its append-only file;
* SIGSTOP a worker holding a batch past the visibility timeout, then SIGCONT it.

Every accepted job ends done, or failed with a clear error (dead-lettered after
`DISCO_MAX_DELIVERIES`); none is lost; none is answered twice (each job's completion is
published exactly once on `disco:done`, and its stream entry is gone).
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections import Counter

import httpx
import pytest
from e2e.stack import Stack, wait_until
from PIL import Image

from .harness import AofRedisServer, CompletionCounter, ensure_workers, live_workers

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.slow

TERMINAL = {"done", "failed", "expired", "cancelled"}


def _image(i: int) -> bytes:
    img = Image.radial_gradient("L").resize((160 + 16 * (i % 5), 120)).rotate(11 * i)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def chaos(hard_stack):
    stack, server = hard_stack
    ensure_workers(stack, 2)
    return stack, server


def _submit(client: httpx.Client, i: int) -> httpx.Response:
    return client.post(
        "/colorize",
        content=_image(i),
        headers={"content-type": "image/png", "Prefer": "respond-async"},
    )


def _holder(r: redis.Redis, names: list[str]) -> str | None:
    """A live worker that holds delivered, unfinished jobs right now."""
    pending = r.xpending("disco:jobs", "disco:workers")
    owners = {c["name"].decode(): c["pending"] for c in pending.get("consumers") or []}
    return next((w for w in names if owners.get(w, 0) > 0), None)


def _final(client: httpx.Client, ids: list[str], timeout_s: float) -> dict[str, dict]:
    """Poll until every job is in a final state (tolerates a restarting Redis)."""
    infos: dict[str, dict] = {}

    def all_final() -> bool:
        for job in ids:
            if infos.get(job, {}).get("status") in TERMINAL:
                continue
            r = client.get(f"/jobs/{job}")
            if r.status_code == 200:
                infos[job] = r.json()
            elif r.status_code == 404:
                infos[job] = {"status": "lost"}
                return False
        return all(infos.get(j, {}).get("status") in TERMINAL for j in ids)

    wait_until(all_final, timeout_s, f"{len(ids)} jobs to finish", every_s=0.25)
    return infos


def _check_exactly_once(
    stack: Stack, server: AofRedisServer, client: httpx.Client, infos: dict[str, dict]
) -> Counter[str]:
    statuses = Counter(x["status"] for x in infos.values())
    for job, info in infos.items():
        if info["status"] == "done":
            r = client.get(f"/jobs/{job}/result")
            assert r.status_code == 200 and r.content[:4] == b"\x89PNG", (job, r.status_code)
        else:  # the only acceptable failure: delivered max_deliveries times, dead-lettered
            assert info["status"] == "failed", (job, info)
            assert info["error"]["code"] == "max_deliveries" and info["error"]["message"], info
    with redis.Redis.from_url(server.url) as r:
        assert r.xlen("disco:jobs") == 0, "unfinished entries left in the stream"
        assert r.xpending("disco:jobs", "disco:workers")["pending"] == 0
    return statuses


def test_kill9_workers_repeatedly(chaos):
    stack, server = chaos
    n_jobs, max_kills = 60, 6
    kills = 0
    with (
        CompletionCounter(server.url) as done,
        httpx.Client(base_url=stack.url, timeout=30) as client,
        redis.Redis.from_url(server.url) as r,
    ):
        ids = []
        for i in range(n_jobs):
            resp = _submit(client, i)
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        deadline = time.monotonic() + 60
        while kills < max_kills and time.monotonic() < deadline:
            try:
                victim = wait_until(
                    lambda: _holder(r, live_workers(stack)), 20, "a busy worker", 0.005
                )
            except TimeoutError:
                break  # everything finished before we ran out of kills
            stack.kill_worker(victim)  # SIGKILL mid-batch
            kills += 1
            stack.generation += 1
            stack.start_worker(f"w{stack.generation}")  # its replacement (a new pod), no wait
        infos = _final(client, ids, 120)
        statuses = _check_exactly_once(stack, server, client, infos)
        time.sleep(0.5)  # let the last publications reach the counter
        answered = Counter(done.counts[j] for j in ids)
    redelivered = sum(1 for x in infos.values() if x["attempts"] > 1)
    print(
        f"\n[chaos kill -9] jobs={n_jobs} kills={kills} statuses={dict(statuses)} "
        f"redelivered={redelivered} completions-per-job={dict(answered)}"
    )
    assert kills >= 3, f"only {kills} kills landed: the load was too short ({stack.logs()})"
    assert answered == {1: n_jobs}, "a job was answered twice, or never"
    assert statuses["done"] >= n_jobs // 2, statuses
    assert redelivered > 0


def test_redis_restart_with_aof_during_load(chaos):
    stack, server = chaos
    accepted: list[str] = []
    refused: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            i = 0
            while not stop.is_set():
                try:
                    resp = _submit(client, 1000 + i)
                except httpx.HTTPError:
                    refused[0] += 1
                else:
                    if resp.status_code == 202:
                        accepted.append(resp.json()["id"])
                    else:
                        refused[resp.status_code] += 1
                i += 1
                stop.wait(0.05)

    with CompletionCounter(server.url) as done:
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        wait_until(lambda: len(accepted) >= 15, 30, "load before the restart")
        with httpx.Client(base_url=stack.url, timeout=30) as client:  # a burst: a backlog
            accepted += [_submit(client, 5000 + i).json()["id"] for i in range(12)]
        before = list(accepted)
        with redis.Redis.from_url(server.url) as r:
            unfinished = r.xlen("disco:jobs")  # accepted, not finished: must survive the kill
        server.restart(down_s=1.5)  # SIGKILL: only the AOF (fsync always) survives
        wait_until(lambda: len(accepted) >= len(before) + 15, 60, "load after the restart")
        stop.set()
        loader.join(30)
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            stack.wait_ready(60)
            infos = _final(client, accepted, 120)
            statuses = _check_exactly_once(stack, server, client, infos)
        time.sleep(0.5)
        answered = Counter(done.counts[j] for j in accepted)
    print(
        f"\n[chaos redis restart] accepted={len(accepted)} (before restart {len(before)}, "
        f"unfinished at the kill {unfinished}) "
        f"refused={dict(refused)} restarts={server.restarts} statuses={dict(statuses)} "
        f"completions-per-job={dict(answered)} subscriber-reconnects={done.reconnects}"
    )
    assert unfinished > 0, "the restart found no unfinished job: the test proved nothing"
    assert statuses == {"done": len(accepted)}, (statuses, stack.logs())
    assert set(refused) <= {503, 0}, refused  # refused while Redis was down, never a 500
    assert set(answered) <= {0, 1}, "a job was answered twice"  # 0: published while down
    assert len(live_workers(stack)) == 2, stack.logs()


def test_sigstop_worker_past_visibility_timeout(chaos):
    stack, server = chaos
    with (
        CompletionCounter(server.url) as done,
        httpx.Client(base_url=stack.url, timeout=30) as client,
        redis.Redis.from_url(server.url) as r,
    ):
        ids = [_submit(client, 2000 + i).json()["id"] for i in range(16)]
        victim = wait_until(lambda: _holder(r, live_workers(stack)), 30, "a busy worker", 0.002)
        proc = stack.workers[victim]
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            frozen = [
                j for j in ids if (r.hget(f"disco:job:{j}", "worker") or b"").decode() == victim
            ]
            frozen = [j for j in frozen if r.hget(f"disco:job:{j}", "status") == b"running"]
            # the other worker reclaims the frozen batch once it is idle past the timeout
            infos = _final(client, ids, 60)
            reclaimed = [j for j in frozen if infos[j]["status"] == "done"]
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # the thawed worker finishes its stale batch; its late completions must be dropped
        more = [_submit(client, 3000 + i).json()["id"] for i in range(8)]
        infos.update(_final(client, more, 60))
        statuses = _check_exactly_once(stack, server, client, infos)
        time.sleep(0.5)
        answered = Counter(done.counts[j] for j in ids + more)
        stale = sum(1 for j in frozen if infos[j]["attempts"] > 1)
    print(
        f"\n[chaos SIGSTOP] jobs={len(ids) + len(more)} frozen-in-batch={len(frozen)} "
        f"reclaimed={len(reclaimed)} redelivered={stale} statuses={dict(statuses)} "
        f"completions-per-job={dict(answered)}"
    )
    assert frozen and len(reclaimed) == len(frozen)
    assert statuses == {"done": len(ids) + len(more)}
    assert answered == {1: len(ids) + len(more)}, "a job was answered twice, or never"
    assert proc.poll() is None, "the thawed worker died"
