"""The viewport's point cloud: the scene's lifted depth as GPU-ready arrays (no GL here).

Frames and units: positions are in the photo's camera frame (``core.camera``: +X right, +Y down,
+Z forward), depth units, *before* any object transform: the view applies each object's
``Transform3D`` as a model matrix at draw time, so dragging never re-uploads points.

The cloud is made of groups laid out one after another in a single vertex buffer:

* ``background``: photo pixels not covered by any object, in the photo's colours;
* ``fill``: the background *behind* the objects (where the photo has no colour), at the filled
  background depth, in a hatch pattern: hidden behind the objects while they stay in place, it
  shows the hole as soon as an object moves away;
* one group per object (its mask's pixels), keyed by the object's id.

Each group is an :class:`open3d.geometry.PointCloud`, voxel-downsampled when the whole cloud
exceeds the point budget; its axis-aligned bounding box frames the selection.

Level of detail: besides the vertex order (photo raster order inside each group, which software
GL draws fastest: a shuffled order costs it 20-45 % more per point), each group has a *stratified*
order, :attr:`CloudData.lod`: its points sorted by the rank of their photo pixel in an 8 x 8
ordered-dither (Bayer) matrix, raster order within a rank. The points of the lowest ``r`` of the 64
ranks (the first ``Group.lod_ends[r - 1]`` in that order) are a uniform subsample of the group, a
fraction ``r / 64`` of it; ranks below 16 are a regular lattice of every second pixel, below 4 of
every fourth, below 1 of every eighth, so drawing them with points 2, 4 or 8 times wider covers
the same surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.scene import Scene

BACKGROUND = "background"
FILL = "fill"
#: hatch colours of the filled background behind objects (RGB 0..255)
HATCH_COLORS = np.array([[150, 40, 130], [70, 64, 78]], dtype=np.uint8)
HATCH_PERIOD_PX = 6
DEFAULT_POINT_BUDGET = 400_000
#: bytes per vertex: float32 x, y, z + uint8 r, g, b, a
VERTEX_BYTES = 16


@dataclass
class Group:
    """Points ``first .. first + count`` of the vertex buffer. ``spacing``: mean distance between
    neighbouring points in photo pixels (1 when not downsampled). ``lo``/``hi``: bounds (3,)."""

    key: str
    first: int
    count: int
    lo: np.ndarray
    hi: np.ndarray
    spacing: float = 1.0
    #: (LOD_RANKS,) points of dither rank below r + 1, cumulative (see the module docstring)
    lod_ends: np.ndarray | None = None


@dataclass
class CloudData:
    """``vertices``: structured (N,) array with ``pos`` float32 (3,) and ``rgba`` uint8 (4,);
    ``groups`` by key; ``pixels``: (N, 2) int32 (row, col) of each point's photo pixel
    (for background and fill points; -1 for object points); ``lod``: (N,) int64, the stratified
    order (module docstring): ``vertices[lod]`` lists each group's points, in the group's own range,
    lowest dither rank first."""

    vertices: np.ndarray
    groups: dict[str, Group]
    pixels: np.ndarray
    shape: tuple[int, int]
    source_points: int
    lod: np.ndarray | None = None

    @property
    def count(self) -> int:
        return int(len(self.vertices))

    def positions(self, key: str) -> np.ndarray:
        g = self.groups[key]
        return self.vertices["pos"][g.first : g.first + g.count]


VERTEX_DTYPE = np.dtype([("pos", np.float32, 3), ("rgba", np.uint8, 4)])


def lift(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points (H, W, 3) camera frame, colours (H, W, 3) float in [0, 1], object index (H, W) int16,
    -1 = background). Uses ``core.geometry.lift.lift_scene`` when that module is present."""
    try:
        from core.geometry.lift import lift_scene
    except ImportError:
        lift_scene = None
    if lift_scene is not None:
        lifted = lift_scene(scene)
        return np.asarray(lifted.points), np.asarray(lifted.colors), np.asarray(lifted.object_index)
    points = scene.camera.unproject_depth(scene.depth).astype(np.float32)
    colors = scene.photo.astype(np.float32) / 255.0
    index = np.full(scene.depth.shape, -1, dtype=np.int16)
    for k, obj in enumerate(scene.objects):  # the last object wins where masks overlap
        index[obj.mask] = k
    return points, colors, index


