"""The main window: photo panel and 3D view side by side, objects / render / history panels,
menus, toolbars, status bar; the glue between the document, the undo stack and the render worker.

Data flow (see ARCHITECTURE.md): every change to the document goes through an undo command
(``editor.undo``) that calls :class:`editor.model.DocumentModel`, whose signals refresh the views.
A drag in the 3D view writes the object's transform on the scene on every mouse move
(``transformPreview``): the window recomputes the geometric preview (``core.preview``) right away
and shows it in the photo panel. At the end of the drag (``transformCommitted``) one undo step is
recorded and, with auto-render on, a render request goes to the worker thread
(``editor.worker``), which answers with events. The GUI thread never waits for model work.
"""

from __future__ import annotations

import os
import time
import traceback

from PySide6.QtCore import QByteArray, QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QApplication, QDockWidget, QLabel, QMainWindow, QMessageBox, QSplitter, QVBoxLayout, QWidget

from core.document import Document
from core.settings import Settings, load_settings, save_settings
from core.transform import Transform3D
from editor import files
from editor.actions import ActionsMixin
from editor.banner import Banner
from editor.file_flows import APP_TITLE, FileFlowsMixin
from editor.history_panel import HistoryPanel
from editor.identity_lock import IdentityLockMixin
from editor.model import DocumentModel
from editor.object_edits import ObjectEditsMixin
from editor.objects_panel import ObjectsPanel, object_colour
from editor.photo_view import PhotoView
from editor.render_controller import RenderMixin
from editor.render_panel import RenderPanel
from editor.tools import ToolsMixin
from editor.undo import BoundedUndoStack, PromptCommand, TransformCommand, VisibilityCommand
from editor.worker import ModelRendererFactory, RenderWorker, TaskSpec, one_line
from viewport.protocol import CloudView

__all__ = ["APP_TITLE", "MainWindow", "gl_available", "sample_document"]


def gl_available() -> bool:
    """Whether an OpenGL context can be created on this platform (False on Qt's offscreen one)."""
    import os

    if os.environ.get("HANDLES_STUDIO_NO_GL") == "1":
        return False
    app = QApplication.instance()
    if app is None or app.platformName() in ("offscreen", "minimal"):
        return False
    try:
        from PySide6.QtGui import QOffscreenSurface, QOpenGLContext

        ctx = QOpenGLContext()
        if not ctx.create():
            return False
        surf = QOffscreenSurface()
        surf.create()
        ok = ctx.makeCurrent(surf)
        if ok:
            ctx.doneCurrent()
        return bool(ok)
    except Exception:  # noqa: BLE001 - any failure means "no GL"
        return False


def sample_document() -> Document:
    from core.sample import sample_scene

    scene = sample_scene()
    if not scene.prompt:
        scene.prompt = "a box, a sphere and a cylinder on a floor in front of a wall"
    return Document(scene=scene)


