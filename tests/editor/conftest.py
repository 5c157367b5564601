"""Fixtures of the editor tests: an isolated config folder, the sample scene (built once), and a
main window wired to a deterministic fake renderer on the software 3D view."""

from __future__ import annotations

import copy

import pytest
from PySide6.QtWidgets import QApplication


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    cfg = tmp_path / "config"
    monkeypatch.setenv("HANDLES_STUDIO_CONFIG_DIR", str(cfg))
    return cfg


@pytest.fixture(autouse=True)
def _no_unexpected_modal_dialogs(monkeypatch):
    """A modal dialog nobody answers would hang the run: fail instead (tests patch what they expect)."""
    from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

    def refuse(*a, **k):
        raise AssertionError(f"unexpected modal dialog: {a[1:3] if len(a) > 2 else a}")

    for name in ("warning", "question", "information", "critical", "about"):
        monkeypatch.setattr(QMessageBox, name, refuse)
    monkeypatch.setattr(QMessageBox, "exec", refuse)
    for name in ("getOpenFileName", "getSaveFileName", "getExistingDirectory"):
        monkeypatch.setattr(QFileDialog, name, refuse)
    for name in ("getText", "getDouble"):
        monkeypatch.setattr(QInputDialog, name, refuse)


@pytest.fixture(scope="session")
def _sample_scene_once():
    from core.sample import sample_scene

    return sample_scene()


@pytest.fixture
def sample_scene(_sample_scene_once):
    """A fresh copy of the built-in sample scene (box, sphere, cylinder)."""
    return copy.deepcopy(_sample_scene_once)


@pytest.fixture
def make_window(qtbot, tmp_path, sample_scene):
    """make_window(factory=None, document=None, recovery_dir=None, **kw) -> a shown MainWindow on the
    software 3D view (offscreen has no GL) with a FakeRenderer unless told otherwise."""
    from fakes import FakeRenderer

    from core.document import Document
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    made = []

    def make(factory=None, document=None, recovery_dir=None, show=True, **kw):
        doc = document if document is not None else Document(scene=copy.deepcopy(sample_scene))
        rec = RecoveryManager(recovery_dir or (tmp_path / "recovery"))
        kw.setdefault("use_gl", False)
        kw.setdefault("persist", False)
        if "settings" not in kw:
            from core.settings import Settings

            kw["settings"] = Settings(auto_render=False)
        w = MainWindow(doc, renderer_factory=factory or (lambda r: FakeRenderer(steps=4)), recovery=rec, **kw)
        made.append(w)  # not qtbot.addWidget: qtbot would close it before this fixture shuts it down
        if show:
            w.show()
            qtbot.waitExposed(w)
        return w

    yield make
    for w in made:
        w.shutdown()  # after this, closing asks nothing
        w.close()
        w.deleteLater()
    QApplication.processEvents()
