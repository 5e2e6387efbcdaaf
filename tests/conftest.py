"""Shared fixtures: paths to the read-only reference material and test photos."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """/work/shared/reference: architecture notes, gamut files and conformance vectors."""
    path = Path(__file__).resolve().parents[2] / "shared" / "reference"
    if not path.is_dir():
        pytest.skip(f"reference material not found at {path}")
    return path


@pytest.fixture(scope="session")
def vectors_dir(reference_dir: Path) -> Path:
    """Conformance vectors produced by the official code (see vectors/README.md)."""
    path = reference_dir / "vectors"
    if not path.is_dir():
        pytest.skip(f"conformance vectors not found at {path}")
    return path


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """Small test photos kept in the repository."""
    return Path(__file__).resolve().parent / "data" / "photos"


@pytest.fixture(scope="session")
def seed0_model():
    """The full-size DISCO network with the seed-0 test weights (CPU, float32, eval)."""
    torch = pytest.importorskip("torch")
    from export.model.checkpoint import test_weights_model

    torch.set_num_threads(2)
    return test_weights_model(0)


@pytest.fixture(scope="session")
def seed0_engine(seed0_model):
    """The torch reference engine around `seed0_model`."""
    from export.torch_engine import TorchEngine

    return TorchEngine(seed0_model)


@pytest.fixture(scope="session")
def seed0_repo(tmp_path_factory, seed0_model):
    """A model repository exported (plugin k-means) from the seed-0 test weights."""
    from export.onnx_export import export_repository

    out = tmp_path_factory.mktemp("repo") / "seed0"
    export_repository(seed0_model, out, name="test-seed0", pretrained="disco.test_seed0")
    return out


@pytest.fixture(scope="session")
def tiny_model():
    """A narrow, shallow, randomly initialised DISCO (same key names): fast export tests."""
    torch = pytest.importorskip("torch")
    from export.model.disco import disco_demo

    torch.manual_seed(0)
    return disco_demo(n_layers=1).eval()


# -- Redis: real redis-server processes on free local ports (never the shared one on :6379) ------


class RedisServerProcess:
    """A throwaway `redis-server` (no persistence) on a free local port. `stop()` and `start()`
    keep the port, so a client can watch Redis go away and come back (fault tests)."""

    def __init__(self, workdir: Path, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        import socket

        if port is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.port = port
        self.workdir = workdir
        self.args = args  # extra redis-server arguments, e.g. ("--hz", "1")
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServerProcess:
        import shutil
        import subprocess
        import threading

        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed (make test installs it)")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--logfile", ""]  # fmt: skip
        args += self.args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        ready, lines = threading.Event(), []

        def drain(stream) -> None:  # the log goes to stdout: read it to the end
            for raw in stream:
                lines.append(raw.decode(errors="replace").rstrip())
                if "Ready to accept connections" in lines[-1]:
                    ready.set()
            stream.close()

        threading.Thread(target=drain, args=(self.proc.stdout,), daemon=True).start()
        if not ready.wait(timeout_s):
            self.stop()
            raise RuntimeError("redis-server did not start:\n" + "\n".join(lines[-20:]))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server for the whole session; tests take `redis_url`, which flushes it."""
    server = RedisServerProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServerProcess) -> str:
    """URL of the session redis-server, emptied (FLUSHALL) for this test."""
    redis = pytest.importorskip("redis")
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_server_factory(tmp_path):
    """Start private redis-servers this test may stop and restart; all are killed afterwards."""
    servers: list[RedisServerProcess] = []

    def start(*args: str) -> RedisServerProcess:
        server = RedisServerProcess(tmp_path / f"redis{len(servers)}", args=args)
        server.workdir.mkdir()
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory, tiny_model):
    """A model repository of `tiny_model`: real ONNX Runtime sessions, fast enough for API tests."""
    from export.onnx_export import export_repository

    out = tmp_path_factory.mktemp("repo") / "tiny"
    export_repository(tiny_model, out, name="tiny-test", version="0")
    return out
