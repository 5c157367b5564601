"""The render request, resolved once, for the editor and the command line alike.

:func:`resolve_request` turns a scene, the document's render settings (model, preset, steps,
seed, the foreground/background sliders) and the user's :class:`core.settings.Settings` (device,
precision, the extra model folders) into a :class:`core.jobs.RenderRequest` that carries
everything that decides the render:

* the model: the name chosen (the document's, else the Settings' default; a scene of the
  procedural world defaults to the bundled world model) and its checked folder, found through the
  Hugging Face cache, the Settings' extra folders and ``HANDLES_MODEL_DIRS`` alike; for a
  ControlNet backend (SD 1.5, SDXL) its depth ControlNet too, unless the model's folder holds its
  own. A model (or ControlNet) that is not on disk is data, not text: the request becomes the
  geometric preview and carries the reason and the fetch command;
* the few-step LoRA: the one the document names (``lora``: the CLI's ``--lora``), else for the
  ``turbo`` preset the model's ``turbo_lora`` from the catalog; a missing one makes the geometric
  preview with its fetch command, like a missing model;
* the identity locks (:func:`request_locks`): the document's locks that are on, of visible
  objects, learnt on the chosen model; each names the project cache that holds its weights;
* the typed engine settings: the preset with the sliders applied, steps and resolution filled in
  (the model's own resolution, else the photo's working size; at most the preset's
  ``max_resolution``; steps at most the preset's ``max_steps``), and the model's own
  classifier-free guidance scale where the catalog gives one;
* the objects' transforms by stable id, the prompt, the seed, device and precision.

Nothing here imports Qt or torch: the catalog lookup reads a JSON file and looks at folders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.document import WORLD_MODEL
from core.jobs import GEOMETRIC, RenderRequest

__all__ = [
    "TURBO",
    "WORLD_MODEL",
    "LoraChoice",
    "ModelChoice",
    "chosen_model",
    "default_model",
    "engine_settings",
    "find_lora",
    "find_model",
    "render_resolution",
    "request_locks",
    "resolve_request",
]
#: the render-panel sliders are percentages of the preset's guidance weights
SLIDER_FULL = 100
#: the few-step preset: it renders with the model's ``turbo_lora`` when the catalog names one
TURBO = "turbo"
_CONTROLNET_BACKENDS = ("sd15-controlnet", "sdxl-controlnet")


@dataclass(frozen=True)
class ModelChoice:
    """A model as resolved on disk: its ``path`` (None when missing) or why not."""

    name: str
    path: Path | None = None
    error: str = ""
    fetch_command: str = ""
    #: the model knows only the procedural world (the world model)
    world_only: bool = False
    #: its catalog resolution (the long side it was trained at), if the catalog says
    native_resolution: int | None = None
    #: how it is conditioned on depth: "sd2-depth" | "sd15-controlnet" | "sdxl-controlnet"
    #: (the catalog's, else what the folder's layout says)
    backend: str = "sd2-depth"
    #: the catalog name of the depth ControlNet it renders with ("" when its folder holds its own
    #: controlnet/ or its backend needs none)
    controlnet: str = ""
    #: the checked folder of ``controlnet`` (None when none is used)
    controlnet_path: Path | None = None
    #: the catalog name of the LoRA the turbo preset uses with it ("" when none)
    turbo_lora: str = ""
    #: where the model was found, in words ("sd2-community mirror", "legacy stabilityai snapshot",
    #: "bundled", "folder", ...; "" when missing)
    where: str = ""
    #: the catalog name of what is missing when the model itself is on disk (its ControlNet)
    missing_part: str = ""
    #: the classifier-free guidance scale its presets sample with (the catalog's; None: the preset's)
    guidance: float | None = None

    @property
    def found(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class LoraChoice:
    """A LoRA as resolved on disk: its weights file ``path`` (None when missing) or why not."""

    name: str
    path: Path | None = None
    error: str = ""
    fetch_command: str = ""

    @property
    def found(self) -> bool:
        return self.path is not None


def default_model(scene, settings) -> str:
    """The model a new document renders with: the world model for the procedural world's scenes
    (the sample), the Settings' diffusion model for photos."""
    from core.world import is_world_scene

    return WORLD_MODEL if is_world_scene(scene) else (getattr(settings, "diffusion_model", "") or "sd2-depth")


def chosen_model(scene, render_settings: Mapping, settings) -> str:
    """The document's model, else the default for this scene."""
    return str(render_settings.get("model") or default_model(scene, settings))


