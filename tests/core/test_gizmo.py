"""Gizmo picking and drag math (pure, no Qt). Expected values come from the pinhole model worked
out by hand in each test (focal length from the field of view), not from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import gizmo as gz
from core.camera import Camera
from core.transform import Transform3D
from core.viewcam import OrbitCamera

W, H, FOV = 640, 448, 55.0
F = (W / 2) / math.tan(math.radians(FOV / 2))  # focal length in pixels, by hand
PIVOT = np.array([0.4, -0.3, 3.0])


def photo_view() -> OrbitCamera:
    return OrbitCamera.from_photo(Camera(W, H, FOV), target_depth=3.0)


def screen_of(view, p):
    return np.array(view.project_point(p))


def arrow_point(view, pose, axis, frac=0.6):
    return screen_of(view, pose.centre + pose.axes[:, axis] * pose.length * frac)


# ------------------------------------------------------------------ pose and hits


def test_gizmo_has_constant_screen_size():
    view = photo_view()
    for z in (1.0, 3.0, 9.0):
        pivot = np.array([0.1, 0.05, z])
        pose = gz.gizmo_pose(pivot, Transform3D(), "local", view)
        tip = screen_of(view, pose.centre + pose.axes[:, 0] * pose.length)
        c = screen_of(view, pose.centre)
        assert np.linalg.norm(tip - c) == pytest.approx(gz.GIZMO_SIZE_PX, rel=1e-6)
        assert pose.length == pytest.approx(gz.GIZMO_SIZE_PX * z / F)


def test_gizmo_sits_at_pivot_plus_translation():
    view = photo_view()
    t = Transform3D(translation=(0.2, 0.1, -0.5))
    pose = gz.gizmo_pose(PIVOT, t, "local", view)
    np.testing.assert_allclose(pose.centre, PIVOT + [0.2, 0.1, -0.5])


def test_pick_each_move_handle():
    view = photo_view()
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    c = screen_of(view, pose.centre)
    assert gz.pick_handle("move", pose, view, *c) == gz.Handle("screen")
    assert gz.pick_handle("move", pose, view, *arrow_point(view, pose, 0)) == gz.Handle("axis", 0)
    assert gz.pick_handle("move", pose, view, *arrow_point(view, pose, 1)) == gz.Handle("axis", 1)
    # 5 px beside the X arrow still hits it, 30 px beside does not
    assert gz.pick_handle("move", pose, view, *(arrow_point(view, pose, 0) + [0, 5])) == gz.Handle("axis", 0)
    assert gz.pick_handle("move", pose, view, *(arrow_point(view, pose, 0) + [0, 30])) is None
    # the XY square (normal Z) between the X and Y arrows
    sq = screen_of(view, pose.centre + (pose.axes[:, 0] + pose.axes[:, 1]) * pose.length * 0.38)
    assert gz.pick_handle("move", pose, view, *sq) == gz.Handle("plane", 2)
    assert gz.pick_handle("move", pose, view, 5.0, 5.0) is None


def test_handles_seen_end_on_are_hidden():
    view = photo_view()
    pivot = np.array([0.0, 0.0, 3.0])  # on the optical axis: Z points at the viewer
    pose = gz.gizmo_pose(pivot, Transform3D(), "local", view)
    assert not gz.handle_visible(gz.Handle("axis", 2), pose, view)
    assert not gz.handle_visible(gz.Handle("plane", 0), pose, view)  # YZ plane edge-on
    assert gz.handle_visible(gz.Handle("plane", 2), pose, view)
    assert gz.Handle("axis", 2) not in gz.handle_distances("move", pose, view, 320, 224)


def test_pick_rings_trackball_and_scale():
    view = photo_view()
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    c = screen_of(view, pose.centre)
    # the Z ring faces the camera: a circle of ~GIZMO_SIZE_PX around the centre (perspective:
    # take a ring point exactly)
    on_ring = screen_of(view, pose.centre + pose.axes[:, 0] * pose.length * math.cos(0.3) + pose.axes[:, 1] * pose.length * math.sin(0.3))
    assert gz.pick_handle("rotate", pose, view, *on_ring) == gz.Handle("ring", 2)
    # inside the circle away from all rings: trackball
    inside = c + [gz.GIZMO_SIZE_PX * 0.35, -gz.GIZMO_SIZE_PX * 0.5]
    assert gz.pick_handle("rotate", pose, view, *inside) == gz.Handle("trackball")
    assert gz.pick_handle("rotate", pose, view, *(c + [3 * gz.GIZMO_SIZE_PX, 0])) is None
    assert gz.pick_handle("scale", pose, view, *(c + [gz.GIZMO_SIZE_PX, 0])) == gz.Handle("scale")
    assert gz.pick_handle("scale", pose, view, *(c + [10, 10])) == gz.Handle("scale")
    assert gz.pick_handle("scale", pose, view, *(c + [2 * gz.GIZMO_SIZE_PX, 0])) is None


def test_bad_mode_and_frame_are_rejected():
    view = photo_view()
    with pytest.raises(ValueError):
        gz.gizmo_pose(PIVOT, Transform3D(), "world", view)
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    with pytest.raises(ValueError):
        gz.pick_handle("squash", pose, view, 0, 0)


# ------------------------------------------------------------------ move


@pytest.mark.parametrize("n_px", [1.0, 25.0, -60.0, 140.0])
def test_dragging_x_arrow_by_n_pixels_moves_n_pixels_at_the_pivot_depth(n_px):
    view = photo_view()
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    x, y = arrow_point(view, pose, 0)
    drag = gz.GizmoDrag(gz.Handle("axis", 0), view, x, y, PIVOT, Transform3D(), "local")
    t = drag.update(x + n_px, y)
    np.testing.assert_allclose(t.t, [n_px * PIVOT[2] / F, 0.0, 0.0], atol=1e-9)
    assert t.scale == 1.0 and t.rotation == (1.0, 0.0, 0.0, 0.0)
    # vertical mouse motion does not move along X
    t2 = drag.update(x + n_px, y + 40)
    assert t2.t[0] == pytest.approx(n_px * PIVOT[2] / F, abs=1e-6)
    np.testing.assert_allclose(t2.t[1:], 0.0, atol=1e-12)


def test_axis_drag_adds_to_the_start_translation():
    view = photo_view()
    start = Transform3D(translation=(0.1, 0.2, 0.3), rotation=(1, 0, 0, 0), scale=1.5)
    pose = gz.gizmo_pose(PIVOT, start, "camera", view)
    x, y = arrow_point(view, pose, 1)
    drag = gz.GizmoDrag(gz.Handle("axis", 1), view, x, y, PIVOT, start, "camera")
    t = drag.update(x, y + 30)
    z = PIVOT[2] + 0.3
    np.testing.assert_allclose(t.t, [0.1, 0.2 + 30 * z / F, 0.3], atol=1e-9)
    assert t.scale == 1.5


def test_plane_drag_moves_in_the_plane():
    view = photo_view()
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    sq = screen_of(view, pose.centre + (pose.axes[:, 0] + pose.axes[:, 1]) * pose.length * 0.38)
    drag = gz.GizmoDrag(gz.Handle("plane", 2), view, *sq, PIVOT, Transform3D(), "local")
    t = drag.update(sq[0] + 40, sq[1] - 25)
    np.testing.assert_allclose(t.t, [40 * PIVOT[2] / F, -25 * PIVOT[2] / F, 0.0], atol=1e-9)


def test_plane_drag_in_depth_from_a_side_view():
    # look from above (pitch 60): the XZ plane (normal Y) faces the viewer enough to drag in depth
    view = photo_view()
    view.orbit(0, 200, deg_per_px=0.3)
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    sq = screen_of(view, pose.centre + (pose.axes[:, 2] + pose.axes[:, 0]) * pose.length * 0.38)
    drag = gz.GizmoDrag(gz.Handle("plane", 1), view, *sq, PIVOT, Transform3D(), "local")
    t = drag.update(sq[0] + 10, sq[1] - 50)
    assert t.t[1] == pytest.approx(0.0, abs=1e-9)
    assert abs(t.t[2]) > 0.05  # moved in depth


@settings(max_examples=40, deadline=None)
@given(
    yaw=st.floats(-170, 170),
    pitch=st.floats(-70, 70),
    dx=st.floats(-150, 150),
    dy=st.floats(-150, 150),
)
def test_screen_drag_keeps_the_gizmo_under_the_mouse(yaw, pitch, dx, dy):
    view = photo_view()
    view.yaw, view.pitch = yaw, pitch
    start = Transform3D(translation=(0.05, 0.0, -0.2))
    pose = gz.gizmo_pose(PIVOT, start, "local", view)
    c = screen_of(view, pose.centre)
    grab = c + [3.0, -2.0]  # inside the free-move disc
    drag = gz.GizmoDrag(gz.Handle("screen"), view, *grab, PIVOT, start, "local")
    t = drag.update(grab[0] + dx, grab[1] + dy)
    np.testing.assert_allclose(screen_of(view, PIVOT + t.t), c + [dx, dy], atol=1e-6)
    # moved parallel to the screen: the view depth of the centre is unchanged
    assert float((PIVOT + t.t - view.eye) @ view.forward) == pytest.approx(float((pose.centre - view.eye) @ view.forward))


# ------------------------------------------------------------------ rotate


def ring_screen_point(view, pose, axis, angle_rad):
    a, b = ((1, 2), (2, 0), (0, 1))[axis]
    p = pose.centre + pose.length * (math.cos(angle_rad) * pose.axes[:, a] + math.sin(angle_rad) * pose.axes[:, b])
    return screen_of(view, p)


def test_ring_drag_by_90_degrees_gives_90_degrees():
    view = photo_view()
    start = Transform3D(translation=(0.1, 0.0, 0.0))
    pose = gz.gizmo_pose(PIVOT, start, "local", view)
    p0 = ring_screen_point(view, pose, 2, 0.0)  # on +X
    p1 = ring_screen_point(view, pose, 2, math.pi / 2)  # on +Y
    drag = gz.GizmoDrag(gz.Handle("ring", 2), view, *p0, PIVOT, start, "local")
    t = drag.update(*p1)
    axis, angle = t.axis_angle()
    assert angle == pytest.approx(90.0, abs=1e-6)
    np.testing.assert_allclose(axis, [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(t.R @ [1, 0, 0], [0, 1, 0], atol=1e-9)  # +X turned onto +Y
    np.testing.assert_allclose(t.t, start.t, atol=1e-12)  # turns in place


def test_ring_drag_accumulates_past_180_degrees():
    view = photo_view()
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    drag = gz.GizmoDrag(gz.Handle("ring", 2), view, *ring_screen_point(view, pose, 2, 0.0), PIVOT, Transform3D(), "local")
    for deg in range(10, 271, 10):
        t = drag.update(*ring_screen_point(view, pose, 2, math.radians(deg)))
    expected = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], dtype=float)  # 270 deg about +Z
    np.testing.assert_allclose(t.R, expected, atol=1e-9)
    assert drag._angle == pytest.approx(math.radians(270))


def test_edge_on_ring_turns_with_tangent_motion():
    # from the photo camera a pivot on the optical axis sees the X ring edge-on
    view = photo_view()
    pivot = np.array([0.0, 0.0, 3.0])
    pose = gz.gizmo_pose(pivot, Transform3D(), "local", view)
    grab = ring_screen_point(view, pose, 0, math.pi / 2 + 0.35)  # near the front of the X ring (toward -Z)
    grab_on_line = screen_of(
        view, pose.centre + pose.length * (math.cos(math.pi / 2 + 0.35) * pose.axes[:, 1] + math.sin(math.pi / 2 + 0.35) * pose.axes[:, 2])
    )
    np.testing.assert_allclose(grab, grab_on_line)
    drag = gz.GizmoDrag(gz.Handle("ring", 0), view, *grab, pivot, Transform3D(), "local")
    assert drag._hit0 is None and drag._ring_tangent is not None
    t = drag.update(grab[0], grab[1] + 30)
    axis, angle = t.axis_angle()
    assert angle > 5.0
    assert abs(abs(axis[0]) - 1.0) < 1e-9  # about X only


def test_rotation_is_about_the_gizmo_centre():
    view = photo_view()
    start = Transform3D.from_axis_angle((0, 1, 0), 20.0, translation=(0.3, -0.1, 0.4), scale=1.2)
    pose = gz.gizmo_pose(PIVOT, start, "camera", view)
    drag = gz.GizmoDrag(gz.Handle("ring", 2), view, *ring_screen_point(view, pose, 2, 0.0), PIVOT, start, "camera")
    t = drag.update(*ring_screen_point(view, pose, 2, math.radians(40)))
    pts = PIVOT + np.random.default_rng(0).normal(0, 0.3, (20, 3))
    moved_before = start.apply(pts, PIVOT)
    c = PIVOT + start.t
    Rz = Transform3D.from_axis_angle((0, 0, 1), 40.0).R
    expected = (moved_before - c) @ Rz.T + c
    np.testing.assert_allclose(t.apply(pts, PIVOT), expected, atol=1e-9)


def test_trackball_front_follows_the_mouse():
    view = photo_view()
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    c = screen_of(view, pose.centre)
    grab = c + [20.0, 30.0]
    drag = gz.GizmoDrag(gz.Handle("trackball"), view, *grab, PIVOT, Transform3D(), "local")
    t = drag.update(grab[0] + gz.GIZMO_SIZE_PX * math.pi / 6, grab[1])  # 30 degrees
    axis, angle = t.axis_angle()
    assert angle == pytest.approx(30.0, abs=1e-6)
    np.testing.assert_allclose(axis, [0, -1, 0], atol=1e-9)  # about -down
    front = PIVOT - [0, 0, 0.5]
    assert t.apply(front, PIVOT)[0] > front[0]  # the front point moved right


# ------------------------------------------------------------------ scale


def test_scale_by_screen_distance_ratio():
    view = photo_view()
    start = Transform3D(translation=(0.0, 0.1, 0.2), scale=2.0)
    pose = gz.gizmo_pose(PIVOT, start, "local", view)
    c = screen_of(view, pose.centre)
    grab = c + [60.0, 0.0]
    drag = gz.GizmoDrag(gz.Handle("scale"), view, *grab, PIVOT, start, "local")
    t = drag.update(c[0] + 90.0, c[1])
    assert t.scale == pytest.approx(3.0)
    np.testing.assert_allclose(t.t, start.t, atol=1e-12)
    t = drag.update(c[0], c[1] - 30.0)
    assert t.scale == pytest.approx(1.0)


# ------------------------------------------------------------------ snapping, cancel, frames


def test_snapping_steps():
    view = photo_view()
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    x, y = arrow_point(view, pose, 0)
    drag = gz.GizmoDrag(gz.Handle("axis", 0), view, x, y, PIVOT, Transform3D(), "local")
    n = 0.237 * F / PIVOT[2]  # pixels for 0.237 units
    assert drag.update(x + n, y, snap=True).t[0] == pytest.approx(0.2)
    assert drag.update(x + n, y, snap=False).t[0] == pytest.approx(0.237)

    rdrag = gz.GizmoDrag(gz.Handle("ring", 2), view, *ring_screen_point(view, pose, 2, 0.0), PIVOT, Transform3D(), "local")
    t = rdrag.update(*ring_screen_point(view, pose, 2, math.radians(50)), snap=True)
    assert t.axis_angle()[1] == pytest.approx(45.0)
    t = rdrag.update(*ring_screen_point(view, pose, 2, math.radians(53)), snap=True)
    assert t.axis_angle()[1] == pytest.approx(60.0)

    c = screen_of(view, pose.centre)
    sdrag = gz.GizmoDrag(gz.Handle("scale"), view, c[0] + 50, c[1], PIVOT, Transform3D(), "local")
    assert sdrag.update(c[0] + 66.0, c[1], snap=True).scale == pytest.approx(1.3)
    assert sdrag.update(c[0] + 66.0, c[1], snap=False).scale == pytest.approx(1.32)


def test_cancel_returns_the_start_transform():
    view = photo_view()
    start = Transform3D.from_axis_angle((1, 1, 0), 33.0, translation=(0.1, 0.2, 0.3), scale=0.8)
    pose = gz.gizmo_pose(PIVOT, start, "local", view)
    x, y = arrow_point(view, pose, 0)
    h = gz.pick_handle("move", pose, view, x, y)
    assert h is not None and h.kind == "axis"
    drag = gz.GizmoDrag(h, view, x, y, PIVOT, start, "local")
    moved = drag.update(x + 80, y + 5)
    assert moved != start
    assert drag.cancel() == start
    assert drag.current == start


def test_local_versus_camera_frame():
    view = photo_view()
    start = Transform3D.from_axis_angle((0, 0, 1), 90.0)  # local X = world +Y
    local = gz.gizmo_pose(PIVOT, start, "local", view)
    np.testing.assert_allclose(local.axes[:, 0], [0, 1, 0], atol=1e-12)
    cam = gz.gizmo_pose(PIVOT, start, "camera", view)
    np.testing.assert_allclose(cam.axes, np.eye(3))

    # local X arrow points down on screen; dragging it down moves along world +Y
    x, y = arrow_point(view, local, 0)
    assert gz.pick_handle("move", local, view, x, y) == gz.Handle("axis", 0)
    d = gz.GizmoDrag(gz.Handle("axis", 0), view, x, y, PIVOT, start, "local")
    t = d.update(x, y + 50)
    np.testing.assert_allclose(t.t, [0.0, 50 * PIVOT[2] / F, 0.0], atol=1e-9)
    # camera X arrow points right and moves along world +X
    x, y = arrow_point(view, cam, 0)
    d = gz.GizmoDrag(gz.Handle("axis", 0), view, x, y, PIVOT, start, "camera")
    t = d.update(x + 50, y)
    np.testing.assert_allclose(t.t, [50 * PIVOT[2] / F, 0.0, 0.0], atol=1e-9)
    # a local ring turns about the object's own axis
    d = gz.GizmoDrag(gz.Handle("ring", 2), view, *ring_screen_point(view, local, 2, 0.0), PIVOT, start, "local")
    t = d.update(*ring_screen_point(view, local, 2, math.radians(30)))
    assert t.axis_angle()[1] == pytest.approx(120.0)  # 90 + 30 about the shared Z


def test_gizmo_geometry_colours_hover_and_active():
    view = photo_view()
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "local", view)
    g = gz.gizmo_geometry("move", pose, view)
    assert g.lines.shape[1:] == (2, 3) and len(g.lines) == len(g.line_colors)
    assert g.triangles.shape[1:] == (3, 3) and len(g.triangles) == len(g.triangle_colors)
    hov = gz.gizmo_geometry("move", pose, view, hover=gz.Handle("axis", 0))
    assert np.any(np.all(np.isclose(hov.line_colors[:, :3], gz.HOVER_COLOR), axis=1))
    assert not np.any(np.all(np.isclose(g.line_colors[:, :3], gz.HOVER_COLOR), axis=1))
    act = gz.gizmo_geometry("move", pose, view, active=gz.Handle("axis", 0))
    assert len(act.lines) == 1 and len(act.triangles) == 24  # shaft + cone only
    rot = gz.gizmo_geometry("rotate", pose, view)
    assert len(rot.lines) >= 3 * 72


def test_where_rings_cross_the_ring_facing_the_viewer_wins():
    view = photo_view()
    pose = gz.gizmo_pose(PIVOT, Transform3D(), "camera", view)
    # +X of the gizmo lies on both the Z ring (facing the camera) and the Y ring (edge-on)
    p = screen_of(view, pose.centre + pose.axes[:, 0] * pose.length)
    d = gz.handle_distances("rotate", pose, view, *p)
    assert d[gz.Handle("ring", 1)] < 1.0 and d[gz.Handle("ring", 2)] < 1.0
    assert gz.pick_handle("rotate", pose, view, *p) == gz.Handle("ring", 2)
    # also a pixel or two off, on the edge-on ring's side
    assert gz.pick_handle("rotate", pose, view, *(p + [0.0, -1.5])) == gz.Handle("ring", 2)
