"""core.logs: one rotating log file in the (overridden) state folder, set up idempotently, never raising."""

from __future__ import annotations

import logging
import warnings
from logging.handlers import RotatingFileHandler

import pytest

from core import logs


def _our_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, RotatingFileHandler)]


@pytest.fixture
def state(tmp_path, monkeypatch):
    """An empty state folder; no log handler before or after the test."""
    logs.shutdown_logging()  # one a CLI test of this session may have left
    logs._reported.clear()
    folder = tmp_path / "state"
    monkeypatch.setenv(logs.STATE_ENV, str(folder))
    yield folder
    logs.shutdown_logging()


def test_messages_reach_a_rotating_file_in_the_state_folder(state):
    path = logs.setup_logging()
    assert path == state / logs.LOG_FILE == logs.log_file()
    (handler,) = _our_handlers()
    assert handler.maxBytes == logs.MAX_BYTES and handler.backupCount == logs.BACKUPS
    logging.getLogger("core.something").info("render of caf\u00e9.png done")
    logging.getLogger("core.something").debug("not at INFO")
    handler.flush()
    text = path.read_text(encoding="utf-8")
    assert "INFO" in text and "core.something" in text and "render of caf\u00e9.png done" in text
    assert "not at INFO" not in text
    assert str(path) in logs.log_location_text()


def test_setting_up_twice_adds_one_handler(state):
    before = len(logging.getLogger().handlers)
    first = logs.setup_logging()
    second = logs.setup_logging()
    assert first == second
    assert len(_our_handlers()) == 1
    assert len(logging.getLogger().handlers) == before + 1
    logs.shutdown_logging()
    assert _our_handlers() == [] and len(logging.getLogger().handlers) == before


def test_the_config_override_keeps_logs_out_of_the_home(tmp_path, monkeypatch, state):
    monkeypatch.delenv(logs.STATE_ENV)
    monkeypatch.setenv("HANDLES_STUDIO_CONFIG_DIR", str(tmp_path / "cfg"))
    assert logs.log_dir() == tmp_path / "cfg" / "logs"
    assert logs.setup_logging().is_file()


def test_an_unwritable_folder_does_not_raise(tmp_path, monkeypatch, state, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(logs.STATE_ENV, str(blocker / "logs"))
    assert logs.setup_logging() == blocker / "logs" / logs.LOG_FILE
    assert logs.setup_logging() == blocker / "logs" / logs.LOG_FILE
    assert _our_handlers() == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no log file" in err[0]  # said once, not at every call


def test_warnings_are_logged_and_still_shown(state, monkeypatch):
    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda *a, **k: shown.append(a[0]))
    path = logs.setup_logging()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("settings.json is damaged", UserWarning, stacklevel=1)
    assert [str(m) for m in shown] == ["settings.json is damaged"]
    _our_handlers()[0].flush()
    assert "settings.json is damaged" in path.read_text(encoding="utf-8")


def test_help_open_log_folder_opens_the_folder(state, monkeypatch):
    pytest.importorskip("PySide6")
    from PySide6.QtGui import QDesktopServices

    from editor.actions import ActionsMixin

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    assert ActionsMixin.open_log_folder(object()) is True  # type: ignore[arg-type]
    assert opened == [str(state)] and state.is_dir()


def test_a_log_file_that_cannot_be_written_is_one_line_once(state, capsys, monkeypatch):
    """A full disk made logging print '--- Logging error ---' and a traceback for every record
    (seen with RLIMIT_FSIZE in a command that failed on its own output)."""
    import errno

    logs.setup_logging()
    (handler,) = _our_handlers()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(handler, "shouldRollover", full)
    for i in range(3):
        logging.getLogger("core.something").warning("record %d", i)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the log file" in err[0] and "No space left on device" in err[0], err
    assert "Traceback" not in "\n".join(err)
