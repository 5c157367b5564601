"""CLI hardening (issue 8 part 4): unknown commands, output paths refused before any work, and
``--model org/name`` versus a missing local folder."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import main as launcher  # noqa: E402  (the handles-studio entry point: GUI or CLI)


@pytest.fixture
def fake_editor(monkeypatch):
    """Replace editor.app with a stub that records the argv it was asked to open."""
    calls: list[list[str]] = []
    mod = types.ModuleType("editor.app")
    mod.run = lambda argv: calls.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "editor.app", mod)
    return calls


# ----------------------------------------------------------------------------- 1. unknown command
def test_unknown_command_is_a_usage_error(fake_editor, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert launcher.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "frobnicate" in err
    assert launcher.main(["--debug", "frobnicate"]) == 2
    assert fake_editor == []


def test_paths_still_open_the_editor(fake_editor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(b"")
    (tmp_path / "scene").mkdir()
    (tmp_path / "noext").write_bytes(b"")
    for arg in ("photo.jpg", "p.handles", "scene", "noext", str(tmp_path / "scene"), "missing/photo.jpg"):
        assert launcher.main([arg]) == 0
    assert launcher.main([]) == 0
    assert launcher.main(["--no-gl", "photo.jpg"]) == 0
    assert [c[0] if c else None for c in fake_editor] == [
        "photo.jpg",
        "p.handles",
        "scene",
        "noext",
        str(tmp_path / "scene"),
        "missing/photo.jpg",
        None,
        "--no-gl",
    ]


# ----------------------------------------------------------------------------- 2. export-transforms -o t.xyz
def test_export_transforms_refuses_unknown_extension_before_loading(tmp_path, capsys):
    # the project does not exist: the output name must be refused first
    assert cli_main(["export-transforms", str(tmp_path / "nope.handles"), "-o", str(tmp_path / "t.xyz")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "t.xyz" in err and ".json" in err
    assert not (tmp_path / "t.xyz").exists()
    (tmp_path / "d.json").mkdir()
    assert cli_main(["export-transforms", str(tmp_path / "nope.handles"), "-o", str(tmp_path / "d.json")]) == 1
    assert "folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 3. depth -o DIR
@pytest.fixture
def no_model_run(monkeypatch):
    import core.io
    import core.ml.depth

    def boom(*a, **k):
        raise AssertionError("the output path must be checked before any work")

    monkeypatch.setattr(core.ml.depth, "DepthEstimator", boom)
    monkeypatch.setattr(core.io, "load_photo", boom)


def test_depth_output_folder_refused_before_the_model_run(tmp_path, capsys, no_model_run):
    (tmp_path / "d.exr").mkdir()
    photo = tmp_path / "photo.png"
    assert cli_main(["depth", str(photo), "-o", str(tmp_path / "d.exr")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "folder" in err
    assert cli_main(["depth", str(photo), "-o", str(tmp_path / "missing" / "d.exr")]) == 1
    assert "missing" in capsys.readouterr().err
    assert cli_main(["depth", str(photo), "-o", str(tmp_path)]) == 1  # an existing folder, no extension


# ----------------------------------------------------------------------------- 4. --model models/nonexistent
@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HANDLES_MODEL_DIRS", raising=False)
    monkeypatch.chdir(tmp_path)


def test_missing_relative_model_folder_is_named_as_a_folder(empty_caches, tmp_path, capsys):
    (tmp_path / "models").mkdir()
    assert cli_main(["models", "check", "models/nonexistent"]) == 1
    err = capsys.readouterr().err
    assert "model folder models/nonexistent does not exist" in err
    assert "fetch" not in err


def test_org_name_without_local_folder_stays_a_repo_id(empty_caches, capsys):
    assert cli_main(["models", "check", "someorg/somemodel"]) == 1
    err = capsys.readouterr().err
    assert "model 'someorg/somemodel' is not on disk; fetch it with" in err
    assert "no folder someorg/somemodel here either" in err  # it may have been meant as a folder
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save("photo.png")
    assert cli_main(["depth", "photo.png", "-o", "d.npy", "--model", "models/nonexistent"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no folder models/nonexistent here either" in err, err


# ----------------------------------------------------------------------------- 5. no raw warnings on the terminal
def _exr(path: Path, depth: np.ndarray) -> Path:
    import OpenEXR

    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"Y": OpenEXR.Channel(np.ascontiguousarray(depth))}) as f:
        f.write(str(path))
    return path


def _dh_folder(folder: Path, depth: np.ndarray | None = None, w: int = 64, h: int = 64) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / "input.png")
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : h // 2, w // 4 : w // 2] = 255
    Image.fromarray(m).save(folder / "mask.png")
    _exr(folder / "depth.exr", np.full((h, w), 3.0, np.float32) if depth is None else depth)
    return folder


def run_cli(*argv, timeout: float = 60) -> subprocess.CompletedProcess:
    """The command line in a fresh process, as a user runs it (Python's default warning filters):
    what reaches its stdout and stderr is what the terminal shows."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, argv)], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def assert_quiet(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """Exit ``code``; stderr empty (success) or one line of ours naming ``words``; nothing raw."""
    err = r.stderr.strip()
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    if code == 0:
        assert err == "", err
    else:
        assert len(err.splitlines()) == 1 and err.startswith("handles-studio: error: "), err
    for raw in ("Warning", "warnings.warn", "EXR_ERR", "RuntimeWarning", "Traceback"):
        assert raw not in r.stdout + r.stderr, r.stdout + r.stderr
    for w in words:
        assert w in err, err


def test_a_depth_map_of_the_photos_aspect_at_another_size_is_resampled_and_says_so(tmp_path):
    """Issue 8 part 4: a depth map of another size but the photo's aspect ratio is resampled (as
    before, when it did so silently) and the command says so: one warning line of ours naming the
    file, both sizes and the working size. A depth at the photo's size, or already at the working
    size, says nothing; one of another aspect is still refused."""
    half = _dh_folder(tmp_path / "half", depth=np.full((120, 160), 3.0, np.float32), w=320, h=240)
    expected = (
        f"handles-studio: warning: {half / 'depth.exr'}: depth map is 160x120 pixels, the photo 320x240: "
        "the photo's aspect ratio, resampled to the 512x384 working size"
    )
    for argv in (["import-scene", half, "-o", tmp_path / "h.handles"], ["preview", half, "--translate", "0.1", "0", "0", "-o", tmp_path / "h.png"]):
        r = run_cli(*argv)
        assert r.returncode == 0 and r.stdout.startswith("wrote "), (r.returncode, r.stdout, r.stderr)
        assert r.stderr.splitlines() == [expected], r.stderr
    assert (tmp_path / "h.handles").is_file() and (tmp_path / "h.png").is_file()
    same = _dh_folder(tmp_path / "same", w=320, h=240)
    working = _dh_folder(tmp_path / "working", depth=np.full((384, 512), 3.0, np.float32), w=320, h=240)
    for folder in (same, working):
        assert_quiet(run_cli("import-scene", folder, "-o", tmp_path / f"{folder.name}.handles"), 0)
    other = _dh_folder(tmp_path / "other", depth=np.full((120, 200), 3.0, np.float32), w=320, h=240)
    assert_quiet(run_cli("import-scene", other, "-o", tmp_path / "o.handles"), 1, "depth.exr", "200x120", "320x240", "stretched")


def test_pillow_warnings_on_odd_images_stay_off_the_terminal(tmp_path):
    """A mask whose palette gives transparency as bytes and a photo with a corrupt EXIF block made
    Pillow print UserWarnings (two lines each, with its source path); they go to the log now."""
    folder = _dh_folder(tmp_path / "odd")
    im = Image.new("P", (64, 64), 0)
    im.putpalette([0, 0, 0] + [255, 255, 255] * 255)
    im.paste(1, (16, 16, 40, 40))
    im.save(folder / "mask.png", transparency=b"\x00\x80")
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\xff\xff"  # claims 5 tags, holds one
    Image.open(folder / "input.png").save(folder / "input.png", exif=exif)
    r = run_cli("import-scene", folder, "-o", tmp_path / "o.handles")
    assert_quiet(r, 0)
    from core.project import load_project

    mask = load_project(tmp_path / "o.handles").scene.objects[0].mask
    assert mask[17 * 8 : 39 * 8, 17 * 8 : 39 * 8].all() and not mask[: 15 * 8].any()  # the palette's gray, not its alpha


def test_a_damaged_exr_is_one_line_not_openexrs_output(tmp_path):
    """OpenEXR printed a 'Warning: Exception raised reading pixel data' line on stdout and an
    EXR_ERR line on stderr (C level, past Python) before our error."""
    folder = _dh_folder(tmp_path / "cut", np.random.default_rng(1).uniform(1, 5, (64, 64)).astype(np.float32))
    data = (folder / "depth.exr").read_bytes()
    (folder / "depth.exr").write_bytes(data[:-100])  # the last chunk cut short
    r = run_cli("preview", folder, "--translate", "0.1", "0", "0", "-o", tmp_path / "p.png")
    assert_quiet(r, 1, "depth.exr: damaged or unreadable EXR file", "scanline")
    assert r.stdout == "" and not (tmp_path / "p.png").exists()


def test_numpy_overflow_becomes_one_line_about_the_depth(tmp_path):
    """Depth beyond float32 (a float64 .npy of 1e300 in a project, an EXR of 3e38) made NumPy warn
    'overflow encountered in cast/reduce' from the geometry; it is an invalid depth now."""
    import json
    import zipfile

    from core.project import Project, save_project
    from core.sample import sample_scene

    path = save_project(tmp_path / "s.handles", Project(scene=sample_scene(128, 64)))
    with zipfile.ZipFile(path) as zf:
        entries = [(i, zf.read(i)) for i in zf.infolist()]
    buf = io.BytesIO()
    np.save(buf, np.full((64, 128), 1e300))
    with zipfile.ZipFile(tmp_path / "big.handles", "w") as out:
        for info, data in entries:
            out.writestr(info, buf.getvalue() if info.filename == json.loads(entries[-1][1])["scene"]["depth"] else data)
    assert_quiet(run_cli("info", tmp_path / "big.handles"), 0)
    r = run_cli("preview", tmp_path / "big.handles", "--object", "box", "--translate", "0.1", "0", "0", "-o", tmp_path / "p.png")
    assert_quiet(r, 1, "depth has 8192 invalid values", "outside 1e-12 to 1e+12")
    folder = _dh_folder(tmp_path / "huge", np.full((64, 64), 3e38, np.float32))
    assert_quiet(run_cli("import-scene", folder, "-o", tmp_path / "h.handles"), 1, "depth.exr: 4096 invalid values", "over 1e+12 4096")


def test_extreme_edits_preview_without_warnings(tmp_path):
    """A rotation axis of 1e300 overflowed --rotate-axis's norm, a transforms.json translation of
    1e300 and a scale of 1e300 overflowed the warp's float32 casts: finite edits are all fine now
    (an object moved out of float range is simply out of view)."""
    import json

    folder = _dh_folder(tmp_path / "far")
    (folder / "transforms.json").write_text(json.dumps({"far": {"translation": [1e300, 1e300, 1e300]}, "big": {"scale": 1e300}}))
    for args in (["--variant", "far"], ["--variant", "big"], ["--rotate-axis", "1e300", "1e300", "0", "--rotate-deg", "30"]):
        r = run_cli("preview", folder, *args, "-o", tmp_path / "p.png", "--depth-out", tmp_path / "d.exr")
        assert_quiet(r, 0)


def test_the_programs_own_warnings_are_one_line_and_librarys_go_to_the_log(capsys, caplog):
    import warnings

    from core import cli, settings

    with cli._warnings_as_lines(debug=False):
        warnings.warn_explicit("settings: /x/settings.json is damaged (Expecting value)\n; using defaults", UserWarning, settings.__file__, 170)
        np.float32(3e38) * np.float32(10)  # NumPy's own RuntimeWarning
    assert capsys.readouterr().err == "handles-studio: warning: settings: /x/settings.json is damaged (Expecting value) ; using defaults\n"
    assert "overflow encountered" in caplog.text and "RuntimeWarning" in caplog.text
    with cli._warnings_as_lines(debug=True):
        np.float32(3e38) * np.float32(10)
    assert "RuntimeWarning: overflow encountered" in capsys.readouterr().err
