"""Renderers that need no diffusion model (see :class:`core.jobs.Renderer`).

* :class:`GeometricRenderer`: the geometric preview of ``core.preview`` as a render. This is what a
  user without diffusion weights gets; its info says ``geometric=True`` so the UI labels it.
* :class:`FakeRenderer`: a deterministic, model-free stand-in with the same event behaviour as the
  real engine (progress per step, step previews, a cancel check at every step, optional delay and
  failure). It exists for tests and demos of the layers above the engine.

Each renderer leaves a description of its last result in ``last_info`` (merged into
:class:`core.jobs.Finished.info` by the editor's worker).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

import numpy as np

from core.errors import InputError
from core.jobs import CancelToken, EmitFn, Preview, Progress, ProgressClock, RenderRequest
from core.scene import Scene, SceneObject
from core.transform import Transform3D


def scene_for_request(scene: Scene, request: RenderRequest) -> Scene:
    """A shallow copy of ``scene`` whose objects carry the request's transforms (by object name).

    Objects the request does not name keep their current transform. Masks and images are shared,
    not copied: the result is for reading only. A transform that cannot be parsed is an InputError.
    """
    objects = []
    for obj in scene.objects:
        t = obj.transform
        if obj.name in request.transforms:
            try:
                t = Transform3D.from_dict(request.transforms[obj.name])
            except ValueError as exc:
                raise InputError(f"render request: bad transform for object {obj.name!r}: {exc}") from exc
        objects.append(SceneObject(name=obj.name, mask=obj.mask, transform=t, visible=obj.visible, id=obj.id))
    return replace(scene, objects=objects, variants=dict(scene.variants))


class GeometricRenderer:
    """The geometric preview (``core.preview.render_preview``) as a renderer; no model needed."""

    name = "geometric"

    def __init__(self) -> None:
        self.last_info: dict = {}

    def render(self, scene: Scene, request: RenderRequest, emit: EmitFn, token: CancelToken) -> np.ndarray:
        from core.preview import render_preview

        t0 = time.monotonic()
        token.check()
        emit(Progress(stage="preview", step=0, total=1, message="geometric preview"))
        result = render_preview(scene_for_request(scene, request))
        token.check()
        emit(Progress(stage="preview", step=1, total=1, eta_s=0.0, message="geometric preview"))
        hole = np.asarray(result.hole, dtype=bool)
        self.last_info = {
            "renderer": self.name,
            "geometric": True,
            "seconds": round(time.monotonic() - t0, 4),
            "hole_fraction": float(hole.mean()) if hole.size else 0.0,
        }
        return np.ascontiguousarray(result.image, dtype=np.uint8)


class FakeRenderer:
    """A deterministic model-free renderer for tests and demos.

    The result is the photo with a tint derived from the request's cache key, so two different
    requests give different images and the same request always gives the same image. Every step
    checks the cancel token, sleeps ``delay_per_step`` seconds (in small slices, so a cancel is
    seen quickly) and emits :class:`Progress`; every ``preview_every`` steps it emits a
    :class:`Preview`. ``fail_at_step`` makes it raise ``fail_error`` (a RuntimeError by default) at
    that step, to test error handling.
    """

    name = "fake"

    def __init__(
        self,
        delay_per_step: float = 0.0,
        steps: int | None = 4,
        preview_every: int = 2,
        fail_at_step: int | None = None,
        fail_error: BaseException | None = None,
    ) -> None:
        self.delay_per_step = float(delay_per_step)
        self.steps = steps
        self.preview_every = int(preview_every)
        self.fail_at_step = fail_at_step
        self.fail_error = fail_error
        self.last_info: dict = {}
        #: number of completed renders (tests read it)
        self.completed = 0

    @staticmethod
    def expected_image(scene: Scene, request: RenderRequest) -> np.ndarray:
        """The image :meth:`render` returns for this scene and request (independent formula)."""
        digest = hashlib.sha256(request.key().encode()).digest()
        tint = np.frombuffer(digest[:3], dtype=np.uint8).astype(np.float32)
        img = 0.75 * scene.photo.astype(np.float32) + 0.25 * tint
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def _sleep(self, token: CancelToken) -> None:
        end = time.monotonic() + self.delay_per_step
        while True:
            token.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.005))

    def render(self, scene: Scene, request: RenderRequest, emit: EmitFn, token: CancelToken) -> np.ndarray:
        total = int(self.steps if self.steps is not None else request.steps)
        total = max(1, total)
        clock = ProgressClock(total)
        t0 = time.monotonic()
        final = self.expected_image(scene, request)
        for i in range(total):
            token.check()
            if self.fail_at_step is not None and i == self.fail_at_step:
                raise self.fail_error if self.fail_error is not None else RuntimeError(f"fake renderer failed at step {i}")
            self._sleep(token)
            emit(Progress(stage="render", step=i + 1, total=total, eta_s=clock.eta(i + 1)))
            if self.preview_every > 0 and (i + 1) % self.preview_every == 0 and i + 1 < total:
                a = (i + 1) / total
                prev = (1 - a) * scene.photo.astype(np.float32) + a * final.astype(np.float32)
                emit(Preview(image=prev.astype(np.uint8), step=i + 1, total=total))
        token.check()
        self.completed += 1
        self.last_info = {"renderer": self.name, "geometric": False, "seconds": round(time.monotonic() - t0, 4), "steps": total}
        return final
