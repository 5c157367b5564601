"""The models dialog (catalog: present or missing, size, licence, where found or the fetch
command; a renderer with its backend and ControlNet), the model picker's rows and the settings
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

from core.io import MAX_LONG_SIDE
from core.settings import DEVICES, PRECISIONS, PRESETS, Settings

ROLE_LABELS = {"renderer": "Renderer", "depth": "Depth", "segmenter": "Segmentation", "controlnet": "ControlNet", "lora": "LoRA"}
BACKEND_LABELS = {"sd2-depth": "SD2-depth", "sd15-controlnet": "SD 1.5 + depth ControlNet", "sdxl-controlnet": "SDXL + depth ControlNet"}
#: a renderer's state in the picker and the dialog
STATE_WORDS = {"present": "on disk", "missing": "missing", "incomplete": "incomplete", "needs ControlNet": "needs ControlNet"}


def _short_licence(text: str) -> str:
    return text.split(" (")[0]


def model_rows(extra_dirs=()) -> list[dict]:
    """One dict per catalog model: name, role, state, size text, licence, path, where it was found,
    fetch command, problem; a renderer's state and fetch command include its ControlNet."""
    from core.ml import store

    extra = list(extra_dirs)
    renderers = {r.entry.name: r for r in store.renderer_statuses(extra)}
    rows = []
    for st in store.list_models(extra):
        e = st.entry
        size = store.format_size(st.size_on_disk) if st.size_on_disk else f"~{e.size_text}"
        r = renderers.get(e.name)
        state, fetch, problem = st.state, e.fetch_command, st.problem or ""
        if r is not None and r.model.present and not r.ready and r.controlnet is not None:
            state, fetch = r.state, r.fetch_command
            problem = f"needs its depth ControlNet {r.controlnet.entry.name}: {r.controlnet.problem or 'missing'}"
        elif r is not None and not st.present and r.fetch_command:
            fetch = r.fetch_command  # the model and its ControlNet in one line
        rows.append(
            {
                "name": e.name,
                "role": e.role,
                "repo": e.repo,
                "state": state,
                "size": size,
                "path": str(st.path) if st.path else "",
                "where": st.where,
                "fetch_command": fetch,
                "problem": problem,
                "description": e.description,
                "licence": r.licence if r is not None else e.licence,
                "backend": e.backend or e.base_backend or "",
            }
        )
    return rows


def renderer_items(extra_dirs=()) -> list[dict]:
    """The model picker's rows, one per catalog renderer: ``name``, ``label`` (name, state, download
    size with its ControlNet, licence), ``tooltip``, ``state``, ``backend``, ``fetch_command``."""
    from core.ml import store

    items = []
    for r in store.renderer_statuses(extra_dirs):
        e = r.entry
        state = "bundled, world scenes only" if e.world_only and r.ready else STATE_WORDS.get(r.state, r.state)
        size = store.format_size(r.size_bytes)
        backend = BACKEND_LABELS.get(e.backend or "", e.backend or "")
        parts = [e.description, f"Backend: {backend}" + (f", {e.resolution} px" if e.resolution else ""), f"Licence: {r.licence}"]
        if r.controlnet is not None:
            cn = r.controlnet.entry
            parts.append(f"ControlNet: {cn.name} ({cn.repo}, about {cn.size_text}): {STATE_WORDS.get(r.controlnet.state, r.controlnet.state)}")
        if r.loras:
            parts.append("Few-step LoRAs: " + ", ".join(f"{lo.entry.name}{' (turbo)' if lo.entry.name == e.turbo_lora else ''}: {lo.state}" for lo in r.loras))
        parts.append(f"Found: {r.model.path} ({r.model.where})" if r.model.present else f"Fetch: {r.fetch_command}")
        if r.model.present and r.fetch_command:
            parts.append(f"Fetch: {r.fetch_command}")
        items.append(
            {
                "name": e.name,
                "label": f"{e.name} \u00b7 {state} \u00b7 {size} \u00b7 {_short_licence(r.licence)}",
                "tooltip": "\n".join(parts),
                "state": r.state,
                "backend": e.backend or "",
                "fetch_command": r.fetch_command,
            }
        )
    return items


class ModelsDialog(QDialog):
    """The model catalog with install status; copy the fetch command of a missing model."""

    COLUMNS = ("Model", "Role", "Status", "Size", "Licence", "Location / command to fetch")

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
        last = len(self.COLUMNS) - 1
        for i in range(last):
            hh.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(last, QHeaderView.ResizeMode.Stretch)
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
            if present:
                where = f"{row['path']}  ({row['where']})" if row["where"] else row["path"]
            else:
                where = row["problem"] if row["state"] == "incomplete" else row["fetch_command"]
            role = ROLE_LABELS.get(row["role"], row["role"])
            if row["backend"]:
                role += f" ({BACKEND_LABELS.get(row['backend'], row['backend'])})" if row["role"] == "renderer" else f" (for {row['backend']})"
            items = [row["name"], role, row["state"], row["size"], _short_licence(row["licence"]), where]
            for c, text in enumerate(items):
                it = QTableWidgetItem(text)
                tip = f"{row['repo']} \u00b7 {row['licence']}\n{row['description']}"
                if row["problem"] and row["state"] != "incomplete":
                    tip += f"\n{row['problem']}"
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
        self.resolution.setRange(128, MAX_LONG_SIDE)
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
