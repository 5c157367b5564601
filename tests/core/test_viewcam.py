"""The viewport's orbit camera: photo pose, projections, rays and navigation (pure math)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.camera import Camera
from core.viewcam import OrbitCamera

finite = dict(allow_nan=False, allow_infinity=False)


def _points(rng, n=200, zmin=0.5, zmax=20.0):
    z = rng.uniform(zmin, zmax, n)
    return np.stack([rng.uniform(-1, 1, n) * z, rng.uniform(-0.7, 0.7, n) * z, z], axis=1)


@settings(max_examples=40, deadline=None)
@given(
    w=st.integers(64, 1200),
    h=st.integers(64, 1200),
    fov=st.floats(20.0, 100.0, **finite),
    seed=st.integers(0, 2**31 - 1),
)
def test_reset_to_photo_projects_like_the_photo_camera(w, h, fov, seed):
    cam = Camera(w, h, fov)
    view = OrbitCamera.from_photo(cam, target_depth=3.0)
    p = _points(np.random.default_rng(seed))
    x0, y0, z0 = cam.project(p)
    x1, y1, z1 = view.project(p)
    np.testing.assert_allclose(x1, x0, atol=1e-6)
    np.testing.assert_allclose(y1, y0, atol=1e-6)
    np.testing.assert_allclose(z1, z0, atol=1e-9)
    np.testing.assert_allclose(view.eye, 0.0, atol=1e-12)
    np.testing.assert_allclose(view.forward, [0, 0, 1], atol=1e-12)


def test_reset_to_photo_letterboxes_in_another_viewport_size():
    cam = Camera(640, 448, 55.0)
    view = OrbitCamera.from_photo(cam, size=(800, 800), target_depth=2.0)
    k = 800 / 640  # the width limits
    p = _points(np.random.default_rng(1))
    x0, y0, _ = cam.project(p)
    x1, y1, _ = view.project(p)
    np.testing.assert_allclose(x1, (x0 - 320) * k + 400, atol=1e-6)
    np.testing.assert_allclose(y1, (y0 - 224) * k + 400, atol=1e-6)


def _random_view(seed) -> OrbitCamera:
    rng = np.random.default_rng(seed)
    view = OrbitCamera(
        target=rng.uniform(-1, 1, 3) + [0, 0, 4],
        distance=float(rng.uniform(1, 8)),
        yaw=float(rng.uniform(-180, 180)),
        pitch=float(rng.uniform(-80, 80)),
        fov_deg=float(rng.uniform(30, 90)),
        size=(int(rng.integers(100, 900)), int(rng.integers(100, 900))),
    )
    view.set_bounds([-5, -5, 0], [5, 5, 12])
    return view


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_axes_are_orthonormal_and_right_handed(seed):
    v = _random_view(seed)
    R = v.rotation
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.cross(v.right, v.down), v.forward, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), x=st.floats(0, 1, **finite), y=st.floats(0, 1, **finite), depth=st.floats(0.2, 30, **finite))
def test_ray_and_unproject_invert_project(seed, x, y, depth):
    v = _random_view(seed)
    sx, sy = x * v.size[0], y * v.size[1]
    p = v.unproject(sx, sy, depth)
    px, py = v.project_point(p)
    assert px == pytest.approx(sx, abs=1e-6) and py == pytest.approx(sy, abs=1e-6)
    r = v.ray(sx, sy)
    # the point lies on the ray through its pixel
    u = float((p - r.origin) @ r.direction)
    np.testing.assert_allclose(r.at(u), p, atol=1e-9 * max(1.0, depth))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_projection_matrix_agrees_with_project(seed):
    v = _random_view(seed)
    rng = np.random.default_rng(seed)
    p = v.eye + v.forward * rng.uniform(1, 6, (50, 1)) + rng.uniform(-0.5, 0.5, (50, 3))
    clip = np.c_[p, np.ones(len(p))] @ v.view_projection().T
    ndc = clip[:, :3] / clip[:, 3:4]
    w, h = v.size
    x_gl = (ndc[:, 0] + 1) / 2 * w
    y_img = h - (ndc[:, 1] + 1) / 2 * h  # GL window y is up
    px, py, z = v.project(p)
    np.testing.assert_allclose(x_gl, px, atol=1e-6)
    np.testing.assert_allclose(y_img, py, atol=1e-6)
    near, far = v.clip_range()
    inside = (z > near) & (z < far)
    assert np.all(np.abs(ndc[inside, 2]) <= 1 + 1e-9)


def test_clip_range_encloses_the_bounds():
    v = _random_view(3)
    v.set_bounds([-2, -1, 1], [2, 1, 9])
    near, far = v.clip_range()
    lo, hi = v.bounds
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    depth = (corners - v.eye) @ v.forward
    assert far >= depth.max()
    assert near <= max(depth.min(), near) and near > 0


def test_orbit_keeps_distance_and_turns_towards_right():
    v = OrbitCamera.from_photo(Camera(640, 480), target_depth=4.0)
    target = v.target.copy()
    v.orbit(100, 0, deg_per_px=0.3)
    assert v.yaw == pytest.approx(30.0)
    np.testing.assert_allclose(np.linalg.norm(v.eye - target), 4.0)
    # the eye went to the left (-X) so the scene turns right with the mouse
    assert v.eye[0] < 0
    v.orbit(0, 10_000)
    assert v.pitch == pytest.approx(89.0)


def test_pan_moves_the_target_plane_with_the_mouse():
    v = _random_view(11)
    before = v.project_point(v.target)
    t0 = v.target.copy()
    v.pan(37.0, -12.0)
    after = v.project_point(t0)
    assert after[0] - before[0] == pytest.approx(37.0, abs=1e-6)
    assert after[1] - before[1] == pytest.approx(-12.0, abs=1e-6)


def test_zoom_towards_the_cursor_keeps_the_point_under_it():
    v = _random_view(5)
    anchor = (v.size[0] * 0.2, v.size[1] * 0.7)
    p = v.unproject(*anchor, v.distance)
    d0 = v.distance
    v.zoom(0.5, anchor=anchor)
    assert v.distance == pytest.approx(d0 * 0.5)
    np.testing.assert_allclose(v.project_point(p), anchor, atol=1e-6)
    with pytest.raises(ValueError):
        v.zoom(0.0)


def test_dolly_moves_eye_and_target_together():
    v = _random_view(8)
    e0, t0 = v.eye.copy(), v.target.copy()
    v.dolly(1.5)
    np.testing.assert_allclose(v.eye - e0, 1.5 * v.forward)
    np.testing.assert_allclose(v.target - t0, 1.5 * v.forward)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_frame_bounds_fits_the_box(seed):
    v = _random_view(seed)
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-3, 3, 3) + [0, 0, 5]
    hi = lo + rng.uniform(0.05, 4, 3)
    v.frame_bounds(lo, hi, margin=1.0)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    x, y, z = v.project(corners)
    assert np.all(z > 0)
    assert np.all((x >= -1e-6) & (x <= v.size[0] + 1e-6) & (y >= -1e-6) & (y <= v.size[1] + 1e-6))
    # tight: the box's bounding sphere touches the narrower half field of view
    half = math.atan(min(v.size) / 2 / v.focal)
    assert v.distance == pytest.approx(np.linalg.norm(hi - lo) / 2 / math.sin(half))


def test_pixel_size_at_depth():
    cam = Camera(640, 480, 60.0)
    v = OrbitCamera.from_photo(cam)
    f = 320 / math.tan(math.radians(30))
    assert v.pixel_size_at([0.3, 0.1, 5.0]) == pytest.approx(5.0 / f)
