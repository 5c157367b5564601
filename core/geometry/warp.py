"""Warp plans: every object of a scene moved by its 3D transform and projected back.

Frames and units (see :mod:`core.camera`, :mod:`core.transform`): points in the camera frame (+X
image-right, +Y image-down, +Z forward), depth units; image coordinates in pixels with pixel
(row i, col j) centred at (j + 0.5, i + 0.5); depths are z-depth. A feature grid at ``1/factor``
uses the same convention on its cells: ``x_feat = x_img / factor``.

Method (all vectorised; the per-mask work is cached, see :func:`plan`):

1. *Lift* (:mod:`core.geometry.lift`): every pixel owned by a moved object becomes a 3D point
   with its one-sided surface tangents ``dP/dcol`` and ``dP/drow`` towards each neighbour of the
   same object (a side that crosses a depth edge borrows the other side's; a fronto-parallel
   tangent where neither exists). Cached per mask.
2. *Move*: ``p' = s R (p - c) + c + t`` about the object's pivot ``c = scene.pivot(obj)``; the
   tangents move with the linear part ``s R``.
3. *Splat with footprints* (the crack closing): a source pixel is a small surface patch; projected,
   it covers a parallelogram in the target image spanned by the local Jacobian
   ``J = d(x, y)_target / d(col, row)_source`` (the exact derivative of the pinhole projection of
   the moved tangents). Every target pixel centre inside a point's parallelogram (grown by
   ``FOOTPRINT_SLACK`` source pixels so that neighbouring patches overlap) becomes a candidate
   with the sub-pixel source position ``s + J^-1 (q - t)`` and the depth
   ``z' + dz'/d(col,row) . J^-1 (q - t)``. Where the two one-sided tangents disagree (a crease
   such as the edge of a box, or a border) the four quadrants of the pixel are mapped each with
   the tangents of its side, so both faces reach the crease. The parallelograms of a surface tile
   its image, so the moved silhouette has no cracks at any magnification up to ``MAX_FOOTPRINT``
   pixels per source pixel (scaled up 2x, moved closer, rotated, perspective shear); a last pass
   fills isolated pixels left between diagonal creases. And because the source position inverts
   the local map, sampling colours (or activations) there is a *backward* warp: sharp, not blocky.
   Chosen over a separate backward-mapping pass (intersecting each target ray, inverse-transformed,
   with the source depth map) because it needs no iterative ray search, handles every object in
   one vectorised pass and costs about 1.5 candidate tests per point at 1x.
4. *z-buffer*: among all candidates of all moved objects the nearest wins per target pixel
   (``np.minimum.at`` then an equality pass); points behind the camera (``z' <= near``) or landing
   outside the image are dropped, never clamped to the border.

Occlusion rule between moved objects and the static picture:

* *Real* surfaces (background pixels and objects that did not move) hide a moved surface that is
  more than ``REAL_TOLERANCE`` (1 %, relative) behind them; the tolerance keeps an object resting
  on a floor touching it.
* *Filled* background (where a moved or hidden object used to be, see
  :func:`core.geometry.fill.background_depth`) is an estimate and a harmonic fill lies in front of
  the true surface at concave corners (floor meeting wall). So it hides a moved surface only when
  that surface lies behind the *farthest* depth of the filled component (plus ``REAL_TOLERANCE``):
  an object pushed through the wall disappears there too, while small fill errors never cut into
  an object standing in front of the surrounding surfaces.
* Between moved objects: nearest wins.

Removed region: the old silhouette of every moved or hidden object grown by ``ring_px(shape)`` pixels
(the mixed colours and depths of an object's edge go with it, so no halo or ghost edge of the old
object stays behind), minus pixels of objects that did not move. Its depth becomes the filled
background depth; the part no moved object covers is the ``hole``.

Identity transforms: an object whose transform is the identity is not moved: the plan's edited
depth equals the input depth exactly, its correspondences are the identity and it makes no hole.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import cast

import numpy as np
import scipy.ndimage as ndi

from core.errors import InputError
from core.geometry.fill import background_depth, digest, dilation_px, fill_region
from core.geometry.lift import check_depth, object_index_map
from core.geometry.types import FeatureCorrespondence, ObjectFlow, WarpPlan

#: relative depth tolerance with which a real (observed) surface hides a moved one
REAL_TOLERANCE = 0.01
#: relative depth tolerance within which a source point still counts as the visible surface
VISIBLE_TOLERANCE = 0.02
#: growth (source pixels) of each point's footprint so that neighbouring patches overlap
FOOTPRINT_SLACK = 0.1
#: largest splat window radius (pixels): closes cracks up to about 5x local magnification
MAX_FOOTPRINT = 3
#: a moved point farther than this (depth units, or pixels off the image, or per source pixel of
#: footprint) is out of every view: dropped, so that the float32 arrays downstream never overflow
FAR = 1e15
#: a tangent longer than this many fronto-parallel pixel steps is a depth edge, not a surface
MAX_SLOPE = 10.0


_JIT: ModuleType | bool | None = None  # the kernels module once compiled, False when unavailable or off
_JIT_LOCK = threading.Lock()


def _load_kernels() -> ModuleType | bool:
    if os.environ.get("HANDLES_STUDIO_NO_JIT"):
        return False
    try:
        from core.geometry import kernels

        kernels.warm_up()  # compiled (or loaded from numba's cache) here, so a failure shows now
        return kernels
    except Exception as exc:  # noqa: BLE001 - numba missing or failing on this platform: the numpy path draws the same plans
        logging.getLogger(__name__).warning("compiled drag kernels unavailable (%s); using numpy", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return False


def compiled_kernels() -> ModuleType | None:
    """:mod:`core.geometry.kernels` (numba), compiled on first use; None where numba is missing or
    fails, or ``HANDLES_STUDIO_NO_JIT`` is set (the vectorised numpy path then draws the same
    plans). Threads asking meanwhile wait for the one compiling."""
    global _JIT
    if _JIT is None:
        with _JIT_LOCK:
            if _JIT is None:
                _JIT = _load_kernels()
    return _JIT if isinstance(_JIT, ModuleType) else None


def use_jit(enabled: bool) -> bool:
    """Switch the compiled kernels on (when available) or off; returns whether they are on. For
    benchmarks (the old and the new path in one run) and tests (one path against the other)."""
    global _JIT
    with _JIT_LOCK:
        _JIT = None if enabled else False
    return compiled_kernels() is not None


def warm_up() -> bool:
    """Compile (or load from numba's cache) the drag kernels now, so that the first drag does not
    pay for it; returns whether they are available."""
    return compiled_kernels() is not None


def ring_px(shape: tuple[int, int]) -> int:
    """Pixels by which an old silhouette is grown into the removed region: 1 at 512 px, scaled."""
    return max(1, min(dilation_px(shape) - 1, int(round(max(shape) / 512.0))))


# ----------------------------------------------------------------------------------------------
# per-mask state (cached)


@dataclass
class _ObjectState:
    index: int
    rows: np.ndarray  # (N,) int32
    cols: np.ndarray  # (N,) int32
    z: np.ndarray  # (N,) float32 the depth at each point: with its pixel centre, its exact position (see _points)
    du: tuple  # (plus, minus): (3, N) float32 one-sided dP/dcol (rows X, Y, Z: contiguous columns)
    dv: tuple  # (plus, minus): (3, N) float32 one-sided dP/drow
    tangents: np.ndarray  # (12, N) float32: du+, du-, dv+, dv- (du and dv are views of it)
    crease: np.ndarray  # (N,) bool: the one-sided tangents disagree (edge, crease, border)
    pivot: np.ndarray  # (3,) float64


@dataclass
class _Static:
    shape: tuple[int, int]
    depth: np.ndarray  # (H, W) float32
    object_index: np.ndarray  # (H, W) int16
    objects: list[_ObjectState]
    fill: np.ndarray  # (H, W) float32 background depth
    fill_far: np.ndarray  # (H, W) float32 farthest filled depth of the component (depth outside)
    removed: dict  # frozenset(indices) -> (H, W) bool
    near: float  # near plane (depth units): points closer than this are dropped


_STATIC_CACHE: OrderedDict[tuple, _Static] = OrderedDict()
_STATIC_CACHE_SIZE = 4


def _tangents(points: np.ndarray, owner: np.ndarray, focal: float, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """One-sided surface tangents ``(plus, minus)``, each (h, w, 3), along ``axis`` (1: columns,
    0: rows) of ``points`` where ``owner``: ``plus = p[k+1] - p[k]``, ``minus = p[k] - p[k-1]``.

    A side whose neighbour belongs to another owner, or whose step is longer than ``MAX_SLOPE``
    fronto-parallel pixel steps (a depth edge, not a surface), borrows the other side's tangent;
    with neither, a fronto-parallel step (Z / f along X or Y).
    """
    p = points
    d = np.diff(p, axis=axis)  # p[k+1] - p[k]
    step = p[..., 2] / focal  # length of one pixel step on a fronto-parallel patch
    fwd = np.zeros_like(p)
    bwd = np.zeros_like(p)
    ok_f = np.zeros(owner.shape, bool)
    ok_b = np.zeros(owner.shape, bool)
    if axis == 1:
        same = owner[:, 1:] & owner[:, :-1]
        fwd[:, :-1] = d
        ok_f[:, :-1] = same
        bwd[:, 1:] = d
        ok_b[:, 1:] = same
    else:
        same = owner[1:, :] & owner[:-1, :]
        fwd[:-1] = d
        ok_f[:-1] = same
        bwd[1:] = d
        ok_b[1:] = same
    ok_f &= np.linalg.norm(fwd, axis=-1) <= MAX_SLOPE * step
    ok_b &= np.linalg.norm(bwd, axis=-1) <= MAX_SLOPE * step
    fallback = np.zeros_like(p)
    fallback[..., 1 - axis] = step  # axis 1 (columns) -> X, axis 0 (rows) -> Y
    plus = np.where(ok_f[..., None], fwd, np.where(ok_b[..., None], bwd, fallback))
    minus = np.where(ok_b[..., None], bwd, np.where(ok_f[..., None], fwd, fallback))
    return plus, minus


#: a point is on a crease where its plus and minus tangents differ by more than this share of their length
CREASE_TOL = 0.1


def _creased(du, dv, tol: float = CREASE_TOL) -> np.ndarray:
    """(h, w) bool: the plus and minus tangents differ by more than ``tol`` of their length."""
    out = None
    for plus, minus in (du, dv):
        diff = np.linalg.norm(plus - minus, axis=-1)
        size = np.maximum(np.linalg.norm(plus, axis=-1), np.linalg.norm(minus, axis=-1))
        c = diff > tol * size
        out = c if out is None else out | c
    return out


#: pixels of an object's bounding box lifted at a time (bands of rows): the float64 grids of the
#: tangents stay a few MB each for any object size; the result does not depend on it
LIFT_CHUNK = 1 << 18


def _object_state(k: int, index_map: np.ndarray, depth: np.ndarray, camera, pivot: np.ndarray) -> _ObjectState:
    """Per-point state of object ``k``: the lift is computed in float64 band by band (with one row
    of halo each side, so every tangent sees the neighbours it would see in one pass) and kept
    compact: the depth of each point (its position follows exactly, :func:`_points`) and the
    tangents in float32 (only the footprints' shape depends on them)."""
    owner_full = index_map == k
    rows, cols = np.nonzero(owner_full)
    n = len(rows)
    tangents = np.zeros((12, n), np.float32)
    du = (tangents[0:3], tangents[3:6])
    dv = (tangents[6:9], tangents[9:12])
    crease = np.zeros(n, bool)
    state = _ObjectState(
        k, rows.astype(np.int32), cols.astype(np.int32), depth[rows, cols].astype(np.float32), du, dv, tangents, crease, np.asarray(pivot, np.float64)
    )
    if n == 0:
        return state
    jit = compiled_kernels()
    if jit is not None:
        jit.lift_tangents(
            state.rows, state.cols, depth, owner_full, float(camera.focal), float(camera.cx), float(camera.cy), MAX_SLOPE, CREASE_TOL, tangents, crease
        )
        return state
    r0, r1 = int(rows[0]), int(rows[-1]) + 1  # np.nonzero is in row-major order
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    x = np.arange(c0, c1, dtype=np.float64) + 0.5
    band = max(1, LIFT_CHUNK // (c1 - c0))
    for a in range(r0, r1, band):
        b = min(r1, a + band)
        lo, hi = max(r0, a - 1), min(r1, b + 1)
        owner = owner_full[lo:hi, c0:c1]
        xx, yy = np.meshgrid(x, np.arange(lo, hi, dtype=np.float64) + 0.5)
        pts = camera.unproject(xx, yy, depth[lo:hi, c0:c1].astype(np.float64))
        del xx, yy
        inner = slice(a - lo, b - lo)
        tu = tuple(t[inner] for t in _tangents(pts, owner, camera.focal, axis=1))
        tv = tuple(t[inner] for t in _tangents(pts, owner, camera.focal, axis=0))
        del pts
        i0, i1 = (int(i) for i in np.searchsorted(rows, [a, b]))
        lr, lc = rows[i0:i1] - a, cols[i0:i1] - c0
        for dst, src in zip((*du, *dv), (*tu, *tv)):
            dst[:, i0:i1] = src[lr, lc].T
        crease[i0:i1] = _creased(tu, tv)[lr, lc]
    return state


def _points(os_: _ObjectState, sl: slice, camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-frame X, Y, Z (float64, depth units) of the points ``sl`` of an object: the same
    numbers as :meth:`core.camera.Camera.unproject` of their pixel centres and depths."""
    z = os_.z[sl].astype(np.float64)
    f = camera.focal
    return (os_.cols[sl] + 0.5 - camera.cx) * z / f, (os_.rows[sl] + 0.5 - camera.cy) * z / f, z


def _static_key(scene) -> tuple:
    cam = scene.camera
    masks = [np.packbits(np.asarray(o.mask, dtype=bool)) for o in scene.objects]
    return (
        digest(scene.depth),
        digest(scene.background_depth),
        digest(*masks) if masks else "",
        len(scene.objects),
        (cam.width, cam.height, round(float(cam.fov_deg), 9)),
    )


def _static(scene) -> _Static:
    key = _static_key(scene)
    hit = _STATIC_CACHE.get(key)
    if hit is not None:
        _STATIC_CACHE.move_to_end(key)
        return hit
    check_depth(scene.depth)
    shape = scene.depth.shape
    index_map = object_index_map(scene)
    objects = [_object_state(k, index_map, scene.depth, scene.camera, scene.pivot(obj)) for k, obj in enumerate(scene.objects)]
    fill = background_depth(scene)
    region = fill_region([o.mask for o in scene.objects], shape)
    fill_far = np.array(scene.depth, dtype=np.float32, copy=True)
    if region.any():
        labels, count = cast("tuple[np.ndarray, int]", ndi.label(region))  # (labels, count) as output=None
        far = ndi.maximum(fill, labels, index=np.arange(1, count + 1))
        lut = np.concatenate([[0.0], np.asarray(far, dtype=np.float64)]).astype(np.float32)
        fill_far[region] = lut[labels[region]]
    near = 1e-4 * float(np.median(scene.depth))
    st = _Static(shape, np.asarray(scene.depth, np.float32), index_map, objects, fill, fill_far, {}, near)
    _STATIC_CACHE[key] = st
    while len(_STATIC_CACHE) > _STATIC_CACHE_SIZE:
        _STATIC_CACHE.popitem(last=False)
    return st


@dataclass
class _Removed:
    """Transform-independent state for one set of moved/hidden objects (cached)."""

    removed: np.ndarray  # (H, W) bool
    background: np.ndarray  # (H, W) float32: depth with the removed region filled
    limit: np.ndarray  # (H*W,) float32: depth beyond which a moved surface is hidden
    target_base: np.ndarray  # (H, W) int16: owners with the removed region cleared to -1


def _removed_state(st: _Static, removed_objects: frozenset) -> _Removed:
    hit = st.removed.get(removed_objects)
    if hit is not None:
        return hit
    oi = st.object_index
    if removed_objects:
        old = np.isin(oi, np.fromiter(removed_objects, dtype=np.int16, count=len(removed_objects)))
    else:
        old = np.zeros(st.shape, bool)
    r = ring_px(st.shape)
    grown = np.asarray(ndi.binary_dilation(old, structure=np.ones((2 * r + 1, 2 * r + 1), bool)), dtype=bool) if old.any() else old
    removed = grown & ((oi < 0) | old)  # never eat pixels of objects that stay
    background = np.where(removed, st.fill, st.depth).astype(np.float32)
    limit = (np.where(removed, st.fill_far, st.depth) * np.float32(1.0 + REAL_TOLERANCE)).astype(np.float32).ravel()
    target_base = np.where(removed, np.int16(-1), oi).astype(np.int16)
    for a in (removed, background, limit, target_base):
        a.setflags(write=False)
    state = _Removed(removed, background, limit, target_base)
    st.removed[removed_objects] = state
    return state


# ----------------------------------------------------------------------------------------------
# splatting


@dataclass
class _Moved:
    """Per-point projection of (a chunk of) one moved object (all (n,) arrays)."""

    tx: np.ndarray  # float64 target x (pixels)
    ty: np.ndarray  # float64 target y
    tz: np.ndarray  # float64 target z-depth
    ok: np.ndarray  # bool: in front of the camera
    ju: tuple  # (plus, minus): each (jx, jy, jz) float64 = d(x, y, z)_target / d col, one-sided
    jv: tuple  # (plus, minus): the same per d row

    @property
    def jacobian(self) -> np.ndarray:
        """(n, 2, 2) float32 d(x, y)_target / d(col, row)_source (both sides averaged)."""
        (up, um), (vp, vm) = self.ju, self.jv
        j = [0.5 * (up[0] + um[0]), 0.5 * (vp[0] + vm[0]), 0.5 * (up[1] + um[1]), 0.5 * (vp[1] + vm[1])]
        return np.stack(j, axis=-1).reshape(-1, 2, 2).astype(np.float32)


def _linear(a: np.ndarray, v: np.ndarray | tuple[np.ndarray, ...], b=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a @ v (+ b)`` for (3, N) column data (or its three rows), written out: a BLAS call on a
    3-wide matrix is slow (and thread-hungry) next to nine fused multiply-adds on contiguous rows."""
    out = []
    for r in range(3):
        acc = a[r, 0] * v[0] + a[r, 1] * v[1] + a[r, 2] * v[2]
        if b is not None:
            acc += b[r]
        out.append(acc)
    return out[0], out[1], out[2]


def _project_object(os_: _ObjectState, transform, camera, near: float, sl: slice) -> _Moved:
    """The points ``sl`` of an object moved by ``transform`` and projected, in float64."""
    # Any finite transform is allowed (a translation of 1e300, a scale of 1e-300): the maths runs
    # in float64 without overflow warnings, and a point whose position, depth or footprint leaves
    # FAR (inf included) is out of every view, so it is dropped like a point behind the camera;
    # what stays fits the float32 arrays downstream.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        a = transform.scale * transform.R
        b = os_.pivot + transform.t - a @ os_.pivot
        x, y, z = _linear(a, _points(os_, sl, camera), b)
        f = camera.focal
        front = np.isfinite(z) & (z > near) & (z < FAR)
        inv_z = np.where(front, 1.0 / z, np.nan)
        xn = x * inv_z
        yn = y * inv_z
        fz = f * inv_z
        tx = f * xn + camera.cx
        ty = f * yn + camera.cy

        def image_derivative(tangent):
            dx, dy, dz = _linear(a, tangent)
            return fz * (dx - xn * dz), fz * (dy - yn * dz), dz

        ju = tuple(image_derivative(t[:, sl].astype(np.float64)) for t in os_.du)
        jv = tuple(image_derivative(t[:, sl].astype(np.float64)) for t in os_.dv)
        ok = front & (np.abs(tx) < FAR) & (np.abs(ty) < FAR)
        for c in (*ju, *jv):
            for comp in c:
                ok &= np.abs(comp) < FAR
    if not ok.all():
        gone = ~ok
        tx, ty = np.where(gone, np.nan, tx), np.where(gone, np.nan, ty)
        ju = tuple(tuple(np.where(gone, np.nan, comp) for comp in c) for c in ju)
        jv = tuple(tuple(np.where(gone, np.nan, comp) for comp in c) for c in jv)
    return _Moved(tx, ty, z, ok, ju, jv)


_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))


#: points projected and expanded into candidates at a time: the per-point float64 state and the
#: per-candidate temporaries (a dozen arrays of one to a few entries per point) stay about a
#: hundred MB for any object size; the plan does not depend on it
FOOTPRINT_CHUNK = 1 << 19


def _footprints(tx, ty, tz, ok, ju, jv, ulo, uhi, vlo, vhi, shape, index=None) -> tuple[np.ndarray, ...]:
    """Candidates of the footprint part ``u in [ulo, uhi], v in [vlo, vhi]`` (source pixels, about
    the point) of every point, mapped with ``ju = (dx, dy, dz)/dcol`` and ``jv`` per point.
    Returns (pix, z, point index, u, v); ``index`` maps local point numbers to the object's."""
    h, w = shape
    jux, juy, juz = ju
    jvx, jvy, jvz = jv
    with np.errstate(invalid="ignore"):
        # bounding box of the parallelogram t + u Ju + v Jv over the ranges
        x_min = np.minimum(ulo * jux, uhi * jux) + np.minimum(vlo * jvx, vhi * jvx)
        x_max = np.maximum(ulo * jux, uhi * jux) + np.maximum(vlo * jvx, vhi * jvx)
        y_min = np.minimum(ulo * juy, uhi * juy) + np.minimum(vlo * jvy, vhi * jvy)
        y_max = np.maximum(ulo * juy, uhi * juy) + np.maximum(vlo * jvy, vhi * jvy)
        cap = MAX_FOOTPRINT + 0.5
        x_lo = np.maximum(np.ceil(tx + np.maximum(x_min, -cap) - 0.5), 0)
        x_hi = np.minimum(np.floor(tx + np.minimum(x_max, cap) - 0.5), w - 1)
        y_lo = np.maximum(np.ceil(ty + np.maximum(y_min, -cap) - 0.5), 0)
        y_hi = np.minimum(np.floor(ty + np.minimum(y_max, cap) - 0.5), h - 1)
        nx = x_hi - x_lo + 1
        ny = y_hi - y_lo + 1
        det = jux * jvy - jvx * juy
        good = ok & (nx > 0) & (ny > 0) & (np.abs(det) > 1e-12)
    idx = np.nonzero(good)[0]
    if len(idx) == 0:
        return _EMPTY
    nx = nx[idx].astype(np.int64)
    count = nx * ny[idx].astype(np.int64)
    total = int(count.sum())
    if total == 0:
        return _EMPTY
    # expand: candidate c belongs to point owner[c] and is the k-th pixel of its box
    owner = np.repeat(np.arange(len(idx)), count)
    k = np.arange(total) - (np.cumsum(count) - count)[owner]
    nxo = nx[owner]
    qx = x_lo[idx].astype(np.int64)[owner] + k % nxo
    qy = y_lo[idx].astype(np.int64)[owner] + k // nxo
    gi = idx[owner]
    inv_det = 1.0 / det[idx]
    i00 = (jvy[idx] * inv_det).astype(np.float32)[owner]
    i01 = (-jvx[idx] * inv_det).astype(np.float32)[owner]
    i10 = (-juy[idx] * inv_det).astype(np.float32)[owner]
    i11 = (jux[idx] * inv_det).astype(np.float32)[owner]
    dxq = (qx + 0.5 - tx[gi]).astype(np.float32)  # q - t, pixels
    dyq = (qy + 0.5 - ty[gi]).astype(np.float32)
    u = i00 * dxq + i01 * dyq
    v = i10 * dxq + i11 * dyq
    acc = np.nonzero((u >= np.float32(ulo)) & (u <= np.float32(uhi)) & (v >= np.float32(vlo)) & (v <= np.float32(vhi)))[0]
    u = u[acc]
    v = v[acc]
    gi = gi[acc]
    z = tz[gi].astype(np.float32) + juz[gi].astype(np.float32) * u + jvz[gi].astype(np.float32) * v
    return qy[acc] * w + qx[acc], z, (gi if index is None else index[gi]), u, v


def _candidates(m: _Moved, crease: np.ndarray, shape: tuple[int, int]) -> list[tuple[np.ndarray, ...]]:
    """Target-pixel candidates of (a chunk of) one object in five parts (the smooth footprints,
    then the four quadrants of the creased points), each (pix, z, point index, u_col, u_row).

    A point's footprint is its source pixel ``[-0.5, 0.5]^2`` grown by ``FOOTPRINT_SLACK``. On a
    smooth surface (the two one-sided tangents agree) it is mapped as one parallelogram. At a
    crease (``crease``: the edge between two faces of a box, an object's border) it is mapped
    quadrant by quadrant with the tangents of that side, so both faces reach the crease and no
    crack opens along it. Each part's bounding box (at most ``MAX_FOOTPRINT`` pixels from the
    point) lists the pixel centres to test, so the work follows the pixels actually covered.
    """
    lo, hi = -FOOTPRINT_SLACK, 0.5 + FOOTPRINT_SLACK
    smooth_ok = m.ok & ~crease
    parts = [_footprints(m.tx, m.ty, m.tz, smooth_ok, m.ju[0], m.jv[0], -hi, hi, -hi, hi, shape)]
    ci = np.nonzero(crease & m.ok)[0]
    if not len(ci):
        return parts + [_EMPTY] * 4
    tx, ty, tz, ok = m.tx[ci], m.ty[ci], m.tz[ci], m.ok[ci]
    for su in (0, 1):  # 0: plus side, 1: minus side
        ju = tuple(c[ci] for c in m.ju[su])
        ulo, uhi = (lo, hi) if su == 0 else (-hi, -lo)
        for sv in (0, 1):
            jv = tuple(c[ci] for c in m.jv[sv])
            vlo, vhi = (lo, hi) if sv == 0 else (-hi, -lo)
            parts.append(_footprints(tx, ty, tz, ok, ju, jv, ulo, uhi, vlo, vhi, shape, index=ci))
    return parts


# ----------------------------------------------------------------------------------------------
# the plan


def plan(scene) -> WarpPlan:
    """Warp every object of ``scene`` by its current transform; see the module docstring.

    Returns a :class:`~core.geometry.types.WarpPlan` at the image resolution (H, W):
    ``edited_depth`` (z-depth, depth units), ``background_depth`` (the depth with every moved or
    hidden object removed and filled), ``hole``, ``target_object``, the backward map
    ``src_x``/``src_y`` (source pixel coordinates of the surface seen at each pixel showing a moved
    object) and one :class:`~core.geometry.types.ObjectFlow` per object (for objects that did not
    move: the identity, ``moved=False``; hidden objects: every point dropped, ``moved=True``).
    ``extras`` holds ``removed`` (H, W bool: the region whose depth and colour were replaced),
    ``source_object`` (H, W int16 owner map of the photo), ``moved`` (indices of moved objects),
    ``hidden`` (indices of hidden objects) and ``jacobian`` (index -> (N, 2, 2) float32,
    d(x, y)_target / d(col, row)_source per flow point).

    Lifting, pivots and the background fill are cached per depth and mask set, so that a drag
    (only transforms change) costs the projection, splatting and z-buffer.
    """
    if scene.depth.ndim != 2:
        raise InputError(f"depth must be a 2-D map, got shape {scene.depth.shape}")
    st = _static(scene)
    h, w = st.shape
    moved_idx = [k for k, o in enumerate(scene.objects) if o.visible and not o.transform.is_identity()]
    hidden_idx = [k for k, o in enumerate(scene.objects) if not o.visible]
    changed_set = frozenset(moved_idx + hidden_idx)

    rs = _removed_state(st, changed_set)
    removed = rs.removed
    bg = rs.background
    edited = bg.copy()
    target_object = rs.target_base.copy()
    src_x = np.full((h, w), np.nan, np.float32)
    src_y = np.full((h, w), np.nan, np.float32)
    jacobians: Mapping[int, np.ndarray] = {}

    if not changed_set:
        flows = [_identity_flow(os_, scene.objects[os_.index].name, st.depth) for os_ in st.objects]
        for f_ in flows:
            f_.visible = target_object[f_.src_rows, f_.src_cols] == f_.index
        return WarpPlan(
            (h, w),
            edited,
            bg.copy(),
            np.zeros((h, w), bool),
            target_object,
            src_x,
            src_y,
            flows,
            np.zeros((h, w), bool),
            extras={"removed": removed, "source_object": st.object_index, "moved": [], "hidden": [], "jacobian": {}},
        )

    jit = compiled_kernels()
    if jit is not None:
        moved_states, jacobians, zbuf, shows_moved = _splat_jit(jit, scene, st, rs, moved_idx, edited, target_object, src_x, src_y)
    else:
        moved_states, jacobians, zbuf, shows_moved = _splat_numpy(scene, st, rs, moved_idx, edited, target_object, src_x, src_y)
    if jit is not None:
        jit.close_pinholes(shows_moved, target_object, edited, src_x, src_y, rs.limit.reshape(h, w))
    elif shows_moved.any():
        _close_pinholes(shows_moved, target_object, edited, src_x, src_y, rs.limit.reshape(h, w), w)
    hole = removed & ~shows_moved
    changed = removed | shows_moved

    # flows
    zb = zbuf.reshape(h, w)
    flows: list[ObjectFlow] = []
    moved_lookup = {k: projected for k, _, projected in moved_states}
    for k, obj in enumerate(scene.objects):
        os_ = st.objects[k]
        if k in moved_lookup and jit is not None:
            n = len(os_.rows)
            tx, ty, tz, vis = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, bool)
            state = (k, *moved_lookup[k], h, w, target_object.reshape(-1), zbuf, VISIBLE_TOLERANCE)
            jit.run_all([partial(jit.object_flow, *state, lo, hi, tx, ty, tz, vis) for lo, hi in jit.ranges(n)])
            flows.append(ObjectFlow(k, obj.name, os_.rows, os_.cols, tx, ty, tz, vis, moved=True))
        elif k in moved_lookup:
            mx, my, mz, mok = moved_lookup[k]
            on = mok & (mx >= 0) & (mx < w) & (my >= 0) & (my < h)
            tx = np.where(on, mx, np.nan).astype(np.float32)
            ty = np.where(on, my, np.nan).astype(np.float32)
            tz = np.where(mok, mz, np.nan).astype(np.float32)
            vis = np.zeros(len(os_.rows), bool)
            ii = np.nonzero(on)[0]
            if len(ii):
                c = np.floor(mx[ii]).astype(np.int64)
                r = np.floor(my[ii]).astype(np.int64)
                vis[ii] = (target_object[r, c] == k) & (mz[ii] <= zb[r, c] * (1.0 + VISIBLE_TOLERANCE))
            flows.append(ObjectFlow(k, obj.name, os_.rows, os_.cols, tx, ty, tz, vis, moved=True))
        elif k in changed_set:  # hidden
            n = len(os_.rows)
            nan = np.full(n, np.nan, np.float32)
            flows.append(ObjectFlow(k, obj.name, os_.rows, os_.cols, nan, nan.copy(), nan.copy(), np.zeros(n, bool), moved=True))
        else:
            f_ = _identity_flow(os_, obj.name, st.depth)
            f_.visible = target_object[os_.rows, os_.cols] == k
            flows.append(f_)

    return WarpPlan(
        (h, w),
        edited,
        bg.copy(),
        hole,
        target_object,
        src_x,
        src_y,
        flows,
        changed,
        extras={
            "removed": removed,
            "source_object": st.object_index,
            "moved": list(moved_idx),
            "hidden": list(hidden_idx),
            "jacobian": jacobians,
        },
    )


def _splat_jit(jit, scene, st: _Static, rs: _Removed, moved_idx, edited, target_object, src_x, src_y):
    """The moved objects splatted by the compiled kernels (the same candidates in the same order
    per pixel as :func:`_splat_numpy`), written into the plan's arrays in place: per object the
    points are projected in pieces, then splatted in bands of target rows, on threads at once."""
    h, w = st.shape
    camera = scene.camera
    zbuf = np.full(h * w, np.inf, np.float32)
    flat = (edited.reshape(-1), target_object.reshape(-1), src_x.reshape(-1), src_y.reshape(-1))
    moved_states = []
    jacobians: dict[int, tuple] = {}
    f, cx, cy, near = float(camera.focal), float(camera.cx), float(camera.cy), float(st.near)
    for k in moved_idx:
        os_ = st.objects[k]
        n = len(os_.rows)
        tr = scene.objects[k].transform
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.ascontiguousarray(tr.scale * tr.R, np.float64)
            b = np.ascontiguousarray(os_.pivot + tr.t - a @ os_.pivot, np.float64)
        tx, ty, tz, ok = np.empty(n), np.empty(n), np.empty(n), np.empty(n, bool)
        jp = np.empty((n, 6))
        ylo, yhi = np.empty(n, np.int32), np.empty(n, np.int32)
        pts = (os_.rows, os_.cols, os_.z, os_.tangents, os_.crease, a, b, f, cx, cy, near)
        jacobians[k] = (os_.rows, os_.cols, os_.z, os_.tangents, a, b, f, cx, cy, near)
        out = (tx, ty, tz, ok, jp, ylo, yhi)
        jit.run_all([partial(jit.project_points, *pts, h, lo, hi, *out) for lo, hi in jit.ranges(n)])
        jit.run_all([partial(jit.splat_band, *pts, h, w, r0, r1, *out, rs.limit, zbuf, *flat, k) for r0, r1 in jit.bands(ylo, yhi, h)])
        moved_states.append((k, os_, (tx, ty, tz, ok)))
    return moved_states, _LazyJacobians(jit, jacobians), zbuf, (zbuf < np.inf).reshape(h, w)


class _LazyJacobians(Mapping):
    """The plan's ``extras["jacobian"]`` on the compiled path: object index -> (N, 2, 2) float32,
    each computed on first access (only the feature correspondences of a render read them, not
    the drag preview)."""

    def __init__(self, jit, args: dict[int, tuple]) -> None:
        self._jit = jit
        self._args = args
        self._done: dict[int, np.ndarray] = {}

    def __getitem__(self, k: int) -> np.ndarray:
        hit = self._done.get(k)
        if hit is None:
            args = self._args[k]  # KeyError for an object that did not move, as a dict's
            hit = self._done[k] = np.empty((len(args[0]), 2, 2), np.float32)
            self._jit.jacobians(*args, hit)
        return hit

    def __iter__(self):
        return iter(self._args)

    def __len__(self) -> int:
        return len(self._args)


def _splat_numpy(scene, st: _Static, rs: _Removed, moved_idx, edited, target_object, src_x, src_y):
    """The moved objects splatted with vectorised numpy (the reference path), written into the
    plan's arrays in place; returns the per-object projections, Jacobians, z-buffer and coverage."""
    h, w = st.shape
    camera = scene.camera
    near = st.near
    jacobians: dict[int, np.ndarray] = {}
    # Each object is projected and splatted FOOTPRINT_CHUNK points at a time; its candidates are
    # kept in the order of one pass (the five parts of _candidates, each over all points), so ties
    # of the z-buffer go the same way, and only those no static surface hides are kept.
    moved_states = []
    cand: list[tuple[np.ndarray, ...]] = []  # (pix, z, global point index, u, v, object) int32/float32
    offset = 0
    for k in moved_idx:
        os_ = st.objects[k]
        n = len(os_.rows)
        tx, ty, tz, ok = np.empty(n), np.empty(n), np.empty(n), np.empty(n, bool)
        jacobians[k] = jac = np.empty((n, 2, 2), np.float32)
        parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(5)]
        for a in range(0, n, FOOTPRINT_CHUNK):
            sl = slice(a, min(n, a + FOOTPRINT_CHUNK))
            m = _project_object(os_, scene.objects[k].transform, camera, near, sl)
            tx[sl], ty[sl], tz[sl], ok[sl] = m.tx, m.ty, m.tz, m.ok
            jac[sl] = m.jacobian
            for part, (cp, cz, ci, cu, cv) in zip(parts, _candidates(m, os_.crease[sl], (h, w))):
                keep = cz <= rs.limit[cp]
                part.append((cp[keep].astype(np.int32), cz[keep], (ci[keep] + (offset + a)).astype(np.int32), cu[keep], cv[keep]))
            del m
        for part in parts:
            for c in part:
                cand.append((*c, np.full(len(c[0]), k, np.int16)))
        del parts
        moved_states.append((k, os_, (tx, ty, tz, ok)))
        offset += n

    columns = [list(c) for c in zip(*cand)] if cand else [[np.zeros(0, t)] for t in (np.int32, np.float32, np.int32, np.float32, np.float32, np.int16)]
    del cand
    joined = []
    for c in range(6):  # one column at a time: the parts of the others are not copied meanwhile
        joined.append(np.concatenate(columns[c]))
        columns[c] = []
    pix, z, pt, cu, cv, cobj = joined
    del columns, joined

    zbuf = np.full(h * w, np.inf, np.float32)
    np.minimum.at(zbuf, pix, z)
    win = np.nonzero(z == zbuf[pix])[0]
    winner = np.full(h * w, -1, np.int32)
    winner[pix[win]] = win
    wpix = np.nonzero(winner >= 0)[0]
    wc = winner[wpix]

    # per-point source coordinates of all moved points, concatenated in moved order
    rows_all = np.concatenate([os_.rows for _, os_, _ in moved_states]) if moved_states else np.zeros(0, np.int32)
    cols_all = np.concatenate([os_.cols for _, os_, _ in moved_states]) if moved_states else np.zeros(0, np.int32)
    gp = pt[wc]
    edited.ravel()[wpix] = zbuf[wpix]
    target_object.ravel()[wpix] = cobj[wc]
    src_x.ravel()[wpix] = cols_all[gp] + np.float32(0.5) + cu[wc]
    src_y.ravel()[wpix] = rows_all[gp] + np.float32(0.5) + cv[wc]
    del pix, z, pt, cu, cv, cobj, win, winner, wc, gp, rows_all, cols_all  # the candidates: done with

    shows_moved = np.zeros(h * w, bool)
    shows_moved[wpix] = True
    return moved_states, jacobians, zbuf, shows_moved.reshape(h, w)