class MainWindow(ActionsMixin, RenderMixin, FileFlowsMixin, ObjectEditsMixin, ToolsMixin, IdentityLockMixin, QMainWindow):
    """The editor window. ``renderer_factory``: ``factory(request) -> Renderer`` run in the worker
    (default: :class:`editor.worker.ModelRendererFactory`); ``use_gl``: force the OpenGL 3D view on
    or off (default: when a GL context can be created); ``persist``: settings load from and save
    to the user's config dir (False keeps them in memory).

    Its parts, one reason to change each: :mod:`editor.actions` (commands, menus, toolbars),
    :mod:`editor.render_controller` (model status, the request, the worker's events, history),
    :mod:`editor.file_flows` (open, save, export, recovery), :mod:`editor.object_edits` (undoable
    edits), :mod:`editor.tools` (tool state), :mod:`editor.identity_lock` (identity locks: learn,
    switch, remove); this file builds the window and keeps the views in step with the document."""

    #: a render finished and was added to the history (its record)
    renderFinished = Signal(object)

    def __init__(
        self,
        document: Document | None = None,
        *,
        settings: Settings | None = None,
        renderer_factory=None,
        use_gl: bool | None = None,
        recovery: files.RecoveryManager | None = None,
        persist: bool = True,
    ) -> None:
        super().__init__()
        self.setObjectName("HandlesStudioMainWindow")
        self.persist = persist
        from editor import warm

        warm.start()  # drag kernels and first-render modules, while the window comes up
        self.settings = settings if settings is not None else (load_settings() if persist else Settings())
        self._custom_renderer = renderer_factory is not None
        self.renderer_factory = renderer_factory or ModelRendererFactory()
        doc = document or sample_document()
        if document is None:
            doc.render_settings.update(self._default_render_settings(doc.scene))
        self.model = DocumentModel(doc, self)
        self.undo_stack = BoundedUndoStack(self.settings.undo_limit, self.settings.undo_memory_mb << 20, self)
        # the real engine runs in a process of its own (HANDLES_ENGINE=thread: in this one)
        in_process = not self._custom_renderer and os.environ.get("HANDLES_ENGINE", "process") != "thread"
        self.worker = RenderWorker(self.renderer_factory, self, engine_process=in_process)
        self.recovery = recovery if recovery is not None else files.RecoveryManager()
        self.recovery.start()
        self._render_job: int | None = None
        self._render_key: str | None = None  # the request key of _render_job
        self._drag_start: dict = {}  # object id -> transform before the drag in progress
        self._task_job: int | None = None
        self._task_handlers: dict[int, object] = {}
        self._render_started = 0.0
        self._display: str = "preview"  # "preview" or a render id
        self._diffusion_ready = False
        self._model_message = ""
        self._last_preview_ms = 0.0
        self._autosaved_index = -1
        self._closing = False
        self._segment_hint = "Click-to-segment needs a SAM model (Edit \u2192 Models)."

        self._build_views(use_gl)
        self._build_panels()
        self._build_actions()
        self._build_menus()
        self._build_toolbars()
        self._build_statusbar()
        self._connect()
        self.setAcceptDrops(True)
        self.resize(1480, 920)
        self._restore_window_state()
        self._load_document_into_views()
        self._check_models()
        self._autosave_timer = QTimer(self)
        self._autosave_timer.timeout.connect(self.autosave)
        self._apply_autosave_interval()

    # ================================================================ construction
    def _build_views(self, use_gl: bool | None) -> None:
        self.photo = PhotoView()
        self.photo.setObjectName("photoView")
        # light tints: the photo stays readable; the selected object is drawn stronger
        self.photo.set_tool_option("mask_opacity", 0.16)
        self.photo.setToolTip("")
        if use_gl is None:
            use_gl = gl_available()
        self.view3d: CloudView | None = None
        if use_gl:
            try:
                from viewport.view import PointCloudView

                self.view3d = PointCloudView()
            except Exception as exc:  # noqa: BLE001 - fall back to the software view
                self._startup_error = (f"3D view: OpenGL view unavailable ({one_line(exc)}); using the software view", traceback.format_exc())
        if self.view3d is None:
            from editor.soft_view import SoftCloudView

            self.view3d = SoftCloudView()
        self.view3d.setObjectName("view3d")
        self.uses_gl = bool(self.view3d.uses_gl)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("viewSplitter")
        self.splitter.addWidget(self._titled(self.photo, "Photo"))
        self.splitter.addWidget(self._titled(self.view3d, "3D"))
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setHandleWidth(5)

        self.banner = Banner()
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.banner)
        lay.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

    def _titled(self, widget: QWidget, title: str) -> QWidget:
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        label = QLabel(title)
        label.setObjectName("paneTitle")
        label.setContentsMargins(10, 4, 10, 4)
        label.setStyleSheet(
            "QLabel#paneTitle { font-weight: 600; color: palette(window-text); background: palette(window); border-bottom: 1px solid palette(mid); }"
        )
        lay.addWidget(label)
        lay.addWidget(widget, 1)
        return box

    def _build_panels(self) -> None:
        models = []
        try:
            from core.ml import store

            models = [
                (e.name, f"{e.name} (bundled, world scenes only)" if e.world_only else f"{e.name} ({e.repo.split('/')[-1]})")
                for e in store.catalog()
                if e.role == "renderer"
            ]
        except Exception:  # noqa: BLE001 - a broken catalog leaves the default entry
            models = []
        self.objects_panel = ObjectsPanel(self.model)
        self.render_panel = RenderPanel(self.model, models or None)
        self.history_panel = HistoryPanel(self.model)
        self.objects_dock = self._dock("Objects", self.objects_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.render_dock = self._dock("Render", self.render_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.history_dock = self._dock("History", self.history_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.resizeDocks([self.objects_dock, self.render_dock], [340, 340], Qt.Orientation.Horizontal)
        self.resizeDocks([self.objects_dock, self.render_dock], [300, 520], Qt.Orientation.Vertical)
        self.resizeDocks([self.history_dock], [150], Qt.Orientation.Vertical)
        self.render_panel.auto.setChecked(self.settings.auto_render)

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"{title.lower()}Dock")
        d.setWidget(widget)
        d.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        self.addDockWidget(area, d)
        return d

    def _build_statusbar(self) -> None:
        sb = self.statusBar()
        self.status_cursor = QLabel()
        self.status_zoom = QLabel()
        self.status_preview = QLabel()
        self.status_renderer = QLabel()
        self.status_renderer.setObjectName("statusRenderer")
        self.status_engine = QLabel()
        self.status_engine.setObjectName("statusEngine")
        self.worker.engineState.connect(self._on_engine_state)
        self._on_engine_state(self.worker.engine.state if self.worker.engine is not None else "")
        for w in (self.status_cursor, self.status_zoom, self.status_preview, self.status_renderer, self.status_engine):
            w.setContentsMargins(6, 0, 6, 0)
            sb.addPermanentWidget(w)

    def _on_engine_state(self, state: str) -> None:
        """The engine process's state in the status bar (nothing when the engine runs in-thread)."""
        text = {
            "starting": "Engine starting\u2026",
            "idle": "Engine idle",
            "busy": "Engine busy",
            "restarting": "Engine restarting\u2026",
            "stopped": "Engine stopped",
        }
        self.status_engine.setText(text.get(state, ""))
        self.status_engine.setToolTip("Renders, depth estimation and segmentation run in the engine's own process" if state else "")

    def _connect(self) -> None:
        m = self.model
        m.documentReset.connect(self._load_document_into_views)
        m.objectsChanged.connect(self._on_objects_changed)
        m.transformChanged.connect(self._on_transform_changed)
        m.maskChanged.connect(self._on_mask_changed)
        m.selectionChanged.connect(self._on_selection_changed)
        m.rendersChanged.connect(self._update_title)
        self.undo_stack.cleanChanged.connect(self._on_undo_changed)
        self.undo_stack.indexChanged.connect(self._on_undo_changed)
        # views
        self.view3d.transformPreview.connect(self._on_drag_preview)
        self.view3d.transformCommitted.connect(self._on_drag_committed)
        self.view3d.dragCancelled.connect(self._on_drag_cancelled)
        self.view3d.objectPicked.connect(lambda oid: self.model.select(oid or ""))
        self.photo.maskEdited.connect(self._on_mask_edited)
        self.photo.segmentClicked.connect(self._on_segment_click)
        self.photo.cursorMoved.connect(self._on_cursor)
        self.photo.zoomChanged.connect(lambda z: self.status_zoom.setText(f"{z * 100:.0f}%"))
        self.photo.hint.connect(lambda t: self.statusBar().showMessage(t, 5000))
        self.photo.toolOptionChanged.connect(self._on_photo_option)
        # panels
        op = self.objects_panel
        op.selectRequested.connect(self.model.select)
        op.renameRequested.connect(self.rename_object)
        op.visibilityRequested.connect(lambda oid, v: self._push(VisibilityCommand(self.model, oid, v)))
        op.transformRequested.connect(self.set_object_transform)
        op.resetRequested.connect(lambda oid: self.set_object_transform(oid, Transform3D()))
        op.deleteRequested.connect(self.delete_object)
        op.addRequested.connect(self._add_object_hint)
        rp = self.render_panel
        rp.renderRequested.connect(self.request_render)
        rp.cancelRequested.connect(self.cancel_render)
        rp.promptEdited.connect(lambda old, new: self._push(PromptCommand(self.model, old, new)))
        rp.settingEdited.connect(self._on_setting_edited)
        self.model.renderSettingChanged.connect(self._on_render_setting_changed)  # edits, undo, restore: the model status follows
        for sig in (m.selectionChanged, m.objectsChanged, m.renderSettingChanged, m.documentReset):
            sig.connect(lambda *_a: self._update_lock_actions())  # the Object menu's lock items follow
        rp.autoRenderToggled.connect(self._set_auto_render)
        hp = self.history_panel
        hp.showRequested.connect(self.show_render)
        hp.restoreRequested.connect(self.restore_render)
        hp.compareRequested.connect(self.compare_render)
        hp.exportRequested.connect(self.export_render_dialog)
        hp.deleteRequested.connect(self.model.remove_render)
        self.worker.event.connect(self._on_worker_event)
        self.banner.actionTriggered.connect(self.models_dialog)

    # ================================================================ document <-> views
    @property
    def doc(self) -> Document:
        return self.model.doc

    @property
    def scene(self):
        return self.model.scene

    def _load_document_into_views(self) -> None:
        scene = self.scene
        self.photo.set_original(scene.photo)
        self.photo.set_depth(scene.depth)
        self.photo.set_image(scene.photo)
        self.photo.fit()
        try:
            self.view3d.set_scene(scene)
        except Exception as exc:  # noqa: BLE001 - a broken view must not lose the document
            self.banner.show_error(f"3D view: {one_line(exc)}", traceback.format_exc())
        self._sync_masks()
        self._on_selection_changed(self.model.selected_id)
        self._display = "preview"
        self.update_preview()
        self._update_title()

    def _sync_masks(self) -> None:
        self.photo.set_masks([(o.id, o.mask, object_colour(i)) for i, o in enumerate(self.scene.objects) if o.visible])

    def _on_objects_changed(self) -> None:
        self._sync_masks()
        try:
            self.view3d.refresh_object()
        except Exception as exc:  # noqa: BLE001
            self.banner.show_error(f"3D view: {one_line(exc)}", traceback.format_exc())
        self._on_selection_changed(self.model.selected_id)
        self.schedule_preview()

    def _on_mask_changed(self, obj_id: str) -> None:
        self._sync_masks()
        self.view3d.refresh_object(obj_id)
        self.schedule_preview()

    def _on_transform_changed(self, obj_id: str) -> None:
        self.view3d.refresh_object(obj_id)
        self.schedule_preview()

    def _on_selection_changed(self, obj_id: str) -> None:
        oid = obj_id or None
        self.photo.set_selected(oid)
        try:
            self.view3d.set_selected(oid)
        except KeyError:
            pass

    # ================================================================ live preview
    def schedule_preview(self) -> None:
        """Recompute the geometric preview at the next event-loop turn (coalesces bursts)."""
        if not getattr(self, "_preview_pending", False):
            self._preview_pending = True
            QTimer.singleShot(0, self, self._run_scheduled_preview)

    def _run_scheduled_preview(self) -> None:
        self._preview_pending = False
        self._display = "preview"
        self.update_preview()

    def update_preview(self) -> None:
        """Show the geometric preview of the current transforms in the photo panel (synchronous)."""
        t0 = time.perf_counter()
        if all(o.visible and o.transform.is_identity() for o in self.scene.objects):
            # nothing moved or hidden: the preview is the photo (no background fill needed)
            self.photo.set_image(self.scene.photo)
            self.photo.set_hole(None)
            self.photo.set_caption("")
            self.view3d.set_hole_mask(None)
            self._last_preview_ms = (time.perf_counter() - t0) * 1000.0
            return
        try:
            from core.preview import render_preview

            res = render_preview(self.scene)
        except Exception as exc:  # noqa: BLE001 - the preview failing must not stop editing
            self.photo.set_image(self.scene.photo)
            self.photo.set_hole(None)
            self.banner.show_message(f"Preview: {one_line(exc)}", traceback.format_exc(), "warning")
            return
        self.photo.set_image(res.image)
        self.photo.set_hole(res.hole)
        try:
            self.view3d.set_hole_mask(res.hole)
        except ValueError:
            pass
        moved = any(not o.transform.is_identity() for o in self.scene.objects)
        self.photo.set_caption("Live preview (geometric)" if moved else "")
        self._last_preview_ms = (time.perf_counter() - t0) * 1000.0
        self.status_preview.setText(f"preview {self._last_preview_ms:.0f} ms")

    def _on_drag_preview(self, obj_id: str, transform) -> None:
        """The 3D view proposes a transform mid-drag; the document model writes it (no undo step
        yet) and the preview follows within this frame."""
        obj = self.scene.object_by_id(obj_id)
        self._drag_start.setdefault(obj_id, obj.transform)
        self.model.preview_transform(obj_id, transform)
        self._display = "preview"
        self.update_preview()
        if obj_id == self.model.selected_id:
            self.objects_panel._load_fields()

    def _on_drag_committed(self, obj_id: str, old, new) -> None:
        self._drag_start.pop(obj_id, None)
        self._push(TransformCommand(self.model, obj_id, old, new))  # writes ``new`` and announces it
        if self.settings.auto_render and self._auto_render_possible():
            self.request_render()

    def _on_drag_cancelled(self, obj_id: str) -> None:
        start = self._drag_start.pop(obj_id, None)
        if start is not None:
            self.model.set_transform(obj_id, start)

    # ================================================================ banner
    def show_banner_error(self, message: str, details: str = "", cause: str = "") -> None:
        """An error in the banner, remembered with its cause ("open", "save", "export", "render")
        so that the banner goes once that cause is gone (:meth:`clear_banner`)."""
        self.banner.show_error(message, details)
        self._banner_cause = cause

    def clear_banner(self, cause: str | None = None) -> None:
        """Dismiss the banner if it shows an error of ``cause`` (any error when None)."""
        if self.banner.shown and (cause is None or getattr(self, "_banner_cause", "") == cause):
            self.banner.dismiss()
            self._banner_cause = ""

    # ================================================================ gestures
    def cancel(self) -> None:
        """Esc: cancel a drag or a selection gesture in progress, else the render."""
        if self.view3d.is_dragging():
            self.view3d.cancel_drag()
            return
        if self.photo.cancel_gesture():
            return
        self.cancel_render()

    def settings_dialog(self) -> None:
        from editor.dialogs import SettingsDialog

        dlg = SettingsDialog(self.settings, self)
        if dlg.exec():
            new = dlg.result_settings()
            for key in ("recent_files", "window_geometry", "window_state", "splitter_state"):
                setattr(new, key, getattr(self.settings, key))
            old = self.settings
            self.settings = new
            if not self._custom_renderer and (old.device, old.precision, old.model_folders) != (new.device, new.precision, new.model_folders):
                self.worker.submit_task("free memory", TaskSpec("unload"))  # models load again where the new settings say
            self._set_auto_render(new.auto_render)
            self._apply_autosave_interval()
            self.undo_stack.byte_budget = new.undo_memory_mb << 20
            if hasattr(self, "_segmenter_cache"):
                del self._segmenter_cache
            self._check_models()
            self._save_settings()

    def models_dialog(self) -> None:
        from editor.dialogs import ModelsDialog

        ModelsDialog(self.settings.model_folders, self).exec()
        if hasattr(self, "_segmenter_cache"):
            del self._segmenter_cache
        self._check_models()

    def about(self) -> None:
        import core
        from core.logs import log_location_text

        QMessageBox.about(
            self,
            f"About {APP_TITLE}",
            f"<b>{APP_TITLE}</b> {core.__version__}<br>Move objects in a photo in 3D and re-render it with Diffusion Handles (Pandey et al., CVPR 2024)."
            f"<br><br>{log_location_text()} (Help \u25b8 Open Log Folder)",
        )

    def _restore_window_state(self) -> None:
        s = self.settings
        try:
            if s.window_geometry:
                self.restoreGeometry(QByteArray.fromBase64(s.window_geometry.encode()))
            if s.window_state:
                self.restoreState(QByteArray.fromBase64(s.window_state.encode()))
            if s.splitter_state:
                self.splitter.restoreState(QByteArray.fromBase64(s.splitter_state.encode()))
        except Exception:  # noqa: BLE001 - a bad saved layout gives the default one
            pass

    def _save_settings(self) -> None:
        if not self.persist:
            return
        try:
            save_settings(self.settings)
        except OSError as exc:
            self.statusBar().showMessage(f"Settings not saved: {exc}", 5000)

    def save_window_state(self) -> None:
        s = self.settings
        s.window_geometry = bytes(self.saveGeometry().toBase64()).decode()
        s.window_state = bytes(self.saveState().toBase64()).decode()
        s.splitter_state = bytes(self.splitter.saveState().toBase64()).decode()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if not getattr(self, "_shown_once", False):
            self._shown_once = True
            total = max(2, self.splitter.width())
            if not self.settings.splitter_state:
                self.splitter.setSizes([total // 2, total - total // 2])
            err = getattr(self, "_startup_error", None)
            if err:
                self.banner.show_message(err[0], err[1], "warning")

    def changeEvent(self, event) -> None:  # noqa: N802
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange) and self.banner.shown:
            self.banner.show_message(self.banner.message, self.banner.details, self.banner.level)
        super().changeEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self._closing:  # already shut down (by the application or a test)
            event.accept()
            return
        if not self.maybe_save():
            event.ignore()
            return
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop the worker, remember the layout and settings, remove the recovery files."""
        if self._closing:
            return
        self._closing = True
        self._autosave_timer.stop()
        # the undo stack announces its own destruction (clear): nobody must listen any more
        for sig in (self.undo_stack.cleanChanged, self.undo_stack.indexChanged):
            try:
                sig.disconnect(self._on_undo_changed)
            except (RuntimeError, TypeError):
                pass
        self.worker.shutdown()
        self.save_window_state()
        self._save_settings()
        self.recovery.finish()

    # ----- drag and drop -----
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if urls and any(files.classify(u.toLocalFile()) for u in urls if u.isLocalFile()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802
        for u in event.mimeData().urls():
            if u.isLocalFile() and files.classify(u.toLocalFile()):
                event.acceptProposedAction()
                QTimer.singleShot(0, self, lambda p=u.toLocalFile(): self.open_path(p))
                return
        event.ignore()
