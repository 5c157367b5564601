"""The Diffusion Handles engine: identity capture, guided / injected denoising, decoding (torch).

Everything runs on the loaded components of a depth-conditioned Stable Diffusion model
(:class:`core.ml.handles.models.HandlesModels`); activations are captured and injected with
``register_forward_hook`` on ``unet.up_blocks[k]`` only (no forked model code).

DDIM (eta 0) with the model's own ``alphas_cumprod``: denoising step ``i`` takes the latent at
timestep ``t_i`` to ``t_i - 1000 / N`` (the final step to ``alphas_cumprod[0]``, as
``set_alpha_to_one=False``); inversion runs the same update backwards with the noise predicted at
the less noisy latent. Classifier-free guidance: ``eps = eps_u + s (eps_c - eps_u)``, one batch of 2.

Every UNet evaluation first checks the cancel token and is counted in ``counts``:
``forward`` (batch 1, no gradient), ``cfg`` (batch 2, no gradient), ``forward_backward``; with a
guidance scale of 1 the unconditional half is skipped (one ``forward``: ``eps_c`` is the result).

Backends (:data:`core.ml.handles.models.BACKENDS`): ``sd2-depth`` conditions with the disparity as
the UNet's 5th input channel (at the latent size, in [-1, 1]); ``sd15-controlnet`` and
``sdxl-controlnet`` with a depth image (the disparity at the pixel size, in [0, 1], 3 channels)
through the ControlNet, whose residuals enter every counted evaluation, guided ones included.
SDXL's two text encoders give (1, 77, 2048) hidden states plus a pooled (1, 1280) embedding; the
engine carries them as one tensor (1, 78, 2048) whose last row holds the pooled embedding, so that
classifier-free batches, identities and null-text optimisation treat them as one embedding.
SDXL has three up blocks: the presets' ``up_blocks[2]``/``[3]`` (the two highest-resolution
decoder blocks of SD 1.x/2.x) are its ``up_blocks[1]``/``[2]`` (:meth:`HandlesEngine.model_settings`).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from core.jobs import CancelToken, EmitFn, Preview, Progress, ProgressClock
from core.ml.handles.identity import Identity
from core.ml.handles.models import HandlesModels
from core.ml.handles.presets import HandlesSettings
from core.ml.handles.warping import BlockWarp

#: linear approximation latent (SD 1.x/2.x VAE, scaled) -> RGB in [-1, 1], for cheap previews
LATENT_RGB = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)


def disparity_latent(depth: np.ndarray, h: int, w: int, device="cpu") -> torch.Tensor:
    """(H, W) z-depth -> (1, 1, h, w) disparity (1 / depth) bicubic-resized to the latent size.

    Non-positive or non-finite depth counts as the farthest valid depth; depth below the nearest
    valid value is clamped to it.
    """
    depth = np.asarray(depth, dtype=np.float32)
    finite = np.isfinite(depth) & (depth > 0)
    if not finite.any():
        raise ValueError("depth map has no positive finite value")
    floor = float(depth[finite].min())
    disp = 1.0 / np.where(finite, np.maximum(depth, floor), np.float32(depth[finite].max()))
    t = torch.from_numpy(disp.astype(np.float32))[None, None].to(device)
    # as StableDiffusionDepth2ImgPipeline.prepare_depth_map: bicubic resize, then min-max
    return torch.nn.functional.interpolate(t, size=(h, w), mode="bicubic", align_corners=False)


@torch.no_grad()
def depth_condition(depth: np.ndarray, h: int, w: int, value_range: tuple[float, float] | None = None, device="cpu") -> torch.Tensor:
    """(H, W) z-depth -> (1, 1, h, w) float32 conditioning in [-1, 1], as SD2-depth is trained.

    Disparity (1 / depth), bicubic-resized to the latent size (h, w), min-max normalised (over this
    map, or over ``value_range`` = (min, max) of another map's resized disparity), scaled to
    [-1, 1]: the normalisation StableDiffusionDepth2ImgPipeline applies to its depth input. The
    world model's trainer conditions with this very function.
    """
    d = disparity_latent(depth, h, w, device)
    lo, hi = (float(d.min()), float(d.max())) if value_range is None else value_range
    scale = hi - lo if hi - lo > 1e-12 else 1.0
    return (2.0 * (d - lo) / scale - 1.0).float()


def _noop(_event) -> None:
    pass


class BlockHooks:
    """Forward hooks on ``unet.up_blocks[b]`` for capture, gradient access and injection.

    Modes (set :attr:`mode` before a UNet call):
    ``"capture"``: store the output of the batch item ``cond_index`` (detached, float16 or, with
    :attr:`keep_dtype`, in the model's own precision; on ``store_device``) in :attr:`captured`; ``"grab"``: keep the output (with its graph) in
    :attr:`grabbed`; ``"inject"``: replace the output by ``out * (1 - cov) + warped * cov`` for the
    maps in :attr:`inject_maps` (block -> (warped (C, h, w), coverage (h, w))), every batch item;
    ``None``: pass through.
    """

    def __init__(self, unet, blocks, store_device=None) -> None:
        self.blocks = [int(b) for b in blocks]
        n = len(unet.up_blocks)
        for b in self.blocks:
            if not 0 <= b < n:
                raise ValueError(f"up_blocks[{b}] does not exist (the UNet has {n} up blocks)")
        self.mode: str | None = None
        self.cond_index = 1
        self.keep_dtype = False
        self.store_device = store_device
        self.captured: dict[int, torch.Tensor] = {}
        self.grabbed: dict[int, torch.Tensor] = {}
        self.inject_maps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles = [unet.up_blocks[b].register_forward_hook(self._make(b)) for b in self.blocks]

    def _make(self, b: int):
        def hook(_module, _inputs, output):
            if self.mode is None:
                return None
            out = output[0] if isinstance(output, tuple) else output
            if self.mode == "capture":
                k = min(self.cond_index, out.shape[0] - 1)
                dtype = out.dtype if self.keep_dtype else torch.float16
                self.captured[b] = out[k].detach().to(device=self.store_device or out.device, dtype=dtype)
                return None
            if self.mode == "grab":
                self.grabbed[b] = out
                return None
            if self.mode == "inject" and b in self.inject_maps:
                warped, cov = self.inject_maps[b]
                cov = cov.to(dtype=out.dtype)[None, None]
                new = out * (1 - cov) + warped.to(dtype=out.dtype)[None] * cov
                return (new, *output[1:]) if isinstance(output, tuple) else new
            return None

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.captured.clear()
        self.grabbed.clear()
        self.inject_maps.clear()

    def __enter__(self) -> BlockHooks:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class HandlesEngine:
    """Stateless operations on one loaded model (identity, denoising, decoding)."""

    def __init__(self, models: HandlesModels) -> None:
        self.m = models
        self.counts: Counter = Counter()
        self.timings: defaultdict[str, float] = defaultdict(float)  # seconds per kind
        sched = models.scheduler
        self.alphas_cumprod = sched.alphas_cumprod.to(dtype=torch.float64)
        self.final_alpha = float(sched.final_alpha_cumprod)
        self.prediction_type = sched.config.prediction_type
        self.num_train = int(sched.config.num_train_timesteps)
        #: the ControlNet's residual scale (``HandlesSettings.controlnet_scale``)
        self.controlnet_scale = 1.0
        #: fp16 energy gradients: the loss scale (halved when a backward pass overflows)
        self.loss_scale = 2.0**12

    # ------------------------------------------------------------------ basics
    @property
    def device(self):
        return self.m.device

    def timesteps(self, steps: int, spacing: str = "leading") -> list[int]:
        """The ``steps`` denoising timesteps, noisiest first. ``"leading"``: DDIM's 0, r, 2r, ...
        (r = 1000 // steps, reversed; SD's and the reference's); ``"trailing"``: 999, 999 - 1000/N,
        ... (what few-step LoRAs such as Hyper-SD and TCD are distilled for: the first step starts
        at the noisiest timestep)."""
        n = int(steps)
        if spacing == "trailing":
            ts = np.round(np.arange(self.num_train, 0, -self.num_train / n)).astype(np.int64) - 1
            return [int(t) for t in ts[:n]]
        sched = self.m.scheduler
        sched.set_timesteps(n)
        return [int(t) for t in sched.timesteps]

    def _alpha(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha

    @staticmethod
    def prev_t(ts: list[int], i: int) -> int:
        """The timestep denoising step ``i`` of ``ts`` reaches (-1: the clean end)."""
        return int(ts[i + 1]) if i + 1 < len(ts) else -1

    def _eps_x0(self, out: torch.Tensor, z: torch.Tensor, a: float) -> tuple[torch.Tensor, torch.Tensor]:
        sa, sb = a**0.5, (1 - a) ** 0.5
        if self.prediction_type == "v_prediction":
            x0 = sa * z - sb * out
            eps = sa * out + sb * z
        elif self.prediction_type == "sample":
            x0 = out
            eps = (z - sa * x0) / sb
        else:
            eps = out
            x0 = (z - sb * eps) / sa
        return eps, x0

    def ddim_prev(self, out: torch.Tensor, t: int, z: torch.Tensor, t_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step (eta 0) from timestep ``t`` -> (latent at ``t_prev``, predicted x0)."""
        a, a_prev = self._alpha(t), self._alpha(t_prev)
        eps, x0 = self._eps_x0(out, z, a)
        return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps, x0

    def ddim_next(self, out: torch.Tensor, t: int, z: torch.Tensor, t_prev: int) -> torch.Tensor:
        """One DDIM inversion step: ``z`` at ``t_prev`` -> the latent at ``t`` (noise predicted at ``z``)."""
        a_prev, a = self._alpha(t_prev), self._alpha(t)
        eps, x0 = self._eps_x0(out, z, a_prev)
        return a**0.5 * x0 + (1 - a) ** 0.5 * eps

    def model_settings(self, settings: HandlesSettings) -> HandlesSettings:
        """``settings`` for this model's UNet: with fewer than four up blocks (SDXL has three),
        the presets' block indices shift down so that they name the same decoder blocks counted
        from the highest resolution (2, 3 -> 1, 2)."""
        shift = 4 - len(self.m.unet.up_blocks)
        if shift <= 0:
            return settings
        blocks = tuple(sorted({max(0, int(b) - shift) for b in settings.blocks}))
        cycle = tuple({max(0, int(b) - shift): v for b, v in c.items()} for c in settings.block_cycle)
        return replace(settings, blocks=blocks, block_cycle=cycle)

    # ------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        """(1, L, D) text embedding of ``prompt`` (SDXL: packed with its pooled embedding, see the module docstring)."""
        if self.m.backend == "sdxl-controlnet":
            return self._encode_text_xl(prompt)
        tok = self.m.tokenizer
        ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        return self.m.text_encoder(ids.to(self.device))[0].to(self.m.dtype)

    def _encode_text_xl(self, prompt: str) -> torch.Tensor:
        encoders = ((self.m.tokenizer, self.m.text_encoder), (self.m.tokenizer_2, self.m.text_encoder_2))
        width = sum(int(enc.config.hidden_size) for _, enc in encoders)
        length = int(self.m.tokenizer.model_max_length)
        pooled_dim = int(self.m.text_encoder_2.config.projection_dim)
        if not prompt:  # SDXL's force_zeros_for_empty_prompt: the unconditional embedding is zero
            return torch.zeros((1, length + 1, width), device=self.device, dtype=self.m.dtype)
        states, pooled = [], None
        for tok, enc in encoders:
            ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
            out = enc(ids.to(self.device), output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]
        assert pooled is not None
        row = torch.zeros((1, 1, width), device=self.device, dtype=states[0].dtype)
        row[0, 0, :pooled_dim] = pooled[0]
        return torch.cat([torch.cat(states, dim=-1), row], dim=1).to(self.m.dtype)

    def _xl_inputs(self, emb: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Packed SDXL embedding (B, L + 1, D) -> (hidden states (B, L, D), added conditioning)."""
        b = z.shape[0]
        pooled_dim = int(self.m.text_encoder_2.config.projection_dim)
        f = self.m.vae_factor
        h, w = int(z.shape[-2]) * f, int(z.shape[-1]) * f
        # original size, crop top-left, target size: the photo at its render size, uncropped
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=self.device, dtype=self.m.dtype).expand(b, -1)
        return emb[:, :-1], {"text_embeds": emb[:, -1, :pooled_dim], "time_ids": time_ids}

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        f = self.m.vae_factor
        return height // f, width // f

    @property
    def uses_controlnet(self) -> bool:
        return self.m.controlnet is not None

    def _condition_size(self, depth: np.ndarray) -> tuple[int, int]:
        """(h, w) of the depth condition: the latent's (sd2-depth) or the pixels' (a ControlNet)."""
        if self.uses_controlnet:
            return int(depth.shape[0]), int(depth.shape[1])
        return self.latent_size(depth.shape[1], depth.shape[0])

    @torch.no_grad()
    def disparity_range(self, depth: np.ndarray) -> tuple[float, float]:
        d = disparity_latent(depth, *self._condition_size(depth), self.device)
        return float(d.min()), float(d.max())

    @torch.no_grad()
    def depth_condition(self, depth: np.ndarray, value_range: tuple[float, float] | None = None) -> torch.Tensor:
        """(H, W) z-depth -> the model's depth conditioning, float32: sd2-depth (1, 1, H/f, W/f)
        in [-1, 1] (:func:`depth_condition`); a depth ControlNet (1, 3, H, W) in [0, 1], near
        bright (the normalised disparity the SD 1.5 and SDXL depth ControlNets take: MiDaS-style
        inverse depth, min-max over this map or over ``value_range``)."""
        h, w = self._condition_size(depth)
        d = depth_condition(depth, h, w, value_range, self.device)
        if self.uses_controlnet:
            return ((d + 1.0) * 0.5).expand(-1, 3, -1, -1).contiguous()
        return d

    @torch.no_grad()
    def encode_image(self, photo: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 4, H/8, W/8) float32 scaled latent (the posterior mean)."""
        x = torch.from_numpy(np.array(photo, dtype=np.uint8, copy=True)).to(self.device).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        lat = self.m.vae.encode(x.to(self.m.vae_dtype)).latent_dist.mean
        return (lat * self.m.scaling_factor).float()

    @torch.no_grad()
    def decode_latent(self, z: torch.Tensor) -> np.ndarray:
        """(1, 4, h, w) latent -> (8h, 8w, 3) uint8."""
        img = self.m.vae.decode((z / self.m.scaling_factor).to(self.m.vae_dtype)).sample
        img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return img[0].permute(1, 2, 0).cpu().numpy()

    @torch.no_grad()
    def preview_rgb(self, x0: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Cheap preview of a predicted clean latent: linear latent->RGB, resized to ``size`` (w, h)."""
        from PIL import Image

        lat = x0[0].float()
        own = self.m.extras.get("latent_rgb")
        if own is not None:
            m, b = (torch.from_numpy(a).to(lat.device) for a in own)
            rgb = torch.einsum("chw,cd->hwd", lat, m) + b
        elif lat.shape[0] == LATENT_RGB.shape[0]:
            rgb = torch.einsum("chw,cd->hwd", lat, LATENT_RGB.to(lat.device))
        else:  # unknown latent space: grey from the channel mean
            rgb = lat.mean(0)[..., None].expand(-1, -1, 3)
        arr = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR))

    # ------------------------------------------------------------------ UNet
    def unet(
        self,
        z: torch.Tensor,
        depth: torch.Tensor,
        t: int | torch.Tensor,
        emb: torch.Tensor,
        token: CancelToken | None,
        kind: str | None = None,
        n: int = 1,
    ) -> torch.Tensor:
        """One counted UNet evaluation on latents (B, 4, h, w) float32 -> model output float32.
        ``t``: one timestep, or one per sample (a (B,) tensor: training batches). ``kind`` and
        ``n``: what the call counts as (default: inferred, one evaluation; a lock's training
        batch counts one forward+backward per crop)."""
        if token is not None:
            token.check()
        b = z.shape[0]
        if kind is None:
            grad = torch.is_grad_enabled() and (z.requires_grad or emb.requires_grad)
            kind = "forward_backward" if grad else ("cfg" if b == 2 else "forward")
        self.counts[kind] += int(n)
        t0 = time.perf_counter()
        dt = self.m.dtype
        if isinstance(t, torch.Tensor):
            tt = t.to(device=self.device, dtype=torch.long)
        else:
            tt = torch.full((b,), int(t), device=self.device, dtype=torch.long)
        if self.m.controlnet is None:
            inp = torch.cat([z, depth.expand(b, -1, -1, -1)], dim=1).to(dt)
            out = self.m.unet(inp, tt, encoder_hidden_states=emb.to(dt), return_dict=False)[0].float()
        else:
            added = None
            states = emb.to(dt)
            if self.m.backend == "sdxl-controlnet":
                states, added = self._xl_inputs(states, z)
            zin = z.to(dt)
            down, mid = self.m.controlnet(
                zin,
                tt,
                encoder_hidden_states=states,
                controlnet_cond=depth.expand(b, -1, -1, -1).to(dt),
                conditioning_scale=float(self.controlnet_scale),
                added_cond_kwargs=added,
                return_dict=False,
            )
            out = self.m.unet(
                zin,
                tt,
                encoder_hidden_states=states,
                added_cond_kwargs=added,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0].float()
        self.timings[kind] += time.perf_counter() - t0
        return out

    def cfg(self, z, depth, t, uncond, cond, scale, token) -> torch.Tensor:
        """Classifier-free guidance ``u + scale (c - u)``; at scale 1 that is ``c``: one batch-1 pass."""
        if float(scale) == 1.0:
            return self.unet(z, depth, t, cond, token)
        out = self.unet(torch.cat([z, z]), depth, t, torch.cat([uncond, cond]), token)
        u, c = out.chunk(2)
        return u + scale * (c - u)

    @torch.no_grad()
    def sample(
        self,
        depth: np.ndarray,
        prompt: str,
        steps: int = 25,
        guidance_scale: float = 7.5,
        generator: torch.Generator | None = None,
        token: CancelToken | None = None,
    ) -> np.ndarray:
        """Plain depth-to-image sampling (DDIM, eta 0, classifier-free guidance) from Gaussian noise
        drawn with ``generator``: (H, W) z-depth -> (H, W, 3) uint8. No photo, no identity: what the
        model alone makes of a depth map and a caption."""
        ts = self.timesteps(int(steps))
        h, w = self.latent_size(depth.shape[1], depth.shape[0])
        dcond = self.depth_condition(depth)
        z = torch.randn((1, self.m.latent_channels, h, w), generator=generator).to(self.device)
        cond, uncond = self.encode_text(prompt), self.encode_text("")
        for i, t in enumerate(ts):
            eps = self.cfg(z, dcond, t, uncond, cond, guidance_scale, token)
            z, _ = self.ddim_prev(eps, t, z, self.prev_t(ts, i))
        return self.decode_latent(z)

    # ------------------------------------------------------------------ identity
    def _store_device(self, settings: HandlesSettings):
        if settings.store_on == "cpu" or (settings.store_on == "auto" and self.device.type == "cpu"):
            return torch.device("cpu")
        return self.device

    def build_identity(
        self,
        photo: np.ndarray,
        depth: np.ndarray,
        prompt: str,
        settings: HandlesSettings,
        key: str,
        n_captured: int | None = None,
        emit: EmitFn = _noop,
        token: CancelToken | None = None,
    ) -> Identity:
        """Invert ``photo`` (H, W, 3 uint8) under ``depth`` (H, W z-depth) and capture activations."""
        steps = int(settings.steps)
        ts = self.timesteps(steps, settings.timestep_spacing)
        self.controlnet_scale = float(settings.controlnet_scale)
        n_cap = settings.n_captured(steps) if n_captured is None else int(n_captured)
        n_cap = max(0, min(n_cap, steps))
        null = settings.inversion == "null-text"
        total = 2 * steps
        clock = ProgressClock(total)
        done = 0
        emit(Progress(stage="identity", step=0, total=total, message="encoding"))
        x0 = self.encode_image(photo)
        cond = self.encode_text(prompt)
        uncond = self.encode_text("")
        dcond = self.depth_condition(depth)
        drange = self.disparity_range(depth)

        # DDIM inversion with the text-conditioned prediction (as the reference)
        inv = [x0]
        z = x0
        with torch.no_grad():
            for j in range(steps):
                t = ts[steps - 1 - j]
                out = self.unet(z, dcond, t, cond, token)
                z = self.ddim_next(out, t, z, self.prev_t(ts, steps - 1 - j))
                inv.append(z)
                done += 1
                emit(Progress(stage="identity", step=done, total=total, eta_s=clock.eta(done), message="inversion"))
        inv = inv[::-1]  # inv[i]: latent at the start of denoising step i; inv[N] = x0

        hooks = BlockHooks(self.m.unet, settings.blocks, self._store_device(settings))
        acts: dict[int, list[torch.Tensor]] = {b: [] for b in hooks.blocks}
        deltas: list[torch.Tensor] = []
        unconds: list[torch.Tensor] = []
        traj = [inv[0]]
        try:
            z = inv[0]
            for i, t in enumerate(ts):
                target = inv[i + 1]
                u_i = uncond
                if null:
                    u_i = self._null_text_step(z, dcond, t, cond, uncond if not unconds else unconds[-1], target, i, ts, settings, token)
                    unconds.append(u_i)
                exact = settings.capture == "exact"
                if i < n_cap and exact:
                    # the very pass guidance compares with (text-conditioned, batch 1, full
                    # precision): an unmoved object's energy and gradient are exactly zero
                    hooks.mode, hooks.cond_index, hooks.keep_dtype = "capture", 0, True
                    with torch.no_grad():
                        self.unet(z, dcond, t, cond, token)
                    hooks.mode, hooks.cond_index, hooks.keep_dtype = None, 1, False
                hooks.mode = "capture" if i < n_cap and not exact else None
                with torch.no_grad():
                    eps = self.cfg(z, dcond, t, u_i, cond, settings.guidance_scale, token)
                    pred, _ = self.ddim_prev(eps, t, z, self.prev_t(ts, i))
                hooks.mode = None
                if i < n_cap:
                    for b in hooks.blocks:
                        acts[b].append(hooks.captured[b])
                if null and not settings.null_exact_correction:
                    z = pred
                else:
                    d = target - pred
                    deltas.append(d)
                    z = pred + d
                traj.append(z)
                done += 1
                emit(Progress(stage="identity", step=done, total=total, eta_s=clock.eta(done), message="capture"))
        finally:
            hooks.remove()
        act_t = {b: (torch.stack(v) if v else torch.zeros(0)) for b, v in acts.items()}
        w, h = photo.shape[1], photo.shape[0]
        return Identity(
            key=key,
            size=(w, h),
            timesteps=ts,
            trajectory=torch.cat(traj).float(),
            deltas=torch.cat(deltas).float() if deltas else None,
            cond_emb=cond.float(),
            uncond_emb=(torch.cat(unconds) if unconds else uncond).float(),
            depth_cond=dcond,
            disparity_range=drange,
            activations=act_t,
            meta={"settings": settings.identity_fields(), "n_captured": n_cap, "prompt": prompt, "model": self.m.model_id},
        )

    def _null_text_step(self, z, dcond, t, cond, uncond_init, target, i, ts, settings, token) -> torch.Tensor:
        """Null-text optimisation of one step (Adam): the unconditional embedding that makes the
        guided DDIM step from ``z`` land on the inversion latent ``target``."""
        steps = len(ts)
        with torch.no_grad():
            eps_c = self.unet(z, dcond, t, cond, token)
        u = uncond_init.detach().float().clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=settings.null_lr * (1.0 - i / (2.0 * steps)))
        for _ in range(int(settings.null_inner_steps)):
            with torch.enable_grad():
                eps_u = self.unet(z, dcond, t, u, token)
                eps = eps_u + settings.guidance_scale * (eps_c - eps_u)
                prev, _ = self.ddim_prev(eps, t, z, self.prev_t(ts, i))
                loss = torch.nn.functional.mse_loss(prev, target)
                opt.zero_grad()
                tb = time.perf_counter()
                loss.backward()
                self.timings["forward_backward"] += time.perf_counter() - tb
            opt.step()
            if float(loss.detach()) < settings.null_epsilon + i * 2e-5:
                break
        return u.detach().to(self.m.dtype)

    # ------------------------------------------------------------------ guidance
    def energy(
        self,
        current: dict[int, torch.Tensor],
        stored: dict[int, torch.Tensor],
        warps: dict[int, BlockWarp],
        weights: dict[int, tuple[float, float]],
        bg_loss: str = "global",
    ) -> torch.Tensor:
        """Guidance energy: sum over blocks of fg * L1(stored at source cells, current at target
        cells; visibility-weighted mean) + bg * background term.

        ``current``: block -> (1, C, h, w) activations of the present pass (with graph);
        ``stored``: block -> (C, h, w) captured activations of this step. Background term
        ``"global"``: L1 between the mean stored activation outside the source silhouettes and the
        mean current activation outside the target silhouettes (the reference's form);
        ``"cell"``: per-cell L1 over the untouched background cells.
        """
        total = None
        for b, (wf, wb) in weights.items():
            if b not in current or b not in warps:
                continue
            cur = current[b].float()
            st = stored[b].to(device=cur.device, dtype=torch.float32)
            W = warps[b]
            if wf and W.count:
                tgt = W.sample(cur)[0]
                src = W.gather(st)
                per = (tgt - src).abs().mean(0)
                term = wf * (per * W.weight).sum() / W.weight.sum().clamp_min(1e-8)
                total = term if total is None else total + term
            if wb:
                if bg_loss == "global":
                    ms, mt = ~W.fg_src, ~W.fg_tgt
                    if bool(ms.any()) and bool(mt.any()):
                        term = wb * (st[:, ms].mean(1) - cur[0][:, mt].mean(1)).abs().mean()
                        total = term if total is None else total + term
                else:
                    bg = W.background
                    if bool(bg.any()):
                        term = wb * (cur[0][:, bg] - st[:, bg]).abs().mean()
                        total = term if total is None else total + term
        if total is None:
            return torch.zeros((), device=self.device)
        return total

    def guidance_step(
        self,
        z: torch.Tensor,
        depth: torch.Tensor,
        t: int,
        cond: torch.Tensor,
        stored: dict[int, torch.Tensor],
        warps: dict[int, BlockWarp],
        weights: dict[int, tuple[float, float]],
        hooks: BlockHooks,
        settings: HandlesSettings,
        token: CancelToken | None,
        grad_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, float]:
        """One gradient step on the latent: ``z - step_size * dE/dz`` -> (new z, energy before)."""
        g, e = self.energy_gradient(z, depth, t, cond, stored, warps, weights, hooks, settings, token)
        if grad_mask is not None:
            g = g * grad_mask
        return (z - settings.step_size * g).detach(), e

    def energy_gradient(
        self,
        z: torch.Tensor,
        depth: torch.Tensor,
        t: int,
        cond: torch.Tensor,
        stored: dict[int, torch.Tensor],
        warps: dict[int, BlockWarp],
        weights: dict[int, tuple[float, float]],
        hooks: BlockHooks,
        settings: HandlesSettings,
        token: CancelToken | None,
    ) -> tuple[torch.Tensor, float]:
        """(dE/dz float32, E) of the guidance energy at the latent ``z`` (one forward+backward).

        In fp16 the backward pass runs on the energy times :attr:`loss_scale` (gradients of an L1
        mean over millions of activations fall below fp16's smallest normal number otherwise) and
        is unscaled in fp32; a pass that overflows lowers the scale and runs again. bf16 has fp32's
        range and needs no scale."""
        half = self.m.dtype == torch.float16
        e = torch.zeros(())
        g = torch.zeros_like(z)
        for _attempt in range(4):
            zz = z.detach().requires_grad_(True)
            hooks.mode = "grab"
            try:
                with torch.enable_grad():
                    self.unet(zz, depth, t, cond, token)
                    e = self.energy(dict(hooks.grabbed), stored, warps, weights, settings.bg_loss)
                    if not e.requires_grad:
                        return torch.zeros_like(z), float(e.detach())
                    scale = self.loss_scale if half else 1.0
                    tb = time.perf_counter()
                    (g,) = torch.autograd.grad(e * scale, zz)
                    self.timings["forward_backward"] += time.perf_counter() - tb
                    g = g.float() / scale
            finally:
                hooks.mode = None
                hooks.grabbed.clear()
            if not half or bool(torch.isfinite(g).all()):
                return g, float(e.detach())
            self.loss_scale /= 2.0**4
        return torch.zeros_like(z), float(e.detach())  # overflowed at every scale: no step

    # ------------------------------------------------------------------ denoising
    def denoise(
        self,
        identity: Identity,
        depth: torch.Tensor,
        settings: HandlesSettings,
        warps: dict[int, BlockWarp] | None = None,
        blend_alpha: torch.Tensor | None = None,
        emit: EmitFn = _noop,
        token: CancelToken | None = None,
        preview_size: tuple[int, int] | None = None,
        on_step: Callable[[int, torch.Tensor], None] | None = None,
        start: tuple[int, torch.Tensor] | None = None,
        keep: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Denoise from the identity's z_T under ``depth`` conditioning -> the final latent.

        Guided steps (``i < n_guided``) take ``grad_steps`` gradient steps on the energy first;
        injected steps (``i < n_injected``) replace the hooked blocks' outputs at the objects'
        targets by the warped stored activations. ``blend_alpha`` (1, 1, h, w) in [0, 1] keeps
        the latent on the identity's trajectory where it is 0 (exactly) and free where it is 1.
        ``start`` = (k, z_k): begin at step ``k`` from the latent ``z_k`` (where ``blend_alpha``
        is 0, the trajectory's latent at step k replaces it). ``keep`` = (k1, known (1, 1, h, w)
        in [0, 1], x (1, 4, h, w), noise): until step k1 the latent is ``sqrt(a) x + sqrt(1 - a)
        noise`` (``a`` of the step reached) where ``known`` is 1.
        """
        steps = identity.steps
        ts = identity.timesteps
        self.controlnet_scale = float(settings.controlnet_scale)
        warps = warps or {}
        n_guided = min(settings.n_guided(steps), identity.n_captured) if warps else 0
        n_inject = min(settings.n_injected(steps), identity.n_captured) if warps else 0
        cond = identity.cond_emb.to(self.device)
        traj = identity.trajectory
        k0 = 0
        z = traj[0].clone()[None].to(self.device)
        if start is not None:
            k0 = max(0, min(int(start[0]), steps - 1))
            z = start[1].to(self.device).float()
            if blend_alpha is not None:
                z = blend_alpha * z + (1 - blend_alpha) * traj[k0][None].to(self.device)
        keep_residual = None
        if identity.deltas is not None and blend_alpha is not None and not settings.residuals_in_edit:
            keep_residual = 1 - blend_alpha
        clock = ProgressClock(steps - k0)
        need_hooks = (n_guided > 0 or n_inject > 0) and warps
        hooks = BlockHooks(self.m.unet, [b for b in settings.blocks if b in warps]) if need_hooks else None
        try:
            for i, t in enumerate(ts):
                if i < k0:
                    continue
                if i < n_guided:
                    assert hooks is not None  # n_guided > 0 only with warps: need_hooks
                    stored = {b: identity.activations[b][i] for b in hooks.blocks if b in identity.activations}
                    for k in range(int(settings.grad_steps)):
                        w = settings.step_weights(i, k)
                        w = {b: v for b, v in w.items() if b in stored and (v[0] or v[1])}
                        if not w:
                            continue
                        z, _ = self.guidance_step(z, depth, t, cond, stored, warps, w, hooks, settings, token, blend_alpha)
                if hooks is not None and i < n_inject:
                    hooks.inject_maps = {
                        b: warps[b].splat(identity.activations[b][i].to(self.device)) for b in hooks.blocks if b in identity.activations and warps[b].count
                    }
                    hooks.mode = "inject"
                try:
                    with torch.no_grad():
                        eps = self.cfg(z, depth, t, identity.uncond_at(i).to(self.device), cond, settings.guidance_scale, token)
                        z_next, x0 = self.ddim_prev(eps, t, z, self.prev_t(ts, i))
                finally:
                    if hooks is not None:
                        hooks.mode = None
                        hooks.inject_maps = {}
                if identity.deltas is not None:
                    d_i = identity.deltas[i][None].to(self.device)
                    z_next = z_next + (d_i if keep_residual is None else d_i * keep_residual)
                if keep is not None and i + 1 < int(keep[0]):
                    a_next = self._alpha(ts[i + 1])
                    known = keep[1]
                    z_known = a_next**0.5 * keep[2] + (1 - a_next) ** 0.5 * keep[3]
                    z_next = known * z_known + (1 - known) * z_next
                if blend_alpha is not None:
                    z_next = blend_alpha * z_next + (1 - blend_alpha) * traj[i + 1][None].to(self.device)
                z = z_next
                if on_step is not None:
                    on_step(i, z)
                emit(
                    Progress(
                        stage="render",
                        step=i + 1 - k0,
                        total=steps - k0,
                        eta_s=clock.eta(i + 1 - k0),
                        message="guided" if i < n_guided else ("injected" if i < n_inject else "denoising"),
                    )
                )
                if preview_size and settings.preview_every > 0 and (i + 1 - k0) % settings.preview_every == 0 and i + 1 < steps:
                    emit(Preview(image=self.preview_rgb(x0, preview_size), step=i + 1 - k0, total=steps - k0))
        finally:
            if hooks is not None:
                hooks.remove()
        return z

    def reconstruct(self, identity: Identity, settings: HandlesSettings, token: CancelToken | None = None) -> torch.Tensor:
        """The plain replay of the identity (source depth, no guidance): its final latent."""
        return self.denoise(identity, identity.depth_cond.to(self.device), settings, token=token)
