"""Compiled kernels of the drag path (numba): the warp plan's projection, footprint splatting and
z-buffer (points projected in pieces, then splatted in bands of target rows, each on a thread of
its own), its flows and pinhole pass, the preview's owner-aware bilinear sampling, and the software
3D view's point splat.

Each kernel does the very arithmetic of the vectorised numpy code it replaces
(:mod:`core.geometry.warp`, :mod:`core.preview`), in the same precisions (float64 for the
projection, float32 for the footprints' sub-pixel positions and depths) and visiting candidates in
the same order, so the two paths give the same plans; the numpy path stays as the fallback where
numba is missing (``HANDLES_STUDIO_NO_JIT=1`` forces it) and as the reference the tests compare
against. What changes is the cost: numpy materialises a dozen arrays per candidate, while a kernel
keeps a point's state in registers and writes only the winners (measured in ``make bench``). The
kernels release the interpreter lock, so ``run_all`` runs the pieces on threads at once.

This module imports numba (about half a second); :mod:`core.geometry.warp` imports it lazily on
the first plan, and ``warm_up`` compiles (or loads from numba's on-disk cache) every kernel ahead
of the first drag.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

#: see core.geometry.warp (kept equal by a test)
_FAR = 1e15
_CAP = 3.5  # MAX_FOOTPRINT + 0.5
_SLACK = 0.1  # FOOTPRINT_SLACK


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _project(r, c, zs, a, b, f, cx, cy, near, t, j, both):
    """Point (r, c, depth zs) moved by x -> a x + b and projected; tangent columns ``t`` (12,)
    float32: du+ du- dv+ dv- (X, Y, Z each). Returns tx, ty, tz, ok and writes into ``j`` (12,)
    the image-derivative components (jx, jy, jz for du+, du-, dv+, dv-) in float64; with
    ``both`` False only the plus sides' (all a smooth footprint needs: the minus sides are left
    as they were and do not count towards ``ok``)."""
    z0 = np.float64(zs)
    px = ((c + 0.5 - cx) * z0) / f
    py = ((r + 0.5 - cy) * z0) / f
    x = a[0, 0] * px + a[0, 1] * py + a[0, 2] * z0 + b[0]
    y = a[1, 0] * px + a[1, 1] * py + a[1, 2] * z0 + b[1]
    z = a[2, 0] * px + a[2, 1] * py + a[2, 2] * z0 + b[2]
    front = math.isfinite(z) and z > near and z < _FAR
    if not front:
        for i in range(12):
            j[i] = np.nan
        return np.nan, np.nan, z, False
    inv_z = 1.0 / z
    xn = x * inv_z
    yn = y * inv_z
    fz = f * inv_z
    tx = f * xn + cx
    ty = f * yn + cy
    ok = abs(tx) < _FAR and abs(ty) < _FAR
    for s in range(4):
        if not both and s % 2:
            continue
        t0 = np.float64(t[3 * s])
        t1 = np.float64(t[3 * s + 1])
        t2 = np.float64(t[3 * s + 2])
        dx = a[0, 0] * t0 + a[0, 1] * t1 + a[0, 2] * t2
        dy = a[1, 0] * t0 + a[1, 1] * t1 + a[1, 2] * t2
        dz = a[2, 0] * t0 + a[2, 1] * t1 + a[2, 2] * t2
        jx = fz * (dx - xn * dz)
        jy = fz * (dy - yn * dz)
        j[3 * s] = jx
        j[3 * s + 1] = jy
        j[3 * s + 2] = dz
        ok = ok and abs(jx) < _FAR and abs(jy) < _FAR and abs(dz) < _FAR
    if not ok:
        for i in range(12):
            j[i] = np.nan
        return np.nan, np.nan, z, False
    return tx, ty, z, True


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _splat(tx, ty, tz, jux, juy, juz, jvx, jvy, jvz, box, dims, dst, k, col, row):
    """One footprint part of one point into the z-buffer (the candidates of warp._footprints, kept
    where no static surface hides them, the last of equal depth winning as numpy's assignment),
    those in the target rows ``[r0, r1)`` only. ``box``: (ulo, uhi, vlo, vhi) source pixels;
    ``dims``: (h, w, r0, r1); ``dst``: (limit, zbuf, edited, target, sx, sy), flat."""
    ulo, uhi, vlo, vhi = box
    h, w, r0, r1 = dims
    limit, zbuf, edited, target, sx, sy = dst
    x_min = min(ulo * jux, uhi * jux) + min(vlo * jvx, vhi * jvx)
    x_max = max(ulo * jux, uhi * jux) + max(vlo * jvx, vhi * jvx)
    y_min = min(ulo * juy, uhi * juy) + min(vlo * jvy, vhi * jvy)
    y_max = max(ulo * juy, uhi * juy) + max(vlo * jvy, vhi * jvy)
    x_lo = max(math.ceil(tx + max(x_min, -_CAP) - 0.5), 0.0)
    x_hi = min(math.floor(tx + min(x_max, _CAP) - 0.5), w - 1.0)
    y_lo = max(math.ceil(ty + max(y_min, -_CAP) - 0.5), 0.0)
    y_hi = min(math.floor(ty + min(y_max, _CAP) - 0.5), h - 1.0)
    y_lo = max(y_lo, float(r0))
    y_hi = min(y_hi, r1 - 1.0)
    if x_hi < x_lo or y_hi < y_lo:
        return
    det = jux * jvy - jvx * juy
    if not abs(det) > 1e-12:
        return
    inv_det = 1.0 / det
    i00 = np.float32(jvy * inv_det)
    i01 = np.float32(-jvx * inv_det)
    i10 = np.float32(-juy * inv_det)
    i11 = np.float32(jux * inv_det)
    flo_u, fhi_u = np.float32(ulo), np.float32(uhi)
    flo_v, fhi_v = np.float32(vlo), np.float32(vhi)
    tz32, juz32, jvz32 = np.float32(tz), np.float32(juz), np.float32(jvz)
    for qy in range(int(y_lo), int(y_hi) + 1):
        dyq = np.float32(qy + 0.5 - ty)
        for qx in range(int(x_lo), int(x_hi) + 1):
            dxq = np.float32(qx + 0.5 - tx)
            u = i00 * dxq + i01 * dyq
            v = i10 * dxq + i11 * dyq
            if u >= flo_u and u <= fhi_u and v >= flo_v and v <= fhi_v:
                zc = tz32 + juz32 * u + jvz32 * v
                p = qy * w + qx
                if zc <= limit[p] and zc <= zbuf[p]:
                    zbuf[p] = zc
                    edited[p] = zc
                    target[p] = k
                    sx[p] = np.float32(np.float64(col) + 0.5 + np.float64(u))
                    sy[p] = np.float32(np.float64(row) + 0.5 + np.float64(v))


@njit(cache=True, nogil=True, error_model="numpy")
def project_points(rows, cols, zs, tangents, crease, a, b, f, cx, cy, near, h, lo, hi, tx_out, ty_out, tz_out, ok_out, jp, ylo, yhi):
    """Move and project the points ``[lo, hi)`` of an object (see warp.plan): ``tangents`` (12, N)
    float32 rows du+ (X, Y, Z), du-, dv+, dv-. Writes per point the target position and depth
    (float64), ``ok``, the plus sides' image derivatives ``jp`` (N, 6) float64 (du+ then dv+:
    x, y, z each) and the target rows ``[ylo, yhi]`` its smooth footprint can reach (empty for a
    creased or dropped point). A smooth point's minus tangents are not projected (its footprint
    does not use them), so its ``ok`` is that of the plus sides: it differs from the numpy path's
    only for a transform whose derivatives reach ``_FAR`` on one side alone."""
    t = np.empty(12, np.float32)
    j = np.empty(12)
    shi = 0.5 + _SLACK
    for i in range(lo, hi):
        for q in range(12):
            t[q] = tangents[q, i]
        tx, ty, tz, ok = _project(rows[i], cols[i], zs[i], a, b, f, cx, cy, near, t, j, crease[i])
        tx_out[i] = tx
        ty_out[i] = ty
        tz_out[i] = tz
        ok_out[i] = ok
        jp[i, 0] = j[0]
        jp[i, 1] = j[1]
        jp[i, 2] = j[2]
        jp[i, 3] = j[6]
        jp[i, 4] = j[7]
        jp[i, 5] = j[8]
        if ok and not crease[i]:
            y_min = min(-shi * j[1], shi * j[1]) + min(-shi * j[7], shi * j[7])
            y_max = max(-shi * j[1], shi * j[1]) + max(-shi * j[7], shi * j[7])
            ylo[i] = int(max(math.ceil(ty + max(y_min, -_CAP) - 0.5), 0.0))
            yhi[i] = int(min(math.floor(ty + min(y_max, _CAP) - 0.5), h - 1.0))
        else:
            ylo[i] = 1
            yhi[i] = 0


@njit(cache=True, nogil=True, error_model="numpy")
def splat_band(rows, cols, zs, tangents, crease, a, b, f, cx, cy, near, h, w, r0, r1, tx, ty, tz, ok, jp, ylo, yhi, limit, zbuf, edited, target, sx, sy, k):
    """Splat every point of object ``k`` projected by :func:`project_points` into the target rows
    ``[r0, r1)``: the smooth footprints first, then the four quadrants of the creased points, each
    over all points in order, so that every pixel sees its candidates in the numpy path's order
    whatever the bands; bands do not share pixels, so they can run on threads at once. Writes the
    z-buffer ``zbuf`` and the flat (H*W) ``edited``/``target``/``sx``/``sy`` where ``k`` wins."""
    shi = 0.5 + _SLACK
    slo = -_SLACK
    smooth = (-shi, shi, -shi, shi)
    dims = (h, w, r0, r1)
    dst = (limit, zbuf, edited, target, sx, sy)
    for i in range(len(rows)):  # part 0: smooth footprints, the plus tangents over [-shi, shi]^2
        if ylo[i] >= r1 or yhi[i] < r0 or yhi[i] < ylo[i]:
            continue
        _splat(tx[i], ty[i], tz[i], jp[i, 0], jp[i, 1], jp[i, 2], jp[i, 3], jp[i, 4], jp[i, 5], smooth, dims, dst, k, cols[i], rows[i])
    t = np.empty(12, np.float32)
    j = np.empty(12)
    for su in range(2):  # parts 1-4: the quadrants of creased points, each with its side's tangents
        ulo, uhi = (slo, shi) if su == 0 else (-shi, -slo)
        for sv in range(2):
            vlo, vhi = (slo, shi) if sv == 0 else (-shi, -slo)
            box = (ulo, uhi, vlo, vhi)
            for i in range(len(rows)):
                if not (crease[i] and ok[i]) or ty[i] < r0 - _CAP - 1.0 or ty[i] > r1 + _CAP + 1.0:
                    continue
                for q in range(12):
                    t[q] = tangents[q, i]
                _project(rows[i], cols[i], zs[i], a, b, f, cx, cy, near, t, j, True)
                ju = 3 * su
                jv = 6 + 3 * sv
                _splat(tx[i], ty[i], tz[i], j[ju], j[ju + 1], j[ju + 2], j[jv], j[jv + 1], j[jv + 2], box, dims, dst, k, cols[i], rows[i])


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tangent_pair(depth, owner, f, cx, cy, r, c, dr, dc, p0, p1, p2, slope, out, o):
    """:func:`core.geometry.warp._tangents` at one point (camera-frame position ``p0, p1, p2``,
    float64) along rows (``dr`` 1) or columns (``dc`` 1): the plus and minus tangents into
    ``out[o:o + 6]``."""
    h, w = owner.shape
    step = p2 / f
    lim = slope * step
    f0 = f1 = f2 = b0 = b1 = b2 = 0.0
    ok_f = ok_b = False
    rr, cc = r + dr, c + dc
    if rr < h and cc < w and owner[rr, cc]:
        z = np.float64(depth[rr, cc])
        f0 = (cc + 0.5 - cx) * z / f - p0  # np.diff's q - p
        f1 = (rr + 0.5 - cy) * z / f - p1
        f2 = z - p2
        ok_f = math.sqrt(f0 * f0 + f1 * f1 + f2 * f2) <= lim
    rr, cc = r - dr, c - dc
    if rr >= 0 and cc >= 0 and owner[rr, cc]:
        z = np.float64(depth[rr, cc])
        b0 = p0 - (cc + 0.5 - cx) * z / f  # p - q
        b1 = p1 - (rr + 0.5 - cy) * z / f
        b2 = p2 - z
        ok_b = math.sqrt(b0 * b0 + b1 * b1 + b2 * b2) <= lim
    # neither side: a fronto-parallel pixel step (rows -> Y, columns -> X)
    x0, x1 = (0.0, step) if dr else (step, 0.0)
    if ok_f:
        out[o], out[o + 1], out[o + 2] = f0, f1, f2
    elif ok_b:
        out[o], out[o + 1], out[o + 2] = b0, b1, b2
    else:
        out[o], out[o + 1], out[o + 2] = x0, x1, 0.0
    if ok_b:
        out[o + 3], out[o + 4], out[o + 5] = b0, b1, b2
    elif ok_f:
        out[o + 3], out[o + 4], out[o + 5] = f0, f1, f2
    else:
        out[o + 3], out[o + 4], out[o + 5] = x0, x1, 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def lift_tangents(rows, cols, depth, owner, f, cx, cy, slope, tol, tangents, crease):
    """The lift of :func:`core.geometry.warp._object_state` for the points ``rows``, ``cols`` of
    the object whose pixels ``owner`` marks: tangents (12, n) float32 (du+ du- dv+ dv-) and
    ``crease`` (the plus and minus tangents differ by more than ``tol`` of their length); the
    numpy path's float64 arithmetic, point by point."""
    t = np.empty(12)
    for i in range(len(rows)):
        r = rows[i]
        c = cols[i]
        z = np.float64(depth[r, c])
        p0 = (c + 0.5 - cx) * z / f
        p1 = (r + 0.5 - cy) * z / f
        _tangent_pair(depth, owner, f, cx, cy, r, c, 0, 1, p0, p1, z, slope, t, 0)
        _tangent_pair(depth, owner, f, cx, cy, r, c, 1, 0, p0, p1, z, slope, t, 6)
        bent = False
        for o in (0, 6):
            dx = t[o] - t[o + 3]
            dy = t[o + 1] - t[o + 4]
            dz = t[o + 2] - t[o + 5]
            diff = math.sqrt(dx * dx + dy * dy + dz * dz)
            a = math.sqrt(t[o] * t[o] + t[o + 1] * t[o + 1] + t[o + 2] * t[o + 2])
            b = math.sqrt(t[o + 3] * t[o + 3] + t[o + 4] * t[o + 4] + t[o + 5] * t[o + 5])
            bent = bent or diff > tol * max(a, b)
        crease[i] = bent
        for k in range(12):
            tangents[k, i] = np.float32(t[k])


