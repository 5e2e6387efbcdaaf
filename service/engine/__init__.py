"""Inference engines: run the DISCO network (ONNX Runtime, TensorRT) behind one small protocol."""

from .base import Encoded, Engine

__all__ = ["Encoded", "Engine"]
