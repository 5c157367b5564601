"""Identity locks in a document, Qt-free and light (json and hashlib only; the learning itself is
``core.ml.handles.lock``).

A learnt lock is bytes (safetensors with a JSON header) kept in the project's caches under
:func:`cache_name`; the document's render settings say which object has which lock and whether it
is on: ``render_settings["locks"]`` = object id -> the record of :func:`record_for` (method, word,
the model it was learnt on, its cache name, size, time). The record is what save/load and undo
carry; renders read the weights from the caches (``core.request.request_locks``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from core.errors import InputError

__all__ = ["CACHE_PREFIX", "METHOD_LABELS", "cache_name", "describe", "read_header", "record_for", "with_lock", "without_lock"]

CACHE_PREFIX = "lock:"
METHOD_LABELS = {"ti": "Textual Inversion", "custom": "Custom Diffusion", "lora": "DreamBooth-LoRA"}
#: a lock's header is small; anything larger is not one
_MAX_HEADER = 1 << 20


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