@njit(cache=True, nogil=True, error_model="numpy")
def jacobians(rows, cols, zs, tangents, a, b, f, cx, cy, near, out):
    """(N, 2, 2) float32 d(x, y)_target / d(col, row)_source of every point, both sides averaged
    (warp._Moved.jacobian), nan where the point is dropped."""
    t = np.empty(12, np.float32)
    j = np.empty(12)
    for i in range(len(rows)):
        for q in range(12):
            t[q] = tangents[q, i]
        _project(rows[i], cols[i], zs[i], a, b, f, cx, cy, near, t, j, True)
        out[i, 0, 0] = np.float32(0.5 * (j[0] + j[3]))
        out[i, 0, 1] = np.float32(0.5 * (j[6] + j[9]))
        out[i, 1, 0] = np.float32(0.5 * (j[1] + j[4]))
        out[i, 1, 1] = np.float32(0.5 * (j[7] + j[10]))


@njit(cache=True, nogil=True, error_model="numpy")
def close_pinholes(shows, target, depth, sx, sy, limit):
    """warp._close_pinholes (all (H, W), in place): the horizontal pass over the bounding box of
    ``shows``, then the vertical one. Within a pass no filled pixel is another's neighbour (those
    must show a moved object before it), so pixel order does not matter."""
    h, w = shows.shape
    r0, r1, c0, c1 = h, -1, w, -1
    for i in range(h):
        for j in range(w):
            if shows[i, j]:
                r0 = min(r0, i)
                r1 = max(r1, i)
                c0 = min(c0, j)
                c1 = max(c1, j)
    if r1 - r0 + 1 < 3 or c1 - c0 + 1 < 3:
        return
    half = np.float32(0.5)
    rel = np.float32(0.05)
    for vertical in range(2):
        di, dj = (1, 0) if vertical else (0, 1)
        for i in range(r0 + 1, r1):
            for j in range(c0 + 1, c1):
                if shows[i, j]:
                    continue
                ai, aj, bi, bj = i - di, j - dj, i + di, j + dj
                if not (shows[ai, aj] and shows[bi, bj] and target[ai, aj] == target[bi, bj]):
                    continue
                za, zb = depth[ai, aj], depth[bi, bj]
                z = half * (za + zb)
                if not (abs(za - zb) <= rel * z and z <= limit[i, j]):
                    continue
                depth[i, j] = z
                target[i, j] = target[ai, aj]
                sx[i, j] = half * (sx[ai, aj] + sx[bi, bj])
                sy[i, j] = half * (sy[ai, aj] + sy[bi, bj])
                shows[i, j] = True


