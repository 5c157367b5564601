"""`make train-world` at toy size: it trains, exports a model the engine loads, reruns to the same
bits from the same seed, and an interrupted run resumes to the run it would have been."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.world import Config, train  # noqa: E402

TOY = Config(
    n_train=6,
    width=128,
    height=64,
    vae_steps=3,
    vae_batch=2,
    vae_crop=32,
    unet_steps=4,
    unet_batch=2,
    warmup=2,
    ckpt_every=2,
    eval_scenes=1,
    eval_steps=2,
)


def _weights(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.safetensors"))}


def test_training_is_reproducible_and_resumable(tmp_path):
    torch.set_num_threads(1)
    q1 = train(TOY, tmp_path / "a", tmp_path / "a-model")
    assert q1 is not None and set(q1) >= {"vae_round_trip_psnr", "unguided_sample_psnr"}
    m1 = _weights(tmp_path / "a-model")
    assert set(m1) == {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"}
    card = (tmp_path / "a-model" / "README.md").read_text()
    assert "knows only its world" in card and "Licence" in card
    # the exported folder is what the engine's loader expects
    from core.ml.handles.models import load_models

    m = load_models(tmp_path / "a-model", device="cpu")
    assert m.vae_factor == 4 and int(m.unet.config.in_channels) == 5 and "latent_rgb" in m.extras
    sched = json.loads((tmp_path / "a-model" / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["beta_start"], sched["beta_end"], sched["beta_schedule"]) == (0.00085, 0.012, "scaled_linear")

    # the same seed gives the same bits; an interrupted run resumes to the same run
    assert train(TOY, tmp_path / "b", tmp_path / "b-model", stop_after=1) is None
    assert train(TOY, tmp_path / "b", tmp_path / "b-model", stop_after=1) is None
    train(TOY, tmp_path / "b", tmp_path / "b-model")
    assert _weights(tmp_path / "b-model") == m1
    # another seed gives another model
    train(Config(**{**TOY.__dict__, "seed": 1}), tmp_path / "c", tmp_path / "c-model")
    assert _weights(tmp_path / "c-model")["unet/diffusion_pytorch_model.safetensors"] != m1["unet/diffusion_pytorch_model.safetensors"]


def test_crop_training_runs_and_captions_only_what_a_crop_shows(tmp_path):
    from core.world import FLOOR_PHRASE, random_layout
    from training.world import crop_caption

    lay = random_layout(5)
    assert crop_caption(lay, 0) == FLOOR_PHRASE
    assert crop_caption(lay, (1 << len(lay.objects)) - 1) == lay.caption()
    one = crop_caption(lay, 1)
    assert lay.objects[0].phrase() in one and all(o.phrase() not in one for o in lay.objects[1:] if o.phrase() != lay.objects[0].phrase())
    torch.set_num_threads(1)
    q = train(Config(**{**TOY.__dict__, "crop": 8, "full_every": 2}), tmp_path / "w", tmp_path / "m")
    assert q is not None and q["unguided_sample_psnr"] > 0


def test_zero_terminal_snr_training_is_what_the_loader_samples(tmp_path):
    """With ``zero_snr`` the model folder's scheduler is SD2's betas rescaled to a zero terminal
    SNR with v-prediction and trailing steps, and the loader builds exactly the schedule the
    training used: sampling starts at t = 999, where no signal is left."""
    from core.ml.handles.engine import HandlesEngine
    from core.ml.handles.models import load_models
    from training.world import alphas_cumprod

    torch.set_num_threads(1)
    cfg = Config(**{**TOY.__dict__, "zero_snr": True, "attention_heads": 2, "text_pooled": True, "film": True})
    q = train(cfg, tmp_path / "w", tmp_path / "m")
    assert q is not None and q["unguided_sample_psnr"] > 0
    engine = HandlesEngine(load_models(tmp_path / "m", "cpu", "fp32"))
    assert engine.prediction_type == "v_prediction"
    assert float(engine.alphas_cumprod[-1]) == 0.0
    assert torch.equal(engine.alphas_cumprod.float(), alphas_cumprod(cfg))
    sd2 = alphas_cumprod(Config(zero_snr=False))
    assert float(sd2[-1]) > 0.004  # SD2's own schedule keeps signal at t = 999
    assert engine.timesteps(25)[0] == 999


def test_the_training_data_are_the_same_bits_with_one_worker_or_several(tmp_path):
    """``make_data`` shares the layouts among worker processes; each layout is ray cast alone from
    its seed, so the data (and with them the whole run) do not depend on the number of workers."""
    import numpy as np

    from core.world import SAMPLE_LAYOUT, random_layout, render_layout
    from training.world import make_data

    cfg = Config(**{**TOY.__dict__, "n_train": 150})  # two chunks of layouts
    one = np.load(make_data(cfg, tmp_path / "one", workers=1))
    two = np.load(make_data(cfg, tmp_path / "two", workers=2))
    assert len(one["photos"]) == 151
    for key in ("photos", "dconds", "omasks", "objbits", "captions"):
        assert np.array_equal(one[key], two[key]), key
    # the data's order: the sample first, then seeds 0, 1, ...
    assert np.array_equal(one["photos"][0], render_layout(SAMPLE_LAYOUT, 128, 64).photo)
    assert np.array_equal(two["photos"][150], render_layout(random_layout(149), 128, 64).photo)
    assert str(two["captions"][150]) == random_layout(149).caption()
