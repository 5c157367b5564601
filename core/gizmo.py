"""Transform gizmos: handles, hit-testing and drag math (pure math, no Qt).

Frames and units
----------------
*World* is the photo's camera frame (:mod:`core.camera`: +X right, +Y down, +Z forward, depth
units). Object transforms are :class:`core.transform.Transform3D` about the object's pivot ``c``;
the gizmo sits at ``c + t`` (the pivot moves with the translation). Screen positions are the
view's pixels (x right, y down); a view camera is anything with the interface of
:class:`core.viewcam.OrbitCamera` (``project``, ``ray``, ``pixel_size_at``, ``forward``, ``right``,
``down``).

The gizmo keeps a constant size on screen: its axes are :data:`GIZMO_SIZE_PX` pixels long
whatever the depth. Its axes are the object's rotated axes (frame ``"local"``) or the world axes
(frame ``"camera"``).

Handles
-------
* ``move``: three axis arrows (``axis``), three plane squares (``plane``, indexed by the plane's
  normal axis: plane 2 is the XY plane) and a free drag in the screen plane (``screen``, the
  small circle at the centre).
* ``rotate``: three rings (``ring``, radius one gizmo size, indexed by their axis) and a free
  trackball (``trackball``, anywhere inside the outer screen circle off the rings).
* ``scale``: uniform scale (``scale``): the outer screen circle or anything inside it.

Dragging
--------
:class:`GizmoDrag` is created at mouse press with the view camera, the handle, the object's pivot
and its start transform; :meth:`GizmoDrag.update` maps the current mouse position to a new
transform (``snap=True``: 15 degrees, 0.1 depth units, 10 % steps), :meth:`GizmoDrag.cancel`
returns the start transform. Rotations and scalings are composed about the gizmo centre with
:meth:`Transform3D.compose`, so the object turns in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.transform import Transform3D, quat_from_axis_angle

MOVE, ROTATE, SCALE = "move", "rotate", "scale"
MODES = (MOVE, ROTATE, SCALE)
FRAMES = ("local", "camera")

#: length of the gizmo's axes on screen (pixels)
GIZMO_SIZE_PX = 100.0
#: a handle is hit when the mouse is at most this far from it (pixels)
HIT_TOLERANCE_PX = 8.0
#: radius of the free-move disc at the centre (pixels)
SCREEN_HANDLE_PX = 11.0
#: the trackball is anything inside this many gizmo sizes from the centre (off the rings)
TRACKBALL_RADIUS = 1.1
SNAP_ANGLE_DEG = 15.0
SNAP_DISTANCE = 0.1
SNAP_SCALE = 0.1

# handle layout in units of the gizmo length L
_ARROW_START, _ARROW_HEAD, _ARROW_END = 0.22, 0.80, 1.0
_ARROW_RADIUS = 0.055
_PLANE_LO, _PLANE_HI = 0.28, 0.48
_RING_RADIUS = 1.0
_RING_SEGMENTS = 72
#: below this |cos| between a ring's axis and the view ray the ring is edge-on: drag along its tangent
_RING_EDGE_ON = 0.2
#: a ring facing the viewer counts as this many pixels nearer than an edge-on ring (crossings)
_RING_FACING_BONUS_PX = 3.0
#: axis arrows shorter than this fraction of the gizmo size on screen point at the viewer: hidden
_MIN_AXIS_SCREEN = 0.2
#: plane squares whose normal is within this |cos| of the view's image plane are edge-on: hidden
_MIN_PLANE_COS = 0.2

AXIS_COLORS = np.array([[0.93, 0.25, 0.25], [0.35, 0.85, 0.30], [0.28, 0.50, 1.00]])
NEUTRAL_COLOR = np.array([0.86, 0.86, 0.86])
HOVER_COLOR = np.array([1.00, 0.82, 0.10])
ACTIVE_COLOR = np.array([1.00, 0.95, 0.55])


@dataclass(frozen=True)
class Handle:
    """One gizmo handle. ``kind``: axis | plane | screen | ring | trackball | scale; ``axis``: 0, 1, 2
    (X, Y, Z of the gizmo frame; for ``plane`` the plane's normal) or -1."""

    kind: str
    axis: int = -1

    @property
    def mode(self) -> str:
        return {"axis": MOVE, "plane": MOVE, "screen": MOVE, "ring": ROTATE, "trackball": ROTATE}.get(self.kind, SCALE)

    @property
    def name(self) -> str:
        xyz = "xyz"
        if self.kind == "axis":
            return f"move-{xyz[self.axis]}"
        if self.kind == "plane":
            a, b = _plane_axes(self.axis)
            return f"move-{xyz[a]}{xyz[b]}"
        if self.kind == "ring":
            return f"rotate-{xyz[self.axis]}"
        return {"screen": "move-screen", "trackball": "rotate-free", "scale": "scale"}[self.kind]


HANDLES: dict[str, tuple[Handle, ...]] = {
    MOVE: (Handle("screen"), *(Handle("plane", k) for k in range(3)), *(Handle("axis", k) for k in range(3))),
    ROTATE: (*(Handle("ring", k) for k in range(3)), Handle("trackball")),
    SCALE: (Handle("scale"),),
}
_PRIORITY = {"screen": 0, "plane": 1, "axis": 2, "ring": 3, "trackball": 4, "scale": 5}


def _plane_axes(normal: int) -> tuple[int, int]:
    return ((1, 2), (2, 0), (0, 1))[normal]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"gizmo mode must be one of {', '.join(MODES)}, got {mode!r}")


