"""The engine on a tiny random-weight SD2-depth: identity, exact inversion, energy, warps, blending, cancel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tiny_sd import synthetic_photo  # noqa: E402

from core.errors import RenderCancelled  # noqa: E402
from core.geometry.types import FeatureCorrespondence  # noqa: E402
from core.jobs import CancelToken  # noqa: E402
from core.ml.handles.presets import preset  # noqa: E402

STEPS = 5


#: the inverted-noise start (the reference's): these tests check guidance and injection mechanics
OLD_START = {"preview_start": 0.0, "preview_keep": 0.0, "background_blend": True, "paste_objects": False, "guided_until": 0.5}


def _settings(**kw):
    return replace(preset("default"), steps=STEPS, **{**OLD_START, **kw})


@pytest.fixture(scope="module")
def wide(tiny_models):
    """An identity of a non-square 128x64 photo (module-wide: inversion runs once)."""
    from core.ml.handles.engine import HandlesEngine

    photo, depth, mask = synthetic_photo(128, 64)
    eng = HandlesEngine(tiny_models)
    s = _settings(guided_until=1.0, inject_until=1.0)
    ident = eng.build_identity(photo, depth, "the red car", s, key="wide")
    return photo, depth, mask, ident


def _shift_correspondence(mask: np.ndarray, factor: int, dx: int, dy: int, weight: float = 1.0) -> FeatureCorrespondence:
    """A hand-made correspondence: the object's cells move by (dx, dy) cells."""
    h, w = mask.shape[0] // factor, mask.shape[1] // factor
    cells = mask.reshape(h, factor, w, factor).any(axis=(1, 3))
    rows, cols = np.nonzero(cells)
    tgt = np.stack([cols + dx + 0.5, rows + dy + 0.5], axis=1).astype(np.float32)
    fg_tgt = np.zeros_like(cells)
    ok = (tgt[:, 0] >= 0) & (tgt[:, 0] < w) & (tgt[:, 1] >= 0) & (tgt[:, 1] < h)
    fg_tgt[(tgt[ok, 1] - 0.5).astype(int), (tgt[ok, 0] - 0.5).astype(int)] = True
    hole = cells & ~fg_tgt
    touched = cells | fg_tgt
    from scipy import ndimage

    background = ~ndimage.binary_dilation(touched, iterations=1)
    return FeatureCorrespondence(
        factor=factor,
        shape=(h, w),
        objects=[{"src_cells": np.stack([rows, cols], 1).astype(np.int32), "tgt_xy": tgt, "weight": np.full(len(rows), weight, np.float32)}],
        fg_src=cells,
        fg_tgt=fg_tgt,
        hole=hole,
        background=background,
    )


def _warps(ident, mask, dx, dy, device="cpu"):
    from core.ml.handles.warping import BlockWarp

    out = {}
    H = mask.shape[0]
    for b, a in ident.activations.items():
        factor = H // a.shape[-2]
        out[b] = BlockWarp.from_correspondence(_shift_correspondence(mask, factor, dx, dy), device=device)
    return out


