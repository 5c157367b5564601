"""Rendering in the window: the model status, the one resolved request, the worker's events,
the render history's show / restore / compare. Changes here when the render flow changes.

The request is built by :func:`core.request.resolve_request` (the same function the CLI uses);
the model is resolved once per model or folder change (:meth:`RenderMixin._check_models`), not
per drag, and the request carries it to the worker. A missing ControlNet, or the turbo preset's
missing LoRA, is said in the render panel with its fetch command, as a missing model is.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback

from PySide6.QtCore import QTimer

from core.jobs import GEOMETRIC, Cancelled, Error, Finished, Preview, Progress, Queued, RenderRequest
from core.request import TURBO, LoraChoice, ModelChoice, chosen_model, default_model, find_lora, find_model, resolve_request
from core.scene import SceneObject
from core.transform import Transform3D
from core.world import is_world_scene
from editor.undo import PromptCommand, SettingCommand, TransformCommand
from editor.worker import TaskDone, TaskSpec, one_line


class RenderMixin:
    """The render side of :class:`editor.main_window.MainWindow` (see the module docstring)."""

    def _default_render_settings(self, scene) -> dict:
        """The user's render defaults for a new document; a scene of the procedural world (the
        sample) renders with the bundled world model, which knows it."""
        s = self.settings
        return {"model": default_model(scene, s), "preset": s.default_preset, "steps": s.default_steps}

    def _model_name(self) -> str:
        return chosen_model(self.scene, self.doc.render_settings, self.settings)

    def _resolved_model(self) -> ModelChoice | None:
        """The current model, resolved on disk once per (model, folders) and reused by every request."""
        name = self._model_name()
        if name == GEOMETRIC:
            return None
        key = (name, tuple(self.settings.model_folders), os.environ.get("HANDLES_MODEL_DIRS", ""))
        cached = getattr(self, "_model_choice", None)
        if cached is None or cached[0] != key:
            cached = (key, find_model(name, self.settings.model_folders))
            self._model_choice = cached
        return cached[1]

    def _refresh_model_picker(self) -> None:
        """Every renderer in the picker with its state, size and licence (after a folder change)."""
        try:
            from editor.dialogs import renderer_items

            self.render_panel.set_models(renderer_items(self.settings.model_folders))
        except Exception as exc:  # noqa: BLE001 - a broken catalog leaves the plain names
            self.render_panel.model_combo.setToolTip(f"The model catalog cannot be read: {one_line(exc)}")

    def _on_render_setting_changed(self, key: str, _value) -> None:
        """A model or preset change (an edit, an undo, a restored render) says again what renders."""
        if key == "model":
            self._check_models()
        elif key == "preset":
            self._check_models(rescan=False)

    def _check_models(self, rescan: bool = True) -> None:
        """Say in the render panel which renderer Render will use (and what to fetch if none).
        ``rescan``: resolve the model again and refresh the picker (a model or folder change; a
        preset change keeps the resolved model). The Object menu's identity-lock items follow."""
        if rescan:
            self._model_choice = None
            self._refresh_model_picker()
        self._show_model_status()
        self._update_lock_actions()

    def _show_model_status(self) -> None:
        model = self._model_name()
        if self._custom_renderer:
            self._diffusion_ready = True
            self.render_panel.set_model_status("Renderer provided by the host application.")
            self.status_renderer.setText("renderer: custom")
            return
        if model == GEOMETRIC:
            self._diffusion_ready = False
            self.render_panel.set_backend("", None)
            self.render_panel.set_model_status("Render gives the instant geometric preview (no model).")
            self.status_renderer.setText("renderer: geometric")
            return
        try:
            choice = self._resolved_model()
        except Exception as exc:  # noqa: BLE001 - never let a model check stop the editor
            self._diffusion_ready = False
            self.render_panel.set_model_status(f"Model check failed: {one_line(exc)}", ok=False)
            self.status_renderer.setText("renderer: geometric")
            return
        assert choice is not None
        self.render_panel.set_backend(choice.backend, choice.native_resolution, choice.turbo_lora)
        if not choice.found:
            self._diffusion_ready = False
            self._show_missing_model(model, choice.error, choice.fetch_command, "Render shows the geometric preview", part=choice.missing_part)
            self.status_renderer.setText("renderer: geometric (no ControlNet)" if choice.missing_part else "renderer: geometric (no diffusion model)")
            return
        lora = self._missing_turbo_lora(choice)
        if lora is not None:
            self._diffusion_ready = False
            self._show_missing_model(model, lora.error, lora.fetch_command, "Render shows the geometric preview", part=lora.name, kind="the LoRA")
            self.status_renderer.setText("renderer: geometric (no LoRA)")
            return
        self._diffusion_ready = True
        if choice.world_only and not is_world_scene(self.scene):
            self.render_panel.set_model_status(
                f"{model} knows only its procedural world (the sample's floor, wall, boxes, balls and cylinders): "
                "on this photo it cannot give a real render. Choose a real model such as sd2-depth (Help ▸ Models).",
                ok=False,
            )
            self.status_renderer.setText(f"renderer: {model} (world scenes only)")
            return
        where = f" ({choice.where})" if choice.where else ""
        extra = f" with {choice.controlnet}" if choice.controlnet else ""
        self.render_panel.set_model_status(f"{model}{extra}: {choice.path}{where}")
        self.status_renderer.setText(f"renderer: {model} \u00b7 {self.settings.device}")

    def _missing_turbo_lora(self, choice: ModelChoice) -> LoraChoice | None:
        """The turbo preset's LoRA when the document renders with it and it is not on disk, else None."""
        rs = self.doc.render_settings
        if str(rs.get("preset") or "") != TURBO or rs.get("lora") or not choice.turbo_lora:
            return None
        lc = find_lora(choice.turbo_lora, choice, self.settings.model_folders, f"the turbo preset of '{choice.name}'")
        return None if lc.found else lc

    def _show_missing_model(self, model: str, error: str, fetch: str, what: str, part: str = "", kind: str = "its depth ControlNet") -> None:
        """Say what is missing and copy-ready how to fetch it: the model, or the ``part`` it needs
        (``kind``: its depth ControlNet, the LoRA)."""
        self._model_message = error
        if part:
            state = "not on disk" if fetch else error
            text = f"{model} needs {kind} {part} ({state}): {what}. Fetch {part} to render with Diffusion Handles."
        else:
            text = f"No diffusion model on disk: {what}. Fetch {model} to render with Diffusion Handles" + ("." if fetch else f": {error}")
        self.render_panel.set_model_status(text, fetch, ok=False)

    def _auto_render_possible(self) -> bool:
        return self._diffusion_ready and self._model_name() != GEOMETRIC and not self.is_learning()

    def build_request(self) -> RenderRequest:
        """The one request for the current state (:func:`core.request.resolve_request`)."""
        scene = self.scene
        if not hasattr(self, "_scene_id") or self._scene_id[0] is not scene:
            self._scene_id = (scene, scene.content_id())
        return resolve_request(scene, self.doc.render_settings, self.settings, scene_id=self._scene_id[1], model=self._resolved_model())

    def _snapshot(self):
        """A copy of the scene the worker may read while the user goes on editing."""
        s = self.scene
        objects = [SceneObject(name=o.name, mask=o.mask, transform=o.transform, visible=o.visible, id=o.id) for o in s.objects]
        return dataclasses.replace(s, objects=objects, variants=dict(s.variants))

    def request_render(self) -> int | None:
        """Render the current state (latest wins); None while an identity lock is being learnt
        (a render would cancel it: one job at a time)."""
        self.render_panel.commit_pending()
        if self._lock_refused("render"):
            return None
        request = self.build_request()
        key = request.key()
        if self._render_job is not None and key == self._render_key and self.worker.current_job() == self._render_job:
            return self._render_job  # this very render is under way (say an auto-render): keep it, do not start over
        self._render_key = key
        self._render_job = self.worker.submit(self._snapshot(), request, caches=self.doc.caches)
        self._render_started = time.monotonic()
        self.render_panel.set_running(True)
        return self._render_job

    def cancel_render(self) -> None:
        self.worker.cancel()

    def run_task(self, name: str, fn, on_done) -> int | None:
        """Run ``fn(emit, token)`` in the worker; ``on_done(result)`` runs in the GUI thread. None
        while an identity lock is being learnt (the task would cancel it), except for a new
        photo's depth: a new document ends the lock anyway."""
        if name not in ("learn", "depth") and self._lock_refused(name):
            return None
        job = self.worker.submit_task(name, fn)
        self._task_job = job
        self._task_handlers = {job: on_done}
        self.render_panel.set_running(True)
        return job

    def _on_worker_event(self, job: int, ev) -> None:
        if job in self._task_handlers:
            self._on_task_event(job, ev)
            return
        if job != self._render_job:
            return  # an older request: it was superseded
        if isinstance(ev, Queued):
            self.render_panel.set_running(True)
        elif isinstance(ev, Progress):
            self.render_panel.show_progress(ev.stage, ev.step, ev.total, ev.eta_s, ev.message)
        elif isinstance(ev, Preview):
            self.render_panel.show_step_preview(ev.image, ev.step, ev.total)
        elif isinstance(ev, Finished):
            self._on_render_finished(ev)
        elif isinstance(ev, Cancelled):
            self.render_panel.show_idle("Cancelled")
            self._render_job = None
        elif isinstance(ev, Error):
            self.render_panel.show_idle("Render failed")
            self.show_banner_error(f"Render failed: {ev.message}", ev.details, cause="render")
            self._render_job = None

    def _on_task_event(self, job: int, ev) -> None:
        if isinstance(ev, Progress):
            self.render_panel.show_progress(ev.stage, ev.step, ev.total, ev.eta_s, ev.message)
        elif isinstance(ev, TaskDone):
            handler = self._task_handlers.pop(job, None)
            self.render_panel.show_idle("Done")
            if handler is not None:
                try:
                    handler(ev.result)
                except Exception as exc:  # noqa: BLE001 - a task's result handler failing is shown, never a crash
                    self.banner.show_error(one_line(exc), traceback.format_exc())
        elif isinstance(ev, Error):
            self._task_handlers.pop(job, None)
            self.render_panel.show_idle("Failed")
            self.banner.show_error(ev.message, ev.details)
        elif isinstance(ev, Cancelled):
            self._task_handlers.pop(job, None)
            self.render_panel.show_idle("Cancelled")
        if not isinstance(ev, Progress):
            self._update_lock_actions()  # a lock that ended lets Lock Identity start again

    def _on_render_finished(self, ev: Finished) -> None:
        info = dict(ev.info)
        if ev.blobs:
            # keep one identity per project (the current photo's): it is ~100 MB at 512 px
            for name in [n for n in self.doc.caches if n.startswith("identity:")]:
                del self.doc.caches[name]
            self.doc.caches.update(ev.blobs)
        rec = self.model.add_render(ev.image, ev.request.to_dict(), info)
        self._render_job = None
        secs = time.monotonic() - self._render_started
        geometric = bool(info.get("geometric"))
        self.render_panel.show_done(("Geometric preview" if geometric else "Rendered") + f" in {secs:.1f} s")
        if self.render_matches_scene(ev.request.to_dict()):
            self.show_render(rec.id)
            self.history_panel.select_render(rec.id)
        else:  # the user moved on while it rendered: keep the live preview, the render is in History
            self.statusBar().showMessage(f"Render #{len(self.doc.renders)} finished for an earlier state: see History", 6000)
        if ev.request.missing:
            req = ev.request
            current = getattr(self, "_model_choice", None)
            if req.lora:  # a geometric request with a LoRA: the LoRA is what is missing
                part, kind = req.lora, "the LoRA"
            else:
                choice = current[1] if current is not None and current[1].name == req.model else None
                part, kind = (choice.missing_part if choice is not None else ""), "its depth ControlNet"
            self._show_missing_model(req.model, req.missing, req.fetch_command, "this render is the geometric preview", part=part, kind=kind)
        self.clear_banner("render")
        self.renderFinished.emit(rec)

    def render_matches_scene(self, request: dict) -> bool:
        """Whether a stored render's request shows the objects where they are now."""
        try:
            req = RenderRequest.from_dict(request or {})
        except Exception:  # noqa: BLE001 - a damaged record matches nothing
            return False
        for obj in self.scene.objects:
            if not obj.visible:
                continue
            d = req.transform_of(obj.id, obj.name)
            t = Transform3D.from_dict(d) if d else Transform3D()
            if t != obj.transform:
                return False
        return True

    def show_latest_render(self) -> bool:
        """A reopened project shows (and exports) its last render when it matches the objects."""
        for rec in reversed(self.doc.renders):
            if self.render_matches_scene(rec.request):
                self.show_render(rec.id)
                self.history_panel.select_render(rec.id)
                return True
            break
        return False

    def show_render(self, render_id: str) -> None:
        try:
            rec = self.doc.render_by_id(render_id)
        except KeyError:
            return
        idx = next(i for i, r in enumerate(self.doc.renders) if r.id == render_id) + 1
        self.photo.set_image(rec.image)
        self.photo.set_hole(None)
        geometric = (rec.info or {}).get("geometric")
        label = f"Render #{idx}" + (
            " \u2014 geometric preview (no diffusion model)"
            if geometric and (rec.info or {}).get("model_missing")
            else " \u2014 geometric preview"
            if geometric
            else ""
        )
        self.photo.set_caption(label)
        self._display = render_id

    def restore_render(self, render_id: str) -> None:
        """Put a render's transforms, prompt and settings back as one undo step, and show it."""
        rec = self.doc.render_by_id(render_id)
        req = rec.request or {}
        request = RenderRequest.from_dict(req)
        self.undo_stack.beginMacro("Restore render")
        for obj in self.scene.objects:
            d = request.transform_of(obj.id, obj.name)  # by id: a renamed object keeps its transform
            t = Transform3D.from_dict(d) if d else Transform3D()
            if obj.transform != t:
                self.undo_stack.push(TransformCommand(self.model, obj.id, obj.transform, t))
        if req.get("prompt", self.scene.prompt) != self.scene.prompt:
            self.undo_stack.push(PromptCommand(self.model, self.scene.prompt, req["prompt"]))
        rs = self.doc.render_settings
        for key in ("seed", "steps"):
            if key in req and req[key] != rs.get(key):
                self.undo_stack.push(SettingCommand(self.model, key, rs.get(key), req[key]))
        if req.get("preset") and req["preset"] != GEOMETRIC and req["preset"] != rs.get("preset"):
            self.undo_stack.push(SettingCommand(self.model, "preset", rs.get("preset"), req["preset"]))
        self.undo_stack.endMacro()
        QTimer.singleShot(0, self, lambda: self.show_render(render_id))

    def compare_render(self, render_id: str) -> None:
        self.show_render(render_id)
        self.set_compare(True)

    def _set_auto_render(self, on: bool) -> None:
        self.settings.auto_render = bool(on)
        for w in (self.actions_by_name.get("auto_render"), self.render_panel.auto):
            if w is not None and w.isChecked() != bool(on):
                w.blockSignals(True)
                w.setChecked(bool(on))
                w.blockSignals(False)

    def free_model_memory(self) -> int | None:
        """Unload every cached model in the engine (a running render is cancelled: latest wins)."""
        return self.run_task(
            "free memory", TaskSpec("unload"), lambda n: self.statusBar().showMessage(f"Freed {n} loaded model(s); they load again when needed", 6000)
        )
