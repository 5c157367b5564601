"""DiffusionHandlesRenderer end to end on the tiny model: sizes, events, caching, blending, cancel."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tiny_sd import synthetic_scene  # noqa: E402

from core.errors import RenderCancelled  # noqa: E402
from core.jobs import CancelToken, Preview, Progress, RenderRequest  # noqa: E402
from core.transform import Transform3D  # noqa: E402

STEPS = 4


#: the inverted-noise start (the reference's): these tests check guidance, blending and injection
OLD_START = {"preview_start": 0.0, "preview_keep": 0.0, "background_blend": True, "paste_objects": False, "guided_until": 0.5}


MODEL: dict = {}


@pytest.fixture(autouse=True)
def _model(tiny_sd_dir):
    MODEL["path"] = str(tiny_sd_dir)


def _request(scene, dx=0.4, warp_start=False, **settings):
    from dataclasses import replace

    from core.ml.handles.presets import preset

    settings.setdefault("preview_every", 2)
    if not warp_start:
        for k, v in OLD_START.items():
            settings.setdefault(k, v)
    name = settings.pop("preset", "default")
    res = settings.pop("resolution", max(scene.size))
    return RenderRequest(
        scene_id=scene.content_id(),
        transforms={scene.object("box").id: Transform3D(translation=(dx, 0.0, 0.0)).to_dict()},
        prompt=scene.prompt,
        steps=STEPS,
        preset=name,
        resolution=res,
        device="cpu",
        model="tiny",
        model_path=MODEL["path"],
        handles=replace(preset(name, settings), steps=STEPS, resolution=res),
    )


@pytest.fixture
def renderer():
    from core.ml.handles.renderer import DiffusionHandlesRenderer

    return DiffusionHandlesRenderer()


def test_render_emits_events_and_returns_the_working_size(renderer):
    scene = synthetic_scene(128, 64)
    events = []
    res = renderer.render(scene, _request(scene), events.append, CancelToken())
    img, info = res.image, res.info
    assert img.shape == (64, 128, 3) and img.dtype == np.uint8
    stages = [e.stage for e in events if isinstance(e, Progress)]
    for stage in ("loading", "identity", "render", "decode"):
        assert stage in stages
    render_steps = [e.step for e in events if isinstance(e, Progress) and e.stage == "render"]
    assert render_steps == list(range(1, STEPS + 1))
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and previews[0].image.shape == (64, 128, 3) and previews[0].step == 2
    # the load announced how long it would take
    loading = [e for e in events if isinstance(e, Progress) and e.stage == "loading"]
    assert loading[0].eta_s is not None and loading[0].eta_s >= 0  # 0 when this process loaded it before
    assert info["guided_steps"] == 2 and info["unet_evals"] == {"forward_backward": 2, "cfg": STEPS}
    assert info["identity_unet_evals"] == {"forward": STEPS, "cfg": STEPS}
    # the planner the benchmark scales by agrees with what ran
    s = renderer.settings_for(_request(scene))
    assert s.expected_unet_evals() == info["unet_evals"]
    assert s.expected_unet_evals(identity=True) == info["identity_unet_evals"]


def test_identity_is_cached_and_restored_from_bytes(renderer):
    import dataclasses

    from core.ml.handles.renderer import DiffusionHandlesRenderer

    scene = synthetic_scene(128, 64)
    first = renderer.render(scene, _request(scene, dx=0.3), lambda e: None, CancelToken())
    key = first.info["identity_key"]
    assert renderer.identity_key(scene, _request(scene, dx=0.3)) == key
    # a newly computed identity comes back for the project to keep, under its cache name
    assert list(first.blobs) == ["identity:" + key]
    second = renderer.render(scene, _request(scene, dx=-0.3), lambda e: None, CancelToken(), caches=dict(first.blobs))
    assert second.info["identity_reused"] == "memory" and second.blobs == {}
    assert second.info["identity_unet_evals"] == {}
    assert not np.array_equal(first.image, second.image)
    # a different prompt is a different identity
    other = dataclasses.replace(_request(scene, dx=0.3), prompt="a blue box")
    assert renderer.render(scene, other, lambda e: None, CancelToken()).info["identity_key"] != key
    # a fresh renderer given the project's caches skips the identity and renders the same image
    fresh = DiffusionHandlesRenderer()
    again = fresh.render(scene, _request(scene, dx=0.3), lambda e: None, CancelToken(), caches=dict(first.blobs))
    assert again.info["identity_reused"] == "stored" and again.info["identity_unet_evals"] == {}
    assert np.array_equal(again.image, first.image)


def test_background_far_from_the_objects_equals_the_reconstruction(renderer):
    from scipy import ndimage

    from core.geometry.warp import plan
    from core.ml.handles.engine import HandlesEngine
    from core.render import scene_for_request

    scene = synthetic_scene(128, 64)
    req = _request(scene, dx=0.4, paste_background=False, blend_margin=1, blend_feather=0)
    res = renderer.render(scene, req, lambda e: None, CancelToken())
    img = res.image
    eng = HandlesEngine(renderer._engine.m)
    ident = renderer._identities[res.info["identity_key"]]
    recon = eng.decode_latent(eng.reconstruct(ident, renderer.settings_for(req)))
    changed = plan(scene_for_request(scene, req)).changed
    far = ndimage.distance_transform_edt(~changed) > 40
    assert far.sum() > 100
    assert np.array_equal(img[far], recon[far])
    assert not np.array_equal(img[changed], recon[changed])
    # without blending the far pixels drift (so the equality above is the option's doing)
    free = renderer.render(scene, _request(scene, dx=0.4, paste_background=False, background_blend=False), lambda e: None, CancelToken()).image
    assert not np.array_equal(free[far], recon[far])


def test_paste_keeps_the_photo_outside_the_changed_region(renderer):
    from scipy import ndimage

    from core.geometry.warp import plan
    from core.render import scene_for_request

    scene = synthetic_scene(128, 64)
    req = _request(scene, dx=0.4, paste_margin=4, paste_feather=4)
    img = renderer.render(scene, req, lambda e: None, CancelToken()).image
    changed = plan(scene_for_request(scene, req)).changed
    d = ndimage.distance_transform_edt(~changed)
    assert np.array_equal(img[d > 9], scene.photo[d > 9])
    assert not np.array_equal(img[changed], scene.photo[changed])


def test_lower_resolution_renders_and_returns_the_working_size(renderer):
    scene = synthetic_scene(256, 128)
    res = renderer.render(scene, _request(scene, preset="draft", resolution=128, warp_start=True), lambda e: None, CancelToken())
    assert res.image.shape == (128, 256, 3)
    assert res.info["render_size"] == [128, 64]
    assert res.info["unet_evals"].get("forward_backward", 0) == 0
    assert res.info["start_step"] == 2  # 40 % of STEPS, rounded
    assert res.info["unet_evals"] == {"cfg": STEPS - 2}


def test_warp_then_refine_counts_events_and_evaluations(renderer):
    scene = synthetic_scene(128, 64)
    events = []
    req = _request(scene, warp_start=True)
    info = renderer.render(scene, req, events.append, CancelToken()).info
    s = renderer.settings_for(req)
    k0 = s.n_start()
    assert k0 == 2 and info["start_step"] == k0
    render_steps = [(e.step, e.total) for e in events if isinstance(e, Progress) and e.stage == "render"]
    assert render_steps == [(i, STEPS - k0) for i in range(1, STEPS - k0 + 1)]
    # guidance on the steps from the start to 80 %: step 2 only (round(3.2) = 3)
    assert info["guided_steps"] == 1 and info["unet_evals"] == {"cfg": STEPS - k0, "forward_backward": 1}
    assert s.expected_unet_evals() == info["unet_evals"]


def test_the_seed_changes_the_edited_region_only(renderer):
    from scipy import ndimage

    from core.geometry.warp import plan
    from core.render import scene_for_request

    scene = synthetic_scene(128, 64)
    a = renderer.render(scene, _request(scene, warp_start=True), lambda e: None, CancelToken()).image
    import dataclasses

    req_b = dataclasses.replace(_request(scene, warp_start=True), seed=7)
    b = renderer.render(scene, req_b, lambda e: None, CancelToken()).image
    p = plan(scene_for_request(scene, req_b))
    outside = ndimage.distance_transform_edt(~p.changed) > 26  # beyond the paste margin and feather
    assert outside.sum() > 100
    assert np.array_equal(a[outside], b[outside]) and np.array_equal(a[outside], scene.photo[outside])
    revealed = p.changed & ~np.isfinite(p.src_x)
    assert np.abs(a[revealed].astype(int) - b[revealed].astype(int)).mean() > 1.0


def test_object_paste_keeps_the_moved_objects_known_pixels(renderer):
    from core.geometry.warp import plan
    from core.preview import render_preview
    from core.render import scene_for_request

    scene = synthetic_scene(128, 64)
    req = _request(scene, warp_start=True)
    img = renderer.render(scene, req, lambda e: None, CancelToken()).image
    edited = scene_for_request(scene, req)
    p = plan(edited)
    known = np.isfinite(p.src_x)
    assert known.sum() > 50
    assert np.array_equal(img[known], render_preview(edited, p).image[known])


def test_cancel_during_render_stops_within_one_evaluation(renderer):
    import gc

    scene = synthetic_scene(128, 64)
    renderer.render(scene, _request(scene), lambda e: None, CancelToken())  # identity cached
    token = CancelToken()
    calls = []

    def hook(_m, _i, _o):
        calls.append(1)
        if len(calls) == 3:
            token.cancel()

    unet = renderer._engine.m.unet
    h = unet.register_forward_hook(hook)
    try:
        with pytest.raises(RenderCancelled):
            renderer.render(scene, _request(scene, dx=-0.2), lambda e: None, token)
    finally:
        h.remove()
    assert len(calls) == 3
    gc.collect()
    # nothing of the aborted render still hooks the UNet
    assert all(not b._forward_hooks for b in unet.up_blocks)
