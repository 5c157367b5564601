"""core.dhformat: Diffusion Handles scene folders, frame conversion, transforms.json round trips."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import dhformat as D
from core.errors import InputError
from core.project import Project, load_project, save_project
from core.transform import Transform3D

PHOTOGEN = Path(os.environ.get("HANDLES_PHOTOGEN", Path(__file__).resolve().parents[2].parent / "shared" / "photogen"))


def photogen_scenes() -> list[Path]:
    """Same listing as tests/conftest.py (which is not importable under --import-mode=importlib)."""
    if not PHOTOGEN.is_dir():
        return []
    return sorted(p for p in PHOTOGEN.iterdir() if (p / "input.png").is_file())


# The photogen README's edit counts (73 in all)
EDIT_COUNTS = {
    "banana_fruits": 3,
    "car": 5,
    "car_2": 20,
    "chair": 3,
    "chair_2": 4,
    "chrome_headlight": 2,
    "cube_toy": 3,
    "fighter_jet": 3,
    "milk_carton": 3,
    "plane": 3,
    "potted_plant": 5,
    "potted_plant_2": 2,
    "red_block": 3,
    "sunflower": 14,
}


def rodrigues(axis, angle_deg):
    """Right-handed rotation matrix about ``axis`` (computed here, independently of core.transform)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    th = math.radians(angle_deg)
    return np.eye(3) + math.sin(th) * K + (1 - math.cos(th)) * K @ K


