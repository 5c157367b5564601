"""Identity locks (issue 11): learnt on the bundled world model and on tiny models of every
backend, stored in projects, applied in renders through diffusers' PEFT adapters and word hooks."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tiny_backends  # noqa: E402

from core.errors import InputError  # noqa: E402
from core.locks import describe, read_header, record_for, with_lock  # noqa: E402
from core.transform import Transform3D  # noqa: E402
from core.world import STAGE_TO_CAM, WorldLayout, WorldObject, layout_scene  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "resources" / "models" / "world"
SIZE = (256, 192)
#: a quick lock: enough to change the model, seconds to learn
QUICK = {"steps": 6, "batch": 2, "size": 64, "examples": 6, "prior_images": 2, "prior_steps": 4}


def _scene():
    lay = WorldLayout(
        objects=(
            WorldObject("box", "box", (0.9,), -1.2, 5.0, yaw_deg=30.0, style=1),
            WorldObject("sphere", "sphere", (0.5,), 1.3, 5.4, style=0),
        )
    )
    return layout_scene(lay, *SIZE)


def _yaw(scene, name: str, deg: float) -> None:
    axis = STAGE_TO_CAM @ np.array([0.0, 1.0, 0.0])
    scene.object(name).transform = Transform3D.from_axis_angle(tuple(axis), deg)


@pytest.fixture(scope="module")
def world():
    if not (BUNDLED / "model_index.json").is_file():
        pytest.fail(f"the bundled world model is missing at {BUNDLED} (restore it: git checkout -- resources/models/world)")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    from core.ml.handles.renderer import DiffusionHandlesRenderer
    from core.request import resolve_request
    from core.settings import Settings

    renderer = DiffusionHandlesRenderer()
    scene = _scene()
    user = Settings(device="cpu")
    request = resolve_request(scene, {"model": "world", "preset": "default", "steps": 10}, user)
    assert request.model_path, request.missing
    return renderer, scene, user


@pytest.fixture(scope="module")
def box_lock(world):
    from core.ml.handles.lock import lock_settings
    from core.request import resolve_request

    renderer, scene, user = world
    request = resolve_request(scene, {"model": "world"}, user)
    s = lock_settings("custom", True, **QUICK)
    box = scene.object("box")
    return renderer.learn([(scene.photo, scene.depth, box.mask)], request, "box", s, object_id=box.id)


def _render(world, locks: dict, yaw_box: float = 100.0):
    from core.request import resolve_request

    renderer, scene0, user = world
    scene = _scene()
    for o, o0 in zip(scene.objects, scene0.objects):
        o.id = o0.id
    _yaw(scene, "box", yaw_box)
    caches = {rec["cache"]: data for rec, data in locks.values()}
    rs = {"model": "world", "preset": "default", "steps": 10, "locks": {oid: rec for oid, (rec, _) in locks.items()}}
    request = resolve_request(scene, rs, user)
    return renderer.render(scene, request, caches=caches), request, scene


def test_a_lock_changes_the_render_only_where_the_edit_is(world, box_lock):
    from core.geometry.warp import plan

    data = box_lock.to_bytes()
    rec = record_for(data, box_lock.object_id)
    plain, _, scene = _render(world, {})
    locked, request, _ = _render(world, {box_lock.object_id: (rec, data)})
    assert [lk["method"] for lk in request.locks] == ["custom"]
    assert locked.info["locks"] == [{"object": "box", "method": "custom", "word": "box"}]
    changed = np.asarray(plan(scene).changed, bool)
    diff = np.abs(locked.image.astype(int) - plain.image.astype(int)).max(-1)
    # a lock that is not applied changes nothing at all (the renders are deterministic); this
    # six-step lock moves the edited region's pixels by 0.6-0.7 grey levels on average at the
    # world model's guidance scale 2 (a third of them change, by up to 11)
    assert diff[changed].mean() > 0.25 and (diff[changed] > 0).mean() > 0.1, "the lock did not change the rotated box"
    from scipy import ndimage

    # the default preset pastes the photo back beyond the changed region (margin + feather: 24 px)
    far = ndimage.distance_transform_edt(~changed) > 26
    assert diff[far].max() == 0, "pixels away from the edit changed with the lock"
    # the identity is keyed by the lock: the two renders did not share one
    assert locked.info["identity_key"] != plain.info["identity_key"]


def test_a_lock_of_one_object_does_not_reach_another(world, box_lock):
    """The box's lock, applied while only the sphere turns: the box (unmoved) stays exactly."""
    data = box_lock.to_bytes()
    rec = record_for(data, box_lock.object_id)
    renderer, scene0, user = world
    from core.request import resolve_request

    def run(locks):
        scene = _scene()
        for o, o0 in zip(scene.objects, scene0.objects):
            o.id = o0.id
        _yaw(scene, "sphere", 120.0)
        rs = {"model": "world", "preset": "default", "steps": 10, "locks": locks}
        return renderer.render(scene, resolve_request(scene, rs, user), caches={rec["cache"]: data}).image, scene

    with_box, scene = run({box_lock.object_id: rec})
    box = scene.object("box").mask
    assert np.array_equal(with_box[box], scene0.photo[box]), "the unmoved box changed"
    # and at the text encoder: the box's vectors replace only the word 'box' (causal attention:
    # tokens before it are untouched, a prompt without it is untouched)
    from core.ml.handles.engine import HandlesEngine
    from core.ml.handles.lock import apply_locks
    from core.ml.handles.models import load_models

    eng = HandlesEngine(load_models(BUNDLED, "cpu", "fp32"))
    base_ball = eng.encode_text("a red beach ball on a tiled floor")
    base_box = eng.encode_text("a red checkered box on a tiled floor")
    apply_locks(eng.m, [box_lock])
    try:
        assert torch.equal(eng.encode_text("a red beach ball on a tiled floor"), base_ball)
        locked_box = eng.encode_text("a red checkered box on a tiled floor")
    finally:
        apply_locks(eng.m, [])
    ids = eng.m.tokenizer("a red checkered box on a tiled floor").input_ids
    pos = ids.index(eng.m.tokenizer("box", add_special_tokens=False).input_ids[0])
    assert torch.equal(locked_box[0, :pos], base_box[0, :pos])
    assert not torch.equal(locked_box[0, pos:], base_box[0, pos:])
    assert torch.equal(eng.encode_text("a red checkered box on a tiled floor"), base_box), "apply_locks([]) left the hook"


