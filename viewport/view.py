"""PointCloudView: the interactive 3D view of a scene (Qt OpenGL widget).

It draws the scene's lifted point cloud (see :mod:`viewport.cloud`) with modern GL through
``PySide6.QtOpenGL`` (one vertex buffer, one draw call per group, each object's
:class:`core.transform.Transform3D` as a model matrix uniform, so a drag never re-uploads points),
the selected object tinted with its bounding box, the hole (the filled background behind the
objects) hatched, and the gizmo of the selected object. Picking and drag math live in
:mod:`core.gizmo`, the camera in :mod:`core.viewcam`.

Frame rate (software GL draws about 10 million points a second on two cores, so a frame's cost is
its point count): the vertex buffer holds the cloud twice, in raster order (drawn at rest: the
fastest order for software GL) and in the stratified level-of-detail order of
:mod:`viewport.cloud`. While the camera or a gizmo moves, each group draws only its points of the
lowest dither ranks from the second copy (a complete lattice: every second photo pixel, or every
fourth, ...), at most :attr:`PointCloudView.interactive_points` in all, with points widened to
cover the same surface; at the release of the button (or a cancel), or :data:`REST_MS` after the
last mouse move or wheel step, the full cloud is drawn again, so the picture at rest is always the
full-resolution one. A new hole mask rewrites only the background's flags, from buffers allocated
once per cloud; a transform is a uniform. Points off the view are dropped in the vertex shader
(software GL's clipper is slow for points).

Frames: world = the photo's camera frame (+X right, +Y down, +Z forward, depth units).

Mouse: left drag on a gizmo handle edits the selected object (Ctrl snaps); left drag elsewhere
or Alt+left drag orbits; middle or Shift+left drag pans; the wheel zooms towards the cursor; a
left click picks an object. Keys: F frames the selection (or the scene), Home looks through the
photo's camera, +/- change the point size, Esc (or a right click) cancels a drag.

Contract with the editor (:class:`viewport.protocol.CloudView`): the view never writes a
transform. During a drag it proposes one on every mouse move (``transformPreview(id, t)``; the
editor's document model writes it, so previews reading the scene follow); at release it emits
``transformCommitted(id, old, new)`` (the editor records the undo step, which writes ``new``); on
cancel it emits ``dragCancelled(id)`` (the editor puts ``old`` back). The view keeps no undo
history. After changing transforms elsewhere call :meth:`refresh_object`; after
changing masks or the object list call :meth:`set_scene` again (or :meth:`refresh_object`, which
notices a changed mask).
"""

from __future__ import annotations

import math
import time

import numpy as np
from PySide6.QtCore import QPointF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QMatrix4x4, QSurfaceFormat, QVector4D
from PySide6.QtOpenGL import QOpenGLBuffer, QOpenGLFramebufferObject, QOpenGLShader, QOpenGLShaderProgram, QOpenGLVertexArrayObject
from PySide6.QtOpenGLWidgets import QOpenGLWidget

from core import gizmo as gz
from core.scene import Scene
from core.viewcam import OrbitCamera
from viewport.cloud import BACKGROUND, DEFAULT_POINT_BUDGET, FILL, LOD_RANKS, VERTEX_BYTES, CloudData, build_cloud

# GL enums (PySide6 does not export them)
GL_POINTS, GL_LINES, GL_TRIANGLES = 0x0000, 0x0001, 0x0004
GL_UNSIGNED_BYTE, GL_FLOAT = 0x1401, 0x1406
GL_DEPTH_TEST, GL_BLEND, GL_LEQUAL = 0x0B71, 0x0BE2, 0x0203
GL_SRC_ALPHA, GL_ONE_MINUS_SRC_ALPHA = 0x0302, 0x0303
GL_COLOR_BUFFER_BIT, GL_DEPTH_BUFFER_BIT = 0x4000, 0x0100
GL_PROGRAM_POINT_SIZE = 0x8642
GL_FRAMEBUFFER, GL_READ_FRAMEBUFFER, GL_DRAW_FRAMEBUFFER, GL_NEAREST = 0x8D40, 0x8CA8, 0x8CA9, 0x2600

BACKGROUND_RGB = (0.13, 0.135, 0.15)
SELECTION_TINT = (1.0, 0.62, 0.12, 0.38)
HOLE_RGBA = (1.0, 0.15, 0.55, 0.85)
MAX_POINT_SIZE = 24.0
CLICK_SLOP_PX = 4.0
#: automatic point size factor away from the photo's own viewpoint (1 there: one pixel per point)
OFF_PHOTO_COVERAGE = 1.4
#: the most points drawn in a frame while the camera or a gizmo moves (the level-of-detail budget;
#: see PointCloudView._lod_ranks): a quarter of a cloud of up to 160k points, a sixteenth up to
#: 640k. 64k (a quarter of the editor's 250k-point clouds: 60k points) left a gizmo drag at
#: 18.3 ms a frame on a 2-core CPU with software GL, above the 16 ms of display rate (the empty
#: frame alone costs 6.5 ms there); a sixteenth (15k points, 4x wider) draws it in 12.0 ms
INTERACTIVE_POINTS = 40_000
#: the full cloud is drawn again this long (ms) after the last interaction
REST_MS = 150
#: the most points a frame at rest adds to the full picture (PointCloudView.rest_chunk_points):
#: software GL draws about 10 million points a second on two cores over a 6.5 ms empty frame, so
#: the editor's 250k-point cloud drawn at once took 25-38 ms a frame here (above the 33 ms of the
#: target, with no headroom); in two frames of 125k points each takes about 20 ms
REST_CHUNK_POINTS = 125_000
#: the depth buffer's clear value: just short of the far plane (depth 1), where the vertex shader
#: puts points off the view; every point inside the clip range stays nearer (the far plane is at
#: least 5 % beyond the scene and at most 10^4 times the near one: 1 - depth >= 5e-6)
CLEAR_DEPTH = 1.0 - 2e-6

