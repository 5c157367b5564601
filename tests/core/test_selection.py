"""core.selection: geometry of brush/polygon/rect masks, the depth-aware wand, mask operations.

Expected values come from independent formulas (capsule area, shoelace area, brute-force
point-in-polygon and graph search written here), never from the code under test."""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np
import pytest

from core import selection as sel
from core.errors import InputError


# ------------------------------------------------------------------ brush
@pytest.mark.parametrize("r,length,angle", [(10.0, 100.0, 0.0), (6.5, 140.0, 0.7), (20.0, 50.0, 2.0)])
def test_brush_capsule_area(r, length, angle):
    cx, cy = 128.3, 121.7
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    m = sel.brush_stroke([(cx - dx, cy - dy), (cx + dx, cy + dy)], r, (256, 256))
    expected = math.pi * r * r + 2 * r * length
    perimeter = 2 * math.pi * r + 2 * length
    # lattice-point count error of a convex region is bounded by a fraction of its perimeter
    assert abs(m.sum() - expected) < 0.25 * perimeter
    assert m.dtype == bool and m.shape == (256, 256)


def test_brush_pixels_by_distance_to_polyline():
    pts = [(10.2, 20.0), (60.0, 22.5), (60.0, 70.0)]
    r = 7.0
    m = sel.brush_stroke(pts, r, (90, 80))
    ii, jj = np.mgrid[0:90, 0:80]
    px, py = jj + 0.5, ii + 0.5

    def seg_dist(a, b):
        a, b = np.array(a), np.array(b)
        d = b - a
        t = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / (d @ d), 0, 1)
        return np.hypot(px - a[0] - t * d[0], py - a[1] - t * d[1])

    dist = np.minimum(seg_dist(pts[0], pts[1]), seg_dist(pts[1], pts[2]))
    # away from the exact boundary the classification must agree
    assert m[dist < r - 1e-6].all()
    assert not m[dist > r + 1e-6].any()


def test_brush_single_point_is_disk_and_clips_at_border():
    m = sel.brush_stroke([(0.0, 0.0)], 10.0, (50, 50))
    # a quarter disk of radius 10 about the image corner
    assert abs(m.sum() - math.pi * 100 / 4) < 0.25 * (2 * math.pi * 10 / 4 + 20)
    assert m[0, 0] and not m[12, 12]
    assert not sel.brush_stroke([(-100, -100)], 5, (20, 20)).any()


def test_paint_segment_erases():
    m = np.ones((40, 40), bool)
    sel.paint_segment(m, (20, 20), (20, 20), 5, value=False)
    assert not m[20, 20] and m[0, 0]
    assert (~m).sum() == pytest.approx(math.pi * 25, abs=10)


# ------------------------------------------------------------------ polygon / rect
def _shoelace(pts):
    x, y = np.array(pts, float).T
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_polygon_area_matches_shoelace():
    pts = [(12.3, 8.1), (180.5, 30.2), (150.0, 170.9), (60.2, 140.4), (20.0, 90.0)]
    m = sel.polygon_mask(pts, (200, 200))
    boundary = sum(math.dist(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts)))
    assert abs(m.sum() - _shoelace(pts)) <= boundary


