"""Transform3D algebra: compose/inverse/apply, quaternions, axis-angle, rigid + scale invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from core.transform import (
    Transform3D,
    quat_from_axis_angle,
    quat_from_matrix,
    quat_normalize,
    quat_to_axis_angle,
    quat_to_matrix,
)

coord = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
vec3 = st.tuples(coord, coord, coord)
quat = st.tuples(*[st.floats(-1, 1, allow_nan=False)] * 4).filter(lambda q: np.linalg.norm(q) > 1e-3)
scale = st.floats(0.1, 5.0)


@st.composite
def transforms(draw):
    return Transform3D(translation=draw(vec3), rotation=draw(quat), scale=draw(scale))


@st.composite
def point_sets(draw):
    pts = draw(st.lists(vec3, min_size=3, max_size=12))
    return np.asarray(pts, dtype=np.float64)


SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(q=quat, k=st.floats(0.01, 100.0))
def test_quaternion_is_normalised_and_canonical(q, k):
    t = Transform3D(rotation=tuple(np.asarray(q) * k))
    r = np.asarray(t.rotation)
    assert np.linalg.norm(r) == pytest.approx(1.0, abs=1e-12)
    assert r[0] >= 0
    # q and -q give the same rotation
    np.testing.assert_allclose(quat_to_matrix(q), quat_to_matrix(-np.asarray(q)), atol=1e-12)
    m = t.R
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(m) == pytest.approx(1.0, abs=1e-12)


@SETTINGS
@given(axis=vec3, angle=st.floats(0.01, 179.99))
def test_axis_angle_round_trip(axis, angle):
    a = np.asarray(axis)
    assume(np.linalg.norm(a) > 1e-3)
    back_axis, back_angle = quat_to_axis_angle(quat_from_axis_angle(a, angle))
    assert back_angle == pytest.approx(angle, abs=1e-7)
    np.testing.assert_allclose(back_axis, a / np.linalg.norm(a), atol=1e-7)
    # the matrix rotates by `angle` about `axis`: the axis is fixed, a perpendicular vector turns by angle
    m = quat_to_matrix(quat_from_axis_angle(a, angle))
    u = a / np.linalg.norm(a)
    np.testing.assert_allclose(m @ u, u, atol=1e-9)
    perp = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
    perp /= np.linalg.norm(perp)
    cos = float(np.dot(m @ perp, perp))
    assert math.degrees(math.acos(np.clip(cos, -1, 1))) == pytest.approx(angle, abs=1e-6)
    # right-handed: (perp x R perp) points along +axis
    assert np.dot(np.cross(perp, m @ perp), u) > 0


def test_right_handed_rotation_about_z():
    # 90 degrees about +Z takes +X to +Y
    t = Transform3D.from_axis_angle((0, 0, 1), 90.0)
    np.testing.assert_allclose(t.apply(np.array([1.0, 0.0, 0.0]), np.zeros(3)), [0.0, 1.0, 0.0], atol=1e-12)


@SETTINGS
@given(q=quat)
def test_matrix_quaternion_round_trip(q):
    qn = quat_normalize(q)
    back = quat_from_matrix(quat_to_matrix(qn))
    np.testing.assert_allclose(quat_to_matrix(back), quat_to_matrix(qn), atol=1e-9)
    # the same quaternion up to the sign, which is canonical unless w is ~0 (a half turn)
    sign = 1.0 if abs(qn[0]) > 1e-6 else float(np.sign(np.dot(back, qn)))
    np.testing.assert_allclose(back, sign * qn, atol=1e-9)


def test_half_turn_has_one_canonical_quaternion():
    a = Transform3D(rotation=(0.0, 0.0, 0.0, -1.0))
    b = Transform3D(rotation=(0.0, 0.0, 0.0, 1.0))
    assert a == b and a.rotation == (0.0, 0.0, 0.0, 1.0)


@SETTINGS
@given(a=transforms(), b=transforms(), pts=point_sets(), pivot=vec3)
def test_compose_matches_sequential_apply(a, b, pts, pivot):
    c = np.asarray(pivot)
    np.testing.assert_allclose(a.compose(b).apply(pts, c), a.apply(b.apply(pts, c), c), rtol=1e-9, atol=1e-8)
    # the 4x4 matrix agrees with apply
    m = a.matrix(c)
    hom = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ m.T
    np.testing.assert_allclose(hom[:, :3], a.apply(pts, c), rtol=1e-9, atol=1e-8)


@SETTINGS
@given(a=transforms(), pts=point_sets(), pivot=vec3)
def test_inverse_undoes_apply(a, pts, pivot):
    c = np.asarray(pivot)
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts, c), c), pts, rtol=1e-9, atol=1e-8)
    assert a.compose(a.inverse()).is_identity(tol=1e-9)
    assert a.inverse().compose(a).is_identity(tol=1e-9)


@SETTINGS
@given(q=quat, s=scale, t=vec3, pts=point_sets())
def test_rotation_keeps_centroid_and_distances_scale_multiplies_them(q, s, t, pts):
    centroid = pts.mean(axis=0)
    rot = Transform3D(rotation=q)
    moved = rot.apply(pts, centroid)
    np.testing.assert_allclose(moved.mean(axis=0), centroid, atol=1e-9)
    d0 = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.testing.assert_allclose(np.linalg.norm(moved[:, None] - moved[None], axis=-1), d0, atol=1e-9)
    full = Transform3D(translation=t, rotation=q, scale=s)
    moved = full.apply(pts, centroid)
    np.testing.assert_allclose(moved.mean(axis=0), centroid + np.asarray(t), atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(moved[:, None] - moved[None], axis=-1), s * d0, rtol=1e-9, atol=1e-8)


@SETTINGS
@given(a=transforms())
def test_dict_round_trip(a):
    b = Transform3D.from_dict(a.to_dict())
    assert b == a


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": 0.0},
        {"scale": -1.0},
        {"scale": float("nan")},
        {"translation": (0.0, float("inf"), 0.0)},
        {"translation": (1.0, 2.0)},
        {"rotation": (0.0, 0.0, 0.0, 0.0)},
    ],
)
def test_bad_transforms_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Transform3D(**kwargs)


def test_zero_axis_only_with_zero_angle():
    assert Transform3D.from_axis_angle((0, 0, 0), 0.0).is_identity()
    with pytest.raises(ValueError):
        Transform3D.from_axis_angle((0, 0, 0), 10.0)


def test_huge_and_tiny_axes_are_normalised_and_bad_axes_refused():
    """A huge finite axis used to overflow the norm and silently become no rotation."""
    want = Transform3D.from_axis_angle((1, 1, 0), 90.0)
    huge = Transform3D.from_axis_angle((1e308, 1e308, 0), 90.0)
    assert not huge.is_identity()
    assert np.allclose(huge.rotation, want.rotation, atol=1e-12)
    tiny = Transform3D.from_axis_angle((1e-300, 0, 0), 90.0)
    assert np.allclose(tiny.rotation, Transform3D.from_axis_angle((1, 0, 0), 90.0).rotation, atol=1e-12)
    for bad in ((0.0, 0.0, 0.0), (math.nan, 0.0, 0.0), (math.inf, 0.0, 0.0)):
        with pytest.raises(ValueError) as exc:
            Transform3D.from_axis_angle(bad, 90.0)
        msg = str(exc.value)
        assert "rotation axis" in msg and "\n" not in msg
