"""Object ▸ Lock Identity in the editor (issue 11): the dialog, the learning task in the real
worker with the bundled world model (in the engine's own process, as the editor runs it, and
in-thread), progress and Cancel, the undoable record, save/load, and the next render."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from core.document import Document
from core.jobs import Progress
from core.locks import describe, read_header
from core.settings import Settings
from core.transform import Transform3D

ROOT = Path(__file__).resolve().parents[2]


def _real_window(tmp_path, monkeypatch, sample_scene, engine: str):
    """A window on the sample with the real engine (the bundled world model), no fake renderer."""
    pytest.importorskip("torch")
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    if not (ROOT / "resources" / "models" / "world" / "model_index.json").is_file():
        pytest.fail("the bundled world model is missing (restore it: git checkout -- resources/models/world)")
    monkeypatch.setenv("HANDLES_MODEL_DIRS", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HANDLES_ENGINE", engine)
    win = MainWindow(
        Document(scene=sample_scene),
        use_gl=False,
        persist=False,
        recovery=RecoveryManager(tmp_path / "r"),
        settings=Settings(auto_render=False, device="cpu"),
    )
    assert (win.worker.engine is not None) == (engine == "process")
    return win


def _answer_dialog(answer, errors: list) -> None:
    """Fill in and close the modal Lock Identity dialog once it is open (``answer(dlg)``)."""
    from editor.identity_lock import LockIdentityDialog

    def go() -> None:
        dlg = QApplication.activeModalWidget()
        if not isinstance(dlg, LockIdentityDialog):
            QTimer.singleShot(20, go)
            return
        try:
            answer(dlg)
        except Exception as exc:  # noqa: BLE001 - reported by the test, never a hung dialog
            errors.append(exc)
            dlg.reject()

    QTimer.singleShot(0, go)


def _item(win, obj_id):
    from PySide6.QtCore import Qt

    lst = win.objects_panel.list
    return next(lst.item(i) for i in range(lst.count()) if lst.item(i).data(Qt.ItemDataRole.UserRole) == obj_id)


def test_the_editor_does_not_import_torch_for_the_lock_dialog():
    code = "import sys, editor.main_window, editor.identity_lock; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_dialog_prefills_the_clis_choices_and_says_when_it_would_take_hours(make_window):
    from editor.identity_lock import LockContext, LockIdentityDialog

    win = make_window()
    box = win.scene.object("box")
    win.model.select(box.id)
    ctx = win.lock_context(box.id)
    assert (ctx.word, ctx.model, ctx.world, ctx.backend) == ("box", "world", True, "world")
    sphere = win.lock_context(win.scene.object("sphere").id)
    assert sphere.word == "beach ball"  # the world's alias, which the sample's prompt holds
    dlg = LockIdentityDialog(ctx, win)
    try:
        assert dlg.chosen_method() == "custom" and dlg.steps.value() == 200 and not dlg.mirror.isChecked()
        assert dlg.word.text() == "box" and "keys and values" in dlg.method_help.text()
        assert dlg.estimate.text().startswith("About ") and "on this machine" in dlg.estimate.text()
        assert dlg.ok_button.text() == "Lock" and dlg.warning.isHidden()
        dlg.set_method("ti")
        assert dlg.steps.value() == 300 and "embedding" in dlg.method_help.text()
        dlg.steps.setValue(7)
        dlg.mirror.setChecked(True)
        s = dlg.settings()
        assert (s.method, s.steps, s.mirror, s.size) == ("ti", 7, True, 128)
    finally:
        dlg.deleteLater()
    # a real-size model on a CPU: hours, said plainly, and the button says what it does
    real = LockIdentityDialog(LockContext("box", "box", "sd2-depth", False, "sd2-depth", "cpu"), win)
    try:
        assert real.steps.value() == 400 and real.settings().size == 512
        # Custom Diffusion: 400 steps of one 512 px forward+backward (10.4 s measured) = 69 min
        assert real.estimate_s() > 1800 and real.estimate.text() == "About 69 min on this machine (the CPU)."
        real.set_method("lora")  # twice the evaluations plus the prior images: hours
        assert " h on this machine (the CPU)" in real.estimate.text()
        real.set_method("custom")
        assert real.ok_button.text() == "Start anyway" and not real.warning.isHidden()
        assert "hours" in real.warning.text() and "GPU" in real.warning.text() and "world model" in real.warning.text()
        real.steps.setValue(1)
        real.set_method("ti")  # the method's defaults come back; a short lock is not warned about
        assert real.steps.value() == 600
        real.steps.setValue(2)
        assert real.ok_button.text() == "Lock" and real.warning.isHidden()
    finally:
        real.deleteLater()


def test_locking_needs_a_selected_object_and_a_diffusion_model(make_window):
    from core.jobs import GEOMETRIC
    from editor.undo import SettingCommand

    win = make_window()
    a = win.actions_by_name
    win.model.select(win.scene.object("box").id)
    assert a["lock_identity"].isEnabled() and not a["lock_on"].isEnabled() and not a["lock_remove"].isEnabled()
    win.model.select("")
    assert not a["lock_identity"].isEnabled()
    win.model.select(win.scene.object("box").id)
    win.undo_stack.push(SettingCommand(win.model, "model", win.doc.render_settings.get("model"), GEOMETRIC))
    assert not a["lock_identity"].isEnabled() and "diffusion model" in win.lock_unavailable()
    assert win.lock_identity_dialog() is None and "diffusion model" in win.banner.message


def test_lock_identity_learns_in_the_engine_process_and_is_undoable_saved_and_rendered(qtbot, tmp_path, monkeypatch, sample_scene):
    win = _real_window(tmp_path, monkeypatch, sample_scene, "process")
    events: list = []
    win.worker.event.connect(lambda job, ev: events.append((job, ev)))
    try:
        box = win.scene.object("box")
        win.model.select(box.id)
        assert win.actions_by_name["lock_identity"].isEnabled()
        errors: list = []

        def answer(dlg) -> None:
            assert dlg.ctx.word == "box" and dlg.ctx.world
            dlg.set_method("ti")
            dlg.steps.setValue(10)  # seconds on the world model
            assert dlg.ok_button.text() == "Lock"
            dlg.ok_button.click()

        _answer_dialog(answer, errors)
        job = win.lock_identity_dialog()
        assert not errors, errors
        assert job is not None and win.is_learning()
        assert not win.actions_by_name["lock_identity"].isEnabled()  # one at a time
        # a render now would cancel the lock (one job at a time): refused, said in the banner
        assert win.request_render() is None and "identity lock is being learnt" in win.banner.message
        qtbot.waitUntil(lambda: not win.is_learning(), timeout=180_000)
        learning = [ev for j, ev in events if j == job and isinstance(ev, Progress) and ev.stage == "learning"]
        assert learning and learning[-1].step == 10 and learning[-1].total == 10 and learning[-1].eta_s is not None
        assert win.render_panel.progress.format() == "Done"

        rec = win.doc.render_settings["locks"][box.id]
        assert (rec["method"], rec["word"], rec["model"], rec["steps"], rec["enabled"]) == ("ti", "box", "world", 10, True)
        data = win.doc.caches[rec["cache"]]
        assert len(data) == rec["bytes"] and read_header(data)["object_id"] == box.id
        assert win.isWindowModified()
        from editor.objects_panel import LOCK_ROLE

        assert _item(win, box.id).data(LOCK_ROLE) == "on" and describe(rec) in _item(win, box.id).toolTip()
        assert _item(win, win.scene.object("sphere").id).data(LOCK_ROLE) == ""
        assert win.actions_by_name["lock_on"].isChecked() and win.actions_by_name["lock_remove"].isEnabled()
        (lk,) = win.build_request().locks
        assert (lk["object_id"], lk["method"], lk["word"], lk["cache"]) == (box.id, "ti", "box", rec["cache"])

        # undo takes the record away (the bytes stay for redo), redo brings it back
        win.undo_stack.undo()
        assert box.id not in win.doc.render_settings.get("locks", {}) and win.build_request().locks == []
        assert rec["cache"] in win.doc.caches and _item(win, box.id).data(LOCK_ROLE) == ""
        assert not win.actions_by_name["lock_on"].isEnabled()
        win.undo_stack.redo()
        assert win.doc.render_settings["locks"][box.id] == rec and len(win.build_request().locks) == 1

        # switched off: kept, shown grey, not applied; undo switches it on again
        win.actions_by_name["lock_on"].trigger()
        assert win.doc.render_settings["locks"][box.id]["enabled"] is False
        assert win.build_request().locks == [] and _item(win, box.id).data(LOCK_ROLE) == "unused"
        assert "switched off" in _item(win, box.id).toolTip()
        win.undo_stack.undo()
        assert win.doc.render_settings["locks"][box.id]["enabled"] is True and len(win.build_request().locks) == 1

        # the next render carries the lock to the engine process and applies it
        win.model.set_render_setting("steps", 4)
        box.transform = Transform3D(translation=(0.3, 0.0, 0.0))
        assert win.request_render() is not None
        qtbot.waitUntil(lambda: len(win.doc.renders) == 1, timeout=180_000)
        info = win.doc.renders[0].info
        assert info["geometric"] is False and info["locks"] == [{"object": "box", "method": "ti", "word": "box"}]

        # saved in the project; reopened, the next request carries it
        path = tmp_path / "locked.handles"
        assert win.save_to(path)
        assert not win.isWindowModified()
        loaded = Document.load(path)
        assert loaded.render_settings["locks"][box.id] == rec and bytes(loaded.caches[rec["cache"]]) == bytes(data)
        assert win.open_path(path)
        assert win.doc is not loaded and win.doc.render_settings["locks"][box.id] == rec
        reopened = win.scene.object("box")
        assert reopened.id == box.id and [lk["cache"] for lk in win.build_request().locks] == [rec["cache"]]
        assert _item(win, box.id).data(LOCK_ROLE) == "on"
        # a lock learnt on another model: shown, not used, and it says why
        from editor.undo import SettingCommand

        win.model.select(box.id)
        win.undo_stack.push(SettingCommand(win.model, "model", "world", "sd2-depth"))
        assert _item(win, box.id).data(LOCK_ROLE) == "unused"
        assert "learnt on world; not used with sd2-depth" in _item(win, box.id).toolTip()
        assert "learnt on world; not used with sd2-depth" in win.objects_panel.info.text()
        win.undo_stack.undo()
        # removed: undoable; a save after the removal no undo step can reach drops the bytes
        win.remove_identity_lock()
        assert box.id not in win.doc.render_settings["locks"] and rec["cache"] in win.doc.caches
        win.undo_stack.undo()
        assert win.doc.render_settings["locks"][box.id] == rec
        win.undo_stack.redo()
        win.undo_stack.clear()
        assert win.save_to(path) and rec["cache"] not in win.doc.caches
        assert not Document.load(path).render_settings["locks"]
    finally:
        win.shutdown()


def test_cancel_stops_a_lock_and_leaves_nothing_behind(qtbot, tmp_path, monkeypatch, sample_scene):
    """In-thread engine (the other test runs it in the engine's process)."""
    win = _real_window(tmp_path, monkeypatch, sample_scene, "thread")
    events: list = []
    win.worker.event.connect(lambda job, ev: events.append((job, ev)))
    try:
        box = win.scene.object("box")
        win.model.select(box.id)
        before = dict(win.doc.render_settings)
        job = win.start_identity_lock(box.id, "ti", steps=5000, batch=1, size=64, examples=4)
        assert job is not None
        qtbot.waitUntil(lambda: any(j == job and isinstance(ev, Progress) and ev.stage == "learning" and ev.step >= 5 for j, ev in events), timeout=180_000)
        assert win.worker.is_busy() and "Learning identity lock" in win.render_panel.progress.format()
        assert win.render_panel.cancel_btn.isEnabled()
        win.render_panel.cancel_btn.click()
        # the worker is idle, and its Cancelled event (queued to this thread) has arrived
        qtbot.waitUntil(lambda: not win.worker.is_busy() and any(j == job and type(ev).__name__ == "Cancelled" for j, ev in events), timeout=60_000)
        assert win.render_panel.progress.format() == "Cancelled"
        assert not win.is_learning() and win.actions_by_name["lock_identity"].isEnabled()
        assert not win.doc.render_settings.get("locks") and win.doc.render_settings == before
        assert not [n for n in win.doc.caches if n.startswith("lock:")]
        assert win.undo_stack.count() == 0 and not win.isWindowModified()
        last = [ev for j, ev in events if j == job and isinstance(ev, Progress)][-1]
        assert last.step < 5000
        # the worker takes the next job: a render lands
        win.model.set_render_setting("steps", 2)
        box.transform = Transform3D(translation=(0.2, 0.0, 0.0))
        win.request_render()
        qtbot.waitUntil(lambda: len(win.doc.renders) == 1, timeout=180_000)
        assert win.doc.renders[0].info.get("locks") == [] and not np.array_equal(win.doc.renders[0].image, sample_scene.photo)
    finally:
        win.shutdown()


def test_a_lock_that_finishes_after_its_object_or_document_is_gone_is_dropped(make_window):
    """The result handler: a lock that comes back too late changes nothing (no model needed)."""
    win = make_window()
    box = win.scene.object("box")
    doc = win.doc
    win._on_lock_learnt(Document(scene=win.scene), box.id, np.zeros(4, np.uint8))
    assert "no longer open" in win.statusBar().currentMessage() and not doc.render_settings.get("locks")
    win._on_lock_learnt(doc, "no-such-object", np.zeros(4, np.uint8))
    assert "deleted" in win.statusBar().currentMessage() and win.undo_stack.count() == 0
