"""A model-free stand-in renderer for the tests of the layers above the engine (worker, window).

It behaves like the real engine towards its client (progress per step, step previews, a cancel
check at every step, optional delay and failure) and returns an image that depends on the
request's key, so two requests that differ give different images. It lives here, not in the
product: users always get a real renderer (the engine, or the geometric preview).
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from core.jobs import CancelToken, EmitFn, Preview, Progress, ProgressClock, RenderRequest, RenderResult
from core.scene import Scene


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

    def render(self, scene: Scene, request: RenderRequest, emit: EmitFn, token: CancelToken, caches: dict | None = None) -> RenderResult:
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
        info = {"renderer": self.name, "geometric": False, "seconds": round(time.monotonic() - t0, 4), "steps": total}
        return RenderResult(final, info)
