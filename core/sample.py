"""The built-in sample scene: a small 3D stage the program renders itself by ray casting.

A floor with a checker pattern and a back wall with planks, and three objects, ``"box"`` (red
checker), ``"sphere"`` (blue beach-ball segments) and ``"cylinder"`` (green with yellow stripes),
lit by a directional sun with cast shadows (shadow rays) plus ambient light, Lambert shading.
Geometry and rays go through Open3D's ``RaycastingScene`` (geometry only, never
``open3d.visualization``; imported lazily, ``import core.sample`` stays light).

Frames and units: the camera is the project's :class:`core.camera.Camera` (55 degree field of view
over the larger side, principal point at the centre) at the origin of its camera frame (+X
image-right, +Y image-down, +Z forward), metres. The stage is built in a level frame (same axes,
floor horizontal at ``y = +1.5`` m) and tilted by ``PITCH_DEG`` so that the camera looks slightly
down. One ray per pixel through the pixel centre, with direction ``((x - cx)/f, (y - cy)/f, 1)``,
so the hit distance *is* the z-depth: ``depth`` is exact and each object's mask is exactly its set
of pixel rays hitting it (no anti-aliasing).

Ground truth for moved objects: :func:`render_sample` moves each object's mesh by its
:class:`~core.transform.Transform3D` about the object's pivot *as the scene computes it*:
``sample_scene(w, h).pivot(obj)``, the centroid of the object's visible 3D points in the
original (identity) render, i.e. the very pivot the warp plan and the preview use. Textures are
attached to the objects (evaluated at the hit point mapped back to the object's rest pose), so a
moved object carries its texture; shading and shadows are recomputed at the new pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from core.camera import Camera
from core.errors import InputError
from core.scene import Scene, SceneObject
from core.transform import Transform3D

OBJECT_NAMES = ("box", "sphere", "cylinder")
PROMPT = "a red checkered box, a blue beach ball and a green striped cylinder on a tiled floor in front of a wall"
PITCH_DEG = 15.0
FLOOR_Y = 1.5
WALL_Z = 8.5
#: direction *towards* the sun in the level stage frame (up-left, behind the camera)
SUN_DIR = (-0.45, -1.0, -0.55)
AMBIENT = 0.35
SKY_DEPTH = 100.0

# object placement in the level stage frame (metres)
BOX_SIZE = 0.9
BOX_CENTRE = (-1.35, FLOOR_Y - BOX_SIZE / 2, 5.0)
BOX_YAW_DEG = 30.0
SPHERE_RADIUS = 0.55
SPHERE_CENTRE = (0.25, FLOOR_Y - SPHERE_RADIUS, 5.7)
CYL_RADIUS = 0.35
CYL_HEIGHT = 1.1
CYL_CENTRE = (1.5, FLOOR_Y - CYL_HEIGHT / 2, 4.6)


@dataclass
class SampleRender:
    """``photo`` (H, W, 3) uint8; ``depth`` (H, W) float32 z-depth in metres (exact);
    ``masks``: object name -> (H, W) bool, the pixels whose ray hits that object."""

    photo: np.ndarray
    depth: np.ndarray
    masks: dict[str, np.ndarray]


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


def _quad(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(corners, np.float64), np.array([[0, 1, 2], [0, 2, 3]], np.int32)


@lru_cache(maxsize=1)
def _rest_meshes() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (vertices in the camera frame, triangles, object centre (camera frame), object
    rotation local->camera) at the rest pose."""
    import open3d as o3d  # heavy: only when the sample is rendered

    out = {}
    # floor and wall (static)
    fv, ft = _quad([[-30, FLOOR_Y, 0.2], [30, FLOOR_Y, 0.2], [30, FLOOR_Y, WALL_Z], [-30, FLOOR_Y, WALL_Z]])
    out["floor"] = (fv @ STAGE_TO_CAM.T, ft, np.zeros(3), STAGE_TO_CAM)
    wv, wt = _quad([[-30, -30, WALL_Z], [30, -30, WALL_Z], [30, FLOOR_Y, WALL_Z], [-30, FLOOR_Y, WALL_Z]])
    out["wall"] = (wv @ STAGE_TO_CAM.T, wt, np.zeros(3), STAGE_TO_CAM)

    box = o3d.geometry.TriangleMesh.create_box(BOX_SIZE, BOX_SIZE, BOX_SIZE)
    bv = np.asarray(box.vertices) - BOX_SIZE / 2
    rot = STAGE_TO_CAM @ _rot_y(BOX_YAW_DEG)
    centre = STAGE_TO_CAM @ np.asarray(BOX_CENTRE)
    out["box"] = (bv @ rot.T + centre, np.asarray(box.triangles, np.int32), centre, rot)

    sph = o3d.geometry.TriangleMesh.create_sphere(SPHERE_RADIUS, resolution=48)
    centre = STAGE_TO_CAM @ np.asarray(SPHERE_CENTRE)
    out["sphere"] = (np.asarray(sph.vertices) @ STAGE_TO_CAM.T + centre, np.asarray(sph.triangles, np.int32), centre, STAGE_TO_CAM)

    cyl = o3d.geometry.TriangleMesh.create_cylinder(CYL_RADIUS, CYL_HEIGHT, resolution=96, split=1)
    # Open3D's cylinder axis is +Z; stand it up along the stage's vertical (Y)
    up = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # local Z -> stage +Y (proper rotation)
    rot = STAGE_TO_CAM @ up
    centre = STAGE_TO_CAM @ np.asarray(CYL_CENTRE)
    out["cylinder"] = (np.asarray(cyl.vertices) @ rot.T + centre, np.asarray(cyl.triangles, np.int32), centre, rot)
    return out


