"""Lifting a scene to 3D: one camera-frame point and one colour per pixel.

Frames and units (see :mod:`core.camera`): the camera frame has +X image-right, +Y image-down,
+Z forward; pixel (row i, col j) has its centre at image coordinates (j + 0.5, i + 0.5); points are
in the depth map's units (``scene.depth_unit``, usually metres). Depth is z-depth.

Object ownership: every pixel belongs to at most one object. Where masks overlap, the object
listed *last* in ``scene.objects`` owns the pixel (later objects are drawn on top, as layers). The
warp moves each pixel with its owner only, so no point is ever moved twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import InputError


@dataclass
class Lifted:
    """Per-pixel 3D lift of a scene.

    ``points``: (H, W, 3) float32 camera-frame points at pixel centres, depth units.
    ``colors``: (H, W, 3) float32 RGB in [0, 1].
    ``object_index``: (H, W) int16, index into ``scene.objects`` of the owning object, -1 for
    background (overlaps: the last object wins).
    """

    points: np.ndarray
    colors: np.ndarray
    object_index: np.ndarray

    def object_mask(self, index: int) -> np.ndarray:
        """(H, W) bool: the pixels owned by object ``index``."""
        return self.object_index == index

    def background_points(self) -> np.ndarray:
        """(N, 3) float32 camera-frame points of the pixels no object owns."""
        return self.points[self.object_index < 0]


def check_depth(depth: np.ndarray, what: str = "depth") -> None:
    """Raise :class:`InputError` unless ``depth`` is finite and within :data:`core.io.MIN_DEPTH` ..
    :data:`core.io.MAX_DEPTH` everywhere (beyond them float32 geometry overflows or vanishes)."""
    from core.io import MAX_DEPTH, MIN_DEPTH

    d = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(d) | ~((d >= MIN_DEPTH) & (d <= MAX_DEPTH))
    n = int(np.count_nonzero(bad))
    if n:
        i, j = np.unravel_index(int(np.argmax(bad)), d.shape)
        raise InputError(
            f"{what} has {n} invalid values (NaN, infinite, zero, negative, or outside {MIN_DEPTH:g} to {MAX_DEPTH:g}), first at row {i}, "
            f"column {j} ({float(d[i, j]):g}): repair the depth map before warping"
        )


def object_index_map(scene) -> np.ndarray:
    """(H, W) int16: index of the object owning each pixel, -1 for background (last object wins)."""
    h, w = scene.depth.shape
    if len(scene.objects) > np.iinfo(np.int16).max:
        raise InputError(f"too many objects ({len(scene.objects)}): at most {np.iinfo(np.int16).max}")
    index = np.full((h, w), -1, dtype=np.int16)
    for k, obj in enumerate(scene.objects):
        if obj.mask.shape != (h, w):
            raise InputError(f"mask of object {obj.name!r} is {obj.mask.shape}, the image is {(h, w)}")
        index[obj.mask] = k
    return index


def lift_scene(scene) -> Lifted:
    """Lift every pixel of ``scene`` to a camera-frame 3D point (depth units) with its colour.

    Raises :class:`InputError` when the depth is not finite and positive.
    """
    check_depth(scene.depth)
    points = scene.camera.unproject_depth(scene.depth).astype(np.float32)
    colors = scene.photo.astype(np.float32) * np.float32(1.0 / 255.0)
    return Lifted(points=points, colors=colors, object_index=object_index_map(scene))
