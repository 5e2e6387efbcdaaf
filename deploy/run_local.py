"""Run the docker compose topology without Docker: redis-server, the API and the workers as local
processes, each with exactly the DISCO_* environment its container gets.

    python deploy/run_local.py [--model DIR] [--workers N] [--smoke] [--print-env]
    bash deploy/run-local.sh ...          # the same with the repository's .venv

The environment comes from docker-compose.yml (interpolated like compose does, from the shell
and a `.env` beside the compose file; DISCO_REDIS_PASSWORD is generated when unset) on top of
the image's own ENV (deploy/docker/Dockerfile, target `service`). Only what cannot be the same
outside containers is mapped: compose hostnames in URLs (`redis://redis:6379/0`) become
127.0.0.1 and a free local port, DISCO_HOST / DISCO_PORT become 127.0.0.1 and a free port,
DISCO_MODEL_DIR (the path inside the image) becomes --model, each worker's `--metrics-port` a
free port, and redis-server gets its own --port/--bind/--dir. DISCO_* variables of the calling
shell do not leak into the processes. Needs `redis-server` on PATH and the `serve` extra.

--smoke posts one image through the API (200 + an image), checks /readyz, the API's and every
worker's /metrics, then stops everything; without it the stack runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DEFAULT_MODEL = ROOT / "service" / "data" / "models" / "disco-demo"  # the bundled repository

# -- compose: interpolation and loading ------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class ComposeError(ValueError):
    """The compose file cannot be interpolated (a required variable is unset) or understood."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
    `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` (one level, like compose)."""

    def sub(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["plain"] or m["name"]
        op, arg = m["op"], m["arg"] or ""
        value = env.get(name)
        unset_or_empty = not value
        if op is None:
            return value or ""
        missing = unset_or_empty if op.startswith(":") else value is None
        if op.endswith("-"):
            return arg if missing else value or ""
        if op.endswith("?"):
            if missing:
                raise ComposeError(f"required variable {name} is missing: {arg}")
            return value or ""
        return "" if missing else arg  # "+"

    return _VAR.sub(sub, text)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(x, env) for x in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    return node


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose `.env` file (comments, blank lines and quotes handled)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip().removeprefix("export ").strip()] = value
    return out


def load_compose(path: Path = COMPOSE_FILE, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml with YAML anchors/merge keys resolved and variables interpolated."""
    import yaml

    env = {**read_dotenv(path.parent / ".env"), **(os.environ if env is None else env)}
    return _interpolate_tree(yaml.safe_load(path.read_text()), env)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment` (mapping or KEY=VALUE list) as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {
        k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in env.items()
    }


def command_of(service: Mapping[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


# -- the image's own environment ---------------------------------------------------------------


def image_env(dockerfile: Path = DOCKERFILE, target: str = "service") -> dict[str, str]:
    """ENV of `target` and the stages it is built FROM (the DISCO_* and PYTHON* defaults)."""
    stages: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else parts[0]
            current = []
            stages[name] = (parts[0], current)
        elif word.upper() == "ENV" and current is not None:
            current.append(rest)
    chain: list[list[str]] = []
    name = target
    while name in stages:
        base, envs = stages[name]
        chain.insert(0, envs)
        name = base
    out: dict[str, str] = {}
    for envs in chain:
        for rest in envs:
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                out[key] = value
    return {k: v for k, v in out.items() if k.startswith(("DISCO_", "PYTHON"))}


# -- the local plan ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]  # what this process gets on top of the calling environment minus DISCO_*
    port: int  # where it answers: redis, HTTP, or a worker's metrics


@dataclass
class Plan:
    redis: Proc
    api: Proc
    workers: list[Proc]
    password: str
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    @property
    def all(self) -> list[Proc]:
        return [self.redis, self.api, *self.workers]


def _python_cli(argv: list[str]) -> list[str]:
    """`disco ...` as this interpreter runs it (the container has the `disco` script)."""
    if argv and argv[0] == "disco":
        return [sys.executable, "-m", "service.cli", *argv[1:]]
    return argv


def _map_value(value: str, hosts: Mapping[tuple[str, int], int]) -> str:
    """A URL that names a compose service (`redis://redis:6379/0`) -> 127.0.0.1:<local port>."""
    try:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port
    except ValueError:
        return value
    if not parts.scheme or host is None or (host, port) not in hosts:
        return value
    auth = parts.netloc.rpartition("@")[0]
    netloc = (auth + "@" if auth else "") + f"127.0.0.1:{hosts[(host, port)]}"
    return urlunsplit(parts._replace(netloc=netloc))


