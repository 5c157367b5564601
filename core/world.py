"""The procedural world: random scenes of the sample's stage, ray cast exactly, with captions.

A world scene is a :class:`WorldLayout`: the fixed stage (a checkered floor, a planked back wall,
the sky behind) and 1-4 objects of three kinds (``box``, ``sphere`` = beach ball, ``cylinder``)
standing on the floor without touching each other, each with a size, a floor position, a yaw and
a colour style from a small palette per kind, lit by a sun whose direction varies within a small
range plus ambient light (Lambert shading, cast shadows by shadow rays). Everything is
deterministic: :func:`random_layout` from a seed, :func:`render_layout` from a layout.

The built-in sample scene (:mod:`core.sample`) is :data:`SAMPLE_LAYOUT`, one of these scenes, and
its prompt is that layout's :meth:`WorldLayout.caption`. The world model (``resources/models/world``)
was trained on scenes of :func:`random_layout` with seeds below :data:`HELD_OUT_SEED`; benchmarks
and tests use seeds from :data:`HELD_OUT_SEED` on, which training never saw.

Frames and units: the camera is :class:`core.camera.Camera` (``fov_deg`` over the larger side,
principal point at the centre) at the origin of its camera frame (+X image-right, +Y image-down,
+Z forward), metres. The stage is built in a level frame (same axes, floor horizontal at
``y = FLOOR_Y``) tilted by ``PITCH_DEG`` so that the camera looks slightly down. Object positions
``x``, ``z`` and yaw (degrees, about the level frame's vertical) are given in the level frame. One
ray per pixel through the pixel centre with direction ``((x - cx)/f, (y - cy)/f, 1)``, so the hit
distance *is* the z-depth: depth is exact, and each object's mask is exactly the set of pixels
whose ray hits it (no anti-aliasing).

Ground truth for moved objects: :func:`render_moved` moves each object's mesh by its
:class:`~core.transform.Transform3D` about the object's pivot *as the scene computes it*
(``Scene.pivot`` of the identity render at the same size: the centroid of the object's visible 3D
points, the very pivot the warp plan and the preview use). Textures are attached to the objects
(evaluated at the hit point mapped back to the object's rest pose), so a moved object carries its
texture; shading and shadows are recomputed at the new pose.

Open3D (``RaycastingScene``, geometry only) is imported lazily: ``import core.world`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from typing import cast

import numpy as np

from core.camera import Camera
from core.errors import InputError
from core.scene import Scene, SceneObject
from core.transform import Transform3D

KINDS = ("box", "sphere", "cylinder")
PITCH_DEG = 15.0
FLOOR_Y = 1.5
WALL_Z = 8.5
#: direction *towards* the sun in the level stage frame (up-left, behind the camera): the sample's
SUN_DIR = (-0.45, -1.0, -0.55)
AMBIENT = 0.35
SKY_DEPTH = 100.0
SKY_RGB = (0.75, 0.82, 0.92)
#: seeds of :func:`random_layout` at or above this were never used in training
HELD_OUT_SEED = 1_000_000
FLOOR_PHRASE = "on a tiled floor in front of a wall"

#: per kind: style -> (caption adjective(s), colour A, colour B, colour C). Style 0 is the sample's.
#: box: checker of A and B; sphere: segments A / B, caps C; cylinder: stripes A / B, caps C.
STYLES: dict[str, tuple[tuple[str, tuple, tuple, tuple], ...]] = {
    "box": (
        ("red checkered", (0.85, 0.22, 0.18), (0.95, 0.78, 0.32), (0.0, 0.0, 0.0)),
        ("purple checkered", (0.50, 0.24, 0.68), (0.92, 0.92, 0.90), (0.0, 0.0, 0.0)),
        ("teal checkered", (0.10, 0.55, 0.55), (0.95, 0.90, 0.70), (0.0, 0.0, 0.0)),
        ("black checkered", (0.12, 0.12, 0.14), (0.90, 0.90, 0.90), (0.0, 0.0, 0.0)),
    ),
    "sphere": (
        ("blue", (0.18, 0.32, 0.85), (0.92, 0.92, 0.90), (0.95, 0.55, 0.15)),
        ("red", (0.85, 0.15, 0.15), (0.92, 0.92, 0.90), (0.20, 0.30, 0.80)),
        ("yellow", (0.95, 0.80, 0.15), (0.20, 0.55, 0.85), (0.85, 0.20, 0.20)),
        ("green", (0.20, 0.65, 0.25), (0.95, 0.95, 0.85), (0.90, 0.85, 0.20)),
    ),
    "cylinder": (
        ("green striped", (0.22, 0.62, 0.28), (0.90, 0.84, 0.30), (0.30, 0.55, 0.30)),
        ("blue striped", (0.15, 0.30, 0.75), (0.92, 0.92, 0.90), (0.25, 0.35, 0.65)),
        ("red striped", (0.80, 0.15, 0.15), (0.95, 0.95, 0.95), (0.70, 0.25, 0.25)),
        ("orange striped", (0.95, 0.50, 0.10), (0.15, 0.15, 0.18), (0.80, 0.45, 0.20)),
    ),
}
NOUNS = {"box": "box", "sphere": "beach ball", "cylinder": "cylinder"}
#: size ranges (metres): box edge; sphere radius; cylinder radius and height
SIZE_RANGES = {"box": ((0.6, 1.1),), "sphere": ((0.35, 0.65),), "cylinder": ((0.25, 0.45), (0.7, 1.3))}
#: placement range on the floor (level frame, metres) and the gap kept between footprints
X_RANGE = (-2.4, 2.4)
Z_RANGE = (3.6, 7.4)
GAP = 0.12


@dataclass(frozen=True)
class WorldObject:
    """One object of a layout. ``size``: box (edge,), sphere (radius,), cylinder (radius, height),
    metres; ``x``, ``z``: centre of its footprint on the floor, level frame, metres; ``yaw_deg``
    about the level frame's vertical; ``style``: index into :data:`STYLES` of its kind."""

    name: str
    kind: str
    size: tuple[float, ...]
    x: float
    z: float
    yaw_deg: float = 0.0
    style: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown world object kind {self.kind!r} (kinds: {', '.join(KINDS)})")
        if len(self.size) != len(SIZE_RANGES[self.kind]) or min(self.size) <= 0:
            raise InputError(f"world object {self.name!r}: bad size {self.size!r} for a {self.kind}")
        if not 0 <= self.style < len(STYLES[self.kind]):
            raise InputError(f"world object {self.name!r}: style {self.style} out of range for a {self.kind}")

    @property
    def height(self) -> float:
        return {"box": self.size[0], "sphere": 2 * self.size[0], "cylinder": self.size[-1]}[self.kind]

    @property
    def footprint_radius(self) -> float:
        """Radius (metres) of a circle on the floor that contains the object at any yaw."""
        return self.size[0] * (math.sqrt(0.5) if self.kind == "box" else 1.0)

    def phrase(self) -> str:
        adj = STYLES[self.kind][self.style][0]
        return f"{'an' if adj[0] in 'aeiou' else 'a'} {adj} {NOUNS[self.kind]}"


