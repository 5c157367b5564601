"""The Diffusion Handles scene folder format (the reference implementation's test scenes).

A scene folder holds::

    input.png        the photo (8-bit RGB)
    mask.png         the object mask (8-bit gray; object where > 127)
    depth.exr        z-depth of input.png (one channel, e.g. float16 "Y"), about metres
    bg_depth.exr     optional: depth of the photo with the object removed -> Scene.background_depth
    prompt.txt       optional: caption of the photo -> Scene.prompt
    fg_prompt.txt    optional: caption of the object (not used for the object's name, see below)
    transforms.json  optional: named edits {"edit_000": {"translation": [x, y, z],
                     "rotation_axis": [x, y, z], "rotation_angle": degrees}, ...}

Conventions of the format: pinhole camera with a 55 degree field of view over the larger image
side; translations in the *Diffusion Handles frame* (+X image-left, +Y image-up, +Z away from the
camera; depth units); rotation right-handed by ``rotation_angle`` degrees about
``rotation_axis`` (any non-zero length, same frame) about the centroid of the object's 3D points.

Import (:func:`load_dh_scene`) gives a :class:`core.scene.Scene` with one object named
``"object"`` (always this name, whatever fg_prompt.txt says, so that scripts and variant keys are
the same for every scene) and one *variant* per edit, keyed ``{"object": Transform3D}``; the
object's current transform is the identity. Translations and rotation axes are converted to the
camera frame with :func:`core.camera.dh_to_cam`; the angle is unchanged (the frame change is a
proper rotation). An optional ``"scale"`` key (a Handles Studio extension; the reference has no
scale) is read as the uniform scale.

Export (:func:`transforms_to_dh`, :func:`write_transforms`) writes the inverse: axis-angle in the
DH frame with a unit axis whose largest component is positive (the angle carries the sign, so
a rotation of -29.1 degrees about +Y stays that, as in the reference files), the identity
rotation as axis [0, 1, 0] and angle 0.0, and ``"scale"`` only when it is not 1.
Import then export reproduces every reference edit to 1e-6.

A scene whose photo is not at the working resolution (e.g. not 512x512) is resized: the photo
with Lanczos, depth with :func:`core.io.resize_depth`, the mask by area coverage (>= 1/2).
Translations need no change: they are in depth units, not pixels.

A transforms.json may hold at most :data:`core.project.MAX_VARIANTS` (10 000) edits, and a scene
with more variants is not exported: beyond that, refused with a one-line error (a scene with so
many variants cannot be saved as a project either).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from core.camera import CAM_TO_DH, DEFAULT_FOV_DEG, Camera, cam_to_dh
from core.errors import InputError
from core.transform import Transform3D

OBJECT_NAME = "object"
REQUIRED_FILES = ("input.png", "mask.png", "depth.exr")

#: CAM_TO_DH as plain floats (its own inverse): the per-edit conversion without numpy overhead
_DH_TO_CAM = tuple(tuple(float(x) for x in row) for row in CAM_TO_DH.tolist())


def _max_edits() -> int:
    from core.project import MAX_VARIANTS

    return MAX_VARIANTS


def _short(v, n: int = 80) -> str:
    t = " ".join(repr(v).split()) if not isinstance(v, str) else repr(v)
    return t if len(t) <= n else t[: n - 3] + "..."


def _real(x) -> bool:
    """A JSON (or NumPy) real number: not a boolean, not a string."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _vec(v, what: str, where: str) -> tuple[float, float, float]:
    """Exactly three real numbers (a JSON list, or a NumPy vector), as finite floats; booleans,
    strings, nested lists and the like are refused, not coerced."""
    a = None
    if isinstance(v, np.ndarray) and v.shape == (3,) and v.dtype.kind in "fiu":
        v = v.tolist()
    if isinstance(v, (list, tuple)) and len(v) == 3 and all(_real(x) for x in v):
        try:  # the common case, without numpy (a file may hold 10 000 edits)
            a = (float(v[0]), float(v[1]), float(v[2]))
        except OverflowError:  # an integer too large for a float
            a = None
    if a is None or not all(math.isfinite(x) for x in a):
        raise InputError(f"{where}: {what} must be 3 finite numbers, got {_short(v)}")
    return a


