"""The objects panel: the scene's objects (name, visibility) and the selected object's transform.

The panel shows the :class:`editor.model.DocumentModel` and never changes it itself: it emits
requests (rename, show/hide, a new transform, reset, delete, add) that the main window turns into
undo commands. Numeric fields: translation in the camera frame (depth units, +X right, +Y down,
+Z away from the camera), rotation as XYZ Euler angles in degrees (see
:func:`core.document.euler_xyz_from_quat`), uniform scale in percent.
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.document import euler_xyz_from_quat, quat_from_euler_xyz
from core.transform import Transform3D

#: colours of objects in overlays and lists (shared with the photo and 3D views when they ask)
OBJECT_COLOURS = ["#ff7a45", "#36cfc9", "#9254de", "#fadb14", "#73d13d", "#f759ab", "#4096ff", "#ffa940"]


def object_colour(index: int) -> QColor:
    return QColor(OBJECT_COLOURS[index % len(OBJECT_COLOURS)])


def _swatch(colour: QColor, size: int = 12) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(colour)
    return QIcon(pm)


class ObjectsPanel(QWidget):
    selectRequested = Signal(str)
    renameRequested = Signal(str, str)
    visibilityRequested = Signal(str, bool)
    #: object id, new transform (from the numeric fields)
    transformRequested = Signal(str, object)
    resetRequested = Signal(str)
    deleteRequested = Signal(str)
    addRequested = Signal()

    def __init__(self, model, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._updating = False

        self.list = QListWidget()
        self.list.setObjectName("objectsList")
        self.list.setIconSize(QSize(12, 12))
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setToolTip("Objects in the scene. Tick to show, double-click to rename.")
        self.list.setMinimumHeight(72)
        self.list.setMaximumHeight(180)
        self.list.currentItemChanged.connect(self._on_current)
        self.list.itemChanged.connect(self._on_item_changed)

        self.add_btn = QToolButton()
        self.add_btn.setText("+")
        self.add_btn.setToolTip("New object from the current selection tool (draw on the photo)")
        self.add_btn.clicked.connect(self.addRequested)
        self.del_btn = QToolButton()
        self.del_btn.setText("\u2212")
        self.del_btn.setToolTip("Delete the selected object (Delete)")
        self.del_btn.clicked.connect(lambda: self._emit_for_selected(self.deleteRequested))
        self.reset_btn = QToolButton()
        self.reset_btn.setText("Reset")
        self.reset_btn.setToolTip("Reset the selected object's move, rotation and scale")
        self.reset_btn.clicked.connect(lambda: self._emit_for_selected(self.resetRequested))
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.add_btn)
        buttons.addWidget(self.del_btn)
        buttons.addStretch(1)
        buttons.addWidget(self.reset_btn)

        # numeric transform fields
        self.fields: dict[str, QDoubleSpinBox] = {}
        box = QGroupBox("Transform")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setContentsMargins(8, 6, 8, 6)
        form.setVerticalSpacing(4)

        def row(label: str, keys: list[str], rng: float, step: float, decimals: int, suffix: str, tip: str) -> None:
            h = QHBoxLayout()
            h.setSpacing(4)
            for k in keys:
                sb = QDoubleSpinBox()
                sb.setObjectName(f"field_{k}")
                sb.setRange(-rng, rng)
                sb.setSingleStep(step)
                sb.setDecimals(decimals)
                sb.setSuffix(suffix)
                sb.setKeyboardTracking(False)
                sb.setButtonSymbols(QDoubleSpinBox.ButtonSymbols.NoButtons)
                sb.setToolTip(f"{tip} ({k[-1].upper()})")
                sb.setAccelerated(True)
                sb.editingFinished.connect(self._on_field_edited)
                self.fields[k] = sb
                h.addWidget(sb)
            form.addRow(label, h)

        row("Move", ["tx", "ty", "tz"], 1000.0, 0.01, 3, "", "Translation in the camera frame, depth units: X right, Y down, Z away")
        row("Rotate", ["rx", "ry", "rz"], 360.0, 1.0, 1, "\u00b0", "Rotation about the camera axes through the object's centre, degrees")
        s = QDoubleSpinBox()
        s.setObjectName("field_scale")
        s.setRange(1.0, 1000.0)
        s.setDecimals(1)
        s.setSingleStep(5.0)
        s.setSuffix(" %")
        s.setKeyboardTracking(False)
        s.setToolTip("Uniform scale about the object's centre")
        s.editingFinished.connect(self._on_field_edited)
        self.fields["scale"] = s
        form.addRow("Scale", s)
        self.transform_box = box

        self.info = QLabel()
        self.info.setObjectName("objectInfo")
        self.info.setWordWrap(True)
        self.info.setStyleSheet("color: palette(placeholder-text);")

        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.list, 1)
        lay.addLayout(buttons)
        lay.addWidget(box)
        lay.addWidget(self.info)
        lay.addStretch(0)

        model.objectsChanged.connect(self.refresh)
        model.documentReset.connect(self.refresh)
        model.selectionChanged.connect(lambda _id: self.refresh())
        model.transformChanged.connect(self._on_transform_changed)
        model.maskChanged.connect(lambda _id: self._update_info())
        self.refresh()

    # ----- view of the model -----
    def refresh(self) -> None:
        self._updating = True
        try:
            with QSignalBlocker(self.list):
                self.list.clear()
                for i, obj in enumerate(self.model.scene.objects):
                    item = QListWidgetItem(_swatch(object_colour(i)), obj.name)
                    item.setData(Qt.ItemDataRole.UserRole, obj.id)
                    item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable | Qt.ItemFlag.ItemIsUserCheckable)
                    item.setCheckState(Qt.CheckState.Checked if obj.visible else Qt.CheckState.Unchecked)
                    item.setToolTip(f"{obj.name}: {int(obj.mask.sum())} pixels. Tick to show or hide.")
                    self.list.addItem(item)
                    if obj.id == self.model.selected_id:
                        self.list.setCurrentItem(item)
        finally:
            self._updating = False
        self._load_fields()

    def _on_transform_changed(self, obj_id: str) -> None:
        if obj_id == self.model.selected_id:
            self._load_fields()

    def _load_fields(self) -> None:
        obj = self.model.selected_object()
        enabled = obj is not None
        self.transform_box.setEnabled(enabled)
        self.del_btn.setEnabled(enabled)
        self.reset_btn.setEnabled(enabled)
        t = obj.transform if obj is not None else Transform3D()
        rx, ry, rz = euler_xyz_from_quat(t.rotation)
        values = {"tx": t.translation[0], "ty": t.translation[1], "tz": t.translation[2], "rx": rx, "ry": ry, "rz": rz, "scale": t.scale * 100.0}
        for k, v in values.items():
            with QSignalBlocker(self.fields[k]):
                self.fields[k].setValue(float(v))
        # what the fields show after rounding: a group left as shown keeps its exact value
        self._shown = {k: sb.value() for k, sb in self.fields.items()}
        self._update_info()

    def _update_info(self) -> None:
        obj = self.model.selected_object()
        if obj is None:
            self.info.setText("No object. Select one on the photo with the brush (B), lasso (L) or wand (M).")
            return
        h, w = obj.mask.shape
        n = int(obj.mask.sum())
        self.info.setText(f"{obj.name}: {n:,} px ({100.0 * n / (h * w):.1f}% of the photo)")

    def fields_transform(self) -> Transform3D:
        f = {k: sb.value() for k, sb in self.fields.items()}
        return Transform3D(
            translation=(f["tx"], f["ty"], f["tz"]),
            rotation=quat_from_euler_xyz(f["rx"], f["ry"], f["rz"]),
            scale=max(f["scale"], 1.0) / 100.0,
        )

    # ----- user actions -> requests -----
    def _emit_for_selected(self, signal) -> None:
        if self.model.selected_id:
            signal.emit(self.model.selected_id)

    def _on_current(self, current: QListWidgetItem | None, _prev) -> None:
        if self._updating or current is None:
            return
        self.selectRequested.emit(current.data(Qt.ItemDataRole.UserRole))

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if self._updating:
            return
        obj_id = item.data(Qt.ItemDataRole.UserRole)
        try:
            obj = self.model.scene.object_by_id(obj_id)
        except KeyError:
            return
        visible = item.checkState() == Qt.CheckState.Checked
        name = item.text().strip()
        # read the item before emitting: the model's answer rebuilds the list (and deletes the item)
        if visible != obj.visible:
            self.visibilityRequested.emit(obj_id, visible)
        elif name != obj.name:
            self.renameRequested.emit(obj_id, name)

    def _on_field_edited(self) -> None:
        obj = self.model.selected_object()
        if obj is None:
            return
        old = obj.transform
        f = self.fields_transform()
        shown = getattr(self, "_shown", {})

        def same(keys) -> bool:
            return all(abs(self.fields[k].value() - shown.get(k, float("nan"))) < 1e-9 for k in keys)

        new = Transform3D(
            translation=old.translation if same(("tx", "ty", "tz")) else f.translation,
            rotation=old.rotation if same(("rx", "ry", "rz")) else f.rotation,
            scale=old.scale if same(("scale",)) else f.scale,
        )
        if not _close(old, new):
            self.transformRequested.emit(obj.id, new)


def _close(a: Transform3D, b: Transform3D, tol: float = 1e-6) -> bool:
    import numpy as np

    return (
        np.allclose(a.translation, b.translation, atol=tol)
        and abs(a.scale - b.scale) < tol
        and (np.allclose(a.rotation, b.rotation, atol=tol) or np.allclose(a.rotation, [-v for v in b.rotation], atol=tol))
    )