def _close_pinholes(shows, target, depth, sx, sy, limit, w) -> None:
    """Fill single-pixel cracks left by the footprints (in place).

    The quadrant footprints tile smooth surfaces and creases along the pixel axes; where a crease
    runs diagonally across a grazing face, an isolated pixel can stay uncovered. A pixel not showing
    a moved object whose two horizontal, or two vertical, neighbours show the same moved object
    at depths within 5 % of each other gets their mean depth and source position (the linear
    interpolation across it), unless the static picture hides that depth.
    """
    rows = np.flatnonzero(shows.any(axis=1))
    cols = np.flatnonzero(shows.any(axis=0))
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    if r1 - r0 < 3 or c1 - c0 < 3:
        return
    sl = (slice(r0, r1), slice(c0, c1))
    sh, tg, dp, xs, ys, lim = shows[sl], target[sl], depth[sl], sx[sl], sy[sl], limit[sl]
    gap = ~sh[1:-1, 1:-1]
    for a, b in (((slice(1, -1), slice(0, -2)), (slice(1, -1), slice(2, None))), ((slice(0, -2), slice(1, -1)), (slice(2, None), slice(1, -1)))):
        pair = gap & sh[a] & sh[b] & (tg[a] == tg[b])
        if not pair.any():
            continue
        za, zb = dp[a], dp[b]
        z = 0.5 * (za + zb)
        pair &= (np.abs(za - zb) <= 0.05 * z) & (z <= lim[1:-1, 1:-1])
        if not pair.any():
            continue
        ii, jj = np.nonzero(pair)
        ai, aj = ii + a[0].start, jj + a[1].start
        bi, bj = ii + b[0].start, jj + b[1].start
        dp[ii + 1, jj + 1] = z[ii, jj]
        tg[ii + 1, jj + 1] = tg[ai, aj]
        xs[ii + 1, jj + 1] = 0.5 * (xs[ai, aj] + xs[bi, bj])
        ys[ii + 1, jj + 1] = 0.5 * (ys[ai, aj] + ys[bi, bj])
        sh[ii + 1, jj + 1] = True
        gap[ii, jj] = False


