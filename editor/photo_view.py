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
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QCursor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QPolygonF,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from core import selection as sel

TOOLS = ("none", "brush", "eraser", "lasso", "polygon", "rect", "wand", "segment")
OPS = ("new", "add", "subtract", "intersect", "replace")

DEFAULT_OPTIONS: dict[str, object] = {
    "brush_size": 24.0,  # brush diameter, image pixels
    "op": "new",  # region tools' default operation
    # wand defaults, chosen for real photos (one click at the object's inmost pixel on the 14
    # photogen scenes: mean IoU 0.39, precision 0.92): colour to the seed on a lightly smoothed
    # photo (texture reads as its average colour), relative depth to the seed, depth steps
    # between neighbours. Precision first: Shift+click adds the parts one click missed. The
    # crease-aware mode (normal_tol, see core.selection.magic_wand) selects whole objects on
    # exact depth (the sample scene) but leaks on estimated depth, so it is off by default.
    "color_tol": 60.0,  # wand: RGB distance to the seed colour (0..255 units), None = ignore
    "color_smooth": 2.0,  # wand: Gaussian smoothing (pixels) of the photo before the colour test
    "depth_tol": 0.25,  # wand: relative depth difference to the seed, None = ignore
    "edge_color_tol": None,  # wand: RGB step between neighbours, None = ignore
    "edge_depth_tol": 0.02,  # wand: relative depth step between neighbours, None = ignore
    "normal_tol": None,  # wand: normal change (degrees) that marks a crease, None = ignore creases
    "crease_color_tol": 20.0,  # wand: RGB step allowed across a crease
    "connectivity": 4,
    "fill_holes": 256,  # wand: fill enclosed holes smaller than this (pixels)
    "mask_opacity": 0.35,  # tint of the selected object; the others get 0.3 of it plus their outline
    "show_masks": True,
    "show_hole": True,
}

MIN_ZOOM, MAX_ZOOM = 0.02, 64.0
MIN_BRUSH, MAX_BRUSH = 1.0, 1000.0
_COMPARE_GRAB_PX = 7.0
_BGRA = sys.byteorder == "little"  # memory order of QImage.Format_ARGB32_Premultiplied


def _argb_pixel(color: QColor, alpha: float) -> np.ndarray:
    """One premultiplied ARGB32 pixel as 4 bytes in memory order."""
    a = float(np.clip(alpha, 0.0, 1.0))
    r, g, b = color.red() * a, color.green() * a, color.blue() * a
    px = (b, g, r, 255 * a) if _BGRA else (255 * a, r, g, b)
    return np.array([round(v) for v in px], dtype=np.uint8)


def _to_qcolor(color) -> QColor:
    if isinstance(color, QColor):
        return QColor(color)
    if isinstance(color, str):
        c = QColor(color)
        if not c.isValid():
            raise ValueError(f"not a colour: {color!r}")
        return c
    vals = [int(v) for v in color]
    if len(vals) not in (3, 4):
        raise ValueError(f"a colour is (r, g, b) or (r, g, b, a), got {color!r}")
    return QColor(*vals)


class _Img:
    """A numpy image and the QImage that views its memory (kept together so the buffer lives)."""

    __slots__ = ("array", "qimage")

    def __init__(self, array: np.ndarray, fmt: QImage.Format) -> None:
        self.array = array
        h, w = array.shape[:2]
        self.qimage = QImage(array.data, w, h, array.strides[0], fmt)

    @classmethod
    def rgb(cls, img: np.ndarray) -> _Img:
        a = np.asarray(img)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"image must be (H, W, 3) or (H, W, 4), got shape {a.shape}")
        if a.dtype != np.uint8:
            if np.issubdtype(a.dtype, np.floating):
                a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            else:
                a = np.clip(a, 0, 255).astype(np.uint8)
        if a.shape[2] == 4:
            a = a[..., :3]
        a = np.ascontiguousarray(a)
        return cls(a, QImage.Format.Format_RGB888)

    @classmethod
    def argb(cls, h: int, w: int) -> _Img:
        return cls(np.zeros((h, w, 4), dtype=np.uint8), QImage.Format.Format_ARGB32_Premultiplied)


