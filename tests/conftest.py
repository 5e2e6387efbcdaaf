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
