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
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from core.errors import RenderCancelled


@dataclass(frozen=True)
class RenderRequest:
    """Everything that decides a render (serialisable, hashable through :meth:`key`)."""

    scene_id: str
    #: object name -> Transform3D.to_dict() (camera frame)
    transforms: dict[str, dict]
    prompt: str = ""
    seed: int = 0
    steps: int = 50
    #: "reference" | "default" | "fast" | "draft" | "geometric"
    preset: str = "default"
    #: catalog name or path of the diffusion model
    model: str = "stable-diffusion-2-depth"
    #: long side of the render in pixels (sides are multiples of 64)
    resolution: int = 512
    device: str = "auto"
    #: preset overrides: guidance weights, schedules, blocks, background blending ...
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> RenderRequest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def key(self) -> str:
        """Stable hash of the request (the device is not part of it: results agree across devices)."""
        d = self.to_dict()
        d.pop("device", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


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

    def render(self, scene, request: RenderRequest, emit: EmitFn, token: CancelToken) -> np.ndarray:
        """Return the (H, W, 3) uint8 result; emit Progress/Preview; raise RenderCancelled on cancel."""
        ...
