"""DiffusionHandlesRenderer: the real engine behind :class:`core.jobs.Renderer`.

``render(scene, request, emit, token)``:

1. applies the request's transforms to a copy of the scene and, when ``request.resolution``
   differs from the scene's working size, resamples it (``core.io.working_size``: both sides
   multiples of 64, aspect kept);
2. loads the model (cached), builds or reuses the photo's :class:`Identity` (cached per content,
   prompt, model, steps, resolution and inversion settings; reusable from project caches);
3. plans the warp (``core.geometry.warp.plan``) and the correspondences at every captured
   feature size, conditions on the edited depth and denoises with guidance and/or injection,
   keeping the untouched background on the identity's trajectory;
4. decodes, brings the result to the scene's working size and (option) pastes the original photo
   outside the changed region with a feathered seam.

The result (:class:`core.jobs.RenderResult`) holds the (H, W, 3) uint8 image at the scene's
working size, its description (``info``) and a newly computed identity (``blobs``).
"""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import InputError, RenderCancelled
from core.jobs import CancelToken, EmitFn, Progress, RenderRequest, RenderResult
from core.ml.handles.presets import HandlesSettings, preset
from core.scene import Scene, SceneObject

if TYPE_CHECKING:
    from core.ml.handles.identity import Identity

IDENTITY_CACHE_PREFIX = "identity:"

log = logging.getLogger(__name__)


def _noop(_e) -> None:
    pass


#: seconds a model took to load, by (folder, device), for the next load's time estimate
_LOAD_SECONDS: dict[tuple[str, str], float] = {}
#: a first load's estimate: bytes read and turned into modules per second (a CPU machine, SSD)
_LOAD_BYTES_PER_S = 250e6


def _load_estimate(folder: str, device: str) -> float:
    """Seconds a load of ``folder`` will take: the last time it was loaded, else from its size."""
    known = _LOAD_SECONDS.get((folder, str(device)))
    if known is not None:
        return known
    try:
        size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    except OSError:
        size = 0
    return round(1.0 + size / _LOAD_BYTES_PER_S, 1)


def _remember_load_time(folder: str, device: str, seconds: float) -> None:
    _LOAD_SECONDS[(folder, str(device))] = round(float(seconds), 2)


def render_size(scene: Scene, resolution: int) -> tuple[int, int]:
    """(w, h) of a render at long side ``resolution`` for ``scene`` (its own size when it matches)."""
    w, h = scene.size
    if max(w, h) == int(resolution) and w % 64 == 0 and h % 64 == 0:
        return w, h
    from core.io import working_size

    return working_size(w, h, long_side=int(resolution))


def resample_scene(scene: Scene, size: tuple[int, int]) -> Scene:
    """``scene`` at ``size`` = (w, h): photo Lanczos, depth area/bilinear, masks by majority.

    Transforms are unchanged (camera-frame depth units do not depend on the pixel grid; the
    field of view is kept).
    """
    if scene.size == tuple(size):
        return scene
    from core.io import resize_float, resize_mask, resize_rgb

    objs = [SceneObject(name=o.name, mask=resize_mask(o.mask, size), transform=o.transform, visible=o.visible, id=o.id) for o in scene.objects]
    return replace(
        scene,
        photo=resize_rgb(scene.photo, size),
        depth=resize_float(scene.depth, size),
        camera=scene.camera.resized(*size),
        objects=objs,
        variants=dict(scene.variants),
        original_photo=None,
        alpha=None if scene.alpha is None else resize_float(scene.alpha, size),
        background_depth=None if scene.background_depth is None else resize_float(scene.background_depth, size),
    )


def soft_region(region: np.ndarray, margin: int, feather: int) -> np.ndarray:
    """Float32 weight: 1 on ``region`` dilated by ``margin`` cells, a linear ramp over ``feather``
    cells outside it, exactly 0 beyond (distances are Euclidean, in cells)."""
    from scipy import ndimage

    region = np.asarray(region, dtype=bool)
    if not region.any():
        return np.zeros(region.shape, np.float32)
    d = np.asarray(ndimage.distance_transform_edt(~region))  # distances only (no indices asked)
    ramp = 1.0 - (d - margin) / float(feather + 1) if feather > 0 else (d <= margin).astype(np.float64)
    return np.clip(np.where(d <= margin, 1.0, ramp), 0.0, 1.0).astype(np.float32)


