"""PointCloudView on a real GL context (Xvfb + llvmpipe in `make test`).

Ground truth comes from outside the view: the sample's own photo, its ray-cast render of moved
objects (core.sample.render_sample) and the pinhole focal length worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.gl

W, H, FOV = 640, 448, 55.0
F = (W / 2) / math.tan(math.radians(FOV / 2))  # focal length in pixels, by hand
CLEAR = np.array([33, 34, 38])  # the view's background colour (0.13, 0.135, 0.15) in 8 bits


def to_array(img) -> np.ndarray:
    from PySide6.QtGui import QImage

    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    buf = np.frombuffer(img.constBits(), np.uint8).reshape(h, img.bytesPerLine())[:, : w * 3]
    return buf.reshape(h, w, 3).astype(np.int32)


def make_view(qtbot, scene, size=(W, H)):
    from viewport.view import PointCloudView

    v = PointCloudView()
    qtbot.addWidget(v)
    v.resize(*size)
    v.show()
    qtbot.waitExposed(v)
    assert (v.width(), v.height()) == size, "the window manager changed the widget size"
    v.set_scene(scene)
    v.grabFramebuffer()
    assert v.gl_error() is None, v.gl_error()
    assert v.context() is not None and v.context().isValid()
    return v


@pytest.fixture
def scene():
    from core.sample import sample_scene

    return sample_scene(W, H, FOV)


@pytest.fixture
def view(gl_context_info, qtbot, scene):
    return make_view(qtbot, scene)


def obj(scene, name):
    return scene.object(name)


def qpoint(p):
    from PySide6.QtCore import QPoint

    return QPoint(int(round(p[0])), int(round(p[1])))


def press(v, p, button=None, mods=None):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    QTest.mousePress(v, button or Qt.MouseButton.LeftButton, mods or Qt.KeyboardModifier.NoModifier, qpoint(p))


def move(v, p):
    from PySide6.QtTest import QTest

    QTest.mouseMove(v, qpoint(p))


def release(v, p, button=None, mods=None):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    QTest.mouseRelease(v, button or Qt.MouseButton.LeftButton, mods or Qt.KeyboardModifier.NoModifier, qpoint(p))


def recorder(v, write=True):
    """The view's signals, logged; with ``write`` also applied to the scene as the editor's
    document model does (the view itself never writes a transform)."""
    if write:
        starts = {}

        def preview(i, t):
            o = v.scene().object_by_id(i)
            starts.setdefault(i, o.transform)
            o.transform = t

        def commit(i, _old, new):
            starts.pop(i, None)
            v.scene().object_by_id(i).transform = new

        def cancel(i):
            if i in starts:
                v.scene().object_by_id(i).transform = starts.pop(i)

        v.transformPreview.connect(preview)
        v.transformCommitted.connect(commit)
        v.dragCancelled.connect(cancel)
    log = {"preview": [], "commit": [], "cancel": [], "picked": []}
    v.transformPreview.connect(lambda i, t: log["preview"].append((i, t)))
    v.transformCommitted.connect(lambda i, a, b: log["commit"].append((i, a, b)))
    v.dragCancelled.connect(lambda i: log["cancel"].append(i))
    v.objectPicked.connect(lambda i: log["picked"].append(i))
    return log


def arrow_screen(v, axis, frac=0.6):
    pose = v.gizmo_pose()
    return np.array(v.camera.project_point(pose.centre + pose.axes[:, axis] * pose.length * frac))


# --------------------------------------------------------------------------- drawing


def test_draws_the_sample_like_the_photo(view, scene, gl_context_info):
    img = to_array(view.grabFramebuffer())
    assert img.shape == (H, W, 3)
    drawn = np.any(np.abs(img - CLEAR) > 2, axis=2)
    assert drawn.mean() > 0.99, f"only {drawn.mean():.1%} of the pixels show points ({gl_context_info})"
    centre = (slice(H // 8, H - H // 8), slice(W // 8, W - W // 8))
    err = np.abs(img[centre] - scene.photo[centre].astype(np.int32)).mean()
    assert err < 2.0, f"mean colour error {err:.2f} through the photo's camera"
    # every object shows its own colours where its mask is
    for o in scene.objects:
        e = np.abs(img[o.mask] - scene.photo[o.mask].astype(np.int32)).mean()
        assert e < 2.0, f"{o.name}: mean colour error {e:.2f}"


def test_other_viewport_size_letterboxes_the_photo_without_gaps(gl_context_info, qtbot, scene):
    v = make_view(qtbot, scene, size=(800, 600))
    img = to_array(v.grabFramebuffer())
    k = min(800 / W, 600 / H)  # 1.25: the width limits; the photo fills 800 x 560 centred
    ys, xs = np.mgrid[0:600, 0:800]
    px = np.floor((xs + 0.5 - 400) / k + W / 2).astype(int)
    py = np.floor((ys + 0.5 - 300) / k + H / 2).astype(int)
    inside = (px >= 2) & (px < W - 2) & (py >= 2) & (py < H - 2)
    expected = scene.photo[np.clip(py, 0, H - 1), np.clip(px, 0, W - 1)].astype(np.int32)
    gaps = np.all(np.abs(img - CLEAR) <= 2, axis=2) & inside
    assert gaps.mean() / inside.mean() < 0.005, "holes between points when the view is larger than the photo"
    err = np.abs(img[inside] - expected[inside]).mean()
    assert err < 10.0, f"mean colour error {err:.2f} in a letterboxed view"
    outside = (ys < 300 - H * k / 2) | (ys >= 300 + H * k / 2)  # rows 0-19 and 580-599
    assert np.all(np.abs(img[outside] - CLEAR) <= 2), "points drawn outside the photo's letterbox"


def test_selection_is_tinted_and_orbit_then_home_restores_the_photo(view, scene):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    box = obj(scene, "box")
    view.set_selected(box.id)
    img = to_array(view.grabFramebuffer())
    # tinted towards orange: more red than green than blue relative to the photo
    diff = (img[box.mask] - scene.photo[box.mask].astype(np.int32)).mean(axis=0)
    assert diff[0] > diff[2] + 20, f"selection tint missing: {diff}"
    view.set_selected(None)
    # orbit with a left drag on empty space (nothing selected)
    start = np.array([W * 0.8, H * 0.2])
    press(view, start)
    for i in range(1, 6):
        move(view, start + [12 * i, 6 * i])
    release(view, start + [60, 30])
    assert view.camera.yaw != 0.0 and view.camera.pitch != 0.0
    orbited = to_array(view.grabFramebuffer())
    assert np.abs(orbited - scene.photo.astype(np.int32)).mean() > 10
    QTest.keyClick(view, Qt.Key.Key_Home)
    back = to_array(view.grabFramebuffer())
    assert np.abs(back - scene.photo.astype(np.int32)).mean() < 2.0


def test_the_picture_at_rest_is_kept_and_any_change_draws_it_again(view, scene):
    """At rest a frame that changes nothing in the cloud's picture (a hovered handle, an exposed
    window) copies the kept picture instead of drawing 250k points: the same pixels as a frame
    drawn from scratch, and every change to what the picture shows draws it again."""
    from core.transform import Transform3D

    def frame():
        return to_array(view.grabFramebuffer())

    def from_scratch():
        view.cache_at_rest = False
        try:
            return frame()
        finally:
            view.cache_at_rest = True

    first = frame()
    n = view.cached_frames
    again = frame()
    assert view.cached_frames == n + 1, "a frame at rest that changed nothing drew the cloud again"
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(again, from_scratch())
    box, ball = obj(scene, "box"), obj(scene, "sphere")

    def move_box():
        box.transform = Transform3D.from_axis_angle((0.0, 1.0, 0.0), 20.0, translation=(0.2, 0.0, 0.0))
        view.refresh_object(box.id)

    def hide_ball():
        ball.visible = False
        view.refresh_object(ball.id)

    changes = [
        ("a transform", move_box),
        ("a hole mask", lambda: view.set_hole_mask(box.mask)),
        ("the selection", lambda: view.set_selected(box.id)),
        ("a hidden object", hide_ball),
        ("the camera", lambda: view.camera.orbit(15.0, 5.0)),
        ("the point size", lambda: view.set_point_size(3.0)),
        ("the point size again", lambda: view.set_point_size(None)),
        ("the camera back", view.reset_camera),
    ]
    for name, change in changes:
        before = frame()
        change()
        n = view.cached_frames
        img = frame()
        assert view.cached_frames == n, f"after {name} the kept (stale) picture was copied"
        assert np.abs(img - before).max() > 0, f"{name} changed nothing on screen"
        np.testing.assert_array_equal(img, from_scratch(), err_msg=f"after {name}")
        # the frame drawn from scratch left the kept picture as it was: the next one copies it
        np.testing.assert_array_equal(frame(), img, err_msg=f"the kept picture after {name}")
        assert view.cached_frames == n + 1, f"after {name} the new picture was not kept"


def test_a_large_picture_at_rest_is_built_over_frames_into_the_same_picture(view, qtbot):
    """A full picture of more than ``rest_chunk_points`` points is drawn into the kept picture
    over several frames; until it is complete each frame shows the level of detail (no frame at
    rest draws the whole cloud), the event loop finishes it by itself, and the picture built in
    parts is exactly the one drawn at once."""
    n = view.cloud().count
    chunk = n // 3 + 1  # three frames
    view.rest_chunk_points = chunk

    def paint() -> int:
        view.makeCurrent()
        try:
            view.paintGL()
        finally:
            view.doneCurrent()
        return view.drawn_points()

    def at_once():
        view.cache_at_rest = False
        try:
            return to_array(view.grabFramebuffer())
        finally:
            view.cache_at_rest = True

    view.camera.orbit(12.0, 4.0)
    drawn = [paint(), paint()]
    assert not view.showed_full_picture(), "three frames' worth of points completed in two"
    lod_budget = view.interactive_points
    assert lod_budget is not None
    for d in drawn:
        assert chunk < d <= chunk + lod_budget, f"a frame while building drew {d} points (chunk {chunk}, level of detail <= {lod_budget})"
    last = paint()
    assert view.showed_full_picture() and last == n - 2 * chunk
    kept = view.cached_frames
    built = to_array(view.grabFramebuffer())
    assert view.cached_frames == kept + 1, "the completed picture was not kept"
    np.testing.assert_array_equal(built, at_once())

    # left to the event loop: after the first frame of a change the frames that follow finish it
    view.camera.orbit(-12.0, -4.0)
    view.repaint()
    assert not view.showed_full_picture()
    qtbot.waitUntil(view.showed_full_picture, timeout=5000)
    kept = view.cached_frames
    np.testing.assert_array_equal(to_array(view.grabFramebuffer()), at_once())
    assert view.cached_frames == kept + 1, "the event loop did not finish the picture"


def test_wheel_zooms_towards_the_cursor(view):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    d0 = view.camera.distance
    pos = QPointF(200.0, 150.0)
    p_under = view.camera.unproject(200.0, 150.0, d0)
    ev = QWheelEvent(
        pos, view.mapToGlobal(pos), QPoint(0, 0), QPoint(0, 240), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False
    )
    QApplication.sendEvent(view, ev)
    assert view.camera.distance == pytest.approx(d0 * 0.85**2)
    np.testing.assert_allclose(view.camera.project_point(p_under), (200.0, 150.0), atol=1e-6)


# --------------------------------------------------------------------------- gizmo drags


def test_dragging_the_x_arrow_moves_the_box_by_the_expected_amount(view, scene):
    from core.preview import render_preview
    from core.sample import render_sample
    from viewport.cloud import HATCH_COLORS

    box = obj(scene, "box")
    view.set_selected(box.id)
    view.set_gizmo_mode("move")
    log = recorder(view)
    pivot = view.pivot(box.id)
    np.testing.assert_allclose(pivot, scene.pivot(box))
    start = arrow_screen(view, 0)
    n_px, steps = 96, 8
    press(view, start)
    assert view.is_dragging()
    previews = []
    view.transformPreview.connect(lambda i, t: previews.append(render_preview(scene).image))  # the editor's chain
    for i in range(1, steps + 1):
        move(view, start + [n_px * i / steps, 0])
    release(view, start + [n_px, 0])
    assert not view.is_dragging()

    expected = n_px * pivot[2] / F  # n pixels at the pivot's depth
    assert box.transform.t == pytest.approx([expected, 0.0, 0.0], abs=1e-6)
    assert len(log["preview"]) == steps and all(i == box.id for i, _ in log["preview"])
    xs = [t.t[0] for _, t in log["preview"]]
    assert xs == sorted(xs) and xs[-1] == pytest.approx(expected, abs=1e-6)
    assert len(log["commit"]) == 1
    oid, old, new = log["commit"][0]
    assert oid == box.id and old.is_identity() and new == box.transform
    assert len(previews) == steps and not np.array_equal(previews[-1], scene.photo)

    # the drawn image: the box where the ray caster puts it, the hole hatched behind it
    view.set_selected(None)
    img = to_array(view.grabFramebuffer())
    truth = render_sample({"box": box.transform}, W, H, FOV)
    moved = truth.masks["box"]
    from scipy.ndimage import binary_erosion

    core_px = binary_erosion(moved, iterations=2)
    err = np.abs(img[core_px] - truth.photo[core_px].astype(np.int32)).mean()
    assert err < 20.0, f"moved box differs from the ray-cast truth by {err:.1f} on average"
    hole = binary_erosion(box.mask & ~moved & ~truth.masks["sphere"] & ~truth.masks["cylinder"], iterations=2)
    assert hole.sum() > 500
    near_hatch = np.min(np.abs(img[hole][:, None, :] - HATCH_COLORS[None].astype(np.int32)).max(axis=2), axis=1) <= 3
    assert near_hatch.mean() > 0.9, "the uncovered background is not drawn as the hole"

    # the preview's hole mask, shown in the view, tints those pixels
    result = render_preview(scene)
    assert result.hole.any()
    view.set_hole_mask(result.hole)
    tinted = to_array(view.grabFramebuffer())
    changed = np.abs(tinted - img).sum(axis=2) > 30
    assert changed[result.hole].mean() > 0.8
    assert changed[~result.hole].mean() < 0.01


def test_the_view_proposes_transforms_and_never_writes_them(view, scene):
    """One writer of transforms (the editor's document model): a drag with nobody applying the
    proposals leaves the scene untouched, yet proposes a moved box and commits it."""
    box = obj(scene, "box")
    view.set_selected(box.id)
    log = recorder(view, write=False)
    start = arrow_screen(view, 0)
    press(view, start)
    move(view, start + [40, 0])
    release(view, start + [40, 0])
    assert len(log["preview"]) == 1 and log["preview"][0][1].t[0] > 0.05
    assert len(log["commit"]) == 1 and log["commit"][0][2].t[0] > 0.05
    assert box.transform.is_identity()


def test_escape_cancels_a_drag(view, scene):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    box = obj(scene, "box")
    view.set_selected(box.id)
    log = recorder(view)
    start = arrow_screen(view, 1)
    press(view, start)
    move(view, start + [0, 25])
    move(view, start + [0, 50])
    assert box.transform.t[1] > 0.05
    assert len(log["preview"]) == 2
    QTest.keyClick(view, Qt.Key.Key_Escape)
    assert log["cancel"] == [box.id]
    assert box.transform.is_identity()
    assert not view.is_dragging()
    release(view, start + [0, 50])
    assert log["commit"] == []
    assert box.transform.is_identity()


def test_right_click_cancels_a_drag(view, scene):
    from PySide6.QtCore import Qt

    sphere = obj(scene, "sphere")
    view.set_selected(sphere.id)
    log = recorder(view)
    start = arrow_screen(view, 0)
    press(view, start)
    move(view, start + [40, 0])
    assert not sphere.transform.is_identity()
    press(view, start + [40, 0], button=Qt.MouseButton.RightButton)
    assert log["cancel"] == [sphere.id] and sphere.transform.is_identity()
    release(view, start + [40, 0])
    assert log["commit"] == []


def test_ring_drag_rotates_by_the_dragged_angle(view, scene):
    cyl = obj(scene, "cylinder")
    view.set_selected(cyl.id)
    view.set_gizmo_mode("rotate")
    view.set_frame("camera")
    log = recorder(view)
    pose = view.gizmo_pose()

    def ring(deg):  # a point of the Z ring (it faces the photo's camera)
        a = math.radians(deg)
        return np.array(view.camera.project_point(pose.centre + pose.length * (math.cos(a) * np.array([1.0, 0, 0]) + math.sin(a) * np.array([0, 1.0, 0]))))

    # +X of the gizmo is also on the edge-on Y ring; the ring facing the viewer must win there
    press(view, ring(0))
    for deg in range(10, 91, 10):
        move(view, ring(deg))
    release(view, ring(90))
    axis, angle = cyl.transform.axis_angle()
    assert angle == pytest.approx(90.0, abs=1.5)
    assert abs(axis[2]) > 0.999
    np.testing.assert_allclose(cyl.transform.R @ [1, 0, 0], [0, 1, 0], atol=0.03)  # +X onto +Y (down)
    assert cyl.transform.t == pytest.approx([0, 0, 0], abs=1e-9)
    assert len(log["commit"]) == 1


def test_ctrl_snaps_the_drag(view, scene):
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    box = obj(scene, "box")
    view.set_selected(box.id)
    recorder(view)
    start = arrow_screen(view, 0)
    press(view, start)
    p = QPointF(float(round(start[0] + 37)), float(round(start[1])))
    ev = QMouseEvent(
        QMouseEvent.Type.MouseMove, p, view.mapToGlobal(p), Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier
    )
    QApplication.sendEvent(view, ev)
    x = box.transform.t[0]
    unsnapped = 37 * view.pivot(box.id)[2] / F
    assert x == pytest.approx(round(unsnapped / 0.1) * 0.1, abs=1e-9)
    assert x != pytest.approx(unsnapped, abs=1e-3)
    release(view, start + [37, 0], mods=Qt.KeyboardModifier.ControlModifier)
    assert box.transform.t[0] == pytest.approx(round(unsnapped / 0.1) * 0.1, abs=1e-9)


def test_scale_drag(view, scene):
    sphere = obj(scene, "sphere")
    view.set_selected(sphere.id)
    view.set_gizmo_mode("scale")
    recorder(view)
    c = np.array(view.camera.project_point(view.gizmo_pose().centre))
    grab = c + [60, 0]
    press(view, grab)
    move(view, c + [75, 0])
    move(view, c + [90, 0])
    release(view, c + [90, 0])
    assert sphere.transform.scale == pytest.approx(1.5, abs=0.02)
    assert sphere.transform.t == pytest.approx([0, 0, 0], abs=1e-9)


def test_hover_highlights_the_handle(view, scene):
    from core.gizmo import HOVER_COLOR, Handle

    box = obj(scene, "box")
    view.set_selected(box.id)
    before = to_array(view.grabFramebuffer())
    p = arrow_screen(view, 0, frac=0.5)
    move(view, p)
    assert view.hovered_handle() == Handle("axis", 0)
    after = to_array(view.grabFramebuffer())
    hover = np.round(HOVER_COLOR * 255).astype(int)
    near = lambda img: np.all(np.abs(img - hover) <= 40, axis=2)  # noqa: E731
    assert near(after).sum() > near(before).sum() + 20
    move(view, (5, 5))
    assert view.hovered_handle() is None


def test_click_picks_objects(view, scene):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    log = recorder(view)
    sphere = obj(scene, "sphere")
    ys, xs = np.nonzero(sphere.mask)
    QTest.mouseClick(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, qpoint((xs.mean(), ys.mean())))
    assert log["picked"] == [sphere.id] and view.selected() == sphere.id
    floor_y = H - 10
    QTest.mouseClick(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, qpoint((W / 2, floor_y)))
    assert log["picked"] == [sphere.id, None] and view.selected() is None
    # a moved object is picked where it is drawn, not where it was
    from core.transform import Transform3D

    sphere.transform = Transform3D(translation=(0.0, -0.6, 0.0))
    view.refresh_object(sphere.id)
    QTest.mouseClick(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, qpoint((xs.mean(), ys.max() - 3)))
    assert log["picked"][-1] != sphere.id


def test_frame_selection_and_point_size_keys(view, scene):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    box = obj(scene, "box")
    view.set_selected(box.id)
    QTest.keyClick(view, Qt.Key.Key_F)
    lo, hi = view.cloud().groups[box.id].lo, view.cloud().groups[box.id].hi
    np.testing.assert_allclose(view.camera.target, (lo + hi) / 2, atol=1e-6)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    x, y, _ = view.camera.project(corners)
    assert np.all((x >= 0) & (x <= W) & (y >= 0) & (y <= H))
    assert view.point_size() is None
    QTest.keyClick(view, Qt.Key.Key_Plus)
    QTest.keyClick(view, Qt.Key.Key_Plus)
    assert view.point_size() == 3.0
    QTest.keyClick(view, Qt.Key.Key_Minus)
    assert view.point_size() == 2.0
    view.set_point_size(None)
    assert view.point_size() is None


# --------------------------------------------------------------------------- frame rate: level of detail, partial updates

GL_PRIMITIVES_GENERATED, GL_QUERY_RESULT = 0x8C87, 0x8866


def points_drawn(v) -> int:
    """Points the view's paintGL submits, counted by GL itself (a primitives-generated query
    around one frame; nothing selected, so no gizmo lines or triangles)."""
    import ctypes

    assert v.selected() is None
    v.cache_at_rest = False  # count what a frame draws, not a copy of the kept picture
    v.makeCurrent()
    try:
        ctx = v.context()
        gen = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_uint))(ctx.getProcAddress(b"glGenQueries"))
        get = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint))(ctx.getProcAddress(b"glGetQueryObjectuiv"))
        delete = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_uint))(ctx.getProcAddress(b"glDeleteQueries"))
        q, n = ctypes.c_uint(0), ctypes.c_uint(0)
        gen(1, ctypes.byref(q))
        ef = ctx.extraFunctions()
        ef.glBeginQuery(GL_PRIMITIVES_GENERATED, q.value)
        v.paintGL()
        ef.glEndQuery(GL_PRIMITIVES_GENERATED)
        get(q.value, GL_QUERY_RESULT, ctypes.byref(n))
        delete(1, ctypes.byref(q))
        return int(n.value)
    finally:
        v.doneCurrent()


def hold_pan(v, dx=24):
    """Shift + left press, a pan there and back (the camera ends where it started), button held."""
    from PySide6.QtCore import Qt

    p = np.array([W * 0.3, H * 0.3])
    press(v, p, mods=Qt.KeyboardModifier.ShiftModifier)
    move(v, p + [dx, 0])
    move(v, p)
    return p


def test_moving_draws_a_uniform_subsample_and_rest_the_full_cloud(view, scene, qtbot):
    from PySide6.QtCore import Qt

    from viewport.view import REST_MS

    n = view.cloud().count
    budget = view.interactive_points
    assert budget is not None and n > 2 * budget, "the sample must be larger than the interactive budget"
    full = to_array(view.grabFramebuffer())
    assert points_drawn(view) == n == view.drawn_points()

    p = hold_pan(view)
    assert view.is_interacting()
    # the default budget (40k) takes a sixteenth of the sample's 332k points, every fourth pixel of
    # every fourth row; a budget of a quarter takes every second pixel of every second row
    for fraction, budget_here in ((1 / 16, budget), (1 / 4, n // 4 + 1000)):
        view.interactive_points = budget_here
        drawn = points_drawn(view)
        assert drawn <= budget_here and view.drawn_points() == drawn
        assert drawn == pytest.approx(fraction * n, rel=0.02)
        lod = to_array(view.grabFramebuffer())
        # the camera is back at the photo's: the subsample, widened, still shows the whole photo
        # (the lattice starts at the top-left pixel: its last points can leave the photo's last
        # few columns and rows open)
        covered = np.any(np.abs(lod - CLEAR) > 2, axis=2)
        assert covered[:-8, :-8].mean() > 0.999, f"gaps between the level-of-detail points: {1 - covered[:-8, :-8].mean():.2%} uncovered"
        assert covered.mean() > 0.98
        # ... every band of it (a uniform subsample, not the first rows)
        for band in np.array_split(np.arange(H), 4):
            err = np.abs(lod[band] - scene.photo[band].astype(np.int32)).mean()
            assert err < 8.0, f"level-of-detail picture far from the photo: mean error {err:.2f}"
        # ... but it is not the full-resolution picture: many pixels show a neighbour's colour
        assert (np.abs(lod - full).max(axis=2) > 0).mean() > 0.03
    view.interactive_points = budget

    # the mouse rests (button still held): the full cloud again, the same picture as before
    qtbot.waitUntil(lambda: not view.is_interacting(), timeout=REST_MS + 2000)
    assert points_drawn(view) == n
    rest = to_array(view.grabFramebuffer())
    assert (np.abs(rest - full).max(axis=2) > 0).mean() < 0.001
    release(view, p, mods=Qt.KeyboardModifier.ShiftModifier)

    # a gizmo drag draws the subsample too (counted by the view: GL's count would include the
    # gizmo's lines and triangles); its release brings back the full cloud at once
    box = obj(scene, "box")
    view.set_selected(box.id)
    recorder(view)
    start = arrow_screen(view, 0)
    press(view, start)
    move(view, start + [30, 0])
    assert view.is_dragging() and view.is_interacting()
    view.grabFramebuffer()
    assert 0 < view.drawn_points() <= budget
    release(view, start + [30, 0])
    assert not view.is_interacting()
    view.grabFramebuffer()
    assert view.drawn_points() == n


def test_without_a_budget_every_frame_draws_the_full_cloud(gl_context_info, qtbot, scene):
    v = make_view(qtbot, scene)
    v.interactive_points = None
    p = hold_pan(v)
    assert v.is_interacting()
    assert points_drawn(v) == v.cloud().count
    release(v, p)


def _hole_masks(scene):
    box = obj(scene, "box")
    a = box.mask & ~np.roll(box.mask, 40, axis=1)
    b = box.mask & ~np.roll(box.mask, 25, axis=0)
    assert a.sum() > 500 and b.sum() > 500 and (a != b).sum() > 500
    return a, b


def test_a_new_hole_mask_rewrites_only_the_background_flags_and_matches_a_fresh_upload(gl_context_info, qtbot, scene):
    from core.transform import Transform3D

    obj(scene, "box").transform = Transform3D(translation=(0.3, 0.0, 0.0))
    a, b = _hole_masks(scene)
    v = make_view(qtbot, scene)
    v.set_hole_mask(a)
    first = to_array(v.grabFramebuffer())
    before = dict(v.uploaded_bytes)
    v.set_hole_mask(b)
    updated = to_array(v.grabFramebuffer())
    cloud = v.cloud()
    flagged = sum(cloud.groups[k].count for k in ("background", "fill"))
    assert v.uploaded_bytes["vertices"] == before["vertices"], "a hole mask must not re-upload the vertices"
    sent = v.uploaded_bytes["flags"] - before["flags"]
    assert 0 < sent <= 2 * flagged < 2 * cloud.count  # both copies' background span at most, never the objects'
    assert (np.abs(updated - first).max(axis=2) > 30).sum() > 500, "the new hole is not drawn"

    # the same scene and mask uploaded from scratch: the same picture, at rest and while moving
    fresh = make_view(qtbot, scene)
    fresh.set_hole_mask(b)
    np.testing.assert_array_equal(to_array(fresh.grabFramebuffer()), updated)
    pv, pf = hold_pan(v), hold_pan(fresh)
    assert v.is_interacting() and fresh.is_interacting()
    lod_v, lod_f = to_array(v.grabFramebuffer()), to_array(fresh.grabFramebuffer())
    np.testing.assert_array_equal(lod_v, lod_f)
    assert (np.abs(lod_v - updated).max(axis=2) > 0).mean() > 0.03  # it is the level of detail
    # the hole is tinted in the level-of-detail copy too: the tint moves with the mask
    v.set_hole_mask(a)
    lod_a = to_array(v.grabFramebuffer())
    assert (np.abs(lod_a - lod_v).max(axis=2) > 30).sum() > 500
    release(v, pv)
    release(fresh, pf)
    # an unchanged mask uploads nothing; clearing it clears the tint
    sent0 = v.uploaded_bytes["flags"]
    v.set_hole_mask(a.copy())
    v.grabFramebuffer()
    assert v.uploaded_bytes["flags"] == sent0
    v.set_hole_mask(None)
    plain = make_view(qtbot, scene)
    np.testing.assert_array_equal(to_array(v.grabFramebuffer()), to_array(plain.grabFramebuffer()))


def test_moving_an_object_uploads_nothing_and_matches_a_fresh_view(view, scene, qtbot):
    box = obj(scene, "box")
    view.set_selected(box.id)
    recorder(view)
    view.transformPreview.connect(lambda i, _t: view.refresh_object(i))  # as the editor does
    before = dict(view.uploaded_bytes)
    start = arrow_screen(view, 0)
    press(view, start)
    for i in range(1, 5):
        move(view, start + [15 * i, 0])
    release(view, start + [60, 0])
    assert box.transform.t[0] > 0.1
    view.set_selected(None)
    moved = to_array(view.grabFramebuffer())
    assert view.uploaded_bytes == before, "a drag must only change the object's model matrix"
    fresh = make_view(qtbot, scene)  # uploads the cloud from scratch, the box already moved
    np.testing.assert_array_equal(moved, to_array(fresh.grabFramebuffer()))
    assert np.abs(moved - scene.photo.astype(np.int32)).max(axis=2).mean() > 1.0  # the box did move


def test_a_level_of_detail_frame_costs_much_less_than_a_full_one(view):
    """Relative, so the machine's load cancels out: interleaved draws, medians, a wide margin
    (the measured ratio is about 0.3-0.4 on llvmpipe)."""
    import time

    f = view.context().functions()
    view.cache_at_rest = False  # time the full draw, not a copy of the kept picture

    def draw(interacting: bool) -> float:
        view._interacting = interacting  # the state a mouse move sets; the rest timer is not running
        view.makeCurrent()
        try:
            t = time.perf_counter()
            view.paintGL()
            f.glFinish()
            return time.perf_counter() - t
        finally:
            view.doneCurrent()

    draw(False), draw(True)
    full, lod = [], []
    for _ in range(9):
        full.append(draw(False))
        lod.append(draw(True))
    view._interacting = False
    assert np.median(lod) < 0.75 * np.median(full), f"level of detail {np.median(lod) * 1e3:.1f} ms vs full {np.median(full) * 1e3:.1f} ms"


def test_points_off_the_view_are_dropped_as_the_clipper_would(view, scene):
    """The vertex shader moves points off the view onto the far plane (software GL's clipper is
    slow): the picture must be the clipper's, up to points straddling the border."""
    view.camera.orbit(120, 40)
    view.camera.zoom(0.6)  # closer: much of the cloud is off the view
    cam = view.camera
    ndc = np.c_[view.cloud().vertices["pos"], np.ones(view.cloud().count)] @ cam.view_projection().T
    off = (ndc[:, 3] <= 0) | np.any(np.abs(ndc[:, :2]) > ndc[:, 3:4], axis=1)
    assert off.mean() > 0.2, "the test needs points off the view"
    culled = to_array(view.grabFramebuffer())
    view.cull_in_shader = False
    clipped = to_array(view.grabFramebuffer())
    view.cull_in_shader = True
    differ = np.abs(culled - clipped).max(axis=2) > 0
    assert not differ[12:-12, 12:-12].any(), "points off the view show up, or visible ones vanish"
    assert differ.mean() < 0.01
    assert np.any(np.abs(culled - CLEAR) > 2, axis=2).mean() > 0.5
    # the whole cloud off the view: nothing drawn at all (none of the dropped points leaks)
    view.camera.pan(-4 * W, 0)
    empty = to_array(view.grabFramebuffer())
    assert np.all(np.abs(empty - CLEAR) <= 2)
