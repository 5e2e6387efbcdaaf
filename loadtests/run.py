"""The load-test driver: start the stacks, run locust headless against them, collect the figures.

    python -m loadtests.run --model artifacts/models/disco-demo [--plan full] [--seconds 60]
    make loadtest [LOADTEST_SECONDS=60] [LOADTEST_PLAN=full] [LOADTEST_ARGS=...]

Plans (every locust run lasts `--seconds`, closed-loop users, loopback only):

* `scenarios`: per topology (embedded `disco serve --queue memory://`; redis-server + `disco
  serve --queue redis://` + `--workers` `disco worker`s): colorize 256 px at 1 user (latency
  and serving overhead) and at `--users` (saturation), 12 MP at 2 users, diverse (K=3) and the
  mixed profile at users/2, async jobs (submit, poll, result) at `--users`.
* `sweep`: colorize 256 px at each of `--users-sweep` per topology (offered load); on the
  embedded stack, each `--batch-sweep` max_batch at `--users`, and each `--wait-sweep`
  max_wait_ms at half the measured saturation throughput (users with exponential think time).
* `full` (default): both. `smoke`: a few seconds of colorize + diverse + async on the embedded
  stack (the test suite's check).

Before any stack starts, the engine-only baseline (`engine_bench.py`): OnnxEngine encode +
generate on preprocessed inputs, one engine with the embedded stack's threads, and `--workers`
concurrent single-thread engines like the workers. Serving efficiency = end-to-end images/s at
saturation / engine-only images/s at the mean batch the stack actually ran (its
`disco_batch_size` histogram). Serving overhead at 1 user = client latency - the `compute` of
`Server-Timing` (the worker's whole batch call: decode, preprocess, engine, compose, encode),
with the rest broken down from GET /jobs/{id} timings.

Writes `artifacts/loadtest/<UTC timestamp>/`: one folder per run (locust CSV + HTML report +
log + per-request timings), the stacks' logs, `load.json` (every figure), `summary.md` (the
tables for BENCHMARKS.md) and `load.png`; `--publish benchmarks` also copies load.json and
load.png there. Every wait is bounded; processes are stopped on any exit (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
import urllib.error
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from loadtests import engine_bench
from loadtests import scenarios as sc
from loadtests.stack import ROOT, Stack, StackConfig, http_get, start

LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
DEFAULT_MODEL = ROOT / "artifacts" / "models" / "disco-demo"
STOP_TIMEOUT_S = 45  # in-flight tasks may finish after the run time (job deadline: 30 s)
PLANS = ("full", "scenarios", "sweep", "smoke")
JOB_STAGES = ("preprocess", "encoder", "generator", "compose", "encode")  # timed inside compute
HALF_LOAD = "half"  # think time resolved at run time: half the measured saturation throughput


@dataclass(frozen=True)
class Run:
    """One locust run against one stack."""

    stack: StackConfig
    role: str  # scenario | load | batch | wait | smoke
    scenario: str  # a scenario of scenarios.SCENARIOS, or tags joined by "+"
    users: int
    think_s: float | str = 0.0  # or HALF_LOAD
    overhead: bool = False  # break the latency down (1 user)

    @property
    def tags(self) -> list[str]:
        return [] if self.scenario == sc.MIXED else self.scenario.split("+")

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.stack, self.scenario, self.users, self.think_s)


def build_plan(args: argparse.Namespace) -> list[Run]:
    base = {
        t: StackConfig(t, args.workers, args.max_batch, args.max_wait_ms,
                       redis_hz=args.redis_hz if t == "redis" else None,
                       embedded_workers=args.embedded_workers if t == "embedded" else 1)
        for t in ("embedded", "redis")
    }  # fmt: skip
    topologies = [t for t in args.topologies.split(",") if t]
    u = args.users
    runs: list[Run] = []
    if args.plan == "smoke":
        return [Run(base["embedded"], "smoke", "colorize256+diverse+async", 2, overhead=True)]
    for topo in topologies:
        stack = base[topo]
        if args.plan in ("full", "sweep"):
            runs += [
                Run(stack, "load", sc.COLORIZE_256, n, overhead=n == 1) for n in args.users_sweep
            ]
        if args.plan in ("full", "scenarios"):
            runs += [
                Run(stack, "scenario", sc.COLORIZE_256, 1, overhead=True),
                Run(stack, "scenario", sc.COLORIZE_256, u),
                Run(stack, "scenario", sc.COLORIZE_12MP, 2),
                Run(stack, "scenario", sc.DIVERSE, max(1, u // 2)),
                Run(stack, "scenario", sc.ASYNC, u),
                Run(stack, "scenario", sc.MIXED, max(1, u // 2)),
            ]  # fmt: skip
    if args.plan in ("full", "sweep") and "embedded" in topologies:
        emb = base["embedded"]
        runs += [
            Run(replace(emb, max_batch=b), "batch", sc.COLORIZE_256, args.batch_users)
            for b in args.batch_sweep
        ]
        runs += [
            Run(replace(emb, max_wait_ms=w), "wait", sc.COLORIZE_256, args.wait_users,
                think_s=HALF_LOAD)
            for w in args.wait_sweep
        ]  # fmt: skip
    if args.scenarios:  # e.g. re-measure one scenario after a change
        runs = [r for r in runs if r.scenario in args.scenarios]
    seen: dict[tuple[Any, ...], Run] = {}
    for r in runs:  # a point two parts of the plan share runs once (the first role wins)
        if r.key not in seen:
            seen[r.key] = r
        elif r.overhead and not seen[r.key].overhead:
            seen[r.key] = replace(seen[r.key], overhead=True)
    return list(seen.values())


def grouped(runs: list[Run]) -> Iterator[tuple[StackConfig, list[Run]]]:
    """Runs by stack, in the order each stack first appears (one start per stack)."""
    order: dict[StackConfig, list[Run]] = {}
    for r in runs:
        order.setdefault(r.stack, []).append(r)
    yield from order.items()


# -- one locust run ----------------------------------------------------------------------------


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def run_locust(stack: Stack, run: Run, think_s: float, seconds: int, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", stack.url, "-u", str(run.users), "-r", str(run.users), "-t", f"{seconds}s",
        "--stop-timeout", str(STOP_TIMEOUT_S), "--csv", str(outdir / "locust"),
        "--html", str(outdir / "report.html"), "--only-summary", "--loglevel", "WARNING",
        "--timings-out", str(outdir / "timings.json"), "--think-s", f"{think_s:g}",
    ]  # fmt: skip
    if run.tags:
        cmd += ["--tags", *run.tags]
    (outdir / "command.txt").write_text(shlex.join(cmd) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "DISCO_"))}
    with (outdir / "locust.log").open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait(timeout=seconds + STOP_TIMEOUT_S + 90)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"locust did not finish; see {outdir / 'locust.log'}") from None
        finally:
            _terminate(proc)
    if not (outdir / "locust_stats.csv").is_file():
        log_text = (outdir / "locust.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"locust wrote no statistics (exit {proc.returncode}):\n{log_text}")


def read_stats(path: Path) -> dict[str, dict[str, Any]]:
    """locust's `_stats.csv` -> {name: count, failures, rps, p50/p95/p99/avg/max ms}."""
    out: dict[str, dict[str, Any]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):

            def num(key: str, row: dict[str, str] = row) -> float | None:
                value = row.get(key, "")
                return None if value in ("", "N/A") else float(value)

            out[row["Name"]] = {
                "type": row["Type"],
                "count": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": round(num("Requests/s") or 0.0, 3),
                "p50_ms": num("50%"),
                "p95_ms": num("95%"),
                "p99_ms": num("99%"),
                "avg_ms": round(num("Average Response Time") or 0.0, 1),
                "max_ms": num("Max Response Time"),
            }
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


