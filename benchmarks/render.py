"""Benchmark of the Diffusion Handles engine at the real model size (random weights): `make bench-render`.

The SD2-depth UNet, VAE and OpenCLIP-H text encoder are built from their real configurations with
random weights (no download), at 256 and 512 px. Measured, by the engine's own code in one run:

* seconds per stage: depth estimation (Depth Anything V2 Small configuration), identity (exact
  and null-text), per-edit render for the presets ``reference``, ``default``, ``fast`` and plain
  unguided sampling, VAE encode/decode;
* UNet evaluations per edit by kind (forward, guided batch-2 forward, forward+backward);
* peak resident memory; the stored identity size.

A full ``reference`` edit at 512 px takes about 25 minutes on a 2-core CPU, so each stage runs a
SHORTENED schedule (1-2 denoising steps with exactly the per-step work of the full schedule:
same guided / injected pattern, gradient iterations and null-text inner steps), the mean time of
each kind of UNet evaluation is measured there, and the full-schedule time is the counted
evaluations of the full schedule (``HandlesSettings.expected_unet_evals``, checked against the
counts of the shortened runs) times those means, plus the measured per-edit overhead. The output
says which numbers are measured and which are scaled.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

UNET_CONFIG = dict(
    sample_size=64,
    in_channels=5,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    norm_num_groups=32,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    upcast_attention=False,
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
TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    projection_dim=512,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
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


def build_models(dtype_name: str = "fp32"):
    """HandlesModels with the real SD2-depth architecture and random weights (CPU)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from core.ml.handles.models import HandlesModels, dtype_from_name

    dt = dtype_from_name(dtype_name)
    t0 = time.monotonic()
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    for k, m in enumerate((unet, vae, text)):
        _random_init_(m, k)
        m.requires_grad_(False).eval().to(dtype=dt)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    _write_tokenizer(tmp)
    tok = CLIPTokenizer.from_pretrained(tmp)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=0)
    params = sum(p.numel() for m in (unet, vae, text) for p in m.parameters())
    print(
        f"built SD2-depth UNet/VAE/OpenCLIP-H text encoder with random weights: {params / 1e6:.0f} M parameters ({dtype_name}) in {time.monotonic() - t0:.0f} s"
    )
    return HandlesModels(
        path=tmp, model_id="sd2-depth-random", unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sched, device=torch.device("cpu"), dtype=dt
    )


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


