"""Tiny random-weight models of the ControlNet backends, saved in their real layouts.

``build_tiny_sd15_controlnet``: an SD 1.x folder (UNet2DConditionModel with 4 input channels and
SD 1.5's block types, AutoencoderKL, CLIPTextModel, CLIPTokenizer, scheduler) plus a separate
ControlNetModel folder (``config.json`` + weights at its root, as
``lllyasviel/control_v11f1p_sd15_depth``), or the ControlNet inside the model folder as
``controlnet/`` (what StableDiffusionControlNetPipeline.save_pretrained writes).

``build_tiny_sdxl_controlnet``: an SDXL folder (a UNet with ``addition_embed_type="text_time"``
and three up blocks, CLIPTextModel + CLIPTextModelWithProjection, two tokenizers) plus a ControlNet
with SDXL's added conditioning.

``write_tiny_lora``: a LoRA for a UNet, with non-zero weights, in diffusers' file format
(``pytorch_lora_weights.safetensors`` with ``unet.`` keys, as LCM-LoRA ships).

Everything is written with ``save_pretrained`` so the engine's real loading code reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_sd import vocab_size, write_scheduler, write_tokenizer

#: cross-attention width of the tiny SD 1.5 (its text encoder's hidden size)
SD15_HIDDEN = 32
#: SDXL: the two text encoders' hidden sizes (concatenated: the UNet's cross-attention width)
XL_HIDDEN = (16, 24)
XL_PROJECTION = 24


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
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


def _text(hidden: int, with_projection: bool = False, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=vocab_size(),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection or hidden,
        hidden_act="gelu",
        bos_token_id=vocab_size() - 2,
        eos_token_id=vocab_size() - 1,
        pad_token_id=vocab_size() - 1,
    )
    return CLIPTextModelWithProjection(cfg) if with_projection else CLIPTextModel(cfg)


def _model_index(folder: Path, cls: str, components: dict) -> None:
    (folder / "model_index.json").write_text(json.dumps({"_class_name": cls, "_diffusers_version": "0.42.1", **components}), encoding="utf-8")


def sd15_components(seed: int = 0):
    """(unet, controlnet, vae, text_encoder) of the tiny SD 1.5 + depth ControlNet."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(seed)
    common = dict(
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        cross_attention_dim=SD15_HIDDEN,
        attention_head_dim=(2, 4, 4, 4),
        norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    )
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), **common
    )
    # a factor-8 conditioning embedding (three stride-2 convolutions), as SD 1.5's depth ControlNet
    cn = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(4, 8, 8, 16), **common)
    # ControlNets are initialised with zero output convolutions (no effect); give them weights
    with torch.no_grad():
        for p in list(cn.controlnet_down_blocks.parameters()) + list(cn.controlnet_mid_block.parameters()):
            p.normal_(0.0, 0.2)
    return unet, cn, _vae(), _text(SD15_HIDDEN)


def build_tiny_sd15_controlnet(folder: Path, seed: int = 0, inside: bool = False) -> tuple[Path, Path | None]:
    """Write the tiny SD 1.5 to ``folder/sd15`` and its depth ControlNet to ``folder/controlnet``
    (or, with ``inside``, into ``folder/sd15/controlnet``) -> (model folder, ControlNet folder or None)."""
    folder = Path(folder)
    model = folder / "sd15"
    unet, cn, vae, text = sd15_components(seed)
    unet.save_pretrained(model / "unet")
    vae.save_pretrained(model / "vae")
    text.save_pretrained(model / "text_encoder")
    write_tokenizer(model / "tokenizer")
    write_scheduler(model)
    comps = {
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
    }
    if inside:
        cn.save_pretrained(model / "controlnet")
        _model_index(model, "StableDiffusionControlNetPipeline", {**comps, "controlnet": ["diffusers", "ControlNetModel"]})
        return model, None
    cn.save_pretrained(folder / "controlnet")
    _model_index(model, "StableDiffusionPipeline", comps)
    return model, folder / "controlnet"


def sdxl_components(seed: int = 0):
    """(unet, controlnet, vae, text_encoder, text_encoder_2) of the tiny SDXL + depth ControlNet."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(seed)
    width = sum(XL_HIDDEN)
    time_dim = 4
    common = dict(
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        cross_attention_dim=width,
        attention_head_dim=(2, 4, 4),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=time_dim * 6 + XL_PROJECTION,
        transformer_layers_per_block=(1, 1, 1),
        use_linear_projection=True,
    )
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), **common
    )
    cn = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(4, 8, 8, 16), **common)
    with torch.no_grad():
        for p in list(cn.controlnet_down_blocks.parameters()) + list(cn.controlnet_mid_block.parameters()):
            p.normal_(0.0, 0.2)
    return unet, cn, _vae(), _text(XL_HIDDEN[0]), _text(XL_HIDDEN[1], with_projection=True, projection=XL_PROJECTION)


def build_tiny_sdxl_controlnet(folder: Path, seed: int = 0, inside: bool = False) -> tuple[Path, Path | None]:
    """Write the tiny SDXL to ``folder/sdxl`` and its depth ControlNet to ``folder/controlnet-xl``
    (or, with ``inside``, into ``folder/sdxl/controlnet``)."""
    folder = Path(folder)
    model = folder / "sdxl"
    unet, cn, vae, text, text2 = sdxl_components(seed)
    unet.save_pretrained(model / "unet")
    vae.save_pretrained(model / "vae")
    text.save_pretrained(model / "text_encoder")
    text2.save_pretrained(model / "text_encoder_2")
    write_tokenizer(model / "tokenizer")
    write_tokenizer(model / "tokenizer_2")
    write_scheduler(model)
    _model_index(
        model,
        "StableDiffusionXLPipeline",
        {
            "force_zeros_for_empty_prompt": True,
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    if inside:
        cn.save_pretrained(model / "controlnet")
        return model, None
    cn.save_pretrained(folder / "controlnet-xl")
    return model, folder / "controlnet-xl"


def write_tiny_lora(unet_folder: Path, out: Path, rank: int = 2, seed: int = 0, std: float = 0.3) -> Path:
    """A LoRA (rank ``rank``, random non-zero weights) for the UNet saved in ``unet_folder``,
    written as ``out/pytorch_lora_weights.safetensors`` -> that file."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(unet_folder)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=True))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    state = get_peft_model_state_dict(unet)
    out = Path(out)
    StableDiffusionLoraLoaderMixin.save_lora_weights(out, unet_lora_layers=state)
    return out / "pytorch_lora_weights.safetensors"
