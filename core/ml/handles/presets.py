"""Settings of the Diffusion Handles engine and its named presets (pure Python, no torch).

A :class:`HandlesSettings` holds every number that decides a render. ``PRESETS`` names five
(the earlier presets, which started from the inverted noise, are ``default``/``fast`` with
``preview_start=0, preview_keep=0, background_blend=True, paste_objects=False``):

``reference``
    The public reference implementation in numbers (Pandey et al., CVPR 2024): 50 DDIM steps,
    null-text inversion (Adam, 5 inner steps), guidance on steps 0-37 with 3 gradient steps of
    size 0.1, foreground weight 1.5 and background weight 1.25 scaled by 30, the reference's
    per-step block weights (``up_blocks[2]``/``[3]`` alternate) and per-iteration weights,
    global-average background term, no background blending, no compositing. Its activations are
    captured as the reference captures them: from a text-conditioned batch-1 pass at the model's
    precision (the pass that guidance compares with), so that content which does not move has
    exactly zero energy and gradient. Deviations from the reference, all deliberate: the DDIM
    schedule is ``leading`` with offset 0 (the reference's diffusers default); the fill of the
    revealed background dilates the object masks by 3 px at 512 px (scaled with the size,
    ``core.geometry.fill``) where the reference dilates by 15 px; guidance is skipped when no
    object moves (its gradient is zero by construction).
``default``
    Warp-then-refine Diffusion Handles, about 10x cheaper per edit than ``reference``: 25 DDIM
    steps, exact optimisation-free inversion; denoising starts at 40 % of the steps from the
    geometric preview re-noised with the request's seed, the moved objects' known cells are held
    on it until 80 %, guidance (one gradient step weighted by the sum of the reference's three
    iteration weights) runs on the steps from the start to 80 %, and the objects' known pixels and
    the original photo outside the changed region (feathered seam) are pasted back. Measured on
    the world model (``make bench-quality``): starting from the inverted noise, as the reference
    does, loses the object's texture; this start keeps it and fills what the warp cannot know.
``fast``
    ``default`` without guidance (no backward pass: about the cost of plain sampling).
``draft``
    ``fast`` at 256 px and 20 steps, for CPUs.
``turbo``
    ``default`` in 8 steps on ``trailing`` timesteps (999, 874, ..., 124), at most 8 (the steps
    are clamped), classifier-free guidance scale 1 (one UNet evaluation a step, as few-step LoRAs
    are run) and energy guidance on 3 of the 5 denoised steps. With the model's few-step LoRA
    (LCM-LoRA, Hyper-SD, TCD: ``turbo_lora`` in the catalog) this is their distilled schedule run
    deterministically (DDIM, eta 0: the exact inversion needs a deterministic update, so LCM's
    fresh noise per step is not drawn); without one (the world model), 8 plain DDIM steps.

Step-dependent quantities are fractions of the step count so that a preset works for any
``steps``: guided steps are ``i < round(guided_until * steps)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from core.errors import InputError

#: the reference's per-denoising-step block weights, cycled with period 3:
#: block index -> (foreground multiplier, background multiplier); blocks absent weigh 0.
REFERENCE_BLOCK_CYCLE: tuple[dict[int, tuple[float, float]], ...] = (
    {3: (7.5, 1.5)},
    {2: (5.0, 1.5)},
    {2: (5.0, 1.5), 3: (7.5, 1.5)},
)
#: the reference's per-gradient-iteration multipliers (fg, bg); the last one repeats.
REFERENCE_ITERATION_WEIGHTS: tuple[tuple[float, float], ...] = ((2.5, 1.25), (1.25, 2.5), (1.25, 1.25), (2.5, 2.5))


@dataclass(frozen=True)
class HandlesSettings:
    """Every setting of a Diffusion Handles render (see the module docstring for the presets)."""

    # ----- sampling -----
    steps: int = 25
    #: long side of the render in pixels (sides are multiples of 64)
    resolution: int = 512
    #: 0: render at the model's own resolution (else the photo's working size); > 0: at most
    #: this long side (the draft preset's speed comes from it)
    max_resolution: int = 0
    guidance_scale: float = 7.5
    #: "leading": DDIM's 0, r, 2r, ... reversed (SD's, the reference's); "trailing": 999 down
    #: in equal strides (few-step LoRAs)
    timestep_spacing: str = "leading"
    #: > 0: the most steps this preset runs (turbo: 8); more are clamped
    max_steps: int = 0
    #: scale of a depth ControlNet's residuals (1: as trained)
    controlnet_scale: float = 1.0
    #: "per_image": min-max of each depth map's disparity (what SD2-depth was trained on);
    #: "source": the edited disparity normalised with the source photo's range (background stays put)
    depth_norm: str = "per_image"

    # ----- identity -----
    #: "exact": DDIM inversion + per-step residuals that make the CFG replay exact (no optimisation);
    #: "null-text": DDIM inversion + null-text optimisation (the reference)
    inversion: str = "exact"
    null_inner_steps: int = 5
    null_lr: float = 1e-2
    null_epsilon: float = 1e-5
    #: with "null-text", also store the residuals so that the replay is exact
    null_exact_correction: bool = False
    #: up_blocks whose outputs are captured (and guided / injected)
    blocks: tuple[int, ...] = (2, 3)
    #: store captured activations on the compute device ("device") or in CPU memory ("cpu")
    store_on: str = "auto"
    #: "cfg": the text half of the CFG replay, stored in fp16 (no extra pass); "exact": a
    #: separate text-conditioned batch-1 pass, stored at the model's precision (what guidance
    #: compares with: an unmoved object's energy is exactly zero)
    capture: str = "cfg"

    # ----- guidance -----
    guided_until: float = 0.5
    grad_steps: int = 1
    step_size: float = 0.1
    fg_weight: float = 1.5
    bg_weight: float = 1.25
    weight_scale: float = 30.0
    block_cycle: tuple[dict, ...] = REFERENCE_BLOCK_CYCLE
    iteration_weights: tuple[tuple[float, float], ...] = ((5.0, 5.0),)
    #: "global": L1 of the mean activation over background cells (the reference);
    #: "cell": mean per-cell L1 over the untouched background cells
    bg_loss: str = "global"

    # ----- injection -----
    inject_until: float = 0.0

    # ----- start of the edited region -----
    #: 0: denoise every step from the identity's inverted noise (the reference); f > 0: skip the
    #: first round(f * steps) steps and start, inside the edited region, from the geometric preview
    #: re-noised to that step with the request's seed (warp-then-refine); outside it the latent
    #: stays on the identity's trajectory
    preview_start: float = 0.0
    #: with ``preview_start``: until step round(f * steps), the cells that the moved objects
    #: cover in the geometric preview (their colours are known) follow the preview noised to each
    #: step with the same noise (a known-region constraint); later steps refine them freely
    preview_keep: float = 0.0
    #: paste the geometric preview's pixels of the moved objects (where the warp knows their
    #: colour) over the render: the object's own pixels are exact, the model fills what the warp
    #: cannot know (revealed background, newly visible faces, shadows)
    paste_objects: bool = False
    #: add the identity's per-step residuals inside the edited region too (they are the source
    #: trajectory's; outside the region they make the replay exact either way)
    residuals_in_edit: bool = True

    # ----- background preservation -----
    background_blend: bool = True
    #: dilation (latent cells) of old + new silhouettes and hole before blending
    blend_margin: int = 2
    #: width (latent cells) of the soft ramp outside the dilated region
    blend_feather: int = 2
    paste_background: bool = True
    #: dilation and feather (image pixels) of the pasted seam
    paste_margin: int = 12
    paste_feather: int = 12

    # ----- feedback -----
    preview_every: int = 5

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}")
        if self.resolution < 64 or self.resolution % 64:
            raise InputError(f"resolution must be a positive multiple of 64, got {self.resolution}")
        if self.inversion not in ("exact", "null-text"):
            raise InputError(f"inversion must be 'exact' or 'null-text', got {self.inversion!r}")
        if self.bg_loss not in ("global", "cell"):
            raise InputError(f"bg_loss must be 'global' or 'cell', got {self.bg_loss!r}")
        if self.depth_norm not in ("per_image", "source"):
            raise InputError(f"depth_norm must be 'per_image' or 'source', got {self.depth_norm!r}")
        if self.timestep_spacing not in ("leading", "trailing"):
            raise InputError(f"timestep_spacing must be 'leading' or 'trailing', got {self.timestep_spacing!r}")
        if self.capture not in ("cfg", "exact"):
            raise InputError(f"capture must be 'cfg' or 'exact', got {self.capture!r}")
        if self.max_steps < 0:
            raise InputError(f"max_steps must be >= 0, got {self.max_steps}")
        if not 0.0 <= self.controlnet_scale <= 4.0:
            raise InputError(f"controlnet_scale must be in [0, 4], got {self.controlnet_scale}")
        if self.store_on not in ("auto", "cpu", "device"):
            raise InputError(f"store_on must be 'auto', 'cpu' or 'device', got {self.store_on!r}")
        if not self.blocks or any(int(b) not in (0, 1, 2, 3) for b in self.blocks):
            raise InputError(f"blocks must be up_blocks indices in 0..3, got {self.blocks!r}")
        for name in ("guided_until", "inject_until", "preview_start", "preview_keep"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"{name} must be a fraction in [0, 1], got {v}")
        if self.grad_steps < 0:
            raise InputError(f"grad_steps must be >= 0, got {self.grad_steps}")

    # ----- derived schedule -----
    def n_guided(self, steps: int | None = None) -> int:
        n = self.steps if steps is None else steps
        return int(round(self.guided_until * n)) if self.grad_steps > 0 else 0

    def n_injected(self, steps: int | None = None) -> int:
        n = self.steps if steps is None else steps
        return int(round(self.inject_until * n))

    def n_start(self, steps: int | None = None) -> int:
        """Denoising steps skipped by the warp-then-refine start (0: from the inverted noise)."""
        n = self.steps if steps is None else steps
        return min(int(round(self.preview_start * n)), n - 1) if self.preview_start > 0 else 0

    def n_captured(self, steps: int | None = None) -> int:
        """Steps whose activations the identity must hold (from step 0)."""
        return max(self.n_guided(steps), self.n_injected(steps))

    def step_weights(self, step: int, iteration: int) -> dict[int, tuple[float, float]]:
        """Block index -> (fg, bg) weight of gradient ``iteration`` at denoising ``step``."""
        cycle = self.block_cycle[step % len(self.block_cycle)]
        it_fg, it_bg = self.iteration_weights[min(iteration, len(self.iteration_weights) - 1)]
        out = {}
        for block, (fg, bg) in cycle.items():
            block = int(block)
            if block not in self.blocks:
                continue
            out[block] = (
                float(fg) * it_fg * self.fg_weight * self.weight_scale,
                float(bg) * it_bg * self.bg_weight * self.weight_scale,
            )
        return out

    def expected_unet_evals(self, steps: int | None = None, identity: bool = False) -> dict[str, int]:
        """UNet evaluations of an edit (or, with ``identity``, of building the identity), by kind:
        ``forward`` (batch 1), ``cfg`` (batch 2), ``forward_backward`` (batch 1 with a backward).

        Null-text counts its full inner loop (early stopping can only lower it). A guided step
        counts the gradient iterations whose block weights are not all zero.
        """
        n = self.steps if steps is None else int(steps)
        single = float(self.guidance_scale) == 1.0  # CFG at scale 1 is one batch-1 pass
        if identity:
            out = {"forward": 2 * n, "cfg": 0} if single else {"forward": n, "cfg": n}
            if self.capture == "exact":
                out["forward"] += self.n_captured(n)
            if self.inversion == "null-text":
                out["forward"] += n
                out["forward_backward"] = n * int(self.null_inner_steps)
            return {k: v for k, v in out.items() if v}
        fb = 0
        k0 = self.n_start(n)
        for i in range(k0, self.n_guided(n)):
            for k in range(int(self.grad_steps)):
                if any(f or b for f, b in self.step_weights(i, k).values()):
                    fb += 1
        out = {"forward": n - k0} if single else {"cfg": n - k0}
        if fb:
            out["forward_backward"] = fb
        return out

    def identity_fields(self) -> dict:
        """The settings an identity depends on (its cache key), JSON-able."""
        d = {
            "steps": self.steps,
            "resolution": self.resolution,
            "guidance_scale": self.guidance_scale,
            "inversion": self.inversion,
            "blocks": sorted(int(b) for b in self.blocks),
        }
        # newer fields only when they differ from the default: older identities keep their keys
        for name, default in (("timestep_spacing", "leading"), ("controlnet_scale", 1.0), ("capture", "cfg")):
            if getattr(self, name) != default:
                d[name] = getattr(self, name)
        if self.inversion == "null-text":
            d.update(
                null_inner_steps=self.null_inner_steps,
                null_lr=self.null_lr,
                null_epsilon=self.null_epsilon,
                null_exact_correction=self.null_exact_correction,
            )
        return d

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_cycle"] = [{str(k): list(v) for k, v in c.items()} for c in self.block_cycle]
        d["iteration_weights"] = [list(w) for w in self.iteration_weights]
        d["blocks"] = list(self.blocks)
        return json.loads(json.dumps(d))

    def with_overrides(self, overrides: dict[str, Any] | None) -> HandlesSettings:
        """A copy with ``overrides`` applied (keys are field names; unknown keys are an InputError)."""
        if not overrides:
            return self
        known = {f.name: f for f in fields(self)}
        kw: dict[str, Any] = {}
        for k, v in overrides.items():
            if k not in known:
                raise InputError(f"unknown render setting {k!r} (known: {', '.join(sorted(known))})")
            if k == "blocks":
                v = tuple(int(b) for b in v)
            elif k == "block_cycle":
                v = tuple({int(b): (float(w[0]), float(w[1])) for b, w in c.items()} for c in v)
            elif k == "iteration_weights":
                v = tuple((float(a), float(b)) for a, b in v)
            kw[k] = v
        return replace(self, **kw)


#: what make bench-quality showed to matter on the world model (see docs/ARCHITECTURE.md): start
#: the edited region from the re-noised geometric preview at 40 % of the steps, hold the moved
#: objects' known cells on it until 80 %, denoise the whole latent (the background is restored by
#: the paste, so the model may also change shadows next to the edit), paste the objects' known pixels
WARP_THEN_REFINE: dict[str, Any] = dict(preview_start=0.4, preview_keep=0.8, background_blend=False, paste_objects=True)

PRESETS: dict[str, HandlesSettings] = {
    "reference": HandlesSettings(
        steps=50,
        resolution=512,
        inversion="null-text",
        guided_until=38 / 50,
        grad_steps=3,
        iteration_weights=REFERENCE_ITERATION_WEIGHTS,
        bg_loss="global",
        inject_until=0.0,
        background_blend=False,
        paste_background=False,
        capture="exact",
    ),
    "default": HandlesSettings(**WARP_THEN_REFINE, guided_until=0.8),
    "fast": HandlesSettings(**WARP_THEN_REFINE, guided_until=0.0, grad_steps=0),
    "draft": HandlesSettings(**WARP_THEN_REFINE, steps=20, resolution=256, max_resolution=256, guided_until=0.0, grad_steps=0),
    "turbo": HandlesSettings(**WARP_THEN_REFINE, steps=8, max_steps=8, timestep_spacing="trailing", guidance_scale=1.0, guided_until=0.75, preview_every=2),
}


def preset(name: str, overrides: dict[str, Any] | None = None) -> HandlesSettings:
    """The named preset with ``overrides`` (e.g. ``RenderRequest.settings``) applied."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r} (choose one of: {', '.join(PRESETS)})")
    return PRESETS[name].with_overrides(overrides)
