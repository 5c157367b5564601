"""``handles-studio models ...`` and ``handles-studio depth ...``.

``models list``      each catalog model: present (folder, size on disk, where it was found),
                     incomplete (what is wrong), or missing (the ``hf download`` command that fetches
                     it); a renderer also shows its backend, its depth ControlNet and its LoRAs
``models download``  fetch a catalog model into the Hugging Face cache, a renderer with its ControlNet
                     (needs network; says so clearly and prints the command to run elsewhere when offline)
``models check``     check a model folder or name and print where it is
``depth``            estimate a depth map of a photo at the working resolution and save it

Heavy libraries are imported inside the functions (``import core.cli`` stays light).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.commands import LONG_SIDE_RANGE, long_side_arg

#: the catalog's roles (core.ml.store.ROLES; written out: the parser must not import the store)
MODEL_ROLES = ("renderer", "depth", "segmenter", "controlnet", "lora")


def register(subparsers) -> None:
    models = subparsers.add_parser(
        "models",
        help="list, check and download the models (diffusion renderers, ControlNets, LoRAs, depth, SAM)",
        description="The model catalog: which models are on disk and how to fetch the others.",
    )
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")

    def add_dirs(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model-dir",
            action="append",
            default=[],
            metavar="DIR",
            help="another folder holding models (repeatable; also $HANDLES_MODEL_DIRS)",
        )

    ls = msub.add_parser("list", help="show each catalog model as present, incomplete or missing")
    ls.add_argument("--role", choices=MODEL_ROLES, help="only models of this role")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    add_dirs(ls)
    ls.set_defaults(func=_models_list)

    dl = msub.add_parser("download", help="fetch a catalog model into the Hugging Face cache, a renderer with its ControlNet (needs network)")
    dl.add_argument("name", help="catalog name or repo id (see `models list`)")
    dl.add_argument("--cache-dir", metavar="DIR", help="hub cache to fill (default: $HF_HOME/hub or ~/.cache/huggingface/hub)")
    dl.set_defaults(func=_models_download)

    ck = msub.add_parser("check", help="check a model folder or name and print its folder")
    ck.add_argument("model", help="catalog name, repo id or model folder")
    ck.add_argument("--role", choices=MODEL_ROLES, help="the role the folder must have")
    add_dirs(ck)
    ck.set_defaults(func=_models_check)

    models.set_defaults(func=_models_list, role=None, json=False, model_dir=[])

    depth = subparsers.add_parser(
        "depth",
        help="estimate a photo's depth with Depth Anything V2 and save it",
        description=(
            "Estimate the z-depth of IMAGE at the working resolution (long side --long-side, both sides "
            "multiples of 64) and write it to OUT (.exr, .npy, .png 16-bit with its scale, .tif). Metric "
            "models give metres; relative ones are mapped to --near..--far metres."
        ),
    )
    depth.add_argument("image", help="the photo")
    depth.add_argument("-o", "--output", required=True, metavar="OUT", help="depth file to write (.exr/.npy/.png/.tif)")
    depth.add_argument("--model", default=None, metavar="NAME|PATH", help="depth model (default: the catalog's default)")
    depth.add_argument("--long-side", type=long_side_arg, default=512, metavar="N", help=f"working resolution's long side ({LONG_SIDE_RANGE}; default 512)")
    depth.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    depth.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"), help="default: fp16 on GPUs, fp32 on CPUs")
    depth.add_argument("--near", type=float, default=None, help="relative models: distance of the nearest point in metres (default 1)")
    depth.add_argument("--far", type=float, default=None, help="relative models: distance of the farthest point in metres (default 10)")
    add_dirs(depth)
    depth.set_defaults(func=_depth)


# ---------------------------------------------------------------------------------------------


def _state_text(s) -> str:
    """A catalog model's state in a few words: "present", "missing", "INCOMPLETE"."""
    return "INCOMPLETE" if s.state == "incomplete" else s.state


def _tag(e) -> str:
    """The bracketed description after a model's name: its role, default, backend, what it fits."""
    words = [e.role] + (["default"] if e.default else [])
    if e.role == "renderer":
        words.append(f"backend {e.backend}" + (f", {e.resolution} px" if e.resolution else ""))
    elif e.base_backend:
        words.append(f"for {e.base_backend}")
    if e.role == "lora":
        words.append(f"{e.schedule} timesteps, {e.steps} steps, guidance {e.guidance:g}")
    return ", ".join(words)