def _checker(*coords: np.ndarray, cell: float) -> np.ndarray:
    s = np.zeros(coords[0].shape, np.int64)
    for c in coords:
        s += np.floor(c / cell).astype(np.int64)
    return (s % 2).astype(bool)


def _albedo(name: str, local: np.ndarray) -> np.ndarray:
    """(N, 3) albedo of object ``name`` at object-local points ``local`` (N, 3), metres."""
    x, y, z = local[:, 0], local[:, 1], local[:, 2]
    if name == "floor":
        # stage coordinates: checker of 0.5 m tiles on x, z
        a = _checker(x, z, cell=0.5)
        return np.where(a[:, None], [0.78, 0.74, 0.64], [0.42, 0.42, 0.45])
    if name == "wall":
        plank = (np.floor(x / 0.6).astype(np.int64) % 2).astype(bool)
        base = np.where(plank[:, None], [0.72, 0.74, 0.80], [0.64, 0.67, 0.74])
        band = (y > -0.2) & (y < 0.05)
        return np.where(band[:, None], [0.55, 0.45, 0.40], base)
    if name == "box":
        half = BOX_SIZE / 6  # 3 cells across a face, faces mid-cell
        a = _checker(x + half / 2, y + half / 2, z + half / 2, cell=half)
        return np.where(a[:, None], [0.85, 0.22, 0.18], [0.95, 0.78, 0.32])
    if name == "sphere":
        lon = np.arctan2(z, x)
        seg = (np.floor((lon + math.pi) / (2 * math.pi) * 8).astype(np.int64) % 2).astype(bool)
        cap = np.abs(y) > 0.8 * SPHERE_RADIUS
        col = np.where(seg[:, None], [0.18, 0.32, 0.85], [0.92, 0.92, 0.90])
        return np.where(cap[:, None], [0.95, 0.55, 0.15], col)
    if name == "cylinder":
        ang = np.arctan2(y, x)
        stripe = (np.floor((ang + math.pi) / (2 * math.pi) * 10).astype(np.int64) % 2).astype(bool)
        col = np.where(stripe[:, None], [0.22, 0.62, 0.28], [0.90, 0.84, 0.30])
        cap = np.abs(z) > CYL_HEIGHT / 2 - 1e-4
        return np.where(cap[:, None], [0.30, 0.55, 0.30], col)
    raise KeyError(name)


def _render(width: int, height: int, fov_deg: float, moves: dict[str, tuple[np.ndarray, np.ndarray]]) -> SampleRender:
    """Ray cast the stage; ``moves``: name -> (3x3 linear part A, translation b) in the camera frame."""
    import open3d as o3d

    cam = Camera(int(width), int(height), float(fov_deg))
    meshes = _rest_meshes()
    names = ["floor", "wall", *OBJECT_NAMES]
    rs = o3d.t.geometry.RaycastingScene()
    geo_ids = {}
    poses = {}
    for name in names:
        verts, tris, centre, rot = meshes[name]
        a, b = moves.get(name, (np.eye(3), np.zeros(3)))
        v = verts @ a.T + b
        poses[name] = (a, b, centre, rot)
        geo_ids[name] = rs.add_triangles(
            o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(np.ascontiguousarray(tris, dtype=np.uint32))
        )
    x, y = cam.pixel_grid()
    f = cam.focal
    dirs = np.stack([(x - cam.cx) / f, (y - cam.cy) / f, np.ones_like(x)], axis=-1).reshape(-1, 3)
    rays = np.concatenate([np.zeros_like(dirs), dirs], axis=1).astype(np.float32)
    hit = rs.cast_rays(o3d.core.Tensor(rays))
    t = hit["t_hit"].numpy().astype(np.float64)
    gid = hit["geometry_ids"].numpy()
    fnormal = hit["primitive_normals"].numpy().astype(np.float64)
    ok = np.isfinite(t)
    depth = np.where(ok, t, SKY_DEPTH)  # ray z component is 1: the hit distance is the z-depth
    p = dirs * depth[:, None]
    albedo = np.tile(np.array([0.75, 0.82, 0.92]), (len(t), 1))
    normal = fnormal.copy()
    masks = {}
    for name in names:
        sel = ok & (gid == geo_ids[name])
        if name in OBJECT_NAMES:
            masks[name] = sel.reshape(cam.height, cam.width)
        if not sel.any():
            continue
        a, b, centre, rot = poses[name]
        # back to the rest pose (camera frame), then into the object's local frame
        rest = (p[sel] - b) @ np.linalg.inv(a).T
        local = (rest - centre) @ rot  # rot is orthonormal: inverse = transpose
        if name == "floor" or name == "wall":
            local = rest @ STAGE_TO_CAM  # stage coordinates
        albedo[sel] = _albedo(name, local)
        if name == "sphere":
            c_now = a @ centre + b
            nn = p[sel] - c_now
            normal[sel] = nn / np.linalg.norm(nn, axis=1, keepdims=True)
        elif name == "cylinder":
            axis = a @ rot[:, 2]
            axis = axis / np.linalg.norm(axis)
            c_now = a @ centre + b
            d = p[sel] - c_now
            radial = d - (d @ axis)[:, None] * axis
            side = np.abs(fnormal[sel] @ axis) < 0.5
            rn = radial / np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-12)
            normal[sel] = np.where(side[:, None], rn, fnormal[sel])
    # normals face the camera
    flip = np.einsum("ij,ij->i", normal, dirs) > 0
    normal[flip] *= -1
    sun = STAGE_TO_CAM @ np.asarray(SUN_DIR, np.float64)
    sun = sun / np.linalg.norm(sun)
    lambert = np.clip(normal @ sun, 0.0, None)
    lit_candidates = ok & (lambert > 0)
    lit = np.zeros(len(t), bool)
    idx = np.nonzero(lit_candidates)[0]
    if len(idx):
        origin = p[idx] + normal[idx] * 2e-3
        srays = np.concatenate([origin, np.tile(sun, (len(idx), 1))], axis=1).astype(np.float32)
        occluded = rs.test_occlusions(o3d.core.Tensor(srays), tnear=1e-4).numpy().astype(bool)
        lit[idx] = ~occluded
    shade = AMBIENT + (1.0 - AMBIENT) * lambert * lit
    colour = np.where(ok[:, None], albedo * shade[:, None], albedo)
    photo = np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8).reshape(cam.height, cam.width, 3)
    return SampleRender(photo=photo, depth=depth.astype(np.float32).reshape(cam.height, cam.width), masks=masks)


