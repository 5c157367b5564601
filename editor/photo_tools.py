"""The selection tools of :class:`editor.photo_view.PhotoView`: the per-tool mouse handling (brush
and eraser strokes, lasso, polygon, rectangle, magic wand, segment clicks) and the building of each
gesture's mask, emitted once per gesture as ``maskEdited`` (segment clicks as ``segmentClicked``).

Which object and combine mode a gesture edits: region tools use the ``op`` option unless
modifiers say otherwise (Shift add, Alt subtract, Shift+Alt intersect); the brush adds to the
selected object (Alt: erases), the eraser subtracts from it. See :mod:`editor.photo_view`.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor

from core import selection as sel
from editor.photo_paint import _argb_pixel, _Img


class PhotoToolsMixin:
    """Tool gestures of :class:`editor.photo_view.PhotoView` (it owns the gesture state, set up in
    ``PhotoView.__init__``, and dispatches the mouse events here once pan and compare are ruled out)."""

    # ------------------------------------------------------------------ mouse, per tool
    def _tool_press(self, pos: QPointF, btn: Qt.MouseButton, mods: Qt.KeyboardModifier) -> bool:
        """A press at widget point ``pos`` with the current tool (an image is shown); True when the
        event is taken."""
        x, y = self.map_to_image(pos)
        if self._tool == "segment" and btn in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            label = 0 if (btn == Qt.MouseButton.RightButton or mods & Qt.KeyboardModifier.AltModifier) else 1
            w, h = self._image_size()
            if 0 <= x < w and 0 <= y < h:
                self._segment_points.append((x, y, label))
                self.update()
                self.segmentClicked.emit(float(x), float(y), int(label))
            return True
        if btn != Qt.MouseButton.LeftButton:
            if btn == Qt.MouseButton.RightButton and self._tool == "polygon" and self._path:
                self._finish_polygon(mods)
            return False
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
                    return True
            self._path.append((x, y))
        elif self._tool == "rect":
            self._gesture = "rect"
            self._rect_start = (x, y)
        elif self._tool == "wand":
            self._wand_click(x, y, mods)
        self.update()
        return True

    def _tool_move(self, pos: QPointF, x: float, y: float) -> None:
        """The mouse moved to widget point ``pos`` (image ``x``, ``y``) during a tool gesture."""
        g = self._gesture
        if g == "stroke":
            self._continue_stroke(x, y)
        elif g == "lasso":
            last = self.map_from_image(*self._path[-1])
            if (last - pos).manhattanLength() >= 1.5:
                self._path.append((x, y))

    def _tool_release(self, pos: QPointF, btn: Qt.MouseButton, mods: Qt.KeyboardModifier) -> None:
        """A release at widget point ``pos`` during a tool gesture: ends a stroke, lasso or rectangle."""
        g = self._gesture
        if btn != Qt.MouseButton.LeftButton:
            return
        x, y = self.map_to_image(pos)
        if g == "stroke":
            self._continue_stroke(x, y)
            self._end_stroke()
        elif g == "lasso":
            self._path.append((x, y))
            self._gesture = None
            self._emit_region(self._path_mask(), self._modifier_op(mods), "Lasso")
            self._path = []
        elif g == "rect":
            self._gesture = None
            x0, y0 = self._rect_start
            self._rect_start = None
            if (pos - self.map_from_image(x0, y0)).manhattanLength() >= 2.0:
                size = self._image_size()
                mask = sel.rect_mask(x0, y0, x, y, (size[1], size[0]))
                self._emit_region(mask, self._modifier_op(mods), "Rectangle")

    # ------------------------------------------------------------------ targets
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

    # ------------------------------------------------------------------ gestures
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
        # without depth the object wand has nothing to follow: the colour wand decides
        o = self._options if depth is not None else {**self._options, **sel.COLOR_WAND}
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
                concave_tol=o["concave_tol"],
            )
        except sel.SelectionError as exc:
            self.hint.emit(str(exc))
            return
        self._emit_region(mask, self._modifier_op(mods), "Magic wand")
