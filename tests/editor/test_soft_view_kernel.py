"""The software 3D view (no OpenGL) draws with the compiled z-buffer kernel exactly what its numpy
far-first painter draws: background, a moved and selected object, the hole tint."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from core.geometry import warp  # noqa: E402
from core.preview import render_preview  # noqa: E402
from core.sample import sample_scene  # noqa: E402
from core.transform import Transform3D  # noqa: E402


def _pixels(img) -> np.ndarray:
    from PySide6.QtGui import QImage

    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    return np.frombuffer(img.constBits(), np.uint8, img.bytesPerLine() * h).reshape(h, img.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


def test_compiled_soft_view_matches_the_painter(qapp):
    from editor.soft_view import SoftCloudView

    scene = sample_scene(320, 224)
    box = scene.objects[0]
    box.transform = Transform3D.from_axis_angle((0.0, 1.0, 0.0), 30.0, translation=(0.4, 0.0, -0.3))
    view = SoftCloudView()
    view.resize(360, 260)
    view.set_scene(scene)
    view.set_selected(box.id)
    view.set_hole_mask(render_preview(scene).hole)
    images = {}
    try:
        for jit in (False, True):
            assert warp.use_jit(jit) is jit
            images[jit] = _pixels(view.render_image())
    finally:
        warp.use_jit(True)
    background = images[True][0, 0].copy()
    drawn = (images[True] != background).any(-1).mean()
    assert drawn > 0.2, f"only {drawn:.0%} of the view drawn"
    assert np.array_equal(images[False], images[True])
