"""The editor's render worker with the real engine on the tiny model: the identity of a photo is
returned for the project's caches and a stored one is reused by a fresh engine."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tiny_sd import synthetic_scene  # noqa: E402

from core.jobs import Finished  # noqa: E402
from core.transform import Transform3D  # noqa: E402


def _render(qtbot, scene, request, caches=None) -> Finished:
    from editor.worker import ModelRendererFactory, RenderWorker

    worker = RenderWorker(ModelRendererFactory())  # a fresh factory: a fresh engine
    events = []
    worker.event.connect(lambda job, ev: events.append(ev))
    try:
        worker.submit(scene, request, caches=caches)
        qtbot.waitUntil(lambda: any(type(e).__name__ in ("Finished", "Error") for e in events), timeout=120_000)
    finally:
        assert worker.shutdown(10_000)
    last = events[-1]
    assert isinstance(last, Finished), getattr(last, "details", last)
    return last


def test_identity_goes_to_the_project_and_comes_back(qtbot, tiny_sd_dir):
    scene = synthetic_scene(128, 64)
    from core.request import resolve_request
    from core.settings import Settings

    scene.object("box").transform = Transform3D(translation=(0.3, 0.0, 0.0))
    request = resolve_request(scene, {"model": str(tiny_sd_dir), "preset": "default", "steps": 3}, Settings(device="cpu"), resolution=128)
    assert request.model_path and not request.missing
    first = _render(qtbot, scene, request)
    assert first.info["geometric"] is False
    assert list(first.blobs) == ["identity:" + first.info["identity_key"]]
    assert first.info["identity_reused"] is False

    second = _render(qtbot, scene, request, caches=first.blobs)
    assert second.info["identity_reused"] == "stored"
    assert second.info["identity_unet_evals"] == {}
    assert second.blobs == {}  # already in the project: nothing new to store
    assert np.array_equal(first.image, second.image)


def test_free_model_memory_unloads_the_cached_models(qtbot, tiny_sd_dir, tmp_path, monkeypatch):
    """In-thread engine (the models in this process); tests/ml/test_engine_process.py frees the
    engine process's."""
    monkeypatch.setenv("HANDLES_STUDIO_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("HANDLES_ENGINE", "thread")
    from core.ml.device import MODEL_CACHE
    from core.ml.handles.models import load_models
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    load_models(tiny_sd_dir, device="cpu")
    assert MODEL_CACHE.keys(), "loading should have cached the model"
    win = MainWindow(persist=False, recovery=RecoveryManager(tmp_path / "rec"))
    try:
        win.free_model_memory()
        qtbot.waitUntil(lambda: not MODEL_CACHE.keys() and not win.worker.is_busy(), timeout=20_000)
        qtbot.waitUntil(lambda: "Freed" in win.statusBar().currentMessage(), timeout=5_000)
    finally:
        win.shutdown()
        win.close()