_VERTEX_SRC = """
attribute vec3 a_pos;
attribute vec4 a_color;
attribute float a_flag;
uniform mat4 u_mvp;
uniform float u_size_k;     // auto size: pixels per (source depth / clip w); 0 = fixed
uniform float u_size_fixed; // fixed size in device pixels
uniform vec4 u_tint;
uniform vec4 u_flag_color;
uniform vec2 u_viewport;    // viewport size in device pixels
uniform float u_cull;       // 1: cloud points, culled here (see below); 0: the overlay's lines and triangles
varying vec4 v_color;
void main() {
    vec4 p = u_mvp * vec4(a_pos, 1.0);
    float s = u_size_k > 0.0 ? ceil(u_size_k * a_pos.z / max(p.w, 1e-6) - 0.02) : u_size_fixed;
    s = clamp(s, 1.0, %(max_size).1f);
    if (u_cull > 0.0) {
        // software GL (llvmpipe) sends a whole batch of points down a slow path when one of them
        // needs clipping (a third of a frame's time in an orbited view): leave it nothing to clip.
        // A point wholly off the view goes onto the far plane at the view's edge, where the depth
        // test (against a clear depth just short of it) drops it; one straddling the edge moves
        // onto the edge (its visible part shifts by at most half its size).
        vec2 reach = p.w * (1.0 + s / u_viewport);
        if (p.w <= 0.0 || abs(p.z) > p.w || any(greaterThan(abs(p.xy), reach))) {
            p = vec4(p.w > 0.0 ? clamp(p.xy / p.w, -1.0, 1.0) : vec2(0.0), 1.0, 1.0);
        } else {
            p.xy = clamp(p.xy, -p.w, p.w);
        }
    }
    gl_Position = p;
    gl_PointSize = s;
    vec3 c = mix(a_color.rgb, u_tint.rgb, u_tint.a);
    c = mix(c, u_flag_color.rgb, a_flag * u_flag_color.a);
    v_color = vec4(c, a_color.a);
}
"""

_FRAGMENT_SRC = """
varying vec4 v_color;
void main() { gl_FragColor = v_color; }
"""


def _shader_sources(context) -> tuple[str, str]:
    """Vertex and fragment sources for the context's GLSL flavour (ES, core or compatibility)."""
    vs = _VERTEX_SRC % {"max_size": MAX_POINT_SIZE}
    fs = _FRAGMENT_SRC
    fmt = context.format()
    if context.isOpenGLES():
        return "#version 100\nprecision highp float;\n" + vs, "#version 100\nprecision mediump float;\n" + fs
    if fmt.profile() == QSurfaceFormat.OpenGLContextProfile.CoreProfile:
        return (
            "#version 330 core\n#define attribute in\n#define varying out\n" + vs,
            "#version 330 core\n#define varying in\nout vec4 fragColor;\n#define gl_FragColor fragColor\n" + fs,
        )
    return "#version 120\n" + vs, "#version 120\n" + fs


def _qmatrix(m: np.ndarray) -> QMatrix4x4:
    return QMatrix4x4(*np.asarray(m, dtype=np.float64).reshape(16).tolist())


_IDENTITY = np.eye(4)


def _box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


_BOX_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]


