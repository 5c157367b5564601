"""Geometry: lift, Laplace fill, warp plans (splatting, z-buffer, occlusion), feature correspondences."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi

from core.camera import Camera
from core.errors import InputError
from core.geometry import fill, warp
from core.geometry.lift import lift_scene, object_index_map
from core.scene import Scene, SceneObject
from core.transform import Transform3D

REPO = Path(__file__).resolve().parents[2]


def make_scene(w=192, h=128, wall=10.0, objects=(("a", (40, 80, 50, 100), 4.0),), seed=0) -> Scene:
    """Fronto-parallel wall at depth ``wall`` with fronto-parallel rectangles (rows r0:r1, cols c0:c1) at depth z."""
    rng = np.random.default_rng(seed)
    depth = np.full((h, w), wall, np.float32)
    objs = []
    for name, (r0, r1, c0, c1), z in objects:
        m = np.zeros((h, w), bool)
        m[r0:r1, c0:c1] = True
        depth[m] = z
        objs.append(SceneObject(name, m))
    photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Scene(photo=photo, depth=depth, camera=Camera(w, h), objects=objs)


def shown(plan, k=0):
    return plan.target_object == k


# ---------------------------------------------------------------------------------------------- lift


def test_lift_points_colours_and_ownership():
    s = make_scene(objects=(("a", (10, 60, 10, 60), 4.0), ("b", (40, 90, 40, 120), 3.0)))
    lifted = lift_scene(s)
    np.testing.assert_allclose(lifted.points, s.camera.unproject_depth(s.depth), rtol=1e-6)
    assert lifted.points.dtype == np.float32 and lifted.points.shape == (128, 192, 3)
    np.testing.assert_allclose(lifted.colors * 255.0, s.photo, atol=1e-3)
    # the overlap belongs to the object listed last
    assert lifted.object_index[50, 50] == 1 and lifted.object_index[20, 20] == 0 and lifted.object_index[0, 0] == -1
    np.testing.assert_array_equal(object_index_map(s), lifted.object_index)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_lift_rejects_invalid_depth(bad):
    s = make_scene()
    s.depth[5, 7] = bad
    with pytest.raises(InputError, match="row 5, column 7"):
        lift_scene(s)


# ---------------------------------------------------------------------------------------------- fill


def test_laplace_fill_reproduces_linear_ramp_and_keeps_the_outside():
    h, w = 60, 80
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = 0.37 * xx - 1.3 * yy + 5.0
    region = np.zeros((h, w), bool)
    region[10:30, 12:40] = True  # two components, one of them not convex
    region[35:55, 50:75] = True
    region[35:45, 50:60] = False
    values = ramp.copy()
    values[region] = np.random.default_rng(0).normal(size=int(region.sum())) * 100.0
    out = fill.laplace_fill(values, region)
    np.testing.assert_allclose(out[region], ramp[region], atol=1e-9)
    np.testing.assert_array_equal(out[~region], values[~region])


def test_guided_fill_keeps_the_guide_shape_and_meets_the_border():
    h, w = 50, 70
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    guide = np.sin(xx / 5.0) * np.cos(yy / 7.0)
    offset = 0.2 * xx + 0.1 * yy + 3.0  # the photo's values differ from the guide by an affine function
    region = np.zeros((h, w), bool)
    region[12:40, 15:55] = True
    values = guide + offset
    corrupted = values.copy()
    corrupted[region] = 0.0
    out = fill.laplace_fill(corrupted, region, guide=guide)
    np.testing.assert_allclose(out[region], values[region], atol=1e-9)
    np.testing.assert_array_equal(out[~region], corrupted[~region])


@pytest.mark.parametrize("guided", [False, True])
def test_a_large_fill_component_is_solved_by_multigrid_as_exactly_as_directly(monkeypatch, guided):
    """Above DIRECT_MAX unknowns the fill runs multigrid-preconditioned CG (issue 8: SuperLU took
    1.4 GB for a million unknowns): the same fill as the direct solve, to 1e-8, planes included,
    on a region that touches the image border and holds a known island."""
    h, w = 90, 120
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(1)
    guide = np.sin(xx / 6.0) * np.cos(yy / 9.0) + 2.0 if guided else None
    values = 0.02 * xx - 0.03 * yy + 5.0 + (guide if guided else 0.0) + rng.normal(size=(h, w)) * 0.01
    region = np.zeros((h, w), bool)
    region[5:90, 0:100] = True  # touches the left and bottom borders
    region[40:50, 40:55] = False  # an island of known pixels inside
    region[20:30, 100:110] = True  # a second, small component (next to the first)
    exact = fill.laplace_fill(values, region, guide=guide)
    monkeypatch.setattr(fill, "DIRECT_MAX", 300)
    monkeypatch.setattr(fill, "COARSEST", 40)
    big = fill.laplace_fill(values, region, guide=guide)
    np.testing.assert_allclose(big[region], exact[region], rtol=1e-8)
    np.testing.assert_array_equal(big[~region], values[~region])
    inner = region.copy()  # a plane comes back exactly where the border is known all round
    inner[:8, :], inner[85:, :], inner[:, :8] = False, False, False
    ramp = 0.37 * xx - 1.3 * yy + 150.0
    np.testing.assert_allclose(fill.laplace_fill(np.where(inner, 0.0, ramp), inner)[inner], ramp[inner], rtol=1e-8)


def test_a_million_pixel_fill_stays_small_and_fast():
    """A 1000x1000 region with a thin known border, as a 1024 px scene with an object over most of
    the photo has: under 700 MB and 20 s of CPU (the direct solve: 1.35 GB, 7 s)."""
    code = textwrap.dedent(
        """
        import time  # peak memory from VmHWM: ru_maxrss inherits the parent's peak across vfork + exec
        import numpy as np
        from core.geometry import fill
        h = w = 1024
        yy, xx = np.mgrid[0:h, 0:w]
        values = 0.25 + 0.0002 * xx - 0.0001 * yy  # a plane: its fill is itself
        region = np.zeros((h, w), bool)
        region[12:-12, 12:-12] = True
        t = time.process_time()
        out = fill.laplace_fill(values, region)
        err = float(np.max(np.abs(out - values) / values))
        print([int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] // 1024, time.process_time() - t, err)
        """
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    rss_mb, cpu_s, err = res.stdout.split()
    assert int(rss_mb) < 700 and float(cpu_s) < 20 and float(err) < 1e-6, res.stdout


def _plane_scene(w=160, h=112):
    """A slanted plane (disparity affine in the pixel coordinates) with a dome-shaped object in front."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    disparity = 0.1 + 0.15 * yy / h + 0.03 * xx / w
    plane = (1.0 / disparity).astype(np.float32)
    d2 = ((yy - 60) ** 2 + (xx - 70) ** 2) / 25.0**2
    mask = d2 < 1.0
    depth = plane.copy()
    depth[mask] = (2.0 - 0.5 * np.sqrt(1 - d2[mask])).astype(np.float32)
    photo = np.full((h, w, 3), 128, np.uint8)
    return Scene(photo=photo, depth=depth, camera=Camera(w, h), objects=[SceneObject("dome", mask)]), plane


def test_background_depth_restores_a_plane_behind_the_object_and_is_cached():
    fill.clear_cache()
    s, plane = _plane_scene()
    bg = fill.background_depth(s)
    region = fill.fill_region([s.objects[0].mask], s.depth.shape)
    assert region.sum() > s.objects[0].mask.sum()  # dilated
    np.testing.assert_allclose(bg[region], plane[region], rtol=1e-5)
    np.testing.assert_array_equal(bg[~region], s.depth[~region])
    assert fill.background_depth(s) is bg  # cached: the same array, not a new solve
    s2, _ = _plane_scene()
    assert fill.background_depth(s2) is bg  # keyed by content, not by object identity
    s2.objects[0].mask = ndi.binary_erosion(s2.objects[0].mask, iterations=3)
    assert fill.background_depth(s2) is not bg


def test_background_depth_prefers_a_known_background():
    fill.clear_cache()
    s, plane = _plane_scene()
    h, w = plane.shape
    yy, xx = np.mgrid[0:h, 0:w]
    # the true background has a bump behind the object that no harmonic fill could guess
    bump = 1.0 / (1.0 / plane + 0.05 * np.exp(-((yy - 60) ** 2 + (xx - 70) ** 2) / 150.0) * (((yy - 60) ** 2 + (xx - 70) ** 2) < 28**2))
    truth = np.where(((yy - 60) ** 2 + (xx - 70) ** 2) < 28**2, bump, plane).astype(np.float32)
    region = fill.fill_region([s.objects[0].mask], s.depth.shape)
    s.depth[~region] = truth[~region]
    plain = fill.background_depth(s).copy()
    s.background_depth = truth
    guided = fill.background_depth(s)
    np.testing.assert_allclose(guided[region], truth[region], rtol=1e-5)
    assert np.abs(plain[region] - truth[region]).max() > 1e-2
    with pytest.raises(InputError):
        s.background_depth = truth[:-1]
        fill.background_depth(s)


# ---------------------------------------------------------------------------------------------- warp


def test_identity_plan_is_exact():
    s = make_scene(objects=(("a", (40, 80, 50, 100), 4.0), ("b", (20, 50, 120, 170), 6.0)))
    p = warp.plan(s)
    np.testing.assert_array_equal(p.edited_depth, s.depth)
    np.testing.assert_array_equal(p.background_depth, s.depth)
    assert not p.hole.any() and not p.changed.any() and p.is_identity
    assert np.isnan(p.src_x).all() and np.isnan(p.src_y).all()
    np.testing.assert_array_equal(p.target_object, object_index_map(s))
    for f in p.flows:
        assert not f.moved and f.visible.all()
        np.testing.assert_array_equal(f.tgt_x, f.src_cols + 0.5)
        np.testing.assert_array_equal(f.tgt_y, f.src_rows + 0.5)
        np.testing.assert_array_equal(f.tgt_z, s.depth[f.src_rows, f.src_cols])


def test_near_identity_splat_reproduces_the_input():
    # a scale of 1 + 1e-7 is not the identity, so this goes through projection, footprints and z-buffer
    s = make_scene()
    s.objects[0].transform = Transform3D(scale=1.0 + 1e-7)
    p = warp.plan(s)
    m = s.objects[0].mask
    # the only hole is the ring grown around the old silhouette (its edge pixels go with the object)
    assert not (p.hole & m).any()
    assert not (p.hole & ~ndi.binary_dilation(m, structure=np.ones((3, 3), bool), iterations=warp.ring_px(m.shape))).any()
    np.testing.assert_array_equal(shown(p), m)
    np.testing.assert_allclose(p.edited_depth, s.depth, rtol=1e-5)
    jj, ii = np.meshgrid(np.arange(192) + 0.5, np.arange(128) + 0.5)
    np.testing.assert_allclose(p.src_x[m], jj[m], atol=1e-3)
    np.testing.assert_allclose(p.src_y[m], ii[m], atol=1e-3)
    assert np.isnan(p.src_x[~m]).all()
    f = p.flows[0]
    assert f.moved and f.visible.all()
    np.testing.assert_allclose(f.tgt_x, f.src_cols + 0.5, atol=1e-3)


@pytest.mark.parametrize("t", [0.25, -0.6])
def test_sideways_translation_moves_by_t_f_over_z(t):
    z = 4.0
    s = make_scene()
    s.objects[0].transform = Transform3D(translation=(t, 0.0, 0.0))
    p = warp.plan(s)
    f = p.flows[0]
    expected = t * s.camera.focal / z
    np.testing.assert_allclose(f.tgt_x - (f.src_cols + 0.5), expected, atol=1e-4)
    np.testing.assert_allclose(f.tgt_y - (f.src_rows + 0.5), 0.0, atol=1e-4)
    np.testing.assert_allclose(f.tgt_z, z, rtol=1e-6)
    cols = np.nonzero(shown(p).any(axis=0))[0]
    # the silhouette spans the pixels whose centres lie in [50 + e, 100 + e], give or take the
    # footprint overlap of FOOTPRINT_SLACK pixels
    slack = warp.FOOTPRINT_SLACK + 1e-6
    assert 50 + expected - slack <= cols.min() + 0.5 < 50 + expected + 1
    assert 100 + expected - 1 < cols.max() + 0.5 <= 100 + expected + slack
    assert shown(p).sum() == pytest.approx(s.objects[0].mask.sum(), rel=0.03)


@pytest.mark.parametrize("tz", [2.0, -1.5])
def test_translation_in_depth_scales_the_image_by_z_over_z_plus_tz(tz):
    z = 4.0
    s = make_scene()
    s.objects[0].transform = Transform3D(translation=(0.0, 0.0, tz))
    p = warp.plan(s)
    f = p.flows[0]
    k = z / (z + tz)
    cam = s.camera
    np.testing.assert_allclose(f.tgt_x - cam.cx, (f.src_cols + 0.5 - cam.cx) * k, atol=1e-4)
    np.testing.assert_allclose(f.tgt_y - cam.cy, (f.src_rows + 0.5 - cam.cy) * k, atol=1e-4)
    sil = shown(p)
    rows = np.nonzero(sil.any(axis=1))[0]
    cols = np.nonzero(sil.any(axis=0))[0]
    assert cols.max() - cols.min() + 1 == pytest.approx(50 * k, abs=1.01)
    assert rows.max() - rows.min() + 1 == pytest.approx(40 * k, abs=1.01)
    assert sil.sum() == pytest.approx(2000 * k * k, rel=0.06)
    np.testing.assert_allclose(p.edited_depth[sil], z + tz, rtol=1e-5)


@pytest.mark.parametrize(
    "transform",
    [
        Transform3D(scale=2.0),
        Transform3D(translation=(0.0, 0.0, -2.0)),
        Transform3D.from_axis_angle((0.0, 1.0, 0.0), 50.0, scale=1.7),
        Transform3D.from_axis_angle((1.0, 1.0, 0.2), 35.0, translation=(0.2, 0.1, -1.0)),
    ],
)
def test_moved_silhouette_has_no_cracks(transform):
    s = make_scene(objects=(("a", (44, 84, 66, 126), 4.0),))
    s.objects[0].transform = transform
    p = warp.plan(s)
    sil = shown(p)
    assert sil.sum() > 1000
    np.testing.assert_array_equal(ndi.binary_fill_holes(sil), sil)
    # the plane's projected area, from the moved corners' footprint, matches the covered pixels
    f = p.flows[0]
    assert np.isfinite(f.tgt_x).all() and f.visible.mean() > 0.99


@pytest.mark.parametrize("transform", [Transform3D.from_axis_angle((1.0, 1.0, 0.2), 35.0, translation=(0.2, 0.1, -1.0)), Transform3D(scale=2.5)])
def test_footprints_expanded_in_chunks_give_the_same_plan(monkeypatch, transform):
    """Points are projected and splatted FOOTPRINT_CHUNK at a time and lifted in bands of
    LIFT_CHUNK pixels (the per-point state and the candidate temporaries of an object over a
    2048 px photo stay bounded): chunks of 97 points and bands of two rows give the plan of one
    pass, bit for bit."""
    s = make_scene(objects=(("a", (44, 84, 66, 126), 4.0),))
    yy, xx = np.mgrid[44:84, 66:126]
    s.depth[44:84, 66:126] = 4.0 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 5.0)  # curved: every tangent differs
    s.objects[0].transform = transform
    whole = warp.plan(s)
    warp.clear_cache()
    monkeypatch.setattr(warp, "FOOTPRINT_CHUNK", 97)
    monkeypatch.setattr(warp, "LIFT_CHUNK", 150)  # the object is 60 pixels wide: bands of 2 rows
    chunked = warp.plan(s)
    for name in ("edited_depth", "hole", "target_object", "src_x", "src_y"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)
    for name in ("tgt_x", "tgt_y", "tgt_z", "visible"):
        np.testing.assert_array_equal(getattr(chunked.flows[0], name), getattr(whole.flows[0], name), err_msg=name)
    np.testing.assert_array_equal(chunked.extras["jacobian"][0], whole.extras["jacobian"][0])