def run_resolution(engine, side: int, quick: bool) -> dict:
    import torch

    from core.geometry.warp import feature_correspondence
    from core.geometry.warp import plan as warp_plan
    from core.ml.handles.presets import PRESETS
    from core.ml.handles.renderer import soft_region
    from core.ml.handles.warping import BlockWarp
    from core.transform import Transform3D

    res: dict = {"side": side, "stages": {}, "measured": {}}
    scene = synthetic_scene(side)
    scene.objects[0].transform = Transform3D(translation=(0.35, 0.0, 0.0))
    plan = warp_plan(scene)
    totals_t: dict[str, float] = {}
    totals_n: dict[str, int] = {}

    def account():
        for k, v in engine.counts.items():
            totals_n[k] = totals_n.get(k, 0) + v
            totals_t[k] = totals_t.get(k, 0.0) + engine.timings[k]
        engine.counts.clear()
        engine.timings.clear()

    # VAE / text
    t0 = time.perf_counter()
    engine.encode_image(scene.photo)
    res["stages"]["vae_encode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.encode_text(scene.prompt)
    res["stages"]["text_encode"] = time.perf_counter() - t0

    # identities (shortened): exact, 2 steps; null-text, 1 step with the full 5 inner steps
    short_exact = replace(PRESETS["default"], steps=1 if quick else 2, guided_until=1.0)
    t0 = time.perf_counter()
    ident = engine.build_identity(scene.photo, scene.depth, scene.prompt, short_exact, key="bench")
    res["measured"]["identity_exact"] = (time.perf_counter() - t0, short_exact.steps, dict(engine.counts))
    assert dict(engine.counts) == short_exact.expected_unet_evals(identity=True), engine.counts
    account()
    short_null = replace(PRESETS["reference"], steps=1, null_epsilon=0.0, guided_until=1.0)
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

    # shortened edits: 1 step with the per-step work of the full schedule (step 0 of each preset)
    one = replace(short_exact, steps=1)
    ident1 = replace(
        ident,
        timesteps=ident.timesteps[:1],
        trajectory=ident.trajectory[:2],
        deltas=None if ident.deltas is None else ident.deltas[:1],
        activations={b: a[:1] for b, a in ident.activations.items()},
    )
    variants = {
        "reference": replace(PRESETS["reference"], steps=1, guided_until=1.0),
        "default": replace(PRESETS["default"], steps=1, guided_until=1.0),
        "fast": replace(PRESETS["fast"], steps=1, inject_until=1.0),
        "plain": replace(PRESETS["default"], steps=1, guided_until=0.0, grad_steps=0, inject_until=0.0),
    }
    del one
    for name, s in variants.items():
        t0 = time.perf_counter()
        engine.denoise(ident1, depth, s, warps=warps, blend_alpha=blend if s.background_blend else None)
        wall = time.perf_counter() - t0
        res["measured"][f"edit_{name}"] = (wall, 1, dict(engine.counts))
        assert dict(engine.counts) == s.expected_unet_evals(steps=1), (name, engine.counts)
        unet_t = sum(engine.timings.values())
        res.setdefault("overhead_per_step", {})[name] = max(0.0, wall - unet_t)
        account()
    t0 = time.perf_counter()
    engine.decode_latent(ident.trajectory[-1][None])
    res["stages"]["vae_decode"] = time.perf_counter() - t0
    res["mean_eval_s"] = {k: totals_t[k] / totals_n[k] for k in totals_n}
    res["peak_gb"] = peak_rss_gb()
    return res


def full_estimates(res: dict) -> dict:
    from core.ml.handles.presets import PRESETS

    m = res["mean_eval_s"]
    side = res["side"]
    out = {}

    def cost(counts):
        return sum(m[k] * v for k, v in counts.items())

    plain = replace(PRESETS["default"], guided_until=0.0, grad_steps=0, inject_until=0.0)
    for name, s in (("reference", PRESETS["reference"]), ("default", PRESETS["default"]), ("fast", PRESETS["fast"]), ("plain", plain)):
        ev = s.expected_unet_evals()
        over = res["overhead_per_step"]["plain" if name == "plain" else name] * s.steps
        out[f"edit_{name}"] = (cost(ev) + over + res["stages"]["vae_decode"], ev, s.steps)
    # plain sampling at the reference's 50 steps too (the reference's own sampling cost)
    out["edit_plain50"] = (cost({"cfg": 50}) + res["overhead_per_step"]["plain"] * 50 + res["stages"]["vae_decode"], {"cfg": 50}, 50)
    for name, s in (("identity_exact", PRESETS["default"]), ("identity_nulltext", PRESETS["reference"])):
        ev = s.expected_unet_evals(identity=True)
        out[name] = (cost(ev) + res["stages"]["vae_encode"] + 2 * res["stages"]["text_encode"], ev, s.steps)
    # stored identity size of the full schedules
    for name, s in (("identity_mb_default", PRESETS["default"]), ("identity_mb_reference", PRESETS["reference"])):
        n_cap = s.n_captured()
        latent = res["latent_bytes_per_step"] * s.steps
        out[name] = (res["act_bytes_per_step"] * n_cap + latent + 2 * 77 * 1024 * 4) / 1e6 * (side / side)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 256 px only, shortest schedules")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="sides in pixels (default 256 512)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    sizes = args.sizes or ([256] if args.quick else [256, 512])
    print(
        f"Diffusion Handles render benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision}"
    )
    from core.ml.handles.engine import HandlesEngine

    engine = HandlesEngine(build_models(args.precision))
    print(f"peak RSS after building the models: {peak_rss_gb():.2f} GB")
    results = []
    for side in sizes:
        t0 = time.monotonic()
        d = bench_depth(side)
        res = run_resolution(engine, side, args.quick)
        res["stages"]["depth"] = d
        res["wall"] = time.monotonic() - t0
        res["full"] = full_estimates(res)
        results.append(res)
        print_table(res)
    print_targets(results)
    return 0


def print_table(res: dict) -> None:
    side = res["side"]
    st = res["stages"]
    print(f"\n=== {side} x {side} px  (benchmark wall time {res['wall']:.0f} s) ===")
    dep = f"{st['depth']:.2f} s" if st.get("depth") is not None else "n/a"
    print(
        f"stages (measured): depth (Depth Anything V2 Small cfg) {dep} | VAE encode {st['vae_encode']:.2f} s | "
        f"VAE decode {st['vae_decode']:.2f} s | text encode {st['text_encode']:.2f} s"
    )
    print("mean seconds per UNet evaluation (measured): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(res["mean_eval_s"].items())))
    print("MEASURED shortened runs (steps, seconds, UNet evaluations):")
    for k, (sec, steps, ev) in res["measured"].items():
        print(f"  {k:<20} {steps} step(s) {sec:8.1f} s  {ev}")
    print("SCALED to the full schedules (counted evaluations x measured means + measured overheads):")
    print(f"  {'stage':<20} {'steps':>5} {'seconds':>9} {'forward':>8} {'cfg(x2)':>8} {'fwd+bwd':>8}")
    for k, v in res["full"].items():
        if k.startswith("identity_mb"):
            continue
        sec, ev, steps = v
        print(f"  {k:<20} {steps:>5} {sec:9.1f} {ev.get('forward', 0):>8} {ev.get('cfg', 0):>8} {ev.get('forward_backward', 0):>8}")
    print(
        f"  stored identity: default {res['full']['identity_mb_default']:.0f} MB, reference {res['full']['identity_mb_reference']:.0f} MB "
        f"(activations {res['act_bytes_per_step'] / 1e6:.1f} MB per captured step)"
    )
    print(f"peak resident memory so far: {res['peak_gb']:.2f} GB")


def print_targets(results: list[dict]) -> None:
    print("\n=== targets ===")
    for res in results:
        f = res["full"]
        side = res["side"]
        r1 = f["edit_default"][0] / f["edit_reference"][0]
        r2 = f["edit_fast"][0] / f["edit_plain"][0]
        r3 = f["identity_exact"][0] / f["identity_nulltext"][0]
        rows = [
            (f"default / reference per edit @{side}", r1, TARGETS["default_vs_reference"], "<="),
            (f"fast / plain sampling (same steps) @{side}", r2, TARGETS["fast_vs_plain"], "<="),
            (f"identity / null-text identity @{side}", r3, TARGETS["identity_vs_nulltext"], "<="),
        ]
        if side == 512:
            rows += [
                ("stored identity MB (reference, 50 steps) @512", f["identity_mb_reference"], TARGETS["identity_mb_512"], "<="),
                ("peak resident GB @512", res["peak_gb"], TARGETS["peak_gb_512"], "<="),
            ]
        for label, v, target, op in rows:
            ok = v <= target
            print(f"  {label:<48} {v:8.3f}  target {op} {target:<6} {'OK' if ok else 'MISSED'}")
    print("(edit times at the full schedules are scaled from the measured shortened runs; see above)")


if __name__ == "__main__":
    sys.exit(main())
