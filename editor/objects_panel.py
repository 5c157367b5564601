"""The objects panel: the scene's objects (name, visibility, identity lock) and the selected
object's transform.

The panel shows the :class:`editor.model.DocumentModel` and never changes it itself: it emits
requests (rename, show/hide, a new transform, reset, delete, add) that the main window turns into
undo commands. Numeric fields: translation in the camera frame (depth units, +X right, +Y down,
+Z away from the camera), rotation as XYZ Euler angles in degrees (see
:func:`core.document.euler_xyz_from_quat`), uniform scale in percent. An object with an identity
lock (``render_settings["locks"]``, :mod:`core.locks`) shows a padlock beside its colour, with
the lock's description (method, word, size) in its tooltip; a lock renders do not use now (off,
or learnt on another model than the current one) is drawn grey and says why.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSignalBlocker, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
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
from core.locks import describe, unused_reason
from core.transform import Transform3D

#: colours of objects in overlays and lists (shared with the photo and 3D views when they ask)
OBJECT_COLOURS = ["#ff7a45", "#36cfc9", "#9254de", "#fadb14", "#73d13d", "#f759ab", "#4096ff", "#ffa940"]


def object_colour(index: int) -> QColor:
    return QColor(OBJECT_COLOURS[index % len(OBJECT_COLOURS)])


#: an object item's data: "" (no lock), "on" (renders use it) or "unused" (off, or another model's)
LOCK_ROLE = int(Qt.ItemDataRole.UserRole) + 1
_ICON = QSize(28, 12)


def _swatch(colour: QColor, size: int = 12) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(colour)
    return QIcon(pm)


def _item_icon(colour: QColor, lock: str) -> QIcon:
    """The object's colour and, with a lock, a padlock beside it (grey when renders do not use it)."""
    pm = QPixmap(_ICON)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.fillRect(0, 0, 12, 12, colour)
    if lock:
        ink = QColor("#d4a017") if lock == "on" else QColor("#8c8c8c")
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(QPen(ink, 1.6))
        p.drawArc(QRectF(18.0, 0.8, 6.0, 8.0), 0, 180 * 16)  # the shackle
        p.drawLine(18, 4, 18, 6)
        p.drawLine(24, 4, 24, 6)
        p.fillRect(QRectF(16.5, 5.5, 9.0, 6.5), ink)  # the body
    p.end()
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
        #: the model renders use now (a lock learnt on another one is not used); set by the window
        self.render_model = ""

        self.list = QListWidget()
        self.list.setObjectName("objectsList")
        self.list.setIconSize(_ICON)
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
        model.renderSettingChanged.connect(lambda key, _v: self.refresh() if key in ("locks", "model") else None)
        self.refresh()

    def set_render_model(self, name: str) -> None:
        """The model renders use now: locks learnt on another one are shown as unused."""
        if name != self.render_model:
            self.render_model = name
            self.refresh()

    def lock_state(self, obj_id: str) -> tuple[dict | None, str, str]:
        """(the object's lock record or None, "" / "on" / "unused", why it is unused or "")."""
        locks = self.model.doc.render_settings.get("locks")
        rec = locks.get(obj_id) if isinstance(locks, dict) else None
        if not isinstance(rec, dict):
            return None, "", ""
        why = unused_reason(rec, self.render_model)
        if why:
            return rec, "unused", why
        return rec, "on", ""

    # ----- view of the model -----
    def refresh(self) -> None:
        self._updating = True
        try:
            with QSignalBlocker(self.list):
                self.list.clear()
                for i, obj in enumerate(self.model.scene.objects):
                    rec, lock, why = self.lock_state(obj.id)
                    item = QListWidgetItem(_item_icon(object_colour(i), lock), obj.name)
                    item.setData(Qt.ItemDataRole.UserRole, obj.id)
                    item.setData(LOCK_ROLE, lock)
                    item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable | Qt.ItemFlag.ItemIsUserCheckable)
                    item.setCheckState(Qt.CheckState.Checked if obj.visible else Qt.CheckState.Unchecked)
                    tip = f"{obj.name}: {int(obj.mask.sum())} pixels. Tick to show or hide."
                    if rec is not None:
                        tip += f"\nIdentity lock: {describe(rec)}" + (f" \u2014 {why}" if why else "")
                    item.setToolTip(tip)
                    if lock == "unused":
                        item.setForeground(self.palette().color(self.palette().ColorGroup.Disabled, self.palette().ColorRole.Text))
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
        text = f"{obj.name}: {n:,} px ({100.0 * n / (h * w):.1f}% of the photo)"
        rec, _lock, why = self.lock_state(obj.id)
        if rec is not None:
            text += f"\nIdentity lock: {describe(rec)}" + (f" \u2014 {why}" if why else "")
        self.info.setText(text)

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
