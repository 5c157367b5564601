"""The model store: catalog, hub-cache resolution, folder checks, `models` CLI."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_services import (  # noqa: E402
    build_fake_controlnet,
    build_fake_lora,
    build_fake_renderer,
    build_tiny_depth_anything,
    build_tiny_sam,
    install_in_hub_cache,
    write_safetensors,
)

from core.cli import main as cli_main  # noqa: E402
from core.errors import ModelError  # noqa: E402
from core.ml import store  # noqa: E402

DA_REPO = "depth-anything/Depth-Anything-V2-Small-hf"
SD2_REPO = "sd2-community/stable-diffusion-2-depth"
SD2_LEGACY = "stabilityai/stable-diffusion-2-depth"


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
    entries = {e.repo: e for e in store.catalog() if e.role != "lora"}
    sd2 = entries[SD2_REPO]  # Stability AI withdrew its repo in November 2025: the mirror is fetched
    assert sd2.name == "sd2-depth" and sd2.role == "renderer" and sd2.backend == "sd2-depth" and sd2.licence == "openrail++"
    assert sd2.legacy_repos == (SD2_LEGACY,) and SD2_LEGACY not in entries
    assert entries[DA_REPO].role == "depth" and entries[DA_REPO].licence == "apache-2.0"
    assert entries["depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"].role == "depth"
    assert entries["depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf"].role == "depth"
    assert entries["facebook/sam-vit-base"].role == "segmenter"
    assert store.default_model("renderer").repo == SD2_REPO
    assert store.default_model("depth").repo == DA_REPO
    assert store.default_model("segmenter").repo == "facebook/sam-vit-base"
    assert len({e.name for e in store.catalog()}) == len(store.catalog())


def test_catalog_renderers_name_their_backend_controlnet_and_turbo_lora():
    e = {x.name: x for x in store.catalog()}
    assert e["world"].backend == "sd2-depth" and e["sd2-depth"].controlnet is None and e["sd2-depth"].turbo_lora is None
    sd15, sdxl = e["sd15-depth-controlnet"], e["sdxl-depth-controlnet"]
    assert (sd15.repo, sd15.backend, sd15.controlnet, sd15.turbo_lora, sd15.resolution, sd15.licence) == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "sd15-controlnet",
        "controlnet-depth-sd15",
        "lcm-lora-sd15",
        512,
        "creativeml-openrail-m",
    )
    assert (sdxl.repo, sdxl.backend, sdxl.controlnet, sdxl.turbo_lora, sdxl.resolution, sdxl.licence) == (
        "stabilityai/stable-diffusion-xl-base-1.0",
        "sdxl-controlnet",
        "controlnet-depth-sdxl",
        "lcm-lora-sdxl",
        1024,
        "openrail++",
    )
    assert any(r.startswith("text_encoder_2/") for r in sdxl.required) and any(r.startswith("tokenizer_2/") for r in sdxl.required)
    assert e["controlnet-depth-sd15"].repo == "lllyasviel/control_v11f1p_sd15_depth" and e["controlnet-depth-sd15"].licence == "openrail"
    assert e["controlnet-depth-sdxl"].repo == "diffusers/controlnet-depth-sdxl-1.0"
    assert e["controlnet-depth-sdxl-small"].base_backend == "sdxl-controlnet"
    loras = {x.name: x for x in store.catalog() if x.role == "lora"}
    assert set(loras) == {"lcm-lora-sd15", "lcm-lora-sdxl", "hyper-sd15-8step", "hyper-sdxl-8step", "tcd-sd15", "tcd-sdxl"}
    for lo in loras.values():
        assert lo.schedule == "trailing" and lo.steps == 8 and lo.guidance == 1.0 and lo.weight_name and lo.required == (lo.weight_name,)
    assert loras["hyper-sd15-8step"].weight_name == "Hyper-SD15-8steps-lora.safetensors" and loras["tcd-sdxl"].licence == "mit"
    assert "LICENSE.md" in loras["hyper-sdxl-8step"].licence
    assert [x.name for x in store.loras_for("sd15-controlnet")] == ["lcm-lora-sd15", "hyper-sd15-8step", "tcd-sd15"]
    assert [x.name for x in store.controlnets_for(sdxl, "sdxl-controlnet")] == ["controlnet-depth-sdxl", "controlnet-depth-sdxl-small"]
    assert [x.name for x in store.companions(sd15)] == ["controlnet-depth-sd15"] and store.companions(e["sd2-depth"]) == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"backend": "sd3"}, "unknown backend 'sd3'"),
        ({"controlnet": "lcm-lora-sd15"}, "not a controlnet entry"),
        ({"controlnet": "controlnet-depth-sdxl"}, "made for sdxl-controlnet"),
        ({"turbo_lora": "nope"}, "not a lora entry"),
        ({"controlnet": None}, "names no controlnet"),
    ],
)
def test_a_catalog_with_a_broken_reference_is_refused(change, message):
    data = json.loads(store._catalog_text())
    raw = next(m for m in data["models"] if m["name"] == "sd15-depth-controlnet")
    raw.update(change)
    with pytest.raises(ModelError, match=message):
        store._parse_catalog(json.dumps(data))


@pytest.mark.parametrize("entry", [e for e in store.catalog() if not e.bundled], ids=lambda e: e.name)
def test_fetch_command_matches_the_entry_and_fetches_every_required_file(entry):
    words = shlex.split(entry.fetch_command)
    assert words[:3] == ["hf", "download", entry.repo]
    assert words[words.index("--revision") + 1] == entry.revision
    includes = [words[i + 1] for i, w in enumerate(words) if w == "--include"]
    excludes = [words[i + 1] for i, w in enumerate(words) if w == "--exclude"]
    assert includes == list(entry.include) and excludes == list(entry.exclude)
    assert len(words) == 5 + 2 * (len(includes) + len(excludes))  # nothing else on the line
    for alternatives in entry.required:
        assert any(store.matches_patterns(a, includes, excludes) for a in alternatives.split("|")), alternatives
    if entry.role == "lora":
        assert includes == [entry.weight_name]
    assert entry.size_bytes > 0


#: the files of each repo's main branch that decide what a fetch takes (weights with the sizes of
#: the hub's tree pages, January 2026; the configs of the diffusers layout); the fetched files must
#: be every required one, never a withdrawn-size extra, and add up to the catalog's size
_SD_CONFIGS = ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json", "text_encoder/config.json"]
_TOK = ["tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"]
REPO_FILES = {
    SD2_REPO: {
        **dict.fromkeys([*_SD_CONFIGS, *_TOK, "feature_extractor/preprocessor_config.json", "depth_estimator/config.json"], 1_000),
        "unet/diffusion_pytorch_model.fp16.safetensors": 1_730_000_000,
        "text_encoder/model.fp16.safetensors": 681_000_000,
        "vae/diffusion_pytorch_model.fp16.safetensors": 167_000_000,
        "depth_estimator/model.fp16.safetensors": 245_000_000,
        "unet/diffusion_pytorch_model.safetensors": 3_460_000_000,
        "text_encoder/model.safetensors": 1_360_000_000,
        "vae/diffusion_pytorch_model.safetensors": 335_000_000,
        "512-depth-ema.safetensors": 5_700_000_000,
        "512-depth-ema.ckpt": 5_700_000_000,
    },
    "stable-diffusion-v1-5/stable-diffusion-v1-5": {
        **dict.fromkeys([*_SD_CONFIGS, *_TOK, "feature_extractor/preprocessor_config.json", "safety_checker/config.json"], 1_000),
        "unet/diffusion_pytorch_model.fp16.safetensors": 1_720_000_000,
        "text_encoder/model.fp16.safetensors": 246_000_000,
        "vae/diffusion_pytorch_model.fp16.safetensors": 167_000_000,
        "safety_checker/model.fp16.safetensors": 608_000_000,
        "unet/diffusion_pytorch_model.safetensors": 3_440_000_000,
        "v1-5-pruned-emaonly.safetensors": 4_270_000_000,
        "v1-5-pruned.safetensors": 7_700_000_000,
    },
    "stabilityai/stable-diffusion-xl-base-1.0": {
        **dict.fromkeys(
            [*_SD_CONFIGS, *_TOK, "text_encoder_2/config.json", *(t.replace("tokenizer/", "tokenizer_2/") for t in _TOK)]
            + ["vae_1_0/config.json", "vae_decoder/config.json", "vae_encoder/config.json"],
            1_000,
        ),
        "unet/diffusion_pytorch_model.fp16.safetensors": 5_140_000_000,
        "text_encoder/model.fp16.safetensors": 246_000_000,
        "text_encoder_2/model.fp16.safetensors": 1_390_000_000,
        "vae/diffusion_pytorch_model.fp16.safetensors": 167_000_000,
        "vae_1_0/diffusion_pytorch_model.fp16.safetensors": 167_000_000,
        "unet/diffusion_pytorch_model.safetensors": 10_300_000_000,
        "sd_xl_base_1.0.safetensors": 6_940_000_000,
    },
    "lllyasviel/control_v11f1p_sd15_depth": {
        "config.json": 1_000,
        "diffusion_pytorch_model.safetensors": 1_450_000_000,
        "diffusion_pytorch_model.fp16.safetensors": 723_000_000,
    },
    "diffusers/controlnet-depth-sdxl-1.0": {
        "config.json": 1_000,
        "diffusion_pytorch_model.safetensors": 5_000_000_000,
        "diffusion_pytorch_model.fp16.safetensors": 2_500_000_000,
    },
    "diffusers/controlnet-depth-sdxl-1.0-small": {
        "config.json": 1_000,
        "diffusion_pytorch_model.safetensors": 640_000_000,
        "diffusion_pytorch_model.fp16.safetensors": 320_000_000,
    },
    "latent-consistency/lcm-lora-sdv1-5": {"README.md": 1_000, "pytorch_lora_weights.safetensors": 135_000_000},
    "latent-consistency/lcm-lora-sdxl": {"README.md": 1_000, "pytorch_lora_weights.safetensors": 394_000_000},
    "ByteDance/Hyper-SD": {
        "Hyper-SD15-8steps-lora.safetensors": 269_000_000,
        "Hyper-SDXL-8steps-lora.safetensors": 787_000_000,
        "Hyper-SDXL-8steps-CFG-lora.safetensors": 787_000_000,
        "Hyper-SD15-1step-lora.safetensors": 269_000_000,
    },
    "h1t/TCD-SD15-LoRA": {"pytorch_lora_weights.safetensors": 135_000_000},
    "h1t/TCD-SDXL-LoRA": {"pytorch_lora_weights.safetensors": 394_000_000},
}


@pytest.mark.parametrize("entry", [e for e in store.catalog() if e.repo in REPO_FILES], ids=lambda e: e.name)
def test_fetch_patterns_take_the_fp16_weights_the_catalog_sizes(entry):
    files = REPO_FILES[entry.repo]
    taken = {f: n for f, n in files.items() if store.matches_patterns(f, entry.include, entry.exclude)}
    for alternatives in entry.required:
        assert any(a in taken for a in alternatives.split("|")), f"{alternatives} is not fetched"
    assert not [f for f in taken if f.endswith(".safetensors") and ".fp16." not in f and entry.role != "lora"], "an fp32 weights file is fetched"
    assert abs(sum(taken.values()) - entry.size_bytes) <= 0.02 * entry.size_bytes, (sum(taken.values()), entry.size_bytes)


def test_every_catalog_repo_but_the_bundled_and_the_older_is_checked_against_its_files():
    repos = {e.repo for e in store.catalog() if not e.bundled and e.role in ("renderer", "controlnet", "lora")}
    assert repos <= set(REPO_FILES), repos - set(REPO_FILES)


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
    assert store.catalog_entry("SD2-Depth").repo == SD2_REPO
    # the withdrawn repo id (old projects, old habits) still names the model
    assert store.catalog_entry(SD2_LEGACY).name == "sd2-depth" and store.catalog_entry("stable-diffusion-2-depth").name == "sd2-depth"
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
    assert f"2 of {len(store.catalog())} models present." in out  # the depth model above and the bundled world model
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
    snap = install_in_hub_cache(tiny_sd_dir, hub, SD2_REPO, commit="f" * 40)
    assert store.find_model("sd2-depth") == snap
    assert store.model_status(store.default_model("renderer")).state == "present"
    assert store.detect_backend(tiny_sd_dir) == "sd2-depth"


# --- the withdrawn SD2 repo, its mirror, fp16-only fetches ---------------------------------


def test_a_legacy_stabilityai_snapshot_is_still_found(hub, tmp_path):
    """A user who fetched stabilityai/stable-diffusion-2-depth before it was withdrawn keeps using it."""
    src = build_fake_renderer(tmp_path / "sd2")
    snap = install_in_hub_cache(src, hub, SD2_LEGACY, commit="1" * 40)
    assert snap.parent.parent.name == "models--stabilityai--stable-diffusion-2-depth"
    found = store.locate_model("sd2-depth")
    assert found.path == snap and found.source == "legacy" and found.repo == SD2_LEGACY
    assert found.label(store.catalog_entry("sd2-depth")) == "legacy stabilityai snapshot"
    status = store.model_status(store.catalog_entry("sd2-depth"))
    assert status.present and status.where == "legacy stabilityai snapshot" and status.to_dict()["source_repo"] == SD2_LEGACY


def test_the_sd2_community_mirror_is_preferred_when_both_are_cached(hub, tmp_path):
    old = install_in_hub_cache(build_fake_renderer(tmp_path / "old"), hub, SD2_LEGACY, commit="1" * 40)
    new = install_in_hub_cache(build_fake_renderer(tmp_path / "new", fp16=True), hub, SD2_REPO, commit="2" * 40)
    import os

    os.utime(old, (time.time() + 100, time.time() + 100))  # the legacy snapshot is even the newer one on disk
    found = store.locate_model("sd2-depth")
    assert found.path == new and found.source == "hub" and found.label(store.catalog_entry("sd2-depth")) == "sd2-community mirror"
    # an incomplete mirror snapshot falls back to the legacy one
    (new / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    assert store.find_model("sd2-depth") == old


def test_an_fp16_only_fetch_is_a_complete_renderer(hub, tmp_path):
    """The catalog fetches only *.fp16.safetensors: such a folder passes, and says which variant to load."""
    snap = install_in_hub_cache(build_fake_renderer(tmp_path / "sd2", fp16=True), hub, SD2_REPO)
    assert store.find_model("sd2-depth") == snap
    assert store.component_variant(snap / "unet") == "fp16" and store.component_variant(snap / "text_encoder") == "fp16"
    assert store.component_variant(build_fake_renderer(tmp_path / "fp32") / "unet") is None


def test_models_list_says_where_each_model_was_found(hub, tmp_path, capsys):
    install_in_hub_cache(build_fake_renderer(tmp_path / "sd2"), hub, SD2_LEGACY, commit="1" * 40)
    assert cli_main(["models", "list", "--role", "renderer"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("sd2-depth ") :].splitlines()[:2]
    assert SD2_REPO in block[0] and "backend sd2-depth" in block[0] and "openrail++" in block[0] and "about 2.6 GB" in block[0]
    assert "present" in block[1] and "legacy stabilityai snapshot" in block[1]
    world = out[out.index("\nworld ") + 1 :].splitlines()[:2]
    assert "bundled" in world[1]
    assert cli_main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sd2-depth"]["where"] == "legacy stabilityai snapshot" and rows["sd2-depth"]["legacy_repos"] == [SD2_LEGACY]
    assert rows["world"]["where"] == "bundled" and rows["world"]["backend"] == "sd2-depth"


# --- ControlNet renderers, ControlNets, LoRAs -------------------------------------------------


def test_renderer_layouts_of_each_backend_are_told_apart(tmp_path):
    sd15 = build_fake_renderer(tmp_path / "sd15", in_channels=4, kind="sd15")
    sdxl = build_fake_renderer(tmp_path / "sdxl", in_channels=4, kind="sdxl", fp16=True)
    own = build_fake_renderer(tmp_path / "own", in_channels=4, kind="sd15", controlnet=True)
    assert [store.detect_backend(f) for f in (sd15, sdxl, own)] == ["sd15-controlnet", "sdxl-controlnet", "sd15-controlnet"]
    for f in (sd15, sdxl, own):
        assert store.check_model_folder(f, "renderer") == "renderer"
    assert store.has_own_controlnet(own) and not store.has_own_controlnet(sd15)
    # the catalog entry's backend must match the folder
    with pytest.raises(ModelError, match="holds a sd15-controlnet model, not a sdxl-controlnet model"):
        store.check_model_folder(sd15, "renderer", store.catalog_entry("sdxl-depth-controlnet"))
    with pytest.raises(ModelError, match="holds a sd15-controlnet model, not a sd2-depth model"):
        store.check_model_folder(sd15, "renderer", store.catalog_entry("sd2-depth"))
    # an SDXL folder needs its second text encoder and tokenizer
    import shutil

    shutil.rmtree(sdxl / "tokenizer_2")
    with pytest.raises(ModelError, match=r"incomplete: tokenizer_2/vocab\.json or tokenizer_2/tokenizer\.json is missing"):
        store.check_model_folder(sdxl, "renderer")
    # a folder's own controlnet/ is checked like a ControlNet
    (own / "controlnet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError, match="controlnet/diffusion_pytorch_model"):
        store.check_model_folder(own, "renderer")


def test_controlnet_and_lora_folders_are_checked(hub, tmp_path):
    cn = build_fake_controlnet(tmp_path / "cn")
    assert store.detect_role(cn) == "controlnet" and store.check_model_folder(cn) == "controlnet"
    (cn / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ModelError, match="holds a depth model, not a controlnet"):
        store.check_model_folder(cn, "controlnet")
    lora = build_fake_lora(tmp_path / "lora")
    assert store.detect_role(lora) == "lora" and store.check_model_folder(lora) == "lora"
    weights = lora / "pytorch_lora_weights.safetensors"
    assert store.find_model(weights) == weights and store.lora_file(lora) == weights
    # a Hyper-SD snapshot holds several LoRAs: each entry checks its own file only
    snap = install_in_hub_cache(build_fake_lora(tmp_path / "hyper", "Hyper-SD15-8steps-lora.safetensors"), hub, "ByteDance/Hyper-SD")
    assert store.find_model("hyper-sd15-8step") == snap
    with pytest.raises(ModelError) as err:
        store.find_model("hyper-sdxl-8step")
    assert "Hyper-SDXL-8steps-lora.safetensors" in str(err.value) and "\n" not in str(err.value)
    write_safetensors(snap / "Hyper-SD15-8steps-lora.safetensors")  # replace the link by a file, then truncate it
    data = (snap / "Hyper-SD15-8steps-lora.safetensors").read_bytes()
    (snap / "Hyper-SD15-8steps-lora.safetensors").write_bytes(data[:-4])
    with pytest.raises(ModelError, match="Hyper-SD15-8steps-lora.safetensors is corrupt"):
        store.find_model("hyper-sd15-8step")


def test_renderer_statuses_join_the_model_its_controlnet_and_loras(hub, tmp_path):
    install_in_hub_cache(build_fake_renderer(tmp_path / "sd15", in_channels=4, kind="sd15", fp16=True), hub, "stable-diffusion-v1-5/stable-diffusion-v1-5")
    rows = {r.entry.name: r for r in store.renderer_statuses()}
    r = rows["sd15-depth-controlnet"]
    assert r.model.present and not r.ready and r.state == "needs ControlNet"
    assert r.controlnet is not None and r.controlnet.entry.name == "controlnet-depth-sd15" and r.fetch_command == r.controlnet.entry.fetch_command
    assert r.licence == "creativeml-openrail-m; ControlNet: openrail" and r.size_bytes == 2_133_000_000 + 723_000_000
    assert [lo.entry.name for lo in r.loras] == ["lcm-lora-sd15", "hyper-sd15-8step", "tcd-sd15"] and r.turbo_lora.entry.name == "lcm-lora-sd15"
    install_in_hub_cache(build_fake_controlnet(tmp_path / "cn"), hub, "lllyasviel/control_v11f1p_sd15_depth")
    r = {r.entry.name: r for r in store.renderer_statuses()}["sd15-depth-controlnet"]
    assert r.ready and r.state == "present" and r.fetch_command == ""
    # SDXL: missing both, one line fetches both; the small ControlNet stands in for the large one
    x = rows["sdxl-depth-controlnet"]
    assert x.state == "missing" and x.fetch_command == f"{x.entry.fetch_command} && {x.controlnet.entry.fetch_command}"
    install_in_hub_cache(build_fake_controlnet(tmp_path / "small"), hub, "diffusers/controlnet-depth-sdxl-1.0-small")
    x = {r.entry.name: r for r in store.renderer_statuses()}["sdxl-depth-controlnet"]
    assert x.controlnet.entry.name == "controlnet-depth-sdxl-small" and x.controlnet.present


def test_models_list_shows_each_renderers_controlnet_and_loras(hub, tmp_path, capsys):
    install_in_hub_cache(build_fake_lora(tmp_path / "lcm"), hub, "latent-consistency/lcm-lora-sdv1-5")
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("sd15-depth-controlnet ") :].splitlines()[:4]
    assert "backend sd15-controlnet, 512 px" in block[0] and "creativeml-openrail-m" in block[0]
    assert "missing" in block[1] and store.catalog_entry("sd15-depth-controlnet").fetch_command in block[1]
    cn = store.catalog_entry("controlnet-depth-sd15")
    assert block[2].split()[:2] == ["ControlNet", "controlnet-depth-sd15"] and "missing" in block[2] and cn.fetch_command in block[2]
    assert "licence openrail" in block[2] and "about 723 MB" in block[2]
    assert "lcm-lora-sd15 (turbo): present" in block[3] and "hyper-sd15-8step: missing" in block[3] and "tcd-sd15: missing" in block[3]
    lora_block = out[out.index("\nlcm-lora-sd15 ") + 1 :].splitlines()[:2]
    assert "[lora, for sd15-controlnet, trailing timesteps, 8 steps" in lora_block[0] and "present" in lora_block[1]
    assert cli_main(["models", "list", "--json", "--role", "renderer"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sd15-depth-controlnet"]["controlnet_status"] == {"name": "controlnet-depth-sd15", "state": "missing", "path": None}
    assert rows["sd15-depth-controlnet"]["loras"][0] == {"name": "lcm-lora-sd15", "state": "present", "turbo": True}
    assert rows["sd15-depth-controlnet"]["ready"] is False and rows["sd2-depth"]["controlnet_status"] is None
