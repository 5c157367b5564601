"""The render panel: prompt, model, quality preset, steps, seed, preservation, Render / Cancel,
progress (stage, step, time left) and the latest step preview.

The model picker lists every catalog renderer with its state, download size and licence
(:meth:`RenderPanel.set_models`); the presets and the render size follow the chosen model's
backend (:meth:`RenderPanel.set_backend`: the turbo preset names the model's few-step LoRA, SDXL
has no 256 px draft, the size is the catalog's resolution: 512 px for SD 1.5, 1024 px for SDXL).

The settings scroll when the panel is short (a 1366x768 laptop): the panel never makes the window
taller than the screen, and the model status with its "Copy fetch command" button stays in view
below them.

Like the objects panel, it only shows the document and emits requests: edits of the prompt and
of the settings become undo commands in the main window (``promptEdited``, ``settingEdited``).
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QSignalBlocker, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

GEOMETRIC = "geometric"
PRESET_LABELS = {
    "reference": "Reference (paper, slow)",
    "default": "Default",
    "fast": "Fast (no guidance)",
    "draft": "Draft (256 px, CPU)",
    "turbo": "Turbo (8 steps)",
}
#: steps each preset uses by default (core.ml.handles.presets.PRESETS)
PRESET_STEPS = {"reference": 50, "default": 25, "fast": 25, "draft": 20, "turbo": 8}
#: backends whose models cannot render at the draft preset's 256 px (SDXL is made for 1024 px)
NO_DRAFT_BACKENDS = ("sdxl-controlnet",)


def engine_presets() -> dict:
    """The engine's presets (core.ml.handles.presets.PRESETS: pure Python, no torch); {} if unreadable."""
    try:
        from core.ml.handles.presets import PRESETS
    except Exception:  # noqa: BLE001 - a broken engine module must not stop the window
        return {}
    return dict(PRESETS)


STAGE_LABELS = {
    "loading": "Loading model",
    "depth": "Estimating depth",
    "identity": "Capturing identity",
    "invert": "Inverting",
    "render": "Rendering",
    "decode": "Decoding",
    "preview": "Geometric preview",
    "learning": "Learning identity lock",
}


def numpy_to_qimage(image: np.ndarray) -> QImage:
    """(H, W, 3) uint8 RGB -> QImage (a deep copy, safe after the array is gone)."""
    a = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = a.shape[:2]
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s left"
    return f"{s // 60}:{s % 60:02d} left"


