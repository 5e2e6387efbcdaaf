"""`disco bench` on a tiny architecture: every variant timed, report written (smoke test)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from service.cli import app


def test_bench_writes_json_and_markdown(tmp_path):
    md, js = tmp_path / "BENCHMARKS.md", tmp_path / "engine.json"
    md.write_text("# Benchmarks\n\nhand-written notes stay\n")
    args = [
        "bench",
        "--tiny",
        "--batches",
        "1,2",
        "--rounds",
        "1",
        "--out-md",
        str(md),
        "--out-json",
        str(js),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    data = json.loads(js.read_text())
    assert {"torch fp32 eager", "onnx fp32", "onnx fp32 inline k-means", "onnx int8"} <= data[
        "per_image_s"
    ].keys()
    assert all(v > 0 for row in data["per_image_s"].values() for v in row.values())
    assert "openvino f32" in data["per_image_s"]  # openvino is in the serve extra
    assert data["diverse"]["ratio"] > 0
    text = md.read_text()
    assert "hand-written notes stay" in text and "| onnx int8 |" in text
    assert "disco bench --batches 1,2 --rounds 1 --tiny" in text
    # a second report replaces the block instead of appending
    from export.bench import write_report

    write_report(data, "disco bench --again", md, js)
    text = md.read_text()
    assert text.count("<!-- bench:begin -->") == 1 and "--again" in text and "hand-written" in text
