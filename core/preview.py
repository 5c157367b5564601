"""The live geometric preview: the photo with its objects moved, drawn from a warp plan.

Frames and units: image pixels (row i, col j, centre (j + 0.5, i + 0.5), see :mod:`core.camera`);
colours are uint8 RGB.

* Moved objects are drawn through the plan's backward map ``src_x``/``src_y`` (see
  :mod:`core.geometry.warp`: every covered target pixel knows the sub-pixel source position of the
  surface it shows), so they are crack-free at any supported magnification and sharp: colours are
  sampled bilinearly from the photo, using only source pixels of the same object (weights of taps
  on other pixels are dropped and the rest renormalised), so no background colour leaks into the
  object's edge.
* Where a moved or hidden object used to be (``plan.extras["removed"]``), the photo is replaced by
  a *clean plate*: a push-pull (pyramid) inpainting of the photo from the pixels outside that
  region only, never from the object's old colours. The clean plate depends only on the photo and
  the removed region, so it is cached: a drag that only changes transforms costs the sampling.
* Everything outside the changed region is the photo, bit for bit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import numpy as np

from core.geometry import warp
from core.geometry.fill import digest, mask_digest
from core.geometry.types import WarpPlan


@dataclass
class PreviewResult:
    """``image``: (H, W, 3) uint8 preview; ``hole``: (H, W) bool background uncovered by the
    moves (inpainted in ``image``); ``plan``: the warp plan it was drawn from."""

    image: np.ndarray
    hole: np.ndarray
    plan: WarpPlan


_PLATE_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_PLATE_CACHE_SIZE = 8


def _down2(a: np.ndarray) -> np.ndarray:
    """Sum of 2x2 blocks (odd sizes padded with zeros): (h, w, ...) -> (ceil(h/2), ceil(w/2), ...)."""
    h, w = a.shape[:2]
    if h % 2 or w % 2:
        pad = [(0, h % 2), (0, w % 2)] + [(0, 0)] * (a.ndim - 2)
        a = np.pad(a, pad)
    return a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]


def _up2(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """2x upsampling (pixel repeat, then a [1 2 1]/4 smoothing each way), cropped to ``shape``."""
    up = np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)[: shape[0], : shape[1]]
    for axis in (0, 1):
        n = up.shape[axis]
        if n > 2:
            p = np.concatenate([np.take(up, [0], axis), up, np.take(up, [-1], axis)], axis=axis)
            lo = p[:n] if axis == 0 else p[:, :n]  # slices, not np.take of ranges: the same numbers, no copies
            hi = p[2 : n + 2] if axis == 0 else p[:, 2 : n + 2]
            up = 0.25 * lo + 0.5 * up + 0.25 * hi
    return up


def push_pull_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill the unknown pixels of ``image`` (H, W, C) float from the ``known`` ones (H, W) bool.

    Push-pull (Gortler et al. 1996): average the known pixels down a pyramid of 2x2 blocks, then
    on the way up blend each level's known colour with the upsampled coarser level by its
    coverage. Known pixels are returned unchanged. Cost: about 2.7 full-size passes.
    """
    img = np.asarray(image, dtype=np.float32)
    w0 = np.asarray(known, dtype=np.float32)
    if not known.any():
        return np.zeros_like(img)
    jit = warp.compiled_kernels()
    if jit is not None and img.ndim == 3:
        return _push_pull_jit(jit, img, known, w0)
    levels = []  # (colour (normalised), weight in [0, 1])
    c = img * w0[..., None]
    w = w0
    while True:
        with np.errstate(invalid="ignore", divide="ignore"):
            col = np.where(w[..., None] > 0, c / np.maximum(w, 1e-12)[..., None], 0.0)
        levels.append((col, np.minimum(w, 1.0)))
        if (min(w.shape) <= 1) or (w > 0).all():
            break
        c = _down2(c)
        w = _down2(w)
    filled = levels[-1][0]
    for col, wt in reversed(levels[:-1]):
        up = _up2(filled, wt.shape)
        filled = wt[..., None] * col + (1.0 - wt[..., None]) * up
    out = img.copy()
    out[~known] = filled[~known]
    return out


