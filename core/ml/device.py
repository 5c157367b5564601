"""Device and precision choice, and a small cache of loaded models.

:func:`pick_device` turns a user preference (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) and
an optional precision (``auto``, ``fp32``, ``fp16``, ``bf16``) into a :class:`DeviceInfo`:

- CUDA: float16 by default; bfloat16 when asked and the GPU supports it (else float16, said so);
- Apple MPS: float16 by default (float32 when asked; bfloat16 when asked and the MPS build has it);
- CPU: float32 by default; bfloat16 when asked and the CPU has native bf16 support (AVX512-BF16,
  AMX or ARM BF16 flags, or oneDNN's own bf16 check), else float32, said so. float16 on a CPU is
  refused in favour of float32 (slow and partly unsupported there).

``auto`` prefers CUDA, then MPS, then the CPU. Asking for a device that is not there raises
:class:`~core.errors.InputError` with one line saying what to pass instead.

:class:`ModelCache` holds loaded models keyed by ``(kind, folder, device, dtype)``: loaded lazily on
first use, shared, and freed by :meth:`ModelCache.unload` (garbage collection and the accelerator's
cache are emptied so the memory really returns). torch is imported lazily, inside functions.
"""

from __future__ import annotations

import gc
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from core.errors import InputError, ModelError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")
_PRECISION_ALIASES = {
    None: "auto",
    "auto": "auto",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}


@dataclass(frozen=True)
class DeviceInfo:
    """Where and in which precision models run.

    ``device``: a torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``); ``dtype``: a torch
    dtype name (``float32``, ``float16``, ``bfloat16``); ``reason``: one line for the user saying
    why (shown by the CLI and the settings dialog).
    """

    device: str
    dtype: str
    reason: str = ""

    @property
    def torch_device(self) -> str:
        """Alias of ``device`` (the name the common API uses)."""
        return self.device

    @property
    def kind(self) -> str:
        """``cpu``, ``cuda`` or ``mps`` (the device without its index)."""
        return self.device.split(":")[0]

    def torch_dtype(self):
        """The ``torch.dtype`` object (imports torch)."""
        import torch

        return getattr(torch, self.dtype)

    def __str__(self) -> str:
        return f"{self.device} {self.dtype}" + (f" ({self.reason})" if self.reason else "")