@njit(cache=True, nogil=True, error_model="numpy")
def object_flow(k, tx, ty, tz, ok, h, w, target, zbuf, tol, lo, hi, tgt_x, tgt_y, tgt_z, vis):
    """Per point ``[lo, hi)`` of moved object ``k``: its target position (nan off-screen), depth
    (nan behind the camera) and whether it is the surface seen there (warp.plan's flows)."""
    ftol = np.float32(1.0 + tol)
    for i in range(lo, hi):
        x, y = tx[i], ty[i]
        on = ok[i] and x >= 0.0 and x < w and y >= 0.0 and y < h
        tgt_x[i] = np.float32(x) if on else np.nan
        tgt_y[i] = np.float32(y) if on else np.nan
        tgt_z[i] = np.float32(tz[i]) if ok[i] else np.nan
        seen = False
        if on:
            p = int(math.floor(y)) * w + int(math.floor(x))
            seen = target[p] == k and tz[i] <= np.float64(zbuf[p] * ftol)
        vis[i] = seen


@njit(cache=True, nogil=True, error_model="numpy")
def sample_colors(planes, owner_pad, w, h, shown, lo, hi, sx, sy, obj, out):
    """Owner-aware bilinear colours of the flat pixels ``shown[lo:hi]`` (preview.sample_object_colors:
    ``planes`` (3, (H+2)(W+2)) float32 padded photo, ``owner_pad`` its padded owner map), rounded
    and clipped into ``out`` (H*W, 3) uint8."""
    w2 = w + 2
    for n in range(lo, hi):
        p = shown[n]
        x = np.float32(min(max(sx[p] + np.float32(0.5), 0.0), w + 0.999))
        y = np.float32(min(max(sy[p] + np.float32(0.5), 0.0), h + 0.999))
        x0 = int(x)
        y0 = int(y)
        fx = x - np.float32(x0)
        fy = y - np.float32(y0)
        gx = np.float32(1.0) - fx
        gy = np.float32(1.0) - fy
        base = y0 * w2 + x0
        o = obj[p]
        c0 = np.float32(0.0)
        c1 = np.float32(0.0)
        c2 = np.float32(0.0)
        ws = np.float32(0.0)
        # the four taps in numpy's order, each dropped when another owner's
        q = base
        wt = gx * gy if owner_pad[q] == o else np.float32(0.0)
        c0 += wt * planes[0, q]
        c1 += wt * planes[1, q]
        c2 += wt * planes[2, q]
        ws += wt
        q = base + 1
        wt = fx * gy if owner_pad[q] == o else np.float32(0.0)
        c0 += wt * planes[0, q]
        c1 += wt * planes[1, q]
        c2 += wt * planes[2, q]
        ws += wt
        q = base + w2
        wt = gx * fy if owner_pad[q] == o else np.float32(0.0)
        c0 += wt * planes[0, q]
        c1 += wt * planes[1, q]
        c2 += wt * planes[2, q]
        ws += wt
        q = base + w2 + 1
        wt = fx * fy if owner_pad[q] == o else np.float32(0.0)
        c0 += wt * planes[0, q]
        c1 += wt * planes[1, q]
        c2 += wt * planes[2, q]
        ws += wt
        if ws <= 1e-6:
            xn = min(max(int(math.floor(sx[p])), 0), w - 1)
            yn = min(max(int(math.floor(sy[p])), 0), h - 1)
            q = (yn + 1) * w2 + xn + 1  # the photo's own pixel (integers in float32: exact)
            for ch in range(3):
                out[p, ch] = np.uint8(planes[ch, q])
            continue
        out[p, 0] = np.uint8(min(max(np.rint(c0 / ws), 0.0), 255.0))
        out[p, 1] = np.uint8(min(max(np.rint(c1 / ws), 0.0), 255.0))
        out[p, 2] = np.uint8(min(max(np.rint(c2 / ws), 0.0), 255.0))


