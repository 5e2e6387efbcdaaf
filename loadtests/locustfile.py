"""Locust scenarios for disco-serve. The scenario is a locust tag; no tag = the mixed profile.

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 \
        -u 16 -r 16 -t 60s --tags colorize256        # or LOCUST_TAGS=colorize256

* `colorize256`: POST /colorize, a 256x256 JPEG -> PNG. Stats row: POST `/colorize [256px]`.
* `colorize12mp`: POST /colorize, a 4000x3000 JPEG (3.2 MB) -> a 12 MP PNG: `/colorize [12MP]`.
* `diverse`: POST /colorize/diverse?count=3, 256 px -> 3 PNGs in JSON:
  `/colorize/diverse [256px x3]`.
* `async`: POST /colorize with `Prefer: respond-async` (202), GET /jobs/{id} every `--poll-s`
  until done, GET /jobs/{id}/result: rows POST `/colorize [async 256px]`, GET `/jobs/{id}`,
  GET `/jobs/{id}/result`, and the whole job (submit -> result) as JOB `async job [256px]`.
* no tag: the mixed profile, the tasks above weighted 12 : 1 : 3 : 3.

Users are closed loops (no think time) unless `--think-s S` gives an exponential think time of
mean S seconds (and a uniform random start within S). Inputs are made at start
(`loadtests/inputs.py`): 8 different 256 px images, 2 different 12 MP images (only when their
task runs). Uploads are multipart (`image` field, as the README's curl) or, with `--upload raw`,
the JPEG as the body. Only loopback hosts.

`--timings-out FILE` writes, when locust quits, one record per finished colorize / diverse /
async request: client-side latency and the server's `Server-Timing` (queue, decode, compute,
encode; ms) with the job id, for the serving-overhead figures of `loadtests/run.py`.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import gevent
from locust import FastHttpUser, events, tag, task
from locust.stats import CSV_STATS_INTERVAL_SEC

if __package__ in (None, ""):  # loaded by path (`locust -f`): make `loadtests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadtests import inputs
from loadtests import scenarios as sc

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
BOUNDARY = "disco-loadtest-4f1c2a9e"
N_SMALL, N_LARGE = 8, 2


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("disco-serve")
    group.add_argument(
        "--upload",
        choices=["multipart", "raw"],
        default="multipart",
        env_var="LOCUST_UPLOAD",
        help="multipart form field `image` (default) or the raw image/jpeg body",
    )
    group.add_argument(
        "--think-s",
        type=float,
        default=0.0,
        env_var="LOCUST_THINK_S",
        help="mean exponential think time between a user's tasks (0 = closed loop)",
    )
    group.add_argument(
        "--poll-s",
        type=float,
        default=0.1,
        env_var="LOCUST_POLL_S",
        help="async jobs: seconds between GET /jobs/{id} polls",
    )
    group.add_argument(
        "--timings-out",
        default="",
        env_var="LOCUST_TIMINGS_OUT",
        help="write client latency + Server-Timing per request to this JSON file at exit",
    )


class _Inputs:
    """Request bodies, built once per process before the users start."""

    small: ClassVar[list[tuple[bytes, str]]] = []
    large: ClassVar[list[tuple[bytes, str]]] = []


def _body(jpeg: bytes, upload: str) -> tuple[bytes, str]:
    if upload == "raw":
        return jpeg, "image/jpeg"
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="input.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head + jpeg + tail, f"multipart/form-data; boundary={BOUNDARY}"


RECORDS: list[dict[str, Any]] = []


@events.test_start.add_listener
def _prepare(environment: Any, **_: Any) -> None:
    host = urlsplit(environment.host or "").hostname or ""
    if host not in LOOPBACK and not host.startswith("127."):
        raise SystemExit(f"refusing to load {environment.host!r}: loopback addresses only")
    opts = environment.parsed_options
    upload = getattr(opts, "upload", "multipart")
    tags = getattr(opts, "tags", None)
    _Inputs.small = [_body(j, upload) for j in inputs.pool(inputs.SMALL, N_SMALL)]
    if not tags or sc.COLORIZE_12MP in tags:
        _Inputs.large = [_body(j, upload) for j in inputs.pool(inputs.LARGE, N_LARGE)]


@events.test_stop.add_listener
def _final_csv_write(environment: Any, **_: Any) -> None:
    """locust rewrites its CSV once a second and not again at exit: requests that finished in
    the last second (during --stop-timeout, say) would be missing. One more tick with the final
    statistics, before the runner quits."""
    if getattr(environment.parsed_options, "csv_prefix", None):
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.5)


@events.quitting.add_listener
def _write_records(environment: Any, **_: Any) -> None:
    path = getattr(environment.parsed_options, "timings_out", "")
    if path:
        Path(path).write_text(json.dumps({"records": RECORDS}))


class DiscoUser(FastHttpUser):
    """One client: runs the tasks of the selected tags (all of them: the mixed profile)."""

    network_timeout = 180.0
    connection_timeout = 10.0
    _ids = itertools.count()

    def wait_time(self) -> float:
        think = getattr(self.environment.parsed_options, "think_s", 0.0)
        return self.rng.expovariate(1.0 / think) if think > 0 else 0.0

    def on_start(self) -> None:
        self.rng = random.Random(next(self._ids))
        think = getattr(self.environment.parsed_options, "think_s", 0.0)
        if think > 0:  # a random phase, or every user's first request would arrive at once
            gevent.sleep(self.rng.uniform(0.0, think))

    # -- helpers ---------------------------------------------------------------------------------

    def _post_image(self, path: str, body: tuple[bytes, str], name: str, **headers: str) -> Any:
        data, ctype = body
        return self.client.post(
            path, data=data, headers={"Content-Type": ctype, **headers}, name=name,
            catch_response=True,
        )  # fmt: skip

    def _record(self, name: str, start: float, response: Any, **extra: Any) -> None:
        RECORDS.append(
            {
                "name": name,
                "t": time.time(),
                "client_ms": 1000 * (time.perf_counter() - start),
                "server": sc.server_timing(response.headers.get("Server-Timing")),
                "id": response.headers.get("X-Request-Id"),
                **extra,
            }
        )

    def _colorize(self, bodies: list[tuple[bytes, str]], name: str) -> None:
        start = time.perf_counter()
        with self._post_image("/colorize", self.rng.choice(bodies), name) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200] if r.text else ''}")
            elif not (r.content or b"").startswith(b"\x89PNG"):
                r.failure(f"not a PNG ({r.headers.get('Content-Type')})")
            else:
                self._record(name, start, r)

    # -- the scenarios ---------------------------------------------------------------------------

    @tag(sc.COLORIZE_256)
    @task(sc.MIX_WEIGHTS[sc.COLORIZE_256])
    def colorize256(self) -> None:
        self._colorize(_Inputs.small, sc.REQ_COLORIZE_256)

    @tag(sc.COLORIZE_12MP)
    @task(sc.MIX_WEIGHTS[sc.COLORIZE_12MP])
    def colorize12mp(self) -> None:
        self._colorize(_Inputs.large, sc.REQ_COLORIZE_12MP)

    @tag(sc.DIVERSE)
    @task(sc.MIX_WEIGHTS[sc.DIVERSE])
    def diverse(self) -> None:
        start = time.perf_counter()
        path = f"/colorize/diverse?count={sc.DIVERSE_COUNT}"
        with self._post_image(path, self.rng.choice(_Inputs.small), sc.REQ_DIVERSE) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200] if r.text else ''}")
                return
            try:
                n = len(r.json()["results"])
            except (ValueError, KeyError, TypeError):
                n = -1
            if n != sc.DIVERSE_COUNT:
                r.failure(f"{n} results, expected {sc.DIVERSE_COUNT}")
            else:
                self._record(sc.REQ_DIVERSE, start, r)

    @tag(sc.ASYNC)
    @task(sc.MIX_WEIGHTS[sc.ASYNC])
    def async_job(self) -> None:
        start = time.perf_counter()
        opts = self.environment.parsed_options
        with self._post_image(
            "/colorize", self.rng.choice(_Inputs.small), sc.REQ_ASYNC_SUBMIT, Prefer="respond-async"
        ) as r:
            if r.status_code != 202:
                r.failure(f"HTTP {r.status_code}, expected 202")
                return self._job_failed(start, f"submit: HTTP {r.status_code}")
            job = r.json()["id"]
        status = "queued"
        while status in ("queued", "running"):
            time.sleep(getattr(opts, "poll_s", 0.1))  # gevent-patched: yields to other users
            with self.client.get(f"/jobs/{job}", name=sc.REQ_ASYNC_POLL, catch_response=True) as s:
                if s.status_code != 200:
                    s.failure(f"HTTP {s.status_code}")
                    return self._job_failed(start, f"poll: HTTP {s.status_code}")
                info = s.json()
                status = info.get("status")
        if status != "done":
            return self._job_failed(start, f"job {status}: {info.get('error')}")
        with self.client.get(
            f"/jobs/{job}/result", name=sc.REQ_ASYNC_RESULT, catch_response=True
        ) as res:
            if res.status_code != 200 or not (res.content or b"").startswith(b"\x89PNG"):
                res.failure(f"HTTP {res.status_code}")
                return self._job_failed(start, f"result: HTTP {res.status_code}")
            size = len(res.content or b"")
        elapsed = time.perf_counter() - start
        self.environment.events.request.fire(
            request_type="JOB", name=sc.REQ_ASYNC_JOB,
            response_time=1000 * elapsed, response_length=size, exception=None, context={},
        )  # fmt: skip
        RECORDS.append(
            {
                "name": sc.REQ_ASYNC_JOB,
                "t": time.time(),
                "client_ms": 1000 * elapsed,
                "server": {k.removesuffix("_s"): 1000 * v for k, v in info["timings"].items()},
                "id": job,
            }
        )

    def _job_failed(self, start: float, why: str) -> None:
        self.environment.events.request.fire(
            request_type="JOB", name=sc.REQ_ASYNC_JOB,
            response_time=1000 * (time.perf_counter() - start), response_length=0,
            exception=RuntimeError(why), context={},
        )  # fmt: skip