def write_exr(path, depth, half=True):
    import OpenEXR

    header = {"compression": OpenEXR.PIZ_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Y": OpenEXR.Channel(np.ascontiguousarray(depth, np.float16 if half else np.float32))}) as f:
        f.write(str(path))


def make_dh_folder(folder: Path, w=640, h=480, transforms=None, bg=True, prompt="a red square", mask_values=None):
    folder.mkdir(parents=True, exist_ok=True)
    photo = np.full((h, w, 3), (40, 90, 160), np.uint8)
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : h // 2, w // 4 : w // 2] = 255
    if mask_values is not None:
        m = mask_values
    photo[m > 127] = (220, 30, 30)
    Image.fromarray(photo).save(folder / "input.png")
    Image.fromarray(m).save(folder / "mask.png")
    depth = np.full((h, w), 5.0, np.float32)
    depth[m > 127] = 2.0
    write_exr(folder / "depth.exr", depth)
    if bg:
        write_exr(folder / "bg_depth.exr", np.full((h, w), 5.0, np.float32))
    if prompt is not None:
        (folder / "prompt.txt").write_text(prompt + "\n")
    if transforms is not None:
        (folder / "transforms.json").write_text(json.dumps(transforms))
    return folder


# ----------------------------------------------------------------------------- conversions
def test_frame_and_rotation_conversion_against_independent_math():
    d = {"translation": [1.25, -0.65, -2.61], "rotation_axis": [0.0, 1.0, 0.0], "rotation_angle": 13.6}
    t = D.transform_from_dh(d)
    # DH +X left, +Y up  ->  camera +X right, +Y down: x and y flip, z stays
    np.testing.assert_allclose(t.translation, (-1.25, 0.65, -2.61), atol=1e-12)
    S = np.diag([-1.0, -1.0, 1.0])
    R_dh = rodrigues([0, 1, 0], 13.6)
    np.testing.assert_allclose(t.R, S @ R_dh @ S, atol=1e-12)
    # the same, seen as a rotation about the camera's -Y (image-up) axis
    np.testing.assert_allclose(t.R, rodrigues([0, -1, 0], 13.6), atol=1e-12)
    assert t.scale == 1.0


def test_axis_length_does_not_matter_and_export_normalises():
    a = D.transform_from_dh({"translation": [0, 0, 0], "rotation_axis": [0.0, 2.5, 0.0], "rotation_angle": 30.0})
    b = D.transform_from_dh({"translation": [0, 0, 0], "rotation_axis": [0.0, 1.0, 0.0], "rotation_angle": 30.0})
    np.testing.assert_allclose(a.R, b.R, atol=1e-12)
    out = D.transform_to_dh(a)
    assert out["rotation_axis"] == [0.0, 1.0, 0.0] and out["rotation_angle"] == pytest.approx(30.0, abs=1e-9)


def test_export_conventions():
    ident = D.transform_to_dh(Transform3D())
    assert ident == {"translation": [0.0, 0.0, 0.0], "rotation_axis": [0.0, 1.0, 0.0], "rotation_angle": 0.0}
    neg = D.transform_to_dh(D.transform_from_dh({"translation": [0, 0, 0], "rotation_axis": [0, 1, 0], "rotation_angle": -29.1}))
    assert neg["rotation_axis"] == [0.0, 1.0, 0.0] and neg["rotation_angle"] == pytest.approx(-29.1, abs=1e-9)
    flipped = D.transform_to_dh(D.transform_from_dh({"translation": [0, 0, 0], "rotation_axis": [0, -1, 0], "rotation_angle": 40}))
    assert flipped["rotation_axis"] == [0.0, 1.0, 0.0] and flipped["rotation_angle"] == pytest.approx(-40.0, abs=1e-9)
    scaled = D.transform_to_dh(Transform3D(scale=1.5))
    assert scaled["scale"] == 1.5
    assert D.transform_from_dh(scaled).scale == 1.5


@pytest.mark.parametrize(
    "edit, words",
    [
        ({"translation": [1, 2]}, ["translation", "3 finite numbers"]),
        ({"translation": [1, 2, float("nan")]}, ["translation"]),
        ({"rotation_axis": [0, 0, 0], "rotation_angle": 10}, ["rotation_axis is zero"]),
        ({"rotation_angle": "ten"}, ["rotation_angle"]),
        ({"scale": 0}, ["scale"]),
        ({"translate": [0, 0, 0]}, ["unknown keys", "translate"]),
        ([1, 2, 3], ["an edit must be an object"]),
    ],
)
def test_bad_edits(edit, words):
    with pytest.raises(InputError) as e:
        D.transforms_from_dh({"edit_007": edit}, "t.json")
    msg = str(e.value)
    assert "t.json" in msg and "edit_007" in msg and "\n" not in msg
    for w in words:
        assert w in msg, msg


# ----------------------------------------------------------------------------- scene folders
def test_load_synthetic_non_square_scene(tmp_path):
    tr = {
        "edit_000": {"translation": [0.3, 0.1, -0.5], "rotation_axis": [1, 0, 0], "rotation_angle": 10.0},
        "edit_001": {"translation": [0, 0, 0], "rotation_axis": [0, 1, 0], "rotation_angle": 0.0},
    }
    folder = make_dh_folder(tmp_path / "sq", transforms=tr)
    s = D.load_dh_scene(folder)
    assert s.size == (512, 384) and s.camera.fov_deg == 55.0
    assert [o.name for o in s.objects] == ["object"] and s.prompt == "a red square" and s.name == "sq"
    assert s.original_photo.shape == (480, 640, 3)
    # mask and depth resized consistently: the square covers [96, 192) x [128, 256) at 512x384
    m = s.objects[0].mask
    ys, xs = np.nonzero(m)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (96, 192, 128, 256)
    np.testing.assert_array_equal(s.depth[m], 2.0)
    np.testing.assert_array_equal(s.depth[~m], 5.0)  # no blended depths at the square's edge
    assert np.all(s.photo[m][:, 0] > 200)
    np.testing.assert_array_equal(s.background_depth, 5.0)
    assert set(s.variants) == {"edit_000", "edit_001"} and set(s.variants["edit_000"]) == {"object"}
    np.testing.assert_allclose(s.variants["edit_000"]["object"].translation, (-0.3, -0.1, -0.5), atol=1e-12)
    np.testing.assert_allclose(s.variants["edit_000"]["object"].R, rodrigues([-1, 0, 0], 10.0), atol=1e-12)
    assert s.objects[0].transform.is_identity()


def test_optional_files_and_mask_threshold(tmp_path):
    m = np.zeros((64, 64), np.uint8)
    m[10:20, 10:20] = 128  # > 127: in
    m[30:40, 30:40] = 127  # not in
    folder = make_dh_folder(tmp_path / "min", w=64, h=64, bg=False, prompt=None, mask_values=m)
    s = D.load_dh_scene(folder, long_side=64)
    assert s.size == (64, 64) and s.prompt == "" and s.variants == {} and s.background_depth is None
    assert s.objects[0].mask.sum() == 100 and s.objects[0].mask[15, 15] and not s.objects[0].mask[35, 35]


def test_bad_scene_folders(tmp_path):
    with pytest.raises(InputError) as e:
        D.load_dh_scene(tmp_path / "nope")
    assert "not found" in str(e.value)
    folder = make_dh_folder(tmp_path / "a", w=64, h=64)
    (folder / "depth.exr").unlink()
    with pytest.raises(InputError) as e:
        D.load_dh_scene(folder)
    assert "missing depth.exr" in str(e.value)

    folder = make_dh_folder(tmp_path / "b", w=64, h=64)
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(folder / "mask.png")
    with pytest.raises(InputError) as e:
        D.load_dh_scene(folder)
    assert "mask.png" in str(e.value) and "64x32" in str(e.value)

    folder = make_dh_folder(tmp_path / "c", w=64, h=64)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / "mask.png")
    with pytest.raises(InputError) as e:
        D.load_dh_scene(folder)
    assert "empty" in str(e.value)

    folder = make_dh_folder(tmp_path / "d", w=64, h=64)
    (folder / "transforms.json").write_text("{oops")
    with pytest.raises(InputError) as e:
        D.load_dh_scene(folder)
    assert "transforms.json" in str(e.value) and "JSON" in str(e.value)

    folder = make_dh_folder(tmp_path / "e", w=64, h=64)
    d = np.full((64, 64), 5.0, np.float32)
    d[3, 4] = np.nan
    write_exr(folder / "depth.exr", d, half=False)
    with pytest.raises(InputError) as e:
        D.load_dh_scene(folder)
    assert "depth.exr" in str(e.value) and "1 invalid value" in str(e.value) and "x=4, y=3" in str(e.value)
    assert not np.isnan(D.load_dh_scene(folder, repair=True).depth).any()