def _models_list(args) -> int:
    from core.ml.store import format_size, list_models, renderer_statuses

    statuses = list_models(args.model_dir, role=args.role)
    renderers = {r.entry.name: r for r in renderer_statuses(args.model_dir)} if args.role in (None, "renderer") else {}
    if args.json:
        rows = []
        for s in statuses:
            row = s.to_dict()
            r = renderers.get(s.entry.name)
            if r is not None:
                cn = r.controlnet
                row["ready"] = r.ready
                row["controlnet_status"] = None if cn is None else {"name": cn.entry.name, "state": cn.state, "path": str(cn.path) if cn.path else None}
                row["loras"] = [{"name": lo.entry.name, "state": lo.state, "turbo": lo.entry.name == s.entry.turbo_lora} for lo in r.loras]
            rows.append(row)
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(s.entry.name) for s in statuses), default=10)
    pad = " " * width
    for s in statuses:
        e = s.entry
        print(f"{e.name:<{width}}  [{_tag(e)}]  {e.repo}@{e.revision}  licence: {e.licence}  about {e.size_text}")
        if s.state == "present":
            print(f"{pad}  present    {s.path}  ({format_size(s.size_on_disk or 0)} on disk; {s.where})")
        elif s.state == "incomplete":
            print(f"{pad}  INCOMPLETE {s.problem}")
        else:
            print(f"{pad}  missing    about {e.size_text}; fetch with: {e.fetch_command}")
        r = renderers.get(e.name)
        if r is None:
            continue
        cn = r.controlnet
        if cn is not None:
            fetch = "" if cn.present else f"; fetch with: {cn.entry.fetch_command}"
            print(f"{pad}  ControlNet {cn.entry.name} ({cn.entry.repo}, licence {cn.entry.licence}, about {cn.entry.size_text}): {_state_text(cn)}{fetch}")
        elif e.backend in ("sd15-controlnet", "sdxl-controlnet") and s.present:
            print(f"{pad}  ControlNet its own (controlnet/ in its folder)")
        if r.loras:
            items = [f"{lo.entry.name}{' (turbo)' if lo.entry.name == e.turbo_lora else ''}: {_state_text(lo)}" for lo in r.loras]
            print(f"{pad}  LoRAs      {'; '.join(items)}")
    n = sum(s.present for s in statuses)
    print(f"{n} of {len(statuses)} models present.")
    return 0


def _models_download(args) -> int:
    """Download a catalog model, and a renderer's depth ControlNet when it is not on disk."""
    from core.ml.store import catalog_entry, companions, download, folder_size, format_size, model_status

    t0 = time.monotonic()
    folder = download(args.name, cache_dir=args.cache_dir)
    print(f"downloaded {args.name} to {folder} ({format_size(folder_size(folder))}, {time.monotonic() - t0:.0f} s)")
    entry = catalog_entry(args.name)
    if entry is None:  # pragma: no cover - download() refuses names outside the catalog
        return 0
    for other in companions(entry):
        if model_status(other).present:
            print(f"{entry.name} uses {other.name}: already on disk")
            continue
        t0 = time.monotonic()
        folder = download(other.name, cache_dir=args.cache_dir)
        print(f"downloaded {other.name} (the depth ControlNet of {entry.name}) to {folder} ({format_size(folder_size(folder))}, {time.monotonic() - t0:.0f} s)")
    if entry.turbo_lora:
        lora = catalog_entry(entry.turbo_lora)
        if lora is not None and not model_status(lora).present:
            print(f"the turbo preset of {entry.name} also needs the LoRA {lora.name} (about {lora.size_text}): handles-studio models download {lora.name}")
    return 0


def _models_check(args) -> int:
    from core.ml.store import detect_role, find_model, folder_size, format_size

    folder = find_model(args.model, role=args.role, extra_dirs=args.model_dir)
    print(f"ok: {detect_role(folder)} model at {folder} ({format_size(folder_size(folder))})")
    return 0


# ---------------------------------------------------------------------------------------------


def _depth(args) -> int:
    from core.errors import InputError
    from core.ml.depth import DEFAULT_FAR, DEFAULT_NEAR, DepthEstimator

    out = Path(args.output)
    if out.suffix.lower() not in (".exr", ".npy", ".png", ".tif", ".tiff"):
        raise InputError(f"output {out.name}: use a .exr, .npy, .png or .tif file name")
    if not out.parent.exists():
        raise InputError(f"output folder {out.parent} does not exist")
    from core.atomic import check_output

    check_output(out, "depth file")  # a folder, or a file in a non-folder: refuse before the model run
    from core.io import load_photo, save_depth

    loaded = load_photo(Path(args.image), long_side=args.long_side)
    photo, size = loaded.original, loaded.size  # estimate from full resolution, output at the working size
    near = DEFAULT_NEAR if args.near is None else args.near
    far = DEFAULT_FAR if args.far is None else args.far
    t0 = time.monotonic()
    est = DepthEstimator(args.model, device=args.device, dtype=args.precision, extra_dirs=args.model_dir, near=near, far=far)
    print(f"depth model {est.path} on {est.device_info}", file=sys.stderr)
    est.load()
    t1 = time.monotonic()
    depth = est.estimate(photo, size=size)
    t2 = time.monotonic()
    save_depth(out, depth)
    print(
        f"wrote {out} ({size[0]}x{size[1]}, depth {float(depth.min()):.3g}..{float(depth.max()):.3g}; "
        f"{est.describe_units()}; load {t1 - t0:.1f} s, estimate {t2 - t1:.1f} s)"
    )
    return 0
