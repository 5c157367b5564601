"""The window's file flows: open, new from photo, save, recent files, exports, autosave and
recovery after a crash. Changes here when a file flow changes; the file formats live in
``core`` and the Qt-free helpers in :mod:`editor.files`."""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog, QMessageBox

from core.document import PROJECT_SUFFIX, Document
from core.errors import HandlesError
from editor import files
from editor.worker import one_line

APP_TITLE = "Handles Studio"


class FileFlowsMixin:
    """Open / save / export / recovery of :class:`editor.main_window.MainWindow`."""

    def is_modified(self) -> bool:
        return (not self.undo_stack.isClean()) or self.doc.renders_modified

    def _on_undo_changed(self, _value=None) -> None:
        if not self._closing:
            self._update_title()

    def _update_title(self) -> None:
        # the document's name once: the platform adds the application's display name itself
        # (QGuiApplication.applicationDisplayName), and "[*]" shows the modified mark
        self.setWindowTitle(f"{self.doc.display_name}[*]")
        self.setWindowModified(self.is_modified())
        self.actions_by_name["save"].setEnabled(True)

    def set_document(self, doc: Document, modified: bool = False) -> None:
        self.worker.cancel()
        self._render_job = None
        self.undo_stack.clear()
        self.clear_banner()  # whatever went wrong before concerned the previous document
        self.model.reset(doc)
        if modified:
            doc.renders_modified = True
        self._check_models()
        self.show_latest_render()
        self._update_title()

    def maybe_save(self) -> bool:
        """Ask to save unsaved changes; False when the user cancels."""
        self.render_panel.commit_pending()
        if not self.is_modified():
            return True
        ans = QMessageBox.warning(
            self,
            APP_TITLE,
            f"Save the changes to \u201c{self.doc.display_name}\u201d?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save,
        )
        if ans == QMessageBox.StandardButton.Save:
            return self.save()
        return ans == QMessageBox.StandardButton.Discard

    def open_path(self, path: str | Path) -> bool:
        """Open a project, a scene folder or a photo (new project). Errors go to the banner."""
        path = Path(path)
        kind = files.classify(path)
        if kind == "photo":
            return self.new_from_photo(path)
        try:  # read it first: a file that cannot be opened changes nothing and asks nothing
            doc = files.open_document(path, self.settings.working_resolution)
        except HandlesError as exc:
            self.show_banner_error(str(exc), cause="open")
            return False
        except Exception as exc:  # noqa: BLE001 - a damaged file must never crash the editor
            self.show_banner_error(f"{path}: cannot open ({one_line(exc)})", traceback.format_exc(), cause="open")
            return False
        if not self.maybe_save():
            return False
        self.set_document(doc)
        if kind == "project":
            self._add_recent(path)
        self.statusBar().showMessage(f"Opened {path}", 4000)
        return True

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open", self._dialog_dir(), files.OPEN_FILTER)
        if path:
            self.open_path(path)

    def open_sample(self) -> None:
        if self.maybe_save():
            from editor.main_window import sample_document

            doc = sample_document()
            doc.render_settings.update(self._default_render_settings(doc.scene))
            self.set_document(doc)

    def new_from_photo_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "New from photo", self._dialog_dir(), files.PHOTO_FILTER)
        if path:
            self.new_from_photo(path)

    def new_from_photo(self, path: str | Path, depth_path: str | Path | None = None) -> bool:
        """New project from a photo: depth from ``depth_path``, else the depth model (in the worker),
        else a depth file the user picks, else the sample scene."""
        if not self.maybe_save():
            return False
        path = Path(path)
        res = self.settings.working_resolution
        from core.io import scene_from_photo

        try:
            if depth_path is not None:
                scene = scene_from_photo(path, Path(depth_path), long_side=res)
                self._start_document(scene)
                return True
            model = files.depth_model_on_disk(self.settings.depth_model, self.settings.model_folders)
            if model:
                scene = scene_from_photo(path, None, long_side=res)
                job_scene = scene

                def done(depth) -> None:
                    from core.io import prepare_depth

                    job_scene.depth = prepare_depth(depth, size=job_scene.size, source=f"depth from {model}")
                    job_scene.depth_source = f"estimated:{model}"
                    self._start_document(job_scene)

                self.run_task("depth", files.depth_task(scene.photo, model, self.settings.device, self.settings.model_folders), done)
                self.statusBar().showMessage(f"Estimating depth with {model}\u2026", 5000)
                return True
        except HandlesError as exc:
            self.show_banner_error(str(exc), cause="open")
            return False
        # no depth model: ask for a depth file, else offer the sample
        box = QMessageBox(self)
        box.setWindowTitle("Depth needed")
        box.setIcon(QMessageBox.Icon.Question)
        box.setText(f"No depth model is on disk to estimate the depth of \u201c{path.name}\u201d.")
        box.setInformativeText(
            "Choose a depth map for it (EXR, 16-bit PNG, TIFF or .npy), or open the sample scene. Edit \u2192 Models shows how to fetch a depth model."
        )
        pick = box.addButton("Choose Depth File\u2026", QMessageBox.ButtonRole.AcceptRole)
        sample = box.addButton("Open Sample Scene", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        if clicked == pick:
            dpath, _ = QFileDialog.getOpenFileName(self, "Depth map", str(path.parent), files.DEPTH_FILTER)
            if dpath:
                try:
                    scene = scene_from_photo(path, Path(dpath), long_side=res)
                except HandlesError as exc:
                    self.show_banner_error(str(exc), cause="open")
                    return False
                self._start_document(scene)
                return True
            return False
        if clicked == sample:
            self.open_sample()
            return True
        return False

    def _start_document(self, scene) -> None:
        doc = Document(scene=scene)
        doc.render_settings.update(self._default_render_settings(doc.scene))
        self.set_document(doc)

    def save(self) -> bool:
        if self.doc.path is None or Path(self.doc.path).suffix.lower() != PROJECT_SUFFIX:
            return self.save_as()
        return self.save_to(self.doc.path)

    def save_as(self) -> bool:
        start = str(Path(self._dialog_dir()) / (self.doc.display_name + PROJECT_SUFFIX))
        path, _ = QFileDialog.getSaveFileName(self, "Save project", start, files.PROJECT_FILTER)
        if not path:
            return False
        if not path.lower().endswith(PROJECT_SUFFIX):
            path += PROJECT_SUFFIX
        return self.save_to(path)

    def save_to(self, path: str | Path) -> bool:
        self.render_panel.commit_pending()
        self.prune_lock_caches()  # a lock learnt again leaves the old bytes behind: not saved once no undo step needs them
        try:
            self.doc.save(path)
        except HandlesError as exc:
            self.show_banner_error(str(exc), cause="save")
            return False
        except Exception as exc:  # noqa: BLE001
            self.show_banner_error(f"{path}: cannot save ({one_line(exc)})", traceback.format_exc(), cause="save")
            return False
        self.undo_stack.setClean()
        self.clear_banner("save")
        self.recovery.discard_autosave()
        self._add_recent(path)
        self._update_title()
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    def _dialog_dir(self) -> str:
        if self.doc.path is not None:
            return str(Path(self.doc.path).parent)
        if self.settings.recent_files:
            return str(Path(self.settings.recent_files[0]).parent)
        return str(Path.home())

    def _add_recent(self, path) -> None:
        self.settings.add_recent(path)
        self._update_recent_menu()
        self._save_settings()

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        for p in self.settings.recent_files:
            act = self.recent_menu.addAction(Path(p).name)
            act.setToolTip(p)
            act.setStatusTip(p)
            act.triggered.connect(lambda _c=False, path=p: self.open_path(path))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))

    def current_image(self) -> np.ndarray:
        img = self.photo.image()
        return np.asarray(img if img is not None else self.scene.photo)

    def _export(self, title: str, filt: str, suffix: str, fn) -> None:
        start = str(Path(self._dialog_dir()) / (self.doc.display_name + suffix))
        path, _ = QFileDialog.getSaveFileName(self, title, start, filt)
        if not path:
            return
        try:
            out = fn(path)
        except HandlesError as exc:
            self.show_banner_error(str(exc), cause="export")
            return
        except Exception as exc:  # noqa: BLE001
            self.show_banner_error(f"{path}: export failed ({one_line(exc)})", traceback.format_exc(), cause="export")
            return
        self.clear_banner("export")
        self.statusBar().showMessage(f"Exported {out}", 5000)

    def export_image_dialog(self) -> None:
        img = self.current_image()
        self._export("Export edited image", "PNG image (*.png);;JPEG image (*.jpg *.jpeg)", "-edited.png", lambda p: files.export_image(p, img))

    def export_render_dialog(self, render_id: str) -> None:
        img = self.doc.render_by_id(render_id).image
        self._export("Export render", "PNG image (*.png);;JPEG image (*.jpg *.jpeg)", "-render.png", lambda p: files.export_image(p, img))

    def export_depth_dialog(self) -> None:
        self._export(
            "Export edited depth",
            "OpenEXR (*.exr);;16-bit PNG (*.png);;NumPy (*.npy)",
            "-depth.exr",
            lambda p: files.export_depth(p, files.edited_depth(self.scene)),
        )

    def export_ply_dialog(self) -> None:
        self._export("Export point cloud", "PLY point cloud (*.ply)", ".ply", lambda p: files.export_ply(p, self.scene))

    def export_transforms_dialog(self) -> None:
        self._export("Export transforms.json", "transforms.json (*.json)", "-transforms.json", lambda p: files.export_transforms(p, self.scene))

    def autosave(self) -> bool:
        """Write the recovery file when something changed since the last autosave."""
        if not self.is_modified():
            return False
        marker = (self.undo_stack.index(), len(self.doc.renders), id(self.doc))
        if marker == getattr(self, "_autosave_marker", None):
            return False
        try:
            self.recovery.autosave(self.doc)
        except Exception as exc:  # noqa: BLE001 - autosave problems are reported, never fatal
            self.statusBar().showMessage(f"Autosave failed: {one_line(exc)}", 8000)
            return False
        self._autosave_marker = marker
        return True

    def _apply_autosave_interval(self) -> None:
        minutes = self.settings.autosave_minutes
        if minutes > 0:
            self._autosave_timer.start(int(minutes * 60_000))
        else:
            self._autosave_timer.stop()

    def offer_recovery(self) -> bool:
        """After a crash: offer to reopen the newest autosave. True when one was recovered."""
        found = self.recovery.find_recoverable()
        if not found:
            return False
        rec = found[0]
        name = Path(rec.original).name if rec.original else "an unsaved project"
        when = rec.saved_at.replace("T", " ")[:19] if rec.saved_at else "earlier"
        ans = QMessageBox.question(
            self,
            "Recover unsaved work",
            f"Handles Studio did not close normally. Recover the autosave of {name} from {when}?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.Yes,
        )
        if ans != QMessageBox.StandardButton.Yes:
            for r in found:
                self.recovery.discard(r)
            return False
        try:
            doc = Document.load(rec.autosave)
        except HandlesError as exc:
            self.show_banner_error(f"The autosave cannot be recovered: {exc}", cause="open")
            return False
        doc.path = Path(rec.original) if rec.original else None
        self.set_document(doc, modified=True)
        for r in found:
            self.recovery.discard(r)
        self.autosave()
        self.statusBar().showMessage("Recovered the autosave: save it to keep it", 8000)
        return True
