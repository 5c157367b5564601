"""Layout of the banner and the side panels: a long message never widens the window, and the main
window fits a 1366x768 laptop screen with the render panel's model warning and its button in view."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize
from PySide6.QtWidgets import QApplication, QMainWindow, QVBoxLayout, QWidget

from editor.banner import Banner

WORDS = "Render failed: the model could not be loaded from the folder you chose because " * 5
PATH = "/home/someone/" + "very_long_folder_name/" * 12 + "model.safetensors"
LONG_MESSAGE = ("Cannot open " + PATH + ": " + WORDS)[:400]  # a word wider than any window, then words
LONG_DETAILS = "Traceback (most recent call last):\n" + ("  File " + PATH + ", line 12, in load\n") * 6 + "OSError: " + "x" * 500

LONG_WARNING = (
    "No diffusion model on disk: Render shows the geometric preview. Fetch sd2-depth to render with Diffusion Handles; "
    "sd2-world knows only its procedural world (the sample's floor, wall, boxes, balls and cylinders): on this photo it "
    "cannot give a real render. Choose a real model such as sd2-depth (Help \u25b8 Models)."
)
FETCH = "hf download stabilityai/stable-diffusion-2-depth --local-dir ~/.cache/handles-studio/models/sd2-depth"


def _settle():
    for _ in range(5):
        QApplication.processEvents()


def _rect_in(widget, top) -> QRect:
    return QRect(widget.mapTo(top, QPoint(0, 0)), widget.size())


# ----------------------------------------------------------------- banner
def test_long_banner_message_wraps_and_never_widens_the_window(qtbot):
    win = QMainWindow()
    qtbot.addWidget(win)
    central = QWidget()
    lay = QVBoxLayout(central)
    lay.setContentsMargins(0, 0, 0, 0)
    banner = Banner()
    lay.addWidget(banner)
    lay.addWidget(QWidget(), 1)
    win.setCentralWidget(central)
    win.resize(1000, 600)
    win.show()
    qtbot.waitExposed(win)
    _settle()

    banner.show_error(LONG_MESSAGE, LONG_DETAILS)
    _settle()
    assert banner.message == LONG_MESSAGE
    assert banner.minimumSizeHint().width() < 600
    assert banner.sizeHint().width() <= 1000
    assert win.width() == 1000
    # the message wraps onto a few lines inside the window, the full text is in the tooltip
    label = banner._text
    assert label.toolTip() == LONG_MESSAGE
    assert 1 < label.text().count("\n") + 1 <= 3
    assert label.isVisible() and _rect_in(label, win).right() < win.width()
    assert label.height() >= 2 * label.fontMetrics().lineSpacing()
    assert banner.height() < 120
    assert label.text().endswith("\u2026")  # 400 characters do not fit on three lines of 1000 px

    banner._details_btn.click()
    _settle()
    assert not banner._details_box.isHidden()
    assert banner.minimumSizeHint().width() < 600
    assert win.width() == 1000
    banner._details_btn.click()
    _settle()
    assert win.width() == 1000

    # a short message is shown as it is, on one line
    banner.show_error("Saved nothing: the disk is full")
    _settle()
    assert banner._text.text() == "Saved nothing: the disk is full"
    assert win.width() == 1000


def test_long_banner_does_not_widen_the_main_window(make_window):
    win = make_window()
    win.resize(1200, 800)
    _settle()
    width = win.width()
    assert width == 1200
    win.banner.show_error(LONG_MESSAGE[:300], LONG_DETAILS)
    _settle()
    assert win.width() == width
    win.banner._details_btn.click()
    _settle()
    assert win.width() == width
    assert win.minimumSizeHint().width() <= width


# ----------------------------------------------------------------- main window on a laptop
def test_main_window_fits_a_1366x768_screen(make_window, qtbot):
    win = make_window()
    rp = win.render_panel
    assert win.minimumSizeHint().height() <= 680
    rp.set_model_status(LONG_WARNING, FETCH, ok=False)
    _settle()
    assert win.minimumSizeHint().height() <= 680
    assert win.minimumSizeHint().width() <= 1024

    win.resize(1024, 700)
    qtbot.waitUntil(lambda: win.size() == QSize(1024, 700), timeout=3000)
    _settle()
    status = win.statusBar().geometry()
    for w in (rp.model_status, rp.copy_cmd):
        assert w.isVisible()
        r = _rect_in(w, win)
        # fully shown: inside each of its parents up to the window, so nothing clips it ...
        p = w.parentWidget()
        while p is not None and p is not win:
            assert _rect_in(p, win).contains(r), f"{w.objectName() or type(w).__name__} cut off by {p.objectName() or type(p).__name__}"
            p = p.parentWidget()
        # ... and above the status bar
        assert r.bottom() < status.top()
    # the whole warning is shown: its label is as tall as its wrapped text
    label = rp.model_status
    assert label.height() >= label.heightForWidth(label.width())
    assert rp.copy_cmd.width() >= rp.copy_cmd.sizeHint().width()
    assert win.minimumSizeHint().height() <= 680  # the narrower panel wraps the warning onto more lines
    win.resize(1366, 680)
    qtbot.waitUntil(lambda: win.size() == QSize(1366, 680), timeout=3000)
