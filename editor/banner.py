"""A non-modal banner across the top of the window: one line of message, "Details", dismiss.

Errors never interrupt the user with a modal box: they appear here. ``show_message`` takes a level
("error", "warning", "info"), a one-line message and optional details (a traceback, a fetch
command...) that the "Details" button reveals in a read-only text box.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QToolButton, QVBoxLayout, QWidget

_COLOURS = {
    # level: (light background, dark background, accent)
    "error": ("#fde7e9", "#4a1c21", "#d13438"),
    "warning": ("#fff4ce", "#4a3d12", "#c19c00"),
    "info": ("#e5f1fb", "#1b3447", "#0078d4"),
}
_ICONS = {"error": "\u26a0", "warning": "\u26a0", "info": "\u2139"}


def is_dark(widget: QWidget | None = None) -> bool:
    pal = widget.palette() if widget is not None else QGuiApplication.palette()
    return pal.color(QPalette.ColorRole.Window).lightness() < 128


class Banner(QFrame):
    """See the module docstring. ``message`` and ``details`` hold what is shown (tests read them)."""

    dismissed = Signal()
    #: the optional action button was clicked
    actionTriggered = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.level = "info"
        self.message = ""
        self.details = ""
        self._icon = QLabel()
        self._text = QLabel()
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._text.setWordWrap(False)
        self._action = QPushButton()
        self._action.setVisible(False)
        self._action.clicked.connect(self.actionTriggered)
        self._details_btn = QPushButton("Details")
        self._details_btn.setCheckable(True)
        self._details_btn.toggled.connect(self._toggle_details)
        self._close = QToolButton()
        self._close.setText("\u2715")
        self._close.setToolTip("Dismiss")
        self._close.setAutoRaise(True)
        self._close.clicked.connect(self.dismiss)
        self._details_box = QPlainTextEdit()
        self._details_box.setReadOnly(True)
        self._details_box.setMaximumHeight(160)
        self._details_box.setVisible(False)
        row = QHBoxLayout()
        row.setContentsMargins(10, 6, 6, 6)
        row.addWidget(self._icon)
        row.addWidget(self._text, 1)
        row.addWidget(self._action)
        row.addWidget(self._details_btn)
        row.addWidget(self._close)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addLayout(row)
        lay.addWidget(self._details_box)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.dismiss)
        self.setVisible(False)

    def show_message(self, message: str, details: str = "", level: str = "error", action: str = "", timeout_ms: int = 0) -> None:
        self.level = level if level in _COLOURS else "error"
        self.message = (message.strip().splitlines() or [""])[0]
        self.details = details.strip()
        self._text.setText(self.message)
        self._text.setToolTip(self.message)
        self._icon.setText(_ICONS[self.level])
        self._details_box.setPlainText(self.details)
        self._details_btn.setVisible(bool(self.details))
        self._details_btn.setChecked(False)
        self._action.setText(action)
        self._action.setVisible(bool(action))
        light, dark, accent = _COLOURS[self.level]
        bg = dark if is_dark(self) else light
        self.setStyleSheet(
            f"QFrame#banner {{ background: {bg}; border-left: 4px solid {accent}; border-bottom: 1px solid {accent}; }}"
            f"QFrame#banner QLabel {{ background: transparent; }}"
        )
        self._icon.setStyleSheet(f"color: {accent}; font-size: 16px;")
        self.setVisible(True)
        if timeout_ms > 0:
            self._timer.start(timeout_ms)
        else:
            self._timer.stop()

    @property
    def shown(self) -> bool:
        """The banner is up (whether or not its window is on screen)."""
        return not self.isHidden()

    def show_error(self, message: str, details: str = "") -> None:
        self.show_message(message, details, "error")

    def _toggle_details(self, on: bool) -> None:
        self._details_box.setVisible(on)
        self._details_btn.setText("Hide details" if on else "Details")

    def dismiss(self) -> None:
        self._timer.stop()
        if not self.isHidden():
            self.setVisible(False)
            self.dismissed.emit()