def _brute_inside_evenodd(pts, px, py):
    inside = np.zeros(px.shape, bool)
    n = len(pts)
    for k in range(n):
        (xa, ya), (xb, yb) = pts[k], pts[(k + 1) % n]
        cond = (ya > py) != (yb > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = xa + (py - ya) * (xb - xa) / (yb - ya)
        inside ^= cond & (px < xcross)
    return inside


def test_polygon_matches_brute_force_even_odd_and_nonzero():
    # a pentagram: the centre is enclosed twice (out for even-odd, in for nonzero)
    c, R = (50.0, 50.0), 45.0
    pts = [(c[0] + R * math.sin(k * 4 * math.pi / 5), c[1] - R * math.cos(k * 4 * math.pi / 5)) for k in range(5)]
    ii, jj = np.mgrid[0:100, 0:100]
    expected = _brute_inside_evenodd(pts, jj + 0.5, ii + 0.5)
    m = sel.polygon_mask(pts, (100, 100), rule="evenodd")
    assert (m != expected).sum() <= 2  # only centres lying exactly on an edge may differ
    assert not m[50, 50]
    nz = sel.polygon_mask(pts, (100, 100), rule="nonzero")
    assert nz[50, 50]
    assert (nz & ~m).sum() > 100  # the inner pentagon
    assert not (m & ~nz).any()


def test_polygon_clipped_and_orientation_independent():
    pts = [(-20, -20), (50, -20), (50, 30), (-20, 30)]
    m = sel.polygon_mask(pts, (40, 40))
    assert m[:30, :50].all() and not m[30:].any()
    assert (sel.polygon_mask(pts[::-1], (40, 40)) == m).all()


def test_rect_mask_any_corner_order():
    m = sel.rect_mask(30.2, 40.0, 10.0, 5.6, (60, 50))
    # centres j+0.5 in [10, 30.2] -> j = 10..29 ; i+0.5 in [5.6, 40] -> i = 6..39
    assert m.sum() == 20 * 34
    assert m[6, 10] and m[39, 29] and not m[5, 10] and not m[6, 30] and not m[40, 10]


# ------------------------------------------------------------------ wand
def _two_regions():
    """Left half and right half both grey (same colour), at depths 2 and 4; a blue block on the left."""
    h, w = 64, 96
    photo = np.full((h, w, 3), 128, np.uint8)
    photo[20:40, 10:30] = (40, 40, 200)
    depth = np.full((h, w), 2.0, np.float32)
    depth[:, 48:] = 4.0
    return photo, depth


def test_wand_depth_separates_same_colour_regions():
    photo, depth = _two_regions()
    m = sel.magic_wand(photo, depth, (5.5, 5.5), color_tol=10, depth_tol=0.1)
    expected = np.zeros(depth.shape, bool)
    expected[:, :48] = True
    expected[20:40, 10:30] = False
    assert (m == expected).all()
    # without depth the same colour on the right joins the selection
    m2 = sel.magic_wand(photo, None, (5.5, 5.5), color_tol=10)
    assert m2[:, 48:].all()


def test_wand_colour_tolerance():
    h, w = 20, 60
    photo = np.zeros((h, w, 3), np.uint8)
    # columns 0..19 value 100, 20..39 value 120 (distance 20*sqrt(3) ~ 34.6), 40..59 value 160
    photo[:, :20] = 100
    photo[:, 20:40] = 120
    photo[:, 40:] = 160
    depth = np.ones((h, w), np.float32)
    assert sel.magic_wand(photo, depth, (2, 2), color_tol=34.0).sum() == 20 * 20
    assert sel.magic_wand(photo, depth, (2, 2), color_tol=35.0).sum() == 40 * 20
    # tolerance is to the seed colour, not chained: 160 is 60*sqrt(3) ~ 103.9 from 100
    assert sel.magic_wand(photo, depth, (2, 2), color_tol=103.0).sum() == 40 * 20
    assert sel.magic_wand(photo, depth, (2, 2), color_tol=104.0).sum() == 60 * 20


def test_wand_connectivity():
    photo = np.zeros((10, 10, 3), np.uint8)
    photo[np.arange(10), np.arange(10)] = 255  # a diagonal line
    m8 = sel.magic_wand(photo, None, (0.5, 0.5), color_tol=5, connectivity=8)
    m4 = sel.magic_wand(photo, None, (0.5, 0.5), color_tol=5, connectivity=4)
    assert m8.sum() == 10 and m4.sum() == 1


def _reference_component(link_h, link_v, seed):
    """Plain BFS over a 4-neighbour graph (independent of the code under test)."""
    h, w = link_v.shape[0] + 1, link_h.shape[1] + 1
    seen = np.zeros((h, w), bool)
    seen[seed] = True
    q = deque([seed])
    while q:
        i, j = q.popleft()
        for ni, nj, ok in (
            (i, j + 1, j + 1 < w and link_h[i, j]),
            (i, j - 1, j >= 1 and link_h[i, j - 1]),
            (i + 1, j, i + 1 < h and link_v[i, j]),
            (i - 1, j, i >= 1 and link_v[i - 1, j]),
        ):
            if ok and not seen[ni, nj]:
                seen[ni, nj] = True
                q.append((ni, nj))
    return seen


def test_wand_edge_aware_follows_smooth_depth_and_stops_at_steps():
    rng = np.random.default_rng(3)
    h, w = 24, 30
    photo = np.full((h, w, 3), 90, np.uint8)
    # a ramp: depth grows 1 % per column (smooth surface), with a 30 % step on a wall segment
    depth = (2.0 * 1.01 ** np.arange(w, dtype=np.float32))[None, :].repeat(h, 0)
    depth[:, 15:] *= 1.3
    depth[:6, 15:] = depth[:6, 14:15] * 1.01 ** np.arange(1, w - 14)  # a smooth bridge at the top rows
    depth += rng.normal(0, 0.001, depth.shape).astype(np.float32)
    tol = 0.03
    got4 = sel.magic_wand(photo, depth, (1, 12), color_tol=None, depth_tol=None, edge_depth_tol=tol, connectivity=4)
    rel = lambda a, b: np.abs(a - b) <= tol * np.minimum(a, b)  # noqa: E731
    link_h = rel(depth[:, :-1], depth[:, 1:])
    link_v = rel(depth[:-1, :], depth[1:, :])
    expected = _reference_component(link_h, link_v, (12, 1))
    assert (got4 == expected).all()
    # the ramp, and the top rows right of the step through the bridge; not the stepped block below it
    assert got4[12, 14] and got4[0, 29] and not got4[12, 29]
    # remove the bridge: the seed-relative wand would need tol > 14 %, the edge wand stops at the step
    depth2 = depth.copy()
    depth2[:6, 15:] = depth[6:12, 15:]
    got = sel.magic_wand(photo, depth2, (1, 12), color_tol=None, depth_tol=None, edge_depth_tol=tol, connectivity=8)
    assert got[:, :15].all() and not got[:, 15:].any()
    seed_only = sel.magic_wand(photo, depth2, (1, 12), color_tol=None, depth_tol=0.05)
    assert not seed_only[:, 14].any()  # 14 % deeper than the seed: the seed criterion cannot follow the ramp


def test_wand_fill_holes():
    photo = np.full((30, 30, 3), 50, np.uint8)
    photo[10:13, 10:13] = 250  # a 9-pixel speck
    m = sel.magic_wand(photo, None, (1, 1), color_tol=10)
    assert not m[11, 11]
    assert sel.magic_wand(photo, None, (1, 1), color_tol=10, fill_holes=10)[11, 11]
    assert not sel.magic_wand(photo, None, (1, 1), color_tol=10, fill_holes=9)[11, 11]


def test_wand_speed_at_512():
    import time

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    depth = rng.uniform(1, 2, (512, 512)).astype(np.float32)
    sel.magic_wand(photo, depth, (100, 100), edge_depth_tol=0.03)
    t = time.perf_counter()
    sel.magic_wand(photo, depth, (100, 100), color_tol=300, depth_tol=1.0, edge_depth_tol=0.5, connectivity=8)
    # generous bound for a shared 2-core machine; measured ~35 ms
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(seed=(100, 5)), "outside"),
        (dict(seed=(-1, 5)), "outside"),
        (dict(seed=(5, float("nan"))), "outside"),
        (dict(connectivity=6), "connectivity"),
        (dict(color_tol=-1), "color_tol"),
    ],
)
def test_wand_errors(kwargs, msg):
    photo, depth = _two_regions()
    args = dict(photo=photo, depth=depth, seed=(5, 5))
    args.update(kwargs)
    with pytest.raises(sel.SelectionError, match=msg) as e:
        sel.magic_wand(**args)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, InputError)