def _check_frame(frame: str) -> None:
    if frame not in FRAMES:
        raise ValueError(f"gizmo frame must be 'local' or 'camera', got {frame!r}")


@dataclass(frozen=True)
class GizmoPose:
    """Where the gizmo is: ``centre`` (3,) world, ``axes`` 3x3 whose *columns* are the unit X, Y, Z
    axes of the gizmo frame (world), ``length`` the world length (depth units) of one gizmo size
    at the centre's depth, ``size_px`` that size on screen."""

    centre: np.ndarray
    axes: np.ndarray
    length: float
    size_px: float


def gizmo_pose(pivot, transform: Transform3D, frame: str, camera, size_px: float = GIZMO_SIZE_PX) -> GizmoPose:
    """Pose of the gizmo of an object with ``pivot`` (world) and ``transform``, for ``camera``."""
    _check_frame(frame)
    centre = np.asarray(pivot, dtype=np.float64).reshape(3) + transform.t
    axes = transform.R if frame == "local" else np.eye(3)
    return GizmoPose(centre, axes, float(size_px) * camera.pixel_size_at(centre), float(size_px))


# ---------------------------------------------------------------------------------------------
# screen geometry and hit-testing


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances (N,) from the 2-D point ``p`` to the segments ``a[i]``-``b[i]`` ((N, 2) each)."""
    ab = b - a
    ll = np.einsum("ij,ij->i", ab, ab)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(ll > 1e-12, np.einsum("ij,ij->i", p - a, ab) / ll, 0.0)
    u = np.clip(u, 0.0, 1.0)
    d = np.linalg.norm(a + u[:, None] * ab - p, axis=1)
    return np.where(np.isfinite(d), d, np.inf)


def _screen(camera, points: np.ndarray) -> np.ndarray:
    x, y, _ = camera.project(points)
    return np.stack([x, y], axis=-1)


def _ring_points(pose: GizmoPose, k: int, n: int = _RING_SEGMENTS) -> np.ndarray:
    a, b = _plane_axes(k)
    phi = np.linspace(0.0, 2.0 * np.pi, n + 1)
    r = _RING_RADIUS * pose.length
    return pose.centre + r * (np.cos(phi)[:, None] * pose.axes[:, a] + np.sin(phi)[:, None] * pose.axes[:, b])


def _screen_circle(pose: GizmoPose, camera, radius_px: float, n: int = 64) -> np.ndarray:
    """World points of a circle of ``radius_px`` screen pixels in the view plane through the centre."""
    phi = np.linspace(0.0, 2.0 * np.pi, n + 1)
    r = radius_px * pose.length / pose.size_px
    return pose.centre + r * (np.cos(phi)[:, None] * camera.right + np.sin(phi)[:, None] * camera.down)


def _plane_corners(pose: GizmoPose, k: int) -> np.ndarray:
    a, b = _plane_axes(k)
    ua, ub = pose.axes[:, a] * pose.length, pose.axes[:, b] * pose.length
    return np.array(
        [pose.centre + s * ua + t * ub for s, t in ((_PLANE_LO, _PLANE_LO), (_PLANE_HI, _PLANE_LO), (_PLANE_HI, _PLANE_HI), (_PLANE_LO, _PLANE_HI))]
    )


def handle_visible(handle: Handle, pose: GizmoPose, camera) -> bool:
    """False for handles seen end-on (an arrow pointing at the viewer, an edge-on plane square)."""
    if handle.kind == "axis":
        a = pose.centre + pose.axes[:, handle.axis] * pose.length * np.array([[_ARROW_START], [_ARROW_END]])
        s = _screen(camera, a)
        return bool(np.all(np.isfinite(s)) and np.linalg.norm(s[1] - s[0]) >= _MIN_AXIS_SCREEN * pose.size_px * (_ARROW_END - _ARROW_START))
    if handle.kind == "plane":
        c = _screen(camera, pose.centre[None])[0]
        if not np.all(np.isfinite(c)):
            return False
        view = camera.ray(float(c[0]), float(c[1])).direction
        return abs(float(view @ pose.axes[:, handle.axis])) >= _MIN_PLANE_COS
    return True


def handle_distances(mode: str, pose: GizmoPose, camera, x: float, y: float) -> dict[Handle, float]:
    """Screen distance (pixels) from ``(x, y)`` to every visible handle of ``mode`` (0 inside a
    filled handle: the plane squares and the free-move disc; the trackball disc reports
    :data:`HIT_TOLERANCE_PX` inside it and the scale disc at most that, so that rings and outlines
    nearer than that win)."""
    _check_mode(mode)
    m = np.array([x, y], dtype=np.float64)
    c = _screen(camera, pose.centre[None])[0]
    out: dict[Handle, float] = {}
    if not np.all(np.isfinite(c)):
        return out
    rc = float(np.linalg.norm(m - c))
    for h in HANDLES[mode]:
        if not handle_visible(h, pose, camera):
            continue
        if h.kind == "screen":
            out[h] = max(0.0, rc - SCREEN_HANDLE_PX)
        elif h.kind == "axis":
            ends = pose.centre + pose.axes[:, h.axis] * pose.length * np.array([[_ARROW_START], [_ARROW_END]])
            s = _screen(camera, ends)
            out[h] = float(_point_segment_distance(m, s[:1], s[1:])[0])
        elif h.kind == "plane":
            q = _screen(camera, _plane_corners(pose, h.axis))
            if not np.all(np.isfinite(q)):
                continue
            e = np.roll(q, -1, axis=0) - q
            cross = e[:, 0] * (m[1] - q[:, 1]) - e[:, 1] * (m[0] - q[:, 0])
            inside = bool(np.all(cross >= 0) or np.all(cross <= 0))
            out[h] = 0.0 if inside else float(_point_segment_distance(m, q, np.roll(q, -1, axis=0)).min())
        elif h.kind == "ring":
            s = _screen(camera, _ring_points(pose, h.axis))
            out[h] = float(_point_segment_distance(m, s[:-1], s[1:]).min())
        elif h.kind == "trackball":
            r = TRACKBALL_RADIUS * pose.size_px
            out[h] = HIT_TOLERANCE_PX if rc <= r else rc - r + HIT_TOLERANCE_PX
        elif h.kind == "scale":
            edge = abs(rc - pose.size_px)
            out[h] = min(edge, HIT_TOLERANCE_PX) if rc <= pose.size_px else edge
    return out


def pick_handle(mode: str, pose: GizmoPose, camera, x: float, y: float, tolerance: float = HIT_TOLERANCE_PX) -> Handle | None:
    """The handle under the screen point ``(x, y)``: the nearest within ``tolerance`` pixels (ties:
    free-move disc, planes, arrows, rings (the one facing the viewer most first), trackball,
    scale), or None."""
    best = None
    c = _screen(camera, pose.centre[None])[0]
    view = camera.ray(float(c[0]), float(c[1])).direction if np.all(np.isfinite(c)) else np.zeros(3)
    for h, d in handle_distances(mode, pose, camera, x, y).items():
        if d <= tolerance:
            # where rings cross, the ring facing the viewer wins over one seen edge-on
            facing = abs(float(view @ pose.axes[:, h.axis])) if h.kind == "ring" else 0.0
            key = (round(d - _RING_FACING_BONUS_PX * facing, 6), _PRIORITY[h.kind], h.axis)
            if best is None or key < best[0]:
                best = (key, h)
    return None if best is None else best[1]


# ---------------------------------------------------------------------------------------------
# drag math


def closest_on_line(point, direction, ray) -> float | None:
    """Parameter ``s`` of the point ``point + s * direction`` (unit ``direction``) of a line that is
    nearest to ``ray``; None when line and ray are (nearly) parallel."""
    a = np.asarray(direction, dtype=np.float64)
    d = ray.direction
    w0 = np.asarray(point, dtype=np.float64) - ray.origin
    b = float(a @ d)
    denom = 1.0 - b * b
    if denom < 1e-6:
        return None
    return (b * float(d @ w0) - float(a @ w0)) / denom


def intersect_plane(ray, point, normal) -> np.ndarray | None:
    """Where ``ray`` meets the plane through ``point`` with ``normal``; None if parallel or behind."""
    n = np.asarray(normal, dtype=np.float64)
    den = float(ray.direction @ n)
    if abs(den) < 1e-9:
        return None
    u = float((np.asarray(point, dtype=np.float64) - ray.origin) @ n) / den
    if u <= 0:
        return None
    return ray.at(u)


def _snap(v: float, step: float) -> float:
    return round(v / step) * step


def about_centre(start: Transform3D, rotation=(1.0, 0.0, 0.0, 0.0), scale: float = 1.0) -> Transform3D:
    """``start`` followed by a rotation (unit quaternion, world axes) and a uniform scale about the
    gizmo centre ``pivot + start.t``: the translation is unchanged, ``R' = dR R``, ``s' = ds s``."""
    d = Transform3D(rotation=rotation, scale=scale)
    fix = start.t - d.scale * (d.R @ start.t)  # keeps pivot + t where it is
    return Transform3D(tuple(fix), d.rotation, d.scale).compose(start)


class GizmoDrag:
    """One drag of one handle. Created at mouse press at screen ``(x, y)``; the camera must not
    change during the drag. ``pivot``: the object's pivot (world, depth units)."""

    def __init__(self, handle: Handle, camera, x: float, y: float, pivot, start: Transform3D, frame: str = "local", size_px: float = GIZMO_SIZE_PX):
        _check_frame(frame)
        self.handle = handle
        self.camera = camera
        self.start = start
        self.frame = frame
        self.pivot = np.asarray(pivot, dtype=np.float64).reshape(3)
        self.pose = gizmo_pose(self.pivot, start, frame, camera, size_px)
        self.start_xy = np.array([x, y], dtype=np.float64)
        self.centre_xy = _screen(camera, self.pose.centre[None])[0]
        self.current = start
        self._ray0 = camera.ray(x, y)
        self._angle = 0.0  # unwrapped ring angle (radians)
        self._raw = 0.0
        self._last_delta = np.zeros(3)
        self._ring_tangent = None
        if handle.kind == "axis":
            a = self.pose.axes[:, handle.axis]
            tip = _screen(camera, (self.pose.centre + a * self.pose.length)[None])[0]
            u = tip - self.centre_xy
            n = float(np.linalg.norm(u))
            self._axis_dir = u / n if np.all(np.isfinite(u)) and n > 1e-9 else None
            self._s0 = self._axis_param(x, y)
        elif handle.kind in ("plane", "screen"):
            n = self.pose.axes[:, handle.axis] if handle.kind == "plane" else camera.forward
            self._normal = n
            self._hit0 = intersect_plane(self._ray0, self.pose.centre, n)
        elif handle.kind == "ring":
            a = self.pose.axes[:, handle.axis]
            self._hit0 = None
            if abs(float(a @ self._ray0.direction)) >= _RING_EDGE_ON:
                self._hit0 = intersect_plane(self._ray0, self.pose.centre, a)
            if self._hit0 is None or np.linalg.norm(self._hit0 - self.pose.centre) < 1e-9 * self.pose.length:
                self._hit0 = None
                self._ring_tangent = self._tangent_direction(a)

    def _tangent_direction(self, a: np.ndarray) -> np.ndarray | None:
        """Screen velocity (pixels per radian) of the ring point nearest the grab position."""
        ring = _ring_points(self.pose, self.handle.axis)
        s = _screen(self.camera, ring)
        d = np.linalg.norm(s - self.start_xy, axis=1)
        g = ring[int(np.nanargmin(np.where(np.isfinite(d), d, np.inf)))]
        eps = 1e-3
        tangent = np.cross(a, g - self.pose.centre)
        v = (_screen(self.camera, (g + eps * tangent)[None])[0] - _screen(self.camera, g[None])[0]) / eps
        return v if np.all(np.isfinite(v)) and float(np.linalg.norm(v)) > 1e-6 else None

    def cancel(self) -> Transform3D:
        """Abandon the drag: the start transform."""
        self.current = self.start
        return self.start

    def update(self, x: float, y: float, snap: bool = False) -> Transform3D:
        """New transform for the mouse at screen ``(x, y)`` (pixels); ``snap`` rounds to 0.1 depth
        units (move), 15 degrees (rotate) or 10 % (scale)."""
        kind = self.handle.kind
        if kind == "axis":
            t = self._update_axis(x, y, snap)
        elif kind in ("plane", "screen"):
            t = self._update_plane(x, y, snap)
        elif kind == "ring":
            t = self._update_ring(x, y, snap)
        elif kind == "trackball":
            t = self._update_trackball(x, y, snap)
        else:
            t = self._update_scale(x, y, snap)
        self.current = t
        return t

    def _moved(self, delta: np.ndarray) -> Transform3D:
        return Transform3D(tuple(self.start.t + delta), self.start.rotation, self.start.scale)

    def _axis_param(self, x: float, y: float) -> float | None:
        """Position along the dragged axis (depth units from the centre) under the mouse: the mouse
        is first projected onto the axis' screen line, so motion across the axis does nothing."""
        if self._axis_dir is None:
            return None
        m = np.array([x, y]) - self.centre_xy
        p = self.centre_xy + float(m @ self._axis_dir) * self._axis_dir
        return closest_on_line(self.pose.centre, self.pose.axes[:, self.handle.axis], self.camera.ray(float(p[0]), float(p[1])))

    def _update_axis(self, x, y, snap) -> Transform3D:
        a = self.pose.axes[:, self.handle.axis]
        s1 = self._axis_param(x, y)
        if self._s0 is None or s1 is None:
            return self.current
        ds = s1 - self._s0
        if snap:
            ds = _snap(ds, SNAP_DISTANCE)
        return self._moved(ds * a)

    def _update_plane(self, x, y, snap) -> Transform3D:
        hit = intersect_plane(self.camera.ray(x, y), self.pose.centre, self._normal)
        if self._hit0 is None or hit is None:
            return self.current
        delta = hit - self._hit0
        if snap:
            if self.handle.kind == "plane":
                basis = [self.pose.axes[:, k] for k in _plane_axes(self.handle.axis)]
            else:
                basis = [np.asarray(self.camera.right), np.asarray(self.camera.down)]
            delta = sum(_snap(float(delta @ b), SNAP_DISTANCE) * b for b in basis)
        return self._moved(np.asarray(delta, dtype=np.float64))

    def _update_ring(self, x, y, snap) -> Transform3D:
        a = self.pose.axes[:, self.handle.axis]
        if self._hit0 is not None:
            hit = intersect_plane(self.camera.ray(x, y), self.pose.centre, a)
            if hit is None:
                return self.current
            v0, v1 = self._hit0 - self.pose.centre, hit - self.pose.centre
            raw = math.atan2(float(a @ np.cross(v0, v1)), float(v0 @ v1))
            step = (raw - self._raw + math.pi) % (2.0 * math.pi) - math.pi
            self._raw = raw
            self._angle += step
            angle = self._angle
        elif self._ring_tangent is not None:
            v = self._ring_tangent
            angle = float((np.array([x, y]) - self.start_xy) @ v) / float(v @ v)
        else:
            return self.current
        deg = math.degrees(angle)
        if snap:
            deg = _snap(deg, SNAP_ANGLE_DEG)
        return about_centre(self.start, quat_from_axis_angle(a, deg))

    def _update_trackball(self, x, y, snap) -> Transform3D:
        d = np.array([x, y]) - self.start_xy
        dist = float(np.linalg.norm(d))
        if dist < 1e-9:
            return self.start
        # the front of the object follows the mouse: right -> axis -down, down -> axis +right
        axis = d[1] * np.asarray(self.camera.right) - d[0] * np.asarray(self.camera.down)
        deg = math.degrees(dist / self.pose.size_px)
        if snap:
            deg = _snap(deg, SNAP_ANGLE_DEG)
        return about_centre(self.start, quat_from_axis_angle(axis, deg))

    def _update_scale(self, x, y, snap) -> Transform3D:
        m = np.array([x, y])
        r0 = float(np.linalg.norm(self.start_xy - self.centre_xy))
        if r0 > 4.0:
            factor = float(np.linalg.norm(m - self.centre_xy)) / r0
        else:  # grabbed at the centre: right/up grows
            d = m - self.start_xy
            factor = math.exp((d[0] - d[1]) / self.pose.size_px)
        if snap:
            factor = max(SNAP_SCALE, _snap(factor, SNAP_SCALE))
        factor = float(np.clip(factor * self.start.scale, 1e-3, 1e3)) / self.start.scale
        return about_centre(self.start, scale=factor)


