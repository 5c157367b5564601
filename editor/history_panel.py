"""The history panel: every render of the document as a thumbnail strip with its settings.

Select a render to see its settings; Restore puts its object transforms, prompt and settings back
(one undo step), Compare shows it against the original photo in the photo panel, Export saves it
as PNG or JPEG, Delete removes it from the history.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from core.document import make_thumbnail
from editor.render_panel import numpy_to_qimage

THUMB = 112


def describe_render(rec) -> str:
    """One paragraph of a render's settings (tooltips, the panel's info line)."""
    r = rec.request or {}
    info = rec.info or {}
    if info.get("geometric"):
        head = "Geometric preview"
    else:
        head = f"{r.get('model', '?')} \u00b7 {r.get('preset', '?')} \u00b7 {r.get('steps', '?')} steps \u00b7 seed {r.get('seed', '?')}"
    moved = sum(
        1
        for t in (r.get("transforms") or {}).values()
        if t
        and (
            any(abs(v) > 1e-9 for v in t.get("translation", [0, 0, 0]))
            or abs(t.get("scale", 1.0) - 1) > 1e-9
            or abs(t.get("rotation", [1, 0, 0, 0])[0] - 1) > 1e-9
        )
    )
    parts = [head, f"{moved} object(s) moved"]
    if "seconds" in info:
        parts.append(f"{float(info['seconds']):.1f} s")
    if rec.created:
        parts.append(rec.created.replace("T", " ")[:19])
    prompt = r.get("prompt") or ""
    text = " \u00b7 ".join(parts)
    return f"{text}\n\u201c{prompt}\u201d" if prompt else text


class HistoryPanel(QWidget):
    restoreRequested = Signal(str)
    compareRequested = Signal(str)
    exportRequested = Signal(str)
    deleteRequested = Signal(str)
    #: a render was selected (its id), to show it in the photo panel
    showRequested = Signal(str)

    def __init__(self, model, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.list = QListWidget()
        self.list.setObjectName("historyList")
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setFlow(QListView.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setSpacing(4)
        self.list.setUniformItemSizes(True)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.list.setMinimumHeight(THUMB + 24)
        self.list.setStyleSheet(
            "QListWidget#historyList::item { border: 2px solid transparent; border-radius: 4px; padding: 2px; }"
            "QListWidget#historyList::item:selected { border: 2px solid palette(highlight); background: transparent; }"
        )
        self.list.currentItemChanged.connect(self._on_current)
        self.list.itemDoubleClicked.connect(lambda it: self.restoreRequested.emit(it.data(Qt.ItemDataRole.UserRole)))

        self.info = QLabel("No renders yet. Move an object and press Render (Ctrl+Return).")
        self.info.setObjectName("historyInfo")
        self.info.setWordWrap(True)
        self.info.setStyleSheet("color: palette(placeholder-text);")
        self.restore_btn = QPushButton("Restore")
        self.restore_btn.setToolTip("Put this render's object positions, prompt and settings back (undoable)")
        self.compare_btn = QPushButton("Compare")
        self.compare_btn.setToolTip("Compare this render with the original photo (drag the divider)")
        self.export_btn = QPushButton("Export\u2026")
        self.export_btn.setToolTip("Save this render as PNG or JPEG")
        self.delete_btn = QPushButton("Delete")
        self.delete_btn.setToolTip("Remove this render from the history")
        for b, sig in (
            (self.restore_btn, self.restoreRequested),
            (self.compare_btn, self.compareRequested),
            (self.export_btn, self.exportRequested),
            (self.delete_btn, self.deleteRequested),
        ):
            b.clicked.connect(lambda _c=False, s=sig: self._emit(s))
        side = QVBoxLayout()
        side.addWidget(self.info, 1)
        row = QHBoxLayout()
        for b in (self.restore_btn, self.compare_btn, self.export_btn, self.delete_btn):
            row.addWidget(b)
        side.addLayout(row)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.addWidget(self.list, 3)
        lay.addLayout(side, 1)
        model.rendersChanged.connect(self.refresh)
        model.documentReset.connect(self.refresh)
        self.refresh()

    def current_id(self) -> str | None:
        it = self.list.currentItem()
        return it.data(Qt.ItemDataRole.UserRole) if it is not None else None

    def _emit(self, signal) -> None:
        rid = self.current_id()
        if rid:
            signal.emit(rid)

    def refresh(self) -> None:
        keep = self.current_id()
        self.list.blockSignals(True)
        self.list.clear()
        for i, rec in enumerate(self.model.doc.renders):
            thumb = make_thumbnail(rec.image, THUMB)
            label = f"#{i + 1}" + (" geometric" if (rec.info or {}).get("geometric") else "")
            item = QListWidgetItem(QIcon(QPixmap.fromImage(numpy_to_qimage(thumb))), "")
            item.setData(Qt.ItemDataRole.UserRole, rec.id)
            item.setData(Qt.ItemDataRole.AccessibleTextRole, label)
            item.setToolTip(f"{label}\n{describe_render(rec)}")
            item.setSizeHint(QSize(THUMB + 10, THUMB + 10))
            self.list.addItem(item)
            if rec.id == keep:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self._update_buttons()
        if self.list.count() and self.list.currentItem() is None:
            self.list.scrollToBottom()

    def select_render(self, render_id: str) -> None:
        for i in range(self.list.count()):
            it = self.list.item(i)
            if it.data(Qt.ItemDataRole.UserRole) == render_id:
                self.list.blockSignals(True)
                self.list.setCurrentItem(it)
                self.list.blockSignals(False)
                self.list.scrollToItem(it)
        self._update_buttons()

    def _update_buttons(self) -> None:
        rid = self.current_id()
        for b in (self.restore_btn, self.compare_btn, self.export_btn, self.delete_btn):
            b.setEnabled(bool(rid))
        if rid:
            try:
                self.info.setText(describe_render(self.model.doc.render_by_id(rid)))
            except KeyError:
                pass
        elif not self.model.doc.renders:
            self.info.setText("No renders yet. Move an object and press Render (Ctrl+Return).")
        else:
            self.info.setText(f"{len(self.model.doc.renders)} render(s). Select one to restore, compare or export it.")

    def _on_current(self, current, _prev) -> None:
        self._update_buttons()
        if current is not None:
            self.showRequested.emit(current.data(Qt.ItemDataRole.UserRole))
