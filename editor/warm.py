"""Work done once per editor process, in a thread of its own while the window comes up, so that
no user action pays for it later in the event loop: the drag kernels compiled (or loaded from
numba's cache), and the modules that a render's results first need imported (measured: their
first import inside the finished-render handler stalled the window 26-48 ms)."""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)

#: imported on a render's first result (history thumbnails, the record, shared-memory images)
FIRST_RENDER_MODULES = ("PIL.Image", "core.project", "multiprocessing.shared_memory", "multiprocessing.resource_tracker")

_THREAD: threading.Thread | None = None


def _run() -> None:
    for name in FIRST_RENDER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # only a head start: the code that needs it reports the error
            log.warning("warm-up: cannot import %s: %s", name, exc)
    from core.geometry.warp import warm_up

    warm_up()


def start() -> threading.Thread:
    """Start the warm-up once per process (later calls return the same thread). Not a daemon: a
    process that ends meanwhile waits for the compiler instead of tearing it down mid-way."""
    global _THREAD
    if _THREAD is None:
        _THREAD = threading.Thread(target=_run, name="editor-warm-up")
        _THREAD.start()
    return _THREAD
