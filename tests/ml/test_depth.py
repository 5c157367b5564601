"""Depth estimation on tiny random-weight Depth Anything V2 models saved to disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_services import build_tiny_depth_anything, install_in_hub_cache  # noqa: E402

from core.cli import main as cli_main  # noqa: E402
from core.errors import InputError, ModelError  # noqa: E402
from core.ml.depth import DepthEstimator, disparity_to_depth  # noqa: E402


@pytest.fixture(scope="module")
def relative_model(tmp_path_factory) -> Path:
    return build_tiny_depth_anything(tmp_path_factory.mktemp("rel") / "da-rel")


@pytest.fixture(scope="module")
def metric_model(tmp_path_factory) -> Path:
    return build_tiny_depth_anything(tmp_path_factory.mktemp("met") / "da-met", metric=True, max_depth=20, seed=1)


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), (xx + yy) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _reference_prediction(folder: Path, photo: np.ndarray) -> np.ndarray:
    """The model's output computed straight through transformers, without core.ml."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    proc = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        out = model(**proc(images=Image.fromarray(photo), return_tensors="pt")).predicted_depth
    return out[0].numpy().astype(np.float64)


def test_loads_offline_from_a_saved_folder(relative_model):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    est = DepthEstimator(str(relative_model), device="cpu")
    assert est.kind == "relative" and not est.is_metric
    model, processor = est.load()
    assert type(model).__name__ == "DepthAnythingForDepthEstimation"
    assert "DPTImageProcessor" in type(processor).__name__
    assert est.device_info.device == "cpu" and est.device_info.dtype == "float32"


@pytest.mark.parametrize("shape, size", [((64, 64), None), ((48, 80), None), ((50, 120), (128, 64)), ((90, 40), (64, 128))])
def test_output_size_and_values_for_any_aspect(relative_model, shape, size):
    est = DepthEstimator(relative_model, device="cpu")
    depth = est.estimate(_photo(*shape), size=size)
    expected = shape if size is None else (size[1], size[0])
    assert depth.shape == expected and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth > 0).all()
    assert depth.min() == pytest.approx(1.0, rel=1e-5) and depth.max() == pytest.approx(10.0, rel=1e-5)


def test_relative_output_follows_the_documented_conversion(relative_model):
    # 56 x 98 is the processor's own grid for this photo, so no resize is involved.
    photo = _photo(56, 98, seed=3)
    disp = _reference_prediction(relative_model, photo)
    assert disp.shape == (56, 98) and disp.std() > 0
    d = (disp - disp.min()) / (disp.max() - disp.min())
    expected = 1.0 / (d / 1.0 + (1.0 - d) / 10.0)
    depth = DepthEstimator(relative_model, device="cpu").estimate(photo)
    np.testing.assert_allclose(depth, expected, rtol=1e-4)
    # closer (larger disparity) is never farther
    order = np.argsort(disp.ravel(), kind="stable")
    assert np.all(np.diff(depth.ravel()[order].astype(np.float64)) <= 1e-6)


def test_metric_model_gives_metres_directly(metric_model):
    photo = _photo(56, 98, seed=4)
    est = DepthEstimator(metric_model, device="cpu")
    assert est.is_metric and est.max_depth == 20
    depth = est.estimate(photo)
    reference = _reference_prediction(metric_model, photo)
    np.testing.assert_allclose(depth, reference, rtol=1e-5)
    assert (depth > 0).all() and (depth <= 20).all()
    assert "metres" in est.describe_units()


def test_disparity_to_depth_is_positive_and_strictly_decreasing():
    rng = np.random.default_rng(0)
    disp = rng.uniform(-3, 7, size=1000)
    depth = disparity_to_depth(disp, near=0.5, far=40.0).astype(np.float64)
    order = np.argsort(disp)
    assert np.all(np.diff(depth[order]) < 0)
    assert depth.min() == pytest.approx(0.5) and depth.max() == pytest.approx(40.0)
    assert depth[np.argmax(disp)] == pytest.approx(0.5) and depth[np.argmin(disp)] == pytest.approx(40.0)
    # scale and shift of the disparity do not matter (it is only known up to them)
    np.testing.assert_allclose(disparity_to_depth(3 * disp + 5, 0.5, 40.0), depth, rtol=1e-6)
    # inverse depth is affine in disparity: midway disparity -> harmonic midpoint
    mid = disparity_to_depth(np.array([0.0, 0.5, 1.0]), 1.0, 10.0)
    assert mid[1] == pytest.approx(1.0 / (0.5 / 1.0 + 0.5 / 10.0))


def test_disparity_to_depth_degenerate_inputs():
    flat = disparity_to_depth(np.full((4, 5), 2.0))
    np.testing.assert_allclose(flat, np.sqrt(10.0))
    with_nan = disparity_to_depth(np.array([0.0, np.nan, 1.0]))
    assert with_nan[1] == pytest.approx(10.0) and np.isfinite(with_nan).all()
    with pytest.raises(InputError, match="near < far"):
        disparity_to_depth(np.ones(3), near=5.0, far=2.0)


def test_models_are_cached_and_unloaded(relative_model):
    a = DepthEstimator(relative_model, device="cpu")
    b = DepthEstimator(str(relative_model), device="cpu")
    assert a.load()[0] is b.load()[0]
    first = a.load()[0]
    a.unload()
    assert b.load()[0] is not first


def test_missing_model_and_bad_inputs(tmp_path, monkeypatch, relative_model):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HANDLES_MODEL_DIRS", raising=False)
    with pytest.raises(ModelError, match="hf download depth-anything/Depth-Anything-V2-Small-hf"):
        DepthEstimator()
    est = DepthEstimator(relative_model, device="cpu")
    with pytest.raises(InputError, match="uint8"):
        est.estimate(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        est.estimate(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(InputError, match="width, height"):
        est.estimate(np.zeros((8, 8, 3), np.uint8), size=(8,))
    with pytest.raises(InputError, match="near < far"):
        DepthEstimator(relative_model, device="cpu", near=3, far=2)


def test_default_model_found_in_the_hub_cache(tmp_path, monkeypatch, relative_model):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    snap = install_in_hub_cache(relative_model, tmp_path / "home" / "hub", "depth-anything/Depth-Anything-V2-Small-hf")
    est = DepthEstimator(device="cpu")
    assert est.path == snap
    assert est.estimate(_photo(32, 48)).shape == (32, 48)


def test_depth_cli_writes_the_working_size(tmp_path, relative_model, capsys):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(_photo(100, 200)).save(photo)
    out = tmp_path / "depth.npy"
    argv = ["depth", str(photo), "-o", str(out), "--model", str(relative_model), "--long-side", "128", "--device", "cpu"]
    assert cli_main(argv) == 0, capsys.readouterr().err
    depth = np.load(out)
    assert depth.shape == (64, 128) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() > 0
    assert "wrote" in capsys.readouterr().out
    assert cli_main(["depth", str(tmp_path / "nope.png"), "-o", str(out), "--model", str(relative_model)]) == 1
    assert "nope.png" in capsys.readouterr().err
    assert cli_main(["depth", str(photo), "-o", str(tmp_path / "d.txt"), "--model", str(relative_model)]) == 1
    assert cli_main(["depth", str(photo), "-o", str(out), "--model", str(relative_model), "--device", "tpu"]) == 1
    assert "unknown device" in capsys.readouterr().err
