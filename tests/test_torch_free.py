"""The service side never imports torch: workers run ONNX Runtime / TensorRT only."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import service

ROOT = Path(__file__).resolve().parents[1]


def test_no_service_module_imports_torch():
    names = [m.name for m in pkgutil.walk_packages(service.__path__, "service.")]
    assert "service.pipeline" in names and "service.cli" in names
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not bad, bad[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_no_torch_in_service_sources():
    for path in (ROOT / "service").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import torch", "from torch")):
                raise AssertionError(f"{path.relative_to(ROOT)} imports torch: {stripped}")


def test_no_hard_coded_cuda_in_model():
    for path in (ROOT / "export" / "model").rglob("*.py"):
        assert ".cuda()" not in path.read_text(), path
