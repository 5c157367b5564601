"""The headless command line: exit codes, help, and the project/preview commands on real and synthetic scenes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core
from core.cli import main

REPO = Path(__file__).resolve().parents[2]
PHOTOGEN = Path(os.environ.get("HANDLES_PHOTOGEN", REPO.parent / "shared" / "photogen"))


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def focal(width, height, fov=55.0):
    """Pinhole focal length in pixels (fov over the long side), computed here, not with core.camera."""
    return (max(width, height) / 2) / math.tan(math.radians(fov) / 2)


def write_exr(path, depth):
    import OpenEXR

    header = {"compression": OpenEXR.PIZ_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Y": OpenEXR.Channel(np.ascontiguousarray(depth, np.float16))}) as f:
        f.write(str(path))


@pytest.fixture
def square_scene(tmp_path) -> Path:
    """A 512x512 DH scene: a red fronto-parallel square (rows/cols 128..255) at depth 2 before a blue wall at 5."""
    folder = tmp_path / "square"
    folder.mkdir()
    photo = np.full((512, 512, 3), (30, 60, 200), np.uint8)
    mask = np.zeros((512, 512), np.uint8)
    mask[128:256, 128:256] = 255
    photo[mask > 0] = (230, 20, 20)
    depth = np.where(mask > 0, 2.0, 5.0).astype(np.float32)
    Image.fromarray(photo).save(folder / "input.png")
    Image.fromarray(mask).save(folder / "mask.png")
    write_exr(folder / "depth.exr", depth)
    write_exr(folder / "bg_depth.exr", np.full((512, 512), 5.0, np.float32))
    (folder / "prompt.txt").write_text("a red square before a blue wall")
    (folder / "transforms.json").write_text(
        json.dumps(
            {
                "left": {"translation": [0.3, 0.0, 0.0], "rotation_axis": [0.0, 1.0, 0.0], "rotation_angle": 0.0},
            }
        )
    )
    return folder


def red(img: np.ndarray) -> np.ndarray:
    return (img[..., 0] > 150) & (img[..., 2] < 100)


# ----------------------------------------------------------------------------- basics
def test_version_and_help(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and core.__version__ in out
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for cmd in ("sample", "import-scene", "export-transforms", "info", "preview"):
        assert cmd in out
    code, out, _ = run(["preview", "--help"], capsys)
    assert code == 0 and "--frame" in out and "Diffusion Handles frame" in out and "default for scene" in out


def test_usage_errors_exit_2(capsys, square_scene, tmp_path):
    assert run([], capsys)[0] == 2
    assert run(["no-such-command"], capsys)[0] == 2
    assert run(["import-scene"], capsys)[0] == 2  # missing DIR and -o
    assert run(["preview", square_scene, "-o", tmp_path / "x.png", "--translate", "1", "2"], capsys)[0] == 2
    code, _, err = run(["preview", square_scene, "-o", tmp_path / "x.png", "--variant", "left", "--translate", "1", "2", "3"], capsys)
    assert code == 2 and "not allowed with" in err
    code, _, err = run(["preview", square_scene, "-o", tmp_path / "x.png", "--rotate-deg", "5", "--variant", "left"], capsys)
    assert code == 2 and "not allowed with" in err
    assert not (tmp_path / "x.png").exists()


def test_failures_exit_1_with_one_line(capsys, tmp_path):
    code, out, err = run(["import-scene", tmp_path / "nope", "-o", tmp_path / "p.handles"], capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("handles-studio: error:") and "nope" in err
    assert "Traceback" not in err
    (tmp_path / "bad.handles").write_text("not a zip")
    code, _, err = run(["info", tmp_path / "bad.handles"], capsys)
    assert code == 1 and err.count("\n") == 1 and "bad.handles" in err
    code, _, err = run(["--debug", "info", tmp_path / "bad.handles"], capsys)
    assert code == 1 and "Traceback" in err


def test_console_entry_point_exit_codes(tmp_path):
    """The real process: exit statuses as a shell sees them."""

    def proc(*args):
        return subprocess.run([sys.executable, "-m", "core.cli", *map(str, args)], cwd=REPO, capture_output=True, text=True)

    assert proc("--version").returncode == 0
    r = proc("info", tmp_path / "missing.handles")
    assert r.returncode == 1 and "missing.handles" in r.stderr
    assert proc("info").returncode == 2


# ----------------------------------------------------------------------------- project commands
def test_import_info_export_on_a_scene_folder(capsys, square_scene, tmp_path):
    p = tmp_path / "sq.handles"
    code, out, _ = run(["import-scene", square_scene, "-o", p], capsys)
    assert code == 0 and p.is_file() and "1 variants" in out
    code, out, _ = run(["info", p], capsys)
    assert code == 0
    for s in (
        "name: square",
        "512x512",
        "2 .. 5 m",
        "55 deg",
        "object: 16384 px",
        "left / object",
        "translate (-0.3, 0, 0)",
        "DH frame: translate (0.3, 0, 0)",
        "renders: 0",
        f"file size: {p.stat().st_size}",
    ):
        assert s in out, (s, out)
    code, _, _ = run(["export-transforms", p, "-o", tmp_path / "t.json"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "t.json").read_text()) == json.loads((square_scene / "transforms.json").read_text())
    code, _, err = run(["import-scene", square_scene, "-o", tmp_path / "sq.zip"], capsys)
    assert code == 1 and ".handles" in err


def test_sample_info_and_preview(capsys, tmp_path):
    s = tmp_path / "sample.handles"
    code, out, _ = run(["sample", "-o", s], capsys)
    assert code == 0 and s.is_file()
    code, out, _ = run(["info", s], capsys)
    assert code == 0 and "640x448" in out and all(n in out for n in ("box", "sphere", "cylinder"))
    code, _, err = run(["preview", s, "--translate", "0.1", "0", "0", "-o", tmp_path / "x.png"], capsys)
    assert code == 1 and "--object" in err  # three objects: which one?
    code, _, _ = run(
        [
            "preview",
            s,
            "--object",
            "sphere",
            "--translate",
            "0.3",
            "0",
            "0",
            "-o",
            tmp_path / "p.png",
            "--depth-out",
            tmp_path / "d.npy",
            "--hole-out",
            tmp_path / "h.png",
        ],
        capsys,
    )
    assert code == 0
    img = np.asarray(Image.open(tmp_path / "p.png"))
    assert img.shape == (448, 640, 3)
    d = np.load(tmp_path / "d.npy")
    assert d.shape == (448, 640) and d.dtype == np.float32 and np.isfinite(d).all() and d.min() > 0
    hole = np.asarray(Image.open(tmp_path / "h.png"))
    assert hole.shape == (448, 640) and set(np.unique(hole)) <= {0, 255} and (hole == 255).any()


def test_photogen_import_export_preview(capsys, tmp_path):
    folder = PHOTOGEN / "car"
    if not (folder / "input.png").is_file():
        pytest.skip(f"photogen scene not found at {folder} (set HANDLES_PHOTOGEN)")
    p = tmp_path / "car.handles"
    assert run(["import-scene", folder, "-o", p], capsys)[0] == 0
    assert run(["export-transforms", p, "-o", tmp_path / "t.json"], capsys)[0] == 0
    src = json.loads((folder / "transforms.json").read_text())
    out = json.loads((tmp_path / "t.json").read_text())
    assert list(out) == list(src)
    for k in src:
        np.testing.assert_allclose(out[k]["translation"], src[k]["translation"], atol=1e-6)
        np.testing.assert_allclose(out[k]["rotation_angle"], src[k]["rotation_angle"], atol=1e-6)

    # preview edit_000 on the project and check the moved car against an independent projection
    code, _, _ = run(["preview", p, "--variant", "edit_000", "-o", tmp_path / "v.png", "--depth-out", tmp_path / "d.npy"], capsys)
    assert code == 0
    assert np.asarray(Image.open(tmp_path / "v.png")).shape == (512, 512, 3)
    edited = np.load(tmp_path / "d.npy")
    from core.io import load_depth

    depth = load_depth(folder / "depth.exr")
    mask = np.asarray(Image.open(folder / "mask.png").convert("L")) > 127
    f = focal(512, 512)
    ys, xs = np.nonzero(mask)
    z = depth[ys, xs].astype(np.float64)
    X = (xs + 0.5 - 256) * z / f
    Y = (ys + 0.5 - 256) * z / f
    tdh = src["edit_000"]["translation"]  # DH frame: +X left, +Y up -> camera: negate x and y
    X2, Y2, Z2 = X - tdh[0], Y - tdh[1], z + tdh[2]
    u = np.floor(X2 * f / Z2 + 256).astype(int)
    v = np.floor(Y2 * f / Z2 + 256).astype(int)
    ok = (u >= 0) & (u < 512) & (v >= 0) & (v < 512)
    assert ok.mean() > 0.9
    rel = np.abs(edited[v[ok], u[ok]] - Z2[ok]) / Z2[ok]
    assert np.mean(rel < 0.03) > 0.85, np.mean(rel < 0.03)


def test_preview_of_a_photogen_folder_uses_its_variants(capsys, tmp_path):
    folder = PHOTOGEN / "chair"
    if not (folder / "input.png").is_file():
        pytest.skip(f"photogen scene not found at {folder} (set HANDLES_PHOTOGEN)")
    code, _, _ = run(["preview", folder, "--variant", "edit_002", "-o", tmp_path / "c.png", "--hole-out", tmp_path / "h.png"], capsys)
    assert code == 0
    assert np.asarray(Image.open(tmp_path / "c.png")).shape == (512, 512, 3)
    assert (np.asarray(Image.open(tmp_path / "h.png")) == 255).any()
    code, _, err = run(["preview", folder, "--variant", "nope", "-o", tmp_path / "c.png"], capsys)
    assert code == 1 and "edit_000" in err


# ----------------------------------------------------------------------------- preview geometry
@pytest.mark.parametrize("frame, sign", [("dh", -1), ("camera", +1)])
def test_preview_translation_matches_projection(capsys, square_scene, tmp_path, frame, sign):
    """Moving the square 0.3 units along +X of the frame shifts it by 0.3 f / Z pixels (left in the DH frame)."""
    args = [
        "preview",
        square_scene,
        "--translate",
        "0.3",
        "0",
        "0",
        "-o",
        tmp_path / "p.png",
        "--depth-out",
        tmp_path / "d.npy",
        "--hole-out",
        tmp_path / "h.png",
    ]
    if frame == "camera":
        args += ["--frame", "camera"]
    code, _, _ = run(args, capsys)
    assert code == 0
    img = np.asarray(Image.open(tmp_path / "p.png"))
    assert img.shape == (512, 512, 3)
    shift = sign * 0.3 * focal(512, 512) / 2.0  # about 73.8 px
    r = red(img)
    ys, xs = np.nonzero(r)
    assert abs(xs.mean() + 0.5 - (192.0 + shift)) < 1.0  # square's pixel-centre mean is 192.0
    assert abs(ys.mean() + 0.5 - 192.0) < 1.0
    assert abs(r.sum() / 128**2 - 1) < 0.05
    d = np.load(tmp_path / "d.npy")
    lo, hi = int(math.ceil(128 + shift)) + 2, int(math.floor(256 + shift)) - 2
    np.testing.assert_allclose(d[130:254, lo:hi], 2.0, rtol=1e-3)
    hole = np.asarray(Image.open(tmp_path / "h.png")) == 255
    # the uncovered strip of the old square is hole (and background depth 5), nothing else is
    strip = (slice(130, 254), slice(int(256 + shift) + 3, 254)) if sign < 0 else (slice(130, 254), slice(130, int(128 + shift) - 3))
    assert hole[strip].mean() > 0.95
    np.testing.assert_allclose(d[strip], 5.0, rtol=1e-3)
    assert abs(hole.sum() - abs(shift) * 128) / (abs(shift) * 128) < 0.1
    assert not hole[:120].any() and not hole[264:].any()


def test_preview_depth_move_scales_the_image(capsys, square_scene, tmp_path):
    """Translated from Z=2 to Z=1 (DH +Z is forward, as in the camera frame), the square's image doubles."""
    code, _, _ = run(["preview", square_scene, "--translate", "0", "0", "-1", "-o", tmp_path / "p.png", "--depth-out", tmp_path / "d.npy"], capsys)
    assert code == 0
    r = red(np.asarray(Image.open(tmp_path / "p.png")))
    assert abs(r.sum() / (256**2) - 1) < 0.05
    ys, xs = np.nonzero(r)
    # (x - 256) doubles about the principal point: [128, 256) -> [0, 256)
    assert xs.min() <= 1 and 254 <= xs.max() <= 256 and ys.min() <= 1 and 254 <= ys.max() <= 256
    d = np.load(tmp_path / "d.npy")
    np.testing.assert_allclose(d[10:246, 10:246], 1.0, rtol=1e-3)


