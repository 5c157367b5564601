"""The model store: catalog, hub-cache resolution, folder checks, `models` CLI."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_services import build_fake_renderer, build_tiny_depth_anything, build_tiny_sam, install_in_hub_cache, write_safetensors  # noqa: E402

from core.cli import main as cli_main  # noqa: E402
from core.errors import ModelError  # noqa: E402
from core.ml import store  # noqa: E402

DA_REPO = "depth-anything/Depth-Anything-V2-Small-hf"


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty HF_HOME for this test; no other model folders."""
    home = tmp_path / "hf_home"
    (home / "hub").mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", store.ENV_MODEL_DIRS):
        monkeypatch.delenv(var, raising=False)
    return home / "hub"


@pytest.fixture(scope="module")
def tiny_da(tmp_path_factory) -> Path:
    return build_tiny_depth_anything(tmp_path_factory.mktemp("da") / "tiny-da")


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory) -> Path:
    return build_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny-sam")


# --- catalog --------------------------------------------------------------------------------


def test_catalog_lists_the_agreed_models():
    entries = {e.repo: e for e in store.catalog()}
    assert entries["stabilityai/stable-diffusion-2-depth"].role == "renderer"
    assert entries["stabilityai/stable-diffusion-2-depth"].licence == "openrail++"
    assert entries[DA_REPO].role == "depth" and entries[DA_REPO].licence == "apache-2.0"
    assert entries["depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"].role == "depth"
    assert entries["depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf"].role == "depth"
    assert entries["facebook/sam-vit-base"].role == "segmenter"
    assert store.default_model("renderer").repo == "stabilityai/stable-diffusion-2-depth"
    assert store.default_model("depth").repo == DA_REPO
    assert store.default_model("segmenter").repo == "facebook/sam-vit-base"
    assert len({e.name for e in store.catalog()}) == len(store.catalog())


@pytest.mark.parametrize("entry", [e for e in store.catalog() if not e.bundled], ids=lambda e: e.name)
def test_fetch_command_matches_the_entry_and_fetches_every_required_file(entry):
    words = shlex.split(entry.fetch_command)
    assert words[:3] == ["hf", "download", entry.repo]
    assert words[words.index("--revision") + 1] == entry.revision
    includes = [words[i + 1] for i, w in enumerate(words) if w == "--include"]
    excludes = [words[i + 1] for i, w in enumerate(words) if w == "--exclude"]
    assert includes == list(entry.include) and excludes == list(entry.exclude)
    for alternatives in entry.required:
        assert any(store.matches_patterns(a, includes, excludes) for a in alternatives.split("|")), alternatives
    assert entry.size_bytes > 0


def test_the_bundled_world_model_is_complete_and_found_first(tmp_path, monkeypatch):
    entry = store.catalog_entry("world")
    assert entry.bundled and entry.role == "renderer" and entry.world_only and entry.resolution == 256
    folder = entry.bundled_path
    for alternatives in entry.required:
        assert any((folder / a).is_file() for a in alternatives.split("|")), alternatives
    weights = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    assert abs(weights - entry.size_bytes) <= 0.05 * entry.size_bytes
    # found with no cache and no extra folders, and reported as present
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HANDLES_MODEL_DIRS", raising=False)
    assert store.find_model("world").resolve() == folder.resolve()
    assert store.model_status(entry).state == "present"
    assert store.native_resolution(folder) == 256 and store.world_only(folder)
    assert store.native_resolution("sd2-depth") is None and not store.world_only("sd2-depth")


def test_catalog_names_resolve_case_insensitively():
    assert store.catalog_entry("SD2-Depth").repo == "stabilityai/stable-diffusion-2-depth"
    assert store.catalog_entry("facebook/sam-vit-base").name == "sam-vit-base"
    assert store.catalog_entry("Depth-Anything-V2-Small-hf").repo == DA_REPO
    assert store.catalog_entry("no-such-model") is None


# --- resolution -----------------------------------------------------------------------------


def test_hub_cache_snapshot_resolves_by_name_and_repo(hub, tiny_da):
    snap = install_in_hub_cache(tiny_da, hub, DA_REPO, commit="abc")
    assert (snap / "model.safetensors").is_symlink()
    assert store.find_model("depth-anything-v2-small") == snap
    assert store.find_model(DA_REPO, role="depth") == snap
    # the repo folder itself, given as a path, resolves to its snapshot
    assert store.find_model(str(hub / "models--depth-anything--Depth-Anything-V2-Small-hf")) == snap