@dataclass(frozen=True)
class WorldLayout:
    """A world scene: objects and the direction towards the sun (level frame, any length)."""

    objects: tuple[WorldObject, ...]
    sun: tuple[float, float, float] = SUN_DIR
    seed: int | None = field(default=None, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects)

    def object(self, name: str) -> WorldObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise InputError(f"the scene has no object {name!r} (objects: {', '.join(self.names)})")

    def caption(self) -> str:
        """ "a red checkered box, a blue beach ball and a green striped cylinder on a tiled floor in
        front of a wall": objects by kind (box, ball, cylinder), left to right within a kind."""
        order = sorted(self.objects, key=lambda o: (KINDS.index(o.kind), o.x))
        parts = [o.phrase() for o in order]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{body} {FLOOR_PHRASE}"


SAMPLE_LAYOUT = WorldLayout(
    objects=(
        WorldObject("box", "box", (0.9,), -1.35, 5.0, yaw_deg=30.0),
        WorldObject("sphere", "sphere", (0.55,), 0.25, 5.7),
        WorldObject("cylinder", "cylinder", (0.35, 1.1), 1.5, 4.6),
    ),
)


def _fits(obj: WorldObject, placed: list[WorldObject]) -> bool:
    for p in placed:
        if math.hypot(obj.x - p.x, obj.z - p.z) < obj.footprint_radius + p.footprint_radius + GAP:
            return False
    return True