def test_wand_shape_mismatch_and_bad_seed_depth():
    photo, depth = _two_regions()
    with pytest.raises(sel.SelectionError, match="does not match"):
        sel.magic_wand(photo, depth[:10], (5, 5))
    depth = depth.copy()
    depth[5, 5] = np.nan
    with pytest.raises(sel.SelectionError, match="depth at the wand seed"):
        sel.magic_wand(photo, depth, (5.5, 5.5))


# ------------------------------------------------------------------ feather / grow / shrink / combine / clean
def _disk(h, w, cx, cy, r):
    ii, jj = np.mgrid[0:h, 0:w]
    return (jj + 0.5 - cx) ** 2 + (ii + 0.5 - cy) ** 2 <= r * r


def test_feather_range_and_monotonic():
    m = _disk(80, 80, 40, 40, 20)
    a = sel.feather(m, 6)
    assert a.dtype == np.float32 and a.min() == 0.0 and a.max() == 1.0
    # along a ray from the centre outward alpha never increases
    row = a[40, 40:]
    assert np.all(np.diff(row) <= 1e-6)
    assert a[40, 40] == 1.0 and a[40, 79] == 0.0
    assert 0.3 < a[40, 59] < 0.7  # the edge pixel
    assert (a[m] >= 0.5).all() and (a[~m] <= 0.5).all()
    assert (sel.feather(m, 0) == m).all()


def test_grow_shrink_disk_radius():
    m = _disk(100, 100, 50, 50, 20)
    g = sel.grow(m, 5)
    # growing a disk by a disk gives the disk of radius 25 (up to boundary pixels)
    exp = _disk(100, 100, 50, 50, 25)
    assert (g ^ exp).sum() < 2 * math.pi * 25 * 0.3
    s = sel.shrink(m, 5)
    exp_s = _disk(100, 100, 50, 50, 15)
    assert (s ^ exp_s).sum() < 2 * math.pi * 15 * 0.3
    assert (s <= m).all() and (m <= g).all()


def test_grow_then_shrink_convex_returns_it():
    rect = np.zeros((60, 70), bool)
    rect[10:40, 15:55] = True
    assert (sel.shrink(sel.grow(rect, 4), 4) == rect).all()
    disk = _disk(90, 90, 45, 45, 25)
    back = sel.shrink(sel.grow(disk, 6), 6)
    assert (back >= disk).all()
    assert (back ^ disk).sum() <= 8  # a digital disk is convex up to a few lattice points
    tri = sel.polygon_mask([(10, 10), (80, 20), (30, 70)], (90, 90))
    back = sel.shrink(sel.grow(tri, 3), 3)
    assert (back >= tri).all() and (back ^ tri).sum() <= 0.05 * tri.sum()


