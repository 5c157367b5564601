"""`handles-studio render` end to end with the tiny model (a photogen scene; a project with a stored identity)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from tiny_sd import synthetic_scene  # noqa: E402


def _run(*args, env_extra=None):
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "core.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_render_a_photogen_scene(photogen_scene, tiny_sd_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "car.png"
    r = _run("render", photogen_scene, "--variant", "edit_000", "--model", tiny_sd_dir, "--steps", "3",
             "--resolution", "128", "--device", "cpu", "-o", out)
    assert r.returncode == 0, r.stderr
    im = Image.open(out)
    assert im.size == (512, 512)  # the scene's working size
    assert "render [" in r.stderr and "identity [" in r.stderr  # the progress bar
    assert "wrote" in r.stdout


def test_missing_model_is_one_line_with_the_fetch_command(photogen_scene, tmp_path):
    r = _run("render", photogen_scene, "--variant", "edit_000", "--model", "stabilityai/stable-diffusion-2-depth",
             "-o", tmp_path / "x.png", env_extra={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")})
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "hf download stabilityai/stable-diffusion-2-depth" in lines[0]


def test_project_identity_is_stored_and_reused(tiny_sd_dir, tmp_path):
    from PIL import Image

    from core.project import Project, load_project, save_project

    proj = tmp_path / "box.handles"
    save_project(proj, Project(scene=synthetic_scene(128, 64)))
    a = tmp_path / "a.png"
    r1 = _run("render", proj, "--translate", "0.3", "0", "0", "--model", tiny_sd_dir, "--steps", "3",
              "--device", "cpu", "-o", a, "--save-identity")
    assert r1.returncode == 0, r1.stderr
    assert "stored the identity" in r1.stderr
    assert any(k.startswith("identity:") for k in load_project(proj).caches)
    b = tmp_path / "b.png"
    r2 = _run("render", proj, "--translate", "0.3", "0", "0", "--model", tiny_sd_dir, "--steps", "3",
              "--device", "cpu", "-o", b)
    assert r2.returncode == 0, r2.stderr
    assert "reusing the identity stored" in r2.stderr and "identity reused" in r2.stdout
    assert "identity [" not in r2.stderr  # no inversion this time
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_save_identity_needs_a_project(photogen_scene, tiny_sd_dir, tmp_path):
    r = _run("render", photogen_scene, "--variant", "edit_000", "--model", tiny_sd_dir, "-o", tmp_path / "x.png", "--save-identity")
    assert r.returncode == 1 and "project" in r.stderr