# ---------------------------------------------------------------------------------------------
# drawing geometry


@dataclass
class GizmoGeometry:
    """World-space drawing primitives: ``lines`` (N, 2, 3) with ``line_colors`` (N, 4) and
    ``triangles`` (M, 3, 3) with ``triangle_colors`` (M, 4), RGBA in [0, 1]."""

    lines: np.ndarray
    line_colors: np.ndarray
    triangles: np.ndarray
    triangle_colors: np.ndarray


def _color(base: np.ndarray, h: Handle, hover: Handle | None, active: Handle | None, alpha: float = 1.0) -> np.ndarray:
    rgb = ACTIVE_COLOR if h == active else HOVER_COLOR if h == hover else base
    return np.array([*rgb, alpha])


def _polyline(points: np.ndarray) -> np.ndarray:
    return np.stack([points[:-1], points[1:]], axis=1)


def gizmo_geometry(mode: str, pose: GizmoPose, camera, hover: Handle | None = None, active: Handle | None = None) -> GizmoGeometry:
    """Lines and triangles that draw the gizmo of ``mode`` (world frame); the ``hover`` handle in
    the hover colour, the ``active`` (dragged) one in the active colour. During a drag only the
    active handle is drawn."""
    _check_mode(mode)
    lines, lcol, tris, tcol = [], [], [], []

    def add_lines(seg, col):
        lines.append(seg)
        lcol.append(np.repeat(col[None], len(seg), axis=0))

    def add_tris(tri, col):
        tris.append(tri)
        tcol.append(np.repeat(col[None], len(tri), axis=0))

    L, c = pose.length, pose.centre
    for h in HANDLES[mode]:
        if active is not None and h != active:
            continue
        if not handle_visible(h, pose, camera):
            continue
        if h.kind == "axis":
            a = pose.axes[:, h.axis]
            col = _color(AXIS_COLORS[h.axis], h, hover, active)
            add_lines(np.array([[c + _ARROW_START * L * a, c + _ARROW_HEAD * L * a]]), col)
            # cone: a fan of triangles around the axis
            u = np.cross(a, pose.axes[:, (h.axis + 1) % 3])
            v = np.cross(a, u)
            phi = np.linspace(0.0, 2 * np.pi, 13)
            rim = c + _ARROW_HEAD * L * a + _ARROW_RADIUS * L * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v)
            tip = c + _ARROW_END * L * a
            base = c + _ARROW_HEAD * L * a
            side = np.stack([rim[:-1], rim[1:], np.repeat(tip[None], 12, axis=0)], axis=1)
            cap = np.stack([rim[1:], rim[:-1], np.repeat(base[None], 12, axis=0)], axis=1)
            add_tris(np.concatenate([side, cap]), col)
        elif h.kind == "plane":
            q = _plane_corners(pose, h.axis)
            col = _color(AXIS_COLORS[h.axis], h, hover, active, 0.55)
            add_tris(np.array([[q[0], q[1], q[2]], [q[0], q[2], q[3]]]), col)
            add_lines(_polyline(np.concatenate([q, q[:1]])), _color(AXIS_COLORS[h.axis], h, hover, active))
        elif h.kind == "screen":
            add_lines(_polyline(_screen_circle(pose, camera, SCREEN_HANDLE_PX, 24)), _color(NEUTRAL_COLOR, h, hover, active))
        elif h.kind == "ring":
            add_lines(_polyline(_ring_points(pose, h.axis)), _color(AXIS_COLORS[h.axis], h, hover, active))
        elif h.kind in ("trackball", "scale"):
            col = _color(NEUTRAL_COLOR, h, hover, active, 0.8)
            r = TRACKBALL_RADIUS * pose.size_px if h.kind == "trackball" else pose.size_px
            add_lines(_polyline(_screen_circle(pose, camera, r, 72)), col)
            if h.kind == "scale":
                r = 5.0 * L / pose.size_px
                sq = [c + r * (sx * camera.right + sy * camera.down) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
                add_tris(np.array([[sq[0], sq[1], sq[2]], [sq[0], sq[2], sq[3]]]), col)
    z3 = np.zeros((0, 2, 3))
    return GizmoGeometry(
        np.concatenate(lines) if lines else z3,
        np.concatenate(lcol) if lcol else np.zeros((0, 4)),
        np.concatenate(tris) if tris else np.zeros((0, 3, 3)),
        np.concatenate(tcol) if tcol else np.zeros((0, 4)),
    )