def random_layout(seed: int, max_objects: int = 4) -> WorldLayout:
    """A random layout, deterministic from ``seed``: 1-``max_objects`` objects (kinds, sizes,
    styles, yaws uniform; placed without overlapping footprints, retried a bounded number of
    times) and a sun within about 15 degrees of the sample's."""
    rng = np.random.default_rng([int(seed), 20261201])
    n = int(rng.integers(1, max_objects + 1))
    placed: list[WorldObject] = []
    counts: dict[str, int] = {}
    for _ in range(n):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        size = tuple(round(float(rng.uniform(lo, hi)), 4) for lo, hi in SIZE_RANGES[kind])
        style = int(rng.integers(len(STYLES[kind])))
        yaw = round(float(rng.uniform(0.0, 360.0)), 3)
        k = counts.get(kind, 0) + 1
        name = kind if k == 1 else f"{kind} {k}"
        for _attempt in range(40):
            x = round(float(rng.uniform(*X_RANGE)), 4)
            z = round(float(rng.uniform(*Z_RANGE)), 4)
            cand = WorldObject(name, kind, size, x, z, yaw, style)
            if _fits(cand, placed):
                placed.append(cand)
                counts[kind] = k
                break
    az = math.radians(float(rng.uniform(-15.0, 15.0)))
    el = float(rng.uniform(0.85, 1.15))
    sx, sy, sz = SUN_DIR
    sun = (sx * math.cos(az) - sz * math.sin(az), sy * el, sx * math.sin(az) + sz * math.cos(az))
    return WorldLayout(objects=tuple(placed), sun=(round(sun[0], 6), round(sun[1], 6), round(sun[2], 6)), seed=int(seed))


