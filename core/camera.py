"""Pinhole camera and the project's coordinate frames.

Frames
------
*Camera frame* (used everywhere inside Handles Studio, the OpenCV convention):
origin at the camera centre, **+X to image-right, +Y to image-down, +Z forward** (away from the
camera, into the scene). Units are the depth map's units (usually metres).

*Image frame*: continuous pixel coordinates ``(x, y)`` with x to the right and y down; the pixel in
row ``i``, column ``j`` covers ``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``.

*Diffusion Handles frame* (the reference implementation's and the ``transforms.json`` format's):
**+X image-left, +Y image-up, +Z forward**. It is the camera frame rotated 180 degrees about Z:
``p_dh = S @ p_cam`` with ``S = diag(-1, -1, 1)``. Because ``S`` is a proper rotation (det +1),
a rotation with axis ``a_dh`` and angle ``theta`` in the DH frame is the rotation with axis
``S @ a_dh`` and the same angle ``theta`` in the camera frame (``R_cam = S R_dh S``).

Depth is *z-depth*: the Z coordinate of the surface point, not the distance along the ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Camera frame -> Diffusion Handles frame (and back: it is its own inverse).
CAM_TO_DH = np.diag([-1.0, -1.0, 1.0])

DEFAULT_FOV_DEG = 55.0


def cam_to_dh(v: np.ndarray) -> np.ndarray:
    """Convert vectors/points (..., 3) from the camera frame to the Diffusion Handles frame."""
    return np.asarray(v, dtype=np.float64) @ CAM_TO_DH.T


def dh_to_cam(v: np.ndarray) -> np.ndarray:
    """Convert vectors/points (..., 3) from the Diffusion Handles frame to the camera frame."""
    return np.asarray(v, dtype=np.float64) @ CAM_TO_DH.T


@dataclass(frozen=True)
class Camera:
    """Pinhole camera with the field of view spanning the larger image side.

    ``width`` and ``height`` are in pixels; ``fov_deg`` is the full angle (degrees) over
    ``max(width, height)``; the principal point is the image centre ``(width/2, height/2)``.
    """

    width: int
    height: int
    fov_deg: float = DEFAULT_FOV_DEG

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if not (0.0 < self.fov_deg < 180.0):
            raise ValueError(f"field of view must be between 0 and 180 degrees, got {self.fov_deg}")

    @property
    def focal(self) -> float:
        """Focal length in pixels (same for x and y)."""
        return (max(self.width, self.height) / 2.0) / math.tan(math.radians(self.fov_deg) / 2.0)

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def cy(self) -> float:
        return self.height / 2.0

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the intrinsic matrix K, as in the literature
        """3x3 intrinsic matrix mapping camera-frame points to homogeneous image coordinates."""
        f = self.focal
        return np.array([[f, 0.0, self.cx], [0.0, f, self.cy], [0.0, 0.0, 1.0]])

    def resized(self, width: int, height: int) -> Camera:
        """The same camera (same field of view) for an image resized to ``width`` x ``height``."""
        return Camera(int(width), int(height), self.fov_deg)

    def pixel_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates ``(x, y)``, each of shape (height, width), float64."""
        x = np.arange(self.width, dtype=np.float64) + 0.5
        y = np.arange(self.height, dtype=np.float64) + 0.5
        return np.meshgrid(x, y)

    def unproject(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Image coordinates (pixels) and z-depth (depth units) -> camera-frame points (..., 3)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        f = self.focal
        return np.stack([(x - self.cx) * z / f, (y - self.cy) * z / f, z], axis=-1)

    def unproject_depth(self, depth: np.ndarray) -> np.ndarray:
        """A (height, width) z-depth map -> (height, width, 3) camera-frame points at pixel centres."""
        depth = np.asarray(depth)
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth shape {depth.shape} does not match camera {self.height}x{self.width}")
        x, y = self.pixel_grid()
        return self.unproject(x, y, depth)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera-frame points (..., 3) -> image coordinates ``x, y`` (pixels) and z-depth ``z``.

        Points with ``z <= 0`` (at or behind the camera) get ``x = y = nan``; callers drop them.
        """
        p = np.asarray(points, dtype=np.float64)
        z = p[..., 2]
        f = self.focal
        with np.errstate(divide="ignore", invalid="ignore"):
            safe = np.where(z > 0, z, np.nan)
            x = p[..., 0] * f / safe + self.cx
            y = p[..., 1] * f / safe + self.cy
        return x, y, z

    def ray_directions(self) -> np.ndarray:
        """Unit ray directions (height, width, 3) through pixel centres, camera frame."""
        x, y = self.pixel_grid()
        d = self.unproject(x, y, np.ones_like(x))
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fov_deg": self.fov_deg}

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(int(d["width"]), int(d["height"]), float(d.get("fov_deg", DEFAULT_FOV_DEG)))
