"""The bundled world model (resources/models/world): offline loading and Diffusion Handles on it.

These run the shipped weights through the real loader, renderer and presets on held-out world
scenes (seeds training never used) and compare with the ray-cast ground truth. Thresholds come
from `make bench-quality` with margin (see the README's figures).
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.quality import edit_regions, psnr  # noqa: E402
from core.transform import Transform3D  # noqa: E402
from core.world import HELD_OUT_SEED, STAGE_TO_CAM, layout_scene, random_layout, render_moved  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[2] / "resources" / "models" / "world"
SIZE = (256, 192)
#: the moved box's PSNR (dB) the default preset must reach at its true new place (bench: see README)
OBJECT_MIN_DB = 18.0
#: and its margin over the no-guidance ablation
OVER_ABLATION_DB = 2.0


@pytest.fixture(scope="module")
def renderer():
    if not (BUNDLED / "model_index.json").is_file():
        pytest.fail(f"the bundled world model is missing at {BUNDLED} (restore it: git checkout -- resources/models/world)")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    from core.ml.handles.renderer import DiffusionHandlesRenderer

    return DiffusionHandlesRenderer()


def _box_scene():
    """A held-out scene with a box, and that box moved 0.9 m to the side along the floor."""
    for k in range(200):
        lay = random_layout(HELD_OUT_SEED + 100 + k)
        boxes = [o for o in lay.objects if o.kind == "box" and -1.6 < o.x < 1.6 and o.z < 6.5]
        if len(lay.objects) <= 2 and boxes:
            box = boxes[0]
            dx = 0.9 if box.x < 0 else -0.9
            others = [o for o in lay.objects if o is not box]
            if all(abs(o.x - (box.x + dx)) > 1.2 or abs(o.z - box.z) > 1.2 for o in others):
                return lay, box.name, Transform3D(translation=tuple(STAGE_TO_CAM @ np.array([dx, 0.0, 0.0])))
    raise AssertionError("no held-out scene with a box found")


def _request(scene, preset="default", **settings):
    """The request the editor and the CLI build for this scene (the world model is its default)."""
    import dataclasses

    from core.request import resolve_request
    from core.settings import Settings

    req = resolve_request(scene, {"preset": preset, "steps": 25}, Settings(device="cpu"))
    assert req.model == "world" and req.model_path and req.resolution == max(SIZE)
    return dataclasses.replace(req, handles=req.handles.with_overrides(settings)) if settings else req


def test_the_bundled_model_loads_offline_without_network(monkeypatch):
    def no_network(*_a, **_k):
        raise AssertionError("the world model tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    from core.ml.handles.models import load_models
    from core.ml.store import find_model, native_resolution, world_only

    assert find_model("world", role="renderer").resolve() == BUNDLED.resolve()
    assert native_resolution("world") == 256 and world_only("world")
    m = load_models("world", device="cpu")
    assert int(m.unet.config.in_channels) == 5 and len(m.unet.up_blocks) == 4
    assert m.vae_factor == 4
    total = sum(f.stat().st_size for f in BUNDLED.rglob("*") if f.is_file())
    assert total < 30 * 1024 * 1024


def test_moving_the_box_puts_it_at_its_true_place_and_keeps_the_rest(renderer):
    lay, name, tr = _box_scene()
    src = layout_scene(lay, *SIZE)
    truth = render_moved(lay, {name: tr}, *SIZE)
    scene = layout_scene(lay, *SIZE)
    scene.object(name).transform = tr
    out = renderer.render(scene, _request(scene)).image
    # the ablation: plain depth-conditioned denoising from the inverted noise, no guidance, no paste
    ablation = renderer.render(scene, _request(scene, grad_steps=0, preview_start=0.0, preview_keep=0.0, background_blend=True, paste_objects=False)).image
    reg = edit_regions({o.name: o.mask for o in src.objects}, truth.masks, {name}, src.photo, truth.photo)
    got, base = psnr(out, truth.photo, reg["object"]), psnr(ablation, truth.photo, reg["object"])
    assert got > OBJECT_MIN_DB, f"moved box {got:.1f} dB"
    assert got > base + OVER_ABLATION_DB, f"moved box {got:.1f} dB vs {base:.1f} dB without guidance"
    # away from the edit (its regions and the paste seam), the photo is kept within one grey level
    from scipy import ndimage

    edited = reg["object"] | reg["revealed"] | reg["shadow"] | src.object(name).mask
    far = ndimage.distance_transform_edt(~edited) > 30
    assert far.mean() > 0.4
    assert np.abs(out[far].astype(int) - src.photo[far].astype(int)).max() <= 1


def test_the_identity_transform_reproduces_the_photo(renderer):
    lay, _name, _tr = _box_scene()
    scene = layout_scene(lay, *SIZE)
    out = renderer.render(scene, _request(scene)).image
    assert psnr(out, scene.photo) > 40.0
    assert np.abs(out.astype(int) - scene.photo.astype(int)).max() <= 1