class PointCloudView(QOpenGLWidget):
    """The 3D view of a scene. See the module docstring for the mouse, keys and signal contract."""

    #: the OpenGL view (see viewport.protocol.CloudView)
    uses_gl = True
    #: drop points off the view in the vertex shader (see _VERTEX_SRC) rather than leave them to
    #: GL's clipper, which is a third slower on software GL (False: the tests' reference)
    cull_in_shader = True

    #: (object id, Transform3D) on every mouse move of a drag
    transformPreview = Signal(str, object)
    #: (object id, old Transform3D, new Transform3D) at the end of a drag that changed something
    transformCommitted = Signal(str, object, object)
    #: (object id) a drag was cancelled (Esc or right click); the object has its old transform back
    dragCancelled = Signal(str)
    #: (object id or None) after a click on an object (or on nothing)
    objectPicked = Signal(object)

    def __init__(self, parent=None, point_budget: int | None = DEFAULT_POINT_BUDGET, interactive_points: int | None = INTERACTIVE_POINTS):
        super().__init__(parent)
        fmt = QSurfaceFormat.defaultFormat()
        fmt.setDepthBufferSize(24)
        fmt.setSamples(0)
        self.setFormat(fmt)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setMinimumSize(160, 120)
        self.point_budget = point_budget
        self.camera = OrbitCamera(size=(max(1, self.width()), max(1, self.height())))
        self._scene: Scene | None = None
        self._cloud: CloudData | None = None
        self._pivots: dict[str, np.ndarray] = {}
        self._mask_keys: dict[str, tuple] = {}
        self._selected: str | None = None
        self._mode = gz.MOVE
        self._frame = "local"
        self._point_size: float | None = None  # None: automatic (continuous surface)
        self._hole_mask: np.ndarray | None = None
        self._hover: gz.Handle | None = None
        self._drag: gz.GizmoDrag | None = None
        self._drag_id: str | None = None
        self._nav: str | None = None  # "orbit" | "pan" | "pending" (left press, may become a click)
        self._last_pos = QPointF()
        self._press_pos = QPointF()
        # level of detail: fewer points while the camera or a gizmo moves, all of them at rest
        self.interactive_points = interactive_points
        self._interacting = False
        self._rest_timer = QTimer(self)
        self._rest_timer.setSingleShot(True)
        self._rest_timer.setInterval(REST_MS)
        self._rest_timer.timeout.connect(self._on_rest)
        self._drawn_points = 0
        #: keep the full picture at rest and copy it back while nothing in it changes (False: draw
        #: every frame; the tests that count what a frame draws set it)
        self.cache_at_rest = True
        #: frames that copied the kept picture instead of drawing the cloud (the tests read it)
        self.cached_frames = 0
        self._picture_key: tuple | None = None
        self._rest_fbo: QOpenGLFramebufferObject | None = None
        #: the most points a frame adds to the kept picture at rest: a full picture larger than
        #: this is built over several frames (showing the level of detail until it is complete),
        #: so that no frame at rest stalls the event loop for a whole cloud (0: in one frame)
        self.rest_chunk_points = REST_CHUNK_POINTS
        self._building: tuple[tuple, int] | None = None  # (picture, points drawn so far)
        self._build_drawn = 0
        self._complete_next = False
        self._full_shown = False
        # bumped by every write to the GL buffers (a kept picture of older contents is stale)
        self._gpu_version = 0
        #: bytes written to the GL buffers so far: "vertices" (whole-cloud uploads) and "flags"
        #: (hole-mask updates) (the tests and the benchmark read it)
        self.uploaded_bytes = {"vertices": 0, "flags": 0}
        # hole flags, buffers allocated once per cloud (see _prepare_flags)
        self._flag_span = (0, 0)
        self._flag_index: np.ndarray | None = None
        self._flag_lod_index: np.ndarray | None = None
        self._mask_buf: np.ndarray | None = None
        self._flag_bufs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        # GL state
        self._gl_ready = False
        self._gl_error: str | None = None
        self._program: QOpenGLShaderProgram | None = None
        self._vbo: QOpenGLBuffer | None = None
        self._flag_vbo: QOpenGLBuffer | None = None
        self._vao: QOpenGLVertexArrayObject | None = None
        self._giz_vbo: QOpenGLBuffer | None = None
        self._giz_vao: QOpenGLVertexArrayObject | None = None
        self._upload_pending = False
        self._flags_pending = False
        self._uploaded_count = 0
        self.last_frame_ms = 0.0

    # ================================================================ public API
    def scene(self) -> Scene | None:
        return self._scene

    def cloud(self) -> CloudData | None:
        return self._cloud

    def set_scene(self, scene: Scene | None) -> None:
        """Show ``scene`` (or nothing): rebuilds the point cloud and looks through the photo's camera."""
        self._cancel_drag(emit=True)
        self._scene = scene
        self._cloud = None
        self._pivots.clear()
        self._mask_keys.clear()
        if self._selected is not None and (scene is None or not any(o.id == self._selected for o in scene.objects)):
            self._selected = None
        self._hole_mask = None
        self._interacting = False
        self._rest_timer.stop()
        if scene is not None:
            self._rebuild()
            self.reset_camera()
        self._hover = None
        self.update()

    def _rebuild(self) -> None:
        scene = self._scene
        self._cloud = build_cloud(scene, self.point_budget)
        self._pivots = {o.id: scene.pivot(o) for o in scene.objects}
        self._mask_keys = {o.id: self._mask_key(o) for o in scene.objects}
        if self._hole_mask is not None and self._hole_mask.shape != self._cloud.shape:
            self._hole_mask = None
        self._prepare_flags()
        self._upload_pending = True
        self._flags_pending = True

    def _prepare_flags(self) -> None:
        """The hole-flag buffers of the new cloud. Only points with a photo pixel (background and
        fill, the first groups) can be flagged, so a mask update touches only their span
        ``lo .. hi`` of each copy of the cloud. Per copy: the flags, the flags last uploaded, and
        where they differ; ``_flag_index``: each raster-order point's photo pixel (flat index into
        ``_mask_buf``, whose last, pad byte is always 0); ``_flag_lod_index``: the stratified
        order of the span."""
        cloud = self._cloud
        h, w = cloud.shape
        has_px = np.flatnonzero(cloud.pixels[:, 0] >= 0)
        lo, hi = (int(has_px[0]), int(has_px[-1]) + 1) if len(has_px) else (0, 0)
        px = cloud.pixels[lo:hi]
        index = px[:, 0].astype(np.intp) * w + px[:, 1]
        index[px[:, 0] < 0] = h * w  # the pad byte: never flagged
        lod = cloud.lod[lo:hi] - lo
        if len(lod) and (lod.min() < 0 or lod.max() >= hi - lo):
            raise ValueError("the level-of-detail order must keep each group in its own range")
        self._flag_span = (lo, hi)
        self._flag_index = index
        self._flag_lod_index = lod
        self._mask_buf = np.zeros(h * w + 1, dtype=np.uint8)
        self._flag_bufs = [(np.zeros(hi - lo, np.uint8), np.zeros(hi - lo, np.uint8), np.zeros(hi - lo, bool)) for _ in range(2)]

    @staticmethod
    def _mask_key(obj) -> tuple:
        return (id(obj.mask), int(np.count_nonzero(obj.mask)))

    def selected(self) -> str | None:
        return self._selected

    def set_selected(self, object_id: str | None) -> None:
        """Highlight the object ``object_id`` and show its gizmo (None: nothing selected)."""
        if object_id is not None and (self._scene is None or object_id not in self._pivots):
            raise KeyError(f"no object with id {object_id!r} in the view's scene")
        if object_id != self._selected:
            self._cancel_drag(emit=True)
            self._selected = object_id
            self._hover = None
            self.update()

    def gizmo_mode(self) -> str:
        return self._mode

    def set_gizmo_mode(self, mode: str) -> None:
        """ "move", "rotate" or "scale"."""
        if mode not in gz.MODES:
            raise ValueError(f"gizmo mode must be one of {', '.join(gz.MODES)}, got {mode!r}")
        if mode != self._mode:
            self._cancel_drag(emit=True)
            self._mode = mode
            self._hover = None
            self.update()

    def gizmo_frame(self) -> str:
        return self._frame

    def set_frame(self, frame: str) -> None:
        """Gizmo axes: "local" (the object's rotated axes) or "camera" (the photo camera's axes)."""
        if frame not in gz.FRAMES:
            raise ValueError(f"gizmo frame must be 'local' or 'camera', got {frame!r}")
        if frame != self._frame:
            self._cancel_drag(emit=True)
            self._frame = frame
            self.update()

    def point_size(self) -> float | None:
        """Fixed point size in pixels, or None for the automatic size (each point covers its share
        of the surface: a continuous picture from any viewpoint, one pixel per point through the
        photo's camera at the photo's size)."""
        return self._point_size

    def set_point_size(self, px: float | None) -> None:
        """Fixed point size in pixels (1..24), or None / 0 for the automatic size."""
        if px is None or px == 0:
            self._point_size = None
        else:
            px = float(px)
            if not math.isfinite(px) or px < 0:
                raise ValueError(f"point size must be a positive number of pixels, got {px!r}")
            self._point_size = float(np.clip(px, 1.0, MAX_POINT_SIZE))
        self.update()

    def set_hole_mask(self, mask: np.ndarray | None) -> None:
        """Highlight the background points of the pixels in ``mask`` ((H, W) bool at the scene's
        working size, e.g. the preview's hole), or nothing with None."""
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if self._cloud is not None and mask.shape != self._cloud.shape:
                raise ValueError(f"hole mask shape {mask.shape} does not match the scene's {self._cloud.shape}")
        self._hole_mask = mask
        self._flags_pending = True
        self.update()

    def refresh_object(self, object_id: str | None = None) -> None:
        """Redraw after an object's transform or visibility changed outside the view (None: all);
        rebuilds the cloud when masks or the object list changed."""
        if self._scene is None:
            return
        ids = [o.id for o in self._scene.objects]
        if set(ids) != set(self._pivots) or any(self._mask_keys.get(o.id) != self._mask_key(o) for o in self._scene.objects):
            self._cancel_drag(emit=True)
            self._rebuild()
            if self._selected is not None and self._selected not in self._pivots:
                self._selected = None
        self.update()

    def reset_camera(self) -> None:
        """Look exactly through the photo's camera (Home)."""
        if self._scene is None:
            return
        self.camera.set_size(self.width(), self.height())
        self.camera.reset_to_photo(self._scene.camera, float(np.median(self._scene.depth)))
        self.update()

    def frame_selection(self) -> None:
        """Aim at and fit the selected object (or the whole scene) (F)."""
        if self._cloud is None:
            return
        if self._selected is not None:
            lo, hi = self._object_bounds(self._selected)
        else:
            lo, hi = self._scene_bounds()
        self.camera.frame_bounds(lo, hi)
        self.update()

    def pivot(self, object_id: str) -> np.ndarray:
        """The object's pivot (world, depth units): the centre of its untransformed points."""
        return self._pivots[object_id].copy()

    def gizmo_pose(self) -> gz.GizmoPose | None:
        """Pose of the selected object's gizmo for the current camera (None without selection)."""
        obj = self._selected_object()
        if obj is None:
            return None
        self.camera.set_size(self.width(), self.height())
        return gz.gizmo_pose(self._pivots[obj.id], obj.transform, self._frame, self.camera)

    def hovered_handle(self) -> gz.Handle | None:
        return self._hover

    def is_dragging(self) -> bool:
        return self._drag is not None

    def is_interacting(self) -> bool:
        """True while the camera or a gizmo moves (until :data:`REST_MS` after the last move):
        frames then draw at most :attr:`interactive_points` points."""
        return self._interacting

    def drawn_points(self) -> int:
        """Points of the cloud drawn by the last frame."""
        return self._drawn_points

    def _interact(self) -> None:
        """The camera or a gizmo moved: draw the level of detail until the mouse rests."""
        self._interacting = True
        self._rest_timer.start()

    def _on_rest(self) -> None:
        self._interacting = False
        self.update()

    def _end_interaction(self) -> None:
        """A drag or a camera gesture ended (release, cancel): the full cloud at once."""
        self._rest_timer.stop()
        if self._interacting:
            self._on_rest()

    def gl_error(self) -> str | None:
        """Why GL could not be set up (None when fine)."""
        return self._gl_error

    def grabFramebuffer(self):  # noqa: N802 - Qt's name
        """The widget's picture, the full one at rest (a picture still being built over several
        frames is drawn whole for the grab)."""
        self._complete_next = True
        try:
            return super().grabFramebuffer()
        finally:
            self._complete_next = False

    def showed_full_picture(self) -> bool:
        """Whether the last frame showed the full cloud (False while the camera or a gizmo moves,
        and while the picture at rest is still being built over several frames)."""
        return self._full_shown

    def pick_object(self, x: float, y: float, radius_px: float = 4.0) -> str | None:
        """The id of the visible object whose nearest point is drawn at screen ``(x, y)`` (pixels),
        or None when the background (or nothing) is there."""
        if self._cloud is None or self._scene is None:
            return None
        cam = self.camera
        best_z, best_key = math.inf, None
        vis = {o.id: o for o in self._scene.objects if o.visible}
        keys = [BACKGROUND, FILL, *vis]
        for key in keys:
            g = self._cloud.groups.get(key)
            if g is None or g.count == 0:
                continue
            pts = self._cloud.positions(key)
            if key in vis:
                o = vis[key]
                pts = o.transform.apply(pts, self._pivots[key])
            px, py, pz = cam.project(pts)
            near = (np.abs(px - x) <= radius_px) & (np.abs(py - y) <= radius_px) & (pz > 0)
            if near.any():
                z = float(pz[near].min())
                if z < best_z:
                    best_z, best_key = z, key
        return best_key if best_key in vis else None

    # ================================================================ geometry helpers
    def _selected_object(self):
        if self._scene is None or self._selected is None:
            return None
        try:
            obj = self._scene.object_by_id(self._selected)
        except KeyError:
            return None
        return obj if obj.visible else None

    def _object_bounds(self, object_id: str) -> tuple[np.ndarray, np.ndarray]:
        g = self._cloud.groups[object_id]
        obj = self._scene.object_by_id(object_id)
        c = obj.transform.apply(_box_corners(g.lo, g.hi), self._pivots[object_id])
        return c.min(axis=0), c.max(axis=0)

    def _scene_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        boxes = []
        for key, g in self._cloud.groups.items():
            if g.count == 0:
                continue
            if key in (BACKGROUND, FILL):
                boxes.append(_box_corners(g.lo, g.hi))
            else:
                boxes.append(np.stack(self._object_bounds(key)))
        if not boxes:
            return np.zeros(3), np.ones(3)
        allc = np.concatenate(boxes)
        return allc.min(axis=0), allc.max(axis=0)

    # ================================================================ GL
    def initializeGL(self) -> None:
        ctx = self.context()
        self._gl_ready = False
        try:
            vs, fs = _shader_sources(ctx)
            prog = QOpenGLShaderProgram(self)
            if not prog.addShaderFromSourceCode(QOpenGLShader.ShaderTypeBit.Vertex, vs):
                raise RuntimeError("vertex shader: " + prog.log())
            if not prog.addShaderFromSourceCode(QOpenGLShader.ShaderTypeBit.Fragment, fs):
                raise RuntimeError("fragment shader: " + prog.log())
            prog.bindAttributeLocation("a_pos", 0)
            prog.bindAttributeLocation("a_color", 1)
            prog.bindAttributeLocation("a_flag", 2)
            if not prog.link():
                raise RuntimeError("shader link: " + prog.log())
            self._program = prog
            self._u = {n: prog.uniformLocation(n) for n in ("u_mvp", "u_size_k", "u_size_fixed", "u_tint", "u_flag_color", "u_viewport", "u_cull")}
            self._vbo = QOpenGLBuffer(QOpenGLBuffer.Type.VertexBuffer)
            self._vbo.create()
            self._vbo.setUsagePattern(QOpenGLBuffer.UsagePattern.StaticDraw)
            self._flag_vbo = QOpenGLBuffer(QOpenGLBuffer.Type.VertexBuffer)
            self._flag_vbo.create()
            self._flag_vbo.setUsagePattern(QOpenGLBuffer.UsagePattern.DynamicDraw)
            self._giz_vbo = QOpenGLBuffer(QOpenGLBuffer.Type.VertexBuffer)
            self._giz_vbo.create()
            self._giz_vbo.setUsagePattern(QOpenGLBuffer.UsagePattern.StreamDraw)
            self._vao = QOpenGLVertexArrayObject(self)
            self._vao.create()
            self._giz_vao = QOpenGLVertexArrayObject(self)
            self._giz_vao.create()
            self._upload_pending = self._cloud is not None
            self._flags_pending = self._cloud is not None
            self._uploaded_count = 0
            self._gl_ready = True
            self._gl_error = None
            ctx.aboutToBeDestroyed.connect(self._cleanup_gl)
        except RuntimeError as exc:
            self._gl_error = str(exc).strip().splitlines()[0] if str(exc).strip() else "OpenGL set-up failed"

    def _cleanup_gl(self) -> None:
        """Free the GL objects while their context still exists (it is going away)."""
        if not self._gl_ready:
            return
        self.makeCurrent()
        for vao in (self._vao, self._giz_vao):
            if vao is not None:
                vao.destroy()
        for buf in (self._vbo, self._flag_vbo, self._giz_vbo):
            if buf is not None:
                buf.destroy()
        self._rest_fbo = None  # freed while the context is current
        self._picture_key = None
        self._building = None
        self._program = None
        self._vbo = self._flag_vbo = self._giz_vbo = None
        self._vao = self._giz_vao = None
        self._gl_ready = False
        self.doneCurrent()

    def _bind_cloud_attributes(self) -> None:
        prog = self._program
        self._vbo.bind()
        prog.enableAttributeArray(0)
        prog.setAttributeBuffer(0, GL_FLOAT, 0, 3, VERTEX_BYTES)
        prog.enableAttributeArray(1)
        prog.setAttributeBuffer(1, GL_UNSIGNED_BYTE, 12, 4, VERTEX_BYTES)  # normalised by Qt
        self._vbo.release()
        self._flag_vbo.bind()
        prog.enableAttributeArray(2)
        prog.setAttributeBuffer(2, GL_UNSIGNED_BYTE, 0, 1, 0)
        self._flag_vbo.release()

    def _bind_gizmo_attributes(self) -> None:
        prog = self._program
        self._giz_vbo.bind()
        prog.enableAttributeArray(0)
        prog.setAttributeBuffer(0, GL_FLOAT, 0, 3, 28)
        prog.enableAttributeArray(1)
        prog.setAttributeBuffer(1, GL_FLOAT, 12, 4, 28)
        prog.disableAttributeArray(2)
        self.context().functions().glVertexAttrib1f(2, 0.0)
        self._giz_vbo.release()

    def _upload(self) -> None:
        cloud = self._cloud
        if self._upload_pending and cloud is not None:
            # the cloud twice: raster order (drawn at rest), then the level-of-detail order
            raster = memoryview(cloud.vertices.view(np.uint8))
            stratified = memoryview(cloud.vertices[cloud.lod].view(np.uint8))
            self._vbo.bind()
            self._vbo.allocate(2 * raster.nbytes)
            self._vbo.write(0, raster, raster.nbytes)
            self._vbo.write(raster.nbytes, stratified, stratified.nbytes)
            self._vbo.release()
            self._flag_vbo.bind()
            self._flag_vbo.allocate(bytes(2 * cloud.count), 2 * cloud.count)  # all clear; a mask rewrites its span
            self._flag_vbo.release()
            for _flags, gpu, _diff in self._flag_bufs:
                gpu[:] = 0
            self._gpu_version += 1
            self.uploaded_bytes["vertices"] += 2 * raster.nbytes
            self.uploaded_bytes["flags"] += 2 * cloud.count
            self._uploaded_count = cloud.count
            self._upload_pending = False
            self._flags_pending = True
            if self._vao.isCreated():
                self._vao.bind()
                self._bind_cloud_attributes()
                self._vao.release()
        if self._flags_pending and cloud is not None:
            self._update_flags()
            self._flags_pending = False

    def _update_flags(self) -> None:
        """Write the hole mask's flags (255 for points whose photo pixel is in the mask) into both
        copies of the flag buffer, from buffers allocated once per cloud; only the span that
        changed is uploaded."""
        lo, hi = self._flag_span
        if hi == lo:
            return
        h, w = self._cloud.shape
        mask_view = self._mask_buf[: h * w].reshape(h, w)
        if self._hole_mask is None:
            mask_view[...] = 0
        else:
            np.multiply(self._hole_mask, 255, out=mask_view, casting="unsafe")
        (raster, _, _), (stratified, _, _) = self._flag_bufs
        np.take(self._mask_buf, self._flag_index, out=raster)
        np.take(raster, self._flag_lod_index, out=stratified)
        self._flag_vbo.bind()
        for (flags, gpu, diff), offset in zip(self._flag_bufs, (lo, self._cloud.count + lo)):
            np.not_equal(flags, gpu, out=diff)
            first = int(diff.argmax())
            if not diff[first]:
                continue  # nothing changed
            last = len(diff) - int(diff[::-1].argmax())
            gpu[first:last] = flags[first:last]
            self._gpu_version += 1
            data = memoryview(gpu[first:last])
            self._flag_vbo.write(offset + first, data, data.nbytes)
            self.uploaded_bytes["flags"] += data.nbytes
        self._flag_vbo.release()

    def resizeGL(self, w: int, h: int) -> None:
        self.camera.set_size(self.width(), self.height())

    def paintGL(self) -> None:
        t0 = time.perf_counter()
        f = self.context().functions()
        f.glClearColor(*BACKGROUND_RGB, 1.0)
        f.glClearDepthf(CLEAR_DEPTH)
        f.glClear(GL_COLOR_BUFFER_BIT | GL_DEPTH_BUFFER_BIT)
        if not self._gl_ready or self._scene is None or self._cloud is None:
            return
        self.camera.set_size(self.width(), self.height())
        lo, hi = self._scene_bounds()
        self.camera.set_bounds(lo, hi)
        self._upload()
        f.glEnable(GL_DEPTH_TEST)
        f.glDepthFunc(GL_LEQUAL)
        f.glDisable(GL_BLEND)
        if not self.context().isOpenGLES():
            f.glEnable(GL_PROGRAM_POINT_SIZE)
        prog = self._program
        prog.bind()
        vp = self.camera.view_projection()
        dpr = self.devicePixelRatioF()
        photo_focal = self._scene.camera.focal
        k_auto = self.camera.focal / photo_focal * dpr
        if not self._at_photo_pose():
            k_auto *= OFF_PHOTO_COVERAGE  # surfaces seen at an angle: slightly fatter points close gaps
        prog.setUniformValue(self._u["u_flag_color"], QVector4D(*HOLE_RGBA))
        prog.setUniformValue(self._u["u_viewport"], float(max(1.0, self.width() * dpr)), float(max(1.0, self.height() * dpr)))
        prog.setUniformValue1f(self._u["u_cull"], 1.0 if self.cull_in_shader else 0.0)
        if self._vao.isCreated():
            self._vao.bind()
        else:
            self._bind_cloud_attributes()
        ranks = self._lod_ranks()
        size = (max(1, round(self.width() * dpr)), max(1, round(self.height() * dpr)))
        calls = self._calls(ranks, vp, k_auto, dpr)
        self._full_shown = ranks == LOD_RANKS
        if ranks == LOD_RANKS and self.cache_at_rest:
            picture = (self._gpu_version, id(self._cloud), size, bool(self.cull_in_shader), tuple(calls))
            if picture == self._picture_key and self._blit_picture(size, to_widget=True):
                self.cached_frames += 1
                self._drawn_points = 0
            else:
                built = self._build_picture(picture, calls, size)
                if built is None:  # no blit here: the cloud drawn every frame
                    self._draw_calls(calls)
                elif not built:
                    # the full picture is not complete yet: this frame shows the level of detail
                    # (what the last interactive frame showed) and the next one goes on building
                    lod = self._calls(self._lod_ranks(interacting=True), vp, k_auto, dpr)
                    self._draw_calls(lod)
                    self._drawn_points += self._build_drawn
                    self._full_shown = False
                    self.update()
                else:
                    self._drawn_points = self._build_drawn
        else:
            self._building = None
            self._draw_calls(calls)
        if self._vao.isCreated():
            self._vao.release()
        self._draw_overlay(f, vp)
        prog.release()
        self.last_frame_ms = (time.perf_counter() - t0) * 1000.0

    def _calls(self, ranks: int, vp: np.ndarray, k_auto: float, dpr: float) -> list[tuple]:
        """The frame's draw calls at ``ranks`` dither ranks: (first, count, mvp bytes, size_k,
        size_fixed, tint) per visible group; the picture is a function of them."""
        assert self._scene is not None and self._cloud is not None
        objects = {o.id: o for o in self._scene.objects}
        n_all = self._cloud.count
        calls = []
        for key, g in self._cloud.groups.items():
            if g.count == 0:
                continue
            first, count, widen = g.first, g.count, 1.0
            if ranks < LOD_RANKS and g.lod_ends[ranks - 1] > 0:
                # the stratified copy's lattice: a point per `widen` x `widen` photo pixels
                first, count, widen = n_all + g.first, int(g.lod_ends[ranks - 1]), math.sqrt(LOD_RANKS / ranks)
            model = _IDENTITY
            scale = 1.0
            tint = (0.0, 0.0, 0.0, 0.0)
            if key not in (BACKGROUND, FILL):
                obj = objects.get(key)
                if obj is None or not obj.visible:
                    continue
                model = obj.transform.matrix(self._pivots[key])
                scale = obj.transform.scale
                if key == self._selected:
                    tint = SELECTION_TINT
            size_k = 0.0 if self._point_size else float(k_auto * g.spacing * scale * widen)
            calls.append((first, count, (vp @ model).tobytes(), size_k, float((self._point_size or 1.0) * dpr * widen), tint))
        return calls

    def _draw_calls(self, calls: list[tuple], start: int = 0, stop: int | None = None) -> int:
        """Draw points ``start:stop`` of the calls' points taken in order (all by default) into
        the bound framebuffer; sets :meth:`drawn_points` and returns the count drawn."""
        prog, f = self._program, self.context().functions()
        assert prog is not None
        stop = sum(c[1] for c in calls) if stop is None else stop
        at, drawn = 0, 0
        for first, count, mvp, size_k, size_fixed, tint in calls:
            lo, hi = max(start - at, 0), min(stop - at, count)
            at += count
            if hi <= lo:
                continue
            prog.setUniformValue(self._u["u_mvp"], _qmatrix(np.frombuffer(mvp).reshape(4, 4)))
            prog.setUniformValue1f(self._u["u_size_k"], size_k)
            prog.setUniformValue1f(self._u["u_size_fixed"], size_fixed)
            prog.setUniformValue(self._u["u_tint"], QVector4D(*tint))
            f.glDrawArrays(GL_POINTS, first + lo, hi - lo)
            drawn += hi - lo
        self._drawn_points = drawn
        return drawn

    def _build_picture(self, picture: tuple, calls: list[tuple], size: tuple[int, int]) -> bool | None:
        """Draw the next :attr:`rest_chunk_points` points of the full picture into the kept
        framebuffer (cleared when ``picture`` is new); once it is complete, copy it to the widget
        and return True. False: not complete yet (nothing copied); None: this context cannot keep
        a picture (no framebuffer blit)."""
        fbo = self._kept_fbo(size)
        if fbo is None:
            return None
        ef = self.context().extraFunctions()
        f = self.context().functions()
        ef.glBindFramebuffer(GL_FRAMEBUFFER, fbo.handle())
        if self._building is None or self._building[0] != picture or self._complete_next:
            f.glClear(GL_COLOR_BUFFER_BIT | GL_DEPTH_BUFFER_BIT)  # the widget's clear colour and depth
            self._building = (picture, 0)
            self._picture_key = None
        total = sum(c[1] for c in calls)
        done = self._building[1]
        chunk = int(self.rest_chunk_points or 0)
        stop = total if chunk <= 0 or self._complete_next else min(total, done + chunk)
        self._build_drawn = self._draw_calls(calls, done, stop)
        ef.glBindFramebuffer(GL_FRAMEBUFFER, self.defaultFramebufferObject())
        if stop < total:
            self._building = (picture, stop)
            return False
        self._building = None
        self._picture_key = picture
        self._blit_picture(size, to_widget=True)
        return True

    def _kept_fbo(self, size: tuple[int, int]) -> QOpenGLFramebufferObject | None:
        """The framebuffer that keeps the full picture at rest (made at ``size``, with a depth
        buffer like the widget's, so that a picture drawn in parts is the one drawn at once);
        None where the context cannot blit."""
        if not QOpenGLFramebufferObject.hasOpenGLFramebufferBlit():
            return None
        fbo = self._rest_fbo
        if fbo is None or (fbo.width(), fbo.height()) != size:
            self._building = None
            self._picture_key = None
            fbo = self._rest_fbo = QOpenGLFramebufferObject(QSize(*size), QOpenGLFramebufferObject.Attachment.CombinedDepthStencil)
            if not fbo.isValid():
                self._rest_fbo = None
                return None
        return fbo

    def _blit_picture(self, size: tuple[int, int], to_widget: bool) -> bool:
        """Copy the kept picture to the widget; False where there is none of this size."""
        fbo = self._rest_fbo
        if fbo is None or (fbo.width(), fbo.height()) != size or not to_widget:
            return False
        # raw calls: PySide6's QOpenGLFramebufferObject.blitFramebuffer with None for the widget's
        # framebuffer releases a reference to None each call (Python aborts at exit)
        ef = self.context().extraFunctions()
        widget, kept = self.defaultFramebufferObject(), fbo.handle()
        ef.glBindFramebuffer(GL_READ_FRAMEBUFFER, kept)
        ef.glBindFramebuffer(GL_DRAW_FRAMEBUFFER, widget)
        w, h = size
        ef.glBlitFramebuffer(0, 0, w, h, 0, 0, w, h, GL_COLOR_BUFFER_BIT, GL_NEAREST)
        ef.glBindFramebuffer(GL_FRAMEBUFFER, widget)
        return True

    def _lod_ranks(self, interacting: bool | None = None) -> int:
        """How many of the cloud's dither ranks this frame draws (``interacting``: as if the
        camera or a gizmo moved, default: whether they do): all of them at rest; while
        interacting the most that fit :attr:`interactive_points` and form a complete lattice (a
        quarter of the points: every second photo pixel; a sixteenth; a sixty-fourth), so that
        points ``sqrt(LOD_RANKS / ranks)`` times wider leave no gaps."""
        n_all, budget = self._cloud.count, self.interactive_points
        moving = self._interacting if interacting is None else interacting
        if not moving or budget is None or n_all <= budget:
            return LOD_RANKS
        ranks = LOD_RANKS // 4
        while ranks > 1 and n_all * ranks > budget * LOD_RANKS:
            ranks //= 4
        return ranks

    def _at_photo_pose(self) -> bool:
        cam = self.camera
        return bool(np.linalg.norm(cam.eye) <= 1e-6 * max(cam.distance, 1e-9) and cam.forward[2] > 1.0 - 1e-9)

    def _draw_overlay(self, f, vp: np.ndarray) -> None:
        obj = self._selected_object()
        if obj is None:
            return
        pose = gz.gizmo_pose(self._pivots[obj.id], obj.transform, self._frame, self.camera)
        active = self._drag.handle if self._drag is not None else None
        geo = gz.gizmo_geometry(self._mode, pose, self.camera, hover=None if active else self._hover, active=active)
        # the selected object's bounding box, transformed with it
        g = self._cloud.groups[obj.id]
        box = obj.transform.apply(_box_corners(g.lo, g.hi), self._pivots[obj.id])
        box_lines = np.array([[box[a], box[b]] for a, b in _BOX_EDGES])
        box_cols = np.tile(np.array([[*SELECTION_TINT[:3], 0.7]]), (len(box_lines), 1))
        lines = np.concatenate([box_lines, geo.lines])
        lcols = np.concatenate([box_cols, geo.line_colors])
        tri = geo.triangles.reshape(-1, 3)
        tcol = np.repeat(geo.triangle_colors, 3, axis=0)
        lin = lines.reshape(-1, 3)
        lcol = np.repeat(lcols, 2, axis=0)
        verts = np.concatenate([np.concatenate([tri, tcol], axis=1), np.concatenate([lin, lcol], axis=1)]).astype(np.float32)
        data = verts.tobytes()
        self._giz_vbo.bind()
        self._giz_vbo.allocate(data, len(data))
        self._giz_vbo.release()
        prog = self._program
        if self._giz_vao.isCreated():
            self._giz_vao.bind()
        self._bind_gizmo_attributes()
        prog.setUniformValue(self._u["u_mvp"], _qmatrix(vp))
        prog.setUniformValue1f(self._u["u_size_k"], 0.0)
        prog.setUniformValue1f(self._u["u_cull"], 0.0)  # lines and triangles: the clipper's job
        prog.setUniformValue(self._u["u_tint"], QVector4D(0.0, 0.0, 0.0, 0.0))
        f.glDisable(GL_DEPTH_TEST)
        f.glEnable(GL_BLEND)
        f.glBlendFunc(GL_SRC_ALPHA, GL_ONE_MINUS_SRC_ALPHA)
        if len(tri):
            f.glDrawArrays(GL_TRIANGLES, 0, len(tri))
        if not self.context().isOpenGLES():
            f.glLineWidth(2.0)
        f.glDrawArrays(GL_LINES, len(tri), len(lin))
        f.glDisable(GL_BLEND)
        f.glEnable(GL_DEPTH_TEST)
        if self._giz_vao.isCreated():
            self._giz_vao.release()
        else:
            prog.disableAttributeArray(0)
            prog.disableAttributeArray(1)

    # ================================================================ drags
    def _begin_drag(self, handle: gz.Handle, x: float, y: float) -> None:
        obj = self._selected_object()
        self._drag = gz.GizmoDrag(handle, self.camera.copy(), x, y, self._pivots[obj.id], obj.transform, self._frame)
        self._drag_id = obj.id
        self._hover = handle

    def _cancel_drag(self, emit: bool = True) -> bool:
        if self._drag is None:
            return False
        drag, obj_id = self._drag, self._drag_id
        self._drag = None
        self._drag_id = None
        if self._scene is not None:
            drag.cancel()  # the editor puts the start transform back (its document model writes)
        if emit:
            self.dragCancelled.emit(obj_id)
        self._end_interaction()
        self.update()
        return True

    def cancel_drag(self) -> bool:
        """Cancel a running drag (the object gets its start transform back); False if none ran."""
        return self._cancel_drag(emit=True)

    # ================================================================ events
    def mousePressEvent(self, event) -> None:
        pos = event.position()
        mods = event.modifiers()
        button = event.button()
        if button == Qt.MouseButton.RightButton:
            if self._cancel_drag(emit=True):
                event.accept()
                return
            super().mousePressEvent(event)
            return
        if self._drag is not None:
            event.accept()
            return
        self._last_pos = QPointF(pos)
        self._press_pos = QPointF(pos)
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and mods & Qt.KeyboardModifier.ShiftModifier):
            self._nav = "pan"
        elif button == Qt.MouseButton.LeftButton and mods & Qt.KeyboardModifier.AltModifier:
            self._nav = "orbit"
        elif button == Qt.MouseButton.LeftButton:
            pose = self.gizmo_pose()
            handle = gz.pick_handle(self._mode, pose, self.camera, pos.x(), pos.y()) if pose is not None else None
            if handle is not None:
                self._begin_drag(handle, pos.x(), pos.y())
                self.update()
            else:
                self._nav = "pending"
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        pos = event.position()
        if self._drag is not None:
            snap = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
            t = self._drag.update(pos.x(), pos.y(), snap=snap)
            self._interact()
            self.transformPreview.emit(self._drag_id, t)  # proposed: the editor's document model writes it
            self.update()
            event.accept()
            return
        dx, dy = pos.x() - self._last_pos.x(), pos.y() - self._last_pos.y()
        if self._nav == "pending":
            moved = math.hypot(pos.x() - self._press_pos.x(), pos.y() - self._press_pos.y())
            if moved > CLICK_SLOP_PX:
                self._nav = "orbit"
                dx, dy = pos.x() - self._press_pos.x(), pos.y() - self._press_pos.y()
        if self._nav == "orbit":
            self.camera.orbit(dx, dy)
            self._interact()
            self.update()
        elif self._nav == "pan":
            self.camera.pan(dx, dy)
            self._interact()
            self.update()
        elif self._nav is None:
            pose = self.gizmo_pose()
            hover = gz.pick_handle(self._mode, pose, self.camera, pos.x(), pos.y()) if pose is not None else None
            if hover != self._hover:
                self._hover = hover
                self.update()
        self._last_pos = QPointF(pos)
        event.accept()

    def mouseReleaseEvent(self, event) -> None:
        pos = event.position()
        if self._drag is not None and event.button() == Qt.MouseButton.LeftButton:
            drag, obj_id = self._drag, self._drag_id
            snap = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
            new = drag.update(pos.x(), pos.y(), snap=snap)
            self._drag = None
            self._drag_id = None
            if new != drag.start:
                self.transformCommitted.emit(obj_id, drag.start, new)
            self._end_interaction()
            self.update()
            event.accept()
            return
        if self._nav == "pending" and event.button() == Qt.MouseButton.LeftButton:
            picked = self.pick_object(pos.x(), pos.y())
            if picked != self._selected:
                self._selected = picked
                self._hover = None
                self.update()
            self.objectPicked.emit(picked)
        if self._nav is not None:
            self._end_interaction()
        self._nav = None
        event.accept()

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            pos = event.position()
            self.camera.zoom(0.85**steps, anchor=(pos.x(), pos.y()))
            self._interact()
            self.update()
        event.accept()

    def keyPressEvent(self, event) -> None:
        key = event.key()
        if key == Qt.Key.Key_Escape and self._drag is not None:
            self._cancel_drag(emit=True)
        elif key == Qt.Key.Key_F:
            self.frame_selection()
        elif key == Qt.Key.Key_Home:
            self.reset_camera()
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.set_point_size((self._point_size or 1.0) + 1.0)
        elif key == Qt.Key.Key_Minus:
            size = (self._point_size or 1.0) - 1.0
            self.set_point_size(None if size < 1.0 else size)
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def leaveEvent(self, event) -> None:
        if self._hover is not None and self._drag is None:
            self._hover = None
            self.update()
        super().leaveEvent(event)