def _check_size(width: int, height: int) -> tuple[int, int]:
    w, h = int(width), int(height)
    if w < 16 or h < 16 or w > 8192 or h > 8192:
        raise InputError(f"sample size must be between 16 and 8192 pixels a side, got {w}x{h}")
    return w, h


@lru_cache(maxsize=4)
def _base(width: int, height: int, fov_deg: float) -> SampleRender:
    r = _render(width, height, fov_deg, {})
    for a in (r.photo, r.depth, *r.masks.values()):
        a.setflags(write=False)
    return r


def sample_scene(width: int = 640, height: int = 448, fov_deg: float = 55.0) -> Scene:
    """The sample stage as a :class:`Scene` (photo, exact depth in metres, exact masks of the
    objects ``"box"``, ``"sphere"``, ``"cylinder"`` with identity transforms, a prompt).

    Default size 640x448 (non-square on purpose; multiples of 64). Each call returns a new Scene
    whose arrays may be edited freely.
    """
    w, h = _check_size(width, height)
    r = _base(w, h, float(fov_deg))
    objects = [SceneObject(name=n, mask=r.masks[n].copy()) for n in OBJECT_NAMES]
    return Scene(
        photo=r.photo.copy(),
        depth=r.depth.copy(),
        camera=Camera(w, h, float(fov_deg)),
        prompt=PROMPT,
        objects=objects,
        name="Sample",
        depth_unit="m",
        depth_source="sample",
    )


def sample_pivots(width: int = 640, height: int = 448, fov_deg: float = 55.0) -> dict[str, np.ndarray]:
    """Pivot (3,) of each object, camera frame, metres: ``Scene.pivot`` of the identity render."""
    scene = sample_scene(width, height, fov_deg)
    return {o.name: scene.pivot(o) for o in scene.objects}


def render_sample(
    transforms: dict[str, Transform3D] | None = None, width: int = 640, height: int = 448, fov_deg: float = 55.0
) -> SampleRender:
    """Render the sample with objects moved: ``transforms`` maps object names to
    :class:`Transform3D` (camera frame, metres) applied about :func:`sample_pivots`; objects not
    named stay in place. Returns the exact photo, depth and masks of the moved scene."""
    w, h = _check_size(width, height)
    transforms = dict(transforms or {})
    unknown = sorted(set(transforms) - set(OBJECT_NAMES))
    if unknown:
        raise InputError(f"the sample has no object {unknown[0]!r} (objects: {', '.join(OBJECT_NAMES)})")
    if all(t.is_identity() for t in transforms.values()):
        b = _base(w, h, float(fov_deg))
        return SampleRender(b.photo.copy(), b.depth.copy(), {k: v.copy() for k, v in b.masks.items()})
    pivots = sample_pivots(w, h, fov_deg)
    moves = {}
    for name, tr in transforms.items():
        m = tr.matrix(pivots[name])
        moves[name] = (m[:3, :3], m[:3, 3])
    return _render(w, h, float(fov_deg), moves)
