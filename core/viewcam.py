"""Orbit camera of the interactive 3D view (pure math, no Qt).

World frame
-----------
The view works in the *camera frame of the photo* (see :mod:`core.camera`): origin at the photo's
camera centre, +X image-right, +Y image-down, +Z forward; units are the scene's depth units.

View camera
-----------
The view camera looks from ``eye`` towards ``target`` along ``forward``; its own axes follow the
same convention as the photo camera: ``right`` (screen +x), ``down`` (screen +y), ``forward``
(into the screen), with ``right x down = forward``. Its orientation is ``yaw`` (turn about the world
Y axis, degrees; positive turns the view towards +X) and ``pitch`` (degrees; positive looks down,
towards +Y). With ``yaw = pitch = 0`` the axes are the world axes.

Screen
------
Screen coordinates are the widget's pixels: ``(x, y)`` with x right and y down, origin at the
top-left corner, pixel centres at ``(j + 0.5, i + 0.5)`` exactly like image pixels.

Intrinsics: the focal length in screen pixels is chosen so that a *reference image* of
``ref_size`` pixels (the photo) with the field of view ``fov_deg`` over its longer side fits the
viewport (letterbox, centred). With ``ref_size`` equal to the viewport size and the pose of
:meth:`OrbitCamera.reset_to_photo`, every camera-frame point projects to exactly the pixel
``core.camera.Camera.project`` gives it: the point cloud reproduces the photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.camera import Camera

MIN_PITCH = -89.0
MAX_PITCH = 89.0


@dataclass(frozen=True)
class Ray:
    """A ray ``origin + u * direction`` (u >= 0), world frame (photo camera frame), unit direction."""

    origin: np.ndarray
    direction: np.ndarray

    def at(self, u: float) -> np.ndarray:
        return self.origin + u * self.direction


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if n < 1e-15:
        raise ValueError("zero-length vector")
    return v / n


@dataclass
class OrbitCamera:
    """Orbit camera: ``target`` (world, depth units), ``distance`` (> 0) from the target to the eye,
    ``yaw``/``pitch`` (degrees, see module docstring), ``fov_deg`` over the longer side of
    ``ref_size`` (pixels), viewport ``size`` (pixels, width x height), ``near``/``far`` clip
    distances along the view axis (depth units; derived from :attr:`bounds` when those are set).
    """

    target: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    distance: float = 1.0
    yaw: float = 0.0
    pitch: float = 0.0
    fov_deg: float = 55.0
    size: tuple[int, int] = (640, 480)
    ref_size: tuple[int, int] | None = None
    #: world-space axis-aligned bounds of the scene (lo (3,), hi (3,)), for clip planes
    bounds: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.target = np.asarray(self.target, dtype=np.float64).reshape(3)
        self.set_size(*self.size)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_photo(cls, camera: Camera, size: tuple[int, int] | None = None, target_depth: float = 1.0) -> OrbitCamera:
        """A view camera looking exactly through the photo's ``camera`` (eye at the origin, +Z
        forward), orbiting about the point on the optical axis at ``target_depth`` (depth units).
        ``size``: viewport pixels (default: the photo's size)."""
        cam = cls(size=size or (camera.width, camera.height))
        cam.reset_to_photo(camera, target_depth)
        return cam

    def copy(self) -> OrbitCamera:
        b = None if self.bounds is None else (self.bounds[0].copy(), self.bounds[1].copy())
        return OrbitCamera(self.target.copy(), self.distance, self.yaw, self.pitch, self.fov_deg, self.size, self.ref_size, b)

    def set_size(self, width: int, height: int) -> None:
        """Viewport size in screen pixels (clamped to at least 1 x 1)."""
        self.size = (max(1, int(width)), max(1, int(height)))

    def set_bounds(self, lo, hi) -> None:
        """Scene bounds (world frame, depth units), used for the clip planes."""
        lo = np.asarray(lo, dtype=np.float64).reshape(3)
        hi = np.asarray(hi, dtype=np.float64).reshape(3)
        self.bounds = (np.minimum(lo, hi), np.maximum(lo, hi))

    # ------------------------------------------------------------------ pose
    @property
    def forward(self) -> np.ndarray:
        """Unit viewing direction (world)."""
        y, p = math.radians(self.yaw), math.radians(self.pitch)
        return np.array([math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y)])

    @property
    def right(self) -> np.ndarray:
        """Unit screen-right direction (world); always horizontal (no roll)."""
        y = math.radians(self.yaw)
        return np.array([math.cos(y), 0.0, -math.sin(y)])

    @property
    def down(self) -> np.ndarray:
        """Unit screen-down direction (world): ``forward x right``."""
        return np.cross(self.forward, self.right)

    @property
    def eye(self) -> np.ndarray:
        """Eye position (world, depth units)."""
        return self.target - self.distance * self.forward

    @property
    def rotation(self) -> np.ndarray:
        """3x3 world -> view rotation (rows: right, down, forward)."""
        return np.stack([self.right, self.down, self.forward])

    @property
    def focal(self) -> float:
        """Focal length in screen pixels (see module docstring: the reference image is letterboxed)."""
        w, h = self.size
        rw, rh = self.ref_size or self.size
        k = min(w / rw, h / rh)
        return k * (max(rw, rh) / 2.0) / math.tan(math.radians(self.fov_deg) / 2.0)

    @property
    def principal(self) -> tuple[float, float]:
        return self.size[0] / 2.0, self.size[1] / 2.0

    def view_matrix(self) -> np.ndarray:
        """4x4 world -> view (right, down, forward axes) matrix."""
        R = self.rotation
        m = np.eye(4)
        m[:3, :3] = R
        m[:3, 3] = -R @ self.eye
        return m

    def clip_range(self) -> tuple[float, float]:
        """(near, far) clip distances along the view axis (depth units), enclosing :attr:`bounds`."""
        scale = max(self.distance, 1e-6)
        if self.bounds is None:
            return scale * 1e-3, scale * 1e3
        lo, hi = self.bounds
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        depth = (corners - self.eye) @ self.forward
        radius = float(np.linalg.norm(hi - lo)) / 2.0 + 1e-6
        far = max(float(depth.max()), 1e-3) * 1.05 + 1e-3 * radius
        near = float(depth.min()) * 0.9
        near = max(near, far * 1e-4, 1e-4 * radius)
        return near, far

    def projection_matrix(self) -> np.ndarray:
        """4x4 view -> GL clip-space matrix for the pinhole intrinsics (OpenCV-style view axes:
        screen y down maps to NDC y up; NDC z from -1 at ``near`` to +1 at ``far``)."""
        w, h = self.size
        f = self.focal
        cx, cy = self.principal
        n, fa = self.clip_range()
        m = np.zeros((4, 4))
        m[0, 0] = 2.0 * f / w
        m[0, 2] = 2.0 * cx / w - 1.0
        m[1, 1] = -2.0 * f / h
        m[1, 2] = 1.0 - 2.0 * cy / h
        m[2, 2] = (fa + n) / (fa - n)
        m[2, 3] = -2.0 * fa * n / (fa - n)
        m[3, 2] = 1.0
        return m

    def view_projection(self) -> np.ndarray:
        """4x4 world -> clip matrix (``projection @ view``)."""
        return self.projection_matrix() @ self.view_matrix()

    # ------------------------------------------------------------------ screen <-> world
    def to_view(self, points) -> np.ndarray:
        """World points (..., 3) -> view-frame points (..., 3) (right, down, forward)."""
        p = np.asarray(points, dtype=np.float64)
        return (p - self.eye) @ self.rotation.T

    def project(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points (..., 3) -> screen ``x, y`` (pixels) and view depth ``z`` (depth units).
        Points at or behind the eye get ``x = y = nan``."""
        v = self.to_view(points)
        z = v[..., 2]
        f = self.focal
        cx, cy = self.principal
        with np.errstate(divide="ignore", invalid="ignore"):
            safe = np.where(z > 1e-12, z, np.nan)
            return v[..., 0] * f / safe + cx, v[..., 1] * f / safe + cy, z

    def project_point(self, point) -> tuple[float, float]:
        """One world point -> screen (x, y) pixels (nan when behind the eye)."""
        x, y, _ = self.project(np.asarray(point, dtype=np.float64).reshape(1, 3))
        return float(x[0]), float(y[0])

    def ray(self, x: float, y: float) -> Ray:
        """The ray from the eye through screen point ``(x, y)`` (pixels), world frame."""
        f = self.focal
        cx, cy = self.principal
        d_view = np.array([(x - cx) / f, (y - cy) / f, 1.0])
        return Ray(self.eye.copy(), _unit(self.rotation.T @ d_view))

    def unproject(self, x: float, y: float, depth: float) -> np.ndarray:
        """Screen point (pixels) at view depth ``depth`` (along the view axis) -> world point."""
        f = self.focal
        cx, cy = self.principal
        v = np.array([(x - cx) / f * depth, (y - cy) / f * depth, depth])
        return self.eye + self.rotation.T @ v

    def pixel_size_at(self, point) -> float:
        """World length (depth units) of one screen pixel at ``point``'s view depth."""
        z = float(self.to_view(np.asarray(point, dtype=np.float64).reshape(3))[2])
        return max(abs(z), 1e-9) / self.focal

    # ------------------------------------------------------------------ navigation
    def orbit(self, dx: float, dy: float, deg_per_px: float = 0.3) -> None:
        """Turn about the target for a mouse move of (dx, dy) screen pixels: the scene follows the
        mouse (dragging right turns the view towards +right). Pitch stays within +-89 degrees."""
        self.yaw = (self.yaw + dx * deg_per_px + 180.0) % 360.0 - 180.0
        self.pitch = float(np.clip(self.pitch + dy * deg_per_px, MIN_PITCH, MAX_PITCH))

    def pan(self, dx: float, dy: float) -> None:
        """Slide the view so the point at the target's depth follows a mouse move of (dx, dy) px."""
        k = self.distance / self.focal
        self.target = self.target - k * (dx * self.right + dy * self.down)

    def zoom(self, factor: float, anchor: tuple[float, float] | None = None) -> None:
        """Scale the eye-target distance by ``factor`` (< 1 zooms in). With ``anchor`` (screen px) the
        point under it at the target's depth stays under it (zoom towards the cursor)."""
        factor = float(factor)
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"zoom factor must be a positive number, got {factor!r}")
        new_distance = float(np.clip(self.distance * factor, 1e-6, 1e9))
        factor = new_distance / self.distance
        if anchor is not None:
            p = self.unproject(anchor[0], anchor[1], self.distance)
            self.target = p + (self.target - p) * factor
        self.distance = new_distance

    def dolly(self, amount: float) -> None:
        """Move eye and target together along the view direction by ``amount`` depth units."""
        self.target = self.target + float(amount) * self.forward

    def frame_bounds(self, lo, hi, margin: float = 1.15) -> None:
        """Keep the orientation; aim at the centre of the box ``lo``..``hi`` (world) and move back
        until its bounding sphere fits the narrower field of view, times ``margin``."""
        lo = np.asarray(lo, dtype=np.float64).reshape(3)
        hi = np.asarray(hi, dtype=np.float64).reshape(3)
        centre = (lo + hi) / 2.0
        radius = max(float(np.linalg.norm(hi - lo)) / 2.0, 1e-6)
        w, h = self.size
        half = math.atan((min(w, h) / 2.0) / self.focal)
        self.target = centre
        self.distance = margin * radius / math.sin(half)

    def reset_to_photo(self, camera: Camera, target_depth: float | None = None) -> None:
        """Look exactly through the photo's camera: eye at the origin, +Z forward, +Y down, the
        photo's field of view, the photo letterboxed in the viewport. Orbiting then turns about the
        point on the optical axis at ``target_depth`` (depth units; default: the current distance)."""
        d = float(target_depth if target_depth is not None else self.distance)
        if not (d > 0 and math.isfinite(d)):
            raise ValueError(f"target depth must be a positive number, got {target_depth!r}")
        self.yaw = 0.0
        self.pitch = 0.0
        self.fov_deg = camera.fov_deg
        self.ref_size = (camera.width, camera.height)
        self.distance = d
        self.target = np.array([0.0, 0.0, d])
