"""The ``preview`` sub-command: the instant geometric preview of an edit, written to files.

Heavy modules (Pillow, SciPy, the geometry) are imported inside the command.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.commands import LONG_SIDE_RANGE, long_side_arg
from core.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
_MANUAL = ("translate", "rotate_axis", "rotate_deg", "scale")

DESCRIPTION = """\
Move an object of a project (.handles) or of a Diffusion Handles scene folder and write the
geometric preview: the photo with the object splatted at its new place and the uncovered
background filled. The edit is either a stored variant (--variant; for a scene folder, every
named edit of transforms.json is a variant) or a transform given here (--translate,
--rotate-axis, --rotate-deg, --scale) applied to one object (--object; not needed when there is
only one). Other objects keep their current transforms. Without either, the current transforms
are previewed.

Frames (--frame): "dh" is the Diffusion Handles frame (+X image-left, +Y image-up, +Z away from
the camera), the default for scene folders, so numbers from a transforms.json can be typed in as
they are; "camera" is the project's camera frame (+X image-right, +Y image-down, +Z away from
the camera), the default for projects. Translations are in the depth's units (about metres);
rotations are right-handed, in degrees, about the object's centroid (the axis is in the chosen
frame); the scale is uniform about the same centroid.

Outputs: -o the preview image (at the working resolution); --depth-out the edited z-depth as a
float32 .npy in the depth's units (.exr, .tif, .png also accepted); --hole-out the uncovered
background as an 8-bit PNG (255 = hole).
"""


class _Edit(argparse.Action):
    """Stores its value and refuses to mix --variant with a transform given on the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.dest == "variant":
            clash = [f"--{d.replace('_', '-')}" for d in _MANUAL if getattr(namespace, d, None) is not None]
        else:
            clash = ["--variant"] if getattr(namespace, "variant", None) is not None else []
        if clash:
            raise argparse.ArgumentError(self, f"not allowed with {', '.join(clash)}: give a variant or a transform, not both")
        setattr(namespace, self.dest, values)


def edit_transform(args, frame: str):
    """The Transform3D (camera frame) given by --translate/--rotate-axis/--rotate-deg/--scale in ``frame``."""
    import numpy as np

    from core.camera import dh_to_cam
    from core.transform import Transform3D

    t = np.array(args.translate if args.translate is not None else (0.0, 0.0, 0.0), dtype=np.float64)
    axis = np.array(args.rotate_axis if args.rotate_axis is not None else (0.0, 1.0, 0.0), dtype=np.float64)
    angle = float(args.rotate_deg if args.rotate_deg is not None else 0.0)
    scale = float(args.scale if args.scale is not None else 1.0)
    if not np.all(np.isfinite(t)) or not np.all(np.isfinite(axis)) or not np.isfinite(angle):
        raise InputError("--translate, --rotate-axis and --rotate-deg must be finite numbers")
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"--scale must be a positive number, got {scale}")
    if not np.any(axis) and angle % 360.0 != 0.0:  # any other axis is a direction, however long or short
        raise InputError("--rotate-axis must not be zero when --rotate-deg is not 0")
    if frame == "dh":
        t, axis = dh_to_cam(t), dh_to_cam(axis)
    return Transform3D.from_axis_angle(axis, angle, translation=tuple(t), scale=scale)


def apply_edit(scene, args, kind: str) -> None:
    """Set the scene's transforms from ``--variant`` or the transform flags (``preview`` and ``render``).

    ``kind`` is "folder" for a Diffusion Handles scene folder (flags default to the DH frame) or
    "project" (flags default to the camera frame); see :func:`add_edit_arguments`.
    """
    frame = args.frame or ("dh" if kind == "folder" else "camera")
    manual = any(getattr(args, d) is not None for d in _MANUAL)
    names = ", ".join(o.name for o in scene.objects) or "none"
    if args.variant is not None:
        if args.object is not None:
            raise InputError("--object is for a transform given on the command line, not with --variant")
        if args.variant not in scene.variants:
            variants = ", ".join(scene.variants) or "none"
            raise InputError(f"{args.source}: no variant named {args.variant!r} (variants: {variants})")
        scene.apply_variant(args.variant)
    elif manual or args.object is not None:
        if args.object is not None:
            if args.object not in {o.name for o in scene.objects}:
                raise InputError(f"{args.source}: no object named {args.object!r} (objects: {names})")
            obj = scene.object(args.object)
        elif len(scene.objects) == 1:
            obj = scene.objects[0]
        else:
            raise InputError(f"{args.source}: has {len(scene.objects)} objects ({names}); choose one with --object")
        obj.transform = edit_transform(args, frame)