class PhotoView(QWidget):
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
        h, w = m.shape
        if self._hatch is None or self._hatch.shape[:2] != (h, w):
            ii, jj = np.mgrid[0:h, 0:w]
            stripe = ((ii + jj) // 3) % 3 == 0
            red = QColor(235, 40, 40)
            self._hatch = np.where(stripe[..., None], _argb_pixel(red, 0.75), _argb_pixel(red, 0.30))
        if self._hole_overlay is None or self._hole_overlay.array.shape[:2] != (h, w):
            self._hole_overlay = _Img.argb(h, w)
        np.multiply(self._hatch, m[..., None], out=self._hole_overlay.array)
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
        color_tol / depth_tol / edge_color_tol / edge_depth_tol / normal_tol / crease_color_tol /
        connectivity / fill_holes,
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

    # ------------------------------------------------------------------ overlays
    def _rebuild_mask_overlay(self) -> None:
        if not self._masks:
            self._mask_overlay = None
            self.update()
            return
        h, w = self._masks[0][1].shape
        ov = _Img.argb(h, w)
        base_alpha = float(self._options["mask_opacity"])
        order = [m for m in self._masks if m[0] != self._selected] + [m for m in self._masks if m[0] == self._selected]
        for oid, mask, color in order:
            if mask.shape != (h, w):
                raise ValueError(f"mask of object {oid!r} has shape {mask.shape}, expected {(h, w)}")
            chosen = oid == self._selected and self._selected is not None
            # the photo must stay readable: other objects get a faint wash and their outline
            fill_a = min(base_alpha * 1.3, 0.85) if chosen else base_alpha * 0.3
            ov.array[mask] = _argb_pixel(color, fill_a)
            edge = sel.outline(mask, 2 if chosen else 1)
            ov.array[edge] = _argb_pixel(color.lighter(130) if chosen else color, 1.0 if chosen else 0.8)
        self._mask_overlay = ov
        self.update()

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt override)
        p = QPainter(self)
        pal = self.palette()
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Window).darker(135))
        if self._image is None:
            p.setPen(pal.color(QPalette.ColorRole.WindowText))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Open a photo (File ▸ New from photo)")
            p.end()
            return
        w, h = self._image_size()
        target = QRectF(0.0, 0.0, float(w), float(h))
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._zoom < 2.0)
        p.setTransform(QTransform(self._zoom, 0.0, 0.0, self._zoom, self._offset.x(), self._offset.y()))
        if self._compare and self._original is not None:
            split = self._split * w
            p.save()
            p.setClipRect(QRectF(0.0, 0.0, split, float(h)))
            p.drawImage(target, self._original.qimage)
            p.setClipRect(QRectF(split, 0.0, w - split, float(h)))
            p.drawImage(target, self._image.qimage)
            p.restore()
        else:
            p.drawImage(target, self._image.qimage)
        if self._options["show_masks"] and self._mask_overlay is not None:
            p.drawImage(target, self._mask_overlay.qimage)
        if self._options["show_hole"] and self._hole_overlay is not None:
            p.drawImage(target, self._hole_overlay.qimage)
        if self._stroke_overlay is not None:
            p.drawImage(target, self._stroke_overlay.qimage)
        p.resetTransform()
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        self._paint_tool_graphics(p)
        if self._compare and self._original is not None:
            self._paint_compare_line(p, h)
        if self._caption:
            self._paint_caption(p)
        p.end()

    def _paint_tool_graphics(self, p: QPainter) -> None:
        dark = QPen(QColor(0, 0, 0, 200), 3.0)
        light = QPen(QColor(255, 255, 255, 230), 1.4)
        if self._gesture == "lasso" and len(self._path) > 1 or self._tool == "polygon" and self._path:
            poly = QPolygonF([self.map_from_image(x, y) for x, y in self._path])
            if self._tool == "polygon" and self._mouse is not None:
                poly.append(self._mouse)
            for pen in (dark, light):
                p.setPen(pen)
                p.drawPolyline(poly)
            if self._tool == "polygon":
                p.setPen(light)
                p.setBrush(QColor(255, 255, 255, 180))
                for x, y in self._path:
                    p.drawEllipse(self.map_from_image(x, y), 3.0, 3.0)
                p.setBrush(Qt.BrushStyle.NoBrush)
        if self._gesture == "rect" and self._rect_start is not None and self._mouse is not None:
            a = self.map_from_image(*self._rect_start)
            r = QRectF(a, self._mouse).normalized()
            for pen in (dark, light):
                p.setPen(pen)
                p.drawRect(r)
        if self._tool == "segment":
            for x, y, label in self._segment_points:
                c = QColor(40, 200, 80) if label else QColor(230, 50, 50)
                p.setPen(QPen(QColor(255, 255, 255), 1.5))
                p.setBrush(c)
                p.drawEllipse(self.map_from_image(x, y), 5.0, 5.0)
            p.setBrush(Qt.BrushStyle.NoBrush)
        if (
            self._tool in ("brush", "eraser")
            and self._mouse is not None
            and self.underMouse()
            and self._gesture != "compare"
            and not (self._gesture is None and self._near_compare_line(self._mouse))  # the split cursor shows instead
            or (self._tool in ("brush", "eraser") and self._gesture == "stroke" and self._mouse is not None)
        ):
            rad = max(float(self._options["brush_size"]) * 0.5 * self._zoom, 1.0)
            for pen in (dark, light):
                p.setPen(pen)
                p.drawEllipse(self._mouse, rad, rad)

    def _paint_compare_line(self, p: QPainter, h: int) -> None:
        x = self.map_from_image(self._split * self._image_size()[0], 0).x()
        top = self.map_from_image(0, 0).y()
        bottom = self.map_from_image(0, h).y()
        p.setPen(QPen(QColor(0, 0, 0, 160), 3.0))
        p.drawLine(QPointF(x, top), QPointF(x, bottom))
        p.setPen(QPen(QColor(255, 255, 255), 1.5))
        p.drawLine(QPointF(x, top), QPointF(x, bottom))
        mid = QPointF(x, (max(top, 0.0) + min(bottom, float(self.height()))) / 2.0)
        p.setBrush(QColor(255, 255, 255))
        p.setPen(QPen(QColor(0, 0, 0, 160), 1.0))
        p.drawEllipse(mid, 8.0, 8.0)
        path = QPainterPath()
        path.moveTo(mid + QPointF(-2.0, -4.0))
        path.lineTo(mid + QPointF(-6.0, 0.0))
        path.lineTo(mid + QPointF(-2.0, 4.0))
        path.moveTo(mid + QPointF(2.0, -4.0))
        path.lineTo(mid + QPointF(6.0, 0.0))
        path.lineTo(mid + QPointF(2.0, 4.0))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPath(path)

    def _paint_caption(self, p: QPainter) -> None:
        fm = p.fontMetrics()
        r = QRectF(8.0, 8.0, fm.horizontalAdvance(self._caption) + 16.0, fm.height() + 8.0)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(0, 0, 0, 150))
        p.drawRoundedRect(r, 4.0, 4.0)
        p.setPen(QColor(255, 255, 255))
        p.drawText(r, Qt.AlignmentFlag.AlignCenter, self._caption)

    # ------------------------------------------------------------------ events
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

    def _modifier_op(self, mods: Qt.KeyboardModifier) -> str | None:
        shift = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        alt = bool(mods & Qt.KeyboardModifier.AltModifier)
        if shift and alt:
            return "intersect"
        if shift:
            return "add"
        if alt:
            return "subtract"
        return None

    def _target(self, op: str) -> tuple[object | None, str] | None:
        """(object id or None for a new object, combine mode) for an operation, or None (with a hint)
        when the operation needs a selected object and there is none."""
        if op == "new":
            return None, "replace"
        if self._selected is None:
            if op in ("add", "replace"):
                return None, "replace"
            self.hint.emit(f"Select an object to {op} from" if op == "subtract" else f"Select an object to {op} with")
            return None
        return self._selected, op

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
        x, y = self.map_to_image(pos)
        mods = event.modifiers()
        if self._tool == "segment" and btn in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            label = 0 if (btn == Qt.MouseButton.RightButton or mods & Qt.KeyboardModifier.AltModifier) else 1
            w, h = self._image_size()
            if 0 <= x < w and 0 <= y < h:
                self._segment_points.append((x, y, label))
                self.update()
                self.segmentClicked.emit(float(x), float(y), int(label))
            event.accept()
            return
        if btn != Qt.MouseButton.LeftButton:
            if btn == Qt.MouseButton.RightButton and self._tool == "polygon" and self._path:
                self._finish_polygon(mods)
            return
        if self._tool in ("brush", "eraser"):
            self._begin_stroke(x, y, mods)
        elif self._tool == "lasso":
            self._gesture = "lasso"
            self._path = [(x, y)]
        elif self._tool == "polygon":
            if len(self._path) >= 3:
                first = self.map_from_image(*self._path[0])
                if (first - pos).manhattanLength() <= 8.0:
                    self._finish_polygon(mods)
                    event.accept()
                    return
            self._path.append((x, y))
        elif self._tool == "rect":
            self._gesture = "rect"
            self._rect_start = (x, y)
        elif self._tool == "wand":
            self._wand_click(x, y, mods)
        self.update()
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
        elif g == "stroke":
            self._continue_stroke(x, y)
        elif g == "lasso":
            last = self.map_from_image(*self._path[-1])
            if (last - pos).manhattanLength() >= 1.5:
                self._path.append((x, y))
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        self._mouse = pos
        g = self._gesture
        if g is None:
            return
        mods = event.modifiers()
        x, y = self.map_to_image(pos)
        if g == "pan":
            if event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
                self._gesture = None
        elif g == "compare":
            self._gesture = None
        elif g == "stroke" and event.button() == Qt.MouseButton.LeftButton:
            self._continue_stroke(x, y)
            self._end_stroke()
        elif g == "lasso" and event.button() == Qt.MouseButton.LeftButton:
            self._path.append((x, y))
            self._gesture = None
            self._emit_region(self._path_mask(), self._modifier_op(mods), "Lasso")
            self._path = []
        elif g == "rect" and event.button() == Qt.MouseButton.LeftButton:
            self._gesture = None
            x0, y0 = self._rect_start
            self._rect_start = None
            if (pos - self.map_from_image(x0, y0)).manhattanLength() >= 2.0:
                size = self._image_size()
                mask = sel.rect_mask(x0, y0, x, y, (size[1], size[0]))
                self._emit_region(mask, self._modifier_op(mods), "Rectangle")
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

    # ------------------------------------------------------------------ tool internals
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

    def _step_brush(self, direction: int, big: bool) -> None:
        size = float(self._options["brush_size"])
        factor = 1.5 if big else 1.15
        new = size * factor if direction > 0 else size / factor
        new = max(new, size + 1.0) if direction > 0 else min(new, size - 1.0)
        self.set_tool_option("brush_size", new)
        self.toolOptionChanged.emit("brush_size", self._options["brush_size"])

    def _cancel_gesture(self) -> None:
        self._gesture = None
        self._stroke = None
        self._stroke_overlay = None
        self._stroke_last = None
        self._stroke_target = None
        self._path = []
        self._rect_start = None
        self.update()

    def _begin_stroke(self, x: float, y: float, mods) -> None:
        erase = self._tool == "eraser" or bool(mods & Qt.KeyboardModifier.AltModifier)
        target = self._target("subtract" if erase else "add")
        if target is None:
            return
        oid, mode = target
        label = "Erase" if erase else "Brush stroke"
        self._stroke_target = (oid, mode, label)
        w, h = self._image_size()
        self._stroke = np.zeros((h, w), dtype=bool)
        self._stroke_overlay = _Img.argb(h, w)
        color = QColor(255, 255, 255)
        for mid, _m, c in self._masks:
            if mid == oid:
                color = c
        self._stroke_px = _argb_pixel(QColor(20, 20, 20), 0.55) if erase else _argb_pixel(color, 0.6)
        self._gesture = "stroke"
        self._stroke_last = (x, y)
        self._paint_stroke(x, y, x, y)

    def _paint_stroke(self, x0: float, y0: float, x1: float, y1: float) -> None:
        r = float(self._options["brush_size"]) * 0.5
        sl = sel.paint_segment(self._stroke, (x0, y0), (x1, y1), r)
        if sl is not None:
            self._stroke_overlay.array[sl] = np.where(self._stroke[sl][..., None], self._stroke_px, 0).astype(np.uint8)

    def _continue_stroke(self, x: float, y: float) -> None:
        if self._stroke is None or self._stroke_last is None:
            return
        lx, ly = self._stroke_last
        if (lx, ly) != (x, y):
            self._paint_stroke(lx, ly, x, y)
            self._stroke_last = (x, y)

    def _end_stroke(self) -> None:
        stroke, target = self._stroke, self._stroke_target
        self._gesture = None
        self._stroke = None
        self._stroke_overlay = None
        self._stroke_last = None
        self._stroke_target = None
        if stroke is not None and target is not None and stroke.any():
            oid, mode, label = target
            self.maskEdited.emit(oid, stroke, mode, label)

    def _path_mask(self) -> np.ndarray | None:
        if len(self._path) < 3:
            return None
        w, h = self._image_size()
        return sel.polygon_mask(self._path, (h, w))

    def _finish_polygon(self, mods) -> None:
        mask = self._path_mask()
        self._path = []
        self._emit_region(mask, self._modifier_op(mods), "Polygon")
        self.update()

    def _emit_region(self, mask: np.ndarray | None, op: str | None, label: str) -> None:
        if mask is None or not mask.any():
            return
        target = self._target(op or str(self._options["op"]))
        if target is None:
            return
        oid, mode = target
        suffix = {"add": " (add)", "subtract": " (subtract)", "intersect": " (intersect)"}.get(mode, "")
        self.maskEdited.emit(oid, mask, mode, label + suffix)

    def _wand_source(self) -> np.ndarray:
        img = self._image.array
        if self._original is not None and self._original.array.shape == img.shape:
            return self._original.array
        return img

    def _wand_click(self, x: float, y: float, mods) -> None:
        photo = self._wand_source()
        depth = self._depth
        if depth is not None and depth.shape != photo.shape[:2]:
            depth = None
        o = self._options
        try:
            mask = sel.magic_wand(
                photo,
                depth,
                (x, y),
                color_tol=o["color_tol"],
                depth_tol=o["depth_tol"],
                connectivity=int(o["connectivity"]),
                edge_color_tol=o["edge_color_tol"],
                edge_depth_tol=o["edge_depth_tol"],
                fill_holes=int(o["fill_holes"] or 0),
                normal_tol=o["normal_tol"],
                crease_color_tol=float(o["crease_color_tol"]),
                color_smooth=float(o["color_smooth"] or 0.0),
            )
        except sel.SelectionError as exc:
            self.hint.emit(str(exc))
            return
        self._emit_region(mask, self._modifier_op(mods), "Magic wand")
