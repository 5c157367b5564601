"""The compiled drag path (core/geometry/kernels.py) draws the very plans and previews of the
vectorised numpy path it replaces: every array bit for bit, on smooth and creased objects,
magnified, partly behind the camera, several objects at once, one thread or several."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.geometry import synthetic_scene
from core.geometry import warp
from core.preview import render_preview
from core.sample import sample_scene
from core.transform import Transform3D


@pytest.fixture(autouse=True)
def _restore_jit():
    yield
    warp.use_jit(True)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))
    return bool(np.array_equal(a, b))


def _both(scene):
    out = {}
    for jit in (False, True):
        assert warp.use_jit(jit) is jit, "the compiled kernels did not load (numba is a pinned requirement)"
        plan = warp.plan(scene)
        out[jit] = (plan, render_preview(scene, plan).image)
    return out[False], out[True]


def _assert_identical(scene) -> int:
    (p0, img0), (p1, img1) = _both(scene)
    for name in ("edited_depth", "background_depth", "hole", "target_object", "src_x", "src_y", "changed"):
        assert _same(getattr(p0, name), getattr(p1, name)), name
    assert p0.extras["moved"] == p1.extras["moved"] and p0.extras["hidden"] == p1.extras["hidden"]
    assert sorted(p0.extras["jacobian"]) == sorted(p1.extras["jacobian"])
    for k in p0.extras["jacobian"]:
        assert _same(p0.extras["jacobian"][k], p1.extras["jacobian"][k]), f"jacobian {k}"
    for f0, f1 in zip(p0.flows, p1.flows, strict=True):
        assert (f0.index, f0.moved) == (f1.index, f1.moved)
        for name in ("tgt_x", "tgt_y", "tgt_z", "visible"):
            assert _same(getattr(f0, name), getattr(f1, name)), f"flow {f0.index} {name}"
    assert np.array_equal(img0, img1)
    return int(np.isfinite(p1.src_x).sum())


def test_synthetic_dome_rotated_and_magnified():
    scene = synthetic_scene(256)
    obj = scene.objects[0]
    for tr in (
        Transform3D.from_axis_angle((0.0, 1.0, 0.0), 12.0, translation=(0.3, -0.1, 0.2), scale=1.2),
        Transform3D.from_axis_angle((1.0, 0.3, 0.0), 60.0, translation=(-0.5, 0.2, -1.0), scale=2.5),  # ~3x magnified
        Transform3D.from_axis_angle((0.0, 0.0, 1.0), 170.0, translation=(0.0, 0.0, 2.0), scale=0.4),
    ):
        obj.transform = tr
        assert _assert_identical(scene) > 100


def test_sample_boxes_creases_and_several_objects_at_once():
    scene = sample_scene()
    box, sphere, cyl = scene.objects
    box.transform = Transform3D.from_axis_angle((0.0, 1.0, 0.0), 35.0, translation=(0.4, 0.0, -0.3), scale=1.3)
    assert _assert_identical(scene) > 100
    sphere.transform = Transform3D.from_axis_angle((0.0, 1.0, 0.0), -20.0, translation=(-0.8, 0.0, 0.5))
    cyl.visible = False
    assert _assert_identical(scene) > 100
    # an object moved partly behind the camera: its points there are dropped, the rest drawn
    box.transform = Transform3D(translation=(0.0, 0.0, -float(np.median(scene.depth))))
    _assert_identical(scene)


def test_absurd_transforms_drop_points_the_same_way():
    scene = synthetic_scene(128)
    obj = scene.objects[0]
    for tr in (Transform3D(translation=(1e300, 0.0, 0.0)), Transform3D(translation=(0.0, 0.0, -1e300)), Transform3D(scale=1e-300)):
        obj.transform = tr
        _assert_identical(scene)


def test_threads_and_bands_do_not_change_the_plan(monkeypatch):
    from core.geometry import kernels

    scene = sample_scene()
    scene.objects[0].transform = Transform3D.from_axis_angle((0.0, 1.0, 0.0), 25.0, translation=(0.5, 0.0, 0.2), scale=1.4)
    warp.use_jit(True)
    monkeypatch.setattr(kernels, "MIN_SPLIT", 1 << 30)
    one = warp.plan(scene)
    one_img = render_preview(scene, one).image
    monkeypatch.setattr(kernels, "MIN_SPLIT", 64)
    monkeypatch.setattr(kernels, "THREADS", 3)
    assert len(kernels.bands(*_ylo_yhi(scene), scene.depth.shape[0])) == 3
    many = warp.plan(scene)
    for name in ("edited_depth", "target_object", "src_x", "src_y", "hole"):
        assert _same(getattr(one, name), getattr(many, name)), name
    assert np.array_equal(one_img, render_preview(scene, many).image)


def _ylo_yhi(scene):
    """Footprint row ranges of the first object's points under its transform (as plan computes)."""
    from core.geometry import kernels

    st = warp._static(scene)
    os_ = st.objects[0]
    tr = scene.objects[0].transform
    a = np.ascontiguousarray(tr.scale * tr.R)
    b = os_.pivot + tr.t - a @ os_.pivot
    n = len(os_.rows)
    out = (np.empty(n), np.empty(n), np.empty(n), np.empty(n, bool), np.empty((n, 6)), np.empty(n, np.int32), np.empty(n, np.int32))
    cam = scene.camera
    kernels.project_points(os_.rows, os_.cols, os_.z, os_.tangents, os_.crease, a, b, cam.focal, cam.cx, cam.cy, st.near, st.shape[0], 0, n, *out)
    return out[5], out[6]