def test_write_transforms(tmp_path):
    folder = make_dh_folder(tmp_path / "w", w=64, h=64)
    s = D.load_dh_scene(folder, long_side=64)
    s.objects[0].transform = D.transform_from_dh({"translation": [0.5, 0, 0], "rotation_axis": [0, 1, 0], "rotation_angle": 5.0})
    out = D.write_transforms(s, tmp_path / "t.json")
    data = json.loads(out.read_text())
    assert list(data) == ["edit_000"]  # no variants: the current transform
    assert data["edit_000"]["translation"] == [0.5, 0.0, 0.0] and data["edit_000"]["rotation_angle"] == pytest.approx(5.0)
    s.add_object(s.objects[0].mask, "twin")
    s.variants = {"a": {"twin": Transform3D(translation=(1, 0, 0))}, "b": {}}
    data = json.loads(D.write_transforms(s, tmp_path / "t2.json", object_name="twin").read_text())
    assert data["a"]["translation"] == [-1.0, 0.0, 0.0] and data["b"]["translation"] == [0.0, 0.0, 0.0]
    with pytest.raises(KeyError):
        D.write_transforms(s, tmp_path / "t3.json", object_name="nobody")


# ----------------------------------------------------------------------------- hostile files (issue 8)
EDIT = {"translation": [0.1, 0.0, 0.0], "rotation_axis": [0, 1, 0], "rotation_angle": 5.0}


def test_more_edits_than_a_scene_holds_are_refused_before_converting_any(tmp_path, monkeypatch):
    from core.project import MAX_VARIANTS

    converted = []
    monkeypatch.setattr(D, "transform_from_dh", lambda d, where="": converted.append(where))
    with pytest.raises(InputError) as e:
        D.transforms_from_dh({f"edit_{i:06d}": EDIT for i in range(100_000)}, "t.json")
    assert str(e.value) == f"t.json: 100000 edits, more than the {MAX_VARIANTS} a scene may hold; split the file into smaller ones"
    assert converted == []
    monkeypatch.undo()
    folder = make_dh_folder(tmp_path / "many", w=64, h=64, transforms={f"e{i}": EDIT for i in range(MAX_VARIANTS + 1)})
    with pytest.raises(InputError) as e:
        D.load_dh_scene(folder)
    assert "transforms.json" in str(e.value) and f"{MAX_VARIANTS + 1} edits" in str(e.value)


