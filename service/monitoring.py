"""Prometheus metrics of the API and the workers (prometheus-client).

One `Monitor` per process owns its own registry (the API's `/metrics`, a worker's metrics
port), so tests can build many apps in one process. Names: `disco_` prefix, base units,
`_total` counters, `_seconds` durations; every one is listed in the README.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from service.queue.worker import BatchReport, Worker

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class _WorkerStatsCollector(Collector):
    """Reads the workers' own counters at scrape time (no double bookkeeping)."""

    FIELDS: ClassVar[dict[str, str]] = {
        "jobs_reclaimed": "Jobs taken over from a quiet worker (crash, hang), or retried.",
        "jobs_dead_lettered": "Jobs moved to the dead-letter stream after max deliveries.",
        "jobs_expired": "Jobs a worker skipped because their deadline had passed.",
        "jobs_cancelled": "Jobs a worker skipped because the client had cancelled them.",
        "jobs_done": "Jobs a worker finished successfully.",
        "jobs_failed": "Jobs a worker finished with an error.",
        "batch_errors": "Batches whose handler raised (jobs retried or dead-lettered).",
        "queue_errors": "Worker loop iterations lost to an unreachable queue.",
    }

    def __init__(self) -> None:
        self.workers: list[Worker] = []

    def collect(self) -> Iterator[Metric]:
        for field, doc in self.FIELDS.items():
            family = CounterMetricFamily(f"disco_worker_{field}", doc)
            family.add_metric([], sum(getattr(w.stats, field) for w in self.workers))
            yield family
        alive = GaugeMetricFamily("disco_worker_running", "Workers running in this process.")
        alive.add_metric([], sum(1 for w in self.workers if not w.stopping))
        yield alive


class _QueueStatsCollector(Collector):
    """Counters the queue object keeps itself (Redis: accepted jobs no replica acknowledged)."""

    def __init__(self) -> None:
        self.queues: list[object] = []

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "disco_jobs_unreplicated",
            "Jobs accepted although no replica acknowledged them within the WAIT timeout "
            "(a failover before they replicate would lose them).",
        )
        family.add_metric([], sum(getattr(q, "unreplicated_jobs", 0) for q in self.queues))
        yield family


class Monitor:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "disco_http_requests", "HTTP requests by endpoint, method and status.",
            ["endpoint", "method", "status"], registry=r,
        )  # fmt: skip
        self.request_latency = Histogram(
            "disco_http_request_duration_seconds", "HTTP request latency by endpoint.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "disco_queue_depth", "Jobs waiting in the queue (backlog).", registry=r
        )
        self.workers_alive = Gauge(
            "disco_workers_alive", "Workers whose health key is fresh (all hosts).", registry=r
        )
        self.queue_wait = Histogram(
            "disco_queue_wait_seconds", "Time from accepting a job to a worker starting it.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "disco_batch_size", "Jobs per engine batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.stage = Histogram(
            "disco_stage_duration_seconds",
            "Worker time per stage: decode, compute (engine), encode.",
            ["stage"], buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.jobs = Counter(
            "disco_jobs", "Jobs by API outcome: accepted, rejected (429), expired (504), "
            "cancelled, failed, done.", ["outcome"], registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "disco_model_info", "The model being served (value 1).",
            ["name", "version", "engine", "precision", "selection"], registry=r,
        )  # fmt: skip
        self.ready = Gauge("disco_ready", "1 when /readyz passes.", registry=r)
        self._workers = _WorkerStatsCollector()
        r.register(self._workers)
        self._queues = _QueueStatsCollector()
        r.register(self._queues)

    # -- hooks --------------------------------------------------------------------------------
    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)

    def on_batch(self, report: BatchReport) -> None:
        self.batch_size.observe(report.size)
        for wait in report.queue_wait_s:
            self.queue_wait.observe(wait)

    def watch_worker(self, worker: Worker) -> None:
        self._workers.workers.append(worker)

    def watch_queue(self, queue: object) -> None:
        self._queues.queues.append(queue)

    def set_model(self, info: dict[str, str]) -> None:
        self.model_info.labels(
            info.get("name", "?"), info.get("version", "?"), info.get("engine", "?"),
            info.get("precision", "?"), info.get("selection", ""),
        ).set(1)  # fmt: skip

    def metric_names(self) -> Iterable[str]:
        return (m.name for m in self.registry.collect())