# ----------------------------------------------------------------------------- geometry
def _rot_x(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


#: level stage frame -> camera frame (the camera looks down by PITCH_DEG)
STAGE_TO_CAM = _rot_x(PITCH_DEG)
#: Open3D's cylinder axis is +Z; this stands it up along the stage's vertical (proper rotation)
_CYL_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@cache
def _unit_mesh(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, triangles) of the unit shape of ``kind`` in its local frame, centred."""
    import open3d as o3d  # heavy: only when a scene is rendered

    if kind == "box":
        m = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0)
        return np.asarray(m.vertices) - 0.5, np.asarray(m.triangles, np.int32)
    if kind == "sphere":
        m = o3d.geometry.TriangleMesh.create_sphere(1.0, resolution=48)
        return np.asarray(m.vertices), np.asarray(m.triangles, np.int32)
    m = o3d.geometry.TriangleMesh.create_cylinder(1.0, 1.0, resolution=96, split=1)
    return np.asarray(m.vertices), np.asarray(m.triangles, np.int32)


def _quad(corners) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(corners, np.float64), np.array([[0, 1, 2], [0, 2, 3]], np.int32)


@lru_cache(maxsize=64)
def _meshes(layout: WorldLayout) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (vertices in the camera frame, triangles, object centre (camera frame), object
    rotation local->camera) at the rest pose; ``"floor"`` and ``"wall"`` included."""
    out = {}
    fv, ft = _quad([[-30, FLOOR_Y, 0.2], [30, FLOOR_Y, 0.2], [30, FLOOR_Y, WALL_Z], [-30, FLOOR_Y, WALL_Z]])
    out["floor"] = (fv @ STAGE_TO_CAM.T, ft, np.zeros(3), STAGE_TO_CAM)
    wv, wt = _quad([[-30, -30, WALL_Z], [30, -30, WALL_Z], [30, FLOOR_Y, WALL_Z], [-30, FLOOR_Y, WALL_Z]])
    out["wall"] = (wv @ STAGE_TO_CAM.T, wt, np.zeros(3), STAGE_TO_CAM)
    for o in layout.objects:
        v, t = _unit_mesh(o.kind)
        centre = STAGE_TO_CAM @ np.array([o.x, FLOOR_Y - o.height / 2, o.z])
        if o.kind == "box":
            v = v * o.size[0]
            rot = STAGE_TO_CAM @ _rot_y(o.yaw_deg)
        elif o.kind == "sphere":
            v = v * o.size[0]
            rot = STAGE_TO_CAM @ _rot_y(o.yaw_deg)
        else:
            v = v * np.array([o.size[0], o.size[0], o.size[1]])
            rot = STAGE_TO_CAM @ _rot_y(o.yaw_deg) @ _CYL_UP
        out[o.name] = (v @ rot.T + centre, t, centre, rot)
    return out


def _checker(*coords: np.ndarray, cell: float) -> np.ndarray:
    s = np.zeros(coords[0].shape, np.int64)
    for c in coords:
        s += np.floor(c / cell).astype(np.int64)
    return (s % 2).astype(bool)


def _albedo(o: WorldObject | str, local: np.ndarray) -> np.ndarray:
    """(N, 3) albedo of object ``o`` (or ``"floor"`` / ``"wall"``) at local points (N, 3), metres
    (stage coordinates for the floor and the wall)."""
    x, y, z = local[:, 0], local[:, 1], local[:, 2]
    if o == "floor":
        a = _checker(x, z, cell=0.5)
        return np.where(a[:, None], [0.78, 0.74, 0.64], [0.42, 0.42, 0.45])
    if o == "wall":
        plank = (np.floor(x / 0.6).astype(np.int64) % 2).astype(bool)
        base = np.where(plank[:, None], [0.72, 0.74, 0.80], [0.64, 0.67, 0.74])
        band = (y > -0.2) & (y < 0.05)
        return np.where(band[:, None], [0.55, 0.45, 0.40], base)
    assert isinstance(o, WorldObject)
    _, ca, cb, cc = STYLES[o.kind][o.style]
    if o.kind == "box":
        half = o.size[0] / 6  # 3 cells across a face, faces mid-cell
        a = _checker(x + half / 2, y + half / 2, z + half / 2, cell=half)
        return np.where(a[:, None], ca, cb)
    if o.kind == "sphere":
        r = o.size[0]
        lon = np.arctan2(z, x)
        seg = (np.floor((lon + math.pi) / (2 * math.pi) * 8).astype(np.int64) % 2).astype(bool)
        cap = np.abs(y) > 0.8 * r
        return np.where(cap[:, None], cc, np.where(seg[:, None], ca, cb))
    ang = np.arctan2(y, x)
    stripe = (np.floor((ang + math.pi) / (2 * math.pi) * 10).astype(np.int64) % 2).astype(bool)
    cap = np.abs(z) > o.size[1] / 2 - 1e-4
    return np.where(cap[:, None], cc, np.where(stripe[:, None], ca, cb))


@dataclass
class WorldRender:
    """``photo`` (H, W, 3) uint8; ``depth`` (H, W) float32 z-depth in metres (exact); ``masks``:
    object name -> (H, W) bool, the pixels whose ray hits that object."""

    photo: np.ndarray
    depth: np.ndarray
    masks: dict[str, np.ndarray]


def check_size(width: int, height: int) -> tuple[int, int]:
    w, h = int(width), int(height)
    if w < 16 or h < 16 or w > 8192 or h > 8192:
        raise InputError(f"scene size must be between 16 and 8192 pixels a side, got {w}x{h}")
    return w, h


def render_layout(
    layout: WorldLayout,
    width: int,
    height: int,
    fov_deg: float = 55.0,
    moves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> WorldRender:
    """Ray cast ``layout`` at ``width`` x ``height``; ``moves``: object name -> (3x3 linear part
    A, translation b), camera frame, metres, applied to the object's rest-pose points."""
    import open3d as o3d

    # open3d's stub makes dtype and device required; at runtime they default to the array's and the CPU
    tensor = cast("Callable[[np.ndarray], o3d.core.Tensor]", o3d.core.Tensor)
    w, h = check_size(width, height)
    moves = moves or {}
    cam = Camera(w, h, float(fov_deg))
    meshes = _meshes(layout)
    objs = {o.name: o for o in layout.objects}
    names = ["floor", "wall", *layout.names]
    rs = o3d.t.geometry.RaycastingScene()
    geo_ids = {}
    poses = {}
    for name in names:
        verts, tris, centre, rot = meshes[name]
        a, b = moves.get(name, (np.eye(3), np.zeros(3)))
        v = verts @ np.asarray(a).T + np.asarray(b)
        poses[name] = (np.asarray(a), np.asarray(b), centre, rot)
        geo_ids[name] = rs.add_triangles(tensor(v.astype(np.float32)), tensor(np.ascontiguousarray(tris, dtype=np.uint32)))
    x, y = cam.pixel_grid()
    f = cam.focal
    dirs = np.stack([(x - cam.cx) / f, (y - cam.cy) / f, np.ones_like(x)], axis=-1).reshape(-1, 3)
    rays = np.concatenate([np.zeros_like(dirs), dirs], axis=1).astype(np.float32)
    hit = rs.cast_rays(tensor(rays))
    t = hit["t_hit"].numpy().astype(np.float64)
    gid = hit["geometry_ids"].numpy()
    fnormal = hit["primitive_normals"].numpy().astype(np.float64)
    ok = np.isfinite(t)
    depth = np.where(ok, t, SKY_DEPTH)  # ray z component is 1: the hit distance is the z-depth
    p = dirs * depth[:, None]
    albedo = np.tile(np.array(SKY_RGB), (len(t), 1))
    normal = fnormal.copy()
    masks = {}
    for name in names:
        sel = ok & (gid == geo_ids[name])
        if name in objs:
            masks[name] = sel.reshape(cam.height, cam.width)
        if not sel.any():
            continue
        a, b, centre, rot = poses[name]
        # back to the rest pose (camera frame), then into the object's local frame
        rest = (p[sel] - b) @ np.linalg.inv(a).T
        if name in objs:
            local = (rest - centre) @ rot  # rot is orthonormal: inverse = transpose
            o = objs[name]
            albedo[sel] = _albedo(o, local)
            c_now = a @ centre + b
            if o.kind == "sphere":
                nn = p[sel] - c_now
                normal[sel] = nn / np.linalg.norm(nn, axis=1, keepdims=True)
            elif o.kind == "cylinder":
                axis = a @ rot[:, 2]
                axis = axis / np.linalg.norm(axis)
                d = p[sel] - c_now
                radial = d - (d @ axis)[:, None] * axis
                side = np.abs(fnormal[sel] @ axis) < 0.5
                rn = radial / np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-12)
                normal[sel] = np.where(side[:, None], rn, fnormal[sel])
        else:
            albedo[sel] = _albedo(name, rest @ STAGE_TO_CAM)  # stage coordinates
    # normals face the camera
    flip = np.einsum("ij,ij->i", normal, dirs) > 0
    normal[flip] *= -1
    sun = STAGE_TO_CAM @ np.asarray(layout.sun, np.float64)
    sun = sun / np.linalg.norm(sun)
    lambert = np.clip(normal @ sun, 0.0, None)
    lit = np.zeros(len(t), bool)
    idx = np.nonzero(ok & (lambert > 0))[0]
    if len(idx):
        origin = p[idx] + normal[idx] * 2e-3
        srays = np.concatenate([origin, np.tile(sun, (len(idx), 1))], axis=1).astype(np.float32)
        occluded = rs.test_occlusions(tensor(srays), tnear=1e-4).numpy().astype(bool)
        lit[idx] = ~occluded
    shade = AMBIENT + (1.0 - AMBIENT) * lambert * lit
    colour = np.where(ok[:, None], albedo * shade[:, None], albedo)
    photo = np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8).reshape(cam.height, cam.width, 3)
    return WorldRender(photo=photo, depth=depth.astype(np.float32).reshape(cam.height, cam.width), masks=masks)


