"""editor.photo_view.PhotoView on the offscreen platform: synthesized mouse gestures produce one
maskEdited each with the right pixels under zoom and pan; overlays and the compare slider render
(checked on grab()bed pixels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from editor.photo_view import TOOLS, PhotoView

LEFT = Qt.MouseButton.LeftButton
NOMOD = Qt.KeyboardModifier.NoModifier


@pytest.fixture
def view(qtbot):
    v = PhotoView()
    qtbot.addWidget(v)
    v.resize(400, 300)
    v.show()
    qtbot.waitExposed(v)
    return v


def _pt(p: QPointF) -> QPoint:
    return QPoint(round(p.x()), round(p.y()))


def _move(w, pos: QPointF, buttons=LEFT, mods=NOMOD):
    ev = QMouseEvent(QEvent.Type.MouseMove, QPointF(pos), w.mapToGlobal(QPointF(pos)), Qt.MouseButton.NoButton, buttons, mods)
    QApplication.sendEvent(w, ev)


def _drag(w, pts, button=LEFT, mods=NOMOD):
    """Press at pts[0], move through pts[1:], release at pts[-1] (widget coords)."""
    QTest.mousePress(w, button, mods, _pt(pts[0]))
    for p in pts[1:]:
        _move(w, p, button, mods)
    QTest.mouseRelease(w, button, mods, _pt(pts[-1]))


def _collect(view):
    got = []
    view.maskEdited.connect(lambda oid, mask, mode, label: got.append((oid, mask, mode, label)))
    return got


def _rgb(img, x, y):
    c = img.pixelColor(x, y)
    return c.red(), c.green(), c.blue()


def _grab(view):
    return view.grab().toImage()


# ------------------------------------------------------------------ mapping, zoom, pan
def test_fit_and_mapping(view):
    view.set_image(np.zeros((60, 80, 3), np.uint8))
    # fitted: 80x60 into 400x300 -> zoom 5, no margin
    assert view.zoom() == pytest.approx(5.0)
    p = view.map_from_image(10, 20)
    assert (p.x(), p.y()) == pytest.approx((50.0, 100.0))
    assert view.map_to_image(QPointF(50.0, 100.0)) == pytest.approx((10.0, 20.0))
    view.zoom_100()
    assert view.zoom() == 1.0
    # 100 % about the centre: the image centre stays at the widget centre
    c = view.map_from_image(40, 30)
    assert (c.x(), c.y()) == pytest.approx((200.0, 150.0))


def test_wheel_zoom_keeps_point_under_cursor(view):
    view.set_image(np.zeros((60, 80, 3), np.uint8))
    anchor = QPointF(123.0, 77.0)
    before = view.map_to_image(anchor)
    ev = QWheelEvent(anchor, view.mapToGlobal(anchor), QPoint(0, 0), QPoint(0, 240), Qt.MouseButton.NoButton, NOMOD, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view, ev)
    assert view.zoom() == pytest.approx(5.0 * 1.25**2)
    assert view.map_to_image(anchor) == pytest.approx(before)


def test_middle_drag_pans(view):
    view.set_image(np.zeros((60, 80, 3), np.uint8))
    view.set_tool("brush")
    o = view.offset()
    got = _collect(view)
    _drag(view, [QPointF(100, 100), QPointF(130, 90), QPointF(160, 80)], button=Qt.MouseButton.MiddleButton)
    assert (view.offset().x() - o.x(), view.offset().y() - o.y()) == pytest.approx((60.0, -20.0))
    assert got == []  # panning edits nothing


# ------------------------------------------------------------------ brush / eraser
def test_brush_stroke_under_zoom_and_pan(view):
    h, w = 64, 96
    view.set_image(np.full((h, w, 3), 100, np.uint8))
    view.set_zoom(3.0)
    view.set_offset(QPointF(-40.0, 25.0))
    view.set_tool("brush")
    view.set_tool_option("brush_size", 8.0)  # radius 4 image px
    got = _collect(view)
    # stroke from image (20, 30) to (50, 30) through intermediate mouse events
    pts = [view.map_from_image(x, 30.0) for x in np.linspace(20, 50, 12)]
    _drag(view, pts)
    assert len(got) == 1
    oid, mask, mode, label = got[0]
    assert oid is None and mode == "replace"  # nothing selected: a new object
    assert mask.shape == (h, w) and mask.dtype == bool
    # independent expectation: pixel centres within 4 px of the segment y=30, x in [20, 50]
    ii, jj = np.mgrid[0:h, 0:w]
    px, py = jj + 0.5, ii + 0.5
    dist = np.hypot(px - np.clip(px, 20, 50), py - 30)
    # widget->image rounding of the event positions moves points by < 1/zoom px
    assert mask[dist < 4 - 0.5].all()
    assert not mask[dist > 4 + 0.5].any()
    assert abs(mask.sum() - (math.pi * 16 + 8 * 30)) < 40


def test_brush_adds_to_selected_and_eraser_subtracts(view):
    view.set_image(np.zeros((40, 40, 3), np.uint8))
    m = np.zeros((40, 40), bool)
    m[10:20, 10:20] = True
    view.set_masks([("a", m, (0, 255, 0))])
    view.set_selected("a")
    view.set_tool("brush")
    got = _collect(view)
    _drag(view, [view.map_from_image(30, 30), view.map_from_image(32, 30)])
    assert [(g[0], g[2], g[3]) for g in got] == [("a", "add", "Brush stroke")]
    view.set_tool("eraser")
    _drag(view, [view.map_from_image(15, 15), view.map_from_image(16, 15)])
    assert (got[1][0], got[1][2], got[1][3]) == ("a", "subtract", "Erase")
    assert got[1][1][15, 15]
    # eraser with nothing selected edits nothing and says why
    hints = []
    view.hint.connect(hints.append)
    view.set_selected(None)
    _drag(view, [view.map_from_image(15, 15), view.map_from_image(16, 15)])
    assert len(got) == 2 and hints and "Select an object" in hints[-1]


def test_brush_size_keys(view, qtbot):
    view.set_image(np.zeros((40, 40, 3), np.uint8))
    view.set_tool("brush")
    view.set_tool_option("brush_size", 20.0)
    QTest.keyClick(view, Qt.Key.Key_BracketRight)
    assert view.tool_option("brush_size") == pytest.approx(23.0)
    QTest.keyClick(view, Qt.Key.Key_BracketLeft)
    QTest.keyClick(view, Qt.Key.Key_BracketLeft)
    assert view.tool_option("brush_size") < 20.0
    s = view.tool_option("brush_size")
    QTest.keyClick(view, Qt.Key.Key_BraceRight, Qt.KeyboardModifier.ShiftModifier)
    assert view.tool_option("brush_size") == pytest.approx(s * 1.5)


# ------------------------------------------------------------------ lasso / polygon / rect
def test_lasso_square(view):
    view.set_image(np.zeros((60, 80, 3), np.uint8))  # zoom 5
    view.set_tool("lasso")
    got = _collect(view)
    corners = [(10, 10), (50, 10), (50, 40), (10, 40)]
    pts = []
    for (xa, ya), (xb, yb) in zip(corners, corners[1:] + corners[:1]):
        pts += [view.map_from_image(xa + (xb - xa) * t, ya + (yb - ya) * t) for t in np.linspace(0, 1, 8, endpoint=False)]
    pts.append(view.map_from_image(10, 10))
    _drag(view, pts)
    assert len(got) == 1
    oid, mask, mode, label = got[0]
    assert (oid, mode, label) == (None, "replace", "Lasso")
    assert mask[11:39, 11:49].all()
    assert not mask[:9].any() and not mask[41:].any() and not mask[:, :9].any() and not mask[:, 51:].any()
    assert abs(mask.sum() - 40 * 30) <= 2 * (40 + 30)


def test_polygon_clicks_and_enter_with_shift_adds(view):
    view.set_image(np.zeros((60, 80, 3), np.uint8))
    m = np.zeros((60, 80), bool)
    view.set_masks([("obj", m, "#ff8800")])
    view.set_selected("obj")
    view.set_tool("polygon")
    got = _collect(view)
    for x, y in [(5, 5), (45, 5), (5, 45)]:
        QTest.mouseClick(view, LEFT, NOMOD, _pt(view.map_from_image(x, y)))
    assert got == []
    QTest.keyClick(view, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    assert len(got) == 1
    oid, mask, mode, _ = got[0]
    assert (oid, mode) == ("obj", "add")
    assert abs(mask.sum() - 0.5 * 40 * 40) <= 3 * 40 * 1.5
    assert mask[10, 10] and not mask[40, 40]


def test_rectangle_alt_subtracts(view):
    view.set_image(np.zeros((60, 80, 3), np.uint8))
    view.set_masks([("o", np.ones((60, 80), bool), (0, 0, 255))])
    view.set_selected("o")
    view.set_tool("rect")
    got = _collect(view)
    alt = Qt.KeyboardModifier.AltModifier
    _drag(view, [view.map_from_image(10, 20), view.map_from_image(20, 25), view.map_from_image(30, 40)], mods=alt)
    assert len(got) == 1
    oid, mask, mode, label = got[0]
    assert (oid, mode, label) == ("o", "subtract", "Rectangle (subtract)")
    assert mask.sum() == 20 * 20 and mask[20:40, 10:30].all()


# ------------------------------------------------------------------ wand / segment
def _wand_scene():
    photo = np.full((48, 64, 3), 120, np.uint8)
    depth = np.full((48, 64), 2.0, np.float32)
    depth[:, 32:] = 5.0  # same colour, farther
    return photo, depth


def test_wand_click_uses_depth_and_modifiers(view):
    photo, depth = _wand_scene()
    view.set_image(photo)
    view.set_original(photo)
    view.set_depth(depth)
    view.set_tool("wand")
    got = _collect(view)
    QTest.mouseClick(view, LEFT, NOMOD, _pt(view.map_from_image(10.5, 10.5)))
    assert len(got) == 1
    oid, mask, mode, label = got[0]
    assert (oid, mode, label) == (None, "replace", "Magic wand")
    assert mask[:, :32].all() and not mask[:, 32:].any()
    view.set_masks([("w", mask, (255, 0, 0))])
    view.set_selected("w")
    QTest.mouseClick(view, LEFT, Qt.KeyboardModifier.ShiftModifier, _pt(view.map_from_image(50.5, 10.5)))
    assert (got[1][0], got[1][2]) == ("w", "add")
    # the far plane, up to a few pixels before the step (the object wand treats the foot of a
    # step towards the camera as a crease: core.selection.OBJECT_WAND)
    assert got[1][1][:, 36:].all() and not got[1][1][:, :32].any()
    QTest.mouseClick(view, LEFT, Qt.KeyboardModifier.AltModifier, _pt(view.map_from_image(50.5, 10.5)))
    assert (got[2][0], got[2][2]) == ("w", "subtract")
    # without depth the two halves merge
    view.set_depth(None)
    QTest.mouseClick(view, LEFT, NOMOD, _pt(view.map_from_image(10.5, 10.5)))
    assert got[3][1].all()


def test_wand_click_outside_image_gives_hint(view):
    photo, depth = _wand_scene()
    view.set_image(photo)
    view.set_zoom(1.0)  # the 64x48 image is smaller than the widget: margins around it
    view.set_tool("wand")
    got, hints = _collect(view), []
    view.hint.connect(hints.append)
    QTest.mouseClick(view, LEFT, NOMOD, QPoint(2, 2))
    assert got == [] and hints and "outside" in hints[0]


def test_segment_clicks_emit_points(view):
    view.set_image(np.zeros((60, 80, 3), np.uint8))
    view.set_tool("segment")
    clicks = []
    view.segmentClicked.connect(lambda x, y, label: clicks.append((x, y, label)))
    got = _collect(view)
    QTest.mouseClick(view, LEFT, NOMOD, _pt(view.map_from_image(12.0, 30.0)))
    QTest.mouseClick(view, Qt.MouseButton.RightButton, NOMOD, _pt(view.map_from_image(40.0, 20.0)))
    assert [(round(x), round(y), label) for x, y, label in clicks] == [(12, 30, 1), (40, 20, 0)]
    assert len(view.segment_points()) == 2 and got == []
    QTest.keyClick(view, Qt.Key.Key_Escape)
    assert view.segment_points() == []


def test_cursor_moved_reports_image_coords(view):
    view.set_image(np.zeros((60, 80, 3), np.uint8))
    seen = []
    view.cursorMoved.connect(lambda x, y: seen.append((x, y)))
    _move(view, view.map_from_image(33.0, 21.0), buttons=Qt.MouseButton.NoButton)
    assert seen[-1] == pytest.approx((33.0, 21.0))


# ------------------------------------------------------------------ rendering
def test_overlays_render(view):
    photo = np.full((60, 80, 3), 100, np.uint8)
    view.set_image(photo)  # zoom 5
    a = np.zeros((60, 80), bool)
    a[10:30, 10:30] = True
    b = np.zeros((60, 80), bool)
    b[10:30, 50:70] = True
    view.set_masks([("a", a, (0, 255, 0)), ("b", b, (0, 255, 0))])
    view.set_selected("a")
    img = _grab(view)
    dpr = img.devicePixelRatio()

    def at(x, y):
        p = view.map_from_image(x, y)
        return _rgb(img, int(p.x() * dpr), int(p.y() * dpr))

    plain = at(40.5, 45.5)
    assert plain == (100, 100, 100)
    inside_a, inside_b = at(20.5, 20.5), at(60.5, 20.5)
    assert inside_a[1] > inside_b[1] > 100 and inside_a[0] < inside_b[0] < 100  # tinted; selected stronger
    assert at(10.5, 20.5)[1] > inside_a[1]  # outline pixel stronger than the fill
    # hole overlay: red tint
    hole = np.zeros((60, 80), bool)
    hole[40:55, 5:25] = True
    view.set_hole(hole)
    img = _grab(view)
    reds = [_rgb(img, int(view.map_from_image(x + 0.5, 47.5).x() * dpr), int(view.map_from_image(x + 0.5, 47.5).y() * dpr)) for x in range(5, 25)]
    assert all(r > 120 and g < 100 and b_ < 100 for r, g, b_ in reds)
    view.set_tool_option("show_hole", False)
    img = _grab(view)
    assert _rgb(img, int(view.map_from_image(10.5, 47.5).x() * dpr), int(view.map_from_image(10.5, 47.5).y() * dpr)) == (100, 100, 100)


def test_compare_slider(view):
    before = np.zeros((60, 80, 3), np.uint8)
    before[..., 0] = 220
    after = np.zeros((60, 80, 3), np.uint8)
    after[..., 2] = 220
    view.set_image(after)
    view.set_original(before)
    view.set_compare(True)
    view.set_compare_position(0.5)
    img = _grab(view)
    dpr = img.devicePixelRatio()

    def at(x, y):
        p = view.map_from_image(x, y)
        return _rgb(img, int(p.x() * dpr), int(p.y() * dpr))

    assert at(20.5, 10.5) == (220, 0, 0)  # left: original
    assert at(60.5, 10.5) == (0, 0, 220)  # right: current
    # drag the split line from x=40 to x=20 (image px)
    view.set_tool("brush")  # grabbing the line takes precedence over the tool
    got = _collect(view)
    moved = []
    view.compareMoved.connect(moved.append)
    line = view.map_from_image(40.0, 30.0)
    _drag(view, [line, view.map_from_image(30.0, 30.0), view.map_from_image(20.0, 30.0)])
    assert got == []
    assert view.compare_position() == pytest.approx(0.25, abs=0.01) and moved
    img = _grab(view)
    assert at(10.5, 10.5) == (220, 0, 0)
    assert at(30.5, 10.5) == (0, 0, 220)
    view.set_compare(False)
    img = _grab(view)
    assert at(10.5, 10.5) == (0, 0, 220)


@pytest.mark.parametrize("tool", TOOLS)
def test_compare_handle_drags_with_every_tool(view, tool):
    """A left press on the split line drags it whatever the tool: it neither pans nor selects."""
    view.set_image(np.full((60, 80, 3), 90, np.uint8))
    view.set_original(np.full((60, 80, 3), 200, np.uint8))
    view.set_tool(tool)
    view.set_compare(True)
    view.set_compare_position(0.5)
    got = _collect(view)
    clicks = []
    view.segmentClicked.connect(lambda *a: clicks.append(a))
    offset, zoom = QPointF(view.offset()), view.zoom()
    # a press a few pixels off the line still grabs it
    start = view.map_from_image(40.0, 30.0) + QPointF(4.0, 0.0)
    _drag(view, [start, view.map_from_image(30.0, 30.0), view.map_from_image(60.0, 25.0)])
    assert view.compare_position() == pytest.approx(0.75, abs=0.01)
    assert view.offset() == offset and view.zoom() == zoom  # no pan
    assert got == [] and clicks == [] and view.segment_points() == []  # nothing selected
    assert not view.cancel_gesture()  # no gesture or polygon left half-done
    # hovering the line says it can be dragged
    _move(view, view.map_from_image(60.0, 20.0), Qt.MouseButton.NoButton)
    assert view.cursor().shape() == Qt.CursorShape.SplitHCursor
    # away from the line the tool works as usual: the navigate tool pans
    if tool == "none":
        _drag(view, [view.map_from_image(20.0, 30.0), view.map_from_image(10.0, 30.0)])
        assert view.offset() != offset and view.compare_position() == pytest.approx(0.75, abs=0.01)


def test_live_stroke_overlay_visible_while_dragging(view):
    view.set_image(np.full((60, 80, 3), 100, np.uint8))
    view.set_tool("brush")
    view.set_tool_option("brush_size", 10.0)
    QTest.mousePress(view, LEFT, NOMOD, _pt(view.map_from_image(20, 20)))
    _move(view, view.map_from_image(40, 20))
    img = _grab(view)
    dpr = img.devicePixelRatio()
    p = view.map_from_image(30.5, 20.5)
    assert _rgb(img, int(p.x() * dpr), int(p.y() * dpr)) != (100, 100, 100)
    QTest.keyClick(view, Qt.Key.Key_Escape)  # cancels: nothing emitted
    got = _collect(view)
    QTest.mouseRelease(view, LEFT, NOMOD, _pt(view.map_from_image(40, 20)))
    assert got == []


def test_set_image_is_cheap_and_zero_copy(view):
    import time

    img = np.zeros((512, 512, 3), np.uint8)
    view.set_image(img)
    assert view.image() is img  # no copy for a contiguous uint8 array
    frames = [np.full((512, 512, 3), k, np.uint8) for k in range(10)]
    t = time.perf_counter()
    for f in frames:
        view.set_image(f)
        view.repaint()
    per_frame = (time.perf_counter() - t) / len(frames)
    assert per_frame < 0.1  # generous for a shared machine; see the report for the measured figure


def test_bad_tool_and_option(view):
    with pytest.raises(ValueError, match="unknown photo tool"):
        view.set_tool("spray")
    with pytest.raises(ValueError, match="unknown tool option"):
        view.set_tool_option("nope", 1)
    with pytest.raises(ValueError, match="op must be"):
        view.set_tool_option("op", "xor")


def test_double_click_with_wand_is_one_edit(view):
    photo, depth = _wand_scene()
    view.set_image(photo)
    view.set_depth(depth)
    view.set_tool("wand")
    got = _collect(view)
    # what a platform delivers for a double click: press, release, double-click, release
    pos = QPointF(_pt(view.map_from_image(10.5, 10.5)))
    gpos = view.mapToGlobal(pos)
    for kind in ("MouseButtonPress", "MouseButtonRelease", "MouseButtonDblClick", "MouseButtonRelease"):
        t = getattr(QEvent.Type, kind)
        buttons = Qt.MouseButton.NoButton if kind.endswith("Release") else LEFT
        QApplication.sendEvent(view, QMouseEvent(t, pos, gpos, LEFT, buttons, NOMOD))
    assert len(got) == 1


def test_caption_and_empty_view_paint(view):
    img = _grab(view)  # no image yet: paints a hint, does not crash
    assert not img.isNull()
    view.set_image(np.full((60, 80, 3), 255, np.uint8))
    view.set_caption("Geometric preview")
    img = _grab(view)
    dpr = img.devicePixelRatio()
    # the caption's dark box sits in the top-left corner over the white image
    assert max(_rgb(img, int(12 * dpr), int(12 * dpr))) < 160
    view.set_caption("")
    assert _rgb(_grab(view), int(12 * dpr), int(12 * dpr)) == (255, 255, 255)


def test_cancel_gesture_drops_a_lasso_in_progress(view):
    view.set_image(np.zeros((60, 80, 3), np.uint8))
    view.set_tool("lasso")
    got = _collect(view)
    assert view.cancel_gesture() is False  # nothing in progress
    pts = [view.map_from_image(x, y) for x, y in ((10, 10), (40, 10), (40, 40), (10, 40))]
    QTest.mousePress(view, LEFT, NOMOD, _pt(pts[0]))
    for p in pts[1:]:
        _move(view, p)
    assert view.cancel_gesture() is True
    QTest.mouseRelease(view, LEFT, NOMOD, _pt(pts[-1]))
    assert got == []  # the cancelled lasso made no mask edit
    assert view.cancel_gesture() is False
