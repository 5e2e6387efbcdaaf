"""Service settings: one pydantic-settings model, read from `DISCO_*` env vars and CLI overrides.

Build it once at startup and pass it down (`create_app(settings)`, `Worker.from_settings(...)`);
nothing here runs at import time. Every duration and size carries its unit in its name.

    settings = Settings.with_overrides(queue_url=cli_queue, max_batch=cli_max_batch)  # None = unset

Precedence (pydantic-settings): explicit keyword arguments (the CLI flags) > `DISCO_*` environment
variables > defaults. Empty environment variables count as unset.

Environment variable = `DISCO_` + the field name in capitals (defaults in brackets):

* `DISCO_QUEUE_URL` [`memory://`]: `memory://` (in-process queue, the API runs the worker),
  `redis://HOST:PORT/DB` or `rediss://HOST:PORT/DB` (TLS): the queue shared with `disco worker`s;
  `redis+sentinel://S1:26379,S2:26379,S3:26379/SERVICE/DB` (or `rediss+sentinel://`): the same,
  on the master that Redis Sentinel names for SERVICE (followed across failovers)
* `DISCO_MODEL_DIR` [the bundled `disco-demo` repository, `service/data/models/disco-demo`]: where
  the engine finds its model files (a repository from `disco export`)
* `DISCO_HOST`, `DISCO_PORT` [`127.0.0.1`, `8000`]: HTTP bind address
* `DISCO_ENGINE` [`auto`]: `auto`, `onnx`, `openvino`, `tensorrt` (or `torch`, the reference
  engine, dev only). `auto` serves OpenVINO bf16 when OpenVINO is installed, the CPU has bf16 and
  the manifest records >= 45 dB for it, else ONNX Runtime; `/readyz` says which and why
* `DISCO_OV_STREAMS` [`1`]: OpenVINO inference streams; `DISCO_CACHE_DIR` [`$XDG_CACHE_HOME/disco`]:
  OpenVINO's compiled-model cache (a restart skips compilation)
* `DISCO_THREADS` [`0`]: engine intra-op threads, 0 = the runtime's default
* `DISCO_PRECISION` [the model's own, `fp32`]: a variant of the model repository to run, e.g.
  `int8` (written by `disco export --quantize int8`; 3.7x fp32 on a CPU, see BENCHMARKS.md)
* `DISCO_EMBEDDED_WORKERS` [`1`]: memory:// only: in-process engine + batching worker pairs on the
  one queue; with `DISCO_THREADS=0` each engine gets cores / N threads. On a CPU, N 1-thread
  engines outrun one N-thread engine at saturation (BENCHMARKS.md), for N x the model's memory
* `DISCO_MAX_BATCH` [`8`]: jobs per engine batch
* `DISCO_MAX_WAIT_MS` [`10`]: how long a worker waits after a batch's first job for more (only
  while batches have company: a lone request at low load does not wait)
* `DISCO_JOB_TIMEOUT_S` [`30`]: default deadline of a job; a request may ask for another one
  up to `DISCO_MAX_JOB_TIMEOUT_S` [`300`]
* `DISCO_RESULT_TTL_S` [`600`]: how long finished jobs, results and idempotency keys are kept
* `DISCO_VISIBILITY_TIMEOUT_S` [a third of `DISCO_JOB_TIMEOUT_S`, at least twice the health TTL:
  `10`]: backstop for a worker that heartbeats but hangs: a delivery nobody touched for this long
  is reclaimed by another worker. Must satisfy health TTL < visibility timeout < job timeout
* `DISCO_MAX_DELIVERIES` [`3`]: deliveries before a job is dead-lettered and fails
* `DISCO_MAX_BACKLOG` [`64`]: unfinished jobs (queued + running) before enqueue answers 429,
  with `Retry-After: DISCO_RETRY_AFTER_S` [`1`]
* `DISCO_MAX_UPLOAD_BYTES` [`20971520`, 20 MiB], `DISCO_MAX_PIXELS` [`40000000`]: input limits
* Video jobs (`POST /videos/colorize`), refused with 413 before any frame is decoded:
  `DISCO_MAX_VIDEO_UPLOAD_BYTES` [`33554432`, 32 MiB: the upload and the MP4 result each live in
  Redis as one key until the job ends / for the result TTL], `DISCO_MAX_VIDEO_SECONDS` [`60`],
  `DISCO_MAX_VIDEO_FRAMES` [`1800`], `DISCO_MAX_VIDEO_PIXEL_FRAMES` [`414720000` = 640x360 x
  1800 frames]; `DISCO_VIDEO_TIMEOUT_S` [`600`]: a video job's deadline to start (its record
  lives that long plus the result TTL)
* `DISCO_REDIS_PASSWORD` [unset]: Redis AUTH password (a password in the URL wins)
* `DISCO_REDIS_TLS` [`false`]: TLS even for a `redis://` URL (`rediss://` implies it);
  `DISCO_REDIS_TLS_CA_FILE` [unset]: the CA bundle that signed the server certificate
* `DISCO_REDIS_SENTINEL_PASSWORD` [unset]: AUTH password of the sentinels themselves
* `DISCO_REDIS_WAIT_REPLICAS` [`auto`]: after adding a job, `WAIT` for this many replicas to have
  it before answering 202 (`0` = never wait; `auto` = 1 when the master reports a connected
  replica, checked every few seconds, else 0), at most `DISCO_REDIS_WAIT_TIMEOUT_MS` [`100`];
  a job no replica acknowledged in time is still accepted, logged and counted
  (`disco_jobs_unreplicated_total`): it is lost only if the master dies before replicating it
* `DISCO_REDIS_CONNECT_TIMEOUT_S` [`2`], `DISCO_REDIS_SOCKET_TIMEOUT_S` [`5`]: Redis timeouts
  (fail fast with 503 rather than hang; blocking reads stay below the socket timeout)
* `DISCO_WORKER_NAME` [`<host>-<pid>-<random>`]: a worker's consumer name, unique per worker
* `DISCO_WORKER_HEALTH_TTL_S` [`2`]: TTL of a worker's health key, refreshed every third of it;
  once it expires (the worker died) a live worker claims its pending jobs at once
* `DISCO_JOB_COMPLETION_WAIT_S` [`25`]: on SIGTERM, how long in-flight batches may take to
  finish (keep it below the pod's terminationGracePeriodSeconds)
* `DISCO_STREAM_MAXLEN` [`10000`]: approximate cap of the dead-letter stream (the job stream is
  bounded by the backlog limit and never trimmed by length)

Security (all off by default; see SECURITY.md):

* `DISCO_API_KEYS` [unset]: comma-separated API keys (16+ characters each); when set (here or
  in `DISCO_API_KEYS_FILE` [unset], one key per line, `#` comments), every endpoint except
  `/healthz`, `/readyz`, `/v2/health/*` and the web UI needs `X-API-Key: <key>` (or
  `Authorization: Bearer <key>`), and Idempotency-Keys are namespaced per API key
* `DISCO_METRICS_AUTH` [`true`]: with API keys set, `/metrics` needs a key too; `false` leaves
  it open (then restrict the port another way)
* `DISCO_RATE_LIMIT_PER_MIN` [`0` = off]: requests per minute per API key (per client address
  without keys), token bucket of `DISCO_RATE_LIMIT_BURST` [`0` = one minute's worth] tokens;
  over it: 429 with Retry-After. Kept in process: the limit applies per API replica
* `DISCO_CORS_ORIGINS` [unset = CORS off]: comma-separated origins allowed to call the API from
  a browser on another origin (`*` for any; credentials are never allowed)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

QUEUE_SCHEMES = ("memory", "redis", "rediss", "redis+sentinel", "rediss+sentinel")

# The bundled demo model, exported by `disco export` and shipped as package data, so that a
# read-only install with no flags serves a model that colorizes (`make bundled-model` refreshes it).
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "data" / "models" / "disco-demo"


class Settings(BaseSettings):
    """Everything the API and the workers can be told; see the module docstring for the table."""

    model_config = SettingsConfigDict(env_prefix="DISCO_", env_ignore_empty=True, extra="ignore")

    # -- where things are -------------------------------------------------------------------------
    queue_url: str = "memory://"
    model_dir: Path = BUNDLED_MODEL_DIR
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    engine: Literal["auto", "onnx", "openvino", "tensorrt", "torch"] = "auto"
    threads: int = Field(0, ge=0, le=1024)  # 0 = the runtime's default
    precision: str | None = Field(None, pattern=r"^[a-z0-9_-]{1,32}$")  # a manifest variant
    ov_streams: int = Field(1, ge=1, le=64)  # OpenVINO inference streams (read by the engine)
    cache_dir: Path | None = None  # compiled-model cache [$XDG_CACHE_HOME/disco]

    # -- batching ---------------------------------------------------------------------------------
    max_batch: int = Field(8, ge=1, le=256)
    embedded_workers: int = Field(1, ge=1, le=64)
    max_wait_ms: float = Field(10.0, ge=0.0, le=10_000.0)

    # -- job lifetime -----------------------------------------------------------------------------
    job_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    max_job_timeout_s: float = Field(300.0, gt=0.0, le=86_400.0)
    result_ttl_s: int = Field(600, ge=1, le=7 * 86_400)
    visibility_timeout_s: float | None = Field(None, gt=0.0, le=3600.0)  # None: derived
    max_deliveries: int = Field(3, ge=1, le=100)

    # -- admission --------------------------------------------------------------------------------
    max_backlog: int = Field(64, ge=1, le=1_000_000)
    retry_after_s: int = Field(1, ge=1, le=3600)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, le=1024**3)
    max_pixels: int = Field(40_000_000, ge=1, le=1_000_000_000)
    max_video_upload_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=512 * 1024**2)
    max_video_seconds: float = Field(60.0, gt=0.0, le=86_400.0)
    max_video_frames: int = Field(1800, ge=1, le=10_000_000)
    max_video_pixel_frames: int = Field(640 * 360 * 1800, ge=1, le=10**13)
    video_timeout_s: float = Field(600.0, gt=0.0, le=86_400.0)

    # -- Redis connection -------------------------------------------------------------------------
    redis_password: SecretStr | None = None
    redis_tls: bool = False
    redis_tls_ca_file: Path | None = None
    redis_sentinel_password: SecretStr | None = None
    redis_wait_replicas: str = Field("auto", pattern=r"^(auto|[0-9])$")
    redis_wait_timeout_ms: int = Field(100, ge=1, le=60_000)
    redis_connect_timeout_s: float = Field(2.0, gt=0.0, le=60.0)
    redis_socket_timeout_s: float = Field(5.0, gt=0.0, le=300.0)

    # -- workers ----------------------------------------------------------------------------------
    worker_name: str | None = Field(None, min_length=1, max_length=200)
    worker_health_ttl_s: float = Field(2.0, gt=0.0, le=3600.0)
    job_completion_wait_s: float = Field(25.0, ge=0.0, le=3600.0)
    stream_maxlen: int = Field(10_000, ge=1, le=100_000_000)

    # -- security (SECURITY.md) -------------------------------------------------------------------
    api_keys: SecretStr | None = None  # comma-separated
    api_keys_file: Path | None = None  # one key per line, '#' comments
    metrics_auth: bool = True
    rate_limit_per_min: int = Field(0, ge=0, le=10_000_000)  # 0 = off
    rate_limit_burst: int = Field(0, ge=0, le=10_000_000)  # 0 = rate_limit_per_min
    cors_origins: str = ""  # comma-separated; empty = CORS off

    @field_validator("queue_url")
    @classmethod
    def _check_queue_url(cls, value: str) -> str:
        value = value.strip()
        scheme = urlsplit(value).scheme.lower()
        if scheme not in QUEUE_SCHEMES:
            raise ValueError(
                "queue_url must start with memory://, redis://, rediss:// or redis+sentinel://, "
                f"got {value!r}"
            )
        if scheme.endswith("+sentinel"):
            from service.queue.sentinel import parse_sentinel_url

            parse_sentinel_url(value)  # a ValueError names what is wrong
        return value

    @field_validator("redis_tls_ca_file")
    @classmethod
    def _check_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"redis_tls_ca_file {value} is not a file")
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _check_api_keys_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"api_keys_file {value} is not a file")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.job_timeout_s > self.max_job_timeout_s:
            raise ValueError(
                f"job_timeout_s ({self.job_timeout_s}) exceeds max_job_timeout_s "
                f"({self.max_job_timeout_s})"
            )
        if self.max_wait_ms / 1000.0 >= self.job_timeout_s:
            raise ValueError("max_wait_ms must be well below job_timeout_s")
        if self.visibility_timeout_s is None:
            # derived: a dead worker is found via its health key, a hung one by this backstop,
            # which must end well before the deadline so that a redelivered job still runs
            self.visibility_timeout_s = max(2 * self.worker_health_ttl_s, self.job_timeout_s / 3)
            if self.visibility_timeout_s >= self.job_timeout_s:
                raise ValueError(
                    f"job_timeout_s ({self.job_timeout_s}) leaves no room for a visibility "
                    f"timeout above twice worker_health_ttl_s ({self.worker_health_ttl_s})"
                )
        if self.worker_health_ttl_s >= self.visibility_timeout_s:
            raise ValueError(
                f"worker_health_ttl_s ({self.worker_health_ttl_s}) must be below "
                f"visibility_timeout_s ({self.visibility_timeout_s})"
            )
        if self.visibility_timeout_s >= self.job_timeout_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must be below job_timeout_s "
                f"({self.job_timeout_s}): a job reclaimed from a hung worker must still run"
            )
        if self.redis_socket_timeout_s <= 1.0:
            # Workers block in XREADGROUP for up to a second; the read timeout must outlast it.
            raise ValueError("redis_socket_timeout_s must exceed 1 s (blocking reads)")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def queue_backend(self) -> Literal["memory", "redis"]:
        """`memory`: in-process queue, the API runs the worker itself; `redis`: shared queue."""
        return "memory" if urlsplit(self.queue_url).scheme.lower() == "memory" else "redis"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def wait_replicas(self) -> int | None:
        """Replicas to WAIT for after an enqueue; None = `auto` (1 if the master has one)."""
        return None if self.redis_wait_replicas == "auto" else int(self.redis_wait_replicas)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cors_origin_list(self) -> list[str]:
        """`cors_origins` split on commas; empty: CORS stays off."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @classmethod
    def with_overrides(cls, **overrides: Any) -> Settings:
        """Settings from the environment, with the CLI flags that were given (None = not given)."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})