def background_depth(scene: Scene) -> np.ndarray:
    """Depth (H, W) of the background with the objects removed, depth units: the geometry
    helper's Laplace fill when present, else the scene's known background depth, else a
    nearest-valid-pixel fill. Never in front of the photo's own depth."""
    depth = scene.depth.astype(np.float32)
    union = np.zeros(depth.shape, dtype=bool)
    for obj in scene.objects:
        union |= obj.mask
    if not union.any():
        return depth
    filled = None
    try:
        from core.geometry.fill import background_depth as fill_depth
    except ImportError:
        fill_depth = None
    if fill_depth is not None:
        filled = np.asarray(fill_depth(scene), dtype=np.float32)
    elif scene.background_depth is not None:
        filled = np.asarray(scene.background_depth, dtype=np.float32)
    elif not union.all():
        _, (ii, jj) = ndimage.distance_transform_edt(union, return_indices=True)
        filled = depth[ii, jj]
    else:
        filled = depth.copy()
    return np.maximum(filled, depth)


def _bayer(n: int) -> np.ndarray:
    """(n, n) ordered-dither matrix, ranks 0 .. n*n - 1 (n a power of two): the cells of rank
    below ``4**k`` form a regular lattice of spacing ``n / 2**k``."""
    m = np.zeros((1, 1), dtype=np.int64)
    while m.shape[0] < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return m


LOD_TILE = 8
#: number of level-of-detail ranks (cells of the dither matrix)
LOD_RANKS = LOD_TILE * LOD_TILE
_BAYER = _bayer(LOD_TILE)


