"""The load-test figure: throughput and tail latency against offered load, max_batch, max_wait.

    python -m loadtests.plot artifacts/loadtest/<run>/load.json -o benchmarks/load.png

Four panels from `load.json` (written by `python -m loadtests.run`), colorize 256 px:
throughput (images/s) and p50 / p99 against closed-loop users per topology, with the
engine-only ceiling at the stack's max_batch dashed; throughput and p99 against max_batch
(saturation) with engine-only at that batch; and against max_wait_ms (half load).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from loadtests import scenarios as sc
from loadtests.run import also_in

COLORS = {"embedded": "tab:blue", "redis": "tab:orange"}


def _points(results: list[dict[str, Any]], role: str, x: str) -> list[dict[str, Any]]:
    rows = [r for r in results if r["role"] == role and r["scenario"] == sc.COLORIZE_256]
    return sorted(rows, key=lambda r: r[x])


def _engine(report: dict[str, Any], r: dict[str, Any], batch: int) -> float | None:
    ref = report.get("engine_only", {}).get(f"{r['engines']}x{r['threads']}")
    if not ref:
        return None
    from loadtests.engine_bench import at_batch

    return at_batch(ref, batch)


def _ticks(ax: Any, xs: list[float], *, log: bool) -> None:
    """Ticks at the measured points, plain numbers."""
    if not xs:
        return
    if log:
        ax.set_xscale("log", base=2)
    else:
        ax.set_xscale("symlog", linthresh=10)
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()


def plot(report: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (ax_tp, ax_lat), (ax_b, ax_w) = axes

    # offered load: users
    for topo in ("embedded", "redis"):
        pts = [r for r in _points(results, "load", "users") if r["topology"] == topo]
        if not pts:
            continue
        users = [r["users"] for r in pts]
        label = "embedded" if topo == "embedded" else f"redis + {pts[0]['workers']} workers"
        c = COLORS[topo]
        ax_tp.plot(users, [r["images_per_s"] for r in pts], "o-", color=c, label=label)
        ceiling = _engine(report, pts[0], pts[0]["max_batch"])
        if ceiling:
            ax_tp.axhline(ceiling, color=c, ls="--", lw=1,
                          label=f"engine only, batch {pts[0]['max_batch']}")  # fmt: skip
        ax_lat.plot(users, [r["p99_ms"] for r in pts], "o-", color=c, label=f"{label} p99")
        ax_lat.plot(users, [r["p50_ms"] for r in pts], "s:", color=c, label=f"{label} p50")
    for ax in (ax_tp, ax_lat):
        _ticks(ax, sorted({r["users"] for r in _points(results, "load", "users")}), log=True)
        ax.set_xlabel("closed-loop users (offered load)")
        ax.grid(alpha=0.3)
    ax_tp.set_ylabel("throughput (images/s)")
    ax_tp.set_ylim(bottom=0)
    ax_tp.set_title("Throughput vs offered load (colorize 256 px)")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_yscale("log")
    ax_lat.set_title("p50 / p99 vs offered load")

    # max_batch (saturation) and max_wait (half load)
    for ax, role, key, xlabel, title in (
        (ax_b, "batch", "max_batch", "max_batch (DISCO_MAX_BATCH)", "at saturation"),
        (ax_w, "wait", "max_wait_ms", "max_wait_ms (DISCO_MAX_WAIT_MS)", "at half load"),
    ):
        pts = _points(results, role, key)
        if role == "batch":  # + the load sweep's point at the default max_batch, same users
            pts = sorted(
                pts + [r for r in _points(results, "load", key) if also_in(report, r, role)],
                key=lambda r: r[key],
            )
        if not pts:
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        xs = [r[key] for r in pts]
        ax.plot(xs, [r["images_per_s"] for r in pts], "o-", color="tab:blue", label="images/s")
        if role == "batch":
            eng = [_engine(report, r, r["max_batch"]) for r in pts]
            if all(eng):
                ax.plot(xs, eng, "--", color="tab:blue", lw=1, label="engine only")
        _ticks(ax, xs, log=role == "batch")
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("throughput (images/s)", color="tab:blue")
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        twin.plot(xs, [r["p99_ms"] for r in pts], "o-", color="tab:red", label="p99")
        twin.plot(xs, [r["p50_ms"] for r in pts], "s:", color="tab:red", label="p50")
        twin.set_ylabel("latency (ms)", color="tab:red")
        twin.set_ylim(bottom=0)
        users = pts[0]["users"]
        think = f", think {pts[0]['think_s']:.1f} s" if pts[0]["think_s"] else ""
        ax.set_title(f"{key} {title} (embedded, {users} users{think})")
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    ax_tp.legend(fontsize=8)
    ax_lat.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(
        f"disco-serve load test: model {report['model']}, {m['cpu']} ({m['cores']} cores), "
        f"{report['seconds']} s per point, {m['date']}"
        + ("\n" + textwrap.fill(report["note"], 150) if report.get("note") else ""),
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.plot", description=__doc__.split("\n")[0])
    p.add_argument("load_json", type=Path)
    p.add_argument("-o", "--out", type=Path, default=Path("benchmarks/load.png"))
    args = p.parse_args(argv)
    print(plot(json.loads(args.load_json.read_text()), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
