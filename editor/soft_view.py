"""A software-drawn stand-in for the 3D view when OpenGL is unavailable.

Qt's offscreen platform (tests, CI) and some remote desktops have no OpenGL context, and a
``QOpenGLWidget`` there draws nothing. :class:`SoftCloudView` has the same public API and signals
as :class:`viewport.view.PointCloudView`, draws the same point cloud (``viewport.cloud``) with a
numpy z-buffer splat from an orbit camera (``core.viewcam``), and supports orbit, pan, zoom, frame
and reset. It has no gizmos: objects are moved with the numeric fields of the objects panel. A
caption says so.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from core.viewcam import OrbitCamera
from viewport.cloud import BACKGROUND, FILL, build_cloud, hole_flags

#: the same backdrop as the OpenGL view (viewport.view.BACKGROUND_RGB)
BACKGROUND_RGB = (33, 34, 38)
SELECTION_TINT = np.array([255, 158, 31], dtype=np.float32)
HOLE_RGB = np.array([255, 38, 140], dtype=np.float32)
#: points drawn per frame at most (every k-th point of each group beyond that)
DRAW_BUDGET = 160_000


class SoftCloudView(QWidget):
    """See the module docstring. Signals mirror ``PointCloudView`` (only objectPicked is emitted)."""

    #: the software fallback (see viewport.protocol.CloudView)
    uses_gl = False

    transformPreview = Signal(str, object)
    transformCommitted = Signal(str, object, object)
    dragCancelled = Signal(str)
    objectPicked = Signal(object)

    def __init__(self, parent: QWidget | None = None, point_budget: int | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 120)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.point_budget = point_budget
        self.camera = OrbitCamera(size=(max(1, self.width()), max(1, self.height())))
        self._scene = None
        self._cloud = None
        self._pivots: dict[str, np.ndarray] = {}
        self._mask_keys: dict[str, tuple] = {}
        self._selected: str | None = None
        self._mode = "move"
        self._frame = "local"
        self._point_size: float | None = None
        self._hole_flags: np.ndarray | None = None
        self._image: QImage | None = None
        self._dirty = True
        self._last = QPointF()
        self._nav: str | None = None
        self.last_frame_ms = 0.0
        self.caption = "3D view (software: OpenGL is not available, gizmos are off)"

    # ----- the PointCloudView API -----
    def scene(self):
        return self._scene

    def cloud(self):
        return self._cloud

    def set_scene(self, scene) -> None:
        self._scene = scene
        self._cloud = None
        self._pivots = {}
        self._hole_flags = None
        if scene is not None:
            self._rebuild()
            self.reset_camera()
            # a slight three-quarter view shows the depth at a glance
            self.camera.orbit(-60.0, -30.0)
        if self._selected is not None and (scene is None or self._selected not in self._pivots):
            self._selected = None
        self._invalidate()

    def _rebuild(self) -> None:
        self._cloud = build_cloud(self._scene, self.point_budget)
        self._pivots = {o.id: self._scene.pivot(o) for o in self._scene.objects}
        self._mask_keys = {o.id: (id(o.mask), int(np.count_nonzero(o.mask))) for o in self._scene.objects}
        lo = self._cloud.vertices["pos"].min(axis=0)
        hi = self._cloud.vertices["pos"].max(axis=0)
        self.camera.set_bounds(lo, hi)

    def selected(self) -> str | None:
        return self._selected

    def set_selected(self, object_id: str | None) -> None:
        if object_id is not None and object_id not in self._pivots:
            raise KeyError(f"no object with id {object_id!r} in the view's scene")
        if object_id != self._selected:
            self._selected = object_id
            self._invalidate()

    def gizmo_mode(self) -> str:
        return self._mode

    def set_gizmo_mode(self, mode: str) -> None:
        if mode not in ("move", "rotate", "scale"):
            raise ValueError(f"gizmo mode must be one of move, rotate, scale, got {mode!r}")
        self._mode = mode

    def gizmo_frame(self) -> str:
        return self._frame

    def set_frame(self, frame: str) -> None:
        if frame not in ("local", "camera"):
            raise ValueError(f"gizmo frame must be 'local' or 'camera', got {frame!r}")
        self._frame = frame

    def point_size(self) -> float | None:
        return self._point_size

    def set_point_size(self, px: float | None) -> None:
        self._point_size = None if not px else float(np.clip(px, 1.0, 8.0))
        self._invalidate()

    def set_hole_mask(self, mask) -> None:
        self._ensure_cloud()
        if self._cloud is None:
            return
        self._hole_flags = None if mask is None else hole_flags(self._cloud, np.asarray(mask, dtype=bool))
        self._invalidate()

    def refresh_object(self, object_id: str | None = None) -> None:
        if self._scene is None:
            return
        ids = {o.id for o in self._scene.objects}
        keys = {o.id: (id(o.mask), int(np.count_nonzero(o.mask))) for o in self._scene.objects}
        if ids != set(self._pivots) or keys != self._mask_keys:
            # masks or objects changed: the cloud is rebuilt when next drawn (cheap bursts of edits)
            self._stale = True
            self._pivots = {o.id: self._scene.pivot(o) for o in self._scene.objects}
            self._mask_keys = keys
            self._hole_flags = None
            if self._selected is not None and self._selected not in self._pivots:
                self._selected = None
        self._invalidate()

    def _ensure_cloud(self) -> None:
        if getattr(self, "_stale", False) and self._scene is not None:
            self._stale = False
            cam = self.camera.copy()
            self._rebuild()
            self.camera = cam
            self.camera.set_bounds(*self._bounds())

    def reset_camera(self) -> None:
        if self._scene is None:
            return
        self.camera.set_size(self.width(), self.height())
        self.camera.reset_to_photo(self._scene.camera, float(np.median(self._scene.depth)))
        self._invalidate()

    def frame_selection(self) -> None:
        self._ensure_cloud()
        if self._cloud is None:
            return
        key = self._selected if self._selected in (self._cloud.groups if self._cloud else {}) else None
        if key is not None:
            pts = self._transformed(key)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
        else:
            lo, hi = self._bounds()
        self.camera.frame_bounds(lo, hi)
        self._invalidate()

    def pivot(self, object_id: str) -> np.ndarray:
        return self._pivots[object_id].copy()

    def is_dragging(self) -> bool:
        return False

    def cancel_drag(self) -> bool:
        return False

    def gl_error(self) -> str | None:
        return "OpenGL is not available"

    # ----- drawing -----
    def _bounds(self):
        pos = self._cloud.vertices["pos"]
        return pos.min(axis=0), pos.max(axis=0)

    def _transformed(self, key: str) -> np.ndarray:
        pts = self._cloud.positions(key).astype(np.float64)
        try:
            obj = self._scene.object_by_id(key)
        except KeyError:
            return pts
        return obj.transform.apply(pts, self._pivots[key])

    def _invalidate(self) -> None:
        self._dirty = True
        self.update()

    def render_image(self) -> QImage:
        """Draw the cloud into a QImage of the widget's size (device pixels)."""
        t0 = time.perf_counter()
        self._ensure_cloud()
        dpr = self.devicePixelRatioF()
        w = max(1, int(self.width() * dpr))
        h = max(1, int(self.height() * dpr))
        canvas = np.empty((h, w, 3), np.uint8)
        canvas[:] = BACKGROUND_RGB
        if self._cloud is None or self._scene is None:
            return self._qimage(canvas)
        cam = self.camera.copy()
        cam.set_size(w, h)
        verts = self._cloud.vertices
        rgba = verts["rgba"]
        stride = max(1, int(np.ceil(self._cloud.count / DRAW_BUDGET)))
        pos_parts, col_parts = [], []
        # the still groups' positions and colours at this stride: once per cloud (a drag moves
        # only objects; re-reading ~160k structured vertices every frame cost milliseconds)
        held = getattr(self, "_still", None)
        if held is None or held[0] is not self._cloud or held[1] != stride:
            still = {}
            for key, g in self._cloud.groups.items():
                sl = slice(g.first, g.first + g.count, stride)
                still[key] = (sl, verts["pos"][sl].astype(np.float64), rgba[sl, :3].astype(np.float32))
            self._still = (self._cloud, stride, still)
        still = self._still[2]
        for key in self._cloud.groups:
            sl, pts, cols = still[key]
            if key in (BACKGROUND, FILL):
                if self._hole_flags is not None:
                    flags = self._hole_flags[sl].view(bool)
                    if flags.any():
                        cols = cols.copy()
                        cols[flags] = 0.35 * cols[flags] + 0.65 * HOLE_RGB
            else:
                try:
                    obj = self._scene.object_by_id(key)
                except KeyError:
                    continue
                if not obj.visible:
                    continue
                pts = obj.transform.apply(pts, self._pivots[key]) if key in self._pivots else pts
                if key == self._selected:
                    cols = 0.62 * cols + 0.38 * SELECTION_TINT
            pos_parts.append(pts)
            col_parts.append(cols)
        from core.geometry.warp import compiled_kernels

        jit = compiled_kernels()
        # splat size: a point covers `spacing` photo pixels at its photo depth; seen from here that
        # is spacing * (Z_photo / f_photo) * f_view / z_view screen pixels (the median of a sample)
        spacing = max(g.spacing for g in self._cloud.groups.values()) * np.sqrt(stride)
        if self._point_size:
            size = self._point_size
        else:
            step = max(1, sum(len(q) for q in pos_parts) // 4096)
            sample = np.concatenate([q[::step] for q in pos_parts]) if pos_parts else np.zeros((0, 3))
            zs = cam.to_view(sample)[:, 2]
            front = zs > 1e-6
            foot = spacing * (sample[front, 2] / self._scene.camera.focal) * cam.focal / zs[front]
            size = float(np.clip(np.median(foot) if foot.size else 1.0, 1.0, 6.0))
        r = int(np.ceil(size)) if size > 1.5 else 1
        if jit is not None:  # compiled: a z-buffer instead of sorting ~160k points every frame
            cx, cy = cam.principal
            if getattr(self, "_zbuf", None) is None or self._zbuf.shape != (h, w):
                self._zbuf = np.empty((h, w))
            zbuf = self._zbuf
            zbuf.fill(np.inf)
            eye = np.asarray(cam.eye, np.float64)
            rot = np.ascontiguousarray(cam.rotation, np.float64)
            for q, c in zip(pos_parts, col_parts):  # group by group: the painter's order
                jit.splat_points(
                    np.ascontiguousarray(q, np.float64), np.ascontiguousarray(c, np.float32), eye, rot, float(cam.focal), float(cx), float(cy), r, canvas, zbuf
                )
        else:
            pts = np.concatenate(pos_parts).astype(np.float64)
            cols = np.concatenate(col_parts)
            x, y, z = cam.project(pts)
            ok = np.isfinite(x) & (z > 1e-6)
            xi = np.floor(x[ok]).astype(np.int64)
            yi = np.floor(y[ok]).astype(np.int64)
            zz = z[ok]
            cc = cols[ok]
            order = np.argsort(-zz, kind="stable")  # far first: nearer points overwrite
            xi, yi, cc = xi[order], yi[order], cc[order]
            for dx, dy in [(dx, dy) for dx in range(r) for dy in range(r)]:
                xs, ys = xi + dx, yi + dy
                inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
                canvas[ys[inside], xs[inside]] = np.clip(cc[inside], 0, 255).astype(np.uint8)
        self.last_frame_ms = (time.perf_counter() - t0) * 1000.0
        img = self._qimage(canvas)
        img.setDevicePixelRatio(dpr)
        return img

    @staticmethod
    def _qimage(canvas: np.ndarray) -> QImage:
        h, w = canvas.shape[:2]
        return QImage(canvas.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        if self._dirty or self._image is None or self._image.size() != self.size() * self.devicePixelRatioF():
            self._image = self.render_image()
            self._dirty = False
        p = QPainter(self)
        p.drawImage(0, 0, self._image)
        p.setPen(QColor(230, 230, 235, 200))
        f = p.font()
        f.setPointSizeF(max(7.0, f.pointSizeF() * 0.9))
        p.setFont(f)
        p.drawText(self.rect().adjusted(10, 8, -10, -8), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, self.caption)
        p.end()

    def resizeEvent(self, event) -> None:  # noqa: N802
        self._dirty = True
        super().resizeEvent(event)

    # ----- navigation -----
    def mousePressEvent(self, event) -> None:  # noqa: N802
        self._last = event.position()
        if event.button() == Qt.MouseButton.MiddleButton or (
            event.button() == Qt.MouseButton.LeftButton and event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            self._nav = "pan"
        elif event.button() == Qt.MouseButton.LeftButton:
            self._nav = "orbit"

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._nav is None:
            return
        pos = event.position()
        dx, dy = pos.x() - self._last.x(), pos.y() - self._last.y()
        self._last = pos
        if self._nav == "orbit":
            self.camera.orbit(dx, dy)
        else:
            self.camera.set_size(self.width(), self.height())
            self.camera.pan(dx, dy)
        self._invalidate()

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        self._nav = None

    def wheelEvent(self, event) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.camera.zoom(0.85**steps)
            self._invalidate()

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_F:
            self.frame_selection()
        elif event.key() == Qt.Key.Key_Home:
            self.reset_camera()
        else:
            super().keyPressEvent(event)