def test_shrink_keeps_border_contact():
    m = np.zeros((20, 20), bool)
    m[:, :10] = True
    s = sel.shrink(m, 3)
    assert s[:, :7].all() and not s[:, 7:].any()


def test_combine_modes():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # rows 0-1
    b[1:3] = True  # rows 1-2
    assert (sel.combine(a, b, "replace") == b).all()
    assert sel.combine(a, b, "add").sum() == 12
    assert (sel.combine(a, b, "subtract")[0]).all() and sel.combine(a, b, "subtract").sum() == 4
    assert (sel.combine(a, b, "intersect")[1]).all() and sel.combine(a, b, "intersect").sum() == 4
    assert (sel.combine(None, b, "add") == b).all()
    assert not sel.combine(None, b, "subtract").any()
    with pytest.raises(sel.SelectionError, match="combine mode"):
        sel.combine(a, b, "xor")
    with pytest.raises(sel.SelectionError, match="shapes differ"):
        sel.combine(a, b[:3], "add")


def test_clean_islands_and_holes():
    m = np.zeros((50, 50), bool)
    m[5:30, 5:30] = True
    m[12:14, 12:14] = False  # 4-pixel hole
    m[40:42, 40:43] = True  # 6-pixel island
    m[0:2, 45:50] = False
    out = sel.clean(m, min_island=7, max_hole=5)
    assert not out[40:42, 40:43].any()
    assert out[12:14, 12:14].all()
    assert out[5:30, 5:30].all()
    assert not sel.clean(m, max_hole=4)[12, 12]  # 4 is not fewer than 4
    # background touching the border is never a hole
    ring = np.ones((10, 10), bool)
    ring[0, 3:6] = False
    assert not sel.clean(ring, max_hole=100)[0, 4]


def test_outline_and_bbox():
    m = np.zeros((10, 12), bool)
    m[2:8, 3:9] = True
    o = sel.outline(m)
    assert o.sum() == 6 * 6 - 4 * 4
    assert sel.mask_bbox(m) == (3, 2, 9, 8)
    assert sel.mask_bbox(np.zeros((3, 3), bool)) is None


@pytest.mark.parametrize(
    "call,msg",
    [
        (lambda: sel.brush_stroke([(1, 1)], 0, (10, 10)), "radius"),
        (lambda: sel.brush_stroke([], 3, (10, 10)), "at least 1"),
        (lambda: sel.brush_stroke([(1, 1, 1)], 3, (10, 10)), r"\(x, y\)"),
        (lambda: sel.brush_stroke([(1, 1)], 3, (0, 10)), "positive"),
        (lambda: sel.polygon_mask([(1, 1), (2, 2)], (10, 10)), "at least 3"),
        (lambda: sel.polygon_mask([(1, 1), (2, 2), (3, np.inf)], (10, 10)), "infinite"),
        (lambda: sel.polygon_mask([(1, 1), (2, 2), (3, 1)], (10, 10), rule="winding"), "fill rule"),
        (lambda: sel.rect_mask(0, 0, np.nan, 3, (10, 10)), "finite"),
        (lambda: sel.feather(np.zeros((3, 3), bool), -1), "feather radius"),
        (lambda: sel.grow(np.zeros((3, 3, 3), bool), 1), "2-D"),
        (lambda: sel.shrink(np.zeros((3, 3), bool), "x"), "shrink amount"),
    ],
)
def test_errors_are_one_line(call, msg):
    with pytest.raises(sel.SelectionError, match=msg) as e:
        call()
    assert "\n" not in str(e.value)


def test_wand_edge_graph_matches_bfs_with_diagonals():
    """Random depth steps: the edge-aware wand at connectivity 8 equals a BFS over the same links."""
    rng = np.random.default_rng(11)
    h, w = 30, 26
    photo = np.full((h, w, 3), 70, np.uint8)
    depth = rng.uniform(1.0, 1.12, (h, w)).astype(np.float32)
    tol = 0.05
    ok = lambda a, b: np.abs(a - b) <= tol * np.minimum(a, b)  # noqa: E731
    steps = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)]
    seed = (15, 13)
    seen = np.zeros((h, w), bool)
    seen[seed] = True
    q = deque([seed])
    while q:
        i, j = q.popleft()
        for di, dj in steps:
            ni, nj = i + di, j + dj
            if 0 <= ni < h and 0 <= nj < w and not seen[ni, nj] and ok(depth[i, j], depth[ni, nj]):
                seen[ni, nj] = True
                q.append((ni, nj))
    got = sel.magic_wand(photo, depth, (13.5, 15.5), color_tol=None, depth_tol=None, edge_depth_tol=tol, connectivity=8)
    assert 20 < seen.sum() < h * w  # a non-trivial component
    assert (got == seen).all()


