"""Depth of the background behind the objects: a Laplace (or guided Poisson) fill.

Frames and units: image pixels (row i, col j, see :mod:`core.camera`); depths are z-depth in the
scene's depth units.

Region: the union of every object's mask dilated by a few pixels (``dilation_px``; depth maps from
estimators smear each object's edge over a pixel or two, and those mixed depths must not leak into
the background). Each connected component of that region is solved on its own and cached by the
hash of its pixels and of the depth (and guide), so a drag never re-solves and adding an object only
solves the components that changed.

Why disparity: the fill is harmonic in *disparity* ``1/z``, not in depth. For a plane
``n . p = d`` seen through a pinhole, ``1/z = n . ((x - cx)/f, (y - cy)/f, 1) / d`` is an affine
function of the pixel coordinates, and a discrete harmonic fill reproduces affine functions
exactly. So floors, walls and table tops behind an object come back exactly, where a fill in
depth would bow them. (It is also the quantity the depth-conditioned diffusion model sees.)

Known background (``scene.background_depth``, e.g. ``bg_depth.exr`` of a Diffusion Handles scene):
it is preferred inside the region as a *guide*: the fill solves ``Laplace(u) = Laplace(g)`` with
``g = 1/background_depth`` and ``u = 1/depth`` on the region's border, i.e. it keeps the guide's
shape inside and bends it smoothly to meet the photo's depth at the border (a separately estimated
background depth differs from the photo's by several percent, which would otherwise leave a seam).

Boundary conditions: Dirichlet (the surrounding depth) on pixels next to the region; where the
region touches the image border, the missing neighbour is dropped (zero normal derivative).
Outside the region the result equals the input depth bit for bit.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import cast

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from core.errors import InputError
from core.geometry.lift import check_depth

_SCENE_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_COMPONENT_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_SCENE_CACHE_SIZE = 8
_COMPONENT_CACHE_SIZE = 128


def dilation_px(shape: tuple[int, int]) -> int:
    """Default dilation (pixels) of object masks for the fill region: 3 px at 512 px, scaled."""
    return max(2, int(round(3.0 * max(shape) / 512.0)))


def digest(*arrays) -> str:
    """Content hash of arrays (shape, dtype and bytes); ``None`` entries hash as a marker."""
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            h.update(b"<none>")
            continue
        a = np.ascontiguousarray(a)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(a.data.cast("B") if a.size else b"")
    return h.hexdigest()


def mask_digest(mask: np.ndarray) -> str:
    """Hash of a boolean mask (packed to bits first: 8x less to hash)."""
    m = np.asarray(mask, dtype=bool)
    return digest(np.asarray(m.shape), np.packbits(m))


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= r * r + r  # a slightly round square: 8-connected at r=1


def fill_region(masks, shape: tuple[int, int], dilate: int | None = None) -> np.ndarray:
    """(H, W) bool: the union of ``masks`` dilated by ``dilate`` pixels (default :func:`dilation_px`)."""
    region = np.zeros(shape, dtype=bool)
    for m in masks:
        region |= np.asarray(m, dtype=bool)
    d = dilation_px(shape) if dilate is None else int(dilate)
    if d > 0 and region.any():
        region = ndi.binary_dilation(region, structure=_disk(d))
    return region


def _solve_component(values: np.ndarray, guide: np.ndarray | None, ys: np.ndarray, xs: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Solve the (guided) Laplace equation on one connected component; returns (N,) float64."""
    h, w = values.shape
    n = len(ys)
    index = np.full((h, w), -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    diag = np.zeros(n)
    rhs = np.zeros(n)
    rows, cols = [], []
    known_any = False
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        y2, x2 = ys + dy, xs + dx
        inb = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)
        ii = np.nonzero(inb)[0]
        y2, x2 = y2[ii], x2[ii]
        diag[ii] += 1.0
        if guide is not None:
            rhs[ii] += guide[ys[ii], xs[ii]] - guide[y2, x2]
        j = index[y2, x2]
        unknown = j >= 0
        rows.append(ii[unknown])
        cols.append(j[unknown])
        known = ~unknown & ~region[y2, x2]
        if known.any():
            known_any = True
            rhs[ii[known]] += values[y2[known], x2[known]]
        # neighbours in the region but not in this component cannot exist (components are maximal)
    if not known_any:
        # nothing around the region to anchor it (the objects fill the image): keep the guide, or
        # the farthest value of the component itself
        if guide is not None:
            return guide[ys, xs].astype(np.float64)
        return np.full(n, float(values[ys, xs].min()))
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    a = sp.csc_matrix(
        (np.concatenate([diag, -np.ones(len(r))]), (np.concatenate([np.arange(n), r]), np.concatenate([np.arange(n), c]))),
        shape=(n, n),
    )
    # symmetric positive definite 5-point Laplacian: a minimum-degree ordering on A^T + A keeps
    # SuperLU's fill-in low (measured 1.6x faster than COLAMD at 200k unknowns)
    return np.asarray(spl.spsolve(a, rhs, permc_spec="MMD_AT_PLUS_A"), dtype=np.float64)


