"""Makes docs/screenshot.png: the editor on the sample scene with the box moved and rendered.

Run under a display: `QT_QPA_PLATFORM=xcb scripts/with-display.sh .venv/bin/python scripts/readme_screenshot.py`.
Uses the real renderer factory: the sample renders with the bundled world model (what a new user
sees after a drag and Render).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(out: Path) -> int:
    os.environ.setdefault("HANDLES_STUDIO_CONFIG_DIR", tempfile.mkdtemp(prefix="hs-shot-"))
    from PySide6.QtCore import QEventLoop, QTimer

    from core.transform import Transform3D
    from editor.app import make_application
    from editor.files import RecoveryManager
    from editor.main_window import MainWindow

    app = make_application()
    win = MainWindow(persist=False, recovery=RecoveryManager(Path(os.environ["HANDLES_STUDIO_CONFIG_DIR"]) / "rec"))
    win.resize(1480, 900)
    win.show()

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    wait(800)
    box = win.scene.object("box")
    win.model.select(box.id)
    old = box.transform
    box.transform = Transform3D.from_axis_angle((0, 1, 0), 25.0, translation=(0.45, 0.0, -0.35))
    win.view3d.transformPreview.emit(box.id, box.transform)
    win.view3d.transformCommitted.emit(box.id, old, box.transform)
    done = []
    win.renderFinished.connect(done.append)
    win.request_render()
    for _ in range(1200):  # a real render: up to two minutes on a slow machine
        if done:
            break
        wait(100)
    wait(500)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok = win.grab().save(str(out))
    win.shutdown()
    win.close()
    app.processEvents()
    print(f"{'saved' if ok else 'FAILED to save'} {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshot.png"))