@lru_cache(maxsize=8)
def _base(layout: WorldLayout, width: int, height: int, fov_deg: float) -> WorldRender:
    r = render_layout(layout, width, height, fov_deg)
    for a in (r.photo, r.depth, *r.masks.values()):
        a.setflags(write=False)
    return r


def layout_scene(layout: WorldLayout, width: int, height: int, fov_deg: float = 55.0, name: str = "World") -> Scene:
    """``layout`` as a :class:`Scene` (photo, exact depth in metres, exact masks, identity
    transforms, its caption as the prompt). Each call returns a new Scene whose arrays may be
    edited freely."""
    w, h = check_size(width, height)
    r = _base(layout, w, h, float(fov_deg))
    objects = [SceneObject(name=n, mask=r.masks[n].copy()) for n in layout.names]
    return Scene(
        photo=r.photo.copy(),
        depth=r.depth.copy(),
        camera=Camera(w, h, float(fov_deg)),
        prompt=layout.caption(),
        objects=objects,
        name=name,
        depth_unit="m",
        depth_source="sample" if layout == SAMPLE_LAYOUT else "world",
    )


def layout_pivots(layout: WorldLayout, width: int, height: int, fov_deg: float = 55.0) -> dict[str, np.ndarray]:
    """Pivot (3,) of each object, camera frame, metres: ``Scene.pivot`` of the identity render."""
    scene = layout_scene(layout, width, height, fov_deg)
    return {o.name: scene.pivot(o) for o in scene.objects}


