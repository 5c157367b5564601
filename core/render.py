"""The renderer that needs no diffusion model (see :class:`core.jobs.Renderer`), and the
request's scene.

* :func:`scene_for_request`: the scene with the request's transforms applied (objects by id);
* :class:`GeometricRenderer`: the geometric preview of ``core.preview`` as a render. This is what a
  user without diffusion weights gets; its info says ``geometric=True`` (and, when the request's
  model is missing, ``model_missing`` with the reason) so the UI labels it.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from core.errors import InputError
from core.jobs import CancelToken, EmitFn, Progress, RenderRequest, RenderResult
from core.scene import Scene, SceneObject
from core.transform import Transform3D


def scene_for_request(scene: Scene, request: RenderRequest) -> Scene:
    """A shallow copy of ``scene`` whose objects carry the request's transforms (by object id; by
    name for an older project's record).

    Objects the request does not name keep their current transform. Masks and images are shared,
    not copied: the result is for reading only. A transform that cannot be parsed is an InputError.
    """
    objects = []
    for obj in scene.objects:
        t = obj.transform
        d = request.transform_of(obj.id, obj.name)
        if d is not None:
            try:
                t = Transform3D.from_dict(d)
            except ValueError as exc:
                raise InputError(f"render request: bad transform for object {obj.name!r}: {exc}") from exc
        objects.append(SceneObject(name=obj.name, mask=obj.mask, transform=t, visible=obj.visible, id=obj.id))
    return replace(scene, objects=objects, variants=dict(scene.variants))


class GeometricRenderer:
    """The geometric preview (``core.preview.render_preview``) as a renderer; no model needed."""

    name = "geometric"

    def render(self, scene: Scene, request: RenderRequest, emit: EmitFn, token: CancelToken, caches: dict | None = None) -> RenderResult:
        from core.preview import render_preview

        t0 = time.monotonic()
        token.check()
        emit(Progress(stage="preview", step=0, total=1, message="geometric preview"))
        result = render_preview(scene_for_request(scene, request))
        token.check()
        emit(Progress(stage="preview", step=1, total=1, eta_s=0.0, message="geometric preview"))
        hole = np.asarray(result.hole, dtype=bool)
        info = {
            "renderer": self.name,
            "geometric": True,
            "seconds": round(time.monotonic() - t0, 4),
            "hole_fraction": float(hole.mean()) if hole.size else 0.0,
        }
        if request.missing:
            info["model_missing"] = request.missing
        return RenderResult(np.ascontiguousarray(result.image, dtype=np.uint8), info)
