"""The three backends on tiny random-weight models of their real classes (issue 9 part 5).

SD2-depth (the existing tiny model), SD 1.5 + depth ControlNet and SDXL + depth ControlNet
(tests/ml/tiny_backends.py) are saved with ``save_pretrained`` and loaded through the real loader;
renders go through :class:`DiffusionHandlesRenderer` and ``handles-studio render``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tiny_backends  # noqa: E402
from tiny_sd import synthetic_photo, synthetic_scene  # noqa: E402

from core.errors import ModelError  # noqa: E402
from core.jobs import RenderRequest  # noqa: E402
from core.transform import Transform3D  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_sd_dir) -> dict:
    """backend -> (model folder, separate ControlNet folder or None)."""
    base = tmp_path_factory.mktemp("backends")
    sd15, cn15 = tiny_backends.build_tiny_sd15_controlnet(base / "a")
    sdxl, cnxl = tiny_backends.build_tiny_sdxl_controlnet(base / "b")
    return {"sd2-depth": (Path(tiny_sd_dir), None), "sd15-controlnet": (sd15, cn15), "sdxl-controlnet": (sdxl, cnxl)}


@pytest.fixture(scope="module")
def inside_folders(tmp_path_factory) -> dict:
    """backend -> a pipeline folder that holds its ControlNet as controlnet/ (no separate folder)."""
    base = tmp_path_factory.mktemp("backends-inside")
    sd15, _ = tiny_backends.build_tiny_sd15_controlnet(base / "a", inside=True)
    sdxl, _ = tiny_backends.build_tiny_sdxl_controlnet(base / "b", inside=True)
    return {"sd15-controlnet": sd15, "sdxl-controlnet": sdxl}


def _load(folders, backend, dtype=torch.float32):
    from core.ml.handles.models import _load_uncached

    folder, cn = folders[backend]
    return _load_uncached(folder, str(folder), torch.device("cpu"), dtype, cn)


def _engine(folders, backend, dtype=torch.float32):
    from core.ml.handles.engine import HandlesEngine

    return HandlesEngine(_load(folders, backend, dtype))


BACKENDS = ("sd2-depth", "sd15-controlnet", "sdxl-controlnet")


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_loads_with_its_classes(folders, backend):
    m = _load(folders, backend)
    assert m.backend == backend
    assert (m.controlnet is None) == (backend == "sd2-depth")
    assert (m.text_encoder_2 is None) == (backend != "sdxl-controlnet")
    assert type(m.unet).__name__ == "UNet2DConditionModel"
    if backend != "sd2-depth":
        assert type(m.controlnet).__name__ == "ControlNetModel"
    if backend == "sdxl-controlnet":
        assert type(m.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
        assert m.unet.config.addition_embed_type == "text_time"
        assert len(m.unet.up_blocks) == 3


def test_a_controlnet_base_without_its_controlnet_is_refused_in_one_line(folders):
    from core.ml.handles.models import _load_uncached

    folder, _cn = folders["sd15-controlnet"]
    with pytest.raises(ModelError) as exc:
        _load_uncached(folder, "sd15", torch.device("cpu"), torch.float32, None)
    msg = str(exc.value)
    assert "\n" not in msg and "not depth-conditioned" in msg and "ControlNet" in msg


def test_a_controlnet_of_another_base_is_refused(folders):
    from core.ml.handles.models import _load_uncached

    folder, _ = folders["sd15-controlnet"]
    _, cn_xl = folders["sdxl-controlnet"]
    with pytest.raises(ModelError) as exc:
        _load_uncached(folder, "sd15", torch.device("cpu"), torch.float32, cn_xl)
    assert "does not fit" in str(exc.value)


def test_depth_condition_follows_the_backend(folders):
    photo, depth, _ = synthetic_photo(128, 64)
    e2 = _engine(folders, "sd2-depth")
    c2 = e2.depth_condition(depth)
    assert tuple(c2.shape) == (1, 1, 8, 16) and float(c2.min()) == pytest.approx(-1.0) and float(c2.max()) == pytest.approx(1.0)
    e15 = _engine(folders, "sd15-controlnet")
    c15 = e15.depth_condition(depth)
    # the ControlNet's depth image: pixel size, 3 equal channels, [0, 1], near (small depth) bright
    assert tuple(c15.shape) == (1, 3, 64, 128)
    assert float(c15.min()) == pytest.approx(0.0, abs=1e-6) and float(c15.max()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(c15[:, 0], c15[:, 2])
    near = np.unravel_index(np.argmin(depth), depth.shape)
    far = np.unravel_index(np.argmax(depth), depth.shape)
    assert float(c15[0, 0][near]) > float(c15[0, 0][far])


def test_sdxl_text_embedding_packs_the_pooled_embedding_and_zeros_the_empty_prompt(folders):
    e = _engine(folders, "sdxl-controlnet")
    emb = e.encode_text("a red box")
    width = sum(tiny_backends.XL_HIDDEN)
    assert tuple(emb.shape) == (1, 78, width)
    # the pooled row is the second encoder's projected text embedding
    tok, enc = e.m.tokenizer_2, e.m.text_encoder_2
    ids = tok(["a red box"], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    pooled = enc(ids).text_embeds
    assert torch.allclose(emb[0, -1, : tiny_backends.XL_PROJECTION], pooled[0], atol=1e-6)
    assert float(emb[0, -1, tiny_backends.XL_PROJECTION :].abs().max()) == 0.0
    assert float(e.encode_text("").abs().max()) == 0.0


def test_sdxl_names_the_same_decoder_blocks(folders):
    from core.ml.handles.presets import preset

    e = _engine(folders, "sdxl-controlnet")
    s = e.model_settings(preset("reference"))
    assert s.blocks == (1, 2)
    assert all(set(c) <= {1, 2} for c in s.block_cycle)
    assert _engine(folders, "sd15-controlnet").model_settings(preset("reference")).blocks == (2, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_replay_is_exact_and_counts_the_controlnet_in_every_evaluation(folders, backend):
    from core.ml.handles.presets import preset

    e = _engine(folders, backend)
    photo, depth, _ = synthetic_photo(128, 64)
    s = e.model_settings(replace(preset("default"), steps=STEPS))
    calls = {"n": 0}
    handle = None
    if e.m.controlnet is not None:
        handle = e.m.controlnet.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        ident = e.build_identity(photo, depth, "a red box", s, key="k")
    finally:
        if handle is not None:
            handle.remove()
    assert dict(e.counts) == s.expected_unet_evals(identity=True)
    if e.m.controlnet is not None:
        assert calls["n"] == sum(e.counts.values())
    z = e.reconstruct(ident, s)
    assert torch.equal(z, ident.trajectory[-1][None].to(z.dtype))
    shapes = {b: tuple(a.shape[-2:]) for b, a in ident.activations.items()}
    assert shapes == {b: (8, 16) for b in s.blocks}


def _request(scene, folder, controlnet, preset_name="default", dx=0.4, **over) -> RenderRequest:
    from core.ml.handles.presets import preset

    over.setdefault("preview_every", 0)
    s = preset(preset_name, over)
    steps = int(over.get("steps", STEPS))
    return RenderRequest(
        scene_id=scene.content_id(),
        transforms={scene.object("box").id: Transform3D(translation=(dx, 0.0, 0.0)).to_dict()},
        prompt=scene.prompt,
        steps=steps,
        preset=preset_name,
        resolution=max(scene.size),
        device="cpu",
        model="tiny",
        model_path=str(folder),
        controlnet_path=str(controlnet or ""),
        handles=replace(s, steps=steps, resolution=max(scene.size)),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_guided_render_changes_the_moved_region_only(folders, backend):
    from core.geometry.warp import plan
    from core.io import resize_mask
    from core.ml.handles.renderer import DiffusionHandlesRenderer, soft_region
    from core.render import scene_for_request

    scene = synthetic_scene(128, 64)
    folder, cn = folders[backend]
    req = _request(scene, folder, cn)
    result = DiffusionHandlesRenderer().render(scene, req)
    assert result.info["backend"] == backend
    assert result.info["unet_evals"].get("forward_backward", 0) > 0
    changed = np.asarray(plan(scene_for_request(scene, req)).changed, bool)
    region = soft_region(resize_mask(changed, scene.size), 12, 12) > 0
    img = result.image.astype(int)
    assert np.array_equal(img[~region], scene.photo[~region].astype(int))
    assert np.abs(img[region] - scene.photo[region].astype(int)).max() > 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_edit_with_reference_reproduces_the_reconstruction_exactly(folders, backend):
    from core.ml.handles.renderer import DiffusionHandlesRenderer

    scene = synthetic_scene(128, 64)
    folder, cn = folders[backend]
    req = _request(scene, folder, cn, "reference", dx=0.0, steps=STEPS, null_inner_steps=1)
    r = DiffusionHandlesRenderer()
    result = r.render(scene, req)
    # nothing moved: guidance is skipped (its gradient is zero by construction)
    assert result.info["guided_steps"] == 0 and "forward_backward" not in result.info["unet_evals"]
    engine = r._engine
    ident = r._identities[result.info["identity_key"]]
    recon = engine.decode_latent(ident.trajectory[-1][None])
    assert np.array_equal(result.image, recon)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_capture_gives_an_unmoved_object_zero_energy_and_gradient(folders, backend):
    """Guidance forced on an identity warp: with the reference's capture the energy and its
    gradient are exactly zero at every guided step (the old fp16 CFG capture is not)."""
    from core.geometry.warp import feature_correspondence, plan
    from core.ml.handles.engine import BlockHooks
    from core.ml.handles.presets import preset
    from core.ml.handles.warping import BlockWarp

    e = _engine(folders, backend)
    scene = synthetic_scene(128, 64)
    p = plan(scene)  # identity transforms: every object cell maps to itself
    for capture, exact in (("exact", True), ("cfg", False)):
        s = e.model_settings(replace(preset("reference"), steps=STEPS, null_inner_steps=1, capture=capture))
        ident = e.build_identity(scene.photo, scene.depth, scene.prompt, s, key=capture)
        warps = {}
        for b, acts in ident.activations.items():
            factor = scene.size[1] // int(acts.shape[-2])
            warps[b] = BlockWarp.from_correspondence(feature_correspondence(p, factor, margin=1), device=e.device)
        energies, grads = [], []
        with BlockHooks(e.m.unet, s.blocks) as hooks:
            for i in range(ident.n_captured):
                z = ident.trajectory[i][None]
                stored = {b: ident.activations[b][i] for b in s.blocks}
                w = {b: (10.0, 10.0) for b in s.blocks}
                z2, energy = e.guidance_step(z, ident.depth_cond, ident.timesteps[i], ident.cond_emb, stored, warps, w, hooks, s, None)
                energies.append(energy)
                grads.append(float((z2 - z).abs().max()))
        if exact:
            assert max(energies) == 0.0 and max(grads) == 0.0, (backend, energies, grads)
        else:
            assert max(energies) > 0.0  # fp16 storage from the CFG batch differs from the guided pass


def _energy_grad(e, ident, s, warps, w):
    from core.ml.handles.engine import BlockHooks

    z = ident.trajectory[0][None].float()
    with BlockHooks(e.m.unet, s.blocks) as hooks:
        g, _ = e.energy_gradient(
            z, ident.depth_cond, ident.timesteps[0], ident.cond_emb, {b: ident.activations[b][0] for b in s.blocks}, warps, w, hooks, s, None
        )
    return g


#: a small energy weight: the fp16 backward of an unscaled energy underflows
WEIGHT = 1e-3


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 0.03), (torch.bfloat16, 0.1)])
def test_low_precision_energy_gradient_agrees_with_fp32(folders, dtype, tol):
    """The energy gradient in fp16 (with loss scaling) and bf16 against fp32, on the same
    identity and warp; the weights are small enough that an unscaled fp16 backward underflows."""
    from core.geometry.warp import feature_correspondence, plan
    from core.ml.handles.presets import preset
    from core.ml.handles.warping import BlockWarp
    from core.render import scene_for_request

    scene = synthetic_scene(128, 64)
    req = _request(scene, *folders["sd2-depth"])
    p = plan(scene_for_request(scene, req))
    s = replace(preset("default"), steps=STEPS, capture="exact")
    e32 = _engine(folders, "sd2-depth")
    ident = e32.build_identity(scene.photo, scene.depth, scene.prompt, s, key="k")  # one identity for both
    warps = {b: BlockWarp.from_correspondence(feature_correspondence(p, scene.size[1] // int(a.shape[-2]), margin=1)) for b, a in ident.activations.items()}
    w = {b: (WEIGHT, 0.0) for b in s.blocks}
    ref = _energy_grad(e32, ident, s, warps, w)
    low = _engine(folders, "sd2-depth", dtype)
    got = _energy_grad(low, ident, s, warps, w)
    assert float(ref.abs().max()) > 0
    rel = float((got - ref).norm() / ref.norm())
    assert rel < tol, rel
    if dtype == torch.float16:
        low.loss_scale = 1.0  # what the engine did before: no scale
        unscaled = _energy_grad(low, ident, s, warps, w)
        assert float((unscaled - ref).norm() / ref.norm()) > 2 * rel  # the scale is what makes it agree


def test_turbo_runs_eight_trailing_steps_with_one_evaluation_each(folders):
    from core.ml.handles.presets import preset
    from core.ml.handles.renderer import DiffusionHandlesRenderer

    e = _engine(folders, "sd2-depth")
    assert e.timesteps(8, "trailing") == [999, 874, 749, 624, 499, 374, 249, 124]
    assert e.timesteps(6, "trailing")[-1] == 166 and e.timesteps(6, "trailing")[0] == 999
    scene = synthetic_scene(128, 64)
    req = _request(scene, *folders["sd15-controlnet"], "turbo", steps=8)
    result = DiffusionHandlesRenderer().render(scene, req)
    s = preset("turbo")
    assert result.info["steps"] == 8
    assert result.info["unet_evals"] == s.expected_unet_evals() == {"forward": 5, "forward_backward": 3}
    assert result.info["identity_unet_evals"] == s.expected_unet_evals(identity=True) == {"forward": 16}


@pytest.mark.parametrize("backend", ["sd15-controlnet", "sdxl-controlnet"])
def test_lora_loads_changes_the_render_and_unloads_cleanly(folders, tmp_path, backend):
    from core.ml.handles.models import set_lora

    e = _engine(folders, backend)
    folder, _ = folders[backend]
    lora = tiny_backends.write_tiny_lora(folder / "unet", tmp_path / "lora")
    _photo, depth, _ = synthetic_photo(128, 64)

    def sample():
        return e.sample(depth, "a red box", steps=2, generator=torch.Generator().manual_seed(0))

    before = sample()
    set_lora(e.m, lora)
    assert e.m.lora == str(lora.resolve())
    with_lora = sample()
    set_lora(e.m, lora)  # the same file again: nothing reloaded
    assert np.array_equal(sample(), with_lora)
    set_lora(e.m, None)
    after = sample()
    assert np.abs(with_lora.astype(int) - before).max() > 0
    assert np.array_equal(after, before)


def test_a_lora_of_another_base_is_a_one_line_error_and_leaves_the_unet_clean(folders, tmp_path):
    from core.ml.handles.models import set_lora

    sd15_folder, _ = folders["sd15-controlnet"]
    lora = tiny_backends.write_tiny_lora(sd15_folder / "unet", tmp_path / "lora15")
    e = _engine(folders, "sdxl-controlnet")
    _photo, depth, _ = synthetic_photo(128, 64)
    before = e.sample(depth, "a box", steps=1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ModelError) as exc:
        set_lora(e.m, lora)
    assert "\n" not in str(exc.value) and "does not fit" in str(exc.value)
    assert e.m.lora == ""
    assert np.array_equal(e.sample(depth, "a box", steps=1, generator=torch.Generator().manual_seed(0)), before)
    with pytest.raises(ModelError):
        set_lora(e.m, tmp_path / "nothing.safetensors")


#: a fixed-seed result per backend (the tiny models are seeded): an accidental change of the
#: engine's numerics (conditioning, timesteps, CFG, hooks) changes these values
GOLDEN: dict[str, list[int]] = {
    "sd2-depth": [126, 110, 76, 168, 102, 116, 114, 194, 29, 89, 112, 114, 188, 6, 61, 114, 98, 118, 100, 133],
    "sd15-controlnet": [136, 129, 118, 110, 20, 114, 175, 111, 63, 63, 149, 134, 163, 141, 131, 138, 176, 127, 122, 196],
    "sdxl-controlnet": [137, 144, 0, 77, 123, 131, 125, 185, 213, 182, 139, 190, 163, 121, 52, 151, 146, 60, 133, 142],
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_slice_of_a_fixed_seed_render(folders, backend):
    from core.ml.handles.renderer import DiffusionHandlesRenderer

    scene = synthetic_scene(128, 64)
    folder, cn = folders[backend]
    req = _request(scene, folder, cn, paste_background=False, paste_objects=False)
    img = DiffusionHandlesRenderer().render(scene, req).image
    got = [int(v) for v in img[20:44:6, 40:90:10, 0].ravel()]
    # within 3 grey levels: CPUs with other vector units round differently
    assert np.abs(np.array(got) - np.array(GOLDEN[backend])).max() <= 3, got


@pytest.mark.parametrize("backend", ["sd15-controlnet", "sdxl-controlnet"])
def test_cli_render_with_a_tiny_folder_of_each_backend(inside_folders, tmp_path, backend):
    """``handles-studio render`` on a pipeline folder with its own controlnet/, through the code a
    real model takes (the sample scene, its box moved, this folder as --model)."""
    import os

    from PIL import Image

    from core.project import load_project

    folder = inside_folders[backend]
    proj = tmp_path / "s.handles"
    out = tmp_path / "out.png"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "core.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)

    assert run("sample", "-o", proj, "--width", "128", "--height", "64").returncode == 0
    r = run(
        "render", proj, "--object", "box", "--translate", "0.3", "0", "0", "--model", folder, "--preset", "fast", "--steps", "4", "--device", "cpu", "-o", out
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "preset fast" in r.stdout
    img = np.asarray(Image.open(out).convert("RGB"))
    photo = load_project(proj).scene.photo
    assert img.shape == photo.shape
    box = load_project(proj).scene.object("box").mask
    assert np.abs(img[box].astype(int) - photo[box].astype(int)).mean() > 5


def test_a_folder_with_only_fp16_variant_weights_loads(tmp_path):
    """What the mirrors' fp16 fetch commands download: ``*.fp16.safetensors`` and no plain weights."""
    from tiny_sd import build_components, write_tokenizer

    from core.ml.handles.models import _load_uncached, weights_variant

    unet, vae, text = build_components(0)
    folder = tmp_path / "fp16"
    unet.half().save_pretrained(folder / "unet", variant="fp16")
    vae.half().save_pretrained(folder / "vae", variant="fp16")
    text.half().save_pretrained(folder / "text_encoder", variant="fp16")
    write_tokenizer(folder / "tokenizer")
    assert weights_variant(folder / "unet") == "fp16"
    assert not any(".fp16." not in p.name for p in (folder / "unet").glob("*.safetensors"))
    m = _load_uncached(folder, "fp16", torch.device("cpu"), torch.float32)
    assert m.backend == "sd2-depth" and next(m.unet.parameters()).dtype == torch.float32