def _push_pull_jit(jit, img: np.ndarray, known: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """:func:`push_pull_fill` with each level's array work fused in a compiled kernel: the same
    numbers, bit for bit (tests/core/test_drag_kernels.py), without its dozens of temporaries."""
    img = np.ascontiguousarray(img)
    levels = []
    c = img * w0[..., None]
    w = np.ascontiguousarray(w0)
    while True:
        col = np.empty_like(c)
        wt = np.empty_like(w)
        jit.pp_level(c, w, col, wt)
        levels.append((col, wt))
        if (min(w.shape) <= 1) or (w > 0).all():
            break
        shape = (-(-w.shape[0] // 2), -(-w.shape[1] // 2))
        c2 = np.empty((*shape, c.shape[2]), np.float32)
        w2 = np.empty((*shape, 1), np.float32)
        jit.pp_down2(c, c2)
        jit.pp_down2(w[..., None], w2)
        c, w = c2, w2[..., 0].copy()
    filled = levels[-1][0]
    for col, wt in reversed(levels[:-1]):
        out = np.empty_like(col)
        jit.pp_up_blend(filled, col, wt, np.empty_like(col), out)
        filled = out
    return np.where(known[..., None], img, filled)  # a select: the boolean assignment cost 9 ms at 512 px


def clean_plate(photo: np.ndarray, removed: np.ndarray, photo_key: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8: ``photo`` with the ``removed`` region inpainted from outside it (cached)."""
    key = (photo_key or digest(photo), mask_digest(removed))
    hit = _PLATE_CACHE.get(key)
    if hit is not None:
        _PLATE_CACHE.move_to_end(key)
        return hit
    filled = push_pull_fill(photo.astype(np.float32), ~removed)
    plate = np.clip(np.rint(filled), 0, 255).astype(np.uint8)
    plate.setflags(write=False)
    _PLATE_CACHE[key] = plate
    while len(_PLATE_CACHE) > _PLATE_CACHE_SIZE:
        _PLATE_CACHE.popitem(last=False)
    return plate


_PAD_CACHE: OrderedDict[tuple, tuple] = OrderedDict()

#: shown pixels sampled at a time: the temporaries of the bilinear taps stay a few tens of MB
#: however much of the photo a moved object covers (each pixel is sampled on its own)
SAMPLE_CHUNK = 1 << 20


def _padded(photo: np.ndarray, photo_key: str, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Photo (float32) and owner map padded by one pixel (owner -2 there), cached. The cache keeps
    a reference to ``owner``, so its ``id`` cannot be reused while the entry lives."""
    key = (photo_key, id(owner))
    hit = _PAD_CACHE.get(key)
    if hit is not None and hit[0] is owner:
        _PAD_CACHE.move_to_end(key)
        return hit[1], hit[2]
    h, w = owner.shape
    ph = np.zeros((3, h + 2, w + 2), np.float32)  # colour planes: 1-D gathers are the fast ones
    ph[:, 1:-1, 1:-1] = np.moveaxis(photo, -1, 0)
    ow = np.full((h + 2, w + 2), -2, np.int16)
    ow[1:-1, 1:-1] = owner
    _PAD_CACHE[key] = (owner, ph, ow)
    while len(_PAD_CACHE) > 4:
        _PAD_CACHE.popitem(last=False)
    return ph, ow


def sample_object_colors(photo: np.ndarray, owner: np.ndarray, sx: np.ndarray, sy: np.ndarray, obj: np.ndarray, photo_key: str | None = None) -> np.ndarray:
    """Bilinear colours (N, 3) float32 of ``photo`` (H, W, 3) at source positions ``(sx, sy)``
    (pixels), using only the taps whose owner (``owner``, (H, W) int16) equals ``obj`` (N,); the
    weights of the remaining taps are renormalised (the nearest own pixel when none is left)."""
    h, w = owner.shape
    ph, ow = _padded(photo, photo_key or digest(photo), owner)
    w2 = w + 2
    planes = ph.reshape(3, -1)
    flat_ow = ow.ravel()
    # padded coordinates: pixel (i, j) sits at (i + 1, j + 1); positions are >= -0.05, so the
    # floor of x - 0.5 + 1 is >= 0 and every tap is inside the padded image
    x = np.clip(sx + np.float32(0.5), 0.0, w + 0.999).astype(np.float32)
    y = np.clip(sy + np.float32(0.5), 0.0, h + 0.999).astype(np.float32)
    x0 = x.astype(np.int32)
    y0 = y.astype(np.int32)
    fx = x - x0
    fy = y - y0
    base = y0 * w2 + x0
    acc = np.zeros((3, len(sx)), np.float32)
    wsum = np.zeros(len(sx), np.float32)
    gx = 1.0 - fx
    gy = 1.0 - fy
    for off, wt in ((0, gx * gy), (1, fx * gy), (w2, gx * fy), (w2 + 1, fx * fy)):
        tap = base + off
        wt = wt * (np.take(flat_ow, tap) == obj)
        for c in range(3):
            acc[c] += wt * np.take(planes[c], tap)
        wsum += wt
    acc = acc.T
    none = wsum <= 1e-6
    if none.any():
        xn = np.clip(np.floor(sx[none]).astype(np.int64), 0, w - 1)
        yn = np.clip(np.floor(sy[none]).astype(np.int64), 0, h - 1)
        acc[none] = photo[yn, xn].astype(np.float32)
        wsum[none] = 1.0
    return acc / wsum[:, None]


def render_preview(scene, plan: WarpPlan | None = None) -> PreviewResult:
    """Draw the geometric preview of ``scene`` (its objects at their current transforms).

    ``plan``: a plan of this scene from :func:`core.geometry.warp.plan` (computed when None).
    Returns a :class:`PreviewResult` with the (H, W, 3) uint8 image and the (H, W) bool hole mask.
    """
    if plan is None:
        plan = warp.plan(scene)
    photo = scene.photo
    if plan.shape != photo.shape[:2]:
        raise ValueError(f"warp plan is {plan.shape}, the photo is {photo.shape[:2]}: plan the same scene")
    removed = plan.extras.get("removed")
    if removed is None:
        removed = plan.changed & ~np.isfinite(plan.src_x)
    photo_key = digest(photo)
    if removed.any():
        # the clean plate is the photo outside the removed region, bit for bit (push_pull_fill
        # returns the known pixels unchanged), so it is the picture to draw the objects over
        image = clean_plate(photo, removed, photo_key).copy()
    else:
        image = photo.copy()
    src_x = plan.src_x.reshape(-1)
    shown = np.flatnonzero(np.isfinite(src_x))
    if len(shown):
        owner = plan.extras.get("source_object")
        if owner is None:
            from core.geometry.lift import object_index_map

            owner = object_index_map(scene)
        flat = image.reshape(-1, 3)
        jit = warp.compiled_kernels()
        if jit is not None and photo.dtype == np.uint8:
            ph, ow = _padded(photo, photo_key, owner)
            h, w = owner.shape
            args = (ph.reshape(3, -1), ow.reshape(-1), w, h, shown)
            rest = (src_x, plan.src_y.reshape(-1), plan.target_object.reshape(-1), flat)
            jit.run_all([partial(jit.sample_colors, *args, lo, hi, *rest) for lo, hi in jit.ranges(len(shown))])
        else:
            for a in range(0, len(shown), SAMPLE_CHUNK):
                at = shown[a : a + SAMPLE_CHUNK]
                colors = sample_object_colors(photo, owner, src_x[at], plan.src_y.ravel()[at], plan.target_object.ravel()[at], photo_key)
                flat[at] = np.clip(np.rint(colors), 0, 255).astype(np.uint8)
    return PreviewResult(image=image, hole=plan.hole.copy(), plan=plan)


def clear_cache() -> None:
    """Forget cached clean plates and padded photos."""
    _PLATE_CACHE.clear()
    _PAD_CACHE.clear()