def plan(
    model_dir: Path,
    workdir: Path,
    *,
    workers: int | None = None,
    compose_file: Path = COMPOSE_FILE,
    shell_env: Mapping[str, str] | None = None,
) -> Plan:
    """Every process with its argv and the exact environment compose gives its container."""
    shell_env = dict(os.environ if shell_env is None else shell_env)
    password = shell_env.get("DISCO_REDIS_PASSWORD") or read_dotenv(
        compose_file.parent / ".env"
    ).get("DISCO_REDIS_PASSWORD")
    if not password:
        password = secrets.token_hex(16)
        shell_env["DISCO_REDIS_PASSWORD"] = password
    compose = load_compose(compose_file, shell_env)
    services = compose["services"]
    base_env = image_env()

    redis_port, api_port = free_port(), free_port()
    hosts = {("redis", 6379): redis_port, ("api", 8000): api_port}

    redis_cmd = command_of(services["redis"])
    redis_exe = shutil.which("redis-server") or "redis-server"
    redis = Proc(
        "redis",
        [
            redis_exe,
            *redis_cmd[1:],
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir / "redis"),
        ],
        {},
        redis_port,
    )

    def service_env(name: str, **local: str) -> dict[str, str]:
        env = {**base_env, **environment_of(services[name])}
        env = {k: _map_value(v, hosts) for k, v in env.items()}
        if "DISCO_MODEL_DIR" in env:
            env["DISCO_MODEL_DIR"] = str(model_dir)
        return {**env, **local}

    api_env = service_env("api", DISCO_HOST="127.0.0.1", DISCO_PORT=str(api_port))
    api = Proc("api", _python_cli(command_of(services["api"])), api_env, api_port)

    replicas = workers or int((services["worker"].get("deploy") or {}).get("replicas", 1))
    worker_procs = []
    for i in range(replicas):
        port = free_port()
        argv = command_of(services["worker"])
        if "--metrics-port" in argv:
            argv[argv.index("--metrics-port") + 1] = str(port)
        else:
            argv += ["--metrics-port", str(port)]
        worker_procs.append(Proc(f"worker{i + 1}", _python_cli(argv), service_env("worker"), port))
    return Plan(redis, api, worker_procs, password, workdir)


# -- running it -----------------------------------------------------------------------------------


def _wait(check: Callable[[], bool], timeout_s: float, what: str, plan: Plan) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, p in plan.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}\n{logs(plan, name)}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}\n{logs(plan)}")


def redis_call(port: int, *args: str, password: str | None = None) -> bytes:
    """One RESP command over a raw socket (AUTH first when given): the first reply line."""

    def encode(*parts: str) -> bytes:
        out = f"*{len(parts)}\r\n".encode()
        for part in parts:
            data = part.encode()
            out += b"$%d\r\n%s\r\n" % (len(data), data)
        return out

    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        f = s.makefile("rb")
        if password is not None:
            s.sendall(encode("AUTH", password))
            f.readline()
        s.sendall(encode(*args))
        line = f.readline().rstrip(b"\r\n")
        if line.startswith(b"*"):  # an array: the elements' lines
            items = []
            for _ in range(int(line[1:])):
                head = f.readline()
                items.append(f.readline().rstrip(b"\r\n") if head.startswith(b"$") else head)
            return b" ".join(items)
        return line