def _number(v) -> float | None:
    """``v`` as a finite float, or None (not a number, a boolean, infinite, or too large)."""
    if not _real(v):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _to_cam(v: tuple[float, float, float]) -> tuple[float, float, float]:
    m = _DH_TO_CAM
    return (
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2] + 0.0,
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2] + 0.0,
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2] + 0.0,
    )


def transform_from_dh(d: dict, where: str = "transform") -> Transform3D:
    """One DH edit ``{"translation", "rotation_axis", "rotation_angle"[, "scale"]}`` -> camera-frame Transform3D."""
    if not isinstance(d, dict):
        raise InputError(f"{where}: an edit must be an object with translation, rotation_axis and rotation_angle")
    unknown = set(d) - {"translation", "rotation_axis", "rotation_angle", "scale"}
    if unknown:
        raise InputError(f"{where}: unknown keys {_short(', '.join(sorted(map(str, unknown))), 120)}")
    t = _vec(d.get("translation", [0.0, 0.0, 0.0]), "translation", where)
    axis = _vec(d.get("rotation_axis", [0.0, 1.0, 0.0]), "rotation_axis", where)
    raw_angle = d.get("rotation_angle", 0.0)
    angle = _number(raw_angle)
    if angle is None:
        raise InputError(f"{where}: rotation_angle must be a number of degrees, got {_short(raw_angle)}")
    raw_scale = d.get("scale", 1.0)
    scale = _number(raw_scale)
    if scale is None or scale <= 0:
        raise InputError(f"{where}: scale must be a positive number, got {_short(raw_scale)}")
    if axis == (0.0, 0.0, 0.0) and abs(math.sin(math.radians(angle) / 2)) > 1e-12:  # any other axis is a direction
        raise InputError(f"{where}: rotation_axis is zero but rotation_angle is {angle}")
    return Transform3D.from_axis_angle(_to_cam(axis), float(angle), translation=_to_cam(t), scale=float(scale))


def transforms_from_dh(data: dict, source: str = "transforms.json") -> dict[str, Transform3D]:
    """A whole transforms.json dict ``{edit name: edit}`` -> ``{edit name: camera-frame Transform3D}``
    (at most :data:`core.project.MAX_VARIANTS` edits)."""
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}.get(type(data), type(data).__name__)
        raise InputError(f'{source}: expected an object of named edits ({{"edit_000": {{...}}, ...}}), got {kind}')
    cap = _max_edits()
    if len(data) > cap:
        raise InputError(f"{source}: {len(data)} edits, more than the {cap} a scene may hold; split the file into smaller ones")
    return {str(name): transform_from_dh(edit, f"{source}: edit {_short(name)}") for name, edit in data.items()}


def _clean(x: float) -> float:
    """Round away float noise (1e-10) and turn -0.0 into 0.0 for tidy files."""
    return round(float(x), 10) + 0.0


def transform_to_dh(t: Transform3D) -> dict:
    """Camera-frame Transform3D -> one DH edit (DH frame, degrees; see the module docstring)."""
    axis_cam, angle = t.axis_angle()
    if angle == 0.0:
        axis = np.array([0.0, 1.0, 0.0])
    else:
        axis = cam_to_dh(axis_cam)
        k = int(np.argmax(np.abs(axis)))
        if axis[k] < 0:
            axis, angle = -axis, -angle
    out = {
        "translation": [_clean(v) for v in cam_to_dh(t.t)],
        "rotation_axis": [_clean(v) for v in axis],
        "rotation_angle": _clean(angle),
    }
    if abs(t.scale - 1.0) > 1e-12:
        out["scale"] = _clean(t.scale)
    return out


def transforms_to_dh(transforms: dict[str, Transform3D]) -> dict:
    """``{edit name: camera-frame Transform3D}`` -> the transforms.json dict."""
    return {str(name): transform_to_dh(t) for name, t in transforms.items()}


def scene_edits(scene, object_name: str | None = None) -> dict[str, Transform3D]:
    """The edits to export for one object: every variant (objects a variant omits: identity), or,
    with no variants, the current transform as ``"edit_000"``.

    ``object_name``: the object (default: the first object; the DH format has one object).
    """
    if not scene.objects:
        raise InputError("the scene has no objects: nothing to export")
    obj = scene.object(object_name) if object_name is not None else scene.objects[0]
    cap = _max_edits()
    if len(scene.variants) > cap:
        raise InputError(f"the scene has {len(scene.variants)} variants, more than the {cap} a transforms.json may hold; delete some variants")
    if scene.variants:
        return {name: v.get(obj.name, Transform3D()) for name, v in scene.variants.items()}
    return {"edit_000": obj.transform}