def find_model(name: str, extra_dirs: Iterable[str] = ()) -> ModelChoice:
    """Resolve ``name`` (catalog name, repo id or folder) through every place models are looked
    for: the HF cache, ``extra_dirs`` (the Settings' folders) and ``HANDLES_MODEL_DIRS``; for a
    ControlNet backend, its depth ControlNet as well (a model whose ControlNet is missing is not
    found, and the choice names the ControlNet's fetch command)."""
    from core.errors import ModelError
    from core.ml import store

    extra = list(extra_dirs)
    try:
        entry = store.entry_for(name)
    except Exception:  # noqa: BLE001 - a damaged catalog must not stop a render from a folder
        entry = None
    world_only = bool(entry is not None and entry.world_only)
    native = entry.resolution if entry is not None else None
    backend = (entry.backend if entry is not None else None) or ""
    turbo = (entry.turbo_lora if entry is not None else None) or ""
    guidance = entry.guidance if entry is not None and entry.role == "renderer" else None
    try:
        found = store.locate_model(name, role="renderer", extra_dirs=extra)
    except ModelError as exc:
        error, fetch = str(exc), getattr(exc, "fetch_command", "")
        if entry is not None and fetch and backend in _CONTROLNET_BACKENDS:
            cn = store.controlnet_status(entry, backend, extra)
            if cn is not None and not cn.present:  # one command fetches both
                error = f"{error}; it needs its depth ControlNet '{cn.entry.name}' too: {cn.entry.fetch_command}"
                fetch = f"{fetch} && {cn.entry.fetch_command}"
        return ModelChoice(name, None, error, fetch, world_only, native, backend or "sd2-depth", turbo_lora=turbo, guidance=guidance)
    path = Path(found.path)
    backend = backend or store.detect_backend(path) or "sd2-depth"
    if not turbo:  # a folder of a known backend: the catalog's turbo LoRA for that backend
        turbo = next((e.turbo_lora for e in store.catalog() if e.role == "renderer" and e.backend == backend and e.turbo_lora), "") or ""

    def made(path: Path | None, error: str = "", fetch: str = "", controlnet: str = "", controlnet_path: Path | None = None, part: str = "") -> ModelChoice:
        where = found.label(entry) if path else ""
        return ModelChoice(name, path, error, fetch, world_only, native, backend, controlnet, controlnet_path, turbo, where, part, guidance)

    if backend not in _CONTROLNET_BACKENDS or store.has_own_controlnet(path):
        return made(path)
    cn = store.controlnet_status(entry, backend, extra)
    if cn is None:
        return made(None, f"model '{name}' needs a depth ControlNet for {backend} and the catalog names none; give a folder with its own controlnet/")
    if not cn.present:
        cmd = cn.entry.fetch_command
        what = "not on disk" if cn.state == "missing" else f"which is incomplete ({cn.problem})"
        return made(None, f"model '{name}' needs its depth ControlNet '{cn.entry.name}', {what}; fetch it with: {cmd}", cmd, part=cn.entry.name)
    return made(path, controlnet=cn.entry.name, controlnet_path=cn.path)


def find_lora(name: str, model: ModelChoice, extra_dirs: Iterable[str] = (), purpose: str = "") -> LoraChoice:
    """Resolve a LoRA (catalog name, repo id, folder or weights file) for ``model``'s backend.

    ``purpose`` starts the message of a missing LoRA ("the turbo preset of 'sd15-depth-controlnet'");
    a catalog LoRA made for another backend is an error naming the ones that fit."""
    from core.errors import ModelError
    from core.ml import store

    entry = store.catalog_entry(name)
    who = purpose or f"model '{model.name}'"
    if entry is not None and (entry.role != "lora" or entry.base_backend != model.backend):
        fits = ", ".join(e.name for e in store.loras_for(model.backend)) or "none in the catalog"
        what = f"a {entry.role} model" if entry.role != "lora" else f"made for {entry.base_backend} models"
        return LoraChoice(name, None, f"LoRA '{name}' is {what}, not for '{model.name}' ({model.backend}); LoRAs that fit: {fits}")
    try:
        found = store.locate_model(name, role="lora", extra_dirs=list(extra_dirs))
    except ModelError as exc:
        cmd = getattr(exc, "fetch_command", "")
        if entry is not None and cmd:
            return LoraChoice(name, None, f"{who} needs the LoRA '{entry.name}', not on disk; fetch it with: {cmd}", cmd)
        return LoraChoice(name, None, f"{who} needs the LoRA '{name}': {exc}", cmd)
    return LoraChoice(name, store.lora_file(found.path, entry))


def engine_settings(preset_name: str, render_settings: Mapping, steps: int, resolution: int, preview_every: int | None = None, guidance: float | None = None):
    """The typed :class:`HandlesSettings` of ``preset_name`` with the document's sliders
    (``foreground``/``background``, percent of the preset's weights) and the steps, resolution
    and step-preview interval filled in; steps at most the preset's ``max_steps`` when it sets one.
    ``guidance``: the model's classifier-free guidance scale (:attr:`ModelChoice.guidance`), used
    by the presets that guide (the turbo preset's scale 1, one UNet pass a step, stays)."""
    from core.ml.handles.presets import preset

    s = preset(preset_name)
    fg = int(render_settings.get("foreground", SLIDER_FULL))
    bg = int(render_settings.get("background", SLIDER_FULL))
    max_steps = int(getattr(s, "max_steps", 0) or 0)  # the turbo preset's bound (8)
    steps = min(int(steps), max_steps) if max_steps else int(steps)
    over: dict = {"steps": int(steps), "resolution": int(resolution)}
    if fg != SLIDER_FULL:
        over["fg_weight"] = round(s.fg_weight * fg / SLIDER_FULL, 6)
    if bg != SLIDER_FULL:
        over["bg_weight"] = round(s.bg_weight * bg / SLIDER_FULL, 6)
    if preview_every is not None:
        over["preview_every"] = int(preview_every)
    if guidance is not None and float(s.guidance_scale) != 1.0:
        over["guidance_scale"] = float(guidance)
    return replace(s, **over)


