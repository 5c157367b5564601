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
    print(f"wrote {out} ({w}x{h}, preset {args.preset}, {request.steps} steps{lora}, {time.monotonic() - t0:.1f} s{reused}; UNet: {ev})")
    return 0


def register(subparsers) -> None:
    from core.commands.preview import add_edit_arguments

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
    p.set_defaults(func=cmd_render)
