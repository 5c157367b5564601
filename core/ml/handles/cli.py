"""The ``render`` sub-command: re-render an edit of a project or scene folder with Diffusion Handles.

Light at import (argparse only); the engine, torch and diffusers load inside the command.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.commands import LONG_SIDE_RANGE
from core.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")

DESCRIPTION = """\
Move an object of a project (.handles) or of a Diffusion Handles scene folder and re-render the
photo with a depth-conditioned diffusion model (Diffusion Handles): the object keeps its identity,
the uncovered background is filled, the rest of the photo stays.

The edit is a stored variant (--variant; every named edit of a folder's transforms.json is one)
or a transform given here (--translate, --rotate-axis, --rotate-deg, --scale) applied to one
object (--object; not needed with a single object), in --frame "dh" (+X image-left, +Y image-up,
+Z away from the camera; default for scene folders) or "camera" (+X right, +Y down, +Z forward;
default for projects). Translations in depth units (about metres), angles in degrees about the
object's centroid, uniform scale about the same centroid.

Presets: reference (the published method: 50 steps, null-text inversion, 38 guided steps x 3
gradient steps), default (25 steps, exact inversion, 12 guided steps, background kept exactly),
fast (activation injection, no gradients: about the cost of plain sampling), draft (fast at
256 px, 20 steps; for CPUs), turbo (at most 8 steps on trailing timesteps, with the model's
few-step LoRA when the catalog names one: lcm-lora-sd15 for sd15-depth-controlnet, lcm-lora-sdxl
for sdxl-depth-controlnet; --lora picks another). The photo's identity (inversion + activations) is computed once per
photo and settings; --save-identity stores it in the project so later renders skip it.
"""


def _resolution_arg(text: str) -> int:
    """argparse ``type=`` of ``--resolution``: a multiple of 64 within the working resolution's
    range (:func:`core.io.check_long_side`); 0 is an error, not the default (a usage error)."""
    from core.errors import InputError
    from core.io import MAX_LONG_SIDE, MIN_LONG_SIDE, check_long_side

    try:
        n = check_long_side(text.strip())
    except InputError:
        n = -1
    if n < 0 or n % 64:
        raise argparse.ArgumentTypeError(f"the render's long side must be a multiple of 64 from {MIN_LONG_SIDE} to {MAX_LONG_SIDE}, got {text}")
    return n


def _progress_printer(stream=None):
    """A one-line terminal progress bar fed with core.jobs events."""
    from core.jobs import Progress

    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    state = {"last": "", "t": 0.0}

    def emit(event) -> None:
        if not isinstance(event, Progress):
            return
        total = max(1, int(event.total))
        frac = min(1.0, max(0.0, event.step / total))
        width = 28
        bar = "#" * int(round(frac * width)) + "-" * (width - int(round(frac * width)))
        eta = f" eta {event.eta_s:5.0f}s" if event.eta_s is not None else ""
        msg = f"{event.stage:>8} [{bar}] {event.step:>3}/{total}{eta} {event.message}".rstrip()
        now = time.monotonic()
        if tty:
            stream.write("\r" + msg.ljust(len(state["last"])))
            if event.step >= total:
                stream.write("\n")
            stream.flush()
        elif event.step >= total or now - state["t"] > 2.0 or event.stage != state.get("stage"):
            stream.write(msg + "\n")
            stream.flush()
            state["t"] = now
        state["last"] = msg
        state["stage"] = event.stage

    return emit


def cmd_render(args) -> int:
    from dataclasses import replace

    import numpy as np

    from core.jobs import CancelToken
    from core.ml.handles.presets import preset

    out = Path(args.output)
    if out.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InputError(f"{out}: unsupported image type {out.suffix or '(none)'} (use {', '.join(IMAGE_EXTENSIONS)})")
    from core.atomic import check_output

    check_output(out, "image")  # a missing folder is said now, not after a long render
    settings = preset(args.preset)
    steps = int(args.steps) if args.steps is not None else settings.steps
    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")

    # the scene (a project keeps its caches: a stored identity is reused)
    src = Path(args.source)
    project = None
    if src.is_dir():
        from core.commands.project import load_any_scene

        scene, kind, _ = load_any_scene(src)
    else:
        if not src.exists():
            raise InputError(f"{src}: no such project file or scene folder")
        from core.project import load_project

        project = load_project(src, caches=True)
        scene, kind = project.scene, "project"
    if args.save_identity and project is None:
        raise InputError(f"--save-identity stores the identity in a project file; {src} is a scene folder (import it first: handles-studio import-scene)")
    if args.depth_model:
        from core.ml.depth import DepthEstimator

        print(f"estimating depth with {args.depth_model} ...", file=sys.stderr)
        depth = DepthEstimator(args.depth_model, device=args.device).estimate(scene.photo, size=scene.size)
        scene.depth = np.ascontiguousarray(depth, dtype=np.float32)
        scene.depth_source = f"estimated:{args.depth_model}"
    from core.commands.preview import apply_edit

    apply_edit(scene, args, kind)

    from core.errors import ModelError
    from core.ml.handles.renderer import DiffusionHandlesRenderer
    from core.request import resolve_request
    from core.settings import load_settings
    from core.world import is_world_scene

    # one request, resolved as the editor resolves it: the Settings' extra model folders count
    user = load_settings()
    over = {"device": args.device}
    if args.precision:
        over["precision"] = args.precision
    user = replace(user, **over)
    render_settings = {"preset": args.preset, "steps": steps, "seed": int(args.seed)}
    if args.model:
        render_settings["model"] = args.model
    if args.lora:
        render_settings["lora"] = args.lora
    if project is not None and not args.no_locks:  # the identity locks learnt in the project (`learn`)
        render_settings["locks"] = dict((project.settings or {}).get("render") or {}).get("locks") or {}
    request = resolve_request(scene, render_settings, user, prompt=args.prompt, resolution=args.resolution)
    if request.missing:  # the user asked for a diffusion render: a missing model is an error here
        raise ModelError(request.missing, fetch_command=request.fetch_command)
    from core.ml.store import world_only

    if world_only(request.model) and not is_world_scene(scene):
        print(
            f"note: the model '{request.model}' knows only the procedural world (the sample's stage); "
            "on other photos it cannot render faithfully: use a real model such as sd2-depth",
            file=sys.stderr,
        )
    renderer = DiffusionHandlesRenderer()
    caches = project.caches if project is not None else {}
    t0 = time.monotonic()
    result = renderer.render(scene, request, _progress_printer(), CancelToken(), caches=caches)
    image, info = result.image, result.info
    if info.get("identity_reused") == "stored":
        print(f"reused the identity stored in {src.name}", file=sys.stderr)
    from core.atomic import save_image

    save_image(out, image, what="image")  # atomic: a failed write leaves a previous file as it was
    if args.save_identity and project is not None and result.blobs:
        from core.ml.handles.renderer import IDENTITY_CACHE_PREFIX
        from core.project import save_project

        for k in [k for k in project.caches if k.startswith(IDENTITY_CACHE_PREFIX)]:
            del project.caches[k]  # in place: the (lazy) caches it drops are never read
        project.caches.update(result.blobs)
        save_project(src, project)
        size = sum(len(v) for v in result.blobs.values())
        print(f"stored the identity in {src.name} ({size / 1e6:.1f} MB)", file=sys.stderr)
    h, w = image.shape[:2]
    evals = info.get("unet_evals", {})
    ev = ", ".join(f"{k} {v}" for k, v in sorted(evals.items()))
    reused = " (identity reused)" if info.get("identity_reused") else ""
    lora = f", LoRA {request.lora}" if request.lora else ""
    lora += "".join(f", {lk['method']} lock on '{lk['name']}'" for lk in request.locks)
    print(f"wrote {out} ({w}x{h}, preset {args.preset}, {request.steps} steps{lora}, {time.monotonic() - t0:.1f} s{reused}; UNet: {ev})")
    return 0


LEARN_DESCRIPTION = """\
Lock an object's identity: personalise the project's diffusion model on the object so that it
stays itself when a large rotation reveals sides the photo does not show. The lock is stored in
the project (per object) and applied by later renders (`render`, the editor) with that model.

Methods: ti (Textual Inversion: the object's word in the prompt becomes learnt vectors; a few
KB), custom (Custom Diffusion: the word plus the UNet's cross-attention keys and values as a
low-rank update; the default), lora (DreamBooth-LoRA: a LoRA on the UNet's attention, with prior
preservation on images the model makes of "a <word>"). With the bundled world model a lock takes
seconds to a minute on a CPU; with a real-size model it takes hours on a CPU (use a GPU).
"""


def cmd_learn(args) -> int:
    from dataclasses import replace

    from core.document import now_iso
    from core.errors import ModelError
    from core.jobs import CancelToken
    from core.locks import describe, duration_text, record_for, with_lock
    from core.ml.handles.lock import estimate_seconds, lock_settings, word_for
    from core.ml.handles.renderer import DiffusionHandlesRenderer
    from core.project import load_project, save_project
    from core.request import resolve_request
    from core.settings import load_settings
    from core.world import is_world_scene

    src = Path(args.project)
    if not src.is_file():
        raise InputError(f"{src}: no such project file (learn works on a .handles project; import a scene first)")
    project = load_project(src, caches=True)
    scene = project.scene
    if args.object is None:
        if len(scene.objects) != 1:
            names = ", ".join(repr(o.name) for o in scene.objects) or "none"
            raise InputError(f"give --object NAME (the project's objects: {names})")
        obj = scene.objects[0]
    else:
        try:
            obj = scene.object(args.object)
        except KeyError as exc:
            raise InputError(f"{src.name}: {exc.args[0]}") from None
    render = dict((project.settings or {}).get("render") or {})
    user = load_settings()
    over = {"device": args.device}
    if args.precision:
        over["precision"] = args.precision
    user = replace(user, **over)
    if args.model:
        render["model"] = args.model
    render.pop("lora", None)
    request = resolve_request(scene, {**render, "preset": "default"}, user)
    if request.missing:
        raise ModelError(request.missing, fetch_command=request.fetch_command)
    from core.world import NOUNS

    word = args.word or word_for(obj.name, scene.prompt, dict(NOUNS) if is_world_scene(scene) else None)
    world = is_world_scene(scene) and request.model == "world"
    settings = lock_settings(args.method, world, steps=args.steps, mirror=bool(args.mirror) or None, seed=args.seed)
    views = [(scene.photo, scene.depth, obj.mask)]
    for photo_path, mask_path, depth_path in args.extra or []:
        views.append(_extra_view(Path(photo_path), Path(mask_path), Path(depth_path)))
    gpu = args.device not in ("cpu",) and _has_gpu()
    est = estimate_seconds(settings, "world" if world else _backend(request), "cuda" if gpu else "cpu")
    print(
        f"locking '{obj.name}' as '{word}' with {args.method} ({settings.steps} steps of {settings.batch} {settings.size} px crops"
        f" from {len(views)} photo(s)) on {request.model}; about {duration_text(est)}",
        file=sys.stderr,
    )
    if est > 1800 and not args.yes:
        raise InputError(
            f"this lock would take about {duration_text(est)} here (a real-size model on a CPU); run it on a GPU (--device cuda), "
            "use the world model's scenes, or pass --yes to start anyway"
        )
    renderer = DiffusionHandlesRenderer()
    token = CancelToken()
    lock = renderer.learn(views, request, word, settings, object_id=obj.id, emit=_progress_printer(), token=token)
    data = lock.to_bytes()
    rec = record_for(data, obj.id, created=now_iso())
    old = render.get("locks") if isinstance(render.get("locks"), dict) else {}
    stale = (old or {}).get(obj.id, {}).get("cache") if isinstance((old or {}).get(obj.id), dict) else None
    project.caches[rec["cache"]] = data
    if stale and stale != rec["cache"] and stale in project.caches:
        del project.caches[stale]  # the object's previous lock (the project keeps one per object)
    settings_all = dict(project.settings or {})
    stored_render = dict(settings_all.get("render") or {})
    stored_render["locks"] = with_lock(old, obj.id, rec)
    settings_all["render"] = stored_render
    project.settings = settings_all
    save_project(src, project)
    print(f"locked '{obj.name}' in {src.name}: {describe(rec)}")
    return 0


def _backend(request) -> str:
    from core.ml import store

    try:
        return store.detect_backend(Path(request.model_path)) or "sd2-depth"
    except Exception:  # noqa: BLE001 - an estimate only
        return "sd2-depth"


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def _extra_view(photo: Path, mask: Path, depth: Path):
    """(photo, depth, mask) of an extra photo of the object, at the photo's own working size."""
    from core.dhformat import _read_mask
    from core.io import check_depth_shape, load_depth, load_photo, resize_mask

    ph = load_photo(photo, long_side=512).working
    h, w = ph.shape[:2]
    d = load_depth(depth, size=(w, h), photo_size=(w, h))
    m = _read_mask(mask)
    check_depth_shape((m.shape[1], m.shape[0]), (w, h), (w, h), source=str(mask))
    if m.shape != (h, w):
        m = resize_mask(m, (w, h))
    if m.sum() < 16:
        raise InputError(f"{mask}: the mask selects fewer than 16 pixels (white marks the object)")
    return ph, d, m


def register(subparsers) -> None:
    from core.commands.preview import add_edit_arguments

    q = subparsers.add_parser(
        "learn",
        help="lock an object's identity: personalise the diffusion model on it (stored in the project)",
        description=LEARN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("project", metavar="PROJECT.handles")
    q.add_argument("--object", default=None, metavar="NAME", help="the object to lock (not needed with a single object)")
    q.add_argument("--method", choices=("ti", "custom", "lora"), default="custom")
    q.add_argument("--word", default=None, help="the prompt's word for the object (default: its name's word that the prompt holds, e.g. 'box')")
    q.add_argument("--steps", type=int, default=None, metavar="N", help="training steps (default: the method's, for this model)")
    q.add_argument("--seed", type=int, default=None, metavar="S")
    q.add_argument("--mirror", action="store_true", help="also train on mirrored crops (only for symmetric objects: mirroring changes the others)")
    q.add_argument(
        "--extra",
        nargs=3,
        action="append",
        metavar=("PHOTO", "MASK", "DEPTH"),
        help="another photo of the same object, its mask (white: the object) and its depth file (see `handles-studio depth`); repeatable",
    )
    q.add_argument("--model", default=None, metavar="PATH_OR_NAME", help="the model to lock on (default: the project's)")
    q.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    q.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16"))
    q.add_argument("--yes", action="store_true", help="start even when the lock would take more than 30 minutes here")
    q.set_defaults(func=cmd_learn)

    p = subparsers.add_parser(
        "render",
        help="re-render a moved object with the diffusion model (Diffusion Handles)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_edit_arguments(p, "render")
    p.add_argument(
        "--model",
        default=None,
        metavar="PATH_OR_NAME",
        help="diffusion model folder, catalog name or repo id (default: the bundled 'world' model for "
        "scenes of the procedural world such as the sample, else stable-diffusion-2-depth)",
    )
    p.add_argument(
        "--depth-model", default=None, metavar="PATH_OR_NAME", help="re-estimate the depth with this Depth Anything model instead of the scene's depth"
    )
    p.add_argument("--prompt", default=None, metavar="TEXT", help="caption of the photo (default: the scene's prompt)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="DDIM steps (default: the preset's)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="noise the edited region starts from (presets default, fast, draft): it decides what the photo "
        "does not, e.g. the uncovered background; pixels outside the edit never change (reference: no effect)",
    )
    p.add_argument("--preset", choices=("reference", "default", "fast", "draft", "turbo"), default="default")
    p.add_argument(
        "--lora",
        default=None,
        metavar="NAME|PATH",
        help="a few-step LoRA to render with: a catalog name (see `handles-studio models list --role lora`) or a weights "
        "file or folder (default: none; the turbo preset uses the model's own from the catalog)",
    )
    p.add_argument(
        "--resolution",
        type=_resolution_arg,
        default=None,
        metavar="PX",
        help=f"long side of the render, a multiple of 64, {LONG_SIDE_RANGE} (default: the model's own size when the catalog gives one "
        "(world: 256), else the preset's: 512, draft 256)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16"), help="default: fp16 on GPUs, fp32 on CPUs (bf16 on request)")
    p.add_argument("-o", "--output", required=True, metavar="out.png", help="image to write (the working size)")
    p.add_argument("--save-identity", action="store_true", help="store the photo's identity in the project so later renders reuse it")
    p.add_argument("--no-locks", action="store_true", help="render without the project's identity locks (see `learn`)")
    p.set_defaults(func=cmd_render)