def render_resolution(handles_max: int, native: int | None, scene_size: tuple[int, int]) -> int:
    """The render's long side: the model's own (the catalog's), else the scene's working size;
    at most the preset's ``max_resolution`` when it sets one."""
    res = int(native) if native else int(max(scene_size))
    if handles_max:
        res = min(res, int(handles_max))
    return max(64, res - res % 64)


def resolve_request(
    scene,
    render_settings: Mapping,
    settings,
    *,
    scene_id: str | None = None,
    model: ModelChoice | None = None,
    prompt: str | None = None,
    resolution: int | None = None,
) -> RenderRequest:
    """The one render request for ``scene`` (see the module docstring).

    ``render_settings``: the document's (``model``, ``preset``, ``steps``, ``seed``,
    ``foreground``, ``background``, ``lora``); ``settings``: the user's :class:`core.settings.Settings`
    (device, precision, model_folders, preview_every). ``model``: an already resolved choice (the
    editor resolves once per model change, not per drag); ``prompt``/``resolution``: explicit
    values (the CLI's options) instead of the scene's prompt and the model's resolution.
    """
    from core.ml.handles.presets import PRESETS

    name = chosen_model(scene, render_settings, settings)
    preset_name = str(render_settings.get("preset") or getattr(settings, "default_preset", "default"))
    steps = int(render_settings.get("steps") or getattr(settings, "default_steps", 25))
    seed = int(render_settings.get("seed", 0))
    common: dict[str, Any] = dict(
        scene_id=scene_id or scene.content_id(),
        transforms={o.id: o.transform.to_dict() for o in scene.objects if o.visible},
        prompt=scene.prompt if prompt is None else prompt,
        seed=seed,
        steps=steps,
        device=str(getattr(settings, "device", "auto")),
        precision=str(getattr(settings, "precision", "auto")),
    )
    if name == GEOMETRIC or preset_name == GEOMETRIC:
        return RenderRequest(**common, preset=GEOMETRIC, model=GEOMETRIC, resolution=max(scene.size))
    if preset_name not in PRESETS:
        from core.errors import InputError

        raise InputError(f"unknown preset {preset_name!r} (choose one of: {', '.join(PRESETS)})")
    folders = list(getattr(settings, "model_folders", ()) or ())
    choice = model if model is not None and model.name == name else find_model(name, folders)
    if not choice.found:
        return RenderRequest(**common, preset=GEOMETRIC, model=name, resolution=max(scene.size), missing=choice.error, fetch_command=choice.fetch_command)
    base = PRESETS[preset_name]
    lora = str(render_settings.get("lora") or "") or (choice.turbo_lora if preset_name == TURBO else "")
    lora_path = ""
    if lora:
        purpose = f"the {preset_name} preset of '{name}'" if not render_settings.get("lora") else ""
        lc = find_lora(lora, choice, folders, purpose)
        if not lc.found:
            return RenderRequest(
                **common, preset=GEOMETRIC, model=name, resolution=max(scene.size), missing=lc.error, fetch_command=lc.fetch_command, lora=lora
            )
        lora_path = str(lc.path)
    locks = request_locks(scene, render_settings, name)
    res = int(resolution) if resolution else render_resolution(base.max_resolution, choice.native_resolution, scene.size)
    every = getattr(settings, "preview_every", None)
    handles = engine_settings(preset_name, render_settings, steps, res, every, choice.guidance)
    common["steps"] = handles.steps  # at most the preset's max_steps
    return RenderRequest(
        **common,
        preset=preset_name,
        model=name,
        resolution=res,
        model_path=str(choice.path),
        handles=handles,
        controlnet=choice.controlnet,
        controlnet_path=str(choice.controlnet_path or ""),
        lora=lora,
        lora_path=lora_path,
        locks=locks,
    )


def request_locks(scene, render_settings: Mapping, model: str) -> list[dict]:
    """The identity locks a render applies: those of the document (``render_settings["locks"]``:
    object id -> the lock's record) that are switched on, whose object is in the scene and
    visible, and that were learnt on ``model`` (a lock fits only the model it was learnt on)."""
    stored = render_settings.get("locks") or {}
    if not isinstance(stored, Mapping):
        return []
    out = []
    for o in scene.objects:
        rec = stored.get(o.id)
        if not isinstance(rec, Mapping) or not rec.get("enabled", True) or not o.visible:
            continue
        if str(rec.get("model", "")) != str(model) or not rec.get("cache"):
            continue
        out.append({"object_id": o.id, "name": o.name, "method": str(rec.get("method", "")), "word": str(rec.get("word", "")), "cache": str(rec["cache"])})
    return out
