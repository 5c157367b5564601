"""Render requests, the typed event stream from a render to its client, and cancellation.

A :class:`RenderRequest` holds everything that decides a render; it is the worker's input, the
cache key (:meth:`RenderRequest.key`) and what a project stores next to each render. A renderer
(:class:`Renderer`) reports through a callback of :data:`Event` values and checks a
:class:`CancelToken` at every expensive step (every UNet evaluation for the diffusion engine).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from core.errors import RenderCancelled

#: the preset name of a render that needs no model (the geometric preview)
GEOMETRIC = "geometric"
#: request fields added after requests were first stored: part of the key only when not empty
_KEYED_WHEN_SET = ("controlnet", "lora", "locks")


@dataclass(frozen=True)
class RenderRequest:
    """Everything that decides a render (serialisable, hashable through :meth:`key`).

    Built once, by :func:`core.request.resolve_request`, for the editor and the command line alike;
    a renderer reads it and decides nothing again. ``handles`` are the typed Diffusion Handles
    settings (the preset with the user's changes, steps and resolution filled in); ``model_path``
    is the resolved folder of ``model`` (empty: no diffusion model is used, and ``missing`` /
    ``fetch_command`` say why and how to get it). A ControlNet backend's depth ControlNet is
    ``controlnet`` (its catalog name) at ``controlnet_path``; a few-step LoRA is ``lora`` at
    ``lora_path``. Where things lie (``*_path``) is not part of :meth:`key`; which they are is.
    """

    scene_id: str
    #: object id -> Transform3D.to_dict() (camera frame); objects by stable id, not by name
    transforms: dict[str, dict]
    prompt: str = ""
    seed: int = 0
    steps: int = 50
    #: "reference" | "default" | "fast" | "draft" | "turbo" | "geometric"
    preset: str = "default"
    #: catalog name or folder of the diffusion model, as the user chose it
    model: str = "sd2-depth"
    #: long side of the render in pixels (sides are multiples of 64)
    resolution: int = 512
    device: str = "auto"
    #: "auto" | "fp32" | "fp16" | "bf16"
    precision: str = "auto"
    #: the checked folder of ``model`` on disk ("" when none is used)
    model_path: str = ""
    #: the typed engine settings (None for the geometric preview)
    handles: Any = None
    #: why the chosen diffusion model is not used (one line; empty when it is)
    missing: str = ""
    #: the command that fetches the missing model (empty when unknown or nothing is missing)
    fetch_command: str = ""
    #: old projects stored transforms by object name: read-only, for their renders' History
    legacy_names: dict[str, dict] = field(default_factory=dict)
    #: the catalog name of the depth ControlNet used ("" when the model's folder holds its own
    #: controlnet/ or its backend needs none)
    controlnet: str = ""
    #: the checked folder of ``controlnet`` ("" when none is used)
    controlnet_path: str = ""
    #: the few-step LoRA used: a catalog name or a path, as chosen ("" when none)
    lora: str = ""
    #: the checked weights file of ``lora`` ("" when none)
    lora_path: str = ""
    #: the identity locks applied (``core.ml.handles.lock``), one dict per locked object:
    #: ``object_id``, ``name``, ``method``, ``word``, ``cache`` (the project cache holding it)
    locks: list = field(default_factory=list)

    @property
    def geometric(self) -> bool:
        return self.preset == GEOMETRIC

    def to_dict(self) -> dict:
        d = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "handles"}
        d["handles"] = None if self.handles is None else self.handles.to_dict()
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict) -> RenderRequest:
        """A request from :meth:`to_dict` (or from an older project: transforms by name, a preset
        name plus a free dict of overrides)."""
        from core.ml.handles.presets import PRESETS, HandlesSettings, preset

        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        if "handles" not in d and "model_path" not in d:  # an older project's record
            kw["legacy_names"] = dict(d.get("transforms") or {})
            kw["transforms"] = {}
            name = str(d.get("preset", "default"))
            if name in PRESETS:
                s = preset(name, d.get("settings") or None)
                kw["handles"] = replace(s, steps=int(d.get("steps", s.steps)), resolution=int(d.get("resolution", s.resolution)))
        elif isinstance(kw.get("handles"), dict):
            kw["handles"] = HandlesSettings().with_overrides(kw["handles"])
        return cls(**kw)

    def transform_of(self, obj_id: str, name: str = "") -> dict | None:
        """The requested transform of an object (by id; by name for an older project's record)."""
        if obj_id in self.transforms:
            return self.transforms[obj_id]
        return self.legacy_names.get(name) if name else None

    def key(self) -> str:
        """Stable hash of what decides the pixels (not the device, the precision or where the
        models lie: results agree across them). Fields added later count only when set, so a
        request without them keeps the key it had before they existed."""
        d = self.to_dict()
        for k in ("device", "precision", "model_path", "controlnet_path", "lora_path", "missing", "fetch_command"):
            d.pop(k, None)
        for k in _KEYED_WHEN_SET:
            if not d.get(k):
                d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class RenderResult:
    """What a renderer returns: the image, a description of it and data worth keeping."""

    image: np.ndarray  # (H, W, 3) uint8 at the scene's working size
    #: e.g. {"renderer": "diffusion-handles", "seconds": 12.3, "unet_evals": {...}, "geometric": False}
    info: dict = field(default_factory=dict)
    #: named data the client may keep in the project's caches (e.g. "identity:<key>" -> bytes)
    blobs: dict[str, bytes] = field(default_factory=dict)


# ----- events -----
@dataclass
class Queued:
    request: RenderRequest


@dataclass
class Progress:
    stage: str  # "loading", "depth", "identity", "render", "decode" ...
    step: int
    total: int
    eta_s: float | None = None
    message: str = ""


@dataclass
class Preview:
    image: np.ndarray  # (H, W, 3) uint8
    step: int
    total: int


@dataclass
class Finished:
    request: RenderRequest
    image: np.ndarray  # (H, W, 3) uint8
    #: e.g. {"renderer": "diffusion-handles", "seconds": 12.3, "unet_evals": 50, "geometric": False}
    info: dict = field(default_factory=dict)
    #: named data the client may keep in the project's caches (e.g. "identity:<key>" -> bytes)
    blobs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Cancelled:
    request: RenderRequest | None = None


@dataclass
class Error:
    message: str  # one line
    details: str = ""  # traceback or longer explanation


Event = Queued | Progress | Preview | Finished | Cancelled | Error
EmitFn = Callable[[Event], None]


class CancelToken:
    """Cooperative cancellation: the client calls :meth:`cancel`, the renderer calls :meth:`check`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`core.errors.RenderCancelled` if cancellation was requested."""
        if self._event.is_set():
            raise RenderCancelled("render cancelled")


class ProgressClock:
    """Estimates time left from completed steps (for Progress.eta_s)."""

    def __init__(self, total: int) -> None:
        self.total = max(1, int(total))
        self.t0 = time.monotonic()

    def eta(self, done: int) -> float | None:
        if done <= 0:
            return None
        elapsed = time.monotonic() - self.t0
        return elapsed / done * max(0, self.total - done)


class Renderer(Protocol):
    """A service that turns a scene plus a request into an image.

    Implementations: ``core.render.GeometricRenderer`` (no model: the geometric preview),
    ``core.render.FakeRenderer`` (deterministic, for tests of the layers above) and
    ``core.ml.handles.DiffusionHandlesRenderer`` (the real engine).
    """

    name: str

    def render(self, scene, request: RenderRequest, emit: EmitFn, token: CancelToken, caches: dict | None = None) -> RenderResult:
        """The result; emit Progress/Preview; raise RenderCancelled on cancel. ``caches``: the
        project's stored data (name -> bytes) the renderer may reuse (a stored identity)."""
        ...