@njit(cache=True, nogil=True, error_model="numpy")
def splat_points(pts, cols, eye, rot, f, cx, cy, r, canvas, zbuf):
    """Coloured world points (N, 3) float64 / (N, 3) float32 drawn into ``canvas`` (H, W, 3) uint8
    as ``r`` x ``r`` squares seen by a pinhole camera at ``eye`` with world -> view rotation
    ``rot`` (the software 3D view, editor/soft_view.py): the nearest point wins each pixel, the
    later of equal depth, as a far-first painter would draw them. ``zbuf`` (H, W) float64 +inf."""
    h, w = zbuf.shape
    for i in range(pts.shape[0]):
        px, py, pz = pts[i, 0] - eye[0], pts[i, 1] - eye[1], pts[i, 2] - eye[2]
        vx = px * rot[0, 0] + py * rot[0, 1] + pz * rot[0, 2]
        vy = px * rot[1, 0] + py * rot[1, 1] + pz * rot[1, 2]
        vz = px * rot[2, 0] + py * rot[2, 1] + pz * rot[2, 2]
        if not vz > 1e-6:
            continue
        x = vx * f / vz + cx
        y = vy * f / vz + cy
        if not (math.isfinite(x) and math.isfinite(y)) or x < -r or y < -r or x >= w + 1 or y >= h + 1:
            continue
        xi = int(math.floor(x))
        yi = int(math.floor(y))
        c0 = np.uint8(min(max(cols[i, 0], 0.0), 255.0))
        c1 = np.uint8(min(max(cols[i, 1], 0.0), 255.0))
        c2 = np.uint8(min(max(cols[i, 2], 0.0), 255.0))
        for dy in range(r):
            yy = yi + dy
            if yy < 0 or yy >= h:
                continue
            for dx in range(r):
                xx = xi + dx
                if xx < 0 or xx >= w:
                    continue
                if vz <= zbuf[yy, xx]:
                    zbuf[yy, xx] = vz
                    canvas[yy, xx, 0] = c0
                    canvas[yy, xx, 1] = c1
                    canvas[yy, xx, 2] = c2


