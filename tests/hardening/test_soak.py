"""The 60-second CI version of `loadtests/soak.py` (the full run is 10 minutes, see SECURITY.md).

redis-server (AOF) + API + 2 workers on 127.0.0.1; capacity measured first by a short
saturation probe; then a mixed load at 70 % of it. Flat memory, no 5xx, no error growth.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from .harness import ensure_workers, live_workers

pytest.importorskip("redis")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SOAK_S = float(os.environ.get("DISCO_SOAK_S", "60"))


def _soak_module():
    spec = importlib.util.spec_from_file_location("disco_soak", ROOT / "loadtests" / "soak.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_soak_60s(hard_stack, tmp_path):
    soak = _soak_module()
    stack, _ = hard_stack
    workers = ensure_workers(stack, 2)
    pids = {"api": stack.api.pid, **{n: stack.workers[n].pid for n in workers}}
    report = asyncio.run(
        soak.run_soak(stack.url, duration_s=SOAK_S, pids=pids, probe_s=6.0, window_s=10.0)
    )
    (tmp_path / "soak.json").write_text(json.dumps(report, indent=1))
    print(
        f"\n[soak] {SOAK_S:g} s at {report['rate_rps']} req/s (capacity "
        f"{report['capacity_rps']} req/s): {report['requests']} requests, outcomes "
        f"{report['outcomes']}, errors first/last third {report['errors_first_third']}/"
        f"{report['errors_last_third']}, memory {report['memory']}"
    )
    assert stack.api.poll() is None and live_workers(stack) == workers, stack.logs()
    assert report["ok"], json.dumps({k: v for k, v in report.items() if k != "windows"}, indent=1)
    assert report["requests"] >= 0.5 * report["rate_rps"] * SOAK_S
