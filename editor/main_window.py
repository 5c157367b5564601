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

import dataclasses
import time
import traceback
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStyle,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from core import selection as sel
from core.document import PROJECT_SUFFIX, Document
from core.errors import HandlesError, ModelError
from core.jobs import Cancelled, Error, Finished, Preview, Progress, Queued, RenderRequest
from core.scene import SceneObject
from core.settings import Settings, load_settings, save_settings
from core.transform import Transform3D
from editor import files
from editor.banner import Banner
from editor.history_panel import HistoryPanel
from editor.model import DocumentModel
from editor.objects_panel import ObjectsPanel, object_colour
from editor.photo_view import PhotoView
from editor.render_panel import GEOMETRIC, PRESET_STEPS, RenderPanel
from editor.undo import (
    AddObjectCommand,
    BoundedUndoStack,
    MaskCommand,
    PromptCommand,
    RemoveObjectCommand,
    RenameObjectCommand,
    SettingCommand,
    TransformCommand,
    VariantCommand,
    VisibilityCommand,
)
from editor.worker import ModelRendererFactory, RenderWorker, TaskDone, one_line

APP_TITLE = "Handles Studio"
#: preservation sliders scale these (the presets' fg_weight / bg_weight, core.ml.handles.presets)
BASE_FG_WEIGHT = 1.5
BASE_BG_WEIGHT = 1.25


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