# ------------------------------------------------------------------------------------ identity
@pytest.mark.parametrize("size", [(64, 64), (128, 64), (64, 128)])
def test_captured_activation_shapes(engine, tiny_models, size):
    w, h = size
    photo, depth, _ = synthetic_photo(w, h, seed=1)
    s = _settings(guided_until=0.6, inject_until=0.0)
    ident = engine.build_identity(photo, depth, "a car", s, key="k")
    cfg = tiny_models.unet.config
    ch = list(reversed(cfg.block_out_channels))  # up block k outputs reversed(block_out_channels)[k]
    n = int(round(0.6 * STEPS))
    assert sorted(ident.activations) == [2, 3]
    # up_blocks[2] upsamples to the latent size; up_blocks[3] stays there
    assert tuple(ident.activations[2].shape) == (n, ch[2], h // 8, w // 8)
    assert tuple(ident.activations[3].shape) == (n, ch[3], h // 8, w // 8)
    assert ident.activations[2].dtype == torch.float16
    assert tuple(ident.trajectory.shape) == (STEPS + 1, 4, h // 8, w // 8)
    assert ident.n_captured == n
    # one text-conditioned inversion pass and one guided (batch 2) replay per step
    assert engine.counts["forward"] == STEPS and engine.counts["cfg"] == STEPS


def test_block1_capture_is_optional(engine):
    photo, depth, _ = synthetic_photo(64, 64)
    ident = engine.build_identity(photo, depth, "", _settings(blocks=(1, 2, 3), guided_until=0.4), key="k")
    assert sorted(ident.activations) == [1, 2, 3]
    assert tuple(ident.activations[1].shape[-2:]) == (4, 4)  # half the latent size


def test_exact_inversion_reconstructs_the_input_latent(engine, wide):
    photo, _, _, ident = wide
    x0 = engine.encode_image(photo)  # independent VAE encoding of the photo
    z = engine.reconstruct(ident, _settings())
    assert z.shape == x0.shape
    assert torch.allclose(z, x0, atol=1e-5, rtol=0), float((z - x0).abs().max())
    # the deltas are not a no-op: without them the guided replay drifts away
    no_delta = replace(ident, deltas=None)
    drift = (engine.reconstruct(no_delta, _settings()) - x0).abs().max()
    assert float(drift) > 1e-3


def test_null_text_identity_runs_the_reference_loop(engine):
    photo, depth, _ = synthetic_photo(64, 64)
    s = replace(preset("reference"), steps=3, null_inner_steps=2, null_epsilon=0.0)
    ident = engine.build_identity(photo, depth, "a car", s, key="k")
    assert ident.uncond_emb.shape[0] == 3  # one optimised unconditional embedding per step
    assert ident.deltas is None
    assert engine.counts["forward_backward"] == 3 * 2
    assert dict(engine.counts) == s.expected_unet_evals(identity=True)
    base = engine.encode_text("").float()
    assert float((ident.uncond_emb[:1] - base).abs().max()) > 0  # Adam moved it
    # the reconstruction is the stored (null-text) trajectory
    z = engine.reconstruct(ident, s)
    assert torch.allclose(z[0], ident.trajectory[-1], atol=1e-5)


def test_identity_serialises(engine, wide):
    from core.ml.handles.identity import Identity, identity_key

    _, _, _, ident = wide
    data = ident.to_bytes()
    back = Identity.from_bytes(data)
    assert Identity.peek_key(data) == "wide"
    assert back.timesteps == ident.timesteps and back.size == ident.size
    assert torch.equal(back.trajectory, ident.trajectory)
    assert torch.equal(back.deltas, ident.deltas)
    for b in ident.activations:
        assert torch.equal(back.activations[b], ident.activations[b])
    assert torch.equal(engine.reconstruct(back, _settings()), engine.reconstruct(ident, _settings()))
    k1 = identity_key("abc", "a car", "m", (128, 64), {"steps": 5})
    assert k1 == identity_key("abc", "a car", "m", (128, 64), {"steps": 5})
    assert k1 != identity_key("abc", "a cat", "m", (128, 64), {"steps": 5})
    assert k1 != identity_key("abc", "a car", "m", (128, 64), {"steps": 6})


def test_damaged_identity_is_a_clear_error():
    from core.errors import InputError
    from core.ml.handles.identity import Identity

    with pytest.raises(InputError):
        Identity.from_bytes(b"PK\x03\x04 not really a zip")


def test_depth_conditioning_matches_the_pipeline_normalisation(engine):
    """Disparity, bicubic to the latent size, min-max to [-1, 1] (as prepare_depth_map)."""
    _, depth, _ = synthetic_photo(128, 64)
    d = engine.depth_condition(depth)
    ref = torch.nn.functional.interpolate(torch.from_numpy(1.0 / depth)[None, None], size=(8, 16), mode="bicubic", align_corners=False)
    ref = 2 * (ref - ref.min()) / (ref.max() - ref.min()) - 1
    assert d.shape == (1, 1, 8, 16)
    assert torch.allclose(d, ref, atol=1e-6)
    assert float(d.min()) == -1.0 and float(d.max()) == 1.0
    # near things are bright (high disparity): the object at 2 m is the maximum
    assert float(d[0, 0, 3, 6]) > float(d[0, 0, 7, 0])


# ------------------------------------------------------------------------------------ warping
def test_identity_transform_warps_activations_onto_themselves(wide):
    from core.ml.handles.warping import BlockWarp

    _, _, mask, ident = wide
    for _b, acts in ident.activations.items():
        feats = acts[0].float()
        corr = _shift_correspondence(mask, mask.shape[0] // feats.shape[-2], 0, 0)
        W = BlockWarp.from_correspondence(corr)
        warped, cov = W.splat(feats)
        cells = torch.from_numpy(corr.fg_src)
        assert torch.allclose(warped[:, cells], feats[:, cells], atol=1e-6)
        assert torch.equal(cov > 0, cells)
        assert torch.allclose(W.sample(feats[None])[0], W.gather(feats), atol=1e-6)


def test_warp_moves_features_with_bilinear_weights():
    from core.ml.handles.warping import BlockWarp

    h, w = 4, 6
    feats = torch.arange(2 * h * w, dtype=torch.float32).view(2, h, w)
    corr = FeatureCorrespondence(
        factor=8,
        shape=(h, w),
        objects=[
            {"src_cells": np.array([[1, 1]], np.int32), "tgt_xy": np.array([[3.0, 1.5]], np.float32), "weight": np.array([1.0], np.float32)},
            {"src_cells": np.array([[2, 4]], np.int32), "tgt_xy": np.array([[1.5, 3.5]], np.float32), "weight": np.array([0.5], np.float32)},
        ],
        fg_src=np.zeros((h, w), bool),
        fg_tgt=np.zeros((h, w), bool),
        hole=np.zeros((h, w), bool),
        background=np.ones((h, w), bool),
    )
    W = BlockWarp.from_correspondence(corr)
    warped, cov = W.splat(feats)
    # object 0: x = 3.0 lies half-way between the centres of columns 2 and 3 of row 1
    assert cov[1, 2] == pytest.approx(0.5) and cov[1, 3] == pytest.approx(0.5)
    assert torch.allclose(warped[:, 1, 2], feats[:, 1, 1]) and torch.allclose(warped[:, 1, 3], feats[:, 1, 1])
    # object 1 lands exactly on cell (3, 1) with its visibility weight
    assert cov[3, 1] == pytest.approx(0.5)
    assert torch.allclose(warped[:, 3, 1], feats[:, 2, 4])
    assert float(cov.sum()) == pytest.approx(1.5)
    # sampling at x = 3.0 averages columns 2 and 3
    s = W.sample(feats[None])[0]
    assert torch.allclose(s[:, 0], (feats[:, 1, 2] + feats[:, 1, 3]) / 2)


# ------------------------------------------------------------------------------------ guidance
def test_energy_gradient_is_nonzero_and_a_step_lowers_it(engine, wide):
    from core.ml.handles.engine import BlockHooks

    _, _, mask, ident = wide
    warps = _warps(ident, mask, dx=3, dy=0)
    s = _settings(step_size=0.1)
    t = ident.timesteps[0]
    stored = {b: ident.activations[b][0] for b in ident.activations}
    weights = {2: (1.5 * 30, 1.25 * 30), 3: (1.5 * 30, 1.25 * 30)}
    z = ident.trajectory[0][None].clone()

    def energy_and_grad(zz):
        hooks = BlockHooks(engine.m.unet, [2, 3])
        try:
            zz = zz.detach().requires_grad_(True)
            hooks.mode = "grab"
            with torch.enable_grad():
                engine.unet(zz, ident.depth_cond, t, ident.cond_emb, None)
                e = engine.energy(dict(hooks.grabbed), stored, warps, weights)
                (g,) = torch.autograd.grad(e, zz)
            return float(e.detach()), g
        finally:
            hooks.remove()

    e0, g = energy_and_grad(z)
    assert e0 > 0 and float(g.abs().max()) > 0
    hooks = BlockHooks(engine.m.unet, [2, 3])
    try:
        z1, e_before = engine.guidance_step(z, ident.depth_cond, t, ident.cond_emb, stored, warps, weights, hooks, s, None)
    finally:
        hooks.remove()
    assert e_before == pytest.approx(e0, rel=1e-5)
    assert torch.allclose(z1, z - 0.1 * g, atol=1e-6)
    e1, _ = energy_and_grad(z1)
    assert e1 < e0


def test_cell_background_term_is_zero_on_the_source_activations(engine, wide):
    _, _, mask, ident = wide
    warps = _warps(ident, mask, dx=2, dy=0)
    stored = {b: ident.activations[b][0] for b in ident.activations}
    current = {b: a[None].float() for b, a in stored.items()}
    e_cell = engine.energy(current, stored, warps, {2: (0.0, 1.0), 3: (0.0, 1.0)}, bg_loss="cell")
    assert float(e_cell) == 0.0
    e_fg = engine.energy(current, stored, warps, {2: (1.0, 0.0)})
    assert float(e_fg) > 0  # the object is not yet where the warp wants it


def test_zero_weights_and_input_depth_give_the_plain_reconstruction(engine, wide):
    _, _, mask, ident = wide
    warps = _warps(ident, mask, dx=3, dy=1)
    s = _settings(fg_weight=0.0, bg_weight=0.0, guided_until=1.0, grad_steps=3, background_blend=False)
    plain = engine.reconstruct(ident, _settings())
    engine.counts.clear()
    z = engine.denoise(ident, ident.depth_cond, s, warps=warps)
    assert torch.equal(z, plain)
    assert engine.counts["forward_backward"] == 0
    # with weights the same call moves the latent
    z_g = engine.denoise(ident, ident.depth_cond, _settings(guided_until=1.0, background_blend=False), warps=warps)
    assert float((z_g - plain).abs().max()) > 1e-4
    assert engine.counts["forward_backward"] == STEPS


def test_injection_changes_the_target_cells(engine, wide):
    _, _, mask, ident = wide
    warps = _warps(ident, mask, dx=4, dy=0)
    plain = engine.reconstruct(ident, _settings())
    s = _settings(guided_until=0.0, grad_steps=0, inject_until=0.6)
    engine.counts.clear()
    z = engine.denoise(ident, ident.depth_cond, s, warps=warps)
    assert engine.counts["forward_backward"] == 0 and engine.counts["cfg"] == STEPS
    assert float((z - plain).abs().max()) > 1e-4


def test_background_blending_keeps_the_trajectory_outside_the_region(engine, wide):
    from core.ml.handles.renderer import soft_region

    _, depth, mask, ident = wide
    warps = _warps(ident, mask, dx=4, dy=0)
    region = ~warps[3].background.numpy()
    alpha = torch.from_numpy(soft_region(region, 0, 1))[None, None]
    edited_depth = depth.copy()
    edited_depth[:, :] = np.roll(depth, 32, axis=1)
    dcond = engine.depth_condition(edited_depth)
    s = _settings(guided_until=1.0)
    z = engine.denoise(ident, dcond, s, warps=warps, blend_alpha=alpha)
    z_free = engine.denoise(ident, dcond, s, warps=warps, blend_alpha=None)
    plain = engine.reconstruct(ident, _settings())
    keep = alpha[0, 0] == 0
    assert keep.any() and (~keep).any()
    assert torch.equal(z[0][:, keep], plain[0][:, keep])
    assert float((z_free[0][:, keep] - plain[0][:, keep]).abs().max()) > 1e-4  # blending is what keeps it
    assert float((z[0][:, ~keep] - plain[0][:, ~keep]).abs().max()) > 1e-4  # the region is edited


# ------------------------------------------------------------------------------------ cancel
@pytest.mark.parametrize("cancel_at", [1, 3, 6])
def test_cancel_stops_within_one_unet_evaluation(engine, wide, cancel_at):
    """Count UNet calls with a forward hook; cancel from inside the k-th: nothing runs after it."""
    _, _, mask, ident = wide
    warps = _warps(ident, mask, dx=2, dy=0)
    token = CancelToken()
    calls = []

    def hook(_m, _i, _o):
        calls.append(1)
        if len(calls) == cancel_at:
            token.cancel()

    h = engine.m.unet.register_forward_hook(hook)
    try:
        with pytest.raises(RenderCancelled):
            # guided (forward+backward) and guided-CFG evaluations interleave here
            engine.denoise(ident, ident.depth_cond, _settings(guided_until=1.0, grad_steps=2), warps=warps, token=token)
    finally:
        h.remove()
    assert len(calls) == cancel_at


def test_cancel_during_inversion(engine):
    photo, depth, _ = synthetic_photo(64, 64)
    token = CancelToken()
    calls = []

    def hook(_m, _i, _o):
        calls.append(1)
        if len(calls) == 2:
            token.cancel()

    h = engine.m.unet.register_forward_hook(hook)
    try:
        with pytest.raises(RenderCancelled):
            engine.build_identity(photo, depth, "", _settings(), key="k", token=token)
    finally:
        h.remove()
    assert len(calls) == 2
    # the hooks of the aborted capture are gone: the UNet is clean again
    assert not engine.m.unet.up_blocks[2]._forward_hooks


def test_a_compressed_member_in_a_stored_identity_is_refused_before_inflating(tmp_path):
    """Issue 8: a project cache is capped by its declared size, but the .npz inside it could hold a
    deflated member that inflates a thousand times over (here 1 GB of zeros in 1 MB). to_bytes
    stores its members, so anything else is refused in one line, before a byte is inflated."""
    import io
    import subprocess
    import sys
    import textwrap
    import zipfile
    from pathlib import Path

    n = 1 << 28  # float32: 1 GiB
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        head = io.BytesIO()
        np.save(head, np.frombuffer(b'{"format": "handles-identity/1", "key": "k"}', np.uint8))
        zf.writestr(zipfile.ZipInfo("header.npy"), head.getvalue(), compress_type=zipfile.ZIP_STORED)
        bomb = zipfile.ZipInfo("trajectory.npy", date_time=(1980, 1, 1, 0, 0, 0))
        bomb.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(bomb, "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
            block = bytes(1 << 24)
            for _ in range(4 * n // len(block)):
                member.write(block)
    path = tmp_path / "bomb.npz"
    path.write_bytes(buf.getvalue())
    assert path.stat().st_size < 4 << 20
    code = textwrap.dedent(
        """
        import sys  # peak memory from VmHWM: ru_maxrss inherits the parent's peak across vfork + exec
        from core.errors import InputError
        from core.ml.handles.identity import Identity
        data = open(sys.argv[1], "rb").read()
        print("KEY", Identity.peek_key(data))
        try:
            Identity.from_bytes(data)
        except InputError as exc:
            print("InputError:", exc)
        print("RSS", [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] // 1024)
        """
    )
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    out = res.stdout
    assert "KEY None" in out and "InputError: stored identity cannot be read" in out and "compressed" in out, out + res.stderr[-2000:]
    assert int(out.split("RSS")[-1]) < 900, out  # torch and the rest; the member alone is 1 GiB