def test_a_saved_lock_renders_the_same_after_load(world, box_lock, tmp_path):
    from core.document import Document

    renderer, scene0, user = world
    data = box_lock.to_bytes()
    rec = record_for(data, box_lock.object_id, created="2026-12-02T00:00:00+00:00")
    doc = Document(scene=_scene())
    for o, o0 in zip(doc.scene.objects, scene0.objects):
        o.id = o0.id
    doc.render_settings["locks"] = with_lock({}, box_lock.object_id, rec)
    doc.caches[rec["cache"]] = data
    path = doc.save(tmp_path / "locked.handles")
    back = Document.load(path)
    assert back.render_settings["locks"] == {box_lock.object_id: rec}
    assert bytes(back.caches[rec["cache"]]) == data
    first, _, _ = _render(world, {box_lock.object_id: (rec, data)})
    renderer._locks.clear()  # read again from the loaded project
    again, _, _ = _render(world, {box_lock.object_id: (back.render_settings["locks"][box_lock.object_id], bytes(back.caches[rec["cache"]]))})
    assert np.array_equal(first.image, again.image)
    # switched off per render: the record stays, the render is the plain one
    off = dict(rec, enabled=False)
    plain, _, _ = _render(world, {})
    unlocked, request, _ = _render(world, {box_lock.object_id: (off, data)})
    assert request.locks == [] and np.array_equal(unlocked.image, plain.image)


