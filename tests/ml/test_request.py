"""One render request, resolved once (core.request): the Settings' extra model folders are found by
the editor and the command line alike, with the tiny model saved to disk and loaded by the real
code. These failed before the request was resolved in one place: the Settings folders reached
the model check but not the render."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from tiny_sd import synthetic_scene  # noqa: E402

from core.settings import Settings  # noqa: E402
from core.transform import Transform3D  # noqa: E402


@pytest.fixture
def no_model_dirs(tmp_path, monkeypatch):
    """No Hugging Face cache and no HANDLES_MODEL_DIRS: only what a test puts in the Settings."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HANDLES_MODEL_DIRS", raising=False)
    return tmp_path


@pytest.fixture
def settings_folder(no_model_dirs, tiny_sd_dir):
    """A folder the user listed in Settings ▸ Extra model folders, holding "sd2-depth" (the tiny model)."""
    extra = no_model_dirs / "my-models"
    extra.mkdir()
    (extra / "sd2-depth").symlink_to(tiny_sd_dir, target_is_directory=True)
    return extra


def test_a_model_in_the_settings_folders_is_resolved_into_the_request(settings_folder):
    from core.request import resolve_request

    scene = synthetic_scene(128, 64)
    scene.object("box").transform = Transform3D(translation=(0.3, 0.0, 0.0))
    req = resolve_request(scene, {"model": "sd2-depth", "preset": "fast", "steps": 3, "seed": 5}, Settings(model_folders=[str(settings_folder)], device="cpu"))
    assert not req.missing and req.preset == "fast" and req.model == "sd2-depth"
    assert req.model_path and (settings_folder / "sd2-depth").samefile(req.model_path)
    # objects by stable id, typed settings with the steps and resolution filled in
    box = scene.object("box")
    assert set(req.transforms) == {o.id for o in scene.objects} and req.transform_of(box.id) == box.transform.to_dict()
    assert req.handles is not None and req.handles.steps == 3 and req.handles.resolution == req.resolution == 128
    assert req.device == "cpu" and req.seed == 5
    # the same model without the Settings folder is missing: the request says so and how to fetch it
    gone = resolve_request(scene, {"model": "sd2-depth"}, Settings())
    assert gone.geometric and not gone.model_path and gone.fetch_command.startswith("hf download sd2-community/stable-diffusion-2-depth")


def test_the_request_round_trips_and_reads_an_older_projects_record(settings_folder):
    from core.jobs import RenderRequest
    from core.request import resolve_request

    scene = synthetic_scene(128, 64)
    req = resolve_request(scene, {"model": "sd2-depth", "foreground": 130}, Settings(model_folders=[str(settings_folder)]))
    back = RenderRequest.from_dict(json.loads(json.dumps(req.to_dict())))
    assert back == req and back.key() == req.key()
    assert back.handles.fg_weight == pytest.approx(1.5 * 1.3)
    # where the model lies and which device runs it do not change the pixels: same key
    import dataclasses

    assert dataclasses.replace(req, model_path="/elsewhere", device="cuda").key() == req.key()
    assert dataclasses.replace(req, seed=req.seed + 1).key() != req.key()
    # a record written before requests were resolved: transforms by name, a free dict of overrides
    old = {
        "scene_id": "s",
        "transforms": {"box": {"translation": [0.2, 0, 0]}},
        "preset": "default",
        "steps": 7,
        "resolution": 128,
        "settings": {"fg_weight": 2.0},
    }
    legacy = RenderRequest.from_dict(old)
    assert legacy.transforms == {} and legacy.transform_of("some-id", "box") == {"translation": [0.2, 0, 0]}
    assert legacy.handles.fg_weight == 2.0 and legacy.handles.steps == 7


def test_the_cli_renders_with_a_model_found_only_in_the_settings_folders(settings_folder, tmp_path):
    """`handles-studio render ... --model sd2-depth` finds a folder listed only in the Settings."""
    from PIL import Image

    from core.project import Project, save_project
    from core.settings import SETTINGS_FILE, save_settings

    cfg = tmp_path / "config"
    save_settings(Settings(model_folders=[str(settings_folder)]), cfg / SETTINGS_FILE)
    env_cfg = {"HANDLES_STUDIO_CONFIG_DIR": str(cfg)}
    import os

    proj = tmp_path / "box.handles"
    save_project(proj, Project(scene=synthetic_scene(128, 64)))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **env_cfg)
    outs = {}
    for seed in (1, 2):
        out = tmp_path / f"seed{seed}.png"
        args = ["render", proj, "--object", "box", "--translate", "0.3", "0", "0", "--model", "sd2-depth"]
        args += ["--preset", "fast", "--steps", "4", "--seed", str(seed), "--device", "cpu", "-o", out]
        r = subprocess.run([sys.executable, "-m", "core.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        outs[seed] = np.asarray(Image.open(out).convert("RGB"))
    # without the Settings folder the same command is one line with the fetch command
    r = subprocess.run(
        [sys.executable, "-m", "core.cli", "render", str(proj), "--model", "sd2-depth", "-o", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        env=dict(env, HANDLES_STUDIO_CONFIG_DIR=str(tmp_path / "empty-config")),
        timeout=300,
    )
    assert r.returncode == 1 and "hf download sd2-community/stable-diffusion-2-depth" in r.stderr
    # two seeds: different inside the edited region, identical far from it
    from scipy import ndimage

    from core.geometry.warp import plan

    scene = synthetic_scene(128, 64)
    scene.object("box").transform = Transform3D(translation=(0.3, 0.0, 0.0))
    p = plan(scene)
    far = ndimage.distance_transform_edt(~p.changed) > 26
    assert far.sum() > 100
    assert np.array_equal(outs[1][far], outs[2][far])
    revealed = p.changed & ~np.isfinite(p.src_x)
    assert np.abs(outs[1][revealed].astype(int) - outs[2][revealed].astype(int)).mean() > 1.0


def test_the_editor_renders_with_a_model_found_only_in_the_settings_folders(qtbot, settings_folder, tmp_path):
    """The user's path through the real factory: Settings ▸ Extra model folders, then Render.
    Before the request was resolved once, the panel said "renderer: sd2-depth" and the render
    then failed with "not on disk"."""
    from core.document import Document
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    scene = synthetic_scene(128, 64)
    doc = Document(scene=scene, render_settings={"model": "sd2-depth", "preset": "fast", "steps": 3})
    settings = Settings(model_folders=[str(settings_folder)], device="cpu", auto_render=False)
    win = MainWindow(doc, settings=settings, use_gl=False, persist=False, recovery=RecoveryManager(tmp_path / "rec"))
    qtbot.addWidget(win)
    try:
        assert "sd2-depth" in win.render_panel.model_status.text() and "renderer: sd2-depth" in win.status_renderer.text()
        win.scene.object("box").transform = Transform3D(translation=(0.3, 0.0, 0.0))
        win.request_render()
        qtbot.waitUntil(lambda: len(win.doc.renders) == 1 or win.banner.shown, timeout=180_000)
        assert not win.banner.shown, win.banner.message
        rec = win.doc.renders[0]
        assert rec.info["renderer"] == "diffusion-handles" and rec.info["geometric"] is False
        assert rec.request["model"] == "sd2-depth" and rec.request["model_path"]
        assert any(k.startswith("identity:") for k in win.doc.caches)  # the identity went to the project
    finally:
        win.shutdown()