def test_refs_pick_the_snapshot_and_a_broken_one_is_skipped(hub, tiny_da):
    good = install_in_hub_cache(tiny_da, hub, DA_REPO, commit="a" * 40, ref="main")
    other = install_in_hub_cache(tiny_da, hub, DA_REPO, commit="b" * 40, ref=None)
    (other / "model.safetensors").unlink()  # newer, incomplete, not the ref
    assert store.find_model("depth-anything-v2-small") == good
    # without refs/main the complete snapshot still wins over the broken one
    (hub / "models--depth-anything--Depth-Anything-V2-Small-hf" / "refs" / "main").unlink()
    assert store.find_model("depth-anything-v2-small") == good


def test_hf_hub_cache_variable_wins(tmp_path, monkeypatch, tiny_da):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    snap = install_in_hub_cache(tiny_da, tmp_path / "elsewhere", DA_REPO)
    assert store.hub_cache_dir() == tmp_path / "elsewhere"
    assert store.find_model("depth-anything-v2-small") == snap


def test_extra_model_dirs_env_and_argument(hub, tmp_path, monkeypatch, tiny_sam):
    import shutil

    plain = tmp_path / "my-models"
    shutil.copytree(tiny_sam, plain / "sam-vit-base")
    monkeypatch.setenv(store.ENV_MODEL_DIRS, str(tmp_path / "nothing-here") + ":" + str(plain))
    assert store.find_model("sam-vit-base") == plain / "sam-vit-base"
    monkeypatch.delenv(store.ENV_MODEL_DIRS)
    with pytest.raises(ModelError):
        store.find_model("sam-vit-base")
    other = tmp_path / "other"
    shutil.copytree(tiny_sam, other / "facebook" / "sam-vit-base")
    assert store.find_model("sam-vit-base", extra_dirs=[other]) == other / "facebook" / "sam-vit-base"


def test_missing_model_names_the_fetch_command(hub):
    with pytest.raises(ModelError) as err:
        store.find_model("sd2-depth")
    msg = str(err.value)
    assert "\n" not in msg
    assert store.catalog_entry("sd2-depth").fetch_command in msg
    assert str(hub) in msg
    with pytest.raises(ModelError, match="hf download someone/unknown-model"):
        store.find_model("someone/unknown-model")
    with pytest.raises(ModelError, match="unknown model 'nonsense'"):
        store.find_model("nonsense")
    with pytest.raises(ModelError, match="does not exist"):
        store.find_model(str(hub / "no" / "such" / "folder"))


def test_a_folder_path_is_checked_and_accepted(tmp_path, tiny_da, tiny_sam):
    assert store.find_model(tiny_da) == tiny_da
    assert store.find_model(str(tiny_sam), role="segmenter") == tiny_sam
    renderer = build_fake_renderer(tmp_path / "sd")
    assert store.find_model(renderer, role="renderer") == renderer
    assert store.check_model_folder(renderer) == "renderer"


def test_role_mismatch_is_an_error(tmp_path, tiny_da, tiny_sam):
    with pytest.raises(ModelError, match="segmenter model, not a depth"):
        store.find_model(tiny_sam, role="depth")
    with pytest.raises(ModelError, match="depth model, not a renderer"):
        store.find_model(tiny_da, role="renderer")
    with pytest.raises(ModelError, match="is a depth model, not a segmenter"):
        store.find_model("depth-anything-v2-small", role="segmenter")


# --- incomplete and corrupt folders ---------------------------------------------------------


@pytest.mark.parametrize(
    "remove, expected",
    [
        ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"),
        ("unet/config.json", "unet/config.json"),
        ("scheduler", "scheduler/scheduler_config.json"),
        ("tokenizer/merges.txt", "tokenizer/merges.txt"),
    ],
)
def test_renderer_missing_component_is_named(tmp_path, remove, expected):
    import shutil

    folder = build_fake_renderer(tmp_path / "sd")
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelError) as err:
        store.find_model(folder, role="renderer")
    msg = str(err.value)
    assert "incomplete" in msg and expected in msg and str(folder) in msg and "\n" not in msg


def test_truncated_safetensors_is_corrupt(tmp_path):
    folder = build_fake_renderer(tmp_path / "sd")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    write_safetensors(weights, n_values=1000)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelError, match=r"unet/diffusion_pytorch_model\.safetensors is corrupt \(truncated"):
        store.find_model(folder)


def test_garbage_and_lfs_pointer_weights_are_named(tmp_path, tiny_da):
    import shutil

    folder = tmp_path / "da"
    shutil.copytree(tiny_da, folder)
    (folder / "model.safetensors").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 99\n")
    with pytest.raises(ModelError, match=r"model\.safetensors is a Git LFS pointer"):
        store.find_model(folder)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match=r"model\.safetensors is corrupt"):
        store.find_model(folder)
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"model\.safetensors is corrupt \(empty"):
        store.find_model(folder)


