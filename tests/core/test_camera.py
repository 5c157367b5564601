"""Pinhole camera: projection round trips, field of view, frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.camera import Camera, cam_to_dh, dh_to_cam


@pytest.mark.parametrize("size", [(512, 512), (640, 448), (448, 640), (100, 37)])
def test_unproject_then_project_returns_every_pixel(size):
    w, h = size
    cam = Camera(w, h)
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.3, 50.0, size=(h, w))
    pts = cam.unproject_depth(depth)
    x, y, z = cam.project(pts)
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    np.testing.assert_array_equal(np.floor(x).astype(int), jj)
    np.testing.assert_array_equal(np.floor(y).astype(int), ii)
    np.testing.assert_allclose(x, jj + 0.5, atol=1e-9)
    np.testing.assert_allclose(y, ii + 0.5, atol=1e-9)
    np.testing.assert_allclose(z, depth, rtol=1e-12)


@pytest.mark.parametrize("size", [(512, 512), (640, 448), (448, 640)])
@pytest.mark.parametrize("fov", [30.0, 55.0, 90.0])
def test_edge_and_corner_rays_match_the_field_of_view(size, fov):
    w, h = size
    cam = Camera(w, h, fov)
    # the field of view spans the larger side, edge to edge
    long_is_w = w >= h
    a = cam.unproject(np.array(0.0 if long_is_w else cam.cx), np.array(cam.cy if long_is_w else 0.0), np.array(1.0))
    b = cam.unproject(np.array(float(w) if long_is_w else cam.cx), np.array(cam.cy if long_is_w else float(h)), np.array(1.0))
    angle = math.degrees(math.acos(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)))
    assert angle == pytest.approx(fov, abs=1e-9)
    # the shorter side sees 2 atan(tan(fov/2) * short/long)
    short, long = min(w, h), max(w, h)
    c = cam.unproject(np.array(cam.cx if long_is_w else 0.0), np.array(0.0 if long_is_w else cam.cy), np.array(1.0))
    half_short = math.degrees(math.atan2(np.linalg.norm(c[:2]), c[2]))
    assert 2 * half_short == pytest.approx(2 * math.degrees(math.atan(math.tan(math.radians(fov / 2)) * short / long)), abs=1e-9)
    # the corner ray of the pixel grid: the unit ray of pixel (0, 0) points up-left (-x, -y)
    d = cam.ray_directions()
    assert d[0, 0, 0] < 0 and d[0, 0, 1] < 0 and d[-1, -1, 0] > 0 and d[-1, -1, 1] > 0
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-12)


def test_points_behind_the_camera_project_to_nan():
    cam = Camera(64, 32)
    x, y, z = cam.project(np.array([[0.1, 0.2, -1.0], [0.0, 0.0, 0.0], [0.1, 0.1, 2.0]]))
    assert np.isnan(x[:2]).all() and np.isnan(y[:2]).all()
    assert np.isfinite(x[2]) and np.isfinite(y[2])


def test_dh_frame_is_image_left_and_up():
    cam = Camera(64, 64)
    right_down = cam.unproject(np.array(60.0), np.array(60.0), np.array(2.0))  # right of and below the centre
    dh = cam_to_dh(right_down)
    assert dh[0] < 0 and dh[1] < 0 and dh[2] == pytest.approx(2.0)
    np.testing.assert_allclose(dh_to_cam(dh), right_down)


def test_bad_camera_is_rejected():
    with pytest.raises(ValueError):
        Camera(0, 10)
    with pytest.raises(ValueError):
        Camera(10, 10, 180.0)


finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    w=st.integers(8, 2048),
    h=st.integers(8, 2048),
    fov=st.floats(10.0, 150.0),
    x=finite,
    y=finite,
    z=st.floats(0.01, 1000.0),
)
def test_project_unproject_property(w, h, fov, x, y, z):
    cam = Camera(w, h, fov)
    p = np.array([x, y, z])
    u, v, zz = cam.project(p)
    back = cam.unproject(u, v, zz)
    np.testing.assert_allclose(back, p, rtol=1e-9, atol=1e-9 * (1 + abs(x) + abs(y)))
    # projecting a point scaled along its ray gives the same pixel
    u2, v2, _ = cam.project(2.5 * p)
    assert u2 == pytest.approx(float(u), rel=1e-9, abs=1e-7) and v2 == pytest.approx(float(v), rel=1e-9, abs=1e-7)