@njit(cache=True, nogil=True, error_model="numpy")
def pp_level(c, w, col, wt):
    """One push-pull level (preview.push_pull_fill): ``col`` = c / w where w > 0 (else 0),
    ``wt`` = min(w, 1); (H, W, C) / (H, W) float32."""
    eps = np.float32(1e-12)
    one = np.float32(1.0)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            v = w[i, j]
            d = max(v, eps)
            for k in range(c.shape[2]):
                col[i, j, k] = c[i, j, k] / d if v > 0 else np.float32(0.0)
            wt[i, j] = min(v, one)


@njit(cache=True, nogil=True, error_model="numpy")
def pp_down2(a, out):
    """Sums of 2x2 blocks of (H, W, C) float32 ``a`` (zeros past odd sides) into ``out``."""
    h, w = a.shape[0], a.shape[1]
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            for k in range(a.shape[2]):
                a00 = a[2 * i, 2 * j, k]
                a10 = a[2 * i + 1, 2 * j, k] if 2 * i + 1 < h else np.float32(0.0)
                a01 = a[2 * i, 2 * j + 1, k] if 2 * j + 1 < w else np.float32(0.0)
                a11 = a[2 * i + 1, 2 * j + 1, k] if (2 * i + 1 < h and 2 * j + 1 < w) else np.float32(0.0)
                out[i, j, k] = ((a00 + a10) + a01) + a11


