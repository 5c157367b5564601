"""Painting for :class:`editor.photo_view.PhotoView`: the photo (split for the before/after compare
view), the object-mask tint and outlines, the hatched hole overlay, the stroke in progress, the
tool graphics (lasso and polygon paths, rectangle, segment points, brush outline), the compare
split line and the caption.

Overlays are built once per change with numpy and drawn as premultiplied ARGB images; :class:`_Img`
keeps a numpy array together with the QImage that views its memory.
"""

from __future__ import annotations

import sys

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPalette, QPen, QPolygonF, QTransform

from core import selection as sel

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


class PhotoPaintMixin:
    """Overlay building and painting of :class:`editor.photo_view.PhotoView` (it reads the view's
    state, set up in ``PhotoView.__init__``)."""

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

    def _rebuild_hole_overlay(self, m: np.ndarray) -> None:
        """Fill the hole overlay with the red hatching where ``m`` (bool (H, W)) is set; the hatch
        pattern and the overlay buffer are reused while the size stays."""
        h, w = m.shape
        if self._hatch is None or self._hatch.shape[:2] != (h, w):
            ii, jj = np.mgrid[0:h, 0:w]
            stripe = ((ii + jj) // 3) % 3 == 0
            red = QColor(235, 40, 40)
            self._hatch = np.where(stripe[..., None], _argb_pixel(red, 0.75), _argb_pixel(red, 0.30))
        if self._hole_overlay is None or self._hole_overlay.array.shape[:2] != (h, w):
            self._hole_overlay = _Img.argb(h, w)
        np.multiply(self._hatch, m[..., None], out=self._hole_overlay.array)

    # ------------------------------------------------------------------ painting
    def _paint_photo(self, p: QPainter) -> None:
        """Everything ``paintEvent`` draws, onto the active painter ``p``."""
        pal = self.palette()
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Window).darker(135))
        if self._image is None:
            p.setPen(pal.color(QPalette.ColorRole.WindowText))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Open a photo (File ▸ New from photo)")
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
