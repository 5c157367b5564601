"""Measuring an edit against ground truth: edits of world scenes, regions, PSNR and SSIM.

The procedural world (:mod:`core.world`) re-renders any scene with objects moved, so every edit
of a world scene has an exact ground truth. :func:`world_edit` makes deterministic edits of the
kinds the quality benchmark uses (``move`` along the floor, ``yaw`` 20-90 degrees, ``scale``
0.7-1.4 with the object kept standing on the floor, ``two`` objects moved at once, ``behind``:
an object moved behind another, ``identity``); :func:`edit_regions` splits the image into the
regions where an edit is judged:

``object``   the moved objects at their true new place (their ground-truth masks);
``revealed`` their old place minus the new (what the move uncovers);
``shadow``   pixels outside every object, before and after, whose ground truth changed (shadows);
``rest``     everything else (should not change at all).

Frames and units: transforms are :class:`core.transform.Transform3D` in the camera frame, metres,
about the objects' pivots (:func:`core.world.layout_pivots`); floor moves are chosen in the level
stage frame (see :mod:`core.world`). Images are (H, W, 3) uint8.
"""

from __future__ import annotations

import math

import numpy as np

from core.transform import Transform3D
from core.world import FLOOR_Y, GAP, STAGE_TO_CAM, WorldLayout, WorldObject, layout_pivots

EDIT_KINDS = ("move", "yaw", "scale", "two", "behind", "identity")
REGIONS = ("object", "revealed", "shadow", "rest")
#: floor area an object may be moved to (level frame, metres): a little wider than placement
_X_LIMIT = (-2.6, 2.6)
_Z_LIMIT = (3.4, 7.6)


def _floor_vec(dx: float, dz: float) -> tuple[float, float, float]:
    """A displacement along the floor (level frame) in the camera frame."""
    x, y, z = STAGE_TO_CAM @ np.array([dx, 0.0, dz])
    return float(x), float(y), float(z)


def _free(o: WorldObject, x: float, z: float, r: float, others: list[tuple[float, float, float]]) -> bool:
    if not (_X_LIMIT[0] <= x <= _X_LIMIT[1] and _Z_LIMIT[0] <= z <= _Z_LIMIT[1]):
        return False
    return all(math.hypot(x - ox, z - oz) >= r + orad + GAP for ox, oz, orad in others)


def _footprints(layout: WorldLayout, skip: set[str]) -> list[tuple[float, float, float]]:
    return [(o.x, o.z, o.footprint_radius) for o in layout.objects if o.name not in skip]


def _pick_move(o: WorldObject, others, rng) -> tuple[float, float] | None:
    for _ in range(60):
        dx = float(rng.uniform(0.6, 1.2)) * (1 if rng.random() < 0.5 else -1)
        dz = float(rng.uniform(-0.6, 0.6))
        if _free(o, o.x + dx, o.z + dz, o.footprint_radius, others):
            return dx, dz
    return None


def world_edit(layout: WorldLayout, kind: str, seed: int = 0, size: tuple[int, int] = (256, 192)) -> dict[str, Transform3D] | None:
    """A deterministic edit of ``kind`` (:data:`EDIT_KINDS`) for ``layout``: object name ->
    transform (camera frame, metres, about the pivots of the scene at ``size`` = (w, h): the
    ``scale`` edit keeps the object's bottom on the floor for that pivot); None when the layout cannot take that edit (e.g. ``two`` with one object)."""
    if kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r} (kinds: {', '.join(EDIT_KINDS)})")
    rng = np.random.default_rng([int(seed), EDIT_KINDS.index(kind), 7])
    objs = list(layout.objects)
    if kind == "identity":
        return {objs[0].name: Transform3D()}
    order = [objs[int(i)] for i in rng.permutation(len(objs))]
    if kind == "move":
        for o in order:
            mv = _pick_move(o, _footprints(layout, {o.name}), rng)
            if mv is not None:
                return {o.name: Transform3D(translation=_floor_vec(*mv))}
        return None
    if kind == "yaw":
        o = order[0]
        angle = float(rng.uniform(20.0, 90.0)) * (1 if rng.random() < 0.5 else -1)
        axis = STAGE_TO_CAM @ np.array([0.0, -1.0, 0.0])  # the floor's up, camera frame
        return {o.name: Transform3D.from_axis_angle(tuple(axis), angle)}
    if kind == "scale":
        for o in order:
            for _ in range(20):
                s = float(rng.uniform(0.7, 1.4))
                if abs(s - 1.0) < 0.12:
                    continue
                if not _free(o, o.x, o.z, o.footprint_radius * s, _footprints(layout, {o.name})):
                    continue
                # scale about the pivot, then put the object back on the floor: the bottom centre
                # b stays where it is, so t = (1 - s) (b - pivot)
                pivot = layout_pivots(layout, *size)[o.name]
                b = STAGE_TO_CAM @ np.array([o.x, FLOOR_Y, o.z])
                return {o.name: Transform3D(translation=tuple((1.0 - s) * (b - pivot)), scale=s)}
        return None
    if len(objs) < 2:
        return None
    if kind == "two":
        out: dict[str, Transform3D] = {}
        moved: dict[str, tuple[float, float]] = {}
        for o in order[:2]:
            others = [(p.x + moved.get(p.name, (0, 0))[0], p.z + moved.get(p.name, (0, 0))[1], p.footprint_radius) for p in objs if p.name != o.name]
            mv = _pick_move(o, others, rng)
            if mv is None:
                return None
            moved[o.name] = mv
            out[o.name] = Transform3D(translation=_floor_vec(*mv))
        return out
    # behind: move A to just behind B (farther from the camera, overlapping in x)
    for a in order:
        for b in sorted(objs, key=lambda p: p.z):
            if b.name == a.name:
                continue
            z = b.z + a.footprint_radius + b.footprint_radius + GAP + 0.05
            for frac in (0.2, -0.2, 0.4, -0.4, 0.0):
                x = b.x + frac * b.footprint_radius * 2
                if _free(a, x, z, a.footprint_radius, _footprints(layout, {a.name})):
                    return {a.name: Transform3D(translation=_floor_vec(x - a.x, z - a.z))}
    return None


