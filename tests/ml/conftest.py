"""Fixtures of the ML tests: a tiny random-weight SD2-depth saved to disk, loaded by the real code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_sd  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A tiny StableDiffusionDepth2ImgPipeline-layout model folder (session-wide, read-only by convention)."""
    return tiny_sd.build_tiny_sd(tmp_path_factory.mktemp("tiny-sd2-depth") / "model")


@pytest.fixture(scope="session")
def tiny_models(tiny_sd_dir):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    from core.ml.handles.models import load_models

    return load_models(tiny_sd_dir, device="cpu")


@pytest.fixture
def engine(tiny_models):
    from core.ml.handles.engine import HandlesEngine

    return HandlesEngine(tiny_models)
