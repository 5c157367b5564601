"""Builders of tiny random-weight models of the real classes, saved with ``save_pretrained``.

They let the tests exercise the real loading path (folders on disk, ``local_files_only``) in
seconds: a Depth Anything V2 (``DepthAnythingForDepthEstimation`` on a two-layer Dinov2 backbone)
with its DPT image processor, and a SAM (``SamModel``) with its ``SamProcessor``. Also a fake
Hugging Face hub cache layout and a fake renderer folder (configs and valid safetensors files, no
real UNet) for the store's checks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np


def build_tiny_depth_anything(folder: Path, metric: bool = False, max_depth: int = 20, seed: int = 0, size: int = 56) -> Path:
    """A tiny Depth Anything V2 in ``folder`` (config.json, model.safetensors, preprocessor_config.json).

    The head's last bias is raised so that the random network's output is positive and varies
    over the image (a random init leaves it almost all zero after the final ReLU).
    """
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    backbone = Dinov2Config(
        image_size=size,
        patch_size=14,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        out_indices=[1, 2],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=16,
        reassemble_factors=[2, 1],
        neck_hidden_sizes=[8, 16],
        fusion_hidden_size=8,
        head_hidden_size=8,
        depth_estimation_type="metric" if metric else "relative",
        max_depth=int(max_depth) if metric else 1,
    )
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():
        for module in (model.neck, model.head):
            for name, p in module.named_parameters():
                if name.endswith("weight") and p.ndim == 4:
                    p.mul_(4.0)
        model.head.conv3.bias.fill_(0.05 if metric else 0.5)
    processor = DPTImageProcessorPil(size={"height": size, "width": size}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_sam(folder: Path, seed: int = 0, image_size: int = 128, hub_layout: bool = True) -> Path:
    """A tiny SAM (ViT with two layers, 8x8 embedding grid) and its processor in ``folder``.

    ``hub_layout``: the processor saved as ``preprocessor_config.json`` (as in facebook/sam-vit-base);
    else as ``SamProcessor.save_pretrained`` writes it today (``processor_config.json``).
    """
    import torch
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamProcessor, SamPromptEncoderConfig, SamVisionConfig
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    vision = SamVisionConfig(
        hidden_size=32,
        output_channels=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=16,
        mlp_dim=64,
        global_attn_indexes=[1],
        window_size=4,
        num_pos_feats=8,
        initializer_range=0.02,
    )
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=image_size, patch_size=16, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16)
    torch.manual_seed(seed)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).eval()
    image_processor = SamImageProcessorPil(
        size={"longest_edge": image_size},
        pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": image_size // 4},
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if hub_layout:
        image_processor.save_pretrained(folder)
    else:
        SamProcessor(image_processor=image_processor).save_pretrained(folder)
    return folder


def write_safetensors(path: Path, n_values: int = 4, seed: int = 0) -> Path:
    """A small valid safetensors file (one float32 tensor), written with the safetensors library."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file({"weight": rng.standard_normal(n_values).astype(np.float32)}, str(path))
    return path


def build_fake_renderer(folder: Path, in_channels: int = 5, kind: str = "sd2-depth", fp16: bool = False, controlnet: bool = False) -> Path:
    """A folder in a Stable Diffusion pipeline layout with small configs and valid (tiny)
    safetensors weights: enough for the store's layout and integrity checks (not loadable as a UNet).

    ``kind``: ``sd2-depth`` (StableDiffusionDepth2ImgPipeline), ``sd15`` (StableDiffusionPipeline, a
    4-channel UNet) or ``sdxl`` (StableDiffusionXLPipeline: text_encoder_2, tokenizer_2, SDXL's added
    time conditioning); ``fp16``: only fp16 variant weights (``*.fp16.safetensors``, what the
    catalog's fetch commands download); ``controlnet``: a ``controlnet/`` of its own (the
    ControlNet pipelines' ``save_pretrained`` layout)."""
    cls = {"sd2-depth": "StableDiffusionDepth2ImgPipeline", "sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}[kind]
    if controlnet:
        cls = cls.replace("Pipeline", "ControlNetPipeline")
    folder.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": cls,
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    unet_cfg: dict = {"_class_name": "UNet2DConditionModel", "in_channels": in_channels}
    parts = [("text_encoder", {"model_type": "clip_text_model"}, "model")]
    tokenizers = ["tokenizer"]
    if kind == "sdxl":
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"], tokenizer_2=["transformers", "CLIPTokenizer"])
        unet_cfg["addition_embed_type"] = "text_time"
        parts.append(("text_encoder_2", {"model_type": "clip_text_model"}, "model"))
        tokenizers.append("tokenizer_2")
    parts += [("unet", unet_cfg, "diffusion_pytorch_model"), ("vae", {"_class_name": "AutoencoderKL"}, "diffusion_pytorch_model")]
    if controlnet:
        index["controlnet"] = ["diffusers", "ControlNetModel"]
        build_fake_controlnet(folder / "controlnet", fp16=fp16)
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler"}))
    for tok in tokenizers:
        (folder / tok).mkdir(exist_ok=True)
        (folder / tok / "vocab.json").write_text(json.dumps({"a": 0, "</w>": 1}))
        (folder / tok / "merges.txt").write_text("#version: 0.2\n")
    for part, cfg, stem in parts:
        (folder / part).mkdir(exist_ok=True)
        (folder / part / "config.json").write_text(json.dumps(cfg))
        write_safetensors(folder / part / f"{stem}{'.fp16' if fp16 else ''}.safetensors")
    return folder


def build_fake_controlnet(folder: Path, fp16: bool = True) -> Path:
    """A ControlNetModel folder (config.json, a valid tiny safetensors file; fp16 variant name by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel", "in_channels": 4, "conditioning_channels": 3}))
    write_safetensors(folder / f"diffusion_pytorch_model{'.fp16' if fp16 else ''}.safetensors")
    return folder


def build_fake_lora(folder: Path, weight_name: str = "pytorch_lora_weights.safetensors") -> Path:
    """A LoRA folder holding one valid tiny safetensors file named ``weight_name``; returns the folder."""
    write_safetensors(folder / weight_name, n_values=8)
    return folder


def install_in_hub_cache(src: Path, hub: Path, repo: str, commit: str = "abc", ref: str | None = "main") -> Path:
    """Lay ``src``'s files out as the hub does: ``models--org--name/blobs`` (content), ``snapshots/<commit>/``
    (relative symbolic links into blobs), ``refs/<ref>`` (the commit). Returns the snapshot folder."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    blobs = repo_dir / "blobs"
    snap = repo_dir / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted(p for p in src.rglob("*") if p.is_file())):
        rel = f.relative_to(src)
        blob = blobs / f"{commit}-{i:04d}"
        shutil.copyfile(f, blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    return snap