def held_out_edits(n: int, size: tuple[int, int] = (256, 192), min_pixels: int = 60) -> list[tuple[WorldLayout, str, dict[str, Transform3D]]]:
    """``n`` (layout, kind, transforms) on held-out scenes (seeds from ``HELD_OUT_SEED`` on),
    kinds cycling through :data:`EDIT_KINDS`, deterministic; every moved object shows at least
    ``min_pixels`` pixels at ``size`` before and after the edit (a seed whose edit hides an
    object, or that cannot take the kind, is passed over)."""
    from core.world import HELD_OUT_SEED, random_layout, render_layout, render_moved

    out = []
    seed = HELD_OUT_SEED
    for i in range(n):
        kind = EDIT_KINDS[i % len(EDIT_KINDS)]
        while True:
            lay = random_layout(seed)
            seed += 1
            tr = world_edit(lay, kind, seed=seed, size=size)
            if tr is None:
                continue
            moved = [k for k, t in tr.items() if not t.is_identity()]
            if moved:
                src, dst = render_layout(lay, *size), render_moved(lay, tr, *size)
                if any(src.masks[k].sum() < min_pixels or dst.masks[k].sum() < min_pixels for k in moved):
                    continue
            break
        out.append((lay, kind, tr))
    return out


def edit_regions(
    src_masks: dict[str, np.ndarray],
    gt_masks: dict[str, np.ndarray],
    moved: set[str] | list[str],
    src_photo: np.ndarray,
    gt_photo: np.ndarray,
) -> dict[str, np.ndarray]:
    """The four regions of :data:`REGIONS` (bool (H, W) each, disjoint, covering the image)."""
    shape = src_photo.shape[:2]

    def union(masks) -> np.ndarray:
        out = np.zeros(shape, bool)
        for m in masks:
            out |= m
        return out

    moved = set(moved)
    old = union(src_masks[n] for n in moved)
    new = union(gt_masks[n] for n in moved)
    any_obj = union([*src_masks.values(), *gt_masks.values()])
    changed = np.abs(gt_photo.astype(np.int16) - src_photo.astype(np.int16)).max(-1) > 1
    obj = new
    revealed = old & ~new
    shadow = ~any_obj & changed
    rest = ~(obj | revealed | shadow)
    return {"object": obj, "revealed": revealed, "shadow": shadow, "rest": rest}


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR (dB, peak 255) of uint8 images over ``region`` (all pixels when None); NaN for an
    empty region, 99 for identical pixels."""
    d = a.astype(np.float64) - b.astype(np.float64)
    if region is not None:
        if not region.any():
            return float("nan")
        d = d[region]
    mse = float(np.mean(d * d))
    return 99.0 if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03, L 255),
    averaged over the colour channels: (H, W) float64."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = np.zeros(a.shape[:2])
    for ch in range(a.shape[2]):
        x = a[..., ch].astype(np.float64)
        y = b[..., ch].astype(np.float64)
        mx, my = gaussian_filter(x, sigma), gaussian_filter(y, sigma)
        vx = gaussian_filter(x * x, sigma) - mx * mx
        vy = gaussian_filter(y * y, sigma) - my * my
        cxy = gaussian_filter(x * y, sigma) - mx * my
        out += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return out / a.shape[2]


def region_scores(image: np.ndarray, truth: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Region name -> (PSNR dB, mean SSIM) of ``image`` against ``truth``; NaN for empty regions."""
    smap = ssim_map(image, truth)
    return {name: (psnr(image, truth, m), float(smap[m].mean()) if m.any() else float("nan")) for name, m in regions.items()}