def add_edit_arguments(p: argparse.ArgumentParser, verb: str) -> None:
    """The source and edit flags shared by ``preview`` and ``render``."""
    p.add_argument("source", metavar="P.handles|DIR", help="project file or Diffusion Handles scene folder")
    p.add_argument("--variant", action=_Edit, default=None, metavar="NAME", help=f"{verb} a stored variant (named edit)")
    p.add_argument("--object", default=None, metavar="NAME", help="object the transform applies to (default: the only object)")
    p.add_argument("--translate", action=_Edit, default=None, metavar=("X", "Y", "Z"), **_floats(3), help="translation in depth units, in --frame")
    p.add_argument(
        "--rotate-axis", action=_Edit, default=None, metavar=("X", "Y", "Z"), **_floats(3), help="rotation axis in --frame (any length; default 0 1 0)"
    )
    p.add_argument(
        "--rotate-deg", action=_Edit, default=None, type=float, metavar="A", help="rotation angle in degrees, right-handed, about the object's centroid"
    )
    p.add_argument("--scale", action=_Edit, default=None, type=float, metavar="S", help="uniform scale about the centroid")
    p.add_argument(
        "--frame",
        choices=("dh", "camera"),
        default=None,
        help="frame of --translate/--rotate-axis: dh (+X left, +Y up, +Z forward; default for scene "
        "folders) or camera (+X right, +Y down, +Z forward; default for projects)",
    )


def _check_outputs(args) -> dict[str, Path]:
    """The outputs asked for ("image", "depth", "hole"), each checked (type, folder) without
    writing anything; InputError (one line) for the first bad one."""
    from core.atomic import check_output, image_format, target_path
    from core.io import DEPTH_EXTENSIONS

    outputs = {"image": Path(args.output)}
    image_format(outputs["image"], "image")
    check_output(outputs["image"], "preview image")
    if args.depth_out:
        d = outputs["depth"] = Path(args.depth_out)
        if d.suffix.lower() not in DEPTH_EXTENSIONS:
            raise InputError(f"{d}: unsupported depth file type {d.suffix or '(none)'} (use .exr, .npy, .png or .tif)")
        check_output(d, "depth file")
    if args.hole_out:
        outputs["hole"] = Path(args.hole_out)
        image_format(outputs["hole"], "hole mask")
        check_output(outputs["hole"], "hole mask")
    seen: dict[str, Path] = {}
    for p in outputs.values():
        key = os.path.normcase(os.path.abspath(target_path(p)))
        if key in seen:
            raise InputError(f"{p}: given for two outputs ({seen[key]} and {p}); each output needs its own file")
        seen[key] = p
    return outputs


def cmd_preview(args) -> int:
    import numpy as np

    from core.atomic import Output, image_output, write_atomically
    from core.commands.project import load_any_scene
    from core.geometry.warp import plan as warp_plan
    from core.preview import render_preview

    outputs = _check_outputs(args)  # every output is checked before any work or any write
    scene, kind, _ = load_any_scene(args.source, long_side=args.long_side, repair=args.repair_depth)
    apply_edit(scene, args, kind)

    plan = warp_plan(scene)
    result = render_preview(scene, plan)
    out = outputs["image"]
    files = [image_output(out, np.ascontiguousarray(result.image, dtype=np.uint8), what="preview image")]
    if "depth" in outputs:
        from core.io import depth_writer

        depth_out = outputs["depth"]
        files.append(Output(depth_out, depth_writer(depth_out, np.asarray(plan.edited_depth, dtype=np.float32)), "depth file"))
    if "hole" in outputs:
        files.append(image_output(outputs["hole"], np.asarray(result.hole, dtype=bool).astype(np.uint8) * 255, what="hole mask"))
    write_atomically(files)  # all or nothing: a failed output leaves every target as it was
    written = [str(f.path) for f in files]
    h, w = result.image.shape[:2]
    print(f"wrote {', '.join(written)} ({w}x{h}, {int(np.count_nonzero(result.hole))} hole pixels)")
    return 0


def _floats(n: int):
    return {"nargs": n, "type": float}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "preview",
        help="write the geometric preview of a moved object",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_edit_arguments(p, "preview")
    p.add_argument("-o", "--output", required=True, metavar="out.png", help="preview image to write")
    p.add_argument("--depth-out", default=None, metavar="depth.npy", help="write the edited depth (float32, depth units)")
    p.add_argument("--hole-out", default=None, metavar="hole.png", help="write the hole mask (255 = uncovered background)")
    p.add_argument("--long-side", type=long_side_arg, default=None, metavar="N", help=f"working resolution for a scene folder ({LONG_SIDE_RANGE}; default 512)")
    p.add_argument("--repair-depth", action="store_true", help="fill invalid depth values of a scene folder")
    p.set_defaults(func=cmd_preview)