def test_scale_two_quadruples_the_area():
    s = make_scene(objects=(("a", (44, 84, 66, 126), 4.0),))
    s.objects[0].transform = Transform3D(scale=2.0)
    p = warp.plan(s)
    assert shown(p).sum() == pytest.approx(4 * 2400, rel=0.03)


@pytest.mark.parametrize("a_first", [True, False])
def test_zbuffer_nearest_surface_wins(a_first):
    a = ("a", (40, 80, 20, 70), 4.0)
    b = ("b", (40, 80, 120, 170), 6.0)
    s = make_scene(objects=(a, b) if a_first else (b, a))
    ka, kb = (0, 1) if a_first else (1, 0)
    # move a right and b left so that they overlap in the image; b stays behind a
    s.objects[ka].transform = Transform3D(translation=(60 * 4.0 / s.camera.focal, 0.0, 0.0))
    s.objects[kb].transform = Transform3D(translation=(-30 * 6.0 / s.camera.focal, 0.0, 0.0))
    p = warp.plan(s)
    both = np.zeros_like(p.hole)
    both[40:80, 90:130] = True  # a now covers cols 80:130, b covers 90:140
    assert (p.target_object[both] == ka).all()
    np.testing.assert_allclose(p.edited_depth[both], 4.0, rtol=1e-5)
    assert (p.target_object[40:80, 131:140] == kb).all()
    fb = p.flows[kb]
    behind = (fb.tgt_x < 129.5) & (fb.tgt_x > 90.5)
    assert behind.any() and not fb.visible[behind].any()


