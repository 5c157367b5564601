"""Identity locks in a document, Qt-free and light (json and hashlib only; the learning itself is
``core.ml.handles.lock``).

A learnt lock is bytes (safetensors with a JSON header) kept in the project's caches under
:func:`cache_name`; the document's render settings say which object has which lock and whether it
is on: ``render_settings["locks"]`` = object id -> the record of :func:`record_for` (method, word,
the model it was learnt on, its cache name, size, time). The record is what save/load and undo
carry; renders read the weights from the caches (``core.request.request_locks``).

How a lock is learnt (:class:`LockSettings`, :func:`lock_settings`), how long it takes
(:func:`estimate_seconds`) and which word it binds (:func:`word_for`) live here too, not beside
the training: the editor's Lock Identity dialog needs them before anything loads torch
(``core.ml.handles.lock`` re-exports them).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import InputError

__all__ = [
    "CACHE_PREFIX",
    "CPU_FWD_BWD_512",
    "METHODS",
    "METHOD_LABELS",
    "WORLD_FWD_BWD_128",
    "LockSettings",
    "cache_name",
    "describe",
    "device_kind",
    "duration_text",
    "estimate_seconds",
    "lock_settings",
    "read_header",
    "unused_reason",
    "record_for",
    "with_lock",
    "without_lock",
    "word_for",
]

CACHE_PREFIX = "lock:"
METHODS = ("ti", "custom", "lora")
METHOD_LABELS = {"ti": "Textual Inversion", "custom": "Custom Diffusion", "lora": "DreamBooth-LoRA"}
#: a lock's header is small; anything larger is not one
_MAX_HEADER = 1 << 20
#: measured seconds of one UNet forward+backward at 512x512 on the 2-core CPU (make bench-render);
#: the world model's at its 128 px lock crops (core.ml.handles.lock's benchmark, bench-quality --locks)
CPU_FWD_BWD_512 = {"sd2-depth": 10.4, "sd15-controlnet": 15.2, "sdxl-controlnet": 32.3}
WORLD_FWD_BWD_128 = 0.08


def cache_name(object_id: str, data: bytes) -> str:
    """The project cache name of a lock's bytes: the object and the bytes' digest."""
    return f"{CACHE_PREFIX}{object_id}:{hashlib.sha256(bytes(data)).hexdigest()[:16]}"


def read_header(data: bytes, what: str = "identity lock") -> dict:
    """The JSON header of a lock's bytes (method, word, object id, model, info)."""
    b = bytes(data[: 8 + _MAX_HEADER])
    n = int.from_bytes(b[:8], "little") if len(b) >= 8 else -1
    if n <= 0 or n > _MAX_HEADER or 8 + n > len(data):
        raise InputError(f"{what} is damaged (no header); learn the lock again")
    try:
        head = json.loads(json.loads(b[8 : 8 + n]).get("__metadata__", {}).get("lock", ""))
    except (ValueError, AttributeError, TypeError) as exc:
        raise InputError(f"{what} is damaged (its header is not readable); learn the lock again") from exc
    if not isinstance(head, dict) or head.get("method") not in METHOD_LABELS:
        raise InputError(f"{what} is not an identity lock of this program; learn the lock again")
    return head


def record_for(data: bytes, object_id: str, created: str = "") -> dict:
    """The document's record of a lock learnt as ``data`` for ``object_id``."""
    head = read_header(data)
    raw = head.get("info")
    info: dict = raw if isinstance(raw, dict) else {}
    raw = info.get("settings")
    settings: dict = raw if isinstance(raw, dict) else {}
    return {
        "method": str(head["method"]),
        "word": str(head.get("word", "")),
        "model": str(head.get("model", "")),
        "cache": cache_name(object_id, data),
        "bytes": len(data),
        "seconds": float(info.get("seconds", 0.0) or 0.0),
        "steps": int(settings.get("steps", 0) or 0),
        "created": created,
        "enabled": True,
    }


def with_lock(locks: Mapping | None, object_id: str, record: Mapping | None) -> dict:
    """A copy of ``locks`` (the render settings' value) with ``object_id``'s record set (None: removed)."""
    out = {k: dict(v) for k, v in (locks or {}).items() if isinstance(v, Mapping)}
    if record is None:
        out.pop(object_id, None)
    else:
        out[object_id] = dict(record)
    return out


def without_lock(locks: Mapping | None, object_id: str) -> dict:
    return with_lock(locks, object_id, None)


def describe(record: Mapping) -> str:
    """ "DreamBooth-LoRA on 'box', 184 KB, learnt in 48 s (off)" """
    size = int(record.get("bytes", 0) or 0)
    kb = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{max(1, round(size / 1e3))} KB"
    off = "" if record.get("enabled", True) else " (off)"
    secs = float(record.get("seconds", 0) or 0)
    took = f", learnt in {secs:.0f} s" if secs else ""
    return f"{METHOD_LABELS.get(str(record.get('method')), str(record.get('method')))} on '{record.get('word', '')}', {kb}{took}{off}"


