"""The built-in sample scene: exact depth and masks, moved renders, shading and shadows."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from core.sample import (
    FLOOR_Y,
    OBJECT_NAMES,
    SPHERE_CENTRE,
    SPHERE_RADIUS,
    STAGE_TO_CAM,
    WALL_Z,
    render_sample,
    sample_pivots,
    sample_scene,
)
from core.transform import Transform3D


@pytest.fixture(scope="module")
def scene():
    return sample_scene()


def test_sample_scene_shapes_and_objects(scene):
    assert scene.photo.shape == (448, 640, 3) and scene.photo.dtype == np.uint8
    assert scene.depth.shape == (448, 640) and np.isfinite(scene.depth).all() and (scene.depth > 0).all()
    assert (scene.camera.width, scene.camera.height, scene.camera.fov_deg) == (640, 448, 55.0)
    assert [o.name for o in scene.objects] == list(OBJECT_NAMES)
    assert scene.prompt
    masks = [o.mask for o in scene.objects]
    for m in masks:
        assert 3000 < m.sum() < 0.2 * m.size
    assert not (masks[0] & masks[1]).any() and not (masks[1] & masks[2]).any() and not (masks[0] & masks[2]).any()
    # distinct colours per object
    means = [scene.photo[m].reshape(-1, 3).mean(axis=0) for m in masks]
    assert min(np.abs(means[i] - means[j]).max() for i in range(3) for j in range(i + 1, 3)) > 40
    assert all(o.transform.is_identity() for o in scene.objects)


def test_depth_is_exact_z_depth(scene):
    pts = scene.camera.unproject_depth(scene.depth)
    stage = pts @ STAGE_TO_CAM  # camera frame -> level stage frame
    background = ~np.any([o.mask for o in scene.objects], axis=0)
    floor = background & (np.abs(stage[..., 1] - FLOOR_Y) < 1e-3)
    wall = background & (np.abs(stage[..., 2] - WALL_Z) < 1e-3)
    # every background pixel is on the floor or the wall, to float32 precision
    assert (floor | wall)[background].mean() > 0.999
    assert floor.sum() > 50000 and wall.sum() > 30000
    # the sphere's pixels lie on the sphere (tessellated with 48 segments: < 1.5 mm from it)
    centre = np.asarray(SPHERE_CENTRE)
    r = np.linalg.norm(stage[scene.object("sphere").mask] - centre, axis=-1)
    np.testing.assert_allclose(r, SPHERE_RADIUS, atol=1.5e-3)


def test_identity_render_is_the_scene(scene):
    r = render_sample({})
    np.testing.assert_array_equal(r.photo, scene.photo)
    np.testing.assert_array_equal(r.depth, scene.depth)
    for o in scene.objects:
        np.testing.assert_array_equal(r.masks[o.name], o.mask)


def test_moved_render_uses_the_scene_pivot(scene):
    pivots = sample_pivots()
    for o in scene.objects:
        np.testing.assert_allclose(pivots[o.name], scene.pivot(o), rtol=1e-12)
    # a sideways move shifts the silhouette by about t f / Z
    t = 0.4
    r = render_sample({"sphere": Transform3D(translation=(t, 0.0, 0.0))})
    m0, m1 = scene.object("sphere").mask, r.masks["sphere"]
    x0 = np.nonzero(m0)[1].mean()
    x1 = np.nonzero(m1)[1].mean()
    z = scene.pivot(scene.object("sphere"))[2]
    assert x1 - x0 == pytest.approx(t * scene.camera.focal / z, rel=0.1)
    assert r.masks["box"].sum() == scene.object("box").mask.sum()


def test_texture_moves_with_the_object(scene):
    # move the cylinder sideways by exactly 20 px at its pivot depth: its stripes come along
    z = sample_pivots()["cylinder"][2]
    t = 20 * z / scene.camera.focal
    r = render_sample({"cylinder": Transform3D(translation=(t, 0.0, 0.0))})
    m = scene.object("cylinder").mask
    rows, cols = np.nonzero(m)
    inside = (cols + 20 < 640) & r.masks["cylinder"][rows, np.minimum(cols + 20, 639)]
    a = scene.photo[rows[inside], cols[inside]].astype(int)
    b = r.photo[rows[inside], cols[inside] + 20].astype(int)
    assert np.median(np.abs(a - b)) <= 4


def test_cast_shadows_follow_the_object(scene):
    # take the box out of view: floor pixels it shadowed get brighter, nothing gets darker
    r = render_sample({"box": Transform3D(translation=(-30.0, 0.0, 0.0))})
    assert not r.masks["box"].any()
    bg = ~np.any([o.mask for o in scene.objects], axis=0)
    diff = r.photo.astype(int).sum(-1) - scene.photo.astype(int).sum(-1)
    brighter = bg & (diff > 30)
    assert brighter.sum() > 500
    assert not (bg & (diff < -3)).any()
    # a lit floor pixel is brighter than its shadowed self by the diffuse term only (ambient stays)
    ratio = scene.photo[brighter].astype(float).sum(-1) / r.photo[brighter].astype(float).sum(-1)
    assert 0.3 < np.median(ratio) < 0.8


def test_non_square_and_bad_sizes():
    s = sample_scene(256, 384)
    assert s.photo.shape == (384, 256, 3) and all(o.mask.any() for o in s.objects)
    with pytest.raises(InputError):
        sample_scene(8, 8)
    with pytest.raises(InputError, match="no object 'teapot'"):
        render_sample({"teapot": Transform3D()})