def http_get(url: str, timeout_s: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def logs(plan: Plan, only: str | None = None) -> str:
    out = []
    for path in sorted(plan.workdir.glob("*.log")):
        if only is None or path.stem == only:
            out.append(f"--- {path.stem}\n{path.read_text(errors='replace')[-3000:]}")
    return "\n".join(out)


@contextmanager
def running(plan: Plan, ready_timeout_s: float = 90) -> Iterator[Plan]:
    """Start redis, then (once it answers, as `depends_on: service_healthy`) the API and the
    workers; wait for /readyz; stop everything on exit (SIGTERM, as `docker compose down`)."""
    (plan.workdir / "redis").mkdir(parents=True, exist_ok=True)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}

    def spawn(proc: Proc) -> None:
        log = (plan.workdir / f"{proc.name}.log").open("wb")
        plan.procs[proc.name] = subprocess.Popen(
            proc.argv, cwd=plan.workdir, env={**inherited, **proc.env}, stdout=log, stderr=log
        )

    try:
        spawn(plan.redis)
        _wait(
            lambda: redis_call(plan.redis.port, "PING", password=plan.password) == b"+PONG",
            15,
            "redis-server",
            plan,
        )
        for proc in (plan.api, *plan.workers):
            spawn(proc)
        _wait(lambda: http_get(f"{plan.url}/readyz", 2)[0] == 200, ready_timeout_s, "/readyz", plan)
        for w in plan.workers:
            _wait(
                lambda w=w: http_get(f"http://127.0.0.1:{w.port}/metrics", 2)[0] == 200,
                ready_timeout_s,
                f"{w.name} metrics",
                plan,
            )
        yield plan
    finally:
        stop(plan)


def stop(plan: Plan, timeout_s: float = 40) -> None:
    order = [p for n, p in plan.procs.items() if n != "redis"]
    for group in (order, [plan.procs[n] for n in plan.procs if n == "redis"]):
        for p in group:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in group:
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def smoke_image() -> bytes:
    from PIL import Image

    img = Image.linear_gradient("L").resize((96, 80)).rotate(20)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def smoke(plan: Plan, image: bytes | None = None) -> dict[str, Any]:
    """POST /colorize (200 + an image), /readyz 200, disco_ metrics of the API and each worker."""
    req = urllib.request.Request(
        f"{plan.url}/colorize",
        data=image or smoke_image(),
        headers={"Content-Type": "image/png"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        status, ctype, body = r.status, r.headers["Content-Type"], r.read()
    if status != 200 or not ctype.startswith("image/") or len(body) < 100:
        raise AssertionError(f"POST /colorize: {status} {ctype} {len(body)} bytes")
    code, ready = http_get(f"{plan.url}/readyz")
    if code != 200:
        raise AssertionError(f"/readyz: {code} {ready!r}")
    code, api_metrics = http_get(f"{plan.url}/metrics")
    if code != 200 or b"disco_http_requests_total" not in api_metrics:
        raise AssertionError(f"API /metrics: {code}, no disco_http_requests_total")
    worker_metrics = {}
    for w in plan.workers:
        code, text = http_get(f"http://127.0.0.1:{w.port}/metrics")
        if code != 200 or b"disco_worker_jobs_done_total" not in text:
            raise AssertionError(f"{w.name} /metrics: {code}, no disco_worker_jobs_done_total")
        worker_metrics[w.name] = text.decode()
    return {
        "image": body,
        "content_type": ctype,
        "readyz": json.loads(ready),
        "api_metrics": api_metrics.decode(),
        "worker_metrics": worker_metrics,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="model repository (`make model` writes %(default)s)",
    )
    ap.add_argument("--workers", type=int, help="worker processes (default: compose's replicas)")
    ap.add_argument("--compose", type=Path, default=COMPOSE_FILE)
    ap.add_argument("--workdir", type=Path, help="logs and Redis data (default: a temp dir)")
    ap.add_argument("--smoke", action="store_true", help="smoke-test the stack, then stop")
    ap.add_argument("--print-env", action="store_true", help="print each process, start nothing")
    args = ap.parse_args(argv)
    if not (args.model / "manifest.json").is_file() and not args.print_env:
        ap.error(f"{args.model} is not a model repository (run `make model` or pass --model)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="disco-local-"))
    p = plan(args.model.resolve(), workdir, workers=args.workers, compose_file=args.compose)
    if args.print_env:
        for proc in p.all:
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(proc.env.items()))
            print(f"{proc.name}: {env} {shlex.join(proc.argv)}")
        return 0
    with running(p):
        print(
            f"disco stack up: API {p.url}  workers {[w.port for w in p.workers]} "
            f"(metrics)  redis 127.0.0.1:{p.redis.port}  logs {workdir}",
            file=sys.stderr,
        )
        if args.smoke:
            result = smoke(p)
            print(
                f"smoke test passed: POST /colorize -> {result['content_type']}, "
                f"{len(result['image'])} bytes; /readyz 200; metrics from the API and "
                f"{len(p.workers)} workers",
                file=sys.stderr,
            )
            return 0
        with suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
