"""A non-modal banner across the top of the window: a short message, "Details", dismiss.

Errors never interrupt the user with a modal box: they appear here. ``show_message`` takes a level
("error", "warning", "info"), a one-line message and optional details (a traceback, a fetch
command...) that the "Details" button reveals in a read-only text box. A long message wraps onto
at most three lines, the last one elided (the tooltip has it all): the banner never asks the
window for more width than a short message needs.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QPalette, QTextLayout, QTextOption
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSizePolicy, QToolButton, QVBoxLayout, QWidget

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


class _MessageLabel(QLabel):
    """A label that wraps its text at its own width (inside words too long for a line) onto at most
    ``MAX_LINES`` lines, eliding the last one. Its size hints ask for little width (the layout gives
    it what is left), so no text can make the window wider."""

    MAX_LINES = 3
    #: widths, in average characters, of the minimum and preferred size hints
    MIN_CHARS = 12
    PREFERRED_CHARS = 40

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self._shown_for = -1
        self.setWordWrap(False)
        sp = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        sp.setHeightForWidth(True)
        self.setSizePolicy(sp)

    def full_text(self) -> str:
        return self._full

    def set_full_text(self, text: str) -> None:
        self._full = text
        self._shown_for = -1
        self._relayout()
        self.updateGeometry()

    def _lines(self, width: int) -> list[str]:
        text = self._full
        if not text:
            return [""]
        width = max(int(width), 1)
        fm = self.fontMetrics()
        layout = QTextLayout(text, self.font())
        opt = QTextOption()
        opt.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        layout.setTextOption(opt)
        spans: list[tuple[int, int]] = []
        layout.beginLayout()
        while len(spans) < self.MAX_LINES:
            line = layout.createLine()
            if not line.isValid():
                break
            line.setLineWidth(width)
            spans.append((line.textStart(), line.textLength()))
        layout.endLayout()
        lines = [text[a : a + n].rstrip() for a, n in spans]
        start, n = spans[-1]
        if start + n < len(text):  # more than fits: the last line ends with an ellipsis
            lines[-1] = fm.elidedText(text[start:].strip(), Qt.TextElideMode.ElideRight, width)
        return lines

    def _text_width(self) -> int:
        return self.fontMetrics().horizontalAdvance(self._full) + 1

    def _height(self, lines: int) -> int:
        m = self.contentsMargins()
        return lines * self.fontMetrics().lineSpacing() + m.top() + m.bottom()

    def _inner(self, width: int) -> int:
        m = self.contentsMargins()
        return width - m.left() - m.right()

    def heightForWidth(self, width: int) -> int:  # noqa: N802 (Qt override)
        return self._height(len(self._lines(self._inner(width))))

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def sizeHint(self) -> QSize:  # noqa: N802
        m = self.contentsMargins()
        w = min(self._text_width(), self.fontMetrics().averageCharWidth() * self.PREFERRED_CHARS) + m.left() + m.right()
        return QSize(w, self.heightForWidth(w))

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        m = self.contentsMargins()
        w = min(self._text_width(), self.fontMetrics().averageCharWidth() * self.MIN_CHARS) + m.left() + m.right()
        return QSize(w, self._height(1))

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._relayout()

    def _relayout(self) -> None:
        width = self.contentsRect().width()
        if width == self._shown_for:
            return
        self._shown_for = width
        shown = "\n".join(self._lines(width)) if width > 0 else self._full
        if shown != self.text():
            self.setText(shown)


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
        self._text = _MessageLabel()
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
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
        # long lines wrap at the box's width: the box never widens the window
        self._details_box.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self._details_box.setMinimumWidth(0)
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
        self._text.set_full_text(self.message)
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