def test_object_moved_behind_the_background_disappears():
    s = make_scene(wall=6.0, objects=(("a", (40, 80, 50, 100), 3.0),))
    for t in [(0.0, 0.0, 5.0), (0.0, 0.0, 1.0 + 3.0), (1.0, 0.3, 4.0)]:
        s.objects[0].transform = Transform3D(translation=t)
        p = warp.plan(s)
        assert not shown(p).any(), t
        assert not p.flows[0].visible.any()
        np.testing.assert_array_equal(p.hole, p.extras["removed"])
    # just in front of the wall it stays visible
    s.objects[0].transform = Transform3D(translation=(0.0, 0.0, 2.8))
    assert shown(warp.plan(s)).sum() > 500


def test_object_moved_behind_a_static_object_is_hidden_there():
    s = make_scene(objects=(("front", (30, 90, 90, 150), 3.0), ("back", (40, 80, 20, 60), 5.0)))
    s.objects[1].transform = Transform3D(translation=(70 * 5.0 / s.camera.focal, 0.0, 0.0))  # now at cols 90:130
    p = warp.plan(s)
    assert (p.target_object[30:90, 90:150] == 0).all()  # the static front object still shows
    assert not (p.target_object == 1).any()
    assert not p.flows[1].visible.any()


def test_points_behind_the_camera_are_dropped():
    s = make_scene()
    s.objects[0].transform = Transform3D(translation=(0.0, 0.0, -10.0))
    p = warp.plan(s)
    f = p.flows[0]
    assert np.isnan(f.tgt_x).all() and np.isnan(f.tgt_z).all() and not f.visible.any()
    assert not shown(p).any()
    np.testing.assert_array_equal(p.hole, p.extras["removed"])


