"""`service/` never imports `export/`: the runtime image holds the service only. The CLI's
composition root adds export's commands (and the torch engine) through entry points when that
package is installed, and simply lacks them when it is not."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import service

ROOT = Path(__file__).resolve().parents[1]
EXPORT_COMMANDS = {"export", "bench", "train", "eval", "info", "test-checkpoint"}
SERVICE_COMMANDS = {"serve", "worker", "colorize"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_service_source_imports_export():
    bad = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "service").rglob("*.py")
        if "export" in _imported_roots(p)
    ]
    assert not bad, f"service modules importing export/: {bad}"


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120, capture_output=True,
        text=True,
    ).stdout  # fmt: skip


def _commands_code(block_export: bool) -> str:
    return (
        "import sys\n"
        + (
            "sys.modules['export'] = None  # as in the runtime image: no export/ package\n"
            if block_export
            else ""
        )
        + "import importlib, pkgutil, service\n"
        f"for m in {[m.name for m in pkgutil.walk_packages(service.__path__, 'service.')]!r}:\n"
        "    importlib.import_module(m)\n"
        "from service.cli import app\n"
        "from service.engine.factory import engine_plugin\n"
        "import typer.main\n"
        "group = typer.main.get_command(app)\n"
        "loaded = sorted(m for m, v in sys.modules.items() if m.split('.')[0] == 'export' and v)\n"
        "print(','.join(sorted(group.commands)))\n"
        "print(engine_plugin('torch') is not None)\n"
        "print(','.join(loaded))\n"
    )


def test_service_alone_lacks_export_commands():
    commands, torch_engine, loaded = _run(_commands_code(block_export=True)).splitlines()[:3]
    assert set(commands.split(",")) >= SERVICE_COMMANDS
    assert not EXPORT_COMMANDS & set(commands.split(","))
    assert torch_engine == "False"
    assert loaded == ""


def test_composition_root_registers_export_commands_when_installed():
    out = _run(_commands_code(block_export=False)).splitlines()
    commands = set(out[0].split(","))
    assert commands >= SERVICE_COMMANDS | EXPORT_COMMANDS
    assert out[1] == "True"


def test_importing_service_modules_does_not_load_export():
    names = [m.name for m in pkgutil.walk_packages(service.__path__, "service.")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    if name != 'service.cli':\n"
        "        importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'export')\n"
        "assert not bad, bad[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