def laplace_fill(values: np.ndarray, region: np.ndarray, guide: np.ndarray | None = None) -> np.ndarray:
    """Replace ``values`` inside ``region`` by the harmonic (or guide-preserving) interpolant.

    ``values``: (H, W) float array, known outside ``region``. ``region``: (H, W) bool.
    ``guide``: optional (H, W) float array; then the fill solves ``Laplace(u) = Laplace(guide)``.
    Dirichlet boundary from the pixels next to the region, zero normal derivative on the image
    border. Returns float64 (H, W); outside ``region`` the result is ``values`` unchanged.
    No caching (see :func:`background_depth`).
    """
    values = np.asarray(values, dtype=np.float64)
    region = np.asarray(region, dtype=bool)
    if values.shape != region.shape or values.ndim != 2:
        raise InputError(f"laplace_fill needs (H, W) values and region, got {values.shape} and {region.shape}")
    g = None if guide is None else np.asarray(guide, dtype=np.float64)
    out = values.copy()
    labels, count = cast("tuple[np.ndarray, int]", ndi.label(region))  # (labels, count) as output=None
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        ys, xs = np.nonzero(labels[sl] == k)
        ys = ys + sl[0].start
        xs = xs + sl[1].start
        out[ys, xs] = _solve_component(values, g, ys, xs, region)
    return out


def _cache_put(cache: OrderedDict, key, value, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


def background_depth(scene, dilate: int | None = None) -> np.ndarray:
    """Depth of ``scene`` with every object removed and the hole filled, (H, W) float32, depth units.

    Inside the union of the objects' masks dilated by ``dilate`` pixels (default
    :func:`dilation_px`), the z-depth is replaced by a harmonic fill in disparity (guided by
    ``scene.background_depth`` when the scene has one); elsewhere it equals ``scene.depth``. See the
    module docstring for the method. Cached per mask set and depth: repeated calls (every drag)
    cost a hash. The returned array is shared with the cache: do not modify it.
    """
    depth = scene.depth
    shape = depth.shape
    guide_depth = scene.background_depth
    if guide_depth is not None:
        guide_depth = np.asarray(guide_depth)
        if guide_depth.shape != shape:
            raise InputError(f"background depth is {guide_depth.shape}, the image is {shape}: resize it to the photo")
        check_depth(guide_depth, "background depth")  # in range before the cast: no overflow
        guide_depth = guide_depth.astype(np.float32, copy=False)
    d = dilation_px(shape) if dilate is None else int(dilate)
    masks = [o.mask for o in scene.objects]
    depth_key = digest(depth)
    guide_key = digest(guide_depth)
    scene_key = (depth_key, guide_key, d, digest(*[np.packbits(np.asarray(m, dtype=bool)) for m in masks]))
    hit = _SCENE_CACHE.get(scene_key)
    if hit is not None:
        _SCENE_CACHE.move_to_end(scene_key)
        return hit

    check_depth(depth)
    region = fill_region(masks, shape, d)
    out = np.array(depth, dtype=np.float32, copy=True)
    if region.any():
        disparity = 1.0 / depth.astype(np.float64)
        guide = None if guide_depth is None else 1.0 / guide_depth.astype(np.float64)
        floor = 0.25 * float(disparity[~region].min() if (~region).any() else disparity.min())
        if guide is not None:
            floor = min(floor, 0.25 * float(guide.min()))
        labels, _ = cast("tuple[np.ndarray, int]", ndi.label(region))  # (labels, count) as output=None
        for k, sl in enumerate(ndi.find_objects(labels), start=1):
            local = labels[sl] == k
            ys, xs = np.nonzero(local)
            ys = ys + sl[0].start
            xs = xs + sl[1].start
            comp_key = (depth_key, guide_key, digest(np.asarray([sl[0].start, sl[1].start]), np.asarray(local.shape), np.packbits(local)))
            u = _COMPONENT_CACHE.get(comp_key)
            if u is None:
                u = _solve_component(disparity, guide, ys, xs, region)
                u = np.maximum(u, floor)  # a guide can undershoot; keep the fill in front of infinity
                _cache_put(_COMPONENT_CACHE, comp_key, u, _COMPONENT_CACHE_SIZE)
            else:
                _COMPONENT_CACHE.move_to_end(comp_key)
            out[ys, xs] = (1.0 / u).astype(np.float32)
    out.setflags(write=False)
    _cache_put(_SCENE_CACHE, scene_key, out, _SCENE_CACHE_SIZE)
    return out


def clear_cache() -> None:
    """Forget every cached fill (tests and benchmarks measure the first-time cost with it)."""
    _SCENE_CACHE.clear()
    _COMPONENT_CACHE.clear()
