"""The models dialog (catalog: present or missing, size, path, fetch command) and the settings
dialog (device, precision, working resolution, default steps, auto-render, preview frequency,
cache memory, extra model folders)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.settings import DEVICES, PRECISIONS, PRESETS, Settings

ROLE_LABELS = {"renderer": "Renderer", "depth": "Depth", "segmenter": "Segmentation"}


def model_rows(extra_dirs=()) -> list[dict]:
    """One dict per catalog model: name, role, state, size text, path, fetch command, problem."""
    from core.ml import store

    rows = []
    for st in store.list_models(extra_dirs):
        e = st.entry
        size = store.format_size(st.size_on_disk) if st.size_on_disk else f"~{e.size_text}"
        rows.append(
            {
                "name": e.name,
                "role": e.role,
                "repo": e.repo,
                "state": st.state,
                "size": size,
                "path": str(st.path) if st.path else "",
                "fetch_command": e.fetch_command,
                "problem": st.problem or "",
                "description": e.description,
                "licence": e.licence,
            }
        )
    return rows


class ModelsDialog(QDialog):
    """The model catalog with install status; copy the fetch command of a missing model."""

    COLUMNS = ("Model", "Role", "Status", "Size", "Location / command to fetch")

    def __init__(self, extra_dirs=(), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(980, 360)
        self.extra_dirs = list(extra_dirs)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setObjectName("modelsTable")
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        hh = self.table.horizontalHeader()
        for i in range(4):
            hh.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.note = QLabel(
            "Nothing is downloaded while you work. Fetch a missing model with its command (it fills the "
            "Hugging Face cache), or copy a model folder anywhere and add it under Settings \u2192 extra model folders."
        )
        self.note.setWordWrap(True)
        self.copy_btn = QPushButton("Copy fetch command")
        self.copy_btn.clicked.connect(self.copy_command)
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.clicked.connect(self.refresh)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        row = QHBoxLayout()
        row.addWidget(self.copy_btn)
        row.addWidget(self.refresh_btn)
        row.addStretch(1)
        row.addWidget(buttons)
        lay = QVBoxLayout(self)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.note)
        lay.addLayout(row)
        self.rows: list[dict] = []
        self.refresh()

    def refresh(self) -> None:
        try:
            self.rows = model_rows(self.extra_dirs)
        except Exception as exc:  # noqa: BLE001 - a broken catalog must not break the dialog
            self.rows = []
            self.note.setText(f"The model catalog cannot be read: {exc}")
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            present = row["state"] == "present"
            where = row["path"] if present else (row["problem"] if row["state"] == "incomplete" else row["fetch_command"])
            items = [row["name"], ROLE_LABELS.get(row["role"], row["role"]), row["state"], row["size"], where]
            for c, text in enumerate(items):
                it = QTableWidgetItem(text)
                tip = f"{row['repo']} \u00b7 {row['licence']}\n{row['description']}"
                if not present:
                    tip += f"\n\nFetch: {row['fetch_command']}"
                it.setToolTip(tip)
                if c == 2:
                    it.setForeground(Qt.GlobalColor.darkGreen if present else Qt.GlobalColor.darkRed)
                self.table.setItem(r, c, it)
        if self.rows:
            self.table.selectRow(0)

    def copy_command(self) -> None:
        r = self.table.currentRow()
        if 0 <= r < len(self.rows):
            QGuiApplication.clipboard().setText(self.rows[r]["fetch_command"])


class SettingsDialog(QDialog):
    """Edits a copy of the settings; :meth:`result_settings` returns it after Accept."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._settings = Settings.from_dict(settings.to_dict())

        s = self._settings
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(s.device)
        self.device.setToolTip("Where models run: auto picks CUDA, then Apple MPS, then the CPU")
        self.precision = QComboBox()
        self.precision.addItems(list(PRECISIONS))
        self.precision.setCurrentText(s.precision)
        self.precision.setToolTip("auto: fp16/bf16 on GPUs, fp32 on CPUs")
        self.resolution = QSpinBox()
        self.resolution.setRange(128, 2048)
        self.resolution.setSingleStep(64)
        self.resolution.setSuffix(" px")
        self.resolution.setValue(s.working_resolution)
        self.resolution.setToolTip("Long side of new scenes (a multiple of 64); 512 is the model's native size")
        self.steps = QSpinBox()
        self.steps.setRange(1, 1000)
        self.steps.setValue(s.default_steps)
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.preset.setCurrentText(s.default_preset)
        self.auto = QCheckBox("Render automatically when a drag ends")
        self.auto.setChecked(s.auto_render)
        self.preview_every = QSpinBox()
        self.preview_every.setRange(0, 1000)
        self.preview_every.setSpecialValueText("never")
        self.preview_every.setPrefix("every ")
        self.preview_every.setSuffix(" steps")
        self.preview_every.setValue(s.preview_every)
        self.cache = QSpinBox()
        self.cache.setRange(64, 1 << 20)
        self.cache.setSingleStep(256)
        self.cache.setSuffix(" MiB")
        self.cache.setValue(s.cache_memory_mb)
        self.undo_mem = QSpinBox()
        self.undo_mem.setRange(1, 1 << 16)
        self.undo_mem.setSuffix(" MiB")
        self.undo_mem.setValue(s.undo_memory_mb)
        self.autosave = QDoubleSpinBox()
        self.autosave.setRange(0, 24 * 60)
        self.autosave.setDecimals(1)
        self.autosave.setSpecialValueText("off")
        self.autosave.setSuffix(" min")
        self.autosave.setValue(s.autosave_minutes)

        self.folders = QListWidget()
        self.folders.setObjectName("modelFolders")
        self.folders.addItems(s.model_folders)
        self.folders.setMaximumHeight(90)
        add = QPushButton("Add\u2026")
        add.clicked.connect(self._add_folder)
        remove = QPushButton("Remove")
        remove.clicked.connect(lambda: [self.folders.takeItem(self.folders.row(i)) for i in self.folders.selectedItems()])
        frow = QVBoxLayout()
        frow.addWidget(self.folders)
        fb = QHBoxLayout()
        fb.addWidget(add)
        fb.addWidget(remove)
        fb.addStretch(1)
        frow.addLayout(fb)

        form = QFormLayout()
        form.addRow("Device", self.device)
        form.addRow("Precision", self.precision)
        form.addRow("Working resolution", self.resolution)
        form.addRow("Default quality", self.preset)
        form.addRow("Default steps", self.steps)
        form.addRow("", self.auto)
        form.addRow("Step previews", self.preview_every)
        form.addRow("Cache memory", self.cache)
        form.addRow("Undo memory", self.undo_mem)
        form.addRow("Autosave", self.autosave)
        form.addRow("Extra model folders", frow)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(buttons)

    def _add_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Model folder")
        if d:
            self.folders.addItem(d)

    def result_settings(self) -> Settings:
        s = self._settings
        s.device = self.device.currentText()
        s.precision = self.precision.currentText()
        s.working_resolution = int(self.resolution.value()) // 64 * 64
        s.default_steps = int(self.steps.value())
        s.default_preset = self.preset.currentText()
        s.auto_render = self.auto.isChecked()
        s.preview_every = int(self.preview_every.value())
        s.cache_memory_mb = int(self.cache.value())
        s.undo_memory_mb = int(self.undo_mem.value())
        s.autosave_minutes = float(self.autosave.value())
        s.model_folders = [self.folders.item(i).text() for i in range(self.folders.count())]
        return s.validated()
