"""Tool icons drawn with QPainter (crisp at any device pixel ratio, tinted with the palette's text
colour so they suit light and dark themes). No image files needed."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPainter, QPainterPath, QPalette, QPen, QPixmap, QPolygonF

SIZE = 32  # logical drawing grid; rendered at 2x for high-DPI screens


def _arrow(p: QPainter, a: QPointF, b: QPointF, head: float = 5.0) -> None:
    p.drawLine(a, b)
    ang = math.atan2(b.y() - a.y(), b.x() - a.x())
    for s in (-1, 1):
        p.drawLine(b, QPointF(b.x() - head * math.cos(ang + s * 0.5), b.y() - head * math.sin(ang + s * 0.5)))


def _draw(name: str, p: QPainter, fg: QColor, accent: QColor) -> None:
    pen = QPen(fg, 2.2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin)
    p.setPen(pen)
    P = QPointF
    if name == "navigate":
        poly = QPolygonF([P(9, 5), P(9, 25), P(14, 20), P(18, 28), P(21, 27), P(17, 19), P(24, 19)])
        p.setBrush(fg)
        p.drawPolygon(poly)
    elif name == "brush":
        p.drawLine(P(25, 5), P(14, 18))
        p.setBrush(accent)
        p.setPen(Qt.PenStyle.NoPen)
        path = QPainterPath(P(13, 17))
        path.cubicTo(P(6, 17), P(8, 25), P(4, 27))
        path.cubicTo(P(12, 28), P(17, 24), P(15, 19))
        path.closeSubpath()
        p.drawPath(path)
    elif name == "eraser":
        p.save()
        p.translate(16, 16)
        p.rotate(-40)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRoundedRect(QRectF(-10, -6, 20, 12), 2, 2)
        p.setBrush(accent)
        p.drawRoundedRect(QRectF(-10, -6, 8, 12), 2, 2)
        p.restore()
    elif name == "lasso":
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawEllipse(QRectF(5, 5, 22, 14))
        path = QPainterPath(P(10, 17))
        path.cubicTo(P(8, 22), P(13, 24), P(11, 28))
        p.drawPath(path)
    elif name == "polygon":
        p.setBrush(Qt.BrushStyle.NoBrush)
        pts = [P(6, 22), P(12, 6), P(26, 10), P(22, 26)]
        p.drawPolygon(QPolygonF(pts))
        p.setBrush(accent)
        for q in pts:
            p.drawEllipse(q, 2.2, 2.2)
    elif name == "rect":
        pen.setStyle(Qt.PenStyle.DashLine)
        pen.setWidthF(2.0)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(QRectF(6, 8, 20, 16))
    elif name == "wand":
        p.drawLine(P(6, 26), P(19, 13))
        p.setPen(QPen(accent, 2.0, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        for a in range(0, 360, 45):
            r0, r1 = 2.5, 6.0
            c = P(22, 10)
            p.drawLine(
                P(c.x() + r0 * math.cos(math.radians(a)), c.y() + r0 * math.sin(math.radians(a))),
                P(c.x() + r1 * math.cos(math.radians(a)), c.y() + r1 * math.sin(math.radians(a))),
            )
    elif name == "segment":
        p.setBrush(Qt.BrushStyle.NoBrush)
        path = QPainterPath(P(8, 20))
        path.cubicTo(P(4, 8), P(20, 2), P(25, 10))
        path.cubicTo(P(30, 18), P(20, 28), P(8, 20))
        p.drawPath(path)
        p.setBrush(accent)
        p.setPen(Qt.PenStyle.NoPen)
        p.drawEllipse(P(16, 15), 3.2, 3.2)
    elif name == "move":
        c = P(16, 16)
        for d in ((0, -12), (0, 12), (-12, 0), (12, 0)):
            _arrow(p, c, P(16 + d[0], 16 + d[1]), 4.5)
    elif name == "rotate":
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawArc(QRectF(6, 6, 20, 20), 40 * 16, 280 * 16)
        end = P(16 + 10 * math.cos(math.radians(40)), 16 - 10 * math.sin(math.radians(40)))
        p.drawLine(end, P(end.x() - 1, end.y() - 6))
        p.drawLine(end, P(end.x() - 6, end.y() + 1))
    elif name == "scale":
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(QRectF(5, 15, 12, 12))
        _arrow(p, P(14, 18), P(26, 6), 5.0)
    elif name == "frame":
        for x, y, dx, dy in ((5, 5, 1, 1), (27, 5, -1, 1), (5, 27, 1, -1), (27, 27, -1, -1)):
            p.drawLine(P(x, y), P(x + 6 * dx, y))
            p.drawLine(P(x, y), P(x, y + 6 * dy))
        p.setBrush(accent)
        p.setPen(Qt.PenStyle.NoPen)
        p.drawEllipse(P(16, 16), 4, 4)
    elif name == "compare":
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(QRectF(5, 7, 22, 18))
        p.setPen(QPen(accent, 2.4))
        p.drawLine(P(16, 4), P(16, 28))


def make_icon(name: str, palette: QPalette | None = None) -> QIcon:
    pal = palette or QGuiApplication.palette()
    fg = pal.color(QPalette.ColorRole.WindowText)
    accent = QColor("#ff8a3d")
    icon = QIcon()
    for scale in (1, 2):
        pm = QPixmap(SIZE * scale, SIZE * scale)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.scale(scale, scale)
        _draw(name, p, fg, accent)
        p.end()
        pm.setDevicePixelRatio(scale)
        icon.addPixmap(pm)
    return icon
