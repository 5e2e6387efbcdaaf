"""The job model and its serializers (no queue needed)."""

from __future__ import annotations

import pytest

from service.queue.jobs import (
    JobDef,
    JobResult,
    JobStatus,
    dump_json,
    info_from_fields,
    job_fields,
    job_from_fields,
    new_job_id,
)


def test_status_values_and_finality():
    assert [s.value for s in JobStatus] == [
        "queued", "running", "done", "failed", "expired", "cancelled",
    ]  # fmt: skip
    assert isinstance(JobStatus.DONE, str) and JobStatus("done") is JobStatus.DONE
    assert {s for s in JobStatus if s.terminal} == {
        JobStatus.DONE, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED,
    }  # fmt: skip


def test_job_ids_are_random_and_url_safe():
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 22 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


def test_fields_round_trip():
    job = JobDef.create(
        "anchors", b"\x00\xff", params={"hints": [{"x": 0.5}]}, timeout_s=10, idempotency_key="k"
    )
    fields = job_fields(job)
    assert all(isinstance(v, str) for v in fields.values())
    back = job_from_fields(fields, job.payload, attempts=2)
    assert back == JobDef(**{**job.__dict__, "attempts": 2})
    info = info_from_fields(fields, now=job.created_at)
    assert info.status is JobStatus.QUEUED and info.n_outputs == 0 and info.error is None
    expired = info_from_fields(fields, now=job.deadline + 1)
    assert expired.status is JobStatus.EXPIRED and expired.error["code"] == "expired"
    assert info.to_dict()["status"] == "queued"


def test_job_validation():
    with pytest.raises(ValueError):
        JobDef(kind="", payload=b"")
    with pytest.raises(TypeError):
        JobDef(kind="colorize", payload="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        JobDef.create("colorize", b"", idempotency_key="x" * 256)
    with pytest.raises(ValueError, match="deadline"):
        job_fields(JobDef(kind="colorize", payload=b""))


def test_meta_is_json_and_numpy_friendly():
    np = pytest.importorskip("numpy")
    assert (
        dump_json({"anchors": np.arange(3), "t": np.float32(0.5)}) == '{"anchors":[0,1,2],"t":0.5}'
    )
    with pytest.raises(TypeError):
        dump_json({"blob": b"x"})
    with pytest.raises(ValueError):
        dump_json({"x": float("nan")})
    failure = JobResult.failure("bad_input", "nope")
    assert failure.status is JobStatus.FAILED and failure.error == {
        "code": "bad_input",
        "message": "nope",
    }