def test_damaged_or_foreign_locks_are_one_line_errors(world, box_lock):
    from core.ml.handles.lock import IdentityLock

    data = box_lock.to_bytes()
    for bad in (b"", b"\x00" * 64, data[: len(data) // 2], b"x" * 8 + data[8:]):
        with pytest.raises(InputError) as e:
            IdentityLock.from_bytes(bad)
        assert "\n" not in str(e.value) and "learn the lock again" in str(e.value)
    with pytest.raises(InputError):
        read_header(data[:20])
    # a render whose lock weights are not in the project: one line naming the object
    rec = record_for(data, box_lock.object_id)
    renderer, scene0, user = world
    from core.request import resolve_request

    scene = _scene()
    for o, o0 in zip(scene.objects, scene0.objects):
        o.id = o0.id
    request = resolve_request(scene, {"model": "world", "locks": {box_lock.object_id: rec}}, user)
    renderer._locks.clear()  # locks read before are kept by cache name
    with pytest.raises(InputError, match="identity lock of 'box' is missing"):
        renderer.render(scene, request, caches={})
    # two locks on one word cannot both apply
    other = replace(box_lock, object_id="other", _bytes=None)
    from core.ml.handles.lock import apply_locks

    with pytest.raises(InputError, match="bind the word 'box'"):
        apply_locks(renderer._engine.m, [box_lock, other])
    assert not renderer._engine.m.extras.get("locks", {}).get("adapters")


def test_records_describe_themselves(box_lock):
    data = box_lock.to_bytes()
    rec = record_for(data, "abc")
    assert rec["method"] == "custom" and rec["word"] == "box" and rec["bytes"] == len(data)
    assert rec["cache"].startswith("lock:abc:") and rec["enabled"] is True
    assert "Custom Diffusion on 'box'" in describe(rec) and "KB" in describe(rec)
    assert describe(dict(rec, enabled=False)).endswith("(off)")
    assert with_lock({"abc": rec}, "abc", None) == {}


# ----------------------------------------------------------------------------- every backend
@pytest.fixture(scope="module")
def backend_folders(tmp_path_factory, tiny_sd_dir):
    base = tmp_path_factory.mktemp("lock-backends")
    sd15, cn15 = tiny_backends.build_tiny_sd15_controlnet(base / "a")
    sdxl, cnxl = tiny_backends.build_tiny_sdxl_controlnet(base / "b")
    return {"sd2-depth": (Path(tiny_sd_dir), None), "sd15-controlnet": (sd15, cn15), "sdxl-controlnet": (sdxl, cnxl)}


@pytest.mark.parametrize("backend", ["sd2-depth", "sd15-controlnet", "sdxl-controlnet"])
def test_locks_load_and_unload_cleanly_on_every_backend(backend_folders, backend, tmp_path):
    from core.ml.handles.engine import HandlesEngine
    from core.ml.handles.lock import IdentityLock, apply_locks, learn_lock, lock_settings
    from core.ml.handles.models import load_models, set_lora

    folder, cn = backend_folders[backend]
    eng = HandlesEngine(load_models(folder, "cpu", "fp32", controlnet=cn))
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    depth = (2.0 + rng.random((64, 64))).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 20:44] = True
    z = torch.randn((1, eng.m.latent_channels, 8, 8), generator=torch.Generator().manual_seed(1))
    dcond = eng.depth_condition(np.full((64, 64), 3.0, np.float32))
    prompt = "a red box on a floor"

    def out():
        with torch.no_grad():
            return eng.unet(z, dcond, 500, eng.encode_text(prompt), None)

    base = out()
    locks = []
    for method in ("ti", "custom", "lora"):
        s = lock_settings(method, True, **{**QUICK, "steps": 2, "size": 64 if backend != "sdxl-controlnet" else 64})
        lk = learn_lock(eng, [(photo, depth, mask)], prompt, "box" if method != "lora" else "floor", s, object_id=method)
        assert torch.equal(out(), base), f"learning {method} left the model changed"
        back = IdentityLock.from_bytes(lk.to_bytes())
        assert back.method == method and (back.adapter != {}) == (method != "ti")
        locks.append(back)
        apply_locks(eng.m, [back])
        assert not torch.allclose(out(), base), f"the {method} lock changed nothing"
        apply_locks(eng.m, [])
        assert torch.equal(out(), base), f"removing the {method} lock left the model changed"
    # the custom lock ('box') and the LoRA lock ('floor') together, beside a few-step LoRA
    lora = tiny_backends.write_tiny_lora(Path(folder) / "unet", tmp_path / "lora")
    set_lora(eng.m, lora)
    with_lora = out()
    apply_locks(eng.m, locks[1:])
    assert sorted(eng.m.unet.active_adapters()) == sorted(["handles", *(f"lock-{lk.digest}" for lk in locks[1:])])
    assert not torch.allclose(out(), with_lora)
    apply_locks(eng.m, [])
    assert torch.allclose(out(), with_lora, atol=1e-6)
    set_lora(eng.m, None)
    assert torch.equal(out(), base)


def test_cli_learn_then_render(tmp_path):
    """`learn` stores the lock in the project; `render` applies it and says so; --no-locks does not."""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    proj = tmp_path / "s.handles"

    def cli(*a, check=True):
        r = subprocess.run([sys.executable, "-m", "core.cli", *a], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if check:
            assert r.returncode == 0, r.stderr[-2000:]
        return r

    cli("sample", "-o", str(proj))
    r = cli("learn", str(proj), "--object", "sphere", "--method", "ti", "--steps", "4")
    assert "locked 'sphere'" in r.stdout and "Textual Inversion on 'beach ball'" in r.stdout, r.stdout
    from core.project import load_project

    p = load_project(proj)
    locks = p.settings["render"]["locks"]
    (rec,) = locks.values()
    assert rec["method"] == "ti" and rec["word"] == "beach ball" and rec["cache"] in p.caches
    assert json.loads(json.dumps(rec)) == rec
    r = cli("render", str(proj), "--object", "sphere", "--rotate-deg", "90", "--steps", "4", "-o", str(tmp_path / "r.png"))
    assert "ti lock on 'sphere'" in r.stdout
    r = cli("render", str(proj), "--object", "sphere", "--rotate-deg", "90", "--steps", "4", "--no-locks", "-o", str(tmp_path / "r2.png"))
    assert "lock" not in r.stdout
    bad = cli("learn", str(proj), "--object", "nothing", check=False)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "nothing" in bad.stderr