def normalise_precision(precision: str | None) -> str:
    """``auto`` or a torch dtype name for ``precision`` (fp32/fp16/bf16 or their long names)."""
    key = precision.strip().lower() if isinstance(precision, str) else precision
    if key not in _PRECISION_ALIASES:
        raise InputError(f"unknown precision {precision!r}: use auto, fp32, fp16 or bf16")
    return _PRECISION_ALIASES[key]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16/AMX, ARM BF16, or oneDNN says so)."""
    flags = _cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        return True
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - an old or unusual build: no bf16 then
        return False


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(pref: str | None = "auto", precision: str | None = "auto") -> DeviceInfo:
    """Choose the device and dtype for ``pref`` and ``precision`` (see the module docstring).

    Raises :class:`~core.errors.InputError` for an unknown name or a device this machine lacks.
    """
    import torch

    raw = (pref or "auto").strip().lower()
    want = normalise_precision(precision)
    kind, _, index = raw.partition(":")
    if kind not in DEVICE_CHOICES or (index and (kind != "cuda" or not index.isdigit())):
        raise InputError(f"unknown device {pref!r}: use auto, cpu, cuda, cuda:N or mps")

    if kind == "auto":
        if torch.cuda.is_available():
            kind = "cuda"
        elif _mps_available():
            kind = "mps"
        else:
            info = _cpu_info(want)
            return DeviceInfo(info.device, info.dtype, "no GPU found; " + info.reason)

    if kind == "cuda":
        if not torch.cuda.is_available():
            build = torch.__version__
            raise InputError(f"device 'cuda' asked for, but CUDA is not available (torch {build}); use --device cpu or auto")
        n = torch.cuda.device_count()
        i = int(index) if index else torch.cuda.current_device()
        if i >= n:
            raise InputError(f"device 'cuda:{i}' asked for, but this machine has {n} CUDA device(s) (0..{n - 1})")
        name = torch.cuda.get_device_name(i)
        device = f"cuda:{i}" if index else "cuda"
        if want == "bfloat16":
            with torch.cuda.device(i):
                ok = torch.cuda.is_bf16_supported()
            if ok:
                return DeviceInfo(device, "bfloat16", f"{name}: bfloat16 as asked")
            return DeviceInfo(device, "float16", f"{name} has no bfloat16: float16 instead")
        if want == "float32":
            return DeviceInfo(device, "float32", f"{name}: float32 as asked")
        return DeviceInfo(device, "float16", f"{name}: float16" + (" as asked" if want == "float16" else " (default on CUDA)"))

    if kind == "mps":
        if not _mps_available():
            raise InputError("device 'mps' asked for, but Apple MPS is not available here; use --device cpu or auto")
        if want == "float32":
            return DeviceInfo("mps", "float32", "Apple GPU: float32 as asked")
        if want == "bfloat16":
            try:
                torch.ones(1, dtype=torch.bfloat16, device="mps") + 1
                return DeviceInfo("mps", "bfloat16", "Apple GPU: bfloat16 as asked")
            except (RuntimeError, TypeError):
                return DeviceInfo("mps", "float16", "this MPS build has no bfloat16: float16 instead")
        return DeviceInfo("mps", "float16", "Apple GPU: float16" + (" as asked" if want == "float16" else " (default on MPS)"))

    return _cpu_info(want)


def _cpu_info(want: str) -> DeviceInfo:
    if want == "bfloat16":
        if cpu_supports_bf16():
            return DeviceInfo("cpu", "bfloat16", "CPU: bfloat16 as asked (native bf16 support)")
        return DeviceInfo("cpu", "float32", "this CPU has no native bfloat16: float32 instead")
    if want == "float16":
        return DeviceInfo("cpu", "float32", "float16 is slow and partly unsupported on a CPU: float32 instead")
    return DeviceInfo("cpu", "float32", "CPU: float32" + (" as asked" if want == "float32" else " (default on CPU; bf16 is opt-in)"))


def free_memory(device: str | None = None) -> None:
    """Collect garbage and return cached accelerator memory (CUDA, MPS) to the system."""
    gc.collect()
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return
    kind = (device or "").split(":")[0]
    if kind in ("", "cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if kind in ("", "mps") and _mps_available() and hasattr(torch, "mps"):
        torch.mps.empty_cache()


class ModelCache:
    """Loaded models shared by key (thread-safe); least recently used dropped beyond ``max_items``.

    ``get(key, loader)`` returns the cached object or calls ``loader()`` once (other threads asking
    for the same key wait for it). Keys are hashable tuples, by convention
    ``(kind, folder, device, dtype)``.
    """

    def __init__(self, max_items: int | None = None) -> None:
        self.max_items = max_items
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: Hashable, loader: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = loader()
            self._items[key] = value
            evicted = False
            while self.max_items is not None and len(self._items) > self.max_items:
                self._items.popitem(last=False)
                evicted = True
        if evicted:
            free_memory()
        return value

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._items)

    def unload(self, key: Hashable | None = None, *, where: Callable[[Hashable], bool] | None = None) -> int:
        """Drop one key, the keys ``where(key)`` accepts, or everything; free the memory. Returns the count."""
        with self._lock:
            if key is not None:
                keys = [key] if key in self._items else []
            elif where is not None:
                keys = [k for k in self._items if where(k)]
            else:
                keys = list(self._items)
            for k in keys:
                del self._items[k]
        if keys:
            free_memory()
        return len(keys)


#: the process-wide cache the depth estimator and the segmenter use
MODEL_CACHE = ModelCache(max_items=int(os.environ.get("HANDLES_MODEL_CACHE_ITEMS", "0")) or None)


def unload_all() -> int:
    """Free every cached model (the editor's "free memory" action)."""
    return MODEL_CACHE.unload()


def load_pretrained_pair(path, info: DeviceInfo, processor_cls, model_cls, what: str):
    """``(model, processor)`` of a transformers model folder, offline, on ``info``'s device and dtype.

    ``processor_cls``/``model_cls`` are transformers classes (e.g. AutoImageProcessor and
    AutoModelForDepthEstimation); a folder that does not load gives a one-line ModelError naming
    ``what`` and the folder.
    """
    import torch

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass
    try:
        processor = processor_cls.from_pretrained(str(path), local_files_only=True)
        model = model_cls.from_pretrained(str(path), local_files_only=True, dtype=getattr(torch, info.dtype))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load the {what} from {path}: {msg}") from None
    model.to(info.device).eval()
    return model, processor