@pytest.mark.parametrize("scene", ["banana_fruits", "chrome_headlight", "chair"])
def test_wand_on_real_photos_depth_keeps_it_on_the_object(photogen_dir, scene):
    """One click at the object's inmost pixel (of the scene's ground-truth mask): with depth the
    selection stays on the object; with colour alone it leaks into the background."""
    from PIL import Image
    from scipy import ndimage

    from core.io import load_depth, load_photo

    d = photogen_dir / scene
    photo = load_photo(d / "input.png").working
    h, w = photo.shape[:2]
    depth = load_depth(d / "depth.exr", size=(w, h))
    gt = np.array(Image.open(d / "mask.png").convert("L").resize((w, h), Image.NEAREST)) > 127
    inner = ndimage.distance_transform_edt(gt)
    i, j = np.unravel_index(np.argmax(inner), inner.shape)
    kw = dict(color_tol=80.0, edge_depth_tol=0.02, connectivity=4, fill_holes=256)
    with_depth = sel.magic_wand(photo, depth, (j + 0.5, i + 0.5), depth_tol=0.2, **kw)
    colour_only = sel.magic_wand(photo, None, (j + 0.5, i + 0.5), depth_tol=None, **kw)
    precision = (with_depth & gt).sum() / with_depth.sum()
    assert precision > 0.85
    assert (with_depth & gt).sum() > 0.3 * gt.sum()
    assert (colour_only & gt).sum() / colour_only.sum() < 0.5


# ------------------------------------------------------------------ crease-aware wand (editor defaults)
def _editor_wand_kwargs():
    from editor.photo_view import DEFAULT_OPTIONS as o  # noqa: N811

    keys = (
        "color_tol",
        "depth_tol",
        "edge_color_tol",
        "edge_depth_tol",
        "connectivity",
        "fill_holes",
        "normal_tol",
        "crease_color_tol",
        "color_smooth",
        "concave_tol",
    )
    return {k: o[k] for k in keys if k in o}  # concave_tol: once the editor passes it


#: the crease-aware mode (an option: whole objects on exact depth, leaks on estimated depth)
_CREASE_MODE = dict(color_tol=None, depth_tol=0.25, edge_depth_tol=0.02, connectivity=4, fill_holes=256, normal_tol=20.0, crease_color_tol=20.0)


def _inmost_seed(mask):
    from scipy import ndimage

    inner = ndimage.distance_transform_edt(mask)
    i, j = np.unravel_index(np.argmax(inner), inner.shape)
    return (j + 0.5, i + 0.5)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("name", ["box", "sphere", "cylinder"])
def test_wand_crease_mode_selects_whole_sample_object(name):
    """One click at the object's inmost pixel selects the whole textured object and stops at the
    floor it stands on (depth is continuous at the contact; the crease plus colour change stops it)."""
    from core.sample import sample_scene

    s = sample_scene()
    obj = next(o for o in s.objects if o.name == name)
    m = sel.magic_wand(s.photo, s.depth, _inmost_seed(obj.mask), **_CREASE_MODE)
    assert _iou(m, obj.mask) >= 0.9
    # without the crease test the same depth-continuity wand leaks into the floor (box, cylinder)
    # or stays as good (sphere: a depth step all round)
    kw = dict(_CREASE_MODE, normal_tol=None, depth_tol=None)
    leak = sel.magic_wand(s.photo, s.depth, _inmost_seed(obj.mask), **kw)
    if name != "sphere":
        assert _iou(leak, obj.mask) < 0.5


def test_wand_crease_mode_floor_click_takes_no_object():
    from core.sample import sample_scene

    s = sample_scene()
    h, w = s.depth.shape
    m = sel.magic_wand(s.photo, s.depth, (w / 2, h - 8.5), **_CREASE_MODE)
    assert m.sum() > 0.1 * h * w  # the floor band within the depth tolerance of the click
    for o in s.objects:
        assert (m & o.mask).sum() < 0.02 * o.mask.sum(), o.name


