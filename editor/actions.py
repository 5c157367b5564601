"""The window's actions, menus and toolbars: one table of commands (name, text, slot, shortcut,
tip), and where each appears. Changes here when a command is added, renamed or moved."""

from __future__ import annotations

import logging

from PySide6.QtCore import QSize, Qt, QUrl
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLabel, QMessageBox, QStyle, QToolBar

log = logging.getLogger(__name__)


class ActionsMixin:
    """Builds ``actions_by_name``, the menu bar and the toolbars of :class:`editor.main_window.MainWindow`."""

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
        # identity lock (editor.identity_lock)
        A(
            "lock_identity",
            "&Lock Identity\u2026",
            self.lock_identity_dialog,
            tip="Teach the diffusion model the selected object, so that it stays itself when turned",
        )
        A("lock_on", "Identity Lock &On", self.set_identity_lock_enabled, tip="Use the selected object's identity lock in renders", checkable=True)
        A("lock_remove", "Remove Identity Loc&k", self.remove_identity_lock, tip="Remove the selected object's identity lock (undoable)")
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
        A("cancel", "&Cancel Render", self.cancel, "Esc", "Cancel the render or the lock being learnt (or the drag in progress)", icon=SP.SP_MediaStop)
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
        A("open_log_folder", "Open &Log Folder", self.open_log_folder, tip="Open the folder of the log file (to attach it to a bug report)")

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
        m.addSeparator()
        for n in ("lock_identity", "lock_on", "lock_remove"):
            m.addAction(a[n])
        m.aboutToShow.connect(self._update_lock_actions)
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
        m.addAction(a["open_log_folder"])
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
        self.color_tol.setToolTip("Magic wand by colour: colour tolerance (RGB distance, 0..442)")
        self.color_tol.setEnabled(False)  # the object wand (the default) ignores colour
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
        self.wand_colour = QCheckBox("By colour")
        self.wand_colour.setToolTip(
            "Magic wand by colour: grow to pixels of the clicked colour (and depth). Off (the default), one click "
            "follows the object's depth across its colours and stops where it meets the floor or what is behind it; "
            "turn this on for things flush with their surroundings (a picture on a wall, a decal)."
        )
        self.wand_colour.toggled.connect(self.set_wand_colour)
        opts.addWidget(self.wand_colour)
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

    def shortcut_table(self) -> list[tuple[str, str]]:
        out = []
        for a in self.actions_by_name.values():
            seq = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            if seq:
                out.append((a.text().replace("&", ""), seq))
        return out

    def open_log_folder(self) -> bool:
        """Show the log file's folder in the file manager (created first, so there is one to show)."""
        from core.logs import log_dir

        folder = log_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot create the log folder %s (%s)", folder, exc)
        ok = QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
        if not ok:
            log.warning("no program opened the log folder %s", folder)
            self.statusBar().showMessage(f"Log folder: {folder}", 10000)
        return ok

    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td>{t}</td><td><b>{s}</b></td></tr>" for t, s in self.shortcut_table())
        QMessageBox.information(self, "Keyboard shortcuts", f"<table cellspacing=4>{rows}</table>")