def test_import_and_export_of_many_edits_is_linear(tmp_path):
    """2 000 edits convert in well under a second each way (the per-edit path avoids numpy)."""
    import time

    data = {f"edit_{i:05d}": dict(EDIT, rotation_angle=i * 0.01) for i in range(2000)}
    t0 = time.process_time()
    ts = D.transforms_from_dh(data)
    back = D.transforms_to_dh(ts)
    assert time.process_time() - t0 < 3 and len(back) == 2000
    assert back["edit_01999"]["rotation_angle"] == pytest.approx(19.99) and back["edit_00007"]["translation"] == [0.1, 0.0, 0.0]


def test_exporting_more_variants_than_a_file_holds_is_refused(tmp_path):
    from core.project import MAX_VARIANTS

    folder = make_dh_folder(tmp_path / "s", w=64, h=64)
    s = D.load_dh_scene(folder, long_side=64)
    s.variants = {f"v{i}": {} for i in range(MAX_VARIANTS + 1)}
    with pytest.raises(InputError) as e:
        D.write_transforms(s, tmp_path / "t.json")
    assert f"{MAX_VARIANTS + 1} variants" in str(e.value) and "delete some variants" in str(e.value)
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    "text, words",
    [
        ("[" * 200_000 + "]" * 200_000, ["nested too deeply"]),
        ('{"e": {"translation": ' + "[" * 500 + "1" + "]" * 500 + "}}", ["edit 'e'", "translation must be 3 finite numbers"]),
        ('[{"translation": [0, 0, 0]}]', ["expected an object of named edits", "got a list"]),
        ('{"e": {"translation": [1e999, 0, 0]}}', ["translation"]),
        ('{"e": {"translation": [' + "9" * 400 + ", 0, 0]}}", ["translation"]),
        ('{"e": {"scale": ' + "9" * 400 + "}}", ["scale"]),
        ('{"' + "n" * 10_000 + '": []}', ["an edit must be an object"]),
    ],
)
def test_hostile_transforms_json(tmp_path, text, words):
    folder = make_dh_folder(tmp_path / "h", w=64, h=64)
    (folder / "transforms.json").write_text(text)
    with pytest.raises(InputError) as e:
        D.load_dh_scene(folder)
    msg = str(e.value)
    assert "\n" not in msg and "transforms.json" in msg and len(msg) < 400, msg
    for w in words:
        assert w in msg, msg


def test_depth_is_checked_against_the_photos_aspect_not_only_the_working_size(tmp_path):
    """A 960x540 photo works at 512x320 (aspect 1.6, the working size's bin holds 1.5 to 1.71); a
    660x400 depth (1.65) has neither the photo's aspect (1.78) nor the working size's: it would be
    stretched, and was accepted before the photo's size was passed to the loader."""
    folder = make_dh_folder(tmp_path / "wide", w=960, h=540, bg=False)
    write_exr(folder / "depth.exr", np.full((400, 660), 5.0, np.float32))
    with pytest.raises(InputError) as e:
        D.load_dh_scene(folder)
    msg = str(e.value)
    assert "depth.exr" in msg and "660x400" in msg and "the photo is 960x540" in msg and "\n" not in msg, msg
    write_exr(folder / "depth.exr", np.full((270, 480), 5.0, np.float32))  # the photo's aspect, half size: resampled
    assert D.load_dh_scene(folder).depth.shape == (320, 512)
    write_exr(folder / "bg_depth.exr", np.full((400, 660), 5.0, np.float32))  # the background depth too
    with pytest.raises(InputError, match="bg_depth.exr.*660x400.*the photo is 960x540"):
        D.load_dh_scene(folder)


@pytest.mark.parametrize("w, h", [(1, 1), (64, 1), (1, 64), (3, 200)])
def test_a_photo_with_a_tiny_side_is_one_line_naming_the_photo(tmp_path, w, h):
    folder = make_dh_folder(tmp_path / "tiny", w=w, h=h, bg=False, mask_values=np.full((h, w), 255, np.uint8))
    with pytest.raises(InputError) as e:
        D.load_dh_scene(folder)
    msg = str(e.value)
    assert f"the photo is {w}x{h} pixels and its depth map {w}x{h}" in msg and "at least 8 pixels a side" in msg and "\n" not in msg, msg