def test_wand_crease_texture_vs_contact():
    """Synthetic: a tilted plane (floor) meets a fronto-parallel wall along a crease with no depth
    step. Stripes on the wall are crossed; the wall/floor crease with a colour change is not;
    the same crease in one colour is crossed."""
    h, w = 64, 64
    i = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    depth = np.where(i < 32, 5.0, 5.0 - 0.08 * (i - 32)).astype(np.float32)  # wall above, floor below
    photo = np.zeros((h, w, 3), np.uint8)
    photo[:32] = [200, 40, 40]
    photo[:32, ::8] = [240, 200, 60]  # vertical stripes on the wall
    photo[32:] = [60, 60, 200]
    kw = dict(color_tol=None, depth_tol=None, edge_depth_tol=0.05, connectivity=4, normal_tol=20.0, crease_color_tol=20.0)
    m = sel.magic_wand(photo, depth, (20.5, 10.5), **kw)
    assert m[:30].all() and not m[34:].any()
    one_colour = np.full_like(photo, 128)
    assert sel.magic_wand(one_colour, depth, (20.5, 10.5), **kw).all()
    # normal_tol None: the old behaviour, depth continuity alone joins wall and floor
    assert sel.magic_wand(photo, depth, (20.5, 10.5), **dict(kw, normal_tol=None)).all()


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(normal_tol=-1.0), "normal_tol"),
        (dict(normal_tol=20.0, crease_gap=0), "crease_gap"),
        (dict(normal_tol=20.0, fov_deg=180.0), "fov_deg"),
    ],
)
def test_wand_crease_errors(kwargs, msg):
    photo = np.zeros((8, 8, 3), np.uint8)
    depth = np.ones((8, 8), np.float32)
    with pytest.raises(sel.SelectionError, match=msg):
        sel.magic_wand(photo, depth, (2, 2), **kwargs)


def test_wand_editor_defaults_speed_at_512():
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    depth = (3.0 + rng.random((512, 512))).astype(np.float32)
    kw = _editor_wand_kwargs()
    sel.magic_wand(photo, depth, (100, 100), **kw)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        sel.magic_wand(photo, depth, (100, 100), **kw)
        times.append(time.perf_counter() - t)
    assert min(times) < 0.12  # about 37 ms on the 2-core CPU; generous for a shared machine


def test_wand_editor_defaults_on_photogen_mean_iou(photogen_dir):
    """One click at each photogen object's inmost pixel with the editor defaults: mean IoU and
    precision over the scenes (measured 0.394 and 0.915 on the 14 scenes; the unsmoothed colour
    defaults gave 0.378 and 0.907)."""
    from core.dhformat import load_dh_scene

    ious, precisions = [], []
    for d in sorted(p for p in photogen_dir.iterdir() if (p / "input.png").is_file()):
        sc = load_dh_scene(d)
        gt = sc.objects[0].mask
        m = sel.magic_wand(sc.photo, sc.depth, _inmost_seed(gt), **_editor_wand_kwargs())
        ious.append(_iou(m, gt))
        precisions.append((m & gt).sum() / max(1, m.sum()))
    assert len(ious) >= 10
    assert np.mean(ious) > 0.37
    assert np.mean(precisions) > 0.88


