"""Benchmark of the Diffusion Handles engine at real model sizes (random weights): `make bench-render`.

Every renderer backend is built from its real architecture with random weights (no download) and
run through the engine's own code, each in a process of its own (so that its peak memory is its
own and the next backend starts with free memory):

* ``sd2-depth``: SD2-depth's UNet (5 input channels), VAE and OpenCLIP-H text encoder, 256 and 512 px;
* ``sd15-controlnet``: SD 1.5's UNet, VAE and CLIP ViT-L text encoder plus a depth ControlNet of
  ``control_v11f1p_sd15_depth``'s architecture, 512 px;
* ``sdxl-controlnet``: SDXL base 1.0's UNet (added text/time conditioning), VAE and both text
  encoders plus a depth ControlNet of ``controlnet-depth-sdxl-1.0``'s architecture, 512 px
  measured; its native 1024 px is ESTIMATED (one batch-1 evaluation is measured at 1024 px, the
  other kinds scaled by their 512 px ratios, times the counted evaluations; it says so).

Measured per backend and side: seconds per UNet evaluation by kind (batch-1 forward, batch-2
classifier-free guidance, forward+backward), the UNet alone and the ControlNet alone, the few-step
LoRA's cost (a rank-64 adapter of LCM-LoRA's layout, unfused, through PEFT as the loader installs
it), UNet evaluations per edit and per identity for every preset, the seconds per edit scaled to
the full schedules, the ratio to the reference schedule, and peak memory.

A full ``reference`` edit at 512 px takes about 25 minutes on a 2-core CPU, so each preset runs a
SHORTENED schedule (1-2 denoising steps with exactly the per-step work of the full schedule:
guided steps with the preset's gradient iterations, null-text's inner steps), the mean time of
each kind of evaluation is measured there, and the full-schedule time is the counted evaluations
of the full schedule (``HandlesSettings.expected_unet_evals``, checked against the counts of the
shortened runs) times those means, plus the measured per-step overhead. The output says which
numbers are measured and which are scaled.

``--device cuda --precision fp16`` measures on a GPU where one is present.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.machine import machine_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BACKENDS = ("sd2-depth", "sd15-controlnet", "sdxl-controlnet")
#: sides measured per backend (the first is the --quick side)
SIDES = {"sd2-depth": (256, 512), "sd15-controlnet": (512,), "sdxl-controlnet": (512,)}
#: the side each backend renders at by default; where it is not measured it is estimated
NATIVE = {"sd2-depth": 512, "sd15-controlnet": 512, "sdxl-controlnet": 1024}
PRESET_NAMES = ("reference", "default", "fast", "draft", "turbo")

_SD_UNET = dict(
    sample_size=64,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=32,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
)
#: SD2-depth (stable-diffusion-2-depth/unet/config.json)
SD2_UNET = dict(_SD_UNET, in_channels=5, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, upcast_attention=False)
#: SD 1.5 (stable-diffusion-v1-5/unet/config.json)
SD15_UNET = dict(_SD_UNET, in_channels=4, cross_attention_dim=768, attention_head_dim=8)
#: SDXL base 1.0 (stable-diffusion-xl-base-1.0/unet/config.json)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
    act_fn="silu",
    scaling_factor=0.18215,
)
_TEXT = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1)
#: OpenCLIP ViT-H/14 text tower (SD2)
TEXT_H = dict(_TEXT, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, projection_dim=512, hidden_act="gelu")
#: CLIP ViT-L/14 text tower (SD 1.5; SDXL's first encoder)
TEXT_L = dict(_TEXT, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768, hidden_act="quick_gelu")
#: OpenCLIP ViT-bigG/14 text tower with projection (SDXL's second encoder)
TEXT_BIGG = dict(_TEXT, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280, hidden_act="gelu")
#: LCM-LoRA's layout: rank 64 on the attention, feed-forward, resnet convolutions and time projections
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2", "conv_shortcut", "time_emb_proj"]
LORA_RANK = 64

#: --tiny: the same classes and code paths at a few million parameters (a smoke run that checks
#: the benchmark itself in seconds; its figures mean nothing)
TINY = {
    "sd2-depth": dict(block_out_channels=(32, 64, 64, 64), norm_num_groups=8, attention_head_dim=(2, 4, 8, 8), cross_attention_dim=32),
    "sd15-controlnet": dict(block_out_channels=(32, 64, 64, 64), norm_num_groups=8, cross_attention_dim=16),
    "sdxl-controlnet": dict(
        block_out_channels=(32, 64, 64),
        norm_num_groups=8,
        transformer_layers_per_block=(1, 1, 1),
        attention_head_dim=(2, 4, 4),
        cross_attention_dim=32,
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 16,
    ),
    "vae": dict(block_out_channels=(8, 8, 8, 8), norm_num_groups=4, layers_per_block=1),
    "text": {
        "sd2-depth": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32),
        "text_l": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, projection_dim=16),
    },
}

TARGETS = {
    "default_vs_reference": 0.25,
    "fast_vs_plain": 1.2,
    "identity_vs_nulltext": 0.2,
    "identity_mb_512": 400.0,
    "peak_gb_512": 10.0,
}


def peak_rss_gb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024**3) if sys.platform == "darwin" else r / (1024**2)


def peak_gb(device) -> float:
    """Peak memory of this process: resident (CPU) or the accelerator's allocations (CUDA)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**3
    return peak_rss_gb()