def test_corrupt_config_and_wrong_unet_are_named(tmp_path, tiny_da):
    import shutil

    folder = tmp_path / "da"
    shutil.copytree(tiny_da, folder)
    (folder / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="preprocessor_config.json is corrupt"):
        store.find_model(folder, role="depth")
    sd = build_fake_renderer(tmp_path / "sd15", in_channels=4)
    with pytest.raises(ModelError, match="in_channels=4: not a depth-conditioned UNet"):
        store.find_model(sd)


def test_incomplete_catalog_snapshot_names_component_and_command(hub, tiny_da):
    snap = install_in_hub_cache(tiny_da, hub, DA_REPO)
    (snap / "preprocessor_config.json").unlink()
    with pytest.raises(ModelError) as err:
        store.find_model("depth-anything-v2-small")
    msg = str(err.value)
    assert "preprocessor_config.json" in msg and store.catalog_entry(DA_REPO).fetch_command in msg
    status = store.model_status(store.catalog_entry(DA_REPO))
    assert status.state == "incomplete" and status.path == snap


# --- models CLI -----------------------------------------------------------------------------


def test_models_list_shows_present_and_missing(hub, tiny_da, capsys):
    snap = install_in_hub_cache(tiny_da, hub, DA_REPO)
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    da_block = out[out.index("depth-anything-v2-small ") :].splitlines()[:2]
    assert "present" in da_block[1] and str(snap) in da_block[1] and "on disk" in da_block[1]
    sd_block = out[out.index("sd2-depth") :].splitlines()[:2]
    assert "missing" in sd_block[1] and store.catalog_entry("sd2-depth").fetch_command in sd_block[1]
    assert "2 of 6 models present." in out  # the depth model above and the bundled world model
    world_block = out[out.index("\nworld ") + 1 :].splitlines()[:2]
    assert "renderer" in world_block[0] and "present" in world_block[1]

    assert cli_main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["depth-anything-v2-small"]["state"] == "present"
    assert rows["depth-anything-v2-small"]["path"] == str(snap)
    disk = sum(f.stat().st_size for f in tiny_da.iterdir())
    assert rows["depth-anything-v2-small"]["size_on_disk"] == disk
    assert rows["sam-vit-base"]["state"] == "missing" and rows["sam-vit-base"]["path"] is None


def test_models_check_cli(hub, tiny_sam, capsys):
    assert cli_main(["models", "check", str(tiny_sam)]) == 0
    assert f"segmenter model at {tiny_sam}" in capsys.readouterr().out
    assert cli_main(["models", "check", "sam-vit-base"]) == 1
    err = capsys.readouterr().err
    assert "hf download facebook/sam-vit-base" in err and len(err.strip().splitlines()) == 1


def test_download_refuses_when_the_user_is_offline(hub, monkeypatch, capsys):
    import core.ml

    monkeypatch.setattr(core.ml, "USER_HF_HUB_OFFLINE", "1")
    assert cli_main(["models", "download", "sam-vit-base"]) == 1
    err = capsys.readouterr().err
    assert "offline" in err and "hf download facebook/sam-vit-base" in err


def test_download_without_network_fails_fast(hub, monkeypatch, capsys):
    import core.ml

    monkeypatch.setattr(core.ml, "USER_HF_HUB_OFFLINE", None)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    t0 = time.monotonic()
    assert cli_main(["models", "download", "depth-anything-v2-small"]) == 1
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err
    assert "not reachable" in err and store.catalog_entry(DA_REPO).fetch_command in err
    assert not any((hub).iterdir())  # nothing was written
    assert cli_main(["models", "download", "not-a-model"]) == 1
    assert "unknown model" in capsys.readouterr().err


def test_a_real_diffusers_folder_resolves_as_the_default_renderer(hub, tiny_sd_dir):
    """The tiny SD2-depth saved by diffusers' own save_pretrained (tests/ml/conftest.py) passes the
    checks as a folder and, laid out in the hub cache, as the catalog's default renderer."""
    assert store.check_model_folder(tiny_sd_dir) == "renderer"
    assert store.find_model(str(tiny_sd_dir), role="renderer") == tiny_sd_dir
    snap = install_in_hub_cache(tiny_sd_dir, hub, "stabilityai/stable-diffusion-2-depth", commit="f" * 40)
    assert store.find_model("sd2-depth") == snap
    assert store.model_status(store.default_model("renderer")).state == "present"
