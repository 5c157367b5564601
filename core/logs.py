"""The program's log file (Qt-free, standard library only): one rotating file in the user's state folder.

Modules log through ``log = logging.getLogger(__name__)``; :func:`setup_logging` (called by the
editor's start-up and by the command line when it runs a command) sends those records to
``handles-studio.log`` (1 MB, three older files kept) in :func:`log_dir`:

1. ``$HANDLES_STUDIO_STATE_DIR`` when set;
2. else ``$HANDLES_STUDIO_CONFIG_DIR/logs`` when the configuration folder is overridden (tests,
   portable installs): nothing is written to the real home then;
3. else ``platformdirs.user_state_dir("handles-studio")`` (``~/.local/state/handles-studio`` on Linux).

Setting up never raises: a folder that cannot be created or written gives one line on stderr, and
the program runs on without a log file. Warnings (``warnings.warn``) are also written to the log,
and still shown as before; an exception escaping a Python thread is logged with its traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import warnings
from pathlib import Path

from core.settings import APP_NAME, CONFIG_ENV

STATE_ENV = "HANDLES_STUDIO_STATE_DIR"
LOG_FILE = "handles-studio.log"
MAX_BYTES = 1_000_000
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"

log = logging.getLogger(__name__)

#: the handler setup_logging installed on the root logger (None before, or when it failed)
_handler: logging.Handler | None = None
#: what setup_logging replaced, restored by shutdown_logging
_previous: dict = {}
#: the folders a failure was already reported for (one stderr line each)
_reported: set[str] = set()


def log_dir() -> Path:
    """The folder of the log file (see the module docstring; created by :func:`setup_logging`)."""
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env).expanduser()
    cfg = os.environ.get(CONFIG_ENV)
    if cfg:
        return Path(cfg).expanduser() / "logs"
    import platformdirs

    return Path(platformdirs.user_state_dir(APP_NAME, appauthor=False))


def log_file() -> Path:
    """The current log file (older ones are ``handles-studio.log.1`` .. ``.3`` beside it)."""
    return log_dir() / LOG_FILE


def log_location_text() -> str:
    """One sentence for the About box: where the log file is."""
    try:
        where = str(log_file())
    except Exception as exc:  # noqa: BLE001 - the About box must open whatever the environment holds
        return f"The log file's folder cannot be determined ({type(exc).__name__})."
    return f"Log file: {where} (Help \u2192 Open Log Folder)."


def setup_logging(level: int = logging.INFO) -> Path:
    """Send log records of ``level`` and above to the rotating log file; returns its path.

    Idempotent: a second call changes the level and adds nothing. Never raises (see the module
    docstring); the path is returned even when the file could not be opened.
    """
    global _handler
    try:
        path = log_file()
    except Exception as exc:  # noqa: BLE001 - no state folder (e.g. platformdirs missing): run without a log
        _report("the log folder", exc)
        return Path(LOG_FILE)
    root = logging.getLogger()
    if _handler is not None and _handler in root.handlers:
        _handler.setLevel(level)
        _lower_root_level(root, level)
        return Path(getattr(_handler, "baseFilename", path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _log_file_class()(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except (OSError, ValueError) as exc:
        _report(str(path), exc)
        return path
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    _handler = handler
    _previous["root_level"] = root.level
    _lower_root_level(root, level)
    _capture_warnings()
    _log_thread_exceptions()
    log.info("log opened (pid %d)", os.getpid())
    return path


def shutdown_logging() -> None:
    """Undo :func:`setup_logging`: remove and close the file handler, restore the hooks (tests)."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
        _handler = None
    if "root_level" in _previous:
        root.setLevel(_previous.pop("root_level"))
    if "showwarning" in _previous:
        if getattr(warnings.showwarning, "_handles_studio", False):
            warnings.showwarning = _previous["showwarning"]
        del _previous["showwarning"]
    if "excepthook" in _previous:
        if getattr(threading.excepthook, "_handles_studio", False):
            threading.excepthook = _previous["excepthook"]
        del _previous["excepthook"]


@functools.cache
def _log_file_class():
    """The log file's handler class (built on first use: logging.handlers is imported lazily)."""
    from logging.handlers import RotatingFileHandler

    class LogFile(RotatingFileHandler):
        """The rotating log file; a record it cannot write (a full disk, a vanished folder) is
        dropped with one line on stderr, once, instead of logging's traceback for each record."""

        failed = False

        def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's API
            if self.failed:
                return
            self.failed = True
            exc = sys.exc_info()[1]
            reason = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) if exc is not None else "unknown error"
            try:
                print(f"{APP_NAME}: cannot write the log file {self.baseFilename} ({reason}); going on without it", file=sys.stderr)
            except Exception:  # noqa: BLE001 - no usable stderr either
                pass

        def emit(self, record: logging.LogRecord) -> None:
            if not self.failed:
                super().emit(record)

    return LogFile


def _lower_root_level(root: logging.Logger, level: int) -> None:
    if root.getEffectiveLevel() > level:
        root.setLevel(level)


def _report(where: str, exc: BaseException) -> None:
    if where in _reported:
        return
    _reported.add(where)
    try:
        print(f"{APP_NAME}: no log file ({where}: {type(exc).__name__}: {exc})", file=sys.stderr)
    except Exception:  # noqa: BLE001 - no usable stderr either (a windowed app): nothing left to tell
        pass


def _capture_warnings() -> None:
    """Log each warning to ``py.warnings`` and show it as before (unlike ``logging.captureWarnings``,
    which would take it off stderr: a command-line user still sees a damaged-settings warning)."""
    if getattr(warnings.showwarning, "_handles_studio", False):
        return
    previous = warnings.showwarning
    logger = logging.getLogger("py.warnings")

    def showwarning(message, category, filename, lineno, file=None, line=None):
        logger.warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)
        previous(message, category, filename, lineno, file, line)

    showwarning._handles_studio = True  # type: ignore[attr-defined]
    _previous["showwarning"] = previous
    warnings.showwarning = showwarning


def _log_thread_exceptions() -> None:
    """An exception escaping a Python thread goes to the log (then to the previous hook, which prints it)."""
    if getattr(threading.excepthook, "_handles_studio", False):
        return
    previous = threading.excepthook

    def excepthook(args) -> None:
        if args.exc_type is not SystemExit:
            name = args.thread.name if args.thread is not None else "?"
            logging.getLogger("threads").error("uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        previous(args)

    excepthook._handles_studio = True  # type: ignore[attr-defined]
    _previous["excepthook"] = previous
    threading.excepthook = excepthook
