"""Identity lock in the window: Object ▸ Lock Identity…, its dialog, the learning task in the
render worker, and the undoable switches (on/off, remove). Changes here when that flow changes.

A lock personalises the diffusion model on one object (``core.ml.handles.lock``) so that it
stays itself when a large rotation shows sides the photo does not. The dialog prefills what the
CLI's ``handles-studio learn`` would use (:mod:`core.locks`: the method's steps for the world or a
real model, the object's word) and estimates the time without loading anything; the learning runs
as the engine task ``learn`` (:mod:`core.worker`) in the same worker as renders, with the render
panel's progress, time left and Cancel. Its bytes go into the project's caches and the record into
``render_settings["locks"]`` through an undo step (:class:`editor.undo.LockCommand`), so save/load,
undo and the next render request (``core.request.request_locks``) all see it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.document import now_iso
from core.errors import HandlesError
from core.jobs import GEOMETRIC
from core.locks import (
    CACHE_PREFIX,
    METHOD_LABELS,
    LockSettings,
    describe,
    device_kind,
    duration_text,
    estimate_seconds,
    lock_settings,
    record_for,
    unused_reason,
    with_lock,
    word_for,
)
from core.request import resolve_request
from core.world import NOUNS, is_world_scene
from editor.undo import LockCommand
from editor.worker import TaskSpec

__all__ = ["LONG_LOCK_S", "METHOD_HELP", "IdentityLockMixin", "LockContext", "LockIdentityDialog"]

#: a lock estimated longer than this is said plainly before it starts (the CLI refuses it without --yes)
LONG_LOCK_S = 30 * 60
#: the dialog's methods, in its order (the default first), with one line each
METHOD_HELP = {
    "custom": "The object's word plus the cross-attention keys and values (a low-rank update). The default: on the "
    "world benchmark's large rotations it matched the hidden side's colours best and learnt fastest.",
    "lora": "A low-rank update of all of the model's attention, trained beside images the model makes of the class "
    "(prior preservation): the slowest and the largest to store.",
    "ti": "Only the word's embedding is learnt: a few KB, the model's weights untouched.",
}
_DEVICE_WORDS = {"cpu": "the CPU", "cuda": "the GPU", "mps": "the Apple GPU"}


@dataclass(frozen=True)
class LockContext:
    """What a lock of one object would learn with: the word, whether the world model's small
    settings apply (``world``), the backend and the device kind for the estimate."""

    object_name: str
    word: str
    model: str
    world: bool
    backend: str
    device: str


class LockIdentityDialog(QDialog):
    """Method, word, steps, mirrored crops and the time it would take (see the module docstring).
    :meth:`settings` gives the :class:`core.locks.LockSettings` to learn with."""

    def __init__(self, ctx: LockContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.setWindowTitle(f"Lock Identity of \u2018{ctx.object_name}\u2019")
        self.setObjectName("lockIdentityDialog")
        self.setMinimumWidth(480)
        intro = QLabel(
            f"Teach the model {ctx.model} this object, so that it stays itself when a large rotation shows sides the photo does not. "
            "The lock is stored in the project and used by renders with this model."
        )
        intro.setWordWrap(True)

        self.method = QComboBox()
        self.method.setObjectName("lockMethod")
        for key in METHOD_HELP:
            self.method.addItem(METHOD_LABELS[key], key)
        self.method_help = QLabel()
        self.method_help.setObjectName("lockMethodHelp")
        self.method_help.setWordWrap(True)
        self.method_help.setStyleSheet("color: palette(placeholder-text);")

        self.word = QLineEdit(ctx.word)
        self.word.setObjectName("lockWord")
        self.word.setToolTip("The word of the prompt that names the object; the lock binds to it (added to the prompt when missing)")

        self.steps = QSpinBox()
        self.steps.setObjectName("lockSteps")
        self.steps.setRange(1, 20000)
        self.steps.setSingleStep(50)
        self.steps.setToolTip("Training steps: more hold the object better and take longer")

        self.mirror = QCheckBox("Allow mirrored crops")
        self.mirror.setObjectName("lockMirror")
        mirror_hint = QLabel("Mirroring flips half the crops: more varied examples, but the object's left and right swap. Leave it off for asymmetric objects.")
        mirror_hint.setWordWrap(True)
        mirror_hint.setStyleSheet("color: palette(placeholder-text);")

        self.estimate = QLabel()
        self.estimate.setObjectName("lockEstimate")
        self.warning = QLabel()
        self.warning.setObjectName("lockWarning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: palette(highlight); font-weight: 600;")

        form = QFormLayout()
        form.addRow("Method", self.method)
        form.addRow("", self.method_help)
        form.addRow("Word", self.word)
        form.addRow("Steps", self.steps)
        form.addRow("", self.mirror)
        form.addRow("", mirror_hint)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addLayout(form)
        lay.addWidget(self.estimate)
        lay.addWidget(self.warning)
        lay.addWidget(self.buttons)

        self.method.currentIndexChanged.connect(self._on_method)
        self.steps.valueChanged.connect(self._update)
        self.mirror.toggled.connect(self._update)
        self.word.textChanged.connect(self._update)
        self._on_method()

    @property
    def ok_button(self) -> QPushButton:
        btn = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        assert btn is not None
        return btn

    def chosen_method(self) -> str:
        return str(self.method.currentData())

    def set_method(self, method: str) -> None:
        self.method.setCurrentIndex(self.method.findData(method))

    def chosen_word(self) -> str:
        return " ".join(self.word.text().split()) or self.ctx.word

    def settings(self, **over) -> LockSettings:
        """The settings to learn with: the method's defaults for this model, the dialog's steps
        and mirroring, and ``over`` (any other :class:`LockSettings` field)."""
        return lock_settings(self.chosen_method(), self.ctx.world, **{"steps": self.steps.value(), "mirror": self.mirror.isChecked(), **over})

    def estimate_s(self) -> float:
        return estimate_seconds(self.settings(), self.ctx.backend, self.ctx.device)

    def _on_method(self) -> None:
        method = self.chosen_method()
        self.method_help.setText(METHOD_HELP[method])
        self.steps.blockSignals(True)
        self.steps.setValue(lock_settings(method, self.ctx.world).steps)  # the method's default for this model
        self.steps.blockSignals(False)
        self._update()

    def _update(self) -> None:
        est = self.estimate_s()
        where = _DEVICE_WORDS.get(self.ctx.device, self.ctx.device)
        self.estimate.setText(f"About {duration_text(est)} on this machine ({where}).")
        long = est > LONG_LOCK_S
        if long:
            if self.ctx.device == "cpu":
                why = f"A real-size model like {self.ctx.model} takes hours to learn on a CPU."
            else:
                why = f"A lock of {self.ctx.model} with these settings takes that long here."
            self.warning.setText(
                f"This lock would take about {duration_text(est)}. {why} Learn it on a GPU (Edit \u25b8 Settings \u25b8 Device), "
                "or use the bundled world model on its scenes; or start anyway and Cancel when you must."
            )
        else:
            self.warning.setText("")
        self.warning.setVisible(long)
        self.ok_button.setText("Start anyway" if long else "Lock")
        self.ok_button.setEnabled(bool(self.chosen_word()))


class IdentityLockMixin:
    """The identity-lock commands of :class:`editor.main_window.MainWindow` (see the module docstring)."""

    _lock_job: int | None = None

    # ----- the document's locks -----
    def _locks(self) -> dict:
        locks = self.doc.render_settings.get("locks")
        return {k: dict(v) for k, v in locks.items() if isinstance(v, dict)} if isinstance(locks, dict) else {}

    def lock_record(self, obj_id: str | None = None) -> dict | None:
        """The lock record of ``obj_id`` (default: the selected object), or None."""
        oid = self.model.selected_id if obj_id is None else obj_id
        return self._locks().get(oid) if oid else None

    def is_learning(self) -> bool:
        """Whether a lock is being learnt in the worker now."""
        return self._lock_job is not None and self._lock_job in self._task_handlers

    def lock_unavailable(self, obj_id: str | None = None) -> str:
        """Why Lock Identity cannot start now ("" when it can)."""
        oid = self.model.selected_id if obj_id is None else obj_id
        if not oid or not any(o.id == oid for o in self.scene.objects):
            return "Select an object to lock its identity."
        if self._model_name() == GEOMETRIC or not self._diffusion_ready:
            return "Locking an identity needs a diffusion model on disk: choose one in the Render panel (Help \u25b8 Models)."
        if self.is_learning():
            return "A lock is being learnt already: wait for it or Cancel it."
        return ""

    def lock_context(self, obj_id: str) -> LockContext:
        """Word, model, world settings, backend and device of a lock of ``obj_id`` now (as ``handles-studio learn``)."""
        obj = self.scene.object_by_id(obj_id)
        model = self._model_name()
        world_scene = is_world_scene(self.scene)
        world = world_scene and model == "world"
        choice = self._resolved_model()
        backend = "world" if world else (choice.backend if choice is not None else "sd2-depth")
        word = word_for(obj.name, self.scene.prompt, dict(NOUNS) if world_scene else None)
        return LockContext(obj.name, word, model, world, backend, device_kind(self.settings.device))

    # ----- commands -----
    def lock_identity_dialog(self) -> int | None:
        """Object ▸ Lock Identity…: the dialog, then the learning task (its job id, or None)."""
        reason = self.lock_unavailable()
        if reason:
            self.banner.show_message(reason, level="info", timeout_ms=8000)
            return None
        oid = self.model.selected_id
        dlg = LockIdentityDialog(self.lock_context(oid), self)
        if dlg.exec() != QDialog.DialogCode.Accepted:
            return None
        return self.start_identity_lock(oid, dlg.chosen_method(), dlg.chosen_word(), settings=dlg.settings())

    def start_identity_lock(self, obj_id: str, method: str = "custom", word: str | None = None, settings: LockSettings | None = None, **over) -> int | None:
        """Learn a lock of ``obj_id`` in the worker: ``settings``, else the method's defaults for
        this model with ``over`` (``steps=``, any :class:`LockSettings` field). Its job id, or None
        (the reason is in the banner)."""
        reason = self.lock_unavailable(obj_id)
        if reason:
            self.banner.show_message(reason, level="info", timeout_ms=8000)
            return None
        ctx = self.lock_context(obj_id)
        try:
            s = settings or lock_settings(method, ctx.world, **over)
            rs = {k: v for k, v in self.doc.render_settings.items() if k not in ("lora", "locks")}
            rs["preset"] = "default"  # as `handles-studio learn`: the model's own settings, no few-step LoRA
            request = resolve_request(self.scene, rs, self.settings, model=self._resolved_model())
        except HandlesError as exc:
            self.show_banner_error(f"Lock Identity: {exc}", cause="lock")
            return None
        if request.geometric or not request.model_path:
            self.show_banner_error(f"Lock Identity needs a diffusion model: {request.missing or 'none is chosen'}", cause="lock")
            return None
        obj = self.scene.object_by_id(obj_id)
        word = " ".join((word or ctx.word).split()) or ctx.word
        spec = TaskSpec(
            "learn",
            {"request": request.to_dict(), "word": word, "object_id": obj.id, "settings": dataclasses.asdict(s)},
            {"photo": np.ascontiguousarray(self.scene.photo), "depth": np.ascontiguousarray(self.scene.depth), "mask": np.asarray(obj.mask, bool)},
        )
        doc = self.doc
        self._lock_job = self.run_task("learn", spec, lambda result: self._on_lock_learnt(doc, obj.id, result))
        est = estimate_seconds(s, ctx.backend, ctx.device)
        self.statusBar().showMessage(
            f"Learning the identity of \u2018{obj.name}\u2019 as \u2018{word}\u2019 ({METHOD_LABELS[s.method]}, {s.steps} steps, about {duration_text(est)})"
            " \u2014 Cancel stops it",
            10000,
        )
        self._update_lock_actions()
        return self._lock_job

    def _on_lock_learnt(self, doc, obj_id: str, result) -> None:
        """The task's bytes: into the caches, the record into the locks as one undo step."""
        self._lock_job = None
        if doc is not self.doc:
            self.statusBar().showMessage("The identity lock finished for a document that is no longer open; it was dropped", 8000)
            return
        try:
            obj = self.scene.object_by_id(obj_id)
        except KeyError:
            self.statusBar().showMessage("The identity lock finished for an object that was deleted; it was dropped", 8000)
            return
        data = np.ascontiguousarray(result, dtype=np.uint8).tobytes()
        rec = record_for(data, obj_id, created=now_iso())
        self.doc.caches[rec["cache"]] = data  # the bytes stay; undo/redo switch the record
        old = self._locks()
        self._push(LockCommand(self.model, old, with_lock(old, obj_id, rec), f"Lock identity of {obj.name}"))
        self.statusBar().showMessage(f"Locked \u2018{obj.name}\u2019: {describe(rec)}. Renders with {rec['model']} use it.", 10000)
        self._update_lock_actions()

    def set_identity_lock_enabled(self, on: bool) -> None:
        """Object ▸ Identity Lock On: switch the selected object's lock for renders (undoable)."""
        oid = self.model.selected_id
        rec = self.lock_record(oid)
        if rec is None or bool(rec.get("enabled", True)) == bool(on):
            self._update_lock_actions()
            return
        old = self._locks()
        name = self.scene.object_by_id(oid).name
        self._push(
            LockCommand(self.model, old, with_lock(old, oid, {**rec, "enabled": bool(on)}), f"{'Switch on' if on else 'Switch off'} identity lock of {name}")
        )
        self._update_lock_actions()

    def remove_identity_lock(self) -> None:
        """Object ▸ Remove Identity Lock (undoable: the bytes stay in the caches until the next
        save that no undo step can bring them back from)."""
        oid = self.model.selected_id
        if self.lock_record(oid) is None:
            return
        old = self._locks()
        self._push(LockCommand(self.model, old, with_lock(old, oid, None), f"Remove identity lock of {self.scene.object_by_id(oid).name}"))
        self._update_lock_actions()

    def prune_lock_caches(self) -> list[str]:
        """Drop lock bytes from the caches that neither the locks nor an undo step refer to (before
        a save: a lock learnt again for the same object leaves the old one behind). The names dropped."""
        keep = {str(r.get("cache")) for r in self._locks().values()}
        for cmd in self.undo_stack.commands():
            if isinstance(cmd, LockCommand):
                keep |= cmd.caches()
        stale = [n for n in list(self.doc.caches) if n.startswith(CACHE_PREFIX) and n not in keep]
        for n in stale:
            del self.doc.caches[n]
        return stale

    def _update_lock_actions(self) -> None:
        """Enable and check the Object menu's lock items for the selection and the model."""
        a = getattr(self, "actions_by_name", {})
        if "lock_identity" not in a:
            return
        reason = self.lock_unavailable()
        a["lock_identity"].setEnabled(not reason)
        a["lock_identity"].setStatusTip(reason or "Teach the diffusion model the selected object, so that it stays itself when turned")
        rec = self.lock_record()
        on = a["lock_on"]
        on.blockSignals(True)
        on.setChecked(bool(rec and rec.get("enabled", True)))
        on.blockSignals(False)
        on.setEnabled(rec is not None)
        a["lock_remove"].setEnabled(rec is not None)
        note = unused_reason(rec, self._model_name()) if rec else ""
        on.setStatusTip(f"{describe(rec)}" + (f" \u2014 {note}" if note else "") if rec else "The selected object has no identity lock")
        if hasattr(self, "objects_panel"):
            self.objects_panel.set_render_model(self._model_name())

    def _lock_refused(self, what: str) -> bool:
        """True (and says so) when ``what`` would cancel the lock being learnt (one job at a time)."""
        if not self.is_learning():
            return False
        self.banner.show_message(f"An identity lock is being learnt: {what} when it is done, or Cancel it first.", level="info", timeout_ms=8000)
        return True