def test_without_numba_the_numpy_path_runs(monkeypatch):
    monkeypatch.setenv("HANDLES_STUDIO_NO_JIT", "1")
    assert warp.use_jit(True) is False
    scene = synthetic_scene(128)
    scene.objects[0].transform = Transform3D(translation=(0.2, 0.0, 0.0))
    assert np.isfinite(warp.plan(scene).src_x).sum() > 100


def test_kernel_constants_are_the_warp_modules():
    from core.geometry import kernels

    assert kernels._FAR == warp.FAR
    assert kernels._CAP == warp.MAX_FOOTPRINT + 0.5
    assert kernels._SLACK == warp.FOOTPRINT_SLACK


_DRAG_AFTER_WARM_UP = """
from core.geometry import kernels, warp
from core.preview import render_preview
from core.sample import sample_scene
from core.transform import Transform3D
assert warp.warm_up()
names = ("project_points", "splat_band", "object_flow", "close_pinholes", "sample_colors", "jacobians", "lift_tangents")
before = {n: len(getattr(kernels, n).signatures) for n in names}
for read_only in (False, True):
    warp.clear_cache()  # the lift runs again
    scene = sample_scene()
    scene.photo.setflags(write=not read_only)
    scene.depth.setflags(write=not read_only)
    scene.objects[0].transform = Transform3D.from_axis_angle((0.0, 1.0, 0.0), 25.0, translation=(0.5, 0.0, 0.2), scale=1.4)
    plan = warp.plan(scene)
    render_preview(scene, plan)
    plan.extras["jacobian"][0]
after = {n: len(getattr(kernels, n).signatures) for n in names}
print(before, after)
assert after == before, "compiled after warm_up"
"""


def test_warm_up_compiles_what_a_drag_calls():
    """In a fresh process, a drag after warm_up compiles nothing new (a signature that warm_up
    misses, e.g. for a read-only array, costs the first drag seconds of compiling)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", _DRAG_AFTER_WARM_UP], cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("shape", [(96, 128), (37, 53), (1, 7), (3, 2), (64, 1)])
def test_compiled_push_pull_is_the_numpy_one(shape):
    from core.preview import push_pull_fill

    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    img = (rng.random((*shape, 3)) * 255).astype(np.float32)
    known = rng.random(shape) > 0.5
    known[shape[0] // 4 : shape[0] // 2 + 1, shape[1] // 4 : shape[1] // 2 + 1] = False
    known.flat[0] = True
    out = {}
    for jit in (False, True):
        assert warp.use_jit(jit) is jit
        out[jit] = push_pull_fill(img, known)
    assert np.array_equal(out[False], out[True])
    assert np.array_equal(out[True][known], img[known])  # known pixels unchanged


def _lift_both(scene, k: int = 0):
    index_map = warp.object_index_map(scene)
    out = {}
    for jit in (False, True):
        assert warp.use_jit(jit) is jit
        out[jit] = warp._object_state(k, index_map, scene.depth, scene.camera, scene.pivot(scene.objects[k]))
    return out[False], out[True]


def test_compiled_lift_is_the_numpy_one_on_smooth_creased_steep_and_bordering_objects():
    """The first drag's lift (tangents and creases of every object point) compiled: the numpy
    path's numbers bit for bit, also where the slope test, the fallback and the image border
    decide, and for depth maps in float32 or float64."""
    rng = np.random.default_rng(7)
    cases = []
    dome = synthetic_scene(128)
    cases.append((dome, 0))
    boxes = sample_scene()
    cases += [(boxes, k) for k in range(len(boxes.objects))]
    rough = synthetic_scene(96)
    depth = np.array(rough.depth, np.float64)
    depth *= 1.0 + 0.4 * (rng.random(depth.shape) > 0.8)  # steps steeper than the slope test allows
    rough.depth = depth
    m = np.zeros(depth.shape, bool)
    m[:, :30] = True  # touching the top, bottom and left borders
    m[40, 60] = True  # a lone pixel: fallbacks on every side
    m[50:52, 70:90] = True  # a two-row strip
    rough.objects[0].mask = m
    cases.append((rough, 0))
    creased = 0
    for scene, k in cases:
        a, b = _lift_both(scene, k)
        assert len(a.rows) > 0
        for name in ("rows", "cols", "z", "tangents", "crease"):
            assert _same(getattr(a, name), getattr(b, name)), name
        creased += int(b.crease.sum())
    assert creased > 100  # the cases exercise creases, not only smooth surfaces
