"""The photo panel: the image with zoom and pan, object-mask and hole overlays, a before/after
compare slider, and the selection tools (brush, eraser, lasso, polygon, rectangle, magic wand,
click-to-segment).

The view edits nothing itself and keeps no undo: every completed stroke, lasso, rectangle or wand
click is emitted **once** as ``maskEdited(object_id_or_None, mask, mode, label)`` where ``mask`` is
the stroke's own region (bool (H, W) at the working resolution), ``mode`` is how to apply it
(``core.selection.combine`` mode: "replace", "add", "subtract", "intersect") and ``object_id``
None means "make a new object from it". The editor applies it through its undo stack and calls
:meth:`PhotoView.set_masks` with the result. Segment clicks are emitted as
``segmentClicked(x, y, label)`` (label 1 = foreground, 0 = background) for the editor's SAM call.

Coordinates: signals carry continuous *image* pixel coordinates (x right, y down; pixel (i, j)
spans [j, j+1) x [i, i+1), centre (j+0.5, i+0.5), as in :mod:`core.camera`). A widget point ``q``
shows image point ``(q - offset) / zoom``.

Region tools (lasso, polygon, rectangle, wand) use the ``op`` option ("new" by default: a new
object) unless modifiers say otherwise: Shift adds to the selected object, Alt subtracts from it,
Shift+Alt intersects. The brush adds to the selected object (a new object when none is selected;
Alt paints as the eraser); the eraser subtracts from the selected object.

Keys: ``[`` / ``]`` brush size (with Shift: in bigger steps), Space+drag or middle-drag pans, wheel
zooms about the cursor, Enter or double click closes a polygon, Backspace removes its last point,
Esc cancels the tool's current gesture.

Display updates are cheap: :meth:`set_image` wraps the array in a QImage without copying (the
view keeps a reference; don't modify the array afterwards, pass a new one), overlays are built
once per change with numpy and drawn as premultiplied ARGB images.

Where the code lives: this module holds the widget, its state, the view transform (pan, zoom, fit)
and the event dispatch; :mod:`editor.photo_tools` the per-tool mouse handling and the building of
each gesture's mask; :mod:`editor.photo_paint` the overlays (mask tint, hole hatching, the stroke
in progress) and the painting (tool graphics, brush outline, compare line, caption).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QCursor, QKeyEvent, QMouseEvent, QPainter, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from core import selection as sel
from editor.photo_paint import PhotoPaintMixin, _Img, _to_qcolor
from editor.photo_tools import PhotoToolsMixin

TOOLS = ("none", "brush", "eraser", "lasso", "polygon", "rect", "wand", "segment")
OPS = ("new", "add", "subtract", "intersect", "replace")

DEFAULT_OPTIONS: dict[str, object] = {
    "brush_size": 24.0,  # brush diameter, image pixels
    "op": "new",  # region tools' default operation
    # wand defaults: the object wand (core.selection.OBJECT_WAND): growth follows depth
    # continuity across colour edges and stops at depth steps and concave creases (where an object
    # meets the floor), so one click takes a whole object: mean IoU 0.97 on the sample and 12
    # world scenes, 0.78 at precision 0.95 on the 14 photogen photos (the colour wand, the old
    # default: 0.36 and 0.39; benchmarks/wand.py). Without depth the wand uses COLOR_WAND.
    **sel.OBJECT_WAND,
    "mask_opacity": 0.35,  # tint of the selected object; the others get 0.3 of it plus their outline
    "show_masks": True,
    "show_hole": True,
}

MIN_ZOOM, MAX_ZOOM = 0.02, 64.0
MIN_BRUSH, MAX_BRUSH = 1.0, 1000.0
_COMPARE_GRAB_PX = 7.0


class PhotoView(PhotoToolsMixin, PhotoPaintMixin, QWidget):
    """Photo panel widget. See the module docstring for the tools, signals and coordinates."""

    #: (object_id or None, mask: bool ndarray (H, W), mode: str, label: str) once per gesture
    maskEdited = Signal(object, object, str, str)
    #: (x, y, label) image pixels; label 1 = foreground point, 0 = background point
    segmentClicked = Signal(float, float, int)
    #: (x, y) image pixels under the mouse
    cursorMoved = Signal(float, float)
    #: zoom factor (widget pixels per image pixel)
    zoomChanged = Signal(float)
    #: compare split position as a fraction of the image width (0..1)
    compareMoved = Signal(float)
    #: a tool option changed from inside the view (e.g. brush size keys): (key, value)
    toolOptionChanged = Signal(str, object)
    #: a one-line hint for the status bar ("select an object to subtract from", wand errors...)
    hint = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(120, 90)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)

        self._image: _Img | None = None
        self._original: _Img | None = None
        self._depth: np.ndarray | None = None
        self._masks: list[tuple[object, np.ndarray, QColor]] = []
        self._selected: object | None = None
        self._mask_overlay: _Img | None = None
        self._hole: np.ndarray | None = None
        self._hole_overlay: _Img | None = None
        self._hatch: np.ndarray | None = None
        self._caption = ""
        self._compare = False
        self._split = 0.5

        self._zoom = 1.0
        self._offset = QPointF(0.0, 0.0)
        self._fit_mode = True

        self._tool = "none"
        self._options: dict[str, object] = dict(DEFAULT_OPTIONS)

        # gesture state
        self._gesture: str | None = None  # "pan", "compare", "stroke", "lasso", "rect"
        self._press_pos = QPointF()
        self._pan_origin = QPointF()
        self._space = False
        self._mouse: QPointF | None = None  # last mouse position (widget)
        self._stroke: np.ndarray | None = None
        self._stroke_overlay: _Img | None = None
        self._stroke_px: np.ndarray | None = None
        self._stroke_last: tuple[float, float] | None = None
        self._stroke_target: tuple[object, str, str] | None = None
        self._path: list[tuple[float, float]] = []  # lasso / polygon points (image coords)
        self._rect_start: tuple[float, float] | None = None
        self._segment_points: list[tuple[float, float, int]] = []
        self._update_cursor()

    # ------------------------------------------------------------------ content
    def set_image(self, img: np.ndarray | None) -> None:
        """Show ``img`` ((H, W, 3) uint8 RGB; float images in [0, 1] are converted). Cheap: no copy
        for a C-contiguous uint8 array, whose reference the view keeps. Called on every drag event
        for the live preview."""
        old = self._image
        self._image = None if img is None else _Img.rgb(img)
        if self._image is not None and (old is None or old.array.shape != self._image.array.shape):
            self._hatch = None
            if self._fit_mode or old is None:
                self._fit_mode = True
                self._apply_fit()
        self.update()

    def image(self) -> np.ndarray | None:
        return None if self._image is None else self._image.array

    def set_original(self, img: np.ndarray | None) -> None:
        """The original photo: the left side of the compare view, and the photo the magic wand
        samples when it has the displayed image's size (else the wand samples the displayed image)."""
        self._original = None if img is None else _Img.rgb(img)
        self.update()

    def set_depth(self, depth: np.ndarray | None) -> None:
        """Z-depth (H, W) of the photo, used by the magic wand (None: colour only)."""
        self._depth = None if depth is None else np.asarray(depth, dtype=np.float32)

    def set_masks(self, masks: Iterable[tuple[object, np.ndarray, object]]) -> None:
        """Object overlays: ``(object_id, mask (H, W) bool, colour)`` with the colour as QColor,
        ``(r, g, b)`` or ``"#rrggbb"``. Drawn tinted with an outline; the selected one stronger."""
        self._masks = [(oid, np.asarray(m, dtype=bool), _to_qcolor(c)) for oid, m, c in masks]
        self._rebuild_mask_overlay()

    def set_selected(self, object_id: object | None) -> None:
        """The object that brush, eraser and modifier operations edit (None: none)."""
        if object_id == self._selected:
            return
        self._selected = object_id
        self._rebuild_mask_overlay()

    def selected(self) -> object | None:
        return self._selected

    def set_hole(self, mask: np.ndarray | None) -> None:
        """Mark the pixels the current edit uncovers (bool (H, W)) with a hatched red tint; None
        clears it. Cheap enough to call on every drag event."""
        if mask is None:
            self._hole = None
            self._hole_overlay = None
            self.update()
            return
        m = np.asarray(mask, dtype=bool)
        self._rebuild_hole_overlay(m)
        self._hole = m
        self.update()

    def set_caption(self, text: str) -> None:
        """A short label drawn in the top-left corner (e.g. "Geometric preview")."""
        self._caption = text or ""
        self.update()

    def set_compare(self, enabled: bool) -> None:
        """Before/after view: left of the split line the original photo, right the current image."""
        self._compare = bool(enabled)
        self.update()

    def compare_enabled(self) -> bool:
        return self._compare

    def set_compare_position(self, fraction: float) -> None:
        """Split line position as a fraction of the image width (clamped to 0..1)."""
        f = float(np.clip(fraction, 0.0, 1.0))
        if f != self._split:
            self._split = f
            self.compareMoved.emit(f)
            self.update()

    def compare_position(self) -> float:
        return self._split

    def segment_points(self) -> list[tuple[float, float, int]]:
        return list(self._segment_points)

    def clear_segment_points(self) -> None:
        self._segment_points.clear()
        self.update()

    # ------------------------------------------------------------------ tools
    def set_tool(self, name: str) -> None:
        """One of ``TOOLS``: "none" (navigate), "brush", "eraser", "lasso", "polygon", "rect",
        "wand", "segment". Switching cancels a gesture in progress."""
        if name not in TOOLS:
            raise ValueError(f"unknown photo tool {name!r}; choose one of {', '.join(TOOLS)}")
        self._cancel_gesture()
        if name != "segment":
            self._segment_points.clear()
        self._tool = name
        self._update_cursor()
        self.update()

    def tool(self) -> str:
        return self._tool

    def cancel_gesture(self) -> bool:
        """Drop a stroke, lasso, polygon or rectangle in progress (Esc); True when there was one."""
        busy = self._gesture is not None or bool(self._path) or self._rect_start is not None
        if busy:
            self._cancel_gesture()
        return busy

    def set_tool_option(self, key: str, value: object) -> None:
        """Set a tool option (see ``DEFAULT_OPTIONS``): brush_size (diameter, image px), op, the wand's
        color_tol / color_smooth / depth_tol / edge_color_tol / edge_depth_tol / normal_tol /
        crease_color_tol / concave_tol / connectivity / fill_holes,
        mask_opacity, show_masks, show_hole."""
        if key not in DEFAULT_OPTIONS:
            raise ValueError(f"unknown tool option {key!r}; known: {', '.join(DEFAULT_OPTIONS)}")
        if key == "brush_size":
            value = float(np.clip(float(value), MIN_BRUSH, MAX_BRUSH))
        elif key == "op" and value not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {value!r}")
        elif key == "connectivity" and value not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {value!r}")
        self._options[key] = value
        if key in ("mask_opacity",):
            self._rebuild_mask_overlay()
        self.update()

    def tool_option(self, key: str) -> object:
        return self._options[key]

    # ------------------------------------------------------------------ view transform
    def zoom(self) -> float:
        return self._zoom

    def offset(self) -> QPointF:
        return QPointF(self._offset)

    def map_to_image(self, pos: QPointF) -> tuple[float, float]:
        """Widget point -> image coordinates (pixels)."""
        return ((pos.x() - self._offset.x()) / self._zoom, (pos.y() - self._offset.y()) / self._zoom)

    def map_from_image(self, x: float, y: float) -> QPointF:
        """Image coordinates (pixels) -> widget point."""
        return QPointF(self._offset.x() + x * self._zoom, self._offset.y() + y * self._zoom)

    def fit(self) -> None:
        """Zoom so the whole image fits the widget, centred; stays fitted when the widget resizes."""
        self._fit_mode = True
        self._apply_fit()
        self.update()

    def zoom_100(self) -> None:
        """One image pixel per widget pixel, about the widget centre."""
        self.set_zoom(1.0)

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Set the zoom keeping the image point under ``anchor`` (widget coords; default the centre) fixed."""
        z = float(np.clip(zoom, MIN_ZOOM, MAX_ZOOM))
        if anchor is None:
            anchor = QPointF(self.width() / 2.0, self.height() / 2.0)
        ix, iy = self.map_to_image(anchor)
        self._zoom = z
        self._offset = QPointF(anchor.x() - ix * z, anchor.y() - iy * z)
        self._fit_mode = False
        self.zoomChanged.emit(z)
        self.update()

    def set_offset(self, offset: QPointF) -> None:
        """Pan: the widget position of the image's top-left corner."""
        self._offset = QPointF(offset)
        self._fit_mode = False
        self.update()

    def _image_size(self) -> tuple[int, int] | None:
        if self._image is None:
            return None
        h, w = self._image.array.shape[:2]
        return w, h

    def _apply_fit(self) -> None:
        size = self._image_size()
        if size is None or self.width() <= 0 or self.height() <= 0:
            return
        w, h = size
        z = min(self.width() / w, self.height() / h)
        z = float(np.clip(z, MIN_ZOOM, MAX_ZOOM))
        changed = z != self._zoom
        self._zoom = z
        self._offset = QPointF((self.width() - w * z) / 2.0, (self.height() - h * z) / 2.0)
        if changed:
            self.zoomChanged.emit(z)

    # ------------------------------------------------------------------ events
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt override)
        p = QPainter(self)
        self._paint_photo(p)  # editor.photo_paint
        p.end()

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._fit_mode:
            self._apply_fit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        if self._image is None:
            return
        steps = event.angleDelta().y() / 120.0
        if steps == 0:
            steps = event.pixelDelta().y() / 50.0
        if steps:
            self.set_zoom(self._zoom * (1.25**steps), event.position())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        self._mouse = pos
        self._press_pos = pos
        btn = event.button()
        if self._gesture is not None:
            event.accept()
            return
        # the compare handle comes first: it drags with every tool, the navigate tool included
        # (only Space, the explicit pan, pans across it)
        if btn == Qt.MouseButton.LeftButton and not self._space and self._near_compare_line(pos):
            self._gesture = "compare"
            self._update_cursor()
            event.accept()
            return
        if btn == Qt.MouseButton.MiddleButton or (btn == Qt.MouseButton.LeftButton and (self._space or self._tool == "none")):
            self._gesture = "pan"
            self._pan_origin = QPointF(self._offset)
            self._update_cursor()
            event.accept()
            return
        if self._image is None:
            return
        if self._tool_press(pos, btn, event.modifiers()):  # editor.photo_tools
            event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        self._mouse = pos
        x, y = self.map_to_image(pos)
        self.cursorMoved.emit(float(x), float(y))
        g = self._gesture
        if g is None:
            self._update_cursor(pos)
        if g == "pan":
            self.set_offset(self._pan_origin + (pos - self._press_pos))
        elif g == "compare":
            size = self._image_size()
            if size is not None:
                self.set_compare_position(x / size[0])
        elif g is not None:
            self._tool_move(pos, x, y)
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        self._mouse = pos
        g = self._gesture
        if g is None:
            return
        if g == "pan":
            if event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
                self._gesture = None
        elif g == "compare":
            self._gesture = None
        else:
            self._tool_release(pos, event.button(), event.modifiers())
        self._update_cursor()
        self.update()
        event.accept()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._tool == "polygon" and event.button() == Qt.MouseButton.LeftButton and self._path:
            self._finish_polygon(event.modifiers())
            event.accept()
            return
        # The first click of a double click was already handled as a press; a second wand, segment,
        # rectangle or lasso gesture at the same spot would only duplicate it (and its undo step).
        if self._tool in ("brush", "eraser", "none") or self._space or event.button() == Qt.MouseButton.MiddleButton:
            self.mousePressEvent(event)
        else:
            event.accept()

    def leaveEvent(self, event) -> None:  # noqa: N802
        if self._gesture is None:
            self._mouse = None
            self.update()
        super().leaveEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        big = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if key == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space = True
                self._update_cursor()
            event.accept()
        elif key in (Qt.Key.Key_BracketLeft, Qt.Key.Key_BraceLeft):
            self._step_brush(-1, big)
            event.accept()
        elif key in (Qt.Key.Key_BracketRight, Qt.Key.Key_BraceRight):
            self._step_brush(+1, big)
            event.accept()
        elif key == Qt.Key.Key_Escape and (self._gesture is not None or self._path or self._segment_points):
            self._cancel_gesture()
            if self._tool == "segment":
                self.clear_segment_points()
            event.accept()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self._tool == "polygon" and self._path:
            self._finish_polygon(event.modifiers())
            event.accept()
        elif key == Qt.Key.Key_Backspace and self._tool == "polygon" and self._path:
            self._path.pop()
            self.update()
            event.accept()
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self._update_cursor()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def focusOutEvent(self, event) -> None:  # noqa: N802
        self._space = False
        self._update_cursor()
        super().focusOutEvent(event)

    # ------------------------------------------------------------------ cursor
    def _near_compare_line(self, pos: QPointF) -> bool:
        """``pos`` (widget coordinates) is within grabbing distance of the compare split line."""
        if not self._compare or self._original is None or self._image is None:
            return False
        x_line = self.map_from_image(self._split * self._image_size()[0], 0).x()
        return abs(pos.x() - x_line) <= _COMPARE_GRAB_PX

    def _update_cursor(self, pos: QPointF | None = None) -> None:
        pos = pos if pos is not None else self._mouse
        if self._gesture == "compare" or (self._gesture is None and not self._space and pos is not None and self._near_compare_line(pos)):
            self.setCursor(QCursor(Qt.CursorShape.SplitHCursor))
        elif self._gesture == "pan":
            self.setCursor(QCursor(Qt.CursorShape.ClosedHandCursor))
        elif self._space or self._tool == "none":
            self.setCursor(QCursor(Qt.CursorShape.OpenHandCursor))
        elif self._tool in ("brush", "eraser"):
            self.setCursor(QCursor(Qt.CursorShape.BlankCursor))
        elif self._tool == "segment":
            self.setCursor(QCursor(Qt.CursorShape.PointingHandCursor))
        else:
            self.setCursor(QCursor(Qt.CursorShape.CrossCursor))
