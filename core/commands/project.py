"""Project sub-commands: ``sample``, ``import-scene``, ``export-transforms``, ``info``.

Heavy modules (Pillow, OpenEXR, Open3D for the sample) are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

from core.commands import LONG_SIDE_RANGE, long_side_arg
from core.errors import InputError


def load_any_scene(path, long_side: int | None = None, repair: bool = False):
    """A scene from a ``.handles`` project or a Diffusion Handles scene folder.

    Returns ``(scene, kind, project)`` with kind ``"project"`` (project set) or ``"folder"``.
    ``long_side`` only applies to folders (a project keeps its working resolution).
    """
    from core.dhformat import is_dh_scene, load_dh_scene

    p = Path(path)
    if p.is_dir():
        if not is_dh_scene(p):
            load_dh_scene(p)  # raises the precise "missing ..." error
            raise InputError(f"{p}: not a Diffusion Handles scene folder")
        return load_dh_scene(p, long_side=512 if long_side is None else long_side, repair=repair), "folder", None
    if not p.exists():
        raise InputError(f"{p}: no such project file or scene folder")
    if long_side is not None:
        raise InputError(f"{p}: --long-side applies to scene folders only (a project keeps its working resolution)")
    from core.project import load_project

    proj = load_project(p, caches=False)
    return proj.scene, "project", proj


def _out_path(p: str, ext: str) -> Path:
    out = Path(p)
    if out.suffix.lower() != ext:
        raise InputError(f"{out}: the output file must end in {ext}")
    return out


# ----------------------------------------------------------------------------- commands
def cmd_sample(args) -> int:
    from core.project import Project, save_project
    from core.sample import sample_scene

    out = _out_path(args.output, ".handles")
    from core.io import MAX_LONG_SIDE

    if args.width % 64 or args.height % 64 or args.width <= 0 or args.height <= 0 or max(args.width, args.height) > MAX_LONG_SIDE:
        raise InputError(f"--width and --height must be multiples of 64 from 64 to {MAX_LONG_SIDE}, got {args.width}x{args.height}")
    if args.world_seed is not None:
        from core.world import layout_scene, random_layout

        scene = layout_scene(random_layout(int(args.world_seed)), args.width, args.height, name=f"World {args.world_seed}")
    else:
        scene = sample_scene(width=args.width, height=args.height)
    save_project(out, Project(scene=scene))
    print(f"wrote {out} ({scene.size[0]}x{scene.size[1]}, objects: {', '.join(o.name for o in scene.objects)})")
    return 0


def cmd_import_scene(args) -> int:
    from core.dhformat import load_dh_scene
    from core.project import Project, save_project

    out = _out_path(args.output, ".handles")
    scene = load_dh_scene(args.folder, long_side=args.long_side, repair=args.repair_depth)
    save_project(out, Project(scene=scene))
    print(f"wrote {out} ({scene.size[0]}x{scene.size[1]}, {len(scene.variants)} variants)")
    return 0


def cmd_export_transforms(args) -> int:
    from core.atomic import check_output
    from core.dhformat import scene_edits, write_transforms

    out = _out_path(args.output, ".json")
    check_output(out, "transforms file")  # before loading anything
    scene, _, _ = load_any_scene(args.project)
    edits = scene_edits(scene, args.object)
    write_transforms(scene, out, args.object)
    print(f"wrote {out} ({len(edits)} edit{'s' if len(edits) != 1 else ''})")
    return 0


def _fmt_transform(t) -> str:
    """Camera-frame numbers, then the same transform as a Diffusion Handles edit (DH frame)."""
    from core.dhformat import transform_to_dh

    def vec(v) -> str:
        return "(" + ", ".join(f"{float(x) + 0.0:.4g}" for x in v) + ")"

    axis, angle = t.axis_angle()
    dh = transform_to_dh(t)
    return (
        f"translate {vec(t.translation)}, rotate {angle:.4g} deg about {vec(axis)}, scale {t.scale:.4g} "
        f"[DH frame: translate {vec(dh['translation'])}, rotate {dh['rotation_angle']:.4g} deg about "
        f"{vec(dh['rotation_axis'])}]"
    )


def cmd_info(args) -> int:
    import numpy as np

    p = Path(args.project)
    scene, kind, proj = load_any_scene(p)
    w, h = scene.size
    d = scene.depth
    lines = [
        f"{'project' if kind == 'project' else 'scene folder'}: {p}",
        f"name: {scene.name}",
        f"size: {w}x{h} (working resolution)"
        + (f", original {scene.original_photo.shape[1]}x{scene.original_photo.shape[0]}" if scene.original_photo is not None else ""),
        f"depth: {float(np.min(d)):.4g} .. {float(np.max(d)):.4g} {scene.depth_unit} (source: {scene.depth_source})",
        f"camera: {scene.camera.fov_deg:g} deg field of view over the long side, focal {scene.camera.focal:.1f} px",
        f"prompt: {scene.prompt!r}",
        f"objects: {len(scene.objects)}",
    ]
    for o in scene.objects:
        hidden = "" if o.visible else " (hidden)"
        lines.append(f"  {o.name}{hidden}: {int(o.mask.sum())} px, {_fmt_transform(o.transform)}")
    lines.append(f"variants: {len(scene.variants)}")
    for name, v in scene.variants.items():
        for oname, t in v.items():
            lines.append(f"  {name} / {oname}: {_fmt_transform(t)}")
    if proj is not None:
        from core.project import project_info

        pi = project_info(p)
        lines.append(f"renders: {len(proj.renders)}")
        lines.append(f"caches: {len(pi['caches'])} ({sum(int(s or 0) for s in pi['caches'].values())} bytes)")
        lines.append(f"schema: {pi['schema_version']}, saved by version {pi['app_version']}, modified {pi['modified']}")
        lines.append(f"file size: {p.stat().st_size} bytes")
    else:
        lines.append("renders: 0")
        lines.append(f"file size: {sum(f.stat().st_size for f in p.iterdir() if f.is_file())} bytes (folder)")
    print("\n".join(lines))
    return 0


# ----------------------------------------------------------------------------- registration
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="write the built-in sample scene as a project",
        description="Render the built-in 3D sample scene (box, sphere, cylinder) and save it as a project.",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.handles", help="project file to write")
    p.add_argument("--width", type=int, default=640, help=f"image width in pixels (multiple of 64, {LONG_SIDE_RANGE}; default 640)")
    p.add_argument("--height", type=int, default=448, help=f"image height in pixels (multiple of 64, {LONG_SIDE_RANGE}; default 448)")
    p.add_argument(
        "--world-seed",
        type=int,
        default=None,
        metavar="N",
        help="instead of the sample, a random scene of its procedural world (seeds from 1000000 on were never used to train the world model)",
    )
    p.set_defaults(func=cmd_sample)

    p = subparsers.add_parser(
        "import-scene",
        help="convert a Diffusion Handles scene folder into a project",
        description="Read a Diffusion Handles scene folder (input.png, mask.png, depth.exr, optional bg_depth.exr, "
        "prompt.txt, transforms.json) into a project: one object named 'object', every named edit a variant "
        "(converted from the DH frame, +X left, +Y up, +Z forward, to the camera frame).",
    )
    p.add_argument("folder", metavar="DIR", help="scene folder")
    p.add_argument("-o", "--output", required=True, metavar="P.handles", help="project file to write")
    p.add_argument(
        "--long-side", type=long_side_arg, default=512, metavar="N", help=f"working resolution, long side in pixels ({LONG_SIDE_RANGE}; default 512)"
    )
    p.add_argument("--repair-depth", action="store_true", help="fill invalid depth values from the nearest valid pixel")
    p.set_defaults(func=cmd_import_scene)

    p = subparsers.add_parser(
        "export-transforms",
        help="write a project's variants as a Diffusion Handles transforms.json",
        description="Write every variant of one object as a named edit of a Diffusion Handles transforms.json "
        "(DH frame, axis-angle in degrees); a project without variants gives its current transform as 'edit_000'.",
    )
    p.add_argument("project", metavar="P.handles", help="project file (or scene folder)")
    p.add_argument("-o", "--output", required=True, metavar="transforms.json", help="file to write")
    p.add_argument("--object", default=None, metavar="NAME", help="object to export (default: the first object)")
    p.set_defaults(func=cmd_export_transforms)

    p = subparsers.add_parser(
        "info",
        help="describe a project or scene folder",
        description="Print a project's (or scene folder's) size, depth range, camera, objects with transforms, variants, render count and file size.",
    )
    p.add_argument("project", metavar="P.handles", help="project file (or scene folder)")
    p.set_defaults(func=cmd_info)


__all__ = ["register", "load_any_scene"]
