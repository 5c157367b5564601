"""CLI hardening (issue 8 part 4): unknown commands, output paths refused before any work, and
``--model org/name`` versus a missing local folder."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

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
