"""The procedural world: layouts, exact ray-cast depth, captions, edits, regions and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.quality import EDIT_KINDS, edit_regions, held_out_edits, psnr, region_scores, ssim_map, world_edit
from core.transform import Transform3D
from core.world import (
    FLOOR_Y,
    HELD_OUT_SEED,
    PITCH_DEG,
    SAMPLE_LAYOUT,
    layout_pivots,
    layout_scene,
    random_layout,
    render_layout,
    render_moved,
)


def test_layouts_are_deterministic_and_objects_never_overlap():
    for seed in range(200):
        a, b = random_layout(seed), random_layout(seed)
        assert a == b
        assert 1 <= len(a.objects) <= 4
        assert len(set(a.names)) == len(a.names)
        for i, o in enumerate(a.objects):
            for p in a.objects[i + 1 :]:
                assert math.hypot(o.x - p.x, o.z - p.z) > o.footprint_radius + p.footprint_radius
    assert random_layout(1) != random_layout(2)


def test_captions_name_every_object_in_the_samples_grammar():
    assert SAMPLE_LAYOUT.caption() == ("a red checkered box, a blue beach ball and a green striped cylinder on a tiled floor in front of a wall")
    for seed in range(50):
        lay = random_layout(seed)
        cap = lay.caption()
        assert cap.endswith(" on a tiled floor in front of a wall")
        for o in lay.objects:
            assert o.phrase() in cap
        assert " a orange" not in cap  # the article follows the adjective


def test_floor_depth_is_the_exact_ray_plane_intersection():
    w, h = 96, 64
    r = render_layout(random_layout(HELD_OUT_SEED), w, h)
    f = (max(w, h) / 2) / math.tan(math.radians(55.0) / 2)
    c, s = math.cos(math.radians(PITCH_DEG)), math.sin(math.radians(PITCH_DEG))
    # bottom-centre pixel: a floor pixel; camera -> level frame is the transpose of rot_x(pitch)
    i, j = h - 1, w // 2
    d = np.array([(j + 0.5 - w / 2) / f, (i + 0.5 - h / 2) / f, 1.0])
    level_y = c * d[1] + s * d[2]  # second row of rot_x(pitch)^T
    assert not any(m[i, j] for m in r.masks.values())
    assert r.depth[i, j] == pytest.approx(FLOOR_Y / level_y, rel=1e-5)


def test_moving_an_object_moves_its_pixels_and_keeps_the_rest():
    lay = random_layout(HELD_OUT_SEED + 3)
    name = lay.objects[0].name
    w, h = 128, 96
    base = render_layout(lay, w, h)
    tr = {name: Transform3D(translation=(0.5, 0.0, 0.0))}
    moved = render_moved(lay, tr, w, h)
    pivot = layout_pivots(lay, w, h)[name]
    f = (max(w, h) / 2) / math.tan(math.radians(55.0) / 2)
    shift = 0.5 * f / pivot[2]  # pixels, to first order at the pivot's depth
    ys, xs = np.nonzero(base.masks[name])
    ys2, xs2 = np.nonzero(moved.masks[name])
    assert xs2.mean() - xs.mean() == pytest.approx(shift, rel=0.25)
    assert abs(ys2.mean() - ys.mean()) < 2.0
    # far from the object, its shadow and its new place, nothing changes
    far = np.ones((h, w), bool)
    far[:, : int(min(xs.min(), xs2.min())) - 30] = True
    untouched = ~(base.masks[name] | moved.masks[name])
    untouched[:, int(min(xs.min(), xs2.min())) - 20 :] = False
    assert np.array_equal(base.photo[untouched], moved.photo[untouched])


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_edits_keep_objects_on_the_floor_and_apart(kind):
    made = 0
    for k in range(12):
        lay = random_layout(HELD_OUT_SEED + k)
        tr = world_edit(lay, kind, seed=k, size=(128, 96))
        if tr is None:
            assert kind != "identity"  # every layout takes the identity edit
            continue
        made += 1
        assert set(tr) <= set(lay.names)
        if kind == "identity":
            assert all(t.is_identity() for t in tr.values())
            continue
        scene = layout_scene(lay, 128, 96)
        # the lowest point of a moved object stays on the floor (no sinking, no floating)
        pivots = layout_pivots(lay, 128, 96)
        for name, t in tr.items():
            o = lay.object(name)
            from core.world import STAGE_TO_CAM

            bottom = STAGE_TO_CAM @ np.array([o.x, FLOOR_Y, o.z])
            new_bottom = t.apply(bottom, pivots[name])
            level = STAGE_TO_CAM.T @ new_bottom
            assert level[1] == pytest.approx(FLOOR_Y, abs=1e-6), kind
        assert scene.prompt == lay.caption()
    assert made >= 3


def test_held_out_edits_are_visible_and_cover_every_kind():
    items = held_out_edits(6, size=(128, 96), min_pixels=20)
    assert [k for _, k, _ in items] == list(EDIT_KINDS)
    assert all(lay.seed >= HELD_OUT_SEED for lay, _, _ in items)
    for lay, kind, tr in items:
        truth = render_moved(lay, tr, 128, 96)
        for name, t in tr.items():
            if not t.is_identity():
                assert truth.masks[name].sum() >= 20, f"{kind}: {name} hidden"


def test_regions_partition_the_image():
    lay = random_layout(HELD_OUT_SEED)
    tr = world_edit(lay, "move", seed=1)
    src = layout_scene(lay, 128, 96)
    truth = render_moved(lay, tr, 128, 96)
    reg = edit_regions({o.name: o.mask for o in src.objects}, truth.masks, set(tr), src.photo, truth.photo)
    total = sum(m.astype(int) for m in reg.values())
    assert (total == 1).all()
    assert reg["object"].any() and reg["revealed"].any()
    # the ground truth scores perfectly against itself; the unedited photo does not on the object
    perfect = region_scores(truth.photo, truth.photo, reg)
    assert all(v[0] == 99.0 and v[1] == pytest.approx(1.0) for k, v in perfect.items() if reg[k].any())
    assert region_scores(src.photo, truth.photo, reg)["object"][0] < 30.0


def test_psnr_and_ssim_known_values():
    a = np.full((32, 32, 3), 100, np.uint8)
    b = a + 5
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    assert math.isnan(psnr(a, b, np.zeros((32, 32), bool)))
    rng = np.random.default_rng(0)
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert ssim_map(a, a).mean() == pytest.approx(1.0)
    assert ssim_map(noisy, a).mean() < 0.5