def test_edit_vectors_are_numbers_not_strings_booleans_or_nested_lists():
    for bad in (["1", "2", "3"], [True, False, True], [[1], [2], [3]], "1 2 3", {"x": 1, "y": 2, "z": 3}):
        with pytest.raises(InputError, match="translation must be 3 finite numbers"):
            D.transform_from_dh({"translation": bad})
    with pytest.raises(InputError, match="rotation_angle must be a number"):
        D.transform_from_dh({"rotation_angle": True})
    t = D.transform_from_dh({"translation": np.array([1.0, 2.0, 3.0]), "rotation_axis": (0, np.float32(1), 0), "rotation_angle": np.int64(10)})
    assert np.allclose(t.t, [-1.0, -2.0, 3.0])
    tiny = D.transform_from_dh({"rotation_axis": [0.0, 1e-300, 0.0], "rotation_angle": 30})  # a direction, not zero
    assert tiny.axis_angle()[1] == pytest.approx(30.0)


def test_write_transforms_names_its_temporary_and_removes_dead_ones(tmp_path):
    from core.project import _writer_tag

    folder = make_dh_folder(tmp_path / "s", w=64, h=64)
    s = D.load_dh_scene(folder, long_side=64)
    start, host = _writer_tag().split("-")[1:]
    proc = __import__("subprocess").Popen(["/bin/true"])
    proc.wait()
    dead = tmp_path / f".t.json.w{proc.pid}-{start}-{host}.abc.tmp"
    dead.write_text("{")
    D.write_transforms(s, tmp_path / "t.json")
    assert not dead.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["s", "t.json"]


# ----------------------------------------------------------------------------- photogen
def _rotation_of(edit) -> np.ndarray:
    return rodrigues(edit["rotation_axis"], edit["rotation_angle"]) if edit["rotation_angle"] else np.eye(3)


def test_all_photogen_edits_round_trip(photogen_dir):
    scenes = photogen_scenes()
    assert scenes, f"no scenes in {photogen_dir}"
    total = 0
    for folder in scenes:
        src = json.loads((folder / "transforms.json").read_text())
        back = D.transforms_to_dh(D.transforms_from_dh(src))
        assert list(back) == list(src)
        for name, e in src.items():
            b = back[name]
            np.testing.assert_allclose(b["translation"], e["translation"], atol=1e-6, err_msg=f"{folder.name}/{name}")
            np.testing.assert_allclose(_rotation_of(b), _rotation_of(e), atol=1e-6, err_msg=f"{folder.name}/{name}")
            # the reference files use unit axes: the raw numbers come back too
            if abs(np.linalg.norm(e["rotation_axis"]) - 1) < 1e-9:
                np.testing.assert_allclose(b["rotation_axis"], e["rotation_axis"], atol=1e-6)
                assert b["rotation_angle"] == pytest.approx(e["rotation_angle"], abs=1e-6)
            total += 1
    if len(scenes) == len(EDIT_COUNTS):
        assert total == 73


@pytest.mark.parametrize(
    "folder",
    photogen_scenes() or [pytest.param(None, marks=pytest.mark.skip(reason=f"photogen scenes not found at {PHOTOGEN} (set HANDLES_PHOTOGEN)"))],
    ids=lambda p: p.name if p else "none",
)
def test_photogen_import_project_export(folder, tmp_path):
    s = D.load_dh_scene(folder)
    assert s.size == (512, 512) and s.objects[0].mask.any() and s.background_depth is not None
    if folder.name in EDIT_COUNTS:
        assert len(s.variants) == EDIT_COUNTS[folder.name]
    # import -> project file -> export: the same edits
    save_project(tmp_path / "p.handles", Project(s))
    q = load_project(tmp_path / "p.handles")
    D.write_transforms(q.scene, tmp_path / "t.json")
    src = json.loads((folder / "transforms.json").read_text())
    out = json.loads((tmp_path / "t.json").read_text())
    assert list(out) == list(src)
    for name in src:
        np.testing.assert_allclose(out[name]["translation"], src[name]["translation"], atol=1e-6)
        np.testing.assert_allclose(_rotation_of(out[name]), _rotation_of(src[name]), atol=1e-6)


def test_photogen_listing_matches_the_readme(photogen_dir):
    names = {p.name for p in photogen_scenes()}
    if not names:
        pytest.skip(f"no photogen scenes in {photogen_dir}")
    assert names <= set(EDIT_COUNTS)