def test_preview_variant_equals_the_same_manual_transform(capsys, square_scene, tmp_path):
    assert run(["preview", square_scene, "--variant", "left", "-o", tmp_path / "a.png"], capsys)[0] == 0
    assert run(["preview", square_scene, "--translate", "0.3", "0", "0", "-o", tmp_path / "b.png"], capsys)[0] == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))


def test_preview_scale_and_long_side(capsys, square_scene, tmp_path):
    code, _, _ = run(["preview", square_scene, "--scale", "1.5", "--long-side", "256", "-o", tmp_path / "s.png"], capsys)
    assert code == 0
    img = np.asarray(Image.open(tmp_path / "s.png"))
    assert img.shape == (256, 256, 3)
    assert abs(red(img).sum() / (64 * 1.5) ** 2 - 1) < 0.08
    code, _, err = run(["preview", square_scene, "--rotate-axis", "0", "0", "0", "--rotate-deg", "10", "-o", tmp_path / "z.png"], capsys)
    assert code == 1 and "--rotate-axis" in err
    code, _, err = run(["preview", square_scene, "--scale", "-2", "-o", tmp_path / "z.png"], capsys)
    assert code == 1 and "--scale" in err
    code, _, err = run(["preview", square_scene, "-o", tmp_path / "z.gif2"], capsys)
    assert code == 1 and "unsupported" in err
