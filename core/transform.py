"""Rigid-plus-scale object transforms about a pivot.

A :class:`Transform3D` maps a camera-frame point ``p`` (depth units) of an object whose pivot is
``c`` (the centroid of the object's 3D points, camera frame) to::

    p' = s * R @ (p - c) + c + t

with ``t`` the translation (camera frame, depth units), ``R`` the rotation given as a unit
quaternion ``(w, x, y, z)`` and ``s`` the uniform scale (> 0). Because every transform of one
object shares the same pivot, composition and inversion have closed forms (see methods).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def quat_normalize(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = float(np.linalg.norm(q))
    if not math.isfinite(n) or n < 1e-12:
        raise ValueError("rotation quaternion must be finite and non-zero")
    # idempotent: an already unit quaternion is kept bit for bit (so to_dict/from_dict round-trips)
    if abs(n - 1.0) > 4 * np.finfo(np.float64).eps:
        q = q / n
    # canonical sign (q and -q are the same rotation): the first non-zero component is positive,
    # i.e. w > 0, or for a half turn (w == 0) the first non-zero of x, y, z
    nz = np.flatnonzero(q)
    if len(nz) and q[nz[0]] < 0:
        q = -q
    return q + 0.0  # no negative zeros


def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``)."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def _short(v) -> str:
    """A one-line, bounded repr of a user value for an error message."""
    try:
        text = repr(tuple(float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)))
    except (TypeError, ValueError):
        text = repr(v)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def quat_from_axis_angle(axis, angle_deg: float) -> np.ndarray:
    """Unit quaternion of a right-handed rotation by ``angle_deg`` degrees about ``axis``.

    ``axis`` need not be unit length (any finite length, huge or tiny, works: it is scaled by its
    largest component before its norm is taken, so the norm neither overflows nor underflows); a
    zero axis is allowed only with a zero angle. A non-finite axis or angle is a ValueError.
    """
    raw = axis
    axis = np.asarray(axis, dtype=np.float64).reshape(-1)
    if axis.shape != (3,) or not np.all(np.isfinite(axis)):
        raise ValueError(f"rotation axis must be 3 finite numbers, got {_short(raw)}")
    angle = float(angle_deg)
    if not math.isfinite(angle):
        raise ValueError(f"rotation angle must be a finite number of degrees, got {angle_deg!r}")
    half = math.radians(angle) / 2.0
    m = float(np.max(np.abs(axis)))
    if m == 0.0:
        if abs(math.sin(half)) > 1e-12:
            raise ValueError(f"rotation axis {_short(raw)} is zero but the angle is {angle:g} degrees")
        return np.array([1.0, 0.0, 0.0, 0.0])
    axis = axis / m  # largest component is now +-1: the norm is in [1, sqrt(3)]
    axis = axis / float(np.linalg.norm(axis))
    return quat_normalize(np.concatenate([[math.cos(half)], math.sin(half) * axis]))


def quat_to_axis_angle(q) -> tuple[np.ndarray, float]:
    """Unit quaternion -> (unit axis, angle in degrees in [0, 180]). Identity gives axis +Y, 0."""
    q = quat_normalize(q)
    s = float(np.linalg.norm(q[1:]))
    if s < 1e-12:
        return np.array([0.0, 1.0, 0.0]), 0.0
    angle = 2.0 * math.degrees(math.atan2(s, q[0]))
    return q[1:] / s, angle


def quat_to_matrix(q) -> np.ndarray:
    w, x, y, z = quat_normalize(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_from_matrix(m) -> np.ndarray:
    """Rotation matrix (3x3, orthonormal, det +1) -> unit quaternion (w, x, y, z)."""
    m = np.asarray(m, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    return quat_normalize(q)


def _vec3(v, what: str) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{what} must be 3 finite numbers, got {v!r}")
    return (float(a[0]), float(a[1]), float(a[2]))


@dataclass(frozen=True)
class Transform3D:
    """Object transform about its pivot: ``p' = s R (p - c) + c + t`` (camera frame, depth units).

    ``translation``: (3,) camera frame, depth units. ``rotation``: unit quaternion (w, x, y, z).
    ``scale``: uniform, > 0.
    """

    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "translation", _vec3(self.translation, "translation"))
        q = quat_normalize(self.rotation)
        object.__setattr__(self, "rotation", tuple(float(v) for v in q))
        s = float(self.scale)
        if not math.isfinite(s) or s <= 0:
            raise ValueError(f"scale must be a positive number, got {self.scale!r}")
        object.__setattr__(self, "scale", s)

    # ----- constructors -----
    @classmethod
    def identity(cls) -> Transform3D:
        return cls()

    @classmethod
    def from_axis_angle(cls, axis=(0.0, 1.0, 0.0), angle_deg: float = 0.0, translation=(0.0, 0.0, 0.0), scale: float = 1.0) -> Transform3D:
        return cls(translation=translation, rotation=tuple(quat_from_axis_angle(axis, angle_deg)), scale=scale)

    # ----- views -----
    @property
    def R(self) -> np.ndarray:  # noqa: N802 - the rotation matrix R
        """3x3 rotation matrix (camera frame)."""
        return quat_to_matrix(self.rotation)

    @property
    def t(self) -> np.ndarray:
        return np.asarray(self.translation, dtype=np.float64)

    def axis_angle(self) -> tuple[np.ndarray, float]:
        """(unit axis, angle in degrees) of the rotation, camera frame."""
        return quat_to_axis_angle(self.rotation)

    def matrix(self, pivot) -> np.ndarray:
        """4x4 homogeneous matrix of this transform for an object with pivot ``pivot`` (camera frame)."""
        c = np.asarray(pivot, dtype=np.float64).reshape(3)
        A = self.scale * self.R
        m = np.eye(4)
        m[:3, :3] = A
        m[:3, 3] = c + self.t - A @ c
        return m

    def apply(self, points: np.ndarray, pivot) -> np.ndarray:
        """Transform camera-frame points (..., 3) of an object with pivot ``pivot``."""
        p = np.asarray(points, dtype=np.float64)
        c = np.asarray(pivot, dtype=np.float64).reshape(3)
        return (p - c) @ (self.scale * self.R).T + c + self.t

    def is_identity(self, tol: float = 1e-9) -> bool:
        return (
            float(np.abs(self.t).max()) <= tol and abs(self.scale - 1.0) <= tol and float(np.abs(np.asarray(self.rotation) - (1.0, 0.0, 0.0, 0.0)).max()) <= tol
        )

    # ----- algebra (same pivot) -----
    def compose(self, other: Transform3D) -> Transform3D:
        """``self ∘ other``: apply ``other`` first, then ``self`` (both about the same pivot)."""
        q = quat_multiply(self.rotation, other.rotation)
        t = self.t + self.scale * (self.R @ other.t)
        return Transform3D(tuple(t), tuple(q), self.scale * other.scale)

    def inverse(self) -> Transform3D:
        Rt = self.R.T
        q = np.asarray(self.rotation) * np.array([1.0, -1.0, -1.0, -1.0])
        t = -(Rt @ self.t) / self.scale
        return Transform3D(tuple(t), tuple(q), 1.0 / self.scale)

    # ----- serialisation -----
    def to_dict(self) -> dict:
        return {"translation": list(self.translation), "rotation": list(self.rotation), "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> Transform3D:
        try:
            return cls(
                translation=tuple(d.get("translation", (0.0, 0.0, 0.0))),
                rotation=tuple(d.get("rotation", (1.0, 0.0, 0.0, 0.0))),
                scale=float(d.get("scale", 1.0)),
            )
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"not a transform: {d!r}") from exc
