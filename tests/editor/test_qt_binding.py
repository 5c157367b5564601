"""The Qt binding keeps None alive through a long session.

PySide6 6.12.0 on Python 3.11 releases a reference to None on every call of a method that returns
nothing (``QTimer.setInterval``, ``QPainter.drawLine``, every GL call of the 3D view: 38 a frame)
without having taken one. None is not immortal before Python 3.12, so a session drains it at the
frame rate and Python aborts ("none_dealloc: deallocating None") once it reaches zero: mid-drag in
a long session, or at exit. requirements.txt pins a version without the bug; this test fails on one
that has it.
"""

from __future__ import annotations

import sys

CALLS = 1_000  # few enough that a binding with the bug fails the assertion before None runs out


def test_calls_returning_nothing_keep_none_alive(qapp):
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QWidget

    timer = QTimer()
    widget = QWidget()
    image = QImage(8, 8, QImage.Format.Format_RGB32)
    painter = QPainter(image)
    try:
        before = sys.getrefcount(None)
        for _ in range(CALLS):
            timer.setInterval(5)
            widget.update()
            painter.drawLine(0, 0, 7, 7)
        drift = sys.getrefcount(None) - before
    finally:
        painter.end()
    # a binding with the bug loses 3 * CALLS references here (None's count starts near 10^4)
    assert abs(drift) < 100, f"{3 * CALLS} Qt calls changed None's reference count by {drift}"
