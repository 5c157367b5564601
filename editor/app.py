"""Starting the editor: ``run(argv)`` (called by ``main.py``).

``handles-studio``                     the built-in sample scene
``handles-studio PHOTO``               a new project from a photo
``handles-studio P.handles``           a project
``handles-studio SCENE_DIR``           a Diffusion Handles scene folder
Options: ``--screenshot PATH`` saves a picture of the window and ``--quit-after MS`` closes it after
that many milliseconds (both for CI, tests and README pictures); ``--no-gl`` uses the software 3D
view; ``--no-recovery`` skips the crash-recovery offer.

The window appears before anything heavy is imported: torch and the models load in the render
worker thread when first needed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

APP_NAME = "Handles Studio"

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="handles-studio", description="Handles Studio editor")
    p.add_argument("path", nargs="?", help="photo, .handles project or Diffusion Handles scene folder")
    p.add_argument("--screenshot", metavar="PATH", help="save a PNG of the window (after --quit-after, default 2000 ms)")
    p.add_argument("--quit-after", metavar="MS", type=int, default=None, help="close the window after MS milliseconds")
    p.add_argument("--no-gl", action="store_true", help="use the software 3D view instead of OpenGL")
    p.add_argument("--no-recovery", action="store_true", help="do not offer to recover an autosave")
    p.add_argument("--size", metavar="WxH", default=None, help="initial window size, e.g. 1600x1000")
    return p


def make_application(argv0: str = "handles-studio"):
    """The QApplication (created once), high-DPI aware, following the system's light/dark palette."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        return app
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    app = QApplication([argv0])
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setOrganizationName("handles-studio")
    app.setDesktopFileName("handles-studio")
    # Fusion follows the platform's colour scheme (light or dark) and looks the same everywhere
    app.setStyle("Fusion")
    return app


def _install_excepthook(window) -> None:
    """An exception escaping a slot shows in the banner instead of ending the program."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("unexpected error in the GUI thread", exc_info=(exc_type, exc, tb))
        try:
            from editor.worker import one_line

            window.banner.show_error(f"Unexpected error: {one_line(exc)}", details)
        except Exception:  # noqa: BLE001 - no banner (the window is gone): the previous hook prints it
            previous(exc_type, exc, tb)
            return
        sys.stderr.write(details)

    sys.excepthook = hook


def _display_problem() -> str | None:
    """A one-line reason why no window can open here (Linux without a display), or None."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "no display to open the editor on (DISPLAY and WAYLAND_DISPLAY are unset): run it in a desktop "
        "session, or under a virtual one with `xvfb-run -a make run`; the command line works without one "
        "(handles-studio --help)"
    )


def _save_screenshot(win, out: Path) -> str:
    """Write the window's picture to ``out`` (format by extension, atomically); what happened."""
    from core.atomic import atomic_write, image_format
    from core.errors import HandlesError

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fmt = image_format(out, "screenshot")
        pixmap = win.grab()

        def write(tmp: Path) -> None:
            if not pixmap.save(str(tmp), fmt):
                raise OSError(f"Qt cannot write {fmt}")

        atomic_write(out, write, what="screenshot")
    except (HandlesError, OSError) as exc:
        return f"screenshot could not be saved to {out}: {exc}"
    return f"screenshot saved to {out}"


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    problem = _display_problem()
    if problem:
        print(f"handles-studio: error: {problem}", file=sys.stderr)
        return 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import core
    from core.logs import setup_logging

    log_path = setup_logging()
    log.info("Handles Studio %s starting (Python %s, %s); log file %s", core.__version__, sys.version.split()[0], sys.platform, log_path)
    app = make_application()
    from PySide6.QtCore import QTimer

    from editor.main_window import MainWindow

    if args.no_gl:
        os.environ["HANDLES_STUDIO_NO_GL"] = "1"
    win = MainWindow()
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
            win.resize(w, h)
        except ValueError:
            print(f"handles-studio: ignoring --size {args.size!r} (use WxH, e.g. 1600x1000)", file=sys.stderr)
    _install_excepthook(win)
    win.show()
    if args.path:
        QTimer.singleShot(0, win, lambda: win.open_path(Path(args.path).expanduser()))
    if not args.no_recovery and not args.screenshot:
        QTimer.singleShot(50, win, win.offer_recovery)

    quit_after = args.quit_after
    if args.screenshot and quit_after is None:
        quit_after = 2000
    if quit_after is not None:

        def finish() -> None:
            if args.screenshot:
                out = Path(args.screenshot).expanduser()
                print(f"handles-studio: {_save_screenshot(win, out)}", file=sys.stderr)
            win.shutdown()
            win.hide()
            app.quit()

        QTimer.singleShot(max(0, quit_after), finish)
    code = app.exec()
    win.shutdown()
    log.info("Handles Studio exiting (code %s)", code)
    return int(code)
