"""Persisted user settings (Qt-free): a JSON file in the user's configuration folder.

The folder is ``platformdirs.user_config_dir("handles-studio")``; the environment variable
``HANDLES_STUDIO_CONFIG_DIR`` overrides it (tests, portable installs). Writing is atomic (temporary
file in the same folder, fsync, ``os.replace``). A missing file gives the defaults; a damaged file,
or a value of the wrong type, gives the defaults for what cannot be read plus a warning, never an
exception: settings must never stop the program from starting.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core import atomic
from core.errors import InputError

APP_NAME = "handles-studio"
CONFIG_ENV = "HANDLES_STUDIO_CONFIG_DIR"
SETTINGS_FILE = "settings.json"
SCHEMA_VERSION = 1

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PRESETS = ("reference", "default", "fast", "draft", "turbo")


def config_dir() -> Path:
    """The folder that holds settings.json and the recovery files (created on demand)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def recovery_dir() -> Path:
    """Where autosaves and the session lock files live."""
    return config_dir() / "recovery"


@dataclass
class Settings:
    """Everything the user can set in the settings dialog, plus remembered UI state."""

    # rendering
    device: str = "auto"
    precision: str = "auto"
    #: long side in pixels of the working resolution of new scenes (a multiple of 64, from 128 to
    #: :data:`core.io.MAX_LONG_SIDE`)
    working_resolution: int = 512
    default_steps: int = 25
    default_preset: str = "default"
    diffusion_model: str = "sd2-depth"
    depth_model: str = ""
    #: render automatically when a drag ends
    auto_render: bool = True
    #: a step preview every N denoising steps (0: none)
    preview_every: int = 5
    #: memory for caches (identities, activations) in MiB
    cache_memory_mb: int = 2048
    #: extra folders searched for models (besides the Hugging Face cache)
    model_folders: list[str] = field(default_factory=list)
    # editing
    undo_limit: int = 200
    #: memory for mask data held by the undo history, in MiB
    undo_memory_mb: int = 128
    autosave_minutes: float = 3.0
    # remembered UI state
    recent_files: list[str] = field(default_factory=list)
    max_recent: int = 10
    window_geometry: str = ""
    window_state: str = ""
    splitter_state: str = ""

    # ----- validation -----
    def validated(self) -> Settings:
        """A copy with every out-of-range value replaced by its default (and a warning)."""
        from core.io import MAX_LONG_SIDE

        d = Settings()
        out = Settings(**asdict(self))
        checks = {
            "device": lambda v: v in DEVICES,
            "precision": lambda v: v in PRECISIONS,
            "working_resolution": lambda v: 128 <= v <= MAX_LONG_SIDE and v % 64 == 0,
            "default_steps": lambda v: 1 <= v <= 1000,
            "default_preset": lambda v: v in PRESETS,
            "preview_every": lambda v: 0 <= v <= 1000,
            "cache_memory_mb": lambda v: 64 <= v <= 1 << 20,
            "undo_limit": lambda v: 1 <= v <= 100000,
            "undo_memory_mb": lambda v: 1 <= v <= 1 << 16,
            "autosave_minutes": lambda v: 0 <= v <= 24 * 60,
            "max_recent": lambda v: 0 <= v <= 100,
        }
        # a working resolution this version no longer offers (earlier ones allowed 2048) becomes
        # the largest it does, not the default: the user asked for large
        wr = out.working_resolution
        if isinstance(wr, int) and MAX_LONG_SIDE < wr <= 4096 and wr % 64 == 0:
            warnings.warn(f"settings: working_resolution={wr} is over this version's {MAX_LONG_SIDE}; using {MAX_LONG_SIDE}", stacklevel=2)
            out.working_resolution = MAX_LONG_SIDE
        for name, ok in checks.items():
            if not ok(getattr(out, name)):
                warnings.warn(f"settings: {name}={getattr(out, name)!r} is out of range; using {getattr(d, name)!r}", stacklevel=2)
                setattr(out, name, getattr(d, name))
        return out

    # ----- serialisation -----
    def to_dict(self) -> dict:
        d = asdict(self)
        d["schema_version"] = SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, data: Any) -> Settings:
        """Build from parsed JSON; unknown keys are ignored, values of the wrong type fall back."""
        s = cls()
        if not isinstance(data, dict):
            warnings.warn("settings: the file does not hold a JSON object; using defaults", stacklevel=2)
            return s
        for f in fields(cls):
            if f.name not in data:
                continue
            default = getattr(s, f.name)
            value = data[f.name]
            try:
                value = _coerce(value, default)
            except (TypeError, ValueError):
                warnings.warn(f"settings: {f.name}={value!r} has the wrong type; using {default!r}", stacklevel=2)
                continue
            setattr(s, f.name, value)
        return s.validated()

    # ----- recent files -----
    def add_recent(self, path: str | os.PathLike) -> None:
        p = str(Path(path).expanduser().resolve())
        self.recent_files = [p] + [r for r in self.recent_files if r != p]
        del self.recent_files[self.max_recent :]


def _coerce(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise TypeError("expected a boolean")
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise TypeError("expected an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("expected a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError("expected a list of strings")
        return list(value)
    raise TypeError("unsupported setting type")


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read the settings; defaults when missing; defaults plus a warning when damaged."""
    p = Path(path) if path is not None else settings_path()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        warnings.warn(f"settings: cannot read {p} ({exc.strerror or exc}); using defaults", stacklevel=2)
        return Settings()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        warnings.warn(f"settings: {p} is damaged ({exc}); using defaults", stacklevel=2)
        return Settings()
    return Settings.from_dict(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (through :mod:`core.atomic`), creating its folder.

    Raises OSError (whose message is one line naming ``path``) when it cannot be written; the
    previous file is then unchanged.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic.atomic_write_text(path, text, what="file")
    except InputError as exc:
        cause = exc.__cause__
        raise OSError(cause.errno if isinstance(cause, OSError) else None, str(exc)) from exc


def save_settings(settings: Settings, path: str | os.PathLike | None = None) -> Path:
    """Write the settings atomically; returns the path written."""
    p = Path(path) if path is not None else settings_path()
    atomic_write_text(p, json.dumps(settings.to_dict(), indent=2, sort_keys=True) + "\n")
    return p