def test_wand_color_smoothing_reads_texture_as_its_average():
    """A fine two-colour checker on an object in front of a plain background: without smoothing the
    click takes one checker colour; with it, the whole object, still not the background."""
    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w]
    photo = np.zeros((h, w, 3), np.uint8)
    photo[:] = (60, 160, 60)  # green background
    obj = (xx >= 24) & (xx < 72) & (yy >= 16) & (yy < 48)
    checker = ((xx // 2 + yy // 2) % 2).astype(bool)
    photo[obj & checker] = (220, 40, 40)
    photo[obj & ~checker] = (240, 150, 40)
    depth = np.full((h, w), 2.0, np.float32)
    seed = (48.5, 32.5)
    raw = sel.magic_wand(photo, depth, seed, color_tol=60, depth_tol=None, connectivity=4)
    smooth = sel.magic_wand(photo, depth, seed, color_tol=60, depth_tol=None, connectivity=4, color_smooth=2.0)
    assert _iou(raw, obj) < 0.1  # one checker colour: isolated cells
    assert _iou(smooth, obj) > 0.85
    assert not (smooth & ~sel.grow(obj, 3)).any()


# ------------------------------------------------------------------ object wand (concave-crease stops)
def _inv_depth_ridge(h, w, slope):
    """z-depth of two planes meeting along the vertical line x = w / 2: inverse depth
    ``0.25 + slope * |u|`` (u: columns from the line, pixel centres; affine on each side, so each
    half is exactly a plane). ``slope`` > 0: the sides are nearer than the line, a valley
    (concave); < 0: a ridge (convex)."""
    u = np.abs(np.arange(w, dtype=np.float64) + 0.5 - w / 2)
    inv = 0.25 + slope * u
    return np.repeat((1.0 / inv)[None, :], h, axis=0).astype(np.float32)


def test_object_wand_crosses_convex_edges_and_stops_at_concave_ones():
    """Two planes meeting at a crease with a colour change on it: a ridge (an object's own edge)
    is crossed whatever the colours; a valley (an object standing on a floor) is not, even where
    the colours on both sides are the same; the depth is continuous across both."""
    h, w = 40, 80
    photo = np.zeros((h, w, 3), np.uint8)
    photo[:, : w // 2] = (200, 40, 40)
    photo[:, w // 2 :] = (40, 40, 200)
    kw: sel.WandOptions = {**sel.OBJECT_WAND, "fill_holes": 0}
    ridge = _inv_depth_ridge(h, w, -0.0012)
    assert sel.magic_wand(photo, ridge, (10.5, 20.5), **kw).all()
    valley = _inv_depth_ridge(h, w, 0.0012)
    m = sel.magic_wand(photo, valley, (10.5, 20.5), **kw)
    assert m[:, : w // 2 - 8].all()  # the left plane, up to the band the crease test marks
    assert m[:, : w // 2].all()  # the band on the seed's side is taken back (its colour continues)
    assert not m[:, w // 2 :].any()  # nothing across the crease (another colour)
    one_colour = np.full_like(photo, 128)
    m1 = sel.magic_wand(one_colour, valley, (10.5, 20.5), **kw)
    assert m1[:, : w // 2].all()
    # geometry alone stops it: the other side's band at most (concave_gap steps), not the plane
    assert not m1[:, w // 2 + 5 :].any()  # concave_gap 5
    # without the concave test the same depth-continuity wand takes both planes
    assert sel.magic_wand(one_colour, valley, (10.5, 20.5), **{**kw, "concave_tol": None}).all()


def test_object_wand_block_on_floor_with_the_floor_colour():
    """A block standing on a tilted floor, painted the floor's grey at its foot (depth continuous
    at the contact, no colour change there) and striped above: one click takes the block, one
    click on the floor takes no block. The colour wand and the crease-aware "Surfaces" mode
    both fail this (one stripe; the floor through the same-coloured contact)."""
    h, w = 96, 96
    i = np.arange(h, dtype=np.float64)[:, None] * np.ones((1, w))
    j = np.ones((h, 1)) * np.arange(w, dtype=np.float64)[None, :]
    floor_inv = 0.1 + 0.004 * (i + 0.5)  # a floor plane: inverse depth affine in the row
    contact = 70  # the block's foot: its front face is the fronto-parallel plane at the depth there
    block = (j >= 30) & (j < 66) & (i < contact)
    inv = np.where(block, 0.1 + 0.004 * (contact + 0.5), floor_inv)
    depth = (1.0 / inv).astype(np.float32)
    photo = np.full((h, w, 3), 120, np.uint8)  # grey floor
    photo[block & (i < contact - 12) & ((i // 6) % 2 == 0)] = (220, 60, 40)
    photo[block & (i < contact - 12) & ((i // 6) % 2 == 1)] = (40, 160, 220)
    m = sel.magic_wand(photo, depth, (48.5, 30.5), **sel.OBJECT_WAND)
    assert _iou(m, block) > 0.95
    # beyond the block: at most the floor's side of the crease band where its colour continues
    # the block's foot (here the floor row at the contact, at the very depth of the foot)
    assert (m & ~block).sum() < 0.05 * block.sum()
    assert not (m & ~sel.grow(block, 5)).any()
    floor = sel.magic_wand(photo, depth, (10.5, 90.5), **sel.OBJECT_WAND)
    assert (floor & block).sum() < 0.02 * block.sum()
    assert floor.sum() > 0.2 * (~block).sum()  # the floor within the depth tolerance of the click
    assert _iou(sel.magic_wand(photo, depth, (48.5, 30.5), **sel.COLOR_WAND), block) < 0.3
    surfaces: sel.WandOptions = {**sel.COLOR_WAND, "normal_tol": 20.0, "color_smooth": 0.0, "color_tol": None}
    assert _iou(sel.magic_wand(photo, depth, (48.5, 30.5), **surfaces), block) < 0.5


def test_object_wand_seed_in_small_concave_blob():
    """A click in a small dimple (a fold under the cursor) does not stop the wand at the dimple."""
    h, w = 200, 200
    ii, jj = np.mgrid[0:h, 0:w]
    r2 = (ii + 0.5 - 100) ** 2 + (jj + 0.5 - 100) ** 2
    depth = (2.0 + 0.05 * np.exp(-r2 / (2 * 2.0**2))).astype(np.float32)  # a dimple 2 px wide
    photo = np.full((h, w, 3), 90, np.uint8)
    kw: sel.WandOptions = {**sel.OBJECT_WAND, "fill_holes": 0}
    blob = sel._concave_creases(depth, depth, 55.0, 2.0, 2, 20.0, 0.01, 5, 0.02)
    assert blob[100, 100] and 10 < blob.sum() < 0.002 * h * w  # the seed's blob, small
    assert sel.magic_wand(photo, depth, (100.0, 100.0), **kw).all()


def test_object_wand_sample_scene_whole_objects():
    """One click at each sample object's inmost pixel takes the whole object (measured IoU 0.999
    for the box, the beach ball and the cylinder); the colour wand takes one colour patch
    (measured 0.78, 0.26, 0.65) and is below the bar on the ball."""
    from core.sample import sample_scene

    s = sample_scene()
    for o in s.objects:
        seed = _inmost_seed(o.mask)
        assert _iou(sel.magic_wand(s.photo, s.depth, seed, **sel.OBJECT_WAND), o.mask) >= 0.97, o.name
    ball = next(o for o in s.objects if o.name == "sphere")
    assert _iou(sel.magic_wand(s.photo, s.depth, _inmost_seed(ball.mask), **sel.COLOR_WAND), ball.mask) < 0.5


def test_object_wand_sample_floor_and_wall_clicks_take_no_object():
    from core.sample import sample_scene

    s = sample_scene()
    h, w = s.depth.shape
    for seed in [(w / 2, h - 8.5), (40.5, h - 60.5), (w / 2, 20.5)]:  # floor front, floor left, wall
        m = sel.magic_wand(s.photo, s.depth, seed, **sel.OBJECT_WAND)
        assert m.sum() > 0.1 * h * w, seed
        for o in s.objects:
            assert (m & o.mask).sum() < 0.01 * o.mask.sum(), (seed, o.name)


def test_object_wand_world_scenes():
    """Held-out world scenes (boxes, beach balls, cylinders; exact depth): one click per object
    (measured mean IoU 0.99, min 0.91 on seeds 12-19; the colour wand 0.29)."""
    from core.world import HELD_OUT_SEED, layout_scene, random_layout

    ious, colour = [], []
    for k in (12, 15, 19):
        sc = layout_scene(random_layout(HELD_OUT_SEED + k), 640, 448)
        for o in sc.objects:
            if o.mask.sum() < 50:
                continue
            seed = _inmost_seed(o.mask)
            ious.append(_iou(sel.magic_wand(sc.photo, sc.depth, seed, **sel.OBJECT_WAND), o.mask))
            colour.append(_iou(sel.magic_wand(sc.photo, sc.depth, seed, **sel.COLOR_WAND), o.mask))
    assert len(ious) >= 8
    assert np.mean(ious) > 0.93 and min(ious) > 0.8
    assert np.mean(colour) < 0.5


def test_object_wand_on_photogen(photogen_dir):
    """One click at each photogen object's inmost pixel (estimated depth): measured mean IoU 0.78
    at precision 0.95 (the colour wand: 0.39 at 0.91)."""
    from core.dhformat import load_dh_scene

    ious, precisions = [], []
    for d in sorted(p for p in photogen_dir.iterdir() if (p / "input.png").is_file()):
        sc = load_dh_scene(d)
        gt = sc.objects[0].mask
        m = sel.magic_wand(sc.photo, sc.depth, _inmost_seed(gt), **sel.OBJECT_WAND)
        ious.append(_iou(m, gt))
        precisions.append((m & gt).sum() / max(1, m.sum()))
    assert len(ious) >= 10
    assert np.mean(ious) > 0.7
    assert np.mean(precisions) > 0.9


def test_object_wand_cost_at_512():
    """CPU time of one object-wand click at 512 px, within the editor's speed budget (0.12 s).
    Process time, not wall time: the cost of the click, not the waits of a shared machine
    (measured about 30 ms, about the colour wand's)."""
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    depth = (3.0 + rng.random((512, 512))).astype(np.float32)
    sel.magic_wand(photo, depth, (100, 100), **sel.OBJECT_WAND)
    times = []
    for _ in range(3):
        t = time.process_time()
        sel.magic_wand(photo, depth, (100, 100), **sel.OBJECT_WAND)
        times.append(time.process_time() - t)
    assert min(times) < 0.12


def test_steps_within_matches_brute_force():
    rng = np.random.default_rng(4)
    for gap in (1, 2, 5):
        for h, w in ((7, 9), (12, 5), (3, 20)):
            sh = rng.random((h, w - 1)) < 0.1
            sv = rng.random((h - 1, w)) < 0.1
            ex = np.zeros((h, w), bool)
            ey = np.zeros((h, w), bool)
            for i in range(h):
                for j in range(w):
                    ex[i, j] = sh[i, max(j - gap, 0) : max(min(j + gap, w - 1), 0)].any()  # links j-gap .. j+gap-1
                    ey[i, j] = sv[max(i - gap, 0) : max(min(i + gap, h - 1), 0), j].any()
            assert (sel._steps_within(sh, gap, 1) == ex).all()
            assert (sel._steps_within(sv, gap, 0) == ey).all()


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(concave_tol=-0.1), "concave_tol"),
        (dict(concave_tol=0.01, concave_gap=0), "concave_gap"),
        (dict(concave_tol=0.01, concave_angle=float("nan")), "concave_angle"),
    ],
)
def test_object_wand_errors(kwargs, msg):
    photo = np.zeros((8, 8, 3), np.uint8)
    depth = np.ones((8, 8), np.float32)
    with pytest.raises(sel.SelectionError, match=msg):
        sel.magic_wand(photo, depth, (2, 2), **kwargs)