def overhead(stack: Stack, records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Latency breakdown of the 1-user run's requests of `name` (medians, ms)."""
    recs = [r for r in records if r["name"] == name and "compute" in r["server"]]
    if not recs:
        return {}
    client = [r["client_ms"] for r in recs]
    compute = [r["server"]["compute"] for r in recs]
    queue = [r["server"].get("queue", 0.0) for r in recs]
    out: dict[str, Any] = {
        "requests": len(recs),
        "client_p50_ms": _pct(client, 0.5),
        "compute_p50_ms": _pct(compute, 0.5),
        "overhead_p50_ms": _pct([c - s for c, s in zip(client, compute, strict=True)], 0.5),
        "overhead_p95_ms": _pct([c - s for c, s in zip(client, compute, strict=True)], 0.95),
        "queue_p50_ms": _pct(queue, 0.5),
        "http_api_p50_ms": _pct(
            [c - s - q for c, s, q in zip(client, compute, queue, strict=True)], 0.5
        ),
    }
    # inside `compute`: the job's own stage times (GET /jobs/{id}; results live 10 minutes)
    stages: dict[str, list[float]] = {}
    non_engine: list[float] = []
    for r in recs[:200]:
        try:
            code, body = http_get(f"{stack.url}/jobs/{r['id']}")
        except (OSError, urllib.error.URLError):
            continue
        if code != 200:
            continue
        t = {k.removesuffix("_s"): 1000 * v for k, v in json.loads(body)["timings"].items()}
        known = sum(t.get(k, 0.0) for k in JOB_STAGES)
        t["decode+other"] = t.get("compute", 0.0) - known
        t["engine"] = t.get("encoder", 0.0) + t.get("generator", 0.0)
        for k, v in t.items():
            stages.setdefault(k, []).append(v)
        non_engine.append(r["client_ms"] - t["engine"])
    out["stage_p50_ms"] = {k: _pct(v, 0.5) for k, v in sorted(stages.items())}
    out["non_engine_p50_ms"] = _pct(non_engine, 0.5)
    return out


def run_name(index: int, run: Run) -> str:
    s = run.stack
    scenario = run.scenario.replace("+", "_")
    return f"{index:02d}-{s.topology}-b{s.max_batch}-w{s.max_wait_ms:g}-{scenario}-u{run.users}"


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each stack process, and of this driver with its reaped children
    (the locust runs) as `locust`."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            out[name] = (int(stat[11]) + int(stat[12])) / tick
        except (OSError, IndexError, ValueError):
            out[name] = 0.0
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    out["locust"] = sum(u.ru_utime + u.ru_stime for u in usage)
    return out


def execute(stack: Stack, run: Run, think_s: float, seconds: int, outdir: Path) -> dict[str, Any]:
    stack.check_alive()
    load_before = os.getloadavg()[0]
    before = stack.scrape()
    t0 = time.time()
    pids = stack.pids
    busy0, ours0, wall0 = _busy_cpu_s(), _cpu_s(pids), time.monotonic()
    run_locust(stack, run, think_s, seconds, outdir)
    stack.drain()
    wall = time.monotonic() - wall0
    ours = {k: max(0.0, v - ours0.get(k, 0.0)) for k, v in _cpu_s(pids).items()}
    other_cpu = max(0.0, (_busy_cpu_s() - busy0) - sum(ours.values()))
    other_frac = other_cpu / (wall * (os.cpu_count() or 1))
    if other_frac > 0.05:
        _print(
            f"   WARNING: other processes used {100 * other_frac:.0f} % of the machine's CPU "
            "during this run: the figures are noisy"
        )
    after = stack.scrape()
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    stats = read_stats(outdir / "locust_stats.csv")
    records = []
    if (outdir / "timings.json").is_file():
        records = json.loads((outdir / "timings.json").read_text())["records"]
    primary = sc.PRIMARY.get(run.scenario)
    if primary is None and run.scenario != sc.MIXED:
        primary = sc.PRIMARY.get(run.tags[0])
    batches = delta.get("disco_batch_size_count", 0.0)
    stage_ms = {}
    for stage in ("decode", "compute", "encode"):
        n = delta.get(f'disco_stage_duration_seconds_count{{stage="{stage}"}}', 0.0)
        if n:
            total = delta[f'disco_stage_duration_seconds_sum{{stage="{stage}"}}']
            stage_ms[stage] = round(1000 * total / n, 1)
    agg = stats.get("Aggregated", {})
    images = sum(
        row["rps"] * sc.IMAGES_PER_REQUEST.get(name, 0) for name, row in stats.items()
    )  # every image-producing row (the mixed profile has several)
    result: dict[str, Any] = {
        "id": outdir.name,
        "role": run.role,
        "topology": run.stack.topology,
        "workers": run.stack.workers if run.stack.topology == "redis" else 0,
        "engines": run.stack.engines,
        "threads": run.stack.engine_threads,
        "max_batch": run.stack.max_batch,
        "max_wait_ms": run.stack.max_wait_ms,
        "scenario": run.scenario,
        "users": run.users,
        "think_s": round(think_s, 3),
        "seconds": seconds,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "loadavg_1m_before": round(load_before, 2),
        "other_cpu_pct": round(100 * other_frac, 1),  # CPU of processes not in the test
        # per process, % of one core (all cores: 100 x cores): where the machine's CPU went
        "cpu_pct": {k: round(100 * v / wall, 1) for k, v in ours.items()},
        "primary": primary,
        "requests": stats,
        "failures": int(agg.get("failures", 0)),
        "total_requests": int(agg.get("count", 0)),
        "images_per_s": round(images, 3),
        "batch_mean": round(delta.get("disco_batch_size_sum", 0.0) / batches, 2)
        if batches
        else None,
        "stage_mean_ms": stage_ms,
    }
    if primary and primary in stats:
        row = stats[primary]
        result.update(
            throughput_rps=row["rps"], p50_ms=row["p50_ms"], p95_ms=row["p95_ms"],
            p99_ms=row["p99_ms"],
        )  # fmt: skip
    if run.overhead:
        result["overhead"] = overhead(stack, records, primary or sc.REQ_COLORIZE_256)
    return result


# -- reporting ----------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def stack_label(r: dict[str, Any]) -> str:
    shape = "embedded" if r["topology"] == "embedded" else f"redis + {r['workers']} workers"
    if r["topology"] == "embedded" and r.get("engines", 1) > 1:
        shape += f" x {r['engines']} engines"
    return f"{shape} (batch {r['max_batch']}, wait {r['max_wait_ms']:g} ms)"


def row_line(r: dict[str, Any]) -> str:
    load = f"{r['users']}" + (f" (think {r['think_s']:.2f} s)" if r["think_s"] else "")
    other = f"{r['other_cpu_pct']:.0f} %" if "other_cpu_pct" in r else "-"
    # a scenario's own row; for the mixed profile every row that produces images
    rows = (
        [r["primary"]] if r["primary"] else [n for n in r["requests"] if n in sc.IMAGES_PER_REQUEST]
    )
    cells = []
    for name in rows:
        s = r["requests"].get(name)
        if s is None:
            continue
        cells.append(
            f"| {stack_label(r)} | {r['scenario']} | {s['type']} `{name}` | {load} | "
            f"{s['rps']:.2f} | {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} | {_fmt(s['p99_ms'])} | "
            f"{s['failures']}/{s['count']} | {_fmt(r['batch_mean'], 1)} | {other} |"
        )
    return "\n".join(cells)


TABLE_HEAD = (
    "| stack | scenario | request | users | req/s | p50 ms | p95 ms | p99 ms | failed/total "
    "| mean batch | other CPU |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def efficiency(
    results: list[dict[str, Any]], engine: dict[str, Any], users: int
) -> list[dict[str, Any]]:
    """End-to-end img/s at saturation (colorize 256, `users`) / engine-only at its mean batch."""
    out = []
    for r in results:
        if r["scenario"] != sc.COLORIZE_256 or r["users"] != users or r["think_s"]:
            continue
        if r["role"] not in ("scenario", "load") or not r.get("batch_mean"):
            continue
        ref = engine.get(f"{r['engines']}x{r['threads']}")
        if not ref:
            continue
        ceiling = engine_bench.at_batch(ref, r["batch_mean"])
        out.append(
            {
                "stack": stack_label(r),
                "id": r["id"],
                "e2e_images_per_s": r["images_per_s"],
                "batch_mean": r["batch_mean"],
                "engine_images_per_s": round(ceiling, 3),
                "ratio": round(r["images_per_s"] / ceiling, 3),
                "target": 0.9,
                "met": r["images_per_s"] / ceiling >= 0.9,
            }
        )
    return out


def also_in(report: dict[str, Any], r: dict[str, Any], role: str) -> bool:
    """Points the load sweep ran for another part of the plan too: the colorize 256 px
    scenario (1 user, saturation) and the default max_batch of the max_batch sweep."""
    if r["role"] != "load" or r["scenario"] != sc.COLORIZE_256:
        return False
    if role == "scenario":
        return r["users"] in (1, report["saturation_users"]) and report["plan"] == "full"
    if role == "batch":
        return any(
            b["role"] == "batch" and b["users"] == r["users"] and b["topology"] == r["topology"]
            and b["max_wait_ms"] == r["max_wait_ms"] and not r["think_s"]
            for b in report["results"]
        )  # fmt: skip
    return False


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    results = report["results"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores; onnxruntime {m['onnxruntime']}; model "
        f"`{report['model']}`; {report['seconds']} s per configuration; {m['date']}; "
        f"1-min load average before the runs {m['loadavg_start']:.2f}, "
        f"after {m['loadavg_end']:.2f}.",
    ]  # fmt: skip
    if report.get("note"):
        lines += ["", f"**{report['note']}**"]
    if report.get("error"):
        lines += ["", f"**Stopped early: {report['error']}** (the figures below are partial)"]
    for role, title in (
        ("scenario", "Scenarios"),
        ("load", "Offered load (colorize 256 px, closed-loop users)"),
        ("batch", "max_batch (embedded, colorize 256 px)"),
        ("wait", "max_wait_ms (embedded, colorize 256 px, half load)"),
        ("smoke", "Smoke"),
    ):
        chosen = [r for r in results if r["role"] == role or also_in(report, r, role)]
        if role in ("batch", "wait"):
            chosen.sort(key=lambda r: (r["max_batch"], r["max_wait_ms"]))
        rows = [row_line(r) for r in chosen]
        if rows:
            lines += ["", f"**{title}**", "", TABLE_HEAD, *rows]
    eff = report.get("efficiency", [])
    if eff:
        lines += [
            "", "**Serving efficiency at saturation** (colorize 256 px; engine-only = OnnxEngine "
            "encode + generate on preprocessed inputs, same threads, at the stack's mean batch)",
            "", "| stack | end-to-end img/s | mean batch | engine-only img/s "
            "| ratio (target >= 0.9) | CPU, % of one core, per process |",
            "|---|---:|---:|---:|---:|---|",
        ]  # fmt: skip
        by_id = {r["id"]: r for r in results}
        for e in eff:
            verdict = "met" if e["met"] else "**not met**"
            cpu = by_id.get(e["id"], {}).get("cpu_pct", {})
            lines.append(
                f"| {e['stack']} | {e['e2e_images_per_s']:.2f} | {e['batch_mean']:.1f} | "
                f"{e['engine_images_per_s']:.2f} | {e['ratio']:.2f} ({verdict}) | "
                + (", ".join(f"{k} {v:.0f}" for k, v in cpu.items()) or "-")
                + " |"
            )
    ovh = [r for r in results if r.get("overhead")]
    if ovh:
        lines += [
            "", "**Serving overhead at low load** (colorize 256 px; overhead = client latency - "
            "Server-Timing `compute`, the worker's whole call: decode, preprocess, engine, "
            "compose, encode)", "",
            "| stack | users | requests | client p50 | compute p50 | overhead p50 (target <= 15) | "
            "overhead p95 | of which queue p50 | HTTP + API p50 | client - engine p50 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]  # fmt: skip
        for r in ovh:
            o = r["overhead"]
            if not o:
                continue
            met = "met" if (o["overhead_p50_ms"] or 1e9) <= 15 else "**not met**"
            cells = [
                stack_label(r), r["users"], o["requests"], _fmt(o["client_p50_ms"], 1),
                _fmt(o["compute_p50_ms"], 1), f"{_fmt(o['overhead_p50_ms'], 1)} ({met})",
                _fmt(o["overhead_p95_ms"], 1), _fmt(o["queue_p50_ms"], 1),
                _fmt(o["http_api_p50_ms"], 1), _fmt(o.get("non_engine_p50_ms"), 1),
            ]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        stages = [r for r in ovh if r["overhead"].get("stage_p50_ms")]
        if stages:
            keys = ["decode+other", *JOB_STAGES, "engine"]
            lines += [
                "", "Inside `compute` (GET /jobs/{id} timings, p50 ms):", "",
                "| stack | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys),
            ]  # fmt: skip
            for r in stages:
                st = r["overhead"]["stage_p50_ms"]
                lines.append(
                    f"| {stack_label(r)} | " + " | ".join(_fmt(st.get(k), 1) for k in keys) + " |"
                )
    eng = report.get("engine_only", {})
    if eng:
        lines += ["", "**Engine-only** (images/s, all engines together)", ""]
        for layout, e in eng.items():
            cells = ", ".join(f"batch {b}: {v['images_per_s']:.2f}" for b, v in e["batch"].items())
            lines.append(f"* {layout} (engines x threads): {cells}")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    import onnxruntime

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_start": os.getloadavg()[0],
    }


def _model_name(model: Path) -> str:
    try:
        return str(json.loads((model / "manifest.json").read_text())["name"])
    except (OSError, ValueError, KeyError):
        return model.name


def _half_load_think(results: list[dict[str, Any]], run: Run) -> float:
    """Think time that offers `run.users` users half the saturation throughput measured on the
    default embedded stack: users / (X/2) = latency + think, latency ~ the 1-user p50."""

    def closed(users: int) -> list[dict[str, Any]]:
        return [
            r
            for r in results
            if r["topology"] == "embedded" and r["scenario"] == sc.COLORIZE_256
            and r["max_batch"] == run.stack.max_batch and r["users"] == users
            and not r["think_s"] and r.get("p50_ms")
        ]  # fmt: skip

    sat, one = closed(run.users) or closed(max(r["users"] for r in results)), closed(1)
    if not sat:
        return 0.0
    x = sat[0]["throughput_rps"] / 2
    latency = (one[0]["p50_ms"] / 1000) if one else 0.0
    return max(0.0, run.users / x - latency)


def _print(msg: str) -> None:
    print(msg, flush=True)


def parser() -> argparse.ArgumentParser:
    env_int = lambda k, d: int(os.environ.get(k) or d)  # noqa: E731
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p = argparse.ArgumentParser(
        prog="python -m loadtests.run", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2],
    )  # fmt: skip
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model repository")
    p.add_argument("--plan", choices=PLANS, default="full")
    p.add_argument("--seconds", type=int, default=env_int("LOADTEST_SECONDS", 60), help="per run")
    p.add_argument("--topologies", default="embedded,redis", help="embedded,redis")
    p.add_argument("--workers", type=int, default=2, help="disco workers of the redis stack")
    p.add_argument("--redis-hz", type=int, help="redis-server --hz (default: Redis's own, 10)")
    p.add_argument("--embedded-workers", type=int, default=1, help="DISCO_EMBEDDED_WORKERS")
    p.add_argument("--max-batch", type=int, default=env_int("DISCO_MAX_BATCH", 8))
    p.add_argument(
        "--max-wait-ms", type=float, default=float(os.environ.get("DISCO_MAX_WAIT_MS") or 10)
    )
    p.add_argument("--users", type=int, default=8, help="saturation users (scenarios)")
    p.add_argument("--batch-users", type=int, default=16, help="users of the max_batch sweep")
    p.add_argument("--wait-users", type=int, default=16, help="users of the max_wait sweep")
    p.add_argument(
        "--scenarios", type=lambda v: [x for x in v.split(",") if x], default=[],
        help="only these scenarios of the plan, e.g. colorize12mp (default: all)",
    )  # fmt: skip
    p.add_argument("--users-sweep", type=ints, default=[1, 2, 4, 8, 16])
    p.add_argument("--batch-sweep", type=ints, default=[1, 2, 4, 8, 16])
    p.add_argument("--wait-sweep", type=ints, default=[0, 2, 10, 50, 200])
    p.add_argument("--engine-rounds", type=int, default=3, help="0 = no engine-only baseline")
    p.add_argument("--out", type=Path, help="default: artifacts/loadtest/<UTC timestamp>")
    p.add_argument("--publish", type=Path, help="also copy load.json + load.png here")
    p.add_argument("--note", default="", help="a line for the report (e.g. 'noisy machine')")
    p.add_argument("--dry-run", action="store_true", help="print the plan, start nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.seconds < 1 or args.seconds > 3600:
        p.error("--seconds must be within 1..3600")
    if not (args.model / "manifest.json").is_file():
        p.error(f"{args.model} is not a model repository (run `make model` or pass --model)")

    runs = build_plan(args)
    restarts = len(dict(grouped(runs)))
    engine = bool(args.engine_rounds) and args.plan != "smoke"
    eta_s = len(runs) * (args.seconds + 20) + restarts * 20 + 120 * engine
    _print(f"loadtest plan {args.plan}: {len(runs)} runs of {args.seconds} s on {restarts} "
           f"stack(s); about {eta_s / 60:.0f} min")  # fmt: skip
    if args.dry_run:
        for r in runs:
            _print(f"  {r.stack.label():40s} {r.role:8s} {r.scenario:28s} users {r.users}")
        return 0

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or ROOT / "artifacts" / "loadtest" / stamp
    out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("DISCO_THREADS", None)  # the engine-only baseline sets its threads itself

    def on_term(signum: int, frame: Any) -> None:
        _print(f"loadtest: {signal.Signals(signum).name} received, stopping")
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)
    argv_used = sys.argv[1:] if argv is None else argv
    report: dict[str, Any] = {
        "command": "python -m loadtests.run " + shlex.join(argv_used),
        "plan": args.plan,
        "model": _model_name(args.model),
        "seconds": args.seconds,
        "saturation_users": args.users,
        "note": args.note,
        "machine": machine(),
        "stacks": {},
        "engine_only": {},
        "results": [],
    }

    def save() -> None:
        report["machine"]["loadavg_end"] = os.getloadavg()[0]
        report["efficiency"] = efficiency(report["results"], report["engine_only"], args.users)
        (out / "load.json").write_text(json.dumps(report, indent=1))
        (out / "summary.md").write_text(markdown(report))

    index = 0
    status = 0
    try:
        if engine:
            layouts = {(s.engines, s.engine_threads, s.topology) for s, _ in grouped(runs)}
            for engines, threads, topo in sorted(layouts):
                sizes = sorted(
                    {1, 2, 4, 8} | ({*args.batch_sweep} if topo == "embedded" else set())
                )
                sizes = [b for b in sizes if topo == "embedded" or b <= args.max_batch]
                report["engine_only"][f"{engines}x{threads}"] = engine_bench.measure(
                    args.model, batches=sizes, engines=engines, threads=threads,
                    rounds=args.engine_rounds, progress=_print,
                )  # fmt: skip
                save()
        for config, group in grouped(runs):
            logdir = out / "logs" / config.label().replace(" ", "_")
            _print(f"== starting {config.label()}")
            with start(config, args.model, logdir) as stack:
                report["stacks"][config.label()] = {**asdict(config), "pids": stack.pids}
                for run in group:
                    index += 1
                    think = (
                        _half_load_think(report["results"], run)
                        if run.think_s == HALF_LOAD
                        else float(run.think_s)
                    )
                    name = run_name(index, run)
                    _print(f"-- [{index}/{len(runs)}] {name} (think {think:.2f} s)")
                    result = execute(stack, run, think, args.seconds, out / name)
                    report["results"].append(result)
                    save()
                    _print(TABLE_HEAD.split("\n")[0] + "\n" + row_line(result))
    except (Exception, KeyboardInterrupt, SystemExit) as e:
        status = 130 if isinstance(e, KeyboardInterrupt) else 1
        if isinstance(e, SystemExit) and isinstance(e.code, int):
            status = e.code
        report["error"] = f"{type(e).__name__}: {e}"
        _print(f"loadtest stopped: {report['error']}")
        if not isinstance(e, KeyboardInterrupt | SystemExit):
            traceback.print_exc()
    finally:
        save()

    from loadtests import plot

    if any(r["role"] in ("load", "batch", "wait") for r in report["results"]):
        try:
            plot.plot(report, out / "load.png")
        except ImportError as e:  # matplotlib is in the `load` extra
            _print(f"no plot: {e}")
    _print("\n" + markdown(report))
    if args.publish and status == 0:
        args.publish.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "load.json", args.publish / "load.json")
        if (out / "load.png").is_file():
            shutil.copy(out / "load.png", args.publish / "load.png")
    _print(f"results: {out}")
    failures = sum(r["failures"] for r in report["results"])
    if failures:
        _print(f"{failures} failed requests (see the report.html of each run)")
    return status


if __name__ == "__main__":
    sys.exit(main())
