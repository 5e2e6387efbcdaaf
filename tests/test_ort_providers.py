"""ONNX Runtime provider selection: the options documented in service/engine/ort_providers.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.engine.ort_providers import (
    CPU,
    CUDA,
    TENSORRT,
    cuda_options,
    provider_config,
    shape_profiles,
)

ALL = [TENSORRT, CUDA, CPU]
ENCODER_INPUTS = [
    {"name": "l_norm", "shape": ["batch", 1, 256, 256]},
    {"name": "init_idx", "shape": ["batch", "anchors"]},
]


def test_default_is_cuda_never_tensorrt() -> None:
    config = provider_config(None, ALL)
    assert [p for p, _ in config] == [CUDA, CPU]
    opts = dict(config)[CUDA]
    assert opts["cudnn_conv_algo_search"] == "HEURISTIC"
    assert opts["arena_extend_strategy"] == "kSameAsRequested"


def test_default_without_gpu_is_cpu() -> None:
    assert provider_config(None, [CPU]) == [(CPU, {})]
    assert provider_config("cpu", ALL) == [(CPU, {})]


@pytest.mark.parametrize("requested", ["cuda", "tensorrt"])
def test_requested_but_missing_raises(requested: str) -> None:
    with pytest.raises(RuntimeError, match="not available"):
        provider_config(requested, [CPU], cache_dir="/tmp/x")


def test_unknown_request_rejected() -> None:
    with pytest.raises(ValueError, match="unknown providers"):
        provider_config("rocm", ALL)


def test_tensorrt_fp16_caches_and_max_batch_profiles(tmp_path) -> None:
    config = provider_config(
        "tensorrt", ALL, inputs=ENCODER_INPUTS, max_batch=32, cache_dir=tmp_path
    )
    assert [p for p, _ in config] == [TENSORRT, CUDA, CPU]
    trt = dict(config)[TENSORRT]
    assert trt["trt_fp16_enable"] == "1"
    assert trt["trt_engine_cache_enable"] == trt["trt_timing_cache_enable"] == "1"
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(tmp_path)
    assert trt["trt_profile_min_shapes"] == "l_norm:1x1x256x256,init_idx:1x1"
    assert trt["trt_profile_opt_shapes"] == "l_norm:32x1x256x256,init_idx:32x8"
    assert trt["trt_profile_max_shapes"] == "l_norm:32x1x256x256,init_idx:32x64"
    assert dict(config)[CUDA] == cuda_options()


def test_tensorrt_needs_a_cache_dir() -> None:
    with pytest.raises(ValueError, match="cache_dir"):
        provider_config("tensorrt", ALL, inputs=ENCODER_INPUTS)


def test_profiles_reject_unknown_dims() -> None:
    with pytest.raises(ValueError, match="height"):
        shape_profiles([{"name": "x", "shape": ["batch", "height"]}], 8)
    with pytest.raises(ValueError, match="max_batch"):
        shape_profiles(ENCODER_INPUTS, 0)


def test_profiles_cover_the_bundled_model_inputs() -> None:
    """Every graph input of the shipped model repository gets a profile."""
    from service.settings import Settings

    manifest = json.loads((Settings().model_dir / "manifest.json").read_text())
    for graph in manifest["graphs"].values():
        lo, opt, _ = shape_profiles(graph["inputs"], 32)
        assert len(lo.split(",")) == len(graph["inputs"]) and opt.count("32x") == len(
            graph["inputs"]
        )


def test_real_session_accepts_the_cpu_config() -> None:
    """The (provider, options) pairs are what InferenceSession takes: a real CPU session."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(
        model.SerializeToString(),
        providers=provider_config(None, ort.get_available_providers()),
    )
    (y,) = sess.run(None, {"x": np.array([-1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(y, [0.0, 2.0])