def upsample_weight(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) weight in [0, 1] -> (H, W) = ``size`` (w, h) by bilinear interpolation (pixel
    centres); a pixel whose four neighbouring cells are all 0 stays exactly 0."""
    from PIL import Image

    up = np.asarray(Image.fromarray(np.asarray(alpha, np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))
    return np.clip(up, 0.0, 1.0).astype(np.float32)


class DiffusionHandlesRenderer:
    """Diffusion Handles on a depth-conditioned SD model (see the module docstring).

    Everything that decides a render comes with the request (:func:`core.request.resolve_request`):
    the model's folder (``request.model_path``), device and precision, the typed settings. The
    renderer keeps what is worth keeping between renders of one photo: the loaded engine and the
    photo's identities.
    """

    name = "diffusion-handles"
    max_identities = 2

    def __init__(self) -> None:
        self.last_identity_key: str | None = None
        self._identities: OrderedDict[str, Identity] = OrderedDict()
        self._serialised: dict[str, bytes] = {}
        self._engine = None
        self._engine_key = None
        #: identity locks read from projects, by cache name; the current render's
        self._locks: dict = {}
        self._pending_locks: list = []

    # ------------------------------------------------------------------ identity cache
    def add_identity_bytes(self, data: bytes) -> str | None:
        """Offer a stored identity (e.g. from a project's caches); it is loaded when a render needs it."""
        from core.ml.handles.identity import Identity

        key = Identity.peek_key(data)
        if key:
            self._serialised[key] = data
        return key

    def identity_bytes(self, key: str | None = None) -> bytes | None:
        """The serialised identity ``key`` (default: the last render's) for a project cache."""
        key = key or self.last_identity_key
        if key is None:
            return None
        if key in self._serialised:
            return self._serialised[key]
        ident = self._identities.get(key)
        return None if ident is None else ident.to_bytes()

    def clear(self) -> None:
        """Forget cached identities and drop the engine reference (the model stays in the model cache)."""
        self._identities.clear()
        self._serialised.clear()
        self._engine = None
        gc.collect()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def settings_for(request: RenderRequest) -> HandlesSettings:
        """The request's typed settings (a hand-built request without them: its preset's)."""
        if request.handles is not None:
            return request.handles
        s = preset(request.preset)
        steps = min(int(request.steps), s.max_steps) if s.max_steps else int(request.steps)
        return replace(s, steps=steps, resolution=int(request.resolution))

    @staticmethod
    def _model_folder(request: RenderRequest) -> str:
        folder = request.model_path or request.model
        if not folder or request.geometric:
            raise InputError("this render request names no diffusion model (resolve it with core.request.resolve_request)")
        return str(folder)

    def _engine_for(self, request: RenderRequest, emit: EmitFn):
        from core.ml.handles.engine import HandlesEngine
        from core.ml.handles.models import load_models, set_lora

        folder = self._model_folder(request)
        dtype = None if request.precision in ("", "auto") else request.precision
        controlnet = str(getattr(request, "controlnet_path", "") or "") or None
        key = (folder, str(request.device), str(dtype), controlnet)
        if self._engine is None or self._engine_key != key:
            self._engine = None
            gc.collect()
            emit(Progress(stage="loading", step=0, total=1, message=f"loading {Path(folder).name}", eta_s=_load_estimate(folder, request.device)))
            t0 = time.monotonic()
            log.info("loading the model in %s (device %s, precision %s)", folder, request.device, dtype or "auto")
            self._engine = HandlesEngine(load_models(folder, request.device, dtype, controlnet=controlnet))
            self._engine_key = key
            _remember_load_time(folder, request.device, time.monotonic() - t0)
            log.info("model %s loaded on %s in %.1f s", Path(folder).name, self._engine.device, time.monotonic() - t0)
            emit(Progress(stage="loading", step=1, total=1, eta_s=0.0, message="model ready"))
        # the request's LoRA (a few-step one for turbo) is the UNet's only adapter; none: removed
        set_lora(self._engine.m, str(getattr(request, "lora_path", "") or "") or None)
        return self._engine, self._model_id(request, folder)

    @staticmethod
    def _model_id(request: RenderRequest, folder: str) -> str:
        """What identities of this model are keyed by: the folder, its ControlNet, its LoRA and
        the identity locks applied (by their weights' cache names, which hold their digests)."""
        parts = [folder]
        for extra in (getattr(request, "controlnet_path", ""), getattr(request, "lora_path", "")):
            if extra:
                parts.append(str(extra))
        parts += sorted(str(lk.get("cache", "")) for lk in getattr(request, "locks", None) or [])
        return "+".join(parts)

    @staticmethod
    def _prompt(scene: Scene, request: RenderRequest) -> str:
        """The prompt rendered with: the request's (else the scene's), holding every lock's word."""
        from core.ml.handles.lock import lock_prompt

        prompt = request.prompt or scene.prompt
        words = [str(lk.get("word", "")) for lk in getattr(request, "locks", None) or [] if lk.get("word")]
        return lock_prompt(prompt, words) if words else prompt

    def _load_locks(self, request: RenderRequest, caches) -> list:
        """The request's locks, read from ``caches`` (kept by cache name once read); a lock whose
        weights are missing or damaged is a one-line InputError naming the object."""
        from core.ml.handles.lock import IdentityLock

        out = []
        for rec in getattr(request, "locks", None) or []:
            name = str(rec.get("cache", ""))
            lk = self._locks.get(name)
            if lk is None:
                who = f"the identity lock of '{rec.get('name', rec.get('object_id', '?'))}'"
                if caches is None or name not in caches:
                    raise InputError(f"{who} is missing from the project (its weights '{name}' are not stored); learn it again or switch it off")
                lk = IdentityLock.from_bytes(caches[name], what=who)
                self._locks[name] = lk
                while len(self._locks) > 16:
                    self._locks.pop(next(iter(self._locks)))
            out.append(lk)
        return out

    def identity_key(self, scene: Scene, request: RenderRequest) -> str:
        from core.ml.handles.identity import identity_key

        settings = self.settings_for(request)
        size = render_size(scene, settings.resolution)
        small = resample_scene(scene, size)
        prompt = self._prompt(scene, request)
        model_id = self._model_id(request, self._model_folder(request))
        return identity_key(small.content_id(), prompt, model_id, size, settings.identity_fields())

    def _identity(self, engine, scene: Scene, prompt: str, settings: HandlesSettings, key: str, emit, token):
        from core.ml.handles.identity import Identity

        need = settings.n_captured()
        ident = self._identities.get(key)
        reused = "memory"
        if ident is None and key in self._serialised:
            try:
                store = engine._store_device(settings)
                ident = Identity.from_bytes(self._serialised[key], device=engine.device, activations_device=store)
                reused = "stored"
            except InputError:
                self._serialised.pop(key, None)
                ident = None
        if ident is not None and ident.n_captured < need:
            ident = None
        if ident is None:
            reused = ""
            self._identities.pop(key, None)
            ident = engine.build_identity(scene.photo, scene.depth, prompt, settings, key=key, n_captured=need, emit=emit, token=token)
            self._serialised.pop(key, None)
        self._identities[key] = ident
        self._identities.move_to_end(key)
        while len(self._identities) > self.max_identities:
            self._identities.popitem(last=False)
        return ident, reused

    # ------------------------------------------------------------------ identity locks
    def learn(
        self,
        views: list,
        request: RenderRequest,
        word: str,
        lock_settings,
        object_id: str = "",
        emit: EmitFn = _noop,
        token: CancelToken | None = None,
    ):
        """Learn an identity lock (:func:`core.ml.handles.lock.learn_lock`) of one object on the
        request's model (loaded once and shared with renders). ``views``: (photo, depth, mask) at
        any size, the project's photo first; each is resampled to the request's render size."""
        from core.io import resize_float, resize_mask, resize_rgb, working_size
        from core.ml.handles.lock import learn_lock

        token = token or CancelToken()
        settings = self.settings_for(request)
        engine, _ = self._engine_for(request, emit)
        token.check()
        small = []
        for photo, depth, mask in views:
            h, w = depth.shape
            size = (w, h) if max(w, h) == int(settings.resolution) else working_size(w, h, long_side=int(settings.resolution))
            if size == (w, h):
                small.append((photo, depth, np.asarray(mask, bool)))
            else:
                small.append((resize_rgb(photo, size), resize_float(depth, size), resize_mask(np.asarray(mask, bool), size)))
        prompt = request.prompt or ""
        return learn_lock(engine, small, prompt, word, lock_settings, object_id=object_id, model_name=request.model, emit=emit, token=token)

    # ------------------------------------------------------------------ Renderer
    def render(self, scene: Scene, request: RenderRequest, emit: EmitFn = _noop, token: CancelToken | None = None, caches: dict | None = None) -> RenderResult:
        """Render ``request`` (see the class docstring). ``caches``: the project's stored data; a
        stored identity of this photo is reused, and a newly computed one comes back in
        ``RenderResult.blobs`` for the project to keep."""
        token = token or CancelToken()
        cancelled = False
        caches = caches or {}
        try:
            name = IDENTITY_CACHE_PREFIX + self.identity_key(scene, request)
            if name in caches:
                try:
                    self.add_identity_bytes(caches[name])
                except Exception as exc:  # noqa: BLE001 - a damaged cache entry only costs a recomputation
                    log.warning("ignoring the project's damaged stored identity %s (%s: %s)", name, type(exc).__name__, exc)
            self._pending_locks = self._load_locks(request, caches)
            try:
                image, info = self._render(scene, request, emit, token)
            finally:
                # the loaded model is shared (the model cache): no lock outlives its render
                if self._pending_locks and self._engine is not None:
                    from core.ml.handles.lock import apply_locks

                    apply_locks(self._engine.m, [])
                self._pending_locks = []
            log.info(
                "rendered preset %s at %dx%d in %.2f s (identity %s, %.2f s; %d steps on %s)",
                info["preset"],
                *info["render_size"],
                info["seconds"],
                f"reused from {info['identity_reused']}" if info["identity_reused"] else "built",
                info["identity_seconds"],
                info["steps"],
                info["device"],
            )
            blobs = {}
            if name not in caches:
                data = self.identity_bytes(info["identity_key"])
                if data:
                    blobs[name] = data
            return RenderResult(image, info, blobs)
        except RenderCancelled:
            cancelled = True
        # outside the except block: the traceback (and the tensors its frames held) is gone
        if cancelled:
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover
                pass
            raise RenderCancelled("render cancelled")
        raise AssertionError("unreachable")  # pragma: no cover

    def _render(self, scene: Scene, request: RenderRequest, emit: EmitFn, token: CancelToken) -> tuple[np.ndarray, dict]:
        import torch

        from core.geometry.warp import feature_correspondence
        from core.geometry.warp import plan as warp_plan
        from core.ml.handles.identity import identity_key
        from core.ml.handles.warping import BlockWarp
        from core.render import scene_for_request

        t0 = time.monotonic()
        token.check()
        settings = self.settings_for(request)
        edited = scene_for_request(scene, request)
        work_size = scene.size
        size = render_size(scene, settings.resolution)
        small = resample_scene(edited, size)
        prompt = self._prompt(scene, request)
        engine, model_id = self._engine_for(request, emit)
        from core.ml.handles.lock import apply_locks

        apply_locks(engine.m, self._pending_locks)
        engine.counts.clear()
        engine.timings.clear()
        token.check()

        key = identity_key(small.content_id(), prompt, model_id, size, settings.identity_fields())
        settings = engine.model_settings(settings)  # SDXL: the same decoder blocks by its numbering
        t_id = time.monotonic()
        ident, reused = self._identity(engine, small, prompt, settings, key, emit, token)
        id_seconds = time.monotonic() - t_id
        id_counts = dict(engine.counts)
        engine.counts.clear()
        self.last_identity_key = key

        # geometry: the plan and its correspondences at every captured feature size
        t_r = time.monotonic()
        plan = warp_plan(small)
        warps = {}
        # nothing moved: guidance's gradient is zero by construction, its passes are skipped
        moved = bool(np.asarray(plan.changed).any())
        for b, acts in ident.activations.items() if moved else ():
            if b not in settings.blocks or acts.numel() == 0:
                continue
            hb, wb = int(acts.shape[-2]), int(acts.shape[-1])
            factor = size[1] // hb
            if factor * hb != size[1] or factor * wb != size[0]:
                raise InputError(f"feature size {wb}x{hb} of up_blocks[{b}] does not divide the render size {size[0]}x{size[1]}")
            warps[b] = BlockWarp.from_correspondence(feature_correspondence(plan, factor, margin=1), device=engine.device)
        blend = None
        if settings.background_blend:
            vf = engine.m.vae_factor
            corr = feature_correspondence(plan, vf, margin=max(0, int(settings.blend_margin)))
            alpha = soft_region(~np.asarray(corr.background, dtype=bool), 0, int(settings.blend_feather))
            blend = torch.from_numpy(alpha)[None, None].to(engine.device)
        if settings.depth_norm == "source":
            depth = engine.depth_condition(plan.edited_depth, ident.disparity_range)
        else:
            depth = engine.depth_condition(plan.edited_depth)
        token.check()
        start = keep = None
        k0 = settings.n_start()
        if k0 > 0:
            # warp-then-refine: the edited region starts from the geometric preview, re-noised to
            # step k0 with the request's seed (the seed decides what the photo does not)
            from core.preview import render_preview

            shown = render_preview(small, plan).image
            x_p = engine.encode_image(shown)
            g = torch.Generator().manual_seed(int(request.seed))
            noise = torch.randn(x_p.shape, generator=g).to(engine.device)
            a = engine._alpha(ident.timesteps[k0])
            start = (k0, a**0.5 * x_p + (1 - a) ** 0.5 * noise)
            k1 = int(round(settings.preview_keep * settings.steps))
            if k1 > k0:
                vf = engine.m.vae_factor
                shown_px = np.isfinite(plan.src_x)
                hh, ww = shown_px.shape[0] // vf, shown_px.shape[1] // vf
                cells = shown_px[: hh * vf, : ww * vf].reshape(hh, vf, ww, vf).all(axis=(1, 3))
                known = torch.from_numpy(cells.astype(np.float32))[None, None].to(engine.device)
                keep = (k1, known, x_p, noise)
        z = engine.denoise(ident, depth, settings, warps=warps, blend_alpha=blend, emit=emit, token=token, preview_size=work_size, start=start, keep=keep)
        token.check()
        emit(Progress(stage="decode", step=0, total=1, message="decoding"))
        image = engine.decode_latent(z)
        del z
        if blend is not None:
            # the decoder mixes the whole latent (its attention is global): outside the edited
            # region, take the identity's decoded reconstruction so those pixels stay exactly
            if ident.recon_image is None:
                ident.recon_image = engine.decode_latent(ident.trajectory[-1][None].to(engine.device))
            a = upsample_weight(alpha, (size[0], size[1]))[..., None]
            image = np.where(a > 0, np.rint(a * image + (1 - a) * ident.recon_image.astype(np.float32)), ident.recon_image)
            image = np.clip(image, 0, 255).astype(np.uint8)
        emit(Progress(stage="decode", step=1, total=1, message="done"))

        # back to the working size; paste the untouched photo around the changed region
        if image.shape[:2] != (work_size[1], work_size[0]):
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize(work_size, Image.Resampling.BICUBIC))
        pasted = False
        if settings.paste_background:
            from core.io import resize_mask

            changed = resize_mask(np.asarray(plan.changed, dtype=bool), work_size)
            a = soft_region(changed, int(settings.paste_margin), int(settings.paste_feather))[..., None]
            image = np.clip(np.rint(a * image.astype(np.float32) + (1 - a) * scene.photo.astype(np.float32)), 0, 255).astype(np.uint8)
            pasted = True
        if settings.paste_objects:
            from core.geometry.warp import plan as plan_at
            from core.preview import render_preview as preview_at

            wplan = plan if small is edited else plan_at(edited)  # the plan at the working size
            # the object's silhouette is a real edge: its known pixels replace the render as they are
            known = np.isfinite(wplan.src_x)
            if known.any():
                pv = preview_at(edited, wplan).image
                image = np.where(known[..., None], pv, image)
        render_seconds = time.monotonic() - t_r
        info = {
            "renderer": self.name,
            "geometric": False,
            "preset": request.preset,
            "seconds": round(time.monotonic() - t0, 3),
            "identity_seconds": round(id_seconds, 3),
            "render_seconds": round(render_seconds, 3),
            "identity_reused": reused or False,
            "identity_key": key,
            "locks": [{"object": str(rec.get("name", "")), "method": str(rec.get("method", "")), "word": str(rec.get("word", ""))} for rec in request.locks],
            "prompt": prompt,
            "identity_bytes": ident.nbytes(),
            "render_size": list(size),
            "steps": settings.steps,
            "start_step": k0,
            "guided_steps": max(0, min(settings.n_guided(), ident.n_captured) - k0) if warps else 0,
            "injected_steps": max(0, min(settings.n_injected(), ident.n_captured) - k0) if warps else 0,
            "backend": engine.m.backend,
            "lora": Path(engine.m.lora).name if engine.m.lora else "",
            "unet_evals": dict(engine.counts),
            "identity_unet_evals": id_counts,
            "device": str(engine.device),
            "dtype": str(engine.m.dtype).replace("torch.", ""),
            "pasted_background": pasted,
        }
        return np.ascontiguousarray(image, dtype=np.uint8), info