@njit(cache=True, nogil=True, error_model="numpy")
def pp_up_blend(coarse, col, wt, tmp, out):
    """``out`` = wt * col + (1 - wt) * up2(coarse) (preview._up2: pixel repeat, then [1 2 1] / 4
    each way with clamped ends, along an axis only when it is longer than 2); all float32."""
    h, w, nc = col.shape
    q, hf = np.float32(0.25), np.float32(0.5)
    one = np.float32(1.0)
    for i in range(h):
        i0, i1 = max(i - 1, 0), min(i + 1, h - 1)
        for j in range(w):
            for k in range(nc):
                u = coarse[i // 2, j // 2, k]
                if h > 2:
                    u = (q * coarse[i0 // 2, j // 2, k] + hf * u) + q * coarse[i1 // 2, j // 2, k]
                tmp[i, j, k] = u
    for i in range(h):
        for j in range(w):
            j0, j1 = max(j - 1, 0), min(j + 1, w - 1)
            t = wt[i, j]
            for k in range(nc):
                u = tmp[i, j, k]
                if w > 2:
                    u = (q * tmp[i, j0, k] + hf * u) + q * tmp[i, j1, k]
                out[i, j, k] = t * col[i, j, k] + (one - t) * u


#: threads a drag event's kernels use (the kernels release the interpreter lock); on this
#: machine class two cores: ``HANDLES_STUDIO_DRAG_THREADS`` overrides
THREADS = max(1, min(4, int(os.environ.get("HANDLES_STUDIO_DRAG_THREADS", 0) or (os.cpu_count() or 1))))
#: below this many points (or pixels) one thread does it: handing work over costs ~0.1 ms
MIN_SPLIT = 16384
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0  # a forked child has the pool object but not its threads: it makes its own
_POOL_LOCK = threading.Lock()


def ranges(n: int, parts: int | None = None) -> list[tuple[int, int]]:
    """``[0, n)`` in up to ``parts`` (default THREADS) contiguous pieces, one when ``n`` is small."""
    parts = 1 if n < MIN_SPLIT else (parts or THREADS)
    edges = [n * i // parts for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts) if edges[i + 1] > edges[i]] or [(0, n)]


def run_all(calls) -> None:
    """Run the zero-argument ``calls`` at once (the first in this thread), return when all have."""
    global _POOL, _POOL_PID
    if len(calls) == 1:
        calls[0]()
        return
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL = ThreadPoolExecutor(max_workers=max(1, THREADS - 1), thread_name_prefix="drag-kernel")
            _POOL_PID = os.getpid()
        pool = _POOL
    futures = [pool.submit(c) for c in calls[1:]]
    try:
        calls[0]()
    finally:
        for f in futures:
            f.result()


def bands(ylo: np.ndarray, yhi: np.ndarray, h: int, parts: int | None = None) -> list[tuple[int, int]]:
    """Target row bands ``[r0, r1)`` covering ``[0, h)`` with about as many smooth footprints
    starting in each (the splat's work), one band for a small object."""
    n = len(ylo)
    parts = 1 if n < MIN_SPLIT else (parts or THREADS)
    if parts == 1:
        return [(0, h)]
    valid = yhi >= ylo
    cum = np.cumsum(np.bincount(ylo[valid], minlength=h)[:h])
    total = int(cum[-1]) if len(cum) else 0
    cuts = [0] + [int(np.searchsorted(cum, total * i / parts)) + 1 for i in range(1, parts)] + [h]
    cuts = sorted(min(h, max(0, c)) for c in cuts)
    return [(cuts[i], cuts[i + 1]) for i in range(parts) if cuts[i + 1] > cuts[i]]


def warm_up() -> None:
    """Compile (or load from the cache) every kernel on a tiny input."""
    n, h, w = 2, 4, 4
    rows = np.array([1, 2], np.int32)
    cols = np.array([1, 2], np.int32)
    zs = np.ones(n, np.float32)
    tangents = np.zeros((12, n), np.float32)
    tangents[0::3] = 0.01
    crease = np.array([False, True])
    a = np.eye(3)
    b = np.zeros(3)
    limit = np.full(h * w, 10.0, np.float32)
    limit.setflags(write=False)  # as warp's cached limits: numba compiles per read-only flag
    zbuf = np.full(h * w, np.inf, np.float32)
    edited = np.ones(h * w, np.float32)
    target = np.full(h * w, -1, np.int16)
    sx = np.full(h * w, np.nan, np.float32)
    sy = sx.copy()
    tx, ty, tz = np.empty(n), np.empty(n), np.empty(n)
    ok = np.empty(n, np.bool_)
    jp = np.empty((n, 6))
    ylo, yhi = np.empty(n, np.int32), np.empty(n, np.int32)
    project_points(rows, cols, zs, tangents, crease, a, b, 4.0, 2.0, 2.0, 1e-4, h, 0, n, tx, ty, tz, ok, jp, ylo, yhi)
    splat_band(rows, cols, zs, tangents, crease, a, b, 4.0, 2.0, 2.0, 1e-4, h, w, 0, h, tx, ty, tz, ok, jp, ylo, yhi, limit, zbuf, edited, target, sx, sy, 0)
    jacobians(rows, cols, zs, tangents, a, b, 4.0, 2.0, 2.0, 1e-4, np.empty((n, 2, 2), np.float32))
    owner = np.zeros((h, w), np.bool_)
    owner[rows, cols] = True
    for dtype in (np.float32, np.float64):  # a depth map as loaded (float32) or computed (float64)
        for read_only in (False, True):
            depth = np.ones((h, w), dtype)
            depth.setflags(write=not read_only)
            lift_tangents(rows, cols, depth, owner, 4.0, 2.0, 2.0, 10.0, 0.1, tangents.copy(), crease.copy())
    f32 = np.empty(n, np.float32)
    object_flow(0, tx, ty, tz, ok, h, w, target, zbuf, 0.02, 0, n, f32, f32.copy(), f32.copy(), np.empty(n, np.bool_))
    close_pinholes(np.ones((h, w), np.bool_), target.reshape(h, w), edited.reshape(h, w), sx.reshape(h, w), sy.reshape(h, w), limit.reshape(h, w))
    planes = np.zeros((3, (h + 2) * (w + 2)), np.float32)
    owner = np.zeros((h + 2) * (w + 2), np.int16)
    canvas = np.zeros((h, w, 3), np.uint8)
    splat_points(np.ones((n, 3)), np.ones((n, 3), np.float32), np.zeros(3), np.eye(3), 2.0, 2.0, 2.0, 2, canvas, np.full((h, w), np.inf))
    c3 = np.ones((h, w, 3), np.float32)
    w1 = np.ones((h, w, 1), np.float32)
    pp_level(c3, w1[..., 0], c3.copy(), w1[..., 0].copy())
    pp_down2(c3, np.empty((h // 2, w // 2, 3), np.float32))
    pp_up_blend(c3[::2, ::2].copy(), c3, w1[..., 0].copy(), c3.copy(), c3.copy())
    out = np.zeros((h * w, 3), np.uint8)
    sample_colors(planes, owner, w, h, np.array([5], np.int64), 0, 1, sx, sy, target, out)
