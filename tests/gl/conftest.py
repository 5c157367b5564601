"""GL test set-up: one QApplication, and a real OpenGL context or a clear verdict.

Run under a display with ``QT_QPA_PLATFORM=xcb`` (``make test`` uses ``scripts/with-display.sh``,
which starts Xvfb when needed). Without a usable context every GL test is skipped with the reason,
except when ``HANDLES_STUDIO_REQUIRE_GL=1`` (as ``make test`` sets it): then it is a failure.
"""

from __future__ import annotations

import os

import pytest


def _require_gl() -> bool:
    # the same rule as tests/conftest.py gl_required()
    return os.environ.get("HANDLES_STUDIO_REQUIRE_GL") == "1"


@pytest.fixture(scope="session")
def gl_context_info(qapp) -> str:
    """A description of the GL implementation (renderer | version); fails or skips without GL."""
    from PySide6.QtGui import QOffscreenSurface, QOpenGLContext, QSurfaceFormat

    platform = qapp.platformName()
    reason = None
    if platform in ("offscreen", "minimal"):
        reason = f"Qt platform {platform!r} has no OpenGL; run with QT_QPA_PLATFORM=xcb under scripts/with-display.sh"
    else:
        ctx = QOpenGLContext()
        ctx.setFormat(QSurfaceFormat.defaultFormat())
        surface = QOffscreenSurface()
        surface.setFormat(ctx.format())
        surface.create()
        if not ctx.create():
            reason = f"could not create an OpenGL context on platform {platform!r}"
        elif not surface.isValid() or not ctx.makeCurrent(surface):
            reason = f"could not make an OpenGL context current on platform {platform!r}"
        else:
            f = ctx.functions()
            info = f"{f.glGetString(0x1F01)} | {f.glGetString(0x1F02)}"
            ctx.doneCurrent()
            return info
    if _require_gl():
        pytest.fail(f"OpenGL is required (HANDLES_STUDIO_REQUIRE_GL=1) but unavailable: {reason}")
    pytest.skip(f"no OpenGL context: {reason}")
