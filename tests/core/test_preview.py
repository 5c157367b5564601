"""The live geometric preview against the sample scene's ray-traced ground truth, and its parts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from core.camera import Camera
from core.geometry import warp
from core.preview import push_pull_fill, render_preview
from core.sample import STAGE_TO_CAM, render_sample, sample_scene
from core.scene import Scene, SceneObject
from core.transform import Transform3D

# stage directions in the camera frame: sideways, back along the floor, up
SIDE = STAGE_TO_CAM @ np.array([1.0, 0.0, 0.0])
BACK = STAGE_TO_CAM @ np.array([0.0, 0.0, 1.0])
VERTICAL = STAGE_TO_CAM @ np.array([0.0, -1.0, 0.0])

# Thresholds (mean absolute error over RGB, 0-255, on the pixels both the preview and the ground
# truth give to the object, eroded by one pixel so that silhouette aliasing does not count):
# * moves that keep the orientation (translate, scale, move closer) only resample the photo: the
#   sun is directional, so Lambert shading does not change; what remains is bilinear blur of the
#   hard checker/stripe edges (a few edge pixels at up to ~100 levels) and cast shadows of other
#   objects -> measured 1.7-2.3, threshold 6 (about 2.5 %);
# * a rotation turns the faces against the sun: the ground truth's shading changes by up to
#   ~0.1 of the albedo on a face (~15-25 levels) while the preview keeps the photo's -> measured
#   ~6.5, threshold 12.
MOVES = {
    "translate": ("box", Transform3D(translation=tuple(0.6 * SIDE + 0.3 * BACK)), 6.0, 0.93),
    "rotate": ("box", Transform3D.from_axis_angle(tuple(VERTICAL), 20.0), 12.0, 0.93),
    "scale_2x": ("sphere", Transform3D(scale=2.0), 6.0, 0.95),
    "closer": ("box", Transform3D(translation=tuple(-2.0 * BACK + 0.3 * SIDE)), 6.0, 0.95),
}


@pytest.fixture(scope="module")
def sample():
    return sample_scene()


def test_identity_preview_is_the_photo(sample):
    r = render_preview(sample)
    np.testing.assert_array_equal(r.image, sample.photo)
    assert not r.hole.any() and r.plan.is_identity


@pytest.mark.parametrize("move", sorted(MOVES))
def test_preview_matches_the_ground_truth_render(sample, move):
    name, transform, max_err, min_iou = MOVES[move]
    scene = sample_scene()
    scene.object(name).transform = transform
    result = render_preview(scene)
    gt = render_sample({name: transform})
    k = [o.name for o in scene.objects].index(name)
    pred = result.plan.target_object == k
    truth = gt.masks[name]
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou >= min_iou, f"{move}: silhouette IoU {iou:.3f}"
    inner = ndi.binary_erosion(pred & truth)
    err = np.abs(result.image.astype(np.int16) - gt.photo.astype(np.int16)).mean(axis=-1)
    assert err[inner].mean() <= max_err, f"{move}: mean error {err[inner].mean():.2f} inside the object"
    # no cracks: no hole pixel inside the ground-truth silhouette (2 px in from its border)
    interior = ndi.binary_erosion(truth, iterations=2)
    if move != "rotate":
        assert not (result.hole & interior).any(), f"{move}: {int((result.hole & interior).sum())} hole pixels inside"
    else:
        # a rotation may uncover a face the photo never saw; the part the photo saw has no cracks
        seen = ndi.binary_fill_holes(pred)
        np.testing.assert_array_equal(seen, pred)
    # the edited depth inside the object is the ground truth's depth
    dz = np.abs(result.plan.edited_depth - gt.depth) / gt.depth
    assert np.median(dz[inner]) < 1e-3
    # outside the changed region, the preview is the photo bit for bit
    np.testing.assert_array_equal(result.image[~result.plan.changed], scene.photo[~result.plan.changed])


def test_object_moved_behind_the_wall_disappears_like_the_ground_truth():
    scene = sample_scene()
    t = Transform3D(translation=tuple(6.0 * BACK))
    scene.object("sphere").transform = t
    r = render_preview(scene)
    assert not render_sample({"sphere": t}).masks["sphere"].any()
    assert not (r.plan.target_object == 1).any()
    np.testing.assert_array_equal(r.hole, r.plan.extras["removed"])


def test_holes_are_filled_from_the_background_only():
    h, w = 96, 128
    depth = np.full((h, w), 8.0, np.float32)
    m = np.zeros((h, w), bool)
    m[30:70, 20:60] = True
    depth[m] = 3.0
    photo = np.zeros((h, w, 3), np.uint8)
    photo[..., 1] = 200  # green background
    photo[m] = (255, 0, 0)  # red object
    s = Scene(photo=photo, depth=depth, camera=Camera(w, h), objects=[SceneObject("o", m)])
    s.objects[0].transform = Transform3D(translation=(60 * 3.0 / s.camera.focal, 0.0, 0.0))
    r = render_preview(s)
    assert r.hole.sum() > 1000
    hole_px = r.image[r.hole]
    assert hole_px[:, 0].max() == 0 and (hole_px[:, 1] == 200).all()  # no red leaks into the hole
    obj_px = r.image[r.plan.target_object == 0]
    assert (obj_px == (255, 0, 0)).all()  # and no green into the moved object


def test_push_pull_fill_keeps_known_pixels_and_fills_smoothly():
    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx, yy, 0.5 * xx + 10], axis=-1)
    known = np.ones((h, w), bool)
    known[20:40, 30:60] = False
    out = push_pull_fill(np.where(known[..., None], img, 1e6), known)
    np.testing.assert_array_equal(out[known], img[known])
    assert np.isfinite(out).all()
    # the filled values stay within the range of the known neighbourhood and follow the gradient
    hole = ~known
    assert out[hole][:, 0].min() >= 25 and out[hole][:, 0].max() <= 65
    assert out[30, 35, 0] < out[30, 55, 0]
    const = push_pull_fill(np.full((h, w, 3), 7.0, np.float32), known)
    np.testing.assert_allclose(const, 7.0, atol=1e-4)


def test_preview_plan_argument_is_used(sample):
    scene = sample_scene()
    scene.object("cylinder").transform = Transform3D(translation=(-0.3, 0.0, 0.0))
    p = warp.plan(scene)
    r = render_preview(scene, p)
    assert r.plan is p
    np.testing.assert_array_equal(r.hole, p.hole)