class _WrappedLabel(QLabel):
    """A word-wrapped label whose minimum height is that of its wrapped text at its current width
    (a plain QLabel asks for one line, and a short panel would cut the rest off)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self._hfw = -1

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        msh = super().minimumSizeHint()
        if self.width() > 0 and self.text():
            msh.setHeight(max(msh.height(), self.heightForWidth(self.width())))
        return msh

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        h = self.heightForWidth(self.width())
        if h != self._hfw:
            self._hfw = h
            self.updateGeometry()


class _SettingsScroll(QScrollArea):
    """The settings' scroll area: as tall as its content when there is room, a few lines at least,
    and never narrower than its content (it scrolls vertically only). The scroll bar's width is
    always asked for: asking only while the content did not fit made the dock 7 px wider each time
    a render's step preview appeared and narrower when it went, so the photo and 3D views were
    resized and redrawn mid-render (a 20 ms stall of the window, measured by bench-editor)."""

    MIN_LINES = 4

    def __init__(self, body: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setWidget(body)

    def _extra(self) -> QSize:
        f = 2 * self.frameWidth()
        return QSize(f + self.verticalScrollBar().sizeHint().width(), f)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        return self.widget().sizeHint() + self._extra()

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        e = self._extra()
        h = min(self.widget().sizeHint().height(), self.MIN_LINES * self.fontMetrics().height())
        return QSize(self.widget().minimumSizeHint().width() + e.width(), h + e.height())


class RenderPanel(QWidget):
    renderRequested = Signal()
    cancelRequested = Signal()
    #: (old prompt, new prompt)
    promptEdited = Signal(str, str)
    #: (key, old value, new value)
    settingEdited = Signal(str, object, object)
    autoRenderToggled = Signal(bool)

    def __init__(self, model, models: list[tuple[str, str]] | None = None, parent: QWidget | None = None) -> None:
        """``models``: (catalog name, label) of the renderer models to offer besides the geometric preview."""
        super().__init__(parent)
        self.model = model
        self._prompt_shown = ""

        self.prompt = QPlainTextEdit()
        self.prompt.setObjectName("prompt")
        self.prompt.setPlaceholderText("Describe the photo (e.g. \u201ca red car parked on a street\u201d)")
        self.prompt.setToolTip("Text prompt describing the photo; the renderer uses it to invert and re-render the photo")
        self.prompt.setMaximumHeight(64)
        self.prompt.setTabChangesFocus(True)
        self._prompt_timer = QTimer(self)
        self._prompt_timer.setSingleShot(True)
        self._prompt_timer.setInterval(400)
        self._prompt_timer.timeout.connect(self._commit_prompt)
        self.prompt.textChanged.connect(self._prompt_timer.start)

        self.model_combo = QComboBox()
        self.model_combo.setObjectName("modelCombo")
        self.model_combo.setToolTip("The diffusion model that renders edits (Geometric: no model, the instant preview)")
        for name, label in models or [("sd2-depth", "Stable Diffusion 2 depth")]:
            self.model_combo.addItem(label, name)
        self.model_combo.addItem("Geometric preview (no model)", GEOMETRIC)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._setting("model", self.model_combo.currentData()))

        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(18)  # long labels do not widen the panel; the list shows them whole
        self._backend: str = ""
        self._native: int | None = None
        self._turbo_lora = ""

        self.preset_combo = QComboBox()
        self.preset_combo.setObjectName("presetCombo")
        known = engine_presets()
        for key, label in PRESET_LABELS.items():
            if key != "turbo" or not known or key in known:  # turbo only where the engine has it
                self.preset_combo.addItem(label, key)
        self.preset_combo.setToolTip("Quality preset: reference = the paper's method; fast and draft trade quality for speed")
        self.preset_combo.currentIndexChanged.connect(lambda _i: self._setting("preset", self.preset_combo.currentData()))

        self.render_size = QLabel()
        self.render_size.setObjectName("renderSize")
        self.render_size.setToolTip("Long side of the render: the model's own resolution when the catalog gives one, else the photo's working size")

        self.steps = QSpinBox()
        self.steps.setObjectName("steps")
        self.steps.setRange(1, 200)
        self.steps.setKeyboardTracking(False)
        self.steps.setToolTip("Denoising steps")
        self.steps.valueChanged.connect(lambda v: self._setting("steps", int(v)))
        self.seed = QSpinBox()
        self.seed.setObjectName("seed")
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setKeyboardTracking(False)
        self.seed.setToolTip(
            "Random seed: the noise the edited region starts from (default, fast, draft), so it decides "
            "what the photo does not, such as the uncovered background; the rest of the photo stays as it is. "
            "The same seed and settings give the same render"
        )
        self.seed.valueChanged.connect(lambda v: self._setting("seed", int(v)))
        self.dice = QToolButton()
        self.dice.setText("\u2684")
        self.dice.setToolTip("New random seed")
        self.dice.clicked.connect(self._random_seed)
        steps_row = QHBoxLayout()
        steps_row.setSpacing(6)
        steps_row.addWidget(self.steps, 1)
        steps_row.addWidget(QLabel("Seed"))
        steps_row.addWidget(self.seed, 2)
        steps_row.addWidget(self.dice)

        self.fg = self._slider("foreground", "How strongly the moved object keeps its look (percent of the preset's weight)")
        self.bg = self._slider("background", "How strongly the rest of the photo is kept (percent of the preset's weight)")
        self.fg_value = QLabel()
        self.bg_value = QLabel()
        fg_row = QHBoxLayout()
        fg_row.addWidget(self.fg, 1)
        fg_row.addWidget(self.fg_value)
        bg_row = QHBoxLayout()
        bg_row.addWidget(self.bg, 1)
        bg_row.addWidget(self.bg_value)

        self.auto = QCheckBox("Render when a drag ends")
        self.auto.setObjectName("autoRender")
        self.auto.setToolTip("Auto-render: start a render each time you release a gizmo")
        self.auto.toggled.connect(self.autoRenderToggled)

        self.render_btn = QPushButton("Render")
        self.render_btn.setObjectName("renderButton")
        self.render_btn.setDefault(True)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setObjectName("cancelButton")
        self.cancel_btn.setEnabled(False)
        self.render_btn.clicked.connect(self.renderRequested)
        self.cancel_btn.clicked.connect(self.cancelRequested)
        btn_row = QHBoxLayout()
        btn_row.addWidget(self.render_btn, 2)
        btn_row.addWidget(self.cancel_btn, 1)

        self.progress = QProgressBar()
        self.progress.setObjectName("renderProgress")
        self.progress.setTextVisible(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Idle")
        self.stage = QLabel("")
        self.stage.setObjectName("renderStage")
        self.stage.setStyleSheet("color: palette(placeholder-text);")

        self.model_status = _WrappedLabel()
        self.model_status.setObjectName("modelStatus")
        self.model_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_cmd = QPushButton("Copy fetch command")
        self.copy_cmd.setObjectName("copyFetchCommand")
        self.copy_cmd.setToolTip("Copy the command that fetches the model")
        self.copy_cmd.setVisible(False)
        self.copy_cmd.clicked.connect(self._copy_command)
        self._fetch_command = ""

        self.step_preview = QLabel()
        self.step_preview.setObjectName("stepPreview")
        self.step_preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.step_preview.setMinimumHeight(0)
        self.step_preview.setVisible(False)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setVerticalSpacing(6)
        form.addRow("Model", self.model_combo)
        form.addRow("Quality", self.preset_combo)
        form.addRow("Size", self.render_size)
        form.addRow("Steps", steps_row)
        form.addRow("Keep object", fg_row)
        form.addRow("Keep background", bg_row)

        # the settings scroll; the model status and its button stay in view below them
        body = QWidget()
        body.setObjectName("renderSettings")
        blay = QVBoxLayout(body)
        blay.setContentsMargins(6, 6, 6, 0)
        blay.setSpacing(6)
        blay.addWidget(QLabel("Prompt"))
        blay.addWidget(self.prompt)
        blay.addLayout(form)
        blay.addWidget(self.auto)
        blay.addLayout(btn_row)
        blay.addWidget(self.progress)
        blay.addWidget(self.stage)
        blay.addWidget(self.step_preview)
        blay.addStretch(1)
        self.settings_scroll = _SettingsScroll(body)
        self.settings_scroll.setObjectName("renderSettingsScroll")
        status = QVBoxLayout()
        status.setContentsMargins(6, 6, 6, 6)
        status.setSpacing(6)
        status.addWidget(self.model_status)
        status.addWidget(self.copy_cmd, 0, Qt.AlignmentFlag.AlignLeft)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.settings_scroll)
        lay.addLayout(status)
        lay.addStretch(1)

        model.documentReset.connect(self.refresh)
        model.promptChanged.connect(self._show_prompt)
        model.renderSettingChanged.connect(lambda _k, _v: self.refresh_settings())
        self.refresh()

    def _slider(self, key: str, tip: str) -> QSlider:
        s = QSlider(Qt.Orientation.Horizontal)
        s.setObjectName(f"{key}Slider")
        s.setRange(0, 200)
        s.setSingleStep(5)
        s.setPageStep(25)
        s.setToolTip(tip)
        s.valueChanged.connect(lambda v, k=key: self._setting(k, int(v)))
        return s

    # ----- model -> view -----
    def refresh(self) -> None:
        self._show_prompt(self.model.scene.prompt)
        self.refresh_settings()

    def _show_prompt(self, text: str) -> None:
        self._prompt_timer.stop()
        self._prompt_shown = text
        if self.prompt.toPlainText() != text:
            with QSignalBlocker(self.prompt):
                self.prompt.setPlainText(text)

    def refresh_settings(self) -> None:
        rs = self.model.doc.render_settings
        with QSignalBlocker(self.model_combo):
            i = self.model_combo.findData(rs.get("model"))
            if i < 0 and rs.get("model"):
                self.model_combo.insertItem(0, str(rs["model"]), rs["model"])
                i = 0
            self.model_combo.setCurrentIndex(max(i, 0))
        with QSignalBlocker(self.preset_combo):
            self.preset_combo.setCurrentIndex(max(self.preset_combo.findData(rs.get("preset", "default")), 0))
        for w, key in ((self.steps, "steps"), (self.seed, "seed"), (self.fg, "foreground"), (self.bg, "background")):
            with QSignalBlocker(w):
                w.setValue(int(rs.get(key, w.value())))
        self.fg_value.setText(f"{self.fg.value()}%")
        self.bg_value.setText(f"{self.bg.value()}%")
        geometric = rs.get("model") == GEOMETRIC
        for w in (self.preset_combo, self.steps, self.seed, self.dice, self.fg, self.bg):
            w.setEnabled(not geometric)
        self._show_render_size()

    # ----- the chosen model's backend -----
    def set_models(self, items: list[dict]) -> None:
        """Show each renderer's state, size and licence in the picker (``items``: dicts with
        ``name``, ``label``, ``tooltip``, as :func:`editor.dialogs.renderer_items` makes them)."""
        with QSignalBlocker(self.model_combo):
            for item in items:
                i = self.model_combo.findData(item["name"])
                if i < 0:
                    i = max(0, self.model_combo.findData(GEOMETRIC))
                    self.model_combo.insertItem(i, item["label"], item["name"])
                self.model_combo.setItemText(i, item["label"])
                self.model_combo.setItemData(i, item.get("tooltip", ""), Qt.ItemDataRole.ToolTipRole)
        view = self.model_combo.view()
        view.setMinimumWidth(view.sizeHintForColumn(0) + 24)

    def set_backend(self, backend: str, native: int | None, turbo_lora: str = "") -> None:
        """Adapt the presets and the render size to the chosen model: ``backend`` ("" for the
        geometric preview), its catalog resolution ``native`` and the LoRA its turbo preset uses."""
        self._backend, self._native, self._turbo_lora = backend, native, turbo_lora
        i = self.preset_combo.findData("turbo")
        if i >= 0:
            self.preset_combo.setItemText(i, f"Turbo (8 steps, {turbo_lora})" if turbo_lora else PRESET_LABELS["turbo"])
            tip = f"At most 8 steps on trailing timesteps with the few-step LoRA {turbo_lora}" if turbo_lora else "At most 8 plain DDIM steps"
            self.preset_combo.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
        i = self.preset_combo.findData("draft")
        item = self.preset_combo.model().item(i) if i >= 0 and hasattr(self.preset_combo.model(), "item") else None
        if item is not None:
            item.setEnabled(backend not in NO_DRAFT_BACKENDS)
            item.setToolTip("SDXL renders poorly at 256 px: use turbo for speed" if backend in NO_DRAFT_BACKENDS else "")
        self._show_render_size()

    def render_size_px(self) -> int:
        """The long side the current model and preset render at (core.request.render_resolution)."""
        from core.request import render_resolution

        rs = self.model.doc.render_settings
        size = self.model.scene.size
        if rs.get("model") == GEOMETRIC or not self._backend:
            return int(max(size))
        p = engine_presets().get(str(rs.get("preset", "default")))
        return render_resolution(int(getattr(p, "max_resolution", 0) or 0), self._native, size)

    def _show_render_size(self) -> None:
        px = self.render_size_px()
        if not self._backend or self.model.doc.render_settings.get("model") == GEOMETRIC:
            why = "the photo's working size"
        elif self._native and px == self._native:
            why = "the model's own"
        elif self._native or px < max(self.model.scene.size):
            why = "the preset's limit"
        else:
            why = "the photo's working size"
        self.render_size.setText(f"{px} px ({why})")

    # ----- view -> requests -----
    def _setting(self, key: str, value) -> None:
        old = self.model.doc.render_settings.get(key)
        if old != value:
            self.settingEdited.emit(key, old, value)

    def _commit_prompt(self) -> None:
        text = self.prompt.toPlainText()
        if text != self._prompt_shown:
            old, self._prompt_shown = self._prompt_shown, text
            self.promptEdited.emit(old, text)

    def commit_pending(self) -> None:
        """Commit a prompt edit still waiting for its typing pause (before a render or a save)."""
        if self._prompt_timer.isActive():
            self._prompt_timer.stop()
            self._commit_prompt()

    def _random_seed(self) -> None:
        self.seed.setValue(int(np.random.default_rng().integers(0, 2**31 - 1)))

    def _copy_command(self) -> None:
        if self._fetch_command:
            QGuiApplication.clipboard().setText(self._fetch_command)

    # ----- render state -----
    def set_model_status(self, text: str, fetch_command: str = "", ok: bool = True) -> None:
        """Say which renderer Render uses; ``fetch_command`` (shown in the tooltip, copied by the
        button) when the model is missing."""
        self._fetch_command = fetch_command
        colour = "palette(placeholder-text)" if ok else "#c77700"
        self.model_status.setStyleSheet(f"color: {colour};")
        self.model_status.setText(text)
        self.model_status.setToolTip(f"Run this to fetch the model:\n{fetch_command}" if fetch_command else text)
        self.copy_cmd.setToolTip(fetch_command)
        self.copy_cmd.setVisible(bool(fetch_command))

    def set_running(self, running: bool) -> None:
        self.cancel_btn.setEnabled(running)
        if running:
            self.progress.setRange(0, 0)
            self.progress.setFormat("Starting\u2026")
            self.stage.setText("")
        else:
            self.step_preview.setVisible(False)

    def show_progress(self, stage: str, step: int, total: int, eta_s: float | None, message: str = "") -> None:
        label = STAGE_LABELS.get(stage, stage.capitalize())
        if total > 1 or step > 0:
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(min(step, total))
            self.progress.setFormat(f"{label} \u2014 %v / %m")
        else:
            self.progress.setRange(0, 0)
            self.progress.setFormat(label)
        eta = format_eta(eta_s)
        self.stage.setText(" \u00b7 ".join(p for p in (label, f"step {step} of {total}" if total > 1 else "", eta, message) if p))

    def show_step_preview(self, image: np.ndarray, step: int, total: int) -> None:
        qimg = numpy_to_qimage(image)
        w = max(64, self.width() - 16)
        pm = QPixmap.fromImage(qimg).scaledToWidth(min(w, 320), Qt.TransformationMode.SmoothTransformation)
        self.step_preview.setPixmap(pm)
        self.step_preview.setToolTip(f"Step {step} of {total}")
        self.step_preview.setVisible(True)

    def show_done(self, text: str) -> None:
        self.step_preview.setVisible(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat(text)
        self.stage.setText("")
        self.cancel_btn.setEnabled(False)

    def show_idle(self, text: str = "Idle") -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(text)
        self.stage.setText("")
        self.cancel_btn.setEnabled(False)
        self.step_preview.setVisible(False)
