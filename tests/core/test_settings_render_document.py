"""core.settings, core.render (geometric and fake renderers), core.document."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from core.jobs import CancelToken, RenderRequest
from core.settings import Settings, load_settings, save_settings, settings_path


@pytest.fixture(scope="module")
def _sample_once():
    from core.sample import sample_scene

    return sample_scene()


@pytest.fixture
def sample_scene(_sample_once):
    import copy

    return copy.deepcopy(_sample_once)


# ----- settings -----
def test_settings_roundtrip_in_env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDLES_STUDIO_CONFIG_DIR", str(tmp_path / "cfg"))
    assert settings_path() == tmp_path / "cfg" / "settings.json"
    s = Settings(device="cpu", working_resolution=768, auto_render=False, model_folders=["/models"], autosave_minutes=1.5)
    s.add_recent(tmp_path / "a.handles")
    s.add_recent(tmp_path / "b.handles")
    s.add_recent(tmp_path / "a.handles")  # moves to the front, no duplicate
    save_settings(s)
    back = load_settings()
    assert back.device == "cpu" and back.working_resolution == 768 and back.auto_render is False
    assert back.model_folders == ["/models"] and back.autosave_minutes == 1.5
    assert back.recent_files == [str((tmp_path / "a.handles").resolve()), str((tmp_path / "b.handles").resolve())]
    # no temporary files left behind by the atomic write
    assert sorted(p.name for p in (tmp_path / "cfg").iterdir()) == ["settings.json"]


def test_missing_settings_give_defaults(tmp_path):
    assert load_settings(tmp_path / "none.json") == Settings()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\x00\xff garbage", ""])
def test_damaged_settings_give_defaults_and_a_warning(tmp_path, text):
    p = tmp_path / "settings.json"
    p.write_bytes(text.encode("latin-1"))
    with pytest.warns(UserWarning, match="settings"):
        s = load_settings(p)
    assert s == Settings()


def test_bad_values_fall_back_one_by_one(tmp_path):
    p = tmp_path / "settings.json"
    p.write_text(json.dumps({"device": "tpu", "working_resolution": 500, "default_steps": "many", "auto_render": False, "unknown": 1}))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = load_settings(p)
    assert s.device == "auto" and s.working_resolution == 512 and s.default_steps == Settings().default_steps
    assert s.auto_render is False  # the good value survives
    assert len(w) == 3


def test_recent_files_are_bounded(tmp_path):
    s = Settings(max_recent=3)
    for i in range(5):
        s.add_recent(tmp_path / f"{i}.handles")
    assert [p.rsplit("/", 1)[-1] for p in s.recent_files] == ["4.handles", "3.handles", "2.handles"]


# ----- renderers -----
def _request(**kw) -> RenderRequest:
    d = dict(scene_id="s", transforms={}, prompt="p", seed=1, steps=6)
    d.update(kw)
    return RenderRequest(**d)


def test_geometric_renderer_moves_the_object(sample_scene):
    from core.render import GeometricRenderer
    from core.transform import Transform3D

    r = GeometricRenderer()
    same = r.render(sample_scene, _request(), lambda e: None, CancelToken())
    assert same.info["geometric"] is True and same.info["hole_fraction"] == 0.0
    # with no move the geometric render is the photo
    assert np.abs(same.image.astype(int) - sample_scene.photo.astype(int)).mean() < 1.0
    box = sample_scene.object("box")
    moved_req = _request(transforms={box.id: Transform3D(translation=(0.4, 0.0, 0.0)).to_dict()})
    result = r.render(sample_scene, moved_req, lambda e: None, CancelToken())
    moved = result.image
    assert result.info["hole_fraction"] > 0.001
    # pixels of the box's old place changed; the request did not touch the scene itself
    assert np.abs(moved.astype(int) - sample_scene.photo.astype(int))[box.mask].mean() > 5
    assert box.transform.is_identity()


def test_scene_for_request_rejects_a_bad_transform(sample_scene):
    from core.errors import InputError
    from core.render import scene_for_request

    with pytest.raises(InputError, match="box"):
        scene_for_request(sample_scene, _request(transforms={sample_scene.object("box").id: {"scale": -1}}))


# ----- document -----
def test_document_project_roundtrip(tmp_path, sample_scene):
    from core.document import Document
    from core.transform import Transform3D

    sample_scene.object("sphere").transform = Transform3D.from_axis_angle((0, 1, 0), 20, translation=(0.1, 0, 0.2), scale=1.2)
    doc = Document(scene=sample_scene, render_settings={"seed": 7, "foreground": 150})
    img = np.full(sample_scene.photo.shape, 77, np.uint8)
    rec = doc.add_render(img, {"seed": 7}, {"geometric": True})
    assert doc.renders_modified
    doc.save(tmp_path / "d.handles")
    assert not doc.renders_modified and doc.display_name == "d"
    back = Document.load(tmp_path / "d.handles")
    assert back.render_settings["seed"] == 7 and back.render_settings["foreground"] == 150
    assert back.render_settings["preset"] == "default"  # defaults fill what was not set
    assert [r.id for r in back.renders] == [rec.id] and np.array_equal(back.renders[0].image, img)
    t = back.scene.object("sphere").transform
    assert np.allclose(t.translation, (0.1, 0, 0.2)) and t.scale == pytest.approx(1.2)


@pytest.mark.parametrize("angles", [(10, 20, 30), (-170, 45, 100), (0, 90, 20), (5, -89.9, 7), (0, 0, 0)])
def test_euler_fields_roundtrip(angles):
    from core.document import euler_xyz_from_quat, quat_from_euler_xyz
    from core.transform import quat_to_matrix

    q = quat_from_euler_xyz(*angles)
    back = euler_xyz_from_quat(q)
    assert np.allclose(quat_to_matrix(quat_from_euler_xyz(*back)), quat_to_matrix(q), atol=1e-9)
    # the convention: R = Rz Ry Rx; a pure X rotation of 90 deg maps +Y to +Z
    if angles == (0, 0, 0):
        assert np.allclose(quat_to_matrix(quat_from_euler_xyz(90, 0, 0)) @ [0, 1, 0], [0, 0, 1])
        assert math.isclose(euler_xyz_from_quat(quat_from_euler_xyz(0, 0, 33))[2], 33.0)
