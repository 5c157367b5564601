"""The render request, resolved once, for the editor and the command line alike.

:func:`resolve_request` turns a scene, the document's render settings (model, preset, steps,
seed, the foreground/background sliders) and the user's :class:`core.settings.Settings` (device,
precision, the extra model folders) into a :class:`core.jobs.RenderRequest` that carries
everything that decides the render:

* the model: the name chosen (the document's, else the Settings' default; a scene of the
  procedural world defaults to the bundled world model) and its checked folder, found through the
  Hugging Face cache, the Settings' extra folders and ``HANDLES_MODEL_DIRS`` alike. A model that is
  not on disk is data, not text: the request becomes the geometric preview and carries the reason
  and the fetch command;
* the typed engine settings: the preset with the sliders applied, steps and resolution filled in
  (the model's own resolution, else the photo's working size; at most the preset's
  ``max_resolution``);
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

__all__ = ["WORLD_MODEL", "ModelChoice", "chosen_model", "default_model", "engine_settings", "find_model", "render_resolution", "resolve_request"]
#: the render-panel sliders are percentages of the preset's guidance weights
SLIDER_FULL = 100


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
    for: the HF cache, ``extra_dirs`` (the Settings' folders) and ``HANDLES_MODEL_DIRS``."""
    from core.errors import ModelError
    from core.ml import store

    try:
        world_only = store.world_only(name)
        native = store.native_resolution(name)
    except Exception:  # noqa: BLE001 - a damaged catalog must not stop a render from a folder
        world_only, native = False, None
    try:
        path = store.find_model(name, role="renderer", extra_dirs=list(extra_dirs))
    except ModelError as exc:
        return ModelChoice(name, None, str(exc), getattr(exc, "fetch_command", ""), world_only, native)
    return ModelChoice(name, Path(path), "", "", world_only, native)


def engine_settings(preset_name: str, render_settings: Mapping, steps: int, resolution: int, preview_every: int | None = None):
    """The typed :class:`HandlesSettings` of ``preset_name`` with the document's sliders
    (``foreground``/``background``, percent of the preset's weights) and the steps, resolution
    and step-preview interval filled in."""
    from core.ml.handles.presets import preset

    s = preset(preset_name)
    fg = int(render_settings.get("foreground", SLIDER_FULL))
    bg = int(render_settings.get("background", SLIDER_FULL))
    over: dict = {"steps": int(steps), "resolution": int(resolution)}
    if fg != SLIDER_FULL:
        over["fg_weight"] = round(s.fg_weight * fg / SLIDER_FULL, 6)
    if bg != SLIDER_FULL:
        over["bg_weight"] = round(s.bg_weight * bg / SLIDER_FULL, 6)
    if preview_every is not None:
        over["preview_every"] = int(preview_every)
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
    ``foreground``, ``background``); ``settings``: the user's :class:`core.settings.Settings`
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
    choice = model if model is not None and model.name == name else find_model(name, getattr(settings, "model_folders", ()) or ())
    if not choice.found:
        return RenderRequest(**common, preset=GEOMETRIC, model=name, resolution=max(scene.size), missing=choice.error, fetch_command=choice.fetch_command)
    base = PRESETS[preset_name]
    res = int(resolution) if resolution else render_resolution(base.max_resolution, choice.native_resolution, scene.size)
    every = getattr(settings, "preview_every", None)
    handles = engine_settings(preset_name, render_settings, steps, res, every)
    return RenderRequest(**common, preset=preset_name, model=name, resolution=res, model_path=str(choice.path), handles=handles)