def write_transforms(scene, path, object_name: str | None = None) -> Path:
    """Write the scene's edits (see :func:`scene_edits`) as a DH transforms.json, atomically
    (:mod:`core.atomic`: a failed write leaves the previous file as it was)."""
    from core.atomic import atomic_write_text

    path = Path(path)
    data = transforms_to_dh(scene_edits(scene, object_name))
    text = json.dumps(data, indent=4) + "\n"
    return atomic_write_text(path, text, what="transforms file")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _read_mask(path: Path) -> np.ndarray:
    """mask.png as a full-size bool array (object where the gray value is > 127; any mode, EXIF
    orientation applied; a palette's transparency is ignored, as the mask is its gray value)."""
    from PIL import ImageOps

    from core import io as cio

    mim = cio.open_image(path, "mask")
    try:
        with cio.pillow_warnings_to_log(path):
            im = ImageOps.exif_transpose(mim) or mim
            if im.mode == "P" and "transparency" in im.info:  # gray of the palette colour, not its alpha
                im = im.convert("RGBA")
            return np.asarray(im.convert("L")) > 127
    finally:
        mim.close()


def is_dh_scene(folder) -> bool:
    folder = Path(folder)
    return folder.is_dir() and all((folder / f).is_file() for f in REQUIRED_FILES)


def load_dh_scene(folder, long_side: int = 512, repair: bool = False):
    """Read a Diffusion Handles scene folder into a :class:`core.scene.Scene` (see the module docstring).

    ``long_side``: working resolution (photogen scenes are 512x512 and stay so at the default).
    ``repair``: fill invalid depth values from the nearest valid pixel instead of failing.
    """
    from core import io as cio
    from core.scene import Scene, SceneObject

    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: scene folder not found")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (a Diffusion Handles scene is a folder with {', '.join(REQUIRED_FILES)})")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise InputError(f"{folder}: not a Diffusion Handles scene, missing {', '.join(missing)}")

    photo = cio.load_photo(folder / "input.png", long_side)
    w, h = photo.size
    W0, H0 = photo.original_size
    depth = cio.load_depth(folder / "depth.exr", size=(w, h), repair=repair, photo_size=(W0, H0))
    bg_depth = None
    if (folder / "bg_depth.exr").is_file():
        bg_depth = cio.load_depth(folder / "bg_depth.exr", size=(w, h), repair=repair, photo_size=(W0, H0))

    mask_full = _read_mask(folder / "mask.png")
    if mask_full.shape != (H0, W0):
        raise InputError(f"{folder / 'mask.png'}: mask is {mask_full.shape[1]}x{mask_full.shape[0]}, the photo is {W0}x{H0}")
    mask = cio.resize_mask(mask_full, (w, h))
    if not mask.any():
        raise InputError(f"{folder / 'mask.png'}: the mask is empty (no pixel > 127)")

    prompt = _read_text(folder / "prompt.txt") if (folder / "prompt.txt").is_file() else ""
    variants = {}
    tpath = folder / "transforms.json"
    if tpath.is_file():
        try:
            data = json.loads(tpath.read_text(encoding="utf-8"))
        except RecursionError as exc:
            raise InputError(f"{tpath}: JSON nested too deeply (an edit is an object of three short lists); the file is damaged") from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{tpath}: not valid JSON ({exc})") from exc
        except OSError as exc:
            raise InputError(f"{tpath}: cannot read ({exc.strerror or exc})") from exc
        variants = {name: {OBJECT_NAME: t} for name, t in transforms_from_dh(data, str(tpath)).items()}

    return Scene(
        photo=photo.working,
        depth=depth,
        camera=Camera(w, h, DEFAULT_FOV_DEG),
        prompt=prompt,
        objects=[SceneObject(name=OBJECT_NAME, mask=mask)],
        variants=variants,
        name=folder.resolve().name,
        depth_unit="m",
        depth_source="file",
        original_photo=photo.original,
        alpha=photo.alpha,
        background_depth=bg_depth,
    )