def _random_init_(module, seed: int) -> None:
    """Fast random weights: N(0, 0.02) for matrices/kernels, ones/zeros for norms, zeros for biases."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02, generator=g)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()


def _write_tokenizer(folder: Path) -> None:
    """A small byte-level BPE tokenizer (vocab.json + merges.txt) for the CLIPTokenizer class."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
        )
    )


def build_models(backend: str = "sd2-depth", dtype_name: str = "fp32", device: str = "cpu", tiny: bool = False):
    """HandlesModels with ``backend``'s real architecture and random weights (``tiny``: the same
    classes at a few million parameters)."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from core.ml.handles.models import HandlesModels, dtype_from_name

    dt = dtype_from_name(dtype_name)
    dev = torch.device(device)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # "modules that should be kept in float32: []" per model
    t0 = time.monotonic()
    vae_cfg = dict(VAE_CONFIG, scaling_factor=0.13025) if backend == "sdxl-controlnet" else dict(VAE_CONFIG)
    unet_cfg = dict({"sd2-depth": SD2_UNET, "sd15-controlnet": SD15_UNET, "sdxl-controlnet": SDXL_UNET}[backend])
    text_cfg = dict(TEXT_H if backend == "sd2-depth" else TEXT_L)
    text2_cfg = dict(TEXT_BIGG)
    if tiny:
        unet_cfg.update(TINY[backend])
        vae_cfg.update(TINY["vae"])
        text_cfg.update(TINY["text"]["sd2-depth" if backend == "sd2-depth" else "text_l"])
        text2_cfg.update(TINY["text"]["text_l"])
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg)
    text = CLIPTextModel(CLIPTextConfig(**text_cfg))
    parts = {"UNet": unet, "VAE": vae, "text encoder": text}
    if backend != "sd2-depth":
        parts["ControlNet"] = ControlNetModel.from_unet(unet)
    if backend == "sdxl-controlnet":
        parts["text encoder 2"] = CLIPTextModelWithProjection(CLIPTextConfig(**text2_cfg))
    for k, m in enumerate(parts.values()):
        _random_init_(m, k)
        # SDXL's VAE stays fp32 under fp16 (as the loader keeps it: it overflows in half precision)
        keep32 = m is vae and backend == "sdxl-controlnet"
        m.requires_grad_(False).eval().to(device=dev, dtype=torch.float32 if keep32 else dt)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    _write_tokenizer(tmp)
    tok = CLIPTokenizer.from_pretrained(tmp)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sizes = ", ".join(f"{name} {sum(p.numel() for p in m.parameters()) / 1e6:.0f} M" for name, m in parts.items())
    print(f"built {backend} with random weights ({dtype_name}, {dev}): {sizes} parameters, in {time.monotonic() - t0:.0f} s", flush=True)
    return HandlesModels(
        path=tmp,
        model_id=f"{backend}-random",
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        scheduler=sched,
        device=dev,
        dtype=dt,
        backend=backend,
        controlnet=parts.get("ControlNet"),
        text_encoder_2=parts.get("text encoder 2"),
        tokenizer_2=tok if backend == "sdxl-controlnet" else None,
    )


def freeze_text(engine, prompts: list[str]) -> float:
    """Encode ``prompts`` once, serve them from a cache and free the text encoders' weights
    (SDXL's two encoders hold 3.3 GB in fp32 that the measured UNet evaluations do not use).
    Returns the seconds of one encoding."""
    t0 = time.perf_counter()
    cache = {p: engine.encode_text(p) for p in prompts}
    seconds = (time.perf_counter() - t0) / max(1, len([p for p in prompts if p]))
    engine.encode_text = cache.__getitem__  # the instance attribute shadows the method
    m = engine.m
    m.text_encoder = None
    if m.text_encoder_2 is not None:
        m.text_encoder_2 = SimpleNamespace(config=m.text_encoder_2.config)
    return seconds


def bench_depth(side: int) -> float | None:
    """Seconds of one Depth Anything V2 Small (real configuration, random weights) forward."""
    try:
        import torch
        from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    except ImportError:
        return None
    backbone = Dinov2Config(
        image_size=518,
        patch_size=14,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        out_indices=[3, 6, 9, 12],
        reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=384,
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=[48, 96, 192, 384],
        fusion_hidden_size=64,
        head_hidden_size=32,
    )
    model = DepthAnythingForDepthEstimation(cfg).eval()
    s = (side // 14) * 14 + 14  # the processor's multiple-of-14 input
    x = torch.randn(1, 3, s, s)
    with torch.no_grad():
        t0 = time.perf_counter()
        model(pixel_values=x)
        return time.perf_counter() - t0


def synthetic_scene(side: int):
    from core.camera import Camera
    from core.scene import Scene, SceneObject

    w, h = side, side
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    photo = np.stack([127 + 60 * np.sin(x / 17), 127 + 60 * np.cos(y / 13), 127 + 40 * np.sin((x + y) / 23)], -1)
    depth = 3.0 + 2.0 * (1.0 - y / h)
    mask = np.zeros((h, w), bool)
    mask[h // 3 : h // 3 + h // 4, w // 3 : w // 3 + w // 4] = True
    photo[mask] = [200, 40, 40]
    depth[mask] = 2.0
    return Scene(
        photo=np.clip(photo, 0, 255).astype(np.uint8),
        depth=depth.astype(np.float32),
        camera=Camera(w, h),
        prompt="a red box on the floor",
        objects=[SceneObject("box", mask)],
    )


def presets(engine) -> dict:
    """The presets as this backend runs them (SDXL: the same decoder blocks by its numbering),
    plus ``plain``: depth-conditioned sampling without guidance (the ablation)."""
    from core.ml.handles.presets import PRESETS

    out = {name: engine.model_settings(PRESETS[name]) for name in PRESET_NAMES}
    out["plain"] = replace(out["default"], guided_until=0.0, grad_steps=0, inject_until=0.0, preview_start=0.0)
    return out


def shortened(s, steps: int = 1):
    """``s`` cut to ``steps`` steps that each do a guided (or injected) step's full work."""
    return replace(
        s,
        steps=steps,
        max_steps=0,
        guided_until=1.0 if s.n_guided() else 0.0,
        inject_until=1.0 if s.n_injected() else 0.0,
        preview_start=0.0,
    )


def time_forward(engine, side: int, repeat: int = 2) -> dict:
    """Seconds of one batch-1 evaluation: the UNet alone, the ControlNet alone, both (the engine's)."""
    import torch

    m, dev = engine.m, engine.device
    h, w = engine.latent_size(side, side)
    z = torch.randn(1, m.latent_channels, h, w, device=dev)
    depth = engine.depth_condition(synthetic_scene(side).depth)
    emb = engine.encode_text("a red box on the floor")
    out: dict[str, float] = {}

    def best(fn) -> float:
        ts = []
        for _ in range(repeat):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            ts.append(time.perf_counter() - t0)
        return min(ts)

    with torch.no_grad():
        out["engine"] = best(lambda: engine.unet(z, depth, 500, emb, None))
        if m.controlnet is not None:
            dt = m.dtype
            tt = torch.full((1,), 500, device=dev, dtype=torch.long)
            states, added = emb.to(dt), None
            if m.backend == "sdxl-controlnet":
                states, added = engine._xl_inputs(states, z)
            cond = depth.to(dt)
            out["controlnet"] = best(
                lambda: m.controlnet(z.to(dt), tt, encoder_hidden_states=states, controlnet_cond=cond, added_cond_kwargs=added, return_dict=False)
            )
            out["unet"] = best(lambda: m.unet(z.to(dt), tt, encoder_hidden_states=states, added_cond_kwargs=added, return_dict=False))
        else:
            out["unet"] = out["engine"]
    engine.counts.clear()
    engine.timings.clear()
    return out


def add_lora(unet) -> int:
    """A rank-64 adapter in LCM-LoRA's layout through PEFT (what ``set_lora`` installs); its size."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=LORA_TARGETS, init_lora_weights="gaussian"), adapter_name="bench")
    unet.set_adapters(["bench"], weights=[1.0])
    unet.requires_grad_(False)
    return sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)


def run_resolution(engine, side: int, quick: bool, lora: bool) -> dict:
    import torch

    from core.geometry.warp import feature_correspondence
    from core.geometry.warp import plan as warp_plan
    from core.ml.handles.renderer import soft_region
    from core.ml.handles.warping import BlockWarp
    from core.transform import Transform3D

    res: dict = {"side": side, "stages": {}, "measured": {}, "overhead_per_step": {}}
    ps = presets(engine)
    scene = synthetic_scene(side)
    scene.objects[0].transform = Transform3D(translation=(0.35, 0.0, 0.0))
    plan = warp_plan(scene)
    totals_t: dict[str, float] = {}
    totals_n: dict[str, int] = {}

    def account(into_t=totals_t, into_n=totals_n):
        for k, v in engine.counts.items():
            into_n[k] = into_n.get(k, 0) + v
            into_t[k] = into_t.get(k, 0.0) + engine.timings[k]
        engine.counts.clear()
        engine.timings.clear()

    t0 = time.perf_counter()
    engine.encode_image(scene.photo)
    res["stages"]["vae_encode"] = time.perf_counter() - t0
    res["forward"] = time_forward(engine, side)

    # identities (shortened): exact, 2 steps; null-text, 1 step with the full 5 inner steps
    short_exact = shortened(ps["default"], 1 if quick else 2)
    t0 = time.perf_counter()
    ident = engine.build_identity(scene.photo, scene.depth, scene.prompt, short_exact, key="bench")
    res["measured"]["identity_exact"] = (time.perf_counter() - t0, short_exact.steps, dict(engine.counts))
    assert dict(engine.counts) == short_exact.expected_unet_evals(identity=True), engine.counts
    account()
    short_null = replace(shortened(ps["reference"]), null_epsilon=0.0)
    t0 = time.perf_counter()
    engine.build_identity(scene.photo, scene.depth, scene.prompt, short_null, key="bench-null")
    res["measured"]["identity_nulltext"] = (time.perf_counter() - t0, 1, dict(engine.counts))
    assert dict(engine.counts) == short_null.expected_unet_evals(identity=True), engine.counts
    account()
    res["identity_bytes_short"] = len(ident.to_bytes())
    res["act_bytes_per_step"] = ident.activation_bytes() / max(1, ident.n_captured)
    res["latent_bytes_per_step"] = (ident.trajectory[0].numel() * 4) * 2  # trajectory + delta, float32

    # warps from the real geometry
    warps = {}
    for b, a in ident.activations.items():
        factor = side // int(a.shape[-2])
        warps[b] = BlockWarp.from_correspondence(feature_correspondence(plan, factor, margin=1))
    corr = feature_correspondence(plan, engine.m.vae_factor, margin=2)
    blend = torch.from_numpy(soft_region(~corr.background, 0, 2))[None, None]
    depth = engine.depth_condition(plan.edited_depth)

    # shortened edits: 1 step with the per-step work of the full schedule
    ident1 = replace(
        ident,
        timesteps=ident.timesteps[:1],
        trajectory=ident.trajectory[:2],
        deltas=None if ident.deltas is None else ident.deltas[:1],
        activations={b: a[:1] for b, a in ident.activations.items()},
    )
    variants = {name: shortened(s) for name, s in ps.items() if name not in ("draft", "turbo")}
    for name, s in variants.items():
        t0 = time.perf_counter()
        engine.denoise(ident1, depth, s, warps=warps, blend_alpha=blend if s.background_blend else None)
        wall = time.perf_counter() - t0
        res["measured"][f"edit_{name}"] = (wall, 1, dict(engine.counts))
        assert dict(engine.counts) == s.expected_unet_evals(steps=1), (name, engine.counts)
        res["overhead_per_step"][name] = max(0.0, wall - sum(engine.timings.values()))
        account()
    t0 = time.perf_counter()
    engine.decode_latent(ident.trajectory[-1][None])
    res["stages"]["vae_decode"] = time.perf_counter() - t0
    res["mean_eval_s"] = {k: totals_t[k] / totals_n[k] for k in totals_n}

    # turbo: its own step (CFG 1: batch-1 passes) with a few-step LoRA where the backend has one
    turbo = shortened(ps["turbo"])
    res["lora_params"] = 0
    if lora:
        res["lora_params"] = add_lora(engine.m.unet)
        res["forward_lora"] = time_forward(engine, side)
    t0 = time.perf_counter()
    engine.denoise(ident1, depth, turbo, warps=warps, blend_alpha=blend if turbo.background_blend else None)
    wall = time.perf_counter() - t0
    res["measured"]["edit_turbo" + ("+lora" if lora else "")] = (wall, 1, dict(engine.counts))
    assert dict(engine.counts) == turbo.expected_unet_evals(steps=1), ("turbo", engine.counts)
    res["overhead_per_step"]["turbo"] = max(0.0, wall - sum(engine.timings.values()))
    tt: dict[str, float] = {}
    tn: dict[str, int] = {}
    account(tt, tn)
    res["turbo_eval_s"] = {k: tt[k] / tn[k] for k in tn}
    if lora:
        engine.m.unet.delete_adapters(["bench"])
    res["peak_gb"] = peak_gb(engine.device)
    return res


def full_estimates(res: dict, ps: dict) -> dict:
    """Seconds, counted evaluations and steps of every preset's full edit and identity."""
    m = res["mean_eval_s"]
    out: dict = {"edit": {}, "identity": {}}

    def cost(counts, means=m):
        # a kind the shortened runs did not exercise (turbo's fwd+bwd on a backend without the
        # adapter run) falls back to the general mean
        return sum((means.get(k) or m[k]) * v for k, v in counts.items())

    for name, s in ps.items():
        ev = s.expected_unet_evals()
        run_steps = s.steps - s.n_start()
        over_key = name if name in res["overhead_per_step"] else "plain"
        over = res["overhead_per_step"][over_key] * run_steps
        means = res["turbo_eval_s"] if name == "turbo" else m
        out["edit"][name] = (cost(ev, means) + over + res["stages"]["vae_decode"], ev, s.steps)
        iv = s.expected_unet_evals(identity=True)
        out["identity"][name] = (cost(iv, means) + res["stages"]["vae_encode"], iv, s.steps)
    # plain sampling at the reference's 50 steps (the reference's own sampling cost)
    out["edit"]["plain50"] = (cost({"cfg": 50}) + res["overhead_per_step"]["plain"] * 50 + res["stages"]["vae_decode"], {"cfg": 50}, 50)
    for name in ("default", "reference"):
        s = ps[name]
        latent = res["latent_bytes_per_step"] * s.steps
        out[f"identity_mb_{name}"] = (res["act_bytes_per_step"] * s.n_captured() + latent) / 1e6
    return out


def estimate_side(engine, res: dict, side: int) -> dict:
    """``res`` (measured at a smaller side) scaled to ``side``: one batch-1 evaluation is measured
    there; the other kinds keep their measured ratios to it; overheads and the VAE scale with the
    pixel count."""
    fwd = time_forward(engine, side, repeat=1)
    k = fwd["engine"] / res["forward"]["engine"]
    area = (side / res["side"]) ** 2
    est = dict(res)
    est.update(
        side=side,
        estimated=True,
        forward=fwd,
        mean_eval_s={kind: v * k for kind, v in res["mean_eval_s"].items()},
        turbo_eval_s={kind: v * k for kind, v in res["turbo_eval_s"].items()},
        overhead_per_step={n: v * area for n, v in res["overhead_per_step"].items()},
        stages={n: (v * area if isinstance(v, float) else v) for n, v in res["stages"].items()},
        act_bytes_per_step=res["act_bytes_per_step"] * area,
        latent_bytes_per_step=res["latent_bytes_per_step"] * area,
        scale_from=res["side"],
        forward_lora=None,
        eval_ratio=k,
        peak_gb=peak_gb(engine.device),
    )
    return est


def run_backend(backend: str, sizes: list[int], quick: bool, precision: str, device: str, estimate: bool, tiny: bool = False) -> list[dict]:
    import torch

    from core.ml.handles.engine import HandlesEngine

    torch.set_flush_denormal(True)
    engine = HandlesEngine(build_models(backend, precision, device, tiny=tiny))
    text_s = freeze_text(engine, ["a red box on the floor", ""])
    print(f"peak memory after building the models: {peak_gb(engine.device):.2f} GB", flush=True)
    lora = backend != "sd2-depth"  # the few-step LoRAs exist for SD 1.5 and SDXL
    results = []
    for side in sizes:
        t0 = time.monotonic()
        res = run_resolution(engine, side, quick, lora)
        res["stages"]["text_encode"] = text_s
        res["stages"]["depth"] = bench_depth(side) if backend == "sd2-depth" else None
        res["wall"] = time.monotonic() - t0
        res["full"] = full_estimates(res, presets(engine))
        res["backend"] = backend
        results.append(res)
        print_table(res)
    native = min(NATIVE[backend], 2 * max(sizes)) if tiny else NATIVE[backend]
    if estimate and native not in sizes and results:
        t0 = time.monotonic()
        est = estimate_side(engine, results[-1], native)
        est["wall"] = time.monotonic() - t0
        est["full"] = full_estimates(est, presets(engine))
        results.append(est)
        print_table(est)
    return results


# ----------------------------------------------------------------------------- output
def _evals_text(ev: dict) -> str:
    return f"{ev.get('forward', 0):>4} {ev.get('cfg', 0):>4} {ev.get('forward_backward', 0):>4}"


def print_table(res: dict) -> None:
    side, backend = res["side"], res["backend"]
    est = res.get("estimated")
    st = res["stages"]
    head = f"{backend} {side} x {side} px"
    if est:
        head += (
            f"  ESTIMATED from {res['scale_from']} px (one batch-1 evaluation measured at {side} px: {res['eval_ratio']:.2f}x the {res['scale_from']} px one)"
        )
    print(f"\n=== {head}  (wall time {res['wall']:.0f} s) ===")
    if not est:
        dep = f"{st['depth']:.2f} s | " if st.get("depth") is not None else ""
        print(
            f"stages (measured): {'depth (Depth Anything V2 Small cfg) ' if dep else ''}{dep}VAE encode {st['vae_encode']:.2f} s | "
            f"VAE decode {st['vae_decode']:.2f} s | text encode {st['text_encode']:.2f} s"
        )
    f = res["forward"]
    line = f"seconds per batch-1 evaluation ({'measured' if not est else 'measured at this side'}): UNet {f['unet']:.2f}"
    if "controlnet" in f:
        line += f", ControlNet {f['controlnet']:.2f}, UNet + ControlNet (the engine's) {f['engine']:.2f}"
    print(line)
    if res.get("forward_lora"):
        fl = res["forward_lora"]
        print(
            f"with a rank-{LORA_RANK} few-step LoRA ({res['lora_params'] / 1e6:.1f} M parameters, unfused through PEFT): "
            f"{fl['engine']:.2f} s ({fl['engine'] / f['engine'] - 1:+.0%})"
        )
    print(
        "mean seconds per counted evaluation ("
        + ("scaled" if est else "measured")
        + "): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(res["mean_eval_s"].items()))
    )
    if not est:
        print("MEASURED shortened runs (steps, seconds, UNet evaluations):")
        for k, (sec, steps, ev) in res["measured"].items():
            print(f"  {k:<20} {steps} step(s) {sec:8.1f} s  {ev}")
    print("SCALED to the full schedules (counted evaluations x mean seconds + per-step overheads):")
    print(f"  {'preset':<10} {'steps':>5} | {'edit: fwd  cfg  f+b':>19} {'seconds':>8} {'vs ref':>7} | {'identity: fwd  cfg  f+b':>23} {'seconds':>8}")
    ref = res["full"]["edit"]["reference"][0]
    for name, (sec, ev, steps) in res["full"]["edit"].items():
        isec, iev, _ = res["full"]["identity"].get(name, (None, {}, 0))
        ident = f"{_evals_text(iev):>23} {isec:8.1f}" if isec is not None else f"{'(none)':>23} {'':>8}"
        print(f"  {name:<10} {steps:>5} | {_evals_text(ev):>19} {sec:8.1f} {sec / ref:7.2f} | {ident}")
    print(
        f"  stored identity: default {res['full']['identity_mb_default']:.0f} MB, reference {res['full']['identity_mb_reference']:.0f} MB "
        f"(activations {res['act_bytes_per_step'] / 1e6:.1f} MB per captured step)"
    )
    print(f"peak memory so far: {res['peak_gb']:.2f} GB", flush=True)


def print_summary(results: list[dict], precision: str) -> None:
    print(f"\n=== summary: every backend ({precision}; s/edit and s/identity scaled to the full schedules; * = estimated side) ===")
    print(
        f"  {'backend':<16} {'side':>5} | {'UNet':>5} {'+CN':>5} {'cfg':>5} {'f+b':>5} s/eval | "
        + " ".join(f"{n:>9}" for n in ("reference", "default", "fast", "draft", "turbo"))
        + f" s/edit | {'default':>7} {'turbo':>6} s/ident | {'peak GB':>7}"
    )
    for res in results:
        f, m = res["forward"], res["mean_eval_s"]
        e, i = res["full"]["edit"], res["full"]["identity"]
        side = f"{res['side']}{'*' if res.get('estimated') else ''}"
        cn = f"{f['engine']:5.2f}" if "controlnet" in f else f"{'-':>5}"
        print(
            f"  {res['backend']:<16} {side:>5} | {f['unet']:5.2f} {cn} {m.get('cfg', 0):5.2f} {m.get('forward_backward', 0):5.2f}        | "
            + " ".join(f"{e[n][0]:9.1f}" for n in ("reference", "default", "fast", "draft", "turbo"))
            + f"        | {i['default'][0]:7.1f} {i['turbo'][0]:6.1f}         | {res['peak_gb']:7.2f}"
        )
    print("  evaluations per edit (fwd / cfg / fwd+bwd), the same on every backend:")
    first = results[0]["full"]
    for n in ("reference", "default", "fast", "draft", "turbo", "plain"):
        ev, iv = first["edit"][n][1], first["identity"][n][1]
        print(f"    {n:<10} {first['edit'][n][2]:>3} steps: edit {_evals_text(ev)}   identity {_evals_text(iv)}")
    print("  (draft renders at 256 px: its row at larger sides counts its evaluations at that side; turbo is 8 trailing steps at CFG 1")
    print("   with the backend's few-step LoRA where one exists: SD 1.5 and SDXL)")


def print_targets(results: list[dict]) -> None:
    print("\n=== targets ===")
    for res in results:
        if res.get("estimated"):
            continue
        e, i = res["full"]["edit"], res["full"]["identity"]
        side, tag = res["side"], f"{res['backend']} @{res['side']}"
        rows = [
            (f"default / reference per edit, {tag}", e["default"][0] / e["reference"][0], TARGETS["default_vs_reference"]),
            (f"fast / plain sampling, {tag}", e["fast"][0] / e["plain"][0], TARGETS["fast_vs_plain"]),
            (f"identity / null-text identity, {tag}", i["default"][0] / i["reference"][0], TARGETS["identity_vs_nulltext"]),
        ]
        if side == 512 and res["backend"] == "sd2-depth":
            rows += [
                (f"stored identity MB (reference, 50 steps), {tag}", res["full"]["identity_mb_reference"], TARGETS["identity_mb_512"]),
                (f"peak resident GB, {tag}", res["peak_gb"], TARGETS["peak_gb_512"]),
            ]
        for label, v, target in rows:
            print(f"  {label:<56} {v:8.3f}  target <= {target:<6} {'PASS' if v <= target else 'MISS'}")
    print("(edit times at the full schedules are scaled from the measured shortened runs; see above)")


# ----------------------------------------------------------------------------- entry
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="all", choices=("all", *BACKENDS), help="one backend, or every one (each in a process of its own)")
    ap.add_argument("--quick", action="store_true", help="smoke run: the smallest side only, shortest schedules, no estimated side")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="sides in pixels (default: per backend)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (the GPU where one is present)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tiny", action="store_true", help="check the benchmark itself: tiny configurations of the same classes at 128 px (figures mean nothing)")
    ap.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)  # a child's results
    args = ap.parse_args(argv)
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"Diffusion Handles render benchmark: {machine_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision} on {device}",
        flush=True,
    )
    if args.tiny and not args.sizes:
        args.sizes = [128]
    if args.backend != "all":
        sizes = args.sizes or list(SIDES[args.backend][:1] if args.quick else SIDES[args.backend])
        estimate = args.tiny or (not args.quick and not args.sizes)
        results = run_backend(args.backend, sizes, args.quick, args.precision, device, estimate=estimate, tiny=args.tiny)
        if args.json:
            args.json.write_text(json.dumps(results, default=lambda o: None))
        else:
            print_targets(results)
        return 0
    results, failed = [], []
    for backend in BACKENDS:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "results.json"
            cmd = [sys.executable, "-m", "benchmarks.render", "--backend", backend, "--json", str(out), "--precision", args.precision, "--device", device]
            cmd += ["--quick"] if args.quick else []
            cmd += ["--tiny"] if args.tiny else []
            cmd += ["--sizes", *map(str, args.sizes)] if args.sizes else []
            cmd += ["--threads", str(args.threads)] if args.threads else []
            rc = subprocess.run(cmd, check=False).returncode
            if rc or not out.is_file():
                print(f"{backend}: the benchmark process failed (exit {rc}); see above", flush=True)
                failed.append(backend)
                continue
            results += json.loads(out.read_text())
    if not results:
        return 1
    print(f"\n{machine_line()} (at the end)")
    print_summary(results, args.precision)
    print_targets(results)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