class MainWindow(QMainWindow):
    """The editor window. ``renderer_factory``: ``factory(request) -> Renderer`` run in the worker
    (default: :class:`editor.worker.ModelRendererFactory`); ``use_gl``: force the OpenGL 3D view on
    or off (default: when a GL context can be created); ``settings_path``: where settings persist
    (default: the user's config dir; None with ``persist=False`` keeps them in memory)."""

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
        self.settings = settings if settings is not None else (load_settings() if persist else Settings())
        self._custom_renderer = renderer_factory is not None
        self.renderer_factory = renderer_factory or ModelRendererFactory(self.settings.device, self.settings.precision, self.settings.model_folders)
        doc = document or sample_document()
        if document is None:
            doc.render_settings.update(self._default_render_settings(doc.scene))
        self.model = DocumentModel(doc, self)
        self.undo_stack = BoundedUndoStack(self.settings.undo_limit, self.settings.undo_memory_mb << 20, self)
        self.worker = RenderWorker(self.renderer_factory, self)
        self.recovery = recovery if recovery is not None else files.RecoveryManager()
        self.recovery.start()
        self._render_job: int | None = None
        self._task_job: int | None = None
        self._task_handlers: dict[int, object] = {}
        self._render_started = 0.0
        self._display: str = "preview"  # "preview" or a render id
        self._diffusion_ready = False
        self._model_message = ""
        self._last_preview_ms = 0.0
        self._autosaved_index = -1
        self._closing = False
        self._segmenters: dict = {}
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
        self.view3d = None
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
        self.uses_gl = type(self.view3d).__name__ == "PointCloudView"

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

    def _action(self, name: str, text: str, slot=None, shortcut=None, tip: str = "", checkable: bool = False, icon=None) -> QAction:
        a = QAction(text, self)
        a.setObjectName(name)
        if shortcut is not None:
            if isinstance(shortcut, (list, tuple)):
                a.setShortcuts([QKeySequence(s) for s in shortcut])
            else:
                a.setShortcut(QKeySequence(shortcut))
        if icon is not None:
            a.setIcon(self.style().standardIcon(icon) if isinstance(icon, QStyle.StandardPixmap) else icon)
        a.setCheckable(checkable)
        seq = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        base = tip or text.replace("&", "").rstrip(".\u2026")
        a.setToolTip(f"{base} ({seq})" if seq else base)
        a.setStatusTip(base)
        if slot is not None:
            a.triggered.connect(slot)
        self.addAction(a)  # shortcuts work even when the action is only in a hidden menu
        self.actions_by_name[name] = a
        return a

    def _build_actions(self) -> None:
        self.actions_by_name: dict[str, QAction] = {}
        SP = QStyle.StandardPixmap
        K = QKeySequence.StandardKey
        A = self._action
        # file
        A("new_from_photo", "&New from Photo\u2026", self.new_from_photo_dialog, K.New, "New project from a photo", icon=SP.SP_FileIcon)
        A("open", "&Open\u2026", self.open_dialog, K.Open, "Open a project, photo or scene folder", icon=SP.SP_DialogOpenButton)
        A("open_sample", "Open &Sample Scene", self.open_sample)
        A("save", "&Save", self.save, K.Save, "Save the project", icon=SP.SP_DialogSaveButton)
        A("save_as", "Save &As\u2026", self.save_as, K.SaveAs, "Save the project under a new name")
        A("export_image", "Edited &Image (PNG/JPEG)\u2026", self.export_image_dialog, "Ctrl+E", "Export the edited image")
        A("export_depth", "Edited &Depth (EXR/PNG16)\u2026", self.export_depth_dialog, tip="Export the edited depth map")
        A("export_ply", "&Point Cloud (PLY)\u2026", self.export_ply_dialog, tip="Export the edited point cloud")
        A(
            "export_transforms",
            "&transforms.json (Diffusion Handles)\u2026",
            self.export_transforms_dialog,
            tip="Export the object transforms in the Diffusion Handles format",
        )
        A("quit", "&Quit", self.close, K.Quit)
        # edit
        undo = self.undo_stack.createUndoAction(self, "&Undo")
        undo.setObjectName("undo")
        undo.setShortcut(QKeySequence(K.Undo))
        undo.setIcon(self.style().standardIcon(SP.SP_ArrowBack))
        undo.setToolTip(f"Undo ({undo.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})")
        redo = self.undo_stack.createRedoAction(self, "&Redo")
        redo.setObjectName("redo")
        bindings = list(QKeySequence.keyBindings(K.Redo))
        if QKeySequence("Ctrl+Y") not in bindings:
            bindings.append(QKeySequence("Ctrl+Y"))
        redo.setShortcuts(bindings)
        redo.setIcon(self.style().standardIcon(SP.SP_ArrowForward))
        redo.setToolTip(f"Redo ({redo.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})")
        for a in (undo, redo):
            self.addAction(a)
            self.actions_by_name[a.objectName()] = a
        A("delete_object", "&Delete Object", self.delete_selected, K.Delete, "Delete the selected object")
        A("rename_object", "Re&name Object\u2026", self.rename_selected_dialog, "F2")
        A("reset_transform", "&Reset Transform", self.reset_selected, "Ctrl+Shift+R", "Reset the selected object's move, rotation and scale")
        A("settings", "&Settings\u2026", self.settings_dialog, K.Preferences)
        A("models", "&Models\u2026", self.models_dialog, tip="Installed and missing models, and how to fetch them")
        # photo tools
        self.photo_tools = QActionGroup(self)
        self.photo_tools.setExclusive(True)
        for name, text, key, tip in (
            ("navigate", "&Navigate", "V", "Navigate: pan and zoom the photo, no selection"),
            ("brush", "&Brush", "B", "Brush: paint the selected object's mask ([ and ] change the size, Alt erases)"),
            ("eraser", "&Eraser", "Shift+B", "Eraser: remove from the selected object's mask"),
            ("lasso", "&Lasso", "L", "Lasso: draw around an object (Shift adds, Alt subtracts)"),
            ("polygon", "&Polygon", "Shift+L", "Polygon lasso: click corners, Enter closes"),
            ("rect", "&Rectangle", "Shift+M", "Rectangle selection"),
            ("wand", "Magic &Wand", "M", "Depth-aware magic wand: click an object"),
            ("segment", "&Segment (SAM)", "S", "Click-to-segment with SAM (needs the SAM model)"),
        ):
            a = A(f"tool_{name}", text, None, key, tip, checkable=True)
            a.setData(name)
            a.triggered.connect(lambda _c=False, n=name: self.set_photo_tool(n))
            self.photo_tools.addAction(a)
        self.actions_by_name["tool_navigate"].setChecked(True)
        from editor.icons import make_icon

        for name in ("navigate", "brush", "eraser", "lasso", "polygon", "rect", "wand", "segment"):
            self.actions_by_name[f"tool_{name}"].setIcon(make_icon(name, self.palette()))
        # gizmo modes
        self.gizmo_group = QActionGroup(self)
        for name, text, key, tip in (
            ("move", "&Move", "W", "Move gizmo: arrows, planes, free drag (Ctrl snaps)"),
            ("rotate", "R&otate", "E", "Rotate gizmo: rings and trackball (Ctrl snaps to 15\u00b0)"),
            ("scale", "&Scale", "R", "Scale gizmo: uniform (Ctrl snaps to 10%)"),
        ):
            a = A(f"gizmo_{name}", text, None, key, tip, checkable=True)
            a.triggered.connect(lambda _c=False, n=name: self.set_gizmo_mode(n))
            self.gizmo_group.addAction(a)
        self.actions_by_name["gizmo_move"].setChecked(True)
        for name in ("move", "rotate", "scale"):
            self.actions_by_name[f"gizmo_{name}"].setIcon(make_icon(name, self.palette()))
        A(
            "gizmo_frame",
            "Gizmo in &Camera Frame",
            lambda on: self.view3d.set_frame("camera" if on else "local"),
            "X",
            "Toggle the gizmo axes between the object's and the camera's",
            checkable=True,
        )
        # selection ops
        A("feather", "&Feather\u2026", lambda: self.mask_op("feather"), "Shift+F6", "Soften the selected object's mask edge")
        A("grow", "&Grow\u2026", lambda: self.mask_op("grow"), tip="Grow the selected object's mask")
        A("shrink", "S&hrink\u2026", lambda: self.mask_op("shrink"), tip="Shrink the selected object's mask")
        # view
        A("frame", "&Frame Selection", self.view3d.frame_selection, "F", "Frame the selected object in the 3D view")
        A("reset_view", "&Reset 3D View to Photo", self.view3d.reset_camera, "Home", "Look through the photo's camera")
        A("fit_photo", "Fit &Photo", self.photo.fit, "Ctrl+0")
        A("zoom_100", "Photo at &100%", self.photo.zoom_100, "Ctrl+1")
        A("compare", "&Compare Before/After", self.set_compare, "C", "Compare the original photo with the edit (drag the divider)", checkable=True).setIcon(
            make_icon("compare", self.palette())
        )
        self.actions_by_name["frame"].setIcon(make_icon("frame", self.palette()))
        A("show_masks", "Show &Masks", lambda on: self._photo_option("show_masks", on), "Ctrl+H", checkable=True).setChecked(True)
        A("show_hole", "Show &Uncovered Area", lambda on: self._photo_option("show_hole", on), "Ctrl+Shift+H", checkable=True).setChecked(True)
        A("points_bigger", "Bigger &Points", lambda: self._point_size(+1), "Ctrl+]")
        A("points_smaller", "Smaller P&oints", lambda: self._point_size(-1), "Ctrl+[")
        # render
        A("render", "&Render", self.request_render, "Ctrl+Return", "Render the edit", icon=SP.SP_MediaPlay)
        self.actions_by_name["render"].setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        A("cancel", "&Cancel Render", self.cancel, "Esc", "Cancel the render (or the drag in progress)", icon=SP.SP_MediaStop)
        A(
            "free_memory",
            "&Free Model Memory",
            self.free_model_memory,
            tip="Unload the diffusion, depth and segmentation models; they load again when next needed",
        )
        A("auto_render", "&Auto-render After Drags", self._set_auto_render, tip="Render each time a drag ends", checkable=True).setChecked(
            self.settings.auto_render
        )
        # help
        A("about", "&About Handles Studio", self.about)
        A("shortcuts", "&Keyboard Shortcuts", self.show_shortcuts, K.HelpContents)

    def _build_menus(self) -> None:
        a = self.actions_by_name
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for n in ("new_from_photo", "open"):
            m.addAction(a[n])
        self.recent_menu = m.addMenu("Open &Recent")
        m.addAction(a["open_sample"])
        m.addSeparator()
        m.addAction(a["save"])
        m.addAction(a["save_as"])
        ex = m.addMenu("&Export")
        for n in ("export_image", "export_depth", "export_ply", "export_transforms"):
            ex.addAction(a[n])
        m.addSeparator()
        m.addAction(a["quit"])
        m = mb.addMenu("&Edit")
        for n in ("undo", "redo"):
            m.addAction(a[n])
        m.addSeparator()
        for n in ("rename_object", "delete_object", "reset_transform"):
            m.addAction(a[n])
        m.addSeparator()
        m.addAction(a["models"])
        m.addAction(a["settings"])
        m = mb.addMenu("&Select")
        for act in self.photo_tools.actions():
            m.addAction(act)
        m.addSeparator()
        for n in ("feather", "grow", "shrink"):
            m.addAction(a[n])
        m = mb.addMenu("&Object")
        for act in self.gizmo_group.actions():
            m.addAction(act)
        m.addAction(a["gizmo_frame"])
        m.addSeparator()
        self.variants_menu = m.addMenu("&Variants")
        self.variants_menu.setToolTipsVisible(True)
        self.variants_menu.aboutToShow.connect(self._fill_variants_menu)
        m = mb.addMenu("&View")
        for n in ("frame", "reset_view", "points_bigger", "points_smaller"):
            m.addAction(a[n])
        m.addSeparator()
        for n in ("fit_photo", "zoom_100", "compare", "show_masks", "show_hole"):
            m.addAction(a[n])
        m.addSeparator()
        for d in (self.objects_dock, self.render_dock, self.history_dock):
            m.addAction(d.toggleViewAction())
        m = mb.addMenu("&Render")
        for n in ("render", "cancel", "auto_render"):
            m.addAction(a[n])
        m.addSeparator()
        m.addAction(a["free_memory"])
        m = mb.addMenu("&Help")
        m.addAction(a["shortcuts"])
        m.addAction(a["about"])
        self._update_recent_menu()

    def _build_toolbars(self) -> None:
        a = self.actions_by_name
        tb = QToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setIconSize(QSize(18, 18))
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        for n in ("new_from_photo", "open", "save"):
            tb.addAction(a[n])
        tb.addSeparator()
        for n in ("undo", "redo"):
            tb.addAction(a[n])
        tb.addSeparator()
        tb.addAction(a["render"])
        btn = tb.widgetForAction(a["render"])
        if btn is not None:
            btn.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tb.addAction(a["cancel"])
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        tools = QToolBar("Tools")
        tools.setObjectName("toolsToolbar")
        tools.setIconSize(QSize(22, 22))
        tools.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        tools.addWidget(self._toolbar_label("Select"))
        for act in self.photo_tools.actions():
            tools.addAction(act)
        tools.addSeparator()
        tools.addWidget(self._toolbar_label("3D"))
        for act in self.gizmo_group.actions():
            tools.addAction(act)
        tools.addAction(a["frame"])
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tools)
        self.tools_toolbar = tools
        # tool options
        self.addToolBarBreak()
        opts = QToolBar("Tool options")
        opts.setObjectName("optionsToolbar")
        opts.setIconSize(QSize(18, 18))
        opts.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.op_combo = QComboBox()
        self.op_combo.setToolTip("What a lasso, rectangle or wand selection does (Shift adds, Alt subtracts)")
        for key, label in (("new", "New object"), ("add", "Add to object"), ("subtract", "Subtract from object"), ("intersect", "Intersect with object")):
            self.op_combo.addItem(label, key)
        self.op_combo.currentIndexChanged.connect(lambda _i: self.photo.set_tool_option("op", self.op_combo.currentData()))
        self.brush_size = QDoubleSpinBox()
        self.brush_size.setRange(1, 1000)
        self.brush_size.setDecimals(0)
        self.brush_size.setSuffix(" px")
        self.brush_size.setValue(float(self.photo.tool_option("brush_size")))
        self.brush_size.setToolTip("Brush diameter in photo pixels ([ and ])")
        self.brush_size.valueChanged.connect(lambda v: self.photo.set_tool_option("brush_size", v))
        self.color_tol = QDoubleSpinBox()
        self.color_tol.setRange(0, 442)
        self.color_tol.setDecimals(0)
        self.color_tol.setValue(float(self.photo.tool_option("color_tol") or 0))
        self.color_tol.setToolTip("Magic wand: colour tolerance (RGB distance, 0..442)")
        self.color_tol.valueChanged.connect(lambda v: self.photo.set_tool_option("color_tol", float(v) if v > 0 else None))
        self.depth_tol = QDoubleSpinBox()
        self.depth_tol.setRange(0, 100)
        self.depth_tol.setDecimals(1)
        self.depth_tol.setSuffix(" %")
        self.depth_tol.setValue(100.0 * float(self.photo.tool_option("depth_tol") or 0))
        self.depth_tol.setToolTip("Magic wand: depth tolerance relative to the clicked depth")
        self.depth_tol.valueChanged.connect(lambda v: self.photo.set_tool_option("depth_tol", float(v) / 100.0 if v > 0 else None))
        opts.addWidget(self._toolbar_label("Selection"))
        opts.addWidget(self.op_combo)
        opts.addSeparator()
        opts.addWidget(self._toolbar_label("Brush"))
        opts.addWidget(self.brush_size)
        opts.addSeparator()
        opts.addWidget(self._toolbar_label("Wand colour"))
        opts.addWidget(self.color_tol)
        opts.addWidget(self._toolbar_label("depth"))
        opts.addWidget(self.depth_tol)
        self.wand_surfaces = QCheckBox("Surfaces")
        self.wand_surfaces.setToolTip(
            "Magic wand follows smooth surfaces across texture and stops at creases where the colour changes "
            "(an object standing on a floor). Best with exact depth (3D renders, depth sensors); with "
            "estimated depth, leave it off and Shift+click to add what one click missed."
        )
        self.wand_surfaces.toggled.connect(self.set_wand_surfaces)
        opts.addWidget(self.wand_surfaces)
        opts.addSeparator()
        for n in ("feather", "grow", "shrink"):
            opts.addAction(a[n])
        opts.addSeparator()
        opts.addAction(a["compare"])
        opts.addAction(a["gizmo_frame"])
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, opts)
        self.options_toolbar = opts

    @staticmethod
    def _toolbar_label(text: str) -> QLabel:
        lab = QLabel(text)
        lab.setContentsMargins(6, 0, 4, 0)
        lab.setStyleSheet("color: palette(placeholder-text);")
        return lab

    def _build_statusbar(self) -> None:
        sb = self.statusBar()
        self.status_cursor = QLabel()
        self.status_zoom = QLabel()
        self.status_preview = QLabel()
        self.status_renderer = QLabel()
        self.status_renderer.setObjectName("statusRenderer")
        for w in (self.status_cursor, self.status_zoom, self.status_preview, self.status_renderer):
            w.setContentsMargins(6, 0, 6, 0)
            sb.addPermanentWidget(w)

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
        # the view already wrote the transform on the scene; show it now (within this frame)
        self._display = "preview"
        self.update_preview()
        if obj_id == self.model.selected_id:
            self.objects_panel._load_fields()

    def _on_drag_committed(self, obj_id: str, old, new) -> None:
        self._push(TransformCommand(self.model, obj_id, old, new, applied=True))
        self.model.set_transform(obj_id, new)  # announce (panels, preview)
        if self.settings.auto_render and self._auto_render_possible():
            self.request_render()

    def _on_drag_cancelled(self, obj_id: str) -> None:
        self.model.set_transform(obj_id, self.scene.object_by_id(obj_id).transform)

    # ================================================================ undo helpers
    def _push(self, cmd) -> None:
        self.undo_stack.push(cmd)
        self._update_title()

    # ----- variants: named sets of object transforms (e.g. the edits of a Diffusion Handles scene)
    def _fill_variants_menu(self) -> None:
        m = self.variants_menu
        m.clear()
        for name in self.scene.variants:
            act = m.addAction(f"Apply \u201c{name}\u201d")
            act.setToolTip("Set every object's transform from this variant (one undo step)")
            act.triggered.connect(lambda _c=False, n=name: self.apply_variant(n))
        if self.scene.variants:
            m.addSeparator()
        m.addAction("&Store Current Transforms as Variant\u2026", self.store_variant_dialog)

    def store_variant_dialog(self) -> None:
        from PySide6.QtWidgets import QLineEdit

        i = 1
        while f"variant {i}" in self.scene.variants:
            i += 1
        name, ok = QInputDialog.getText(self, "Store variant", "Variant name:", QLineEdit.EchoMode.Normal, f"variant {i}")
        if ok and name.strip():
            self.store_variant(name.strip())

    def store_variant(self, name: str) -> None:
        """Keep the current transforms of all objects as variant ``name`` (undoable)."""
        self._push(VariantCommand(self.model, name, self.scene.transforms()))
        self.statusBar().showMessage(f"Stored variant \u201c{name}\u201d", 4000)

    def apply_variant(self, name: str) -> None:
        """Set every object's transform from variant ``name``; objects it does not name go back to
        where they were in the photo. One undo step."""
        if name not in self.scene.variants:
            self.banner.show_message(f"No variant named {name!r}", level="warning", timeout_ms=5000)
            return
        variant = self.scene.variants[name]
        changes = [(o, variant.get(o.name, Transform3D())) for o in self.scene.objects]
        changes = [(o, t) for o, t in changes if o.transform != t]
        if not changes:
            return
        self.undo_stack.beginMacro(f"Apply variant {name}")
        for obj, t in changes:
            self.undo_stack.push(TransformCommand(self.model, obj.id, obj.transform, t))
        self.undo_stack.endMacro()
        self._update_title()

    def set_object_transform(self, obj_id: str, transform: Transform3D) -> None:
        obj = self.scene.object_by_id(obj_id)
        if obj.transform == transform:
            return
        self._push(TransformCommand(self.model, obj_id, obj.transform, transform))

    def rename_object(self, obj_id: str, name: str) -> None:
        try:
            self._push(RenameObjectCommand(self.model, obj_id, name))
        except ValueError as exc:
            self.banner.show_message(str(exc), level="warning", timeout_ms=6000)
            self.objects_panel.refresh()

    def delete_object(self, obj_id: str) -> None:
        self._push(RemoveObjectCommand(self.model, obj_id))

    def delete_selected(self) -> None:
        if self.model.selected_id:
            self.delete_object(self.model.selected_id)

    def reset_selected(self) -> None:
        if self.model.selected_id:
            self.set_object_transform(self.model.selected_id, Transform3D())

    def rename_selected_dialog(self) -> None:
        obj = self.model.selected_object()
        if obj is None:
            return
        name, ok = QInputDialog.getText(self, "Rename object", "Name:", text=obj.name)
        if ok:
            self.rename_object(obj.id, name)

    def _on_setting_edited(self, key: str, old, new) -> None:
        if key == "preset" and new in PRESET_STEPS and self.doc.render_settings.get("steps") != PRESET_STEPS[new]:
            self.undo_stack.beginMacro("Change quality")
            self.undo_stack.push(SettingCommand(self.model, "preset", old, new))
            self.undo_stack.push(SettingCommand(self.model, "steps", self.doc.render_settings.get("steps"), PRESET_STEPS[new]))
            self.undo_stack.endMacro()
        else:
            self._push(SettingCommand(self.model, key, old, new))
        if key == "model":
            self._check_models()

    def _on_mask_edited(self, obj_id, mask, mode: str, label: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        try:
            if obj_id is None:
                if not mask.any():
                    return
                obj = SceneObject(name=self.scene.unique_name("object"), mask=mask)
                self._push(AddObjectCommand(self.model, obj, text=f"New object ({label})" if label else ""))
                return
            obj = self.scene.object_by_id(obj_id)
            new = sel.combine(obj.mask, mask, mode)
            cmd = MaskCommand(self.model, obj_id, obj.mask, new, text=f"{label or 'Edit'} {obj.name}")
            if cmd.changed:
                self._push(cmd)
        except (HandlesError, KeyError, ValueError) as exc:
            self.banner.show_message(f"Selection: {one_line(exc)}", level="warning", timeout_ms=6000)

    def mask_op(self, op: str) -> None:
        obj = self.model.selected_object()
        if obj is None:
            self.statusBar().showMessage("Select an object first", 4000)
            return
        labels = {"feather": "Feather radius (px)", "grow": "Grow by (px)", "shrink": "Shrink by (px)"}
        px, ok = QInputDialog.getDouble(self, op.capitalize(), labels[op], 3.0, 0.5, 200.0, 1)
        if ok:
            self.apply_mask_op(op, px)

    def apply_mask_op(self, op: str, px: float) -> None:
        obj = self.model.selected_object()
        if obj is None:
            return
        if op == "feather":
            soft = sel.feather(obj.mask, px)
            new = np.asarray(soft >= 0.5) if soft.dtype != bool else soft
        elif op == "grow":
            new = sel.grow(obj.mask, px)
        else:
            new = sel.shrink(obj.mask, px)
        cmd = MaskCommand(self.model, obj.id, obj.mask, new, text=f"{op.capitalize()} {obj.name}")
        if cmd.changed:
            self._push(cmd)

    def _add_object_hint(self) -> None:
        self.set_photo_tool("lasso")
        self.op_combo.setCurrentIndex(0)
        self.statusBar().showMessage("Draw around the new object on the photo (lasso), or use the wand (M) or brush (B)", 6000)

    # ================================================================ tools
    def set_photo_tool(self, name: str) -> None:
        tool = "none" if name == "navigate" else name
        if tool == "segment" and not self._segmenter_name():
            self.actions_by_name["tool_navigate"].setChecked(True)
            self.photo.set_tool("none")
            self.banner.show_message(self._segment_hint, level="info", timeout_ms=10000)
            return
        self.photo.set_tool(tool)
        act = self.actions_by_name.get(f"tool_{name}")
        if act is not None:
            act.setChecked(True)
        self.photo.setFocus()

    def set_wand_surfaces(self, on: bool) -> None:
        """Switch the wand between colour-to-seed (photos) and crease-aware surface growth."""
        on = bool(on)
        if self.wand_surfaces.isChecked() != on:
            self.wand_surfaces.setChecked(on)  # re-enters through toggled
            return
        self.photo.set_tool_option("normal_tol", 20.0 if on else None)
        # crease linking compares raw neighbour colours (smoothing would blur the colour change at a crease)
        self.photo.set_tool_option("color_smooth", 0.0 if on else 2.0)
        self.photo.set_tool_option("color_tol", None if on else (float(self.color_tol.value()) or None))
        self.color_tol.setEnabled(not on)

    def set_gizmo_mode(self, mode: str) -> None:
        self.view3d.set_gizmo_mode(mode)
        self.actions_by_name[f"gizmo_{mode}"].setChecked(True)

    def set_compare(self, on: bool) -> None:
        self.photo.set_compare(bool(on))
        self.actions_by_name["compare"].setChecked(bool(on))

    def _photo_option(self, key: str, value) -> None:
        self.photo.set_tool_option(key, value)

    def _on_photo_option(self, key: str, value) -> None:
        if key == "brush_size":
            self.brush_size.blockSignals(True)
            self.brush_size.setValue(float(value))
            self.brush_size.blockSignals(False)

    def _point_size(self, delta: int) -> None:
        cur = self.view3d.point_size() or 2.0
        self.view3d.set_point_size(max(1.0, cur + delta))

    def _on_cursor(self, x: float, y: float) -> None:
        w, h = self.scene.size
        if 0 <= x < w and 0 <= y < h:
            d = float(self.scene.depth[int(y), int(x)])
            self.status_cursor.setText(f"x {int(x)}  y {int(y)}  depth {d:.3g} {self.scene.depth_unit}")
        else:
            self.status_cursor.setText("")

    # ----- click to segment (SAM) -----
    def _segmenter_name(self) -> str | None:
        if hasattr(self, "_segmenter_cache"):
            return self._segmenter_cache
        name = None
        self._segment_hint = "Click-to-segment needs a SAM model."
        try:
            from core.ml import store

            for e in store.catalog():
                if e.role != "segmenter":
                    continue
                try:
                    store.find_model(e.name, role="segmenter", extra_dirs=self.settings.model_folders)
                    name = e.name
                    break
                except ModelError as exc:
                    self._segment_hint = f"Click-to-segment is off: {one_line(exc)}"
        except Exception as exc:  # noqa: BLE001
            self._segment_hint = f"Click-to-segment is off: {one_line(exc)}"
        self._segmenter_cache = name
        self.actions_by_name["tool_segment"].setToolTip("Click-to-segment with SAM (S)" if name else f"{self._segment_hint} (S)")
        return name

    def _on_segment_click(self, x: float, y: float, label: int) -> None:
        name = self._segmenter_name()
        if not name:
            return
        points = self.photo.segment_points() or [(x, y, label)]
        photo = self.scene.photo
        device = self.settings.device
        folders = list(self.settings.model_folders)
        cache = self._segmenters
        target = self.model.selected_id

        def run(emit, token):
            from core.ml.segment import Segmenter

            seg = cache.get(name)
            if seg is None:
                emit(Progress(stage="loading", step=0, total=1, message=f"loading {name}"))
                seg = cache[name] = Segmenter(name, device=device, extra_dirs=folders)
            token.check()
            return seg.segment(photo, points=points)

        def done(mask) -> None:
            op = self.photo.tool_option("op")
            self.photo.clear_segment_points()
            self._on_mask_edited(None if op == "new" or not target else target, mask, "replace" if op == "new" else op, "segment")

        self.run_task("segment", run, done)

    # ================================================================ rendering
    def _default_render_settings(self, scene) -> dict:
        """The user's render defaults for a new document; a scene of the procedural world (the
        sample) renders with the bundled world model, which knows it."""
        from core.document import WORLD_MODEL
        from core.world import is_world_scene

        s = self.settings
        model = WORLD_MODEL if is_world_scene(scene) else s.diffusion_model
        return {"model": model, "preset": s.default_preset, "steps": s.default_steps}

    def _check_models(self) -> None:
        """Say in the render panel which renderer Render will use (and what to fetch if none)."""
        model = self.doc.render_settings.get("model") or self.settings.diffusion_model
        if self._custom_renderer:
            self._diffusion_ready = True
            self.render_panel.set_model_status("Renderer provided by the host application.")
            self.status_renderer.setText("renderer: custom")
            return
        if model == GEOMETRIC:
            self._diffusion_ready = False
            self.render_panel.set_model_status("Render gives the instant geometric preview (no model).")
            self.status_renderer.setText("renderer: geometric")
            return
        try:
            path = ModelRendererFactory(model_folders=self.settings.model_folders).find(model)
        except ModelError as exc:
            self._diffusion_ready = False
            msg = str(exc)
            cmd = msg.split("fetch it with: ", 1)[1].split("  (searched", 1)[0].strip() if "fetch it with: " in msg else ""
            self._model_message = msg
            self.render_panel.set_model_status(
                f"No diffusion model on disk: Render shows the geometric preview. Fetch {model} to render with Diffusion Handles"
                + ("." if cmd else f": {msg}"),
                cmd,
                ok=False,
            )
            self.status_renderer.setText("renderer: geometric (no diffusion model)")
            return
        except Exception as exc:  # noqa: BLE001 - never let a model check stop the editor
            self._diffusion_ready = False
            self.render_panel.set_model_status(f"Model check failed: {one_line(exc)}", ok=False)
            self.status_renderer.setText("renderer: geometric")
            return
        self._diffusion_ready = True
        from core.ml import store
        from core.world import is_world_scene

        if store.world_only(model) and not is_world_scene(self.scene):
            self.render_panel.set_model_status(
                f"{model} knows only its procedural world (the sample's floor, wall, boxes, balls and cylinders): "
                "on this photo it cannot give a real render. Choose a real model such as sd2-depth (Help ▸ Models).",
                ok=False,
            )
            self.status_renderer.setText(f"renderer: {model} (world scenes only)")
            return
        self.render_panel.set_model_status(f"{model}: {path}")
        self.status_renderer.setText(f"renderer: {model} \u00b7 {self.settings.device}")

    def _auto_render_possible(self) -> bool:
        return self._diffusion_ready and self.doc.render_settings.get("model") != GEOMETRIC

    def build_request(self) -> RenderRequest:
        rs = self.doc.render_settings
        scene = self.scene
        model = rs.get("model") or self.settings.diffusion_model
        preset = GEOMETRIC if model == GEOMETRIC else rs.get("preset", "default")
        overrides: dict = {}
        fg, bg = int(rs.get("foreground", 100)), int(rs.get("background", 100))
        if fg != 100:
            overrides["fg_weight"] = round(BASE_FG_WEIGHT * fg / 100.0, 6)
        if bg != 100:
            overrides["bg_weight"] = round(BASE_BG_WEIGHT * bg / 100.0, 6)
        if self.settings.preview_every != 5:
            overrides["preview_every"] = int(self.settings.preview_every)
        if not hasattr(self, "_scene_id") or self._scene_id[0] is not scene:
            self._scene_id = (scene, scene.content_id())
        return RenderRequest(
            scene_id=self._scene_id[1],
            transforms={o.name: o.transform.to_dict() for o in scene.objects if o.visible},
            prompt=scene.prompt,
            seed=int(rs.get("seed", 0)),
            steps=int(rs.get("steps", 50)),
            preset=preset,
            model=model,
            resolution=256 if preset == "draft" else self._model_resolution(model, scene),
            device=self.settings.device,
            settings=overrides,
        )

    @staticmethod
    def _model_resolution(model: str, scene) -> int:
        """The render's long side: the model's own (the catalog's, e.g. the world model's 256),
        else the scene's working size."""
        try:
            from core.ml import store

            native = store.native_resolution(model)
        except Exception:  # noqa: BLE001 - a broken catalog: the scene's size
            native = None
        return int(native) if native else max(scene.size)

    def _snapshot(self):
        """A copy of the scene the worker may read while the user goes on editing."""
        s = self.scene
        objects = [SceneObject(name=o.name, mask=o.mask, transform=o.transform, visible=o.visible, id=o.id) for o in s.objects]
        return dataclasses.replace(s, objects=objects, variants=dict(s.variants))

    def request_render(self) -> int:
        self.render_panel.commit_pending()
        request = self.build_request()
        self._render_job = self.worker.submit(self._snapshot(), request, caches=self.doc.caches)
        self._render_started = time.monotonic()
        self.render_panel.set_running(True)
        return self._render_job

    def cancel_render(self) -> None:
        self.worker.cancel()

    def cancel(self) -> None:
        """Esc: cancel a drag or a selection gesture in progress, else the render."""
        if self.view3d.is_dragging():
            self.view3d.cancel_drag()
            return
        if self.photo.cancel_gesture():
            return
        self.cancel_render()

    def run_task(self, name: str, fn, on_done) -> int:
        """Run ``fn(emit, token)`` in the worker; ``on_done(result)`` runs in the GUI thread."""
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
            self.banner.show_error(f"Render failed: {ev.message}", ev.details)
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
                except Exception as exc:  # noqa: BLE001
                    self.banner.show_error(one_line(exc), traceback.format_exc())
        elif isinstance(ev, Error):
            self._task_handlers.pop(job, None)
            self.render_panel.show_idle("Failed")
            self.banner.show_error(ev.message, ev.details)
        elif isinstance(ev, Cancelled):
            self._task_handlers.pop(job, None)
            self.render_panel.show_idle("Cancelled")

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
        current = {o.name: o.transform.to_dict() for o in self.scene.objects if o.visible}
        if ev.request.transforms == current:
            self.show_render(rec.id)
            self.history_panel.select_render(rec.id)
        else:  # the user moved on while it rendered: keep the live preview, the render is in History
            self.statusBar().showMessage(f"Render #{len(self.doc.renders)} finished for an earlier state: see History", 6000)
        if info.get("model_missing"):
            msg = info["model_missing"]
            cmd = msg.split("fetch it with: ", 1)[1].split("  (searched", 1)[0].strip() if "fetch it with: " in msg else ""
            self.render_panel.set_model_status(
                f"No diffusion model on disk: this render is the geometric preview. Fetch {ev.request.model} to render with Diffusion Handles"
                + ("." if cmd else f": {msg}"),
                cmd,
                ok=False,
            )
        self.renderFinished.emit(rec)

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
        self.undo_stack.beginMacro("Restore render")
        for obj in self.scene.objects:
            d = (req.get("transforms") or {}).get(obj.name)
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

    # ================================================================ files
    def is_modified(self) -> bool:
        return (not self.undo_stack.isClean()) or self.doc.renders_modified

    def _on_undo_changed(self, _value=None) -> None:
        if not self._closing:
            self._update_title()

    def _update_title(self) -> None:
        mod = self.is_modified()
        self.setWindowTitle(f"{APP_TITLE} \u2014 {self.doc.display_name}{'*' if mod else ''}")
        self.actions_by_name["save"].setEnabled(True)

    def set_document(self, doc: Document, modified: bool = False) -> None:
        self.worker.cancel()
        self._render_job = None
        self.undo_stack.clear()
        self.model.reset(doc)
        if modified:
            doc.renders_modified = True
        self._check_models()
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
            self.banner.show_error(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a damaged file must never crash the editor
            self.banner.show_error(f"{path}: cannot open ({one_line(exc)})", traceback.format_exc())
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
            self.banner.show_error(str(exc))
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
                    self.banner.show_error(str(exc))
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
        try:
            self.doc.save(path)
        except HandlesError as exc:
            self.banner.show_error(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001
            self.banner.show_error(f"{path}: cannot save ({one_line(exc)})", traceback.format_exc())
            return False
        self.undo_stack.setClean()
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

    # ----- export -----
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
            self.banner.show_error(str(exc))
            return
        except Exception as exc:  # noqa: BLE001
            self.banner.show_error(f"{path}: export failed ({one_line(exc)})", traceback.format_exc())
            return
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

    # ----- recovery -----
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
            self.banner.show_error(f"The autosave cannot be recovered: {exc}")
            return False
        doc.path = Path(rec.original) if rec.original else None
        self.set_document(doc, modified=True)
        for r in found:
            self.recovery.discard(r)
        self.autosave()
        self.statusBar().showMessage("Recovered the autosave: save it to keep it", 8000)
        return True

    # ================================================================ dialogs
    def free_model_memory(self) -> int:
        """Unload every cached model in the worker (a running render is cancelled: latest wins)."""
        factory = self.renderer_factory
        segmenters = self._segmenters

        def run(emit, token):
            from core.ml.device import free_memory, unload_all

            if hasattr(factory, "unload"):
                factory.unload()  # the engines (and the identities they hold in memory)
            segmenters.clear()
            count = unload_all()  # every model in the shared cache: diffusion, depth, SAM
            free_memory()
            return count

        return self.run_task("free memory", run, lambda n: self.statusBar().showMessage(f"Freed {n} loaded model(s); they load again when needed", 6000))

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
                f = self.renderer_factory
                f.device, f.precision, f.model_folders = new.device, new.precision, list(new.model_folders)
                f.unload()
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

        QMessageBox.about(
            self,
            f"About {APP_TITLE}",
            f"<b>{APP_TITLE}</b> {core.__version__}<br>Move objects in a photo in 3D and re-render it with Diffusion Handles (Pandey et al., CVPR 2024).",
        )

    def shortcut_table(self) -> list[tuple[str, str]]:
        out = []
        for a in self.actions_by_name.values():
            seq = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            if seq:
                out.append((a.text().replace("&", ""), seq))
        return out

    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td>{t}</td><td><b>{s}</b></td></tr>" for t, s in self.shortcut_table())
        QMessageBox.information(self, "Keyboard shortcuts", f"<table cellspacing=4>{rows}</table>")

    # ================================================================ window state
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