def unused_reason(record: Mapping, current_model: str) -> str:
    """Why renders with ``current_model`` do not use this lock ("" when they do): learnt on
    another model (a lock fits only the model it was learnt on), or switched off."""
    model = str(record.get("model", ""))
    if current_model and model != current_model:
        return f"learnt on {model}; not used with {current_model}"
    if not record.get("enabled", True):
        return "switched off: renders do not use it"
    return ""


# ----------------------------------------------------------------------------- learning settings
@dataclass(frozen=True)
class LockSettings:
    """How a lock is learnt. ``size``: crop side in pixels (a multiple of 8 x the VAE factor);
    ``batch``: crops a step; ``lr``: the adapter's learning rate, ``token_lr``: the vectors';
    ``rank``: the adapter's rank; ``prior_images``/``prior_weight``: DreamBooth's prior
    preservation (``lora`` only); ``examples``: crops made from each photo; ``mirror``: allow
    horizontal flips."""

    method: str = "custom"
    steps: int = 200
    batch: int = 4
    size: int = 128
    lr: float = 1e-3
    token_lr: float = 5e-3
    rank: int = 8
    prior_images: int = 8
    prior_weight: float = 1.0
    prior_steps: int = 20
    examples: int = 24
    mirror: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown lock method {self.method!r} (choose one of: {', '.join(METHODS)})")
        for name in ("steps", "batch", "size", "rank", "examples"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"lock setting {name} must be at least 1 (got {getattr(self, name)})")
        if self.steps > 20000 or self.size > 1024 or self.batch > 64 or self.examples > 512:
            raise InputError("lock settings out of range: at most 20000 steps, 1024 px crops, 64 crops a step, 512 examples")


def lock_settings(method: str, world: bool, **over) -> LockSettings:
    """Sensible defaults per method, for the world model (small crops, fast) or a real model
    (512 px crops, as the model was trained)."""
    steps = {"ti": 300, "custom": 200, "lora": 200}[method]
    base: dict[str, Any] = {"method": method, "steps": steps}
    if method == "custom":
        base["rank"] = 16
    if not world:
        base.update(size=512, batch=1, examples=16, prior_images=8, steps=steps * 2)
    base.update({k: v for k, v in over.items() if v is not None})
    return LockSettings(**base)


def estimate_seconds(settings: LockSettings, backend: str, device_type: str, seconds_per_eval: float | None = None) -> float:
    """Seconds a lock takes to learn: ``seconds_per_eval`` (one forward+backward of a batch-1 crop,
    when measured) or, on a CPU, the measured full-size figures scaled by the crop's area."""
    per = seconds_per_eval
    if per is None and backend == "world":
        per = WORLD_FWD_BWD_128 * (settings.size / 128) ** 2 * (1.0 if device_type == "cpu" else 0.1)
    if per is None:
        base = CPU_FWD_BWD_512.get(backend, 10.4)
        per = base * (settings.size / 512) ** 2 if device_type == "cpu" else base / 40
    evals = settings.steps * settings.batch * (2 if settings.method == "lora" else 1)
    prior = settings.prior_images * settings.prior_steps * 2 / 3 if settings.method == "lora" else 0
    return float(per * (evals + prior))


def duration_text(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.5 h"``: an estimate's length, for people."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def device_kind(pref: str | None) -> str:
    """``cpu``, ``cuda`` or ``mps``: where a lock would learn for the user's device setting, for
    an estimate only and without importing torch (``auto``: cuda where an NVIDIA driver shows a
    GPU; the engine's ``core.ml.device.pick_device`` decides for real)."""
    kind = str(pref or "auto").split(":")[0].lower()
    if kind in ("cpu", "cuda", "mps"):
        return kind
    if os.path.isdir("/proc/driver/nvidia/gpus") and os.listdir("/proc/driver/nvidia/gpus"):
        return "cuda"
    if sys.platform == "darwin" and os.uname().machine == "arm64":
        return "mps"
    return "cpu"


# ----------------------------------------------------------------------------- words
def _words(text: str) -> str:
    return " " + " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split()) + " "


def word_for(name: str, prompt: str, aliases: dict[str, str] | None = None) -> str:
    """The word a lock of object ``name`` binds to: the first word of its name (or its alias:
    the world's "sphere" is a "beach ball") that the prompt holds ("box 2" -> "box"), else the
    name's first word."""
    words = [w for w in _words(name).split() if not w.isdigit()]
    have = _words(prompt)
    cands = [(aliases or {}).get(w, w) for w in words] + words
    for w in cands:
        if f" {w} " in have:
            return w
    return cands[0] if cands else "object"