def render_moved(
    layout: WorldLayout,
    transforms: dict[str, Transform3D] | None,
    width: int,
    height: int,
    fov_deg: float = 55.0,
) -> WorldRender:
    """The exact render of ``layout`` with objects moved: ``transforms`` maps object names to
    :class:`Transform3D` (camera frame, metres) about :func:`layout_pivots`; objects not named
    stay in place. Returns fresh (writable) arrays."""
    w, h = check_size(width, height)
    transforms = dict(transforms or {})
    unknown = sorted(set(transforms) - set(layout.names))
    if unknown:
        raise InputError(f"the scene has no object {unknown[0]!r} (objects: {', '.join(layout.names)})")
    if all(t.is_identity() for t in transforms.values()):
        b = _base(layout, w, h, float(fov_deg))
        return WorldRender(b.photo.copy(), b.depth.copy(), {k: v.copy() for k, v in b.masks.items()})
    pivots = layout_pivots(layout, w, h, fov_deg)
    moves = {}
    for name, tr in transforms.items():
        m = tr.matrix(pivots[name])
        moves[name] = (m[:3, :3], m[:3, 3])
    return render_layout(layout, w, h, float(fov_deg), moves)


def is_world_scene(scene: Scene) -> bool:
    """Whether ``scene`` is a scene of this world (the sample or a generated one), i.e. one the
    world model knows: its depth came from the world's own ray caster."""
    return scene.depth_source in ("sample", "world")


def with_style(layout: WorldLayout, name: str, style: int) -> WorldLayout:
    """``layout`` with object ``name`` in another colour style (for tests and benchmarks)."""
    objs = tuple(replace(o, style=int(style)) if o.name == name else o for o in layout.objects)
    return replace(layout, objects=objs)