def test_off_screen_points_are_dropped_not_clamped():
    s = make_scene()
    w = s.camera.width
    # entirely off to the right: a clamping splatter would paint the last column
    s.objects[0].transform = Transform3D(translation=(200 * 4.0 / s.camera.focal, 0.0, 0.0))
    p = warp.plan(s)
    assert not shown(p).any()
    assert np.isnan(p.flows[0].tgt_x).all()
    np.testing.assert_array_equal(p.edited_depth[:, -1], s.depth[:, -1])
    # half off: the visible part is exact, the rest is dropped
    shift = 120  # cols 50:100 -> 170:220, the image ends at 192
    s.objects[0].transform = Transform3D(translation=(shift * 4.0 / s.camera.focal, 0.0, 0.0))
    p = warp.plan(s)
    sil = shown(p)
    assert sil[:, 170:].all(axis=1)[40:80].all() and not sil[:, :169].any()
    assert sil[:, -1].sum() == 40  # one pixel per object row, not a smear
    f = p.flows[0]
    off = f.src_cols + shift >= w
    assert np.isnan(f.tgt_x[off]).all() and not f.visible[off].any() and f.visible[~off].all()


def test_hidden_object_is_removed():
    s = make_scene()
    s.objects[0].visible = False
    p = warp.plan(s)
    assert not shown(p).any()
    assert p.hole[s.objects[0].mask].all()
    np.testing.assert_allclose(p.edited_depth[s.objects[0].mask], 10.0, rtol=1e-5)  # filled wall
    assert p.flows[0].moved and not p.flows[0].visible.any()


