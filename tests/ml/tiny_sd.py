"""A tiny random-weight depth-conditioned Stable Diffusion, saved in the real pipeline layout.

The very classes of ``stabilityai/stable-diffusion-2-depth`` (UNet2DConditionModel with 4 latent +
1 depth input channels and the SD2 block layout, AutoencoderKL with a factor-8 latent,
CLIPTextModel, CLIPTokenizer, a scheduler config) at toy widths, written with ``save_pretrained``
plus a ``model_index.json`` of StableDiffusionDepth2ImgPipeline, so that the engine's real loading
code is what the tests exercise. The tokenizer is built from a small byte-level vocab.json /
merges.txt written here (transformers 5 reads them through ``CLIPTokenizer.from_pretrained``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HIDDEN = 32


def write_tokenizer(folder: Path) -> None:
    """A byte-level CLIP tokenizer with a few merges (core.ml.bpe writes the files)."""
    from core.ml.bpe import write_clip_tokenizer

    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "r</w>"), ("a", "n"), ("an", "d</w>")]
    assert write_clip_tokenizer(folder, merges=merges, max_length=77) == vocab_size()


def write_scheduler(folder: Path) -> None:
    """``folder/scheduler/scheduler_config.json`` as SD's pipelines ship it (PNDM, SD's betas)."""
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "PNDMScheduler",
                "beta_start": 0.00085,
                "beta_end": 0.012,
                "beta_schedule": "scaled_linear",
                "num_train_timesteps": 1000,
                "prediction_type": "epsilon",
                "set_alpha_to_one": False,
                "skip_prk_steps": True,
                "steps_offset": 1,
            }
        ),
        encoding="utf-8",
    )


def vocab_size() -> int:
    return 256 * 2 + 6 + 2


def build_components(seed: int = 0):
    """(unet, vae, text_encoder) with random weights (seeded)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=5,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=HIDDEN,
        attention_head_dim=(2, 4, 4, 4),
        use_linear_projection=True,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size(),
            hidden_size=HIDDEN,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=HIDDEN,
            hidden_act="gelu",
            bos_token_id=vocab_size() - 2,
            eos_token_id=vocab_size() - 1,
            pad_token_id=vocab_size() - 1,
        )
    )
    return unet, vae, text


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Write the tiny model to ``folder`` (created) and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet, vae, text = build_components(seed)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text.save_pretrained(folder / "text_encoder")
    write_tokenizer(folder / "tokenizer")
    write_scheduler(folder)
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionDepth2ImgPipeline",
                "_diffusers_version": "0.42.1",
                "depth_estimator": [None, None],
                "feature_extractor": [None, None],
                "scheduler": ["diffusers", "PNDMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            }
        ),
        encoding="utf-8",
    )
    return folder


def synthetic_photo(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo uint8 HxWx3, depth float32 HxW metres, object mask bool HxW): a box in front of a
    slanted floor with smooth texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    photo = np.stack(
        [
            127 + 60 * np.sin(x / 7.0 + 0.3) * np.cos(y / 9.0),
            127 + 60 * np.cos(x / 11.0) * np.sin(y / 5.0 + 1.0),
            127 + 40 * np.sin((x + y) / 13.0),
        ],
        axis=-1,
    )
    photo += rng.normal(0, 6, photo.shape)
    depth = 3.0 + 2.0 * (1.0 - y / height)
    mask = np.zeros((height, width), bool)
    r0, r1 = height // 3, height // 3 + height // 4 + 4
    c0, c1 = width // 3, width // 3 + width // 5 + 4
    mask[r0:r1, c0:c1] = True
    photo[mask] = [200, 40, 40]
    depth[mask] = 2.0
    return np.clip(photo, 0, 255).astype(np.uint8), depth.astype(np.float32), mask


def synthetic_scene(width: int = 128, height: int = 64, seed: int = 0, prompt: str = "a red box on the floor"):
    """A :class:`core.scene.Scene` of :func:`synthetic_photo` with its box as object "box"."""
    from core.camera import Camera
    from core.scene import Scene, SceneObject

    photo, depth, mask = synthetic_photo(width, height, seed)
    return Scene(photo=photo, depth=depth, camera=Camera(width, height), prompt=prompt, objects=[SceneObject("box", mask)], name="synthetic")