def _identity_flow(os_: _ObjectState, name: str, depth: np.ndarray) -> ObjectFlow:
    return ObjectFlow(
        index=os_.index,
        name=name,
        src_rows=os_.rows,
        src_cols=os_.cols,
        tgt_x=os_.cols.astype(np.float32) + np.float32(0.5),
        tgt_y=os_.rows.astype(np.float32) + np.float32(0.5),
        tgt_z=depth[os_.rows, os_.cols].astype(np.float32),
        visible=np.ones(len(os_.rows), bool),
        moved=False,
    )


# ----------------------------------------------------------------------------------------------
# feature-resolution correspondences


def _cells_any(mask: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    hh, ww = mask.shape
    pad = np.zeros((h * factor, w * factor), bool)
    pad[:hh, :ww] = mask
    return np.asarray(pad.reshape(h, factor, w, factor).any(axis=(1, 3)), dtype=bool)


def feature_correspondence(plan: WarpPlan, factor: int, margin: int = 1) -> FeatureCorrespondence:
    """Correspondences of ``plan`` on the feature grid of ``1/factor`` of the image.

    The grid has ``(ceil(H/factor), ceil(W/factor))`` cells; image pixel (i, j) lies in cell
    (i // factor, j // factor). Per object (``objects[k]`` is a dict with ``index``, ``name``,
    ``moved``, ``src_cells`` (M, 2) int32 (row, col), ``tgt_xy`` (M, 2) float32 (x, y) on the
    feature grid, ``weight`` (M,) float32, ``visible`` (M,) bool = weight > 0):

    * the target of a source cell is where the cell *centre* lands: each visible object pixel
      ``i`` of the cell predicts it as ``t_i + J_i (c - s_i)`` (local affine map, so a cell that
      the object covers only partly still gets its centre's position, not the centroid of its
      pixels), averaged; with no visible pixel, all on-screen pixels are used; with none,
      ``tgt_xy`` is nan and ``weight`` 0. Coordinates: ``x_feat = x_img / factor``, so with the
      identity a cell maps exactly onto its own centre ``(col + 0.5, row + 0.5)``.
    * ``weight`` = visible object pixels in the cell / pixels in the cell (the visible fraction
      of the object's pixels times the fraction of the cell it covers).

    Cell masks: ``fg_src``/``fg_tgt`` cells holding any pixel of a moved object before/after the
    move, ``hole`` cells holding any hole pixel, ``background`` the cells at more than ``margin``
    cells (Chebyshev distance) from any cell holding a changed pixel.
    """
    factor = int(factor)
    if factor < 1:
        raise InputError(f"feature factor must be a positive integer, got {factor}")
    if margin < 0:
        raise InputError(f"margin must be >= 0, got {margin}")
    hh, ww = plan.shape
    h, w = -(-hh // factor), -(-ww // factor)
    # pixels per cell (border cells of sizes that are not multiples of the factor are partial)
    rh = np.minimum(factor, hh - np.arange(h) * factor)
    cw = np.minimum(factor, ww - np.arange(w) * factor)
    cell_area = (rh[:, None] * cw[None, :]).astype(np.float64).ravel()
    jac_all = plan.extras.get("jacobian", {})
    objects = []
    fg_src_px = np.zeros((hh, ww), bool)
    for fl in plan.flows:
        rows = fl.src_rows.astype(np.int64)
        cols = fl.src_cols.astype(np.int64)
        cell = (rows // factor) * w + cols // factor
        count = np.bincount(cell, minlength=h * w).astype(np.float64)
        vis = np.asarray(fl.visible, bool)
        nvis = np.bincount(cell, weights=vis.astype(np.float64), minlength=h * w)
        used = np.nonzero(count > 0)[0]
        src_cells = np.stack([used // w, used % w], axis=1).astype(np.int32)
        centre = (np.stack([used % w, used // w], axis=1) + 0.5) * factor  # image px (x, y)
        if not fl.moved:
            tgt = (centre / factor).astype(np.float32)
        else:
            fg_src_px[fl.src_rows, fl.src_cols] = True
            on = np.isfinite(fl.tgt_x) & np.isfinite(fl.tgt_y)
            # pick visible pixels per cell, else on-screen ones
            use = np.where(nvis[cell] > 0, vis, on) & on
            jac = jac_all.get(fl.index)
            cpos = (np.stack([cell % w, cell // w], axis=1) + 0.5) * factor  # this pixel's cell centre
            d = cpos - np.stack([cols + 0.5, rows + 0.5], axis=1)
            if jac is not None and len(jac) == len(rows):
                pred = np.stack([fl.tgt_x, fl.tgt_y], axis=1).astype(np.float64) + np.einsum("nij,nj->ni", jac.astype(np.float64), d)
            else:
                pred = np.stack([fl.tgt_x, fl.tgt_y], axis=1).astype(np.float64) + d
            cw_ = use.astype(np.float64)
            pred = np.where(use[:, None], pred, 0.0)
            n_use = np.bincount(cell, weights=cw_, minlength=h * w)
            sx = np.bincount(cell, weights=pred[:, 0], minlength=h * w)
            sy = np.bincount(cell, weights=pred[:, 1], minlength=h * w)
            with np.errstate(invalid="ignore", divide="ignore"):
                tgt = (np.stack([sx[used], sy[used]], axis=1) / n_use[used][:, None] / factor).astype(np.float32)
        weight = (nvis[used] / cell_area[used]).astype(np.float32)
        weight = np.where(np.all(np.isfinite(tgt), axis=1), weight, np.float32(0.0))
        objects.append(
            {
                "index": fl.index,
                "name": fl.name,
                "moved": fl.moved,
                "src_cells": src_cells,
                "tgt_xy": tgt,
                "weight": weight,
                "visible": weight > 0,
            }
        )
    moved = set(plan.extras.get("moved", [])) | set(plan.extras.get("hidden", []))
    if moved:
        fg_tgt_px = np.isin(plan.target_object, np.fromiter(moved, np.int16, len(moved)))
    else:
        fg_tgt_px = np.zeros((hh, ww), bool)
    fg_src = _cells_any(fg_src_px, factor, (h, w))
    fg_tgt = _cells_any(fg_tgt_px, factor, (h, w))
    hole = _cells_any(plan.hole, factor, (h, w))
    changed = _cells_any(plan.changed, factor, (h, w)) | fg_src | fg_tgt | hole
    if margin > 0 and changed.any():
        changed = np.asarray(ndi.binary_dilation(changed, structure=np.ones((2 * margin + 1, 2 * margin + 1), bool)), dtype=bool)
    return FeatureCorrespondence(
        factor=factor,
        shape=(h, w),
        objects=objects,
        fg_src=fg_src,
        fg_tgt=fg_tgt,
        hole=hole,
        background=~changed,
    )


def clear_cache() -> None:
    """Forget the cached per-mask state (lift, pivots, fill)."""
    _STATIC_CACHE.clear()