def test_hole_and_changed_masks():
    s = make_scene()
    shift = 20
    s.objects[0].transform = Transform3D(translation=(shift * 4.0 / s.camera.focal, 0.0, 0.0))
    p = warp.plan(s)
    old = s.objects[0].mask
    new = shown(p)
    removed = p.extras["removed"]
    assert old.sum() < removed.sum() <= ndi.binary_dilation(old, iterations=warp.ring_px(old.shape) + 1).sum()
    np.testing.assert_array_equal(p.hole, removed & ~new)
    np.testing.assert_array_equal(p.changed, removed | new)
    assert p.hole[40:80, 51:69].all() and not p.hole[40:80, 71:99].any()
    np.testing.assert_allclose(p.edited_depth[p.hole], 10.0, rtol=1e-5)  # hole depth: the filled wall


# ---------------------------------------------------------------------------------------------- features


@pytest.mark.parametrize("factor", [8, 16, 32])
def test_feature_correspondence_identity_non_square(factor):
    s = make_scene(w=320, h=192, objects=(("a", (40, 100, 50, 130), 4.0),))
    p = warp.plan(s)
    fc = warp.feature_correspondence(p, factor)
    assert fc.shape == (192 // factor, 320 // factor)
    o = fc.objects[0]
    np.testing.assert_allclose(o["tgt_xy"], o["src_cells"][:, ::-1] + 0.5, atol=1e-6)
    cover = np.zeros(fc.shape)
    np.add.at(cover, (s.objects[0].mask.nonzero()[0] // factor, s.objects[0].mask.nonzero()[1] // factor), 1.0)
    np.testing.assert_allclose(o["weight"], cover[tuple(o["src_cells"].T)] / factor**2, atol=1e-6)
    assert fc.background.all() and not fc.fg_src.any() and not fc.hole.any()


def test_feature_correspondence_translation_in_cells():
    s = make_scene(w=320, h=192, objects=(("a", (40, 104, 48, 128), 4.0),))
    s.objects[0].transform = Transform3D(translation=(32 * 4.0 / s.camera.focal, 0.0, 0.0))  # 32 px right
    p = warp.plan(s)
    fc = warp.feature_correspondence(p, 8, margin=1)
    o = fc.objects[0]
    np.testing.assert_allclose(o["tgt_xy"], o["src_cells"][:, ::-1] + 0.5 + [4.0, 0.0], atol=1e-3)
    assert np.allclose(o["weight"], 1.0)
    assert fc.fg_src[5:13, 6:16].all() and fc.fg_src.sum() == 8 * 10
    assert fc.fg_tgt[5:13, 10:20].all() and fc.fg_tgt.sum() == 8 * 10
    assert fc.hole[5:13, 6:10].all() and not fc.hole[5:13, 11:20].any()
    changed = fc.fg_src | fc.fg_tgt | fc.hole
    assert not (fc.background & ndi.binary_dilation(changed, structure=np.ones((3, 3), bool))).any()
    assert fc.background[0, 0] and fc.background[-1, -1] and fc.background.sum() > 0.5 * fc.background.size


def test_feature_correspondence_sizes_that_are_not_multiples():
    s = make_scene(w=100, h=70, objects=(("a", (10, 30, 10, 40), 4.0),))
    s.objects[0].transform = Transform3D(translation=(0.1, 0.0, 0.0))
    fc = warp.feature_correspondence(warp.plan(s), 32)
    assert fc.shape == (3, 4) and fc.background.shape == (3, 4)
    with pytest.raises(InputError):
        warp.feature_correspondence(warp.plan(s), 0)


def test_scene_plan_sample_pivot_is_scene_pivot():
    s = make_scene()
    s.objects[0].transform = Transform3D.from_axis_angle((0, 0, 1), 90.0)
    p = warp.plan(s)
    f = p.flows[0]
    # a 90 degree turn in the image plane about the centroid keeps the centroid's pixel
    c = s.pivot(s.objects[0])
    u, v, _ = s.camera.project(c)
    assert np.nanmean(f.tgt_x) == pytest.approx(float(u), abs=0.05)
    assert np.nanmean(f.tgt_y) == pytest.approx(float(v), abs=0.05)
    sil = shown(p)
    rows = np.nonzero(sil.any(axis=1))[0]
    cols = np.nonzero(sil.any(axis=0))[0]
    assert cols.max() - cols.min() + 1 == pytest.approx(40, abs=1) and rows.max() - rows.min() + 1 == pytest.approx(50, abs=1)


# ---------------------------------------------------------------------------------------------- photogen


def test_photogen_plans_are_sensible(photogen_dir):
    from core.dhformat import load_dh_scene

    folders = sorted(p for p in photogen_dir.iterdir() if (p / "input.png").is_file())
    assert folders
    for folder in folders:
        s = load_dh_scene(folder)
        n = int(s.objects[0].mask.sum())
        for name in sorted(s.variants):
            s.apply_variant(name)
            p = warp.plan(s)
            where = f"{folder.name}/{name}"
            removed = p.extras["removed"]
            assert np.isfinite(p.edited_depth).all() and (p.edited_depth > 0).all(), where
            if p.is_identity:
                assert not p.hole.any() and not p.changed.any(), where
                continue
            assert not (p.hole & ~removed).any(), where
            assert (p.changed >= (p.hole | shown(p))).all(), where
            f = p.flows[0]
            on = np.isfinite(f.tgt_x)
            if on.mean() > 0.95:
                # on screen and in front: the object shows, most of it visible, covering about its
                # projected size
                assert f.visible.mean() > 0.3, where
                tr = s.objects[0].transform
                if tr.axis_angle()[1] > 45:  # turned edge-on: the area says nothing
                    continue
                zr = np.nanmedian(s.depth[f.src_rows, f.src_cols] / f.tgt_z)
                expected = n * (tr.scale * zr) ** 2
                assert shown(p).sum() > 0.3 * expected, where
                assert p.hole.sum() < removed.sum() or shown(p).sum() > 0, where
            else:
                assert shown(p).sum() <= n * 4, where