def lod_order(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stratified order of points at lattice positions ``(rows, cols)`` (see the module
    docstring): (the index array that sorts them by dither rank, stable; the cumulative count of
    points per rank, (LOD_RANKS,))."""
    rank = _BAYER[np.asarray(rows, dtype=np.int64) % LOD_TILE, np.asarray(cols, dtype=np.int64) % LOD_TILE]
    return np.argsort(rank, kind="stable"), np.cumsum(np.bincount(rank, minlength=LOD_RANKS))


def _voxel_downsample(points: np.ndarray, colors: np.ndarray, voxel: float):
    import open3d as o3d

    pc = o3d.geometry.PointCloud()
    pc.points = o3d.utility.Vector3dVector(points.astype(np.float64))
    pc.colors = o3d.utility.Vector3dVector(colors.astype(np.float64))
    down = pc.voxel_down_sample(float(voxel))
    return np.asarray(down.points, dtype=np.float32), np.asarray(down.colors, dtype=np.float32)


def _bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds through Open3D (the same box the rest of the app would compute)."""
    if len(points) == 0:
        return np.zeros(3), np.zeros(3)
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    box = pc.get_axis_aligned_bounding_box()
    return np.asarray(box.min_bound, dtype=np.float64), np.asarray(box.max_bound, dtype=np.float64)


def build_cloud(scene: Scene, point_budget: int | None = DEFAULT_POINT_BUDGET) -> CloudData:
    """Lift ``scene`` into the view's vertex buffer (see module docstring).

    ``point_budget``: the most points in the buffer; above it every group is voxel-downsampled
    (voxel size from the pixel footprint ``z / focal``) until the total fits. None: no limit.
    """
    points, colors, index = lift(scene)
    h, w = scene.depth.shape
    rows, cols = np.mgrid[0:h, 0:w]
    # hatch pattern of the hole (the filled background behind objects)
    obj_px = index >= 0
    fill_depth = background_depth(scene)
    fill_pts = scene.camera.unproject(cols[obj_px] + 0.5, rows[obj_px] + 0.5, fill_depth[obj_px]).astype(np.float32)
    stripe = ((rows[obj_px] + cols[obj_px]) // HATCH_PERIOD_PX) % 2
    fill_rgb = HATCH_COLORS[stripe].astype(np.float32) / 255.0

    parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    bg = ~obj_px
    parts.append((BACKGROUND, points[bg], colors[bg], np.stack([rows[bg], cols[bg]], axis=1)))
    parts.append((FILL, fill_pts, fill_rgb, np.stack([rows[obj_px], cols[obj_px]], axis=1)))
    for k, obj in enumerate(scene.objects):
        sel = index == k
        parts.append((obj.id, points[sel], colors[sel], np.stack([rows[sel], cols[sel]], axis=1)))
    total = sum(len(p[1]) for p in parts)

    spacing = 1.0
    if point_budget is not None and total > point_budget:
        # footprint of one photo pixel at the median depth; voxels of k pixels keep ~1/k^2 points
        footprint = float(np.median(scene.depth)) / scene.camera.focal
        voxel = footprint * math.sqrt(total / point_budget)
        for _ in range(6):
            down = []
            for key, p, c, _px in parts:
                dp, dc = _voxel_downsample(p, c, voxel) if len(p) else (p, c)
                down.append((key, dp, dc))
            n = sum(len(d[1]) for d in down)
            if n <= point_budget:
                break
            voxel *= math.sqrt(n / point_budget) * 1.05
        spacing = voxel / footprint
        new_parts = []
        for key, dp, dc in down:
            # the photo pixel of each downsampled point (background and fill: for the hole flags;
            # every group: for the level-of-detail order), on a lattice of the voxel's footprint
            x, y, _z = scene.camera.project(dp)
            pix = np.stack([np.clip(np.floor(y), 0, h - 1), np.clip(np.floor(x), 0, w - 1)], axis=1)
            pix = np.nan_to_num(pix, nan=0).astype(np.int64)
            new_parts.append((key, dp, dc, pix))
        parts = new_parts

    n = sum(len(p[1]) for p in parts)
    vertices = np.empty(n, dtype=VERTEX_DTYPE)
    pixels = np.empty((n, 2), dtype=np.int32)
    lod = np.empty(n, dtype=np.int64)
    groups: dict[str, Group] = {}
    first = 0
    for key, p, c, px in parts:
        m = len(p)
        # level of detail: downsampled points sit on a lattice of `spacing` photo pixels
        lattice = px if spacing == 1.0 else np.floor(px / spacing).astype(np.int64)
        order, lod_ends = lod_order(lattice[:, 0], lattice[:, 1])
        lod[first : first + m] = first + order
        if key != BACKGROUND and key != FILL:
            px = np.full((m, 2), -1, dtype=np.int64)
        vertices["pos"][first : first + m] = p
        vertices["rgba"][first : first + m, :3] = np.clip(np.asarray(c) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        vertices["rgba"][first : first + m, 3] = 255
        pixels[first : first + m] = px
        lo, hi = _bounds(np.asarray(p))
        groups[key] = Group(key, first, m, lo, hi, spacing, lod_ends)
        first += m
    return CloudData(vertices, groups, pixels, (h, w), total, lod)


def hole_flags(cloud: CloudData, mask: np.ndarray | None) -> np.ndarray:
    """(N,) uint8: 255 for background and fill points whose photo pixel is in ``mask`` (H, W) bool."""
    flags = np.zeros(cloud.count, dtype=np.uint8)
    if mask is None:
        return flags
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != cloud.shape:
        raise ValueError(f"hole mask shape {mask.shape} does not match the scene's {cloud.shape}")
    # the points with a photo pixel and those pixels' flat indices: once per cloud (a drag updates
    # the hole mask every event; this keeps it one gather)
    cached = getattr(cloud, "_hole_index", None)
    if cached is None:
        px = cloud.pixels
        at = np.flatnonzero(px[:, 0] >= 0)
        cached = (at, px[at, 0].astype(np.int64) * cloud.shape[1] + px[at, 1])
        object.__setattr__(cloud, "_hole_index", cached)
    at, flat = cached
    flags[at] = np.take(mask.reshape(-1), flat).view(np.uint8) * np.uint8(255)
    return flags
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != cloud.shape:
        raise ValueError(f"hole mask shape {mask.shape} does not match the scene's {cloud.shape}")
    px = cloud.pixels
    ok = px[:, 0] >= 0
    flags[ok] = np.where(mask[px[ok, 0], px[ok, 1]], 255, 0).astype(np.uint8)
    return flags
