"""The main window with the real OpenGL 3D view (run under a display: `make test` uses Xvfb)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gl
REPO = Path(__file__).resolve().parents[2]


def test_main_window_uses_the_gl_view_and_previews_drags(qtbot, gl_context_info, tmp_path, monkeypatch, artifacts_dir):
    monkeypatch.setenv("HANDLES_STUDIO_CONFIG_DIR", str(tmp_path / "cfg"))
    from core.render import GeometricRenderer
    from core.transform import Transform3D
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    win = MainWindow(renderer_factory=lambda r: GeometricRenderer(), persist=False, recovery=RecoveryManager(tmp_path / "rec"))
    try:
        win.resize(1480, 920)
        win.show()
        qtbot.waitExposed(win)
        assert win.uses_gl and type(win.view3d).__name__ == "PointCloudView"
        qtbot.waitUntil(lambda: win.view3d.gl_error() is None and win.view3d.cloud() is not None, timeout=5000)
        box = win.scene.object("box")
        photo = win.scene.photo.copy()
        old = box.transform
        box.transform = Transform3D(translation=(0.3, 0.0, 0.0))
        win.view3d.transformPreview.emit(box.id, box.transform)
        assert not np.array_equal(win.photo.image(), photo)
        win.view3d.transformCommitted.emit(box.id, old, box.transform)
        assert win.undo_stack.count() == 1
        qtbot.wait(200)
        img = win.grab().toImage()
        assert img.save(str(artifacts_dir / "main_window_gl.png"))
        view = win.view3d.grabFramebuffer()
        arr = np.asarray(view.convertToFormat(view.Format.Format_RGB888).constBits()).reshape(view.height(), -1)[:, : view.width() * 3]
        assert arr.std() > 10  # the point cloud was drawn
    finally:
        win.shutdown()
        win.close()


def test_main_py_opens_a_window_and_saves_a_screenshot(gl_context_info, tmp_path):
    out = tmp_path / "shot.png"
    env = dict(os.environ, HANDLES_STUDIO_CONFIG_DIR=str(tmp_path / "cfg"))
    r = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--screenshot", str(out), "--quit-after", "2500", "--size", "1280x800"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image

    im = Image.open(out)
    assert im.size[0] >= 1000 and im.size[1] >= 600
    assert np.asarray(im.convert("RGB")).std() > 20
    # a clean exit removes this session's recovery lock
    assert not list((tmp_path / "cfg" / "recovery").glob("session-*.lock"))
