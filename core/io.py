"""Reading photos and depth files, and the working resolution.

Photos
------
:func:`load_photo` reads PNG, JPEG (including camera MPO files), WebP, TIFF and BMP. The EXIF
orientation is applied, every pixel format (grayscale, palette, CMYK, YCbCr, 16-bit, float, with or
without alpha) becomes 8-bit RGB, and an embedded ICC profile is converted to sRGB when Pillow has
LittleCMS. Transparency is not composited: the colour channels are kept as stored and the alpha
channel is returned separately (as an optional mask, float32 in [0, 1]) when it is not fully opaque.

The *working resolution* (:func:`working_size`) has its long side at ``long_side`` pixels (512 by
default, :data:`MIN_LONG_SIDE` to :data:`MAX_LONG_SIDE`: 64 to 1536) and both sides multiples of 64, the short side chosen for the closest aspect ratio. The
photo is resized (Lanczos), not cropped: when the exact aspect ratio cannot be met, the working
image is stretched slightly along its short side (to the multiple of 64 nearest in aspect ratio,
e.g. 1920x1080 -> 512x320, 11 % taller than exact; the camera treats working pixels as square).
The original pixels are kept (``LoadedPhoto.original``) for export.

Bad input raises :class:`core.errors.InputError` with one line naming the file and the problem:
missing, a folder, empty, not an image, truncated or damaged, zero width or height, or more than
:data:`MAX_PIXELS` (100 megapixels: a decompression-bomb guard). The guard never changes Pillow's
global ``Image.MAX_IMAGE_PIXELS``; it checks the size from the header before decoding anything.

Depth files
-----------
:func:`load_depth` reads OpenEXR (any single channel; float16 or float32), 16-bit (or 8-bit)
grayscale PNG with a scale, float32 TIFF and ``.npy`` files, as *z-depth* (see ``core.camera``) in
the file's units. Depth files have the photos' :data:`MAX_PIXELS` limit, checked from the header
before any pixel is decoded (EXR data window, Pillow's lazy size, the ``.npy`` header, which must
also match the file's length). A multi-channel EXR gives its depth channel by
:func:`exr_depth_channel` (``Z``, then a layer's ``*.Z``, then ``depth``... before ``Y`` and ``R``).
``kind="disparity"`` inverts the values. The scale of an integer PNG/TIFF comes from the ``scale``
argument, else from the PNG text chunk ``handles:depth_scale`` written by :func:`save_depth`
(``depth = value * scale``). NaN, infinite, zero and negative values, and values outside
:data:`MIN_DEPTH` .. :data:`MAX_DEPTH` (1e-12 to 1e12, where float32 geometry stays exact enough and
never overflows) are an InputError that says how many there are and where (bounding box and first
pixel), unless ``repair=True``, which gives every invalid pixel the value of its nearest valid
pixel. The values are checked in the file's own type, before the cast to float32.

Memory follows the declared size, not more: values are checked and depth edges found in strips of
rows (:data:`STRIP_PIXELS`), and photos are converted to RGB strip by strip, so a 100-megapixel
depth map costs about 1 GB at the peak and a 100-megapixel photo with its mask and depth about
1.3 GB (they took 3.9 and 4.2 GB).

A damaged EXR file is one line of ours too: what OpenEXR prints about it (past Python, on the
process's stderr and stdout) is captured (:func:`captured_library_output`), logged, and its first
complaint named in the InputError; a file it reads only partly is refused the same way.

A depth map resized to the working size must have the photo's (or the working size's) aspect
ratio, within 1 % or one pixel, and at least 8 pixels a side (:func:`check_depth_shape`): it is
resampled, never stretched.

Resizing depth (:func:`resize_depth`): in smooth regions, area averaging when shrinking and
bilinear interpolation when enlarging; near depth discontinuities the nearest source sample is
used instead, so no output pixel takes a depth between a foreground object and the background
behind it ("flying pixels"). A discontinuity is where the second difference of disparity ``1/z``
along x or y exceeds :data:`EDGE_THRESHOLD` (5 %) of the disparity: a plane's disparity is affine
in the pixel coordinates, so floors and walls, even at grazing angles, count as smooth, while a
step between an object and the background is a large second difference.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from core.camera import DEFAULT_FOV_DEG, Camera
from core.errors import InputError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: largest photo or depth map accepted, in pixels (width * height), checked from the file's header
MAX_PIXELS = 100_000_000
#: most channel samples (width * height * channels, all parts) read from one depth EXR: OpenEXR's
#: binding decodes every channel, so 2 channels of MAX_PIXELS (800 MB as float32; 4 took 2 GB)
MAX_EXR_SAMPLES = 2 * MAX_PIXELS
#: working resolution: the smallest and the largest long side accepted, in pixels, shared by every
#: command, the editor's settings and the projects it opens. The largest keeps the preview of an
#: object over the whole photo, moved close, under 1.4 GB (2048 px took 2.2 GB, 4096 px 5.8 GB)
MIN_LONG_SIDE = 64
MAX_LONG_SIDE = 1536
#: the largest working size a saved project may have and still open: the editor's own limit
#: before 1536 (2048), so that every project it ever saved opens; new scenes stay at MAX_LONG_SIDE
MAX_PROJECT_LONG_SIDE = 2048
#: a depth map resized to the working size keeps the photo's aspect ratio within this (or one pixel)
ASPECT_TOLERANCE = 0.01
#: shortest side of a depth map that may be resized to the working size
MIN_DEPTH_SIDE = 8
#: the depth values accepted, in the file's units (1e12 m is a million km): beyond them the
#: geometry's float32 points, squares, sums and disparities would overflow or vanish, so such
#: values are invalid like NaN (the range is its own reciprocal, so disparities have it too)
MIN_DEPTH = 1e-12
MAX_DEPTH = 1e12
#: photo formats accepted (Pillow format names; camera MPO files open through "JPEG")
PHOTO_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")
PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
DEPTH_EXTENSIONS = (".exr", ".png", ".tif", ".tiff", ".npy")
#: PNG text chunk that stores the scale of a 16-bit depth PNG: depth = value * scale
DEPTH_SCALE_KEY = "handles:depth_scale"
#: preferred channel names of a multi-channel depth EXR, in order; each name exactly, then as a
#: layer's channel (``Z``, then ``view.Z``, then ``depth``, then ``view.depth``...)
EXR_DEPTH_CHANNELS = ("Z", "depth", "Depth", "DEPTH", "distance", "Y", "R", "D", "V")
#: relative second difference of disparity (1/z) above which a source pixel is a depth edge
EDGE_THRESHOLD = 0.05
#: pixels of a depth map whose values are checked (and edges found) at a time: the temporaries of
#: a 100-megapixel map stay a few tens of MB instead of gigabytes
STRIP_PIXELS = 1 << 22


def _name(path) -> str:
    return str(path)


# --------------------------------------------------------------------------- working size
def check_long_side(long_side) -> int:
    """``long_side`` as an int; InputError (one line) unless it is a whole number of pixels from
    :data:`MIN_LONG_SIDE` to :data:`MAX_LONG_SIDE` (the working resolution's long side)."""
    try:
        n = int(long_side)
        whole = n == long_side or isinstance(long_side, str)
    except (TypeError, ValueError, OverflowError):
        n, whole = 0, False
    if not whole or not MIN_LONG_SIDE <= n <= MAX_LONG_SIDE:
        raise InputError(
            f"working resolution (long side) must be a whole number of pixels from {MIN_LONG_SIDE} to {MAX_LONG_SIDE}, got {long_side}; choose one in that range, e.g. 512"
        )
    return n


def working_size(width: int, height: int, long_side: int = 512) -> tuple[int, int]:
    """Working size ``(w, h)`` for an image of ``width`` x ``height`` pixels.

    The long side becomes ``long_side`` (:data:`MIN_LONG_SIDE` to :data:`MAX_LONG_SIDE`, see
    :func:`check_long_side`) rounded to a multiple of 64; the short side is the multiple of 64 (at
    least 64) whose aspect ratio is closest to the image's.
    """
    width, height, long_side = int(width), int(height), check_long_side(long_side)
    if width <= 0 or height <= 0:
        raise InputError(f"image size must be positive, got {width}x{height}")
    L = max(64, int(round(long_side / 64.0)) * 64)
    big, small = max(width, height), min(width, height)
    # the two multiples of 64 around the exact short side; the closer aspect ratio (in log space) wins
    exact = small * L / big
    lo = max(64, int(math.floor(exact / 64.0)) * 64)
    hi = min(L, max(64, int(math.ceil(exact / 64.0)) * 64))
    target = math.log(big / small)
    short = min((lo, hi), key=lambda s: (abs(math.log(L / s) - target), s))
    return (L, short) if width >= height else (short, L)


# --------------------------------------------------------------------------- photos
@dataclass
class LoadedPhoto:
    """A photo read by :func:`load_photo`.

    ``working``: (h, w, 3) uint8 RGB at the working resolution. ``original``: (H0, W0, 3) uint8 RGB,
    orientation applied, full resolution. ``alpha``: (h, w) float32 in [0, 1] at the working
    resolution, or None when the file has no (or a fully opaque) alpha channel. ``path``: the file.
    """

    working: np.ndarray
    original: np.ndarray
    alpha: np.ndarray | None
    path: Path

    @property
    def size(self) -> tuple[int, int]:
        """Working (width, height)."""
        return self.working.shape[1], self.working.shape[0]

    @property
    def original_size(self) -> tuple[int, int]:
        return self.original.shape[1], self.original.shape[0]


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


def _sniff(head: bytes) -> str | None:
    for sig, fmt in _SIGNATURES:
        if head.startswith(sig):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_file(path: Path, what: str, error: type[Exception] = InputError, label: str | None = None) -> None:
    """Raise ``error`` (one line) for a missing file, a folder, an unreadable or an empty file.

    ``what`` names the kind of file in the message ("photo", "depth", "project"); ``label`` is how
    the file is named (default: its name).
    """
    label = label if label is not None else _name(path)
    if not path.exists():
        raise error(f"{label}: {what} file not found")
    if path.is_dir():
        raise error(f"{label}: is a folder, not a {what} file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"{label}: cannot read the {what} file ({exc.strerror or exc})") from exc
    if size == 0:
        raise error(f"{label}: the {what} file is empty (0 bytes)")


def _zero_size_hint(path: Path, fmt: str | None, head: bytes) -> str | None:
    """For a header Pillow refused: say so when it declares a zero width or height."""
    if fmt == "PNG" and len(head) >= 24 and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        if w == 0 or h == 0:
            return f"image is {w}x{h} pixels (zero width or height)"
    if fmt == "BMP" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        if w == 0 or h == 0:
            return f"image is {w}x{abs(h)} pixels (zero width or height)"
    return None


def check_pixels(path, width: int, height: int, noun: str = "image", max_pixels: int = MAX_PIXELS) -> None:
    """InputError (one line, naming ``path``) when ``width`` x ``height`` is over ``max_pixels``."""
    if width * height > max_pixels:
        raise InputError(
            f"{_name(path)}: {noun} is {width}x{height} = {width * height / 1e6:.0f} megapixels, over the "
            f"{max_pixels // 1_000_000}-megapixel limit (decompression-bomb guard); downscale it first"
        )


@contextmanager
def pillow_warnings_to_log(path) -> Iterator[None]:
    """Pillow's warnings while ``path`` is decoded or converted go to the log, not the terminal.

    They report damage Pillow recovered from (corrupt EXIF or TIFF tags, a malformed MPO, an
    invalid APNG chunk, a palette's transparency given as bytes), which changes nothing this
    program does with the pixels. Its ``DecompressionBombWarning`` is dropped: the program's own
    limit (:data:`MAX_PIXELS`, :func:`check_pixels`) is checked from the header instead, with one
    line of its own.
    """
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        finally:
            for w in caught:
                log.info("%s: Pillow %s: %s", _name(path), w.category.__name__, " ".join(str(w.message).split()))


def open_image(path, what: str = "photo", formats=PHOTO_FORMATS, max_pixels: int = MAX_PIXELS):
    """Open an image with Pillow and decode it, guarded: returns a loaded ``PIL.Image.Image``.

    Raises InputError (naming ``path``) for a missing/empty/non-image/truncated/0-sized file or one
    with more than ``max_pixels`` pixels. Pillow's global decompression-bomb limit is left as it is;
    its warnings go to the log (:func:`pillow_warnings_to_log`) and this function's own limit is
    checked before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check_file(path, what)
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError as exc:
        raise InputError(f"{_name(path)}: cannot read the {what} file ({exc.strerror or exc})") from exc
    fmt = _sniff(head)
    supported = ", ".join(formats)
    try:
        with pillow_warnings_to_log(path):
            im = Image.open(path, formats=list(formats) if formats else None)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{_name(path)}: image is too large to open safely ({exc}); the limit is {max_pixels // 1_000_000} megapixels") from exc
    except UnidentifiedImageError as exc:
        hint = _zero_size_hint(path, fmt, head)
        if hint:
            raise InputError(f"{_name(path)}: {hint}") from exc
        if fmt is not None:
            raise InputError(f"{_name(path)}: damaged {fmt} file (its header cannot be read)") from exc
        raise InputError(f"{_name(path)}: not an image file in a supported format ({supported})") from exc
    except OSError as exc:
        raise InputError(f"{_name(path)}: cannot read the {what} file ({exc})") from exc
    try:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise InputError(f"{_name(path)}: image is {w}x{h} pixels (zero width or height)")
        check_pixels(path, w, h, max_pixels=max_pixels)
        try:
            with pillow_warnings_to_log(path):
                im.load()
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise InputError(f"{_name(path)}: truncated or damaged image data ({exc})") from exc
        except Image.DecompressionBombError as exc:  # pragma: no cover - e.g. a huge embedded frame
            raise InputError(f"{_name(path)}: image is too large to decode safely ({exc})") from exc
        return im
    except BaseException:
        im.close()
        raise


def _image_strips(im) -> Iterator[tuple[int, int, PILImage]]:
    """``(y0, y1, strip)``: a Pillow image cut into strips of rows of about :data:`STRIP_PIXELS`
    pixels (each strip closed after use), for conversions that never hold a second full copy."""
    w, h = im.size
    for y0, y1 in _row_strips(h, w):
        strip = im.crop((0, y0, w, y1))
        try:
            yield y0, y1, strip
        finally:
            strip.close()


def _gray_to_rgb(im) -> np.ndarray:
    """A 16-bit, 32-bit integer or float single-channel image -> (H, W, 3) uint8, scaled to 8 bits
    by its nominal range (16-bit: /257; 32-bit integers over 255: /257; floats in [0, 1]: *255)."""
    mode = im.mode
    w, h = im.size
    divisor, scale = 1.0, 1.0  # integers are divided, floats multiplied (as their first reader did)
    if mode.startswith("I;16"):
        divisor = 257.0
    else:  # "I" and "F": the range depends on the largest value (NaN and infinities count as 0)
        amax = 0.0
        for _, _, strip in _image_strips(im):
            a = np.asarray(strip)
            if a.size:
                a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0) if mode == "F" else a
                amax = max(amax, float(a.max()))
        if mode == "I":
            divisor = 257.0 if amax > 255 else 1.0
        else:
            scale = 255.0 if amax <= 1.0 else 1.0
    out = np.empty((h, w, 3), np.uint8)
    for y0, y1, strip in _image_strips(im):
        a = np.asarray(strip)
        if mode == "F":
            g = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0) * scale
        else:
            g = a.astype(np.float32) / divisor
        out[y0:y1] = np.clip(np.rint(g), 0, 255).astype(np.uint8)[:, :, None]
    return out


def _to_rgb_and_alpha(im) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow image -> (H, W, 3) uint8 RGB and an optional (H, W) float32 alpha in [0, 1].

    Converted in strips of rows (:func:`_image_strips`): the peak is the decoded image plus the
    arrays returned, never a second converted copy of a 100-megapixel photo."""

    mode = im.mode
    alpha = None
    # integer and float single-channel modes: scale to 8 bits by their nominal range
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _gray_to_rgb(im), None
    w, h = im.size
    rgb = np.empty((h, w, 3), np.uint8)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or ("transparency" in im.info and mode in ("P", "L", "RGB")):
        a8 = np.empty((h, w), np.uint8)
        for y0, y1, strip in _image_strips(im):
            rgba = strip.convert("RGBA") if strip.mode != "RGBA" else strip
            arr = np.asarray(rgba)
            rgb[y0:y1] = arr[:, :, :3]
            a8[y0:y1] = arr[:, :, 3]
            if rgba is not strip:
                rgba.close()
        if a8.size and a8.min() < 255:
            alpha = a8.astype(np.float32) / 255.0
        return rgb, alpha
    if im.info.get("icc_profile"):
        im = _icc_to_srgb(im, "RGB")
    for y0, y1, strip in _image_strips(im):
        conv = strip.convert("RGB") if strip.mode != "RGB" else strip
        rgb[y0:y1] = np.asarray(conv, dtype=np.uint8)
        if conv is not strip:
            conv.close()
    return rgb, alpha


def _icc_to_srgb(im: PILImage, out_mode: str) -> PILImage:
    """Convert an image with an embedded ICC profile to sRGB (unchanged if LittleCMS is missing)."""
    try:
        import io as _io

        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(_io.BytesIO(im.info["icc_profile"]))
        dst = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(im, src, dst, outputMode=out_mode)
    except Exception:  # noqa: BLE001 - a broken or unsupported profile: keep the pixels as they are
        return im
    assert out is not None  # None only with inPlace=True
    return out


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to ``size`` = (w, h) with Lanczos (area-correct when shrinking)."""
    from PIL import Image

    w, h = size
    if rgb.shape[1] == w and rgb.shape[0] == h:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0))


def resize_float(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) float array to ``size`` = (w, h): area when shrinking, bilinear when enlarging."""
    from PIL import Image

    w, h = size
    a = np.asarray(a, dtype=np.float32)
    if a.shape == (h, w):
        return a
    shrink = w <= a.shape[1] and h <= a.shape[0]
    return np.asarray(Image.fromarray(a, mode="F").resize((w, h), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) bool mask to ``size`` = (w, h): a pixel is in the mask when at least half its area is."""
    w, h = size
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == (h, w):
        return mask.copy()
    return resize_float(mask.astype(np.float32), size) >= 0.5


def load_photo(path, long_side: int = 512) -> LoadedPhoto:
    """Read a photo file (see the module docstring) and make its working-resolution copy."""
    from PIL import ImageOps

    path = Path(path)
    src = open_image(path, "photo")
    im = src
    try:
        with pillow_warnings_to_log(path):  # a damaged EXIF block: Pillow warns and reads what it can
            try:
                im = ImageOps.exif_transpose(src) or src
            except Exception:  # noqa: BLE001 - a broken EXIF block: keep the stored orientation
                im = src
            if im is not src:  # a turned copy: the stored pixels are not needed any more
                src.close()
            original, alpha_full = _to_rgb_and_alpha(im)
    finally:
        if im is not src:
            im.close()
        src.close()
    size = working_size(original.shape[1], original.shape[0], long_side)
    working = resize_rgb(original, size)
    alpha = None
    if alpha_full is not None:
        alpha = np.clip(resize_float(alpha_full, size), 0.0, 1.0).astype(np.float32)
    return LoadedPhoto(working=working, original=original, alpha=alpha, path=path)


# --------------------------------------------------------------------------- depth: reading
def exr_depth_channel(names: list[str]) -> str | None:
    """The depth channel among an EXR's channel ``names``: the only one, else the first of
    :data:`EXR_DEPTH_CHANNELS` present exactly, else as a layer's channel (``view.Z``; layers in
    name order), before the next name is tried: ``Z``, ``*.Z``, ``depth``, ``*.depth``... ``R``."""
    if len(names) == 1:
        return names[0]
    for want in EXR_DEPTH_CHANNELS:
        if want in names:
            return want
        layered = sorted(n for n in names if n.rsplit(".", 1)[-1] == want and "." in n)
        if layered:
            return layered[0]
    return None


def _check_exr_header(path: Path, head) -> None:
    """Refuse, from an ``OpenEXR.File(..., header_only=True)``, a file too large to read safely."""
    parts = [p.header for p in head.parts] or [head.header()]
    samples = 0
    for hdr in parts:
        lo, hi = hdr["dataWindow"]
        w, h = int(hi[0]) - int(lo[0]) + 1, int(hi[1]) - int(lo[1]) + 1
        if w <= 0 or h <= 0:
            raise InputError(f"{_name(path)}: EXR data window is {w}x{h} pixels (zero width or height)")
        check_pixels(path, w, h, noun="depth map")
        samples += w * h * max(1, len(hdr.get("channels", ())))
    if samples > MAX_EXR_SAMPLES:
        raise InputError(
            f"{_name(path)}: EXR file holds {samples / 1e6:.0f} million channel samples in {len(parts)} part(s), over the "
            f"{MAX_EXR_SAMPLES // 1_000_000} million limit; save the depth alone as a single-channel EXR"
        )


#: one capture of the process's stdout/stderr at a time (file descriptors are process-wide)
_CAPTURE_LOCK = threading.Lock()
#: what OpenEXR prints when it meets a damaged file (its C core, and its Python binding, which
#: then returns what it could read); a line with any of these makes the file an InputError
_EXR_DAMAGE_MARKS = ("EXR_ERR", "Exception raised reading", "Unable to", "orrupt")


@contextmanager
def captured_library_output(out: list[str]) -> Iterator[None]:
    """Run the body with the process's stdout and stderr (file descriptors 1 and 2) sent to
    temporary files, and append what C libraries printed there (OpenEXR prints its errors and
    warnings directly, past Python's ``sys.stderr``) to ``out``, one string per line.

    Keep the body short: text another thread writes meanwhile is captured too (the caller logs
    what it does not use). Captures are serialised; without usable descriptors (a windowed
    program on Windows) the body runs uncaptured.
    """
    with _CAPTURE_LOCK:
        saved: list[tuple[int, int, object]] = []
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
            for fd in (1, 2):
                sink = tempfile.TemporaryFile()
                try:
                    copy = os.dup(fd)
                except OSError:
                    sink.close()
                    continue
                saved.append((fd, copy, sink))
                os.dup2(sink.fileno(), fd)
        except OSError:  # pragma: no cover - undo what was done and run uncaptured
            _restore_output(saved, out, keep=False)
            saved = []
        try:
            yield
        finally:
            _restore_output(saved, out, keep=True)


def _restore_output(saved: list, out: list[str], keep: bool) -> None:
    for fd, copy, sink in saved:
        try:
            os.dup2(copy, fd)
        finally:
            os.close(copy)
        try:
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
        except OSError:  # pragma: no cover
            text = ""
        finally:
            sink.close()
        if keep:
            out.extend(line for line in text.splitlines() if line.strip())
        elif text:  # pragma: no cover - nothing was captured on purpose: give it back
            try:
                os.write(fd, text.encode("utf-8", "replace"))
            except OSError:
                pass


def _exr_complaint(path: Path, lines: list[str]) -> str:
    """OpenEXR's first complaint about ``path``, in a few words (the path itself left out)."""
    text = " ".join(lines[0].split())
    for prefix in (f"{path}: ", f"{path.name}: ", "Warning: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.replace(str(path), path.name)
    return text if len(text) <= 160 else text[:157] + "..."


def _read_exr(path: Path) -> np.ndarray:
    try:
        import OpenEXR
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise InputError(f"{_name(path)}: reading EXR needs the OpenEXR package (pip install OpenEXR)") from exc
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InputError(f"{_name(path)}: cannot read the depth file ({exc.strerror or exc})") from exc
    if magic != b"\x76\x2f\x31\x01":
        raise InputError(f"{_name(path)}: not an OpenEXR file")
    printed: list[str] = []  # what OpenEXR prints about a damaged file: our one line instead
    try:
        with captured_library_output(printed):
            head = OpenEXR.File(str(path), header_only=True)
        _check_exr_header(path, head)
        with captured_library_output(printed):
            f = OpenEXR.File(str(path), separate_channels=True)
            channels = f.channels()
        chans = {name: c for name, c in channels.items()}
        if not chans:
            raise InputError(f"{_name(path)}: the EXR file has no channels")
        name = exr_depth_channel(list(chans))
        if name is None:
            raise InputError(f"{_name(path)}: no depth channel among {', '.join(sorted(chans))} (expected one of {', '.join(EXR_DEPTH_CHANNELS)})")
        px = np.asarray(chans[name].pixels)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - OpenEXR raises plain exceptions for damaged files
        damage = [line for line in printed if any(m in line for m in _EXR_DAMAGE_MARKS)]
        detail = _exr_complaint(path, damage) if damage else " ".join(str(exc).split()).replace(str(path), path.name)
        log.info("%s: OpenEXR: %s", path, " | ".join(printed) or exc)
        raise InputError(f"{_name(path)}: damaged or unreadable EXR file ({detail}); save it again or give another depth file") from exc
    if printed:
        log.info("%s: OpenEXR printed: %s", path, " | ".join(printed))
        damage = [line for line in printed if any(m in line for m in _EXR_DAMAGE_MARKS)]
        if damage:  # read, but OpenEXR said parts of it are damaged (their pixels are left unset)
            raise InputError(f"{_name(path)}: damaged EXR file ({_exr_complaint(path, damage)}); save it again or give another depth file")
    if px.ndim != 2:
        raise InputError(f"{_name(path)}: EXR channel {name!r} is not a 2-D image (shape {px.shape})")
    if px.dtype.kind not in "fui":
        raise InputError(f"{_name(path)}: EXR channel {name!r} has unsupported type {px.dtype}")
    return px.astype(np.float32, copy=False)  # float16 -> float32 is exact; float32 is not copied


def _png_scale(im) -> float | None:
    for key in (DEPTH_SCALE_KEY, "depth_scale", "scale"):
        v = im.info.get(key)
        if v is None:
            continue
        try:
            s = float(v)
        except (TypeError, ValueError):
            return None
        return s
    return None


def _strips_scaled(im, scale: float | None, dtype) -> np.ndarray:
    """A one-channel image's values (times ``scale``, in float64) as a ``dtype`` array, converted
    strip by strip (:func:`_image_strips`): no full-size float64 copy of a 100-megapixel map."""
    w, h = im.size
    out = np.empty((h, w), dtype)
    with np.errstate(over="ignore"):  # beyond float64: infinite, refused by the value check
        for y0, y1, strip in _image_strips(im):
            a = np.asarray(strip)
            out[y0:y1] = a if scale is None else a.astype(np.float64) * scale
    return out


def _read_image_depth(path: Path, scale: float | None) -> np.ndarray:
    im = open_image(path, "depth", formats=("PNG", "TIFF"))
    try:
        mode = im.mode
        if mode == "F":
            if scale is None:
                return _strips_scaled(im, None, np.float32)
            a = np.asarray(im, dtype=np.float32)
            with np.errstate(over="ignore"):  # beyond float64: infinite, refused by the value check
                return a.astype(np.float64) * float(scale)
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "L"):
            s = scale if scale is not None else _png_scale(im)
            if s is None:
                raise InputError(
                    f"{_name(path)}: integer depth image without a scale; pass the scale (depth = value * scale), e.g. --depth-scale 0.001 for millimetres"
                )
            if not (math.isfinite(s) and s > 0):
                raise InputError(f"{_name(path)}: depth scale must be a positive number, got {s}")
            lo, hi = cast("tuple[float, float]", im.getextrema())
            # float64 products, stored as float32 when every one is well inside the depth range (the
            # cast cannot move a value across a limit), else kept float64 for the value check
            inside = s >= 2 * MIN_DEPTH and max(abs(lo), abs(hi)) * s <= MAX_DEPTH / 2
            return _strips_scaled(im, s, np.float32 if inside else np.float64)
        raise InputError(f"{_name(path)}: depth images must have one channel (16-bit or float), this one is {mode}")
    finally:
        im.close()


def _check_npy_header(path: Path) -> None:
    """Refuse, from its header and before any data is read, a .npy file that is not a numeric
    array, is over :data:`MAX_PIXELS` or is shorter than its header says."""
    from numpy.lib import format as npformat

    try:
        with open(path, "rb") as fh:
            version = npformat.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = npformat.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = npformat.read_array_header_2_0(fh)
            else:
                raise InputError(f"{_name(path)}: not a plain numeric .npy array (format version {version[0]}.{version[1]}); save it with numpy.save")
            data_at = fh.tell()
        size = path.stat().st_size
    except ValueError as exc:
        raise InputError(f"{_name(path)}: not a plain numeric .npy array ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{_name(path)}: damaged or truncated .npy file ({exc})") from exc
    if dtype.kind not in "fui" or dtype.hasobject:
        raise InputError(f"{_name(path)}: depth array must be numeric and non-empty, got {dtype} {shape}")
    dims = [int(n) for n in shape]
    count = math.prod(dims)
    plane = [n for n in dims if n != 1] if len(dims) == 3 else dims
    desc = f"{plane[1]}x{plane[0]}" if len(plane) == 2 else f"shape {tuple(dims)}"
    if count > MAX_PIXELS:
        raise InputError(
            f"{_name(path)}: depth array is {desc} = {count / 1e6:.0f} megapixels, over the "
            f"{MAX_PIXELS // 1_000_000}-megapixel limit (decompression-bomb guard); downscale it first"
        )
    need = data_at + count * dtype.itemsize
    if size < need:
        raise InputError(f"{_name(path)}: truncated .npy file: its header says {desc} {dtype} ({need} bytes), the file has {size} bytes; save it again")


def _read_npy(path: Path) -> np.ndarray:
    _check_npy_header(path)
    try:
        a = np.load(path, allow_pickle=False, mmap_mode=None)
    except ValueError as exc:
        raise InputError(f"{_name(path)}: not a plain numeric .npy array ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{_name(path)}: damaged or truncated .npy file ({exc})") from exc
    if isinstance(a, np.lib.npyio.NpzFile):  # pragma: no cover - np.load of a zip
        raise InputError(f"{_name(path)}: is an .npz archive, expected a single .npy array")
    a = np.asarray(a)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[2]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:2])
    if a.ndim != 2:
        raise InputError(f"{_name(path)}: depth array must be 2-D (height, width), got shape {a.shape}")
    if a.dtype.kind not in "fui" or a.size == 0:
        raise InputError(f"{_name(path)}: depth array must be numeric and non-empty, got {a.dtype} {a.shape}")
    return a  # its own type: the values are checked before the cast to float32 (prepare_depth)


def _row_strips(height: int, width: int):
    """``(y0, y1)`` row ranges of about :data:`STRIP_PIXELS` pixels each, covering ``height`` rows."""
    rows = max(1, STRIP_PIXELS // max(1, int(width)))
    for y0 in range(0, int(height), rows):
        yield y0, min(int(height), y0 + rows)


def _invalid_kinds(a: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The masks of each kind of invalid value in ``a`` (any numeric type), by name."""
    if a.dtype.kind in "fc":
        nan = np.isnan(a)
        inf = np.isinf(a)
    else:
        nan = inf = np.zeros(a.shape, bool)
    hi, lo = np.float64(MAX_DEPTH), np.float64(MIN_DEPTH)  # float64 bounds: float16 data cannot hold 1e12 (a Python float would be cast to it)
    with np.errstate(invalid="ignore"):
        zero = a == 0
        neg = a < 0
        big = (a > hi) & ~inf
        small = (a > 0) & (a < lo)
    return [("NaN", nan), ("infinite", inf), ("zero", zero), ("negative", neg), (f"over {MAX_DEPTH:g}", big), (f"under {MIN_DEPTH:g}", small)]


def invalid_summary(values: np.ndarray) -> tuple[np.ndarray, str] | None:
    """(invalid mask, description) for NaN, infinite, zero, negative values and values outside
    :data:`MIN_DEPTH`..:data:`MAX_DEPTH`, or None when all are valid. ``values`` may have any
    numeric type (checked before any cast to float32, which would turn 1e300 into inf).

    The (H, W) map is checked in strips of rows (:data:`STRIP_PIXELS`), so the temporaries stay
    small for a 100-megapixel map; the mask is made only when a value is invalid."""
    a = np.asarray(values)
    if a.ndim != 2:
        raise ValueError(f"invalid_summary needs a 2-D array, got shape {a.shape}")
    counts: dict[str, int] = {}  # every kind, in order, from the first strip with an invalid value
    bad: np.ndarray | None = None
    for y0, y1 in _row_strips(a.shape[0], a.shape[1]):
        kinds = _invalid_kinds(a[y0:y1])
        strip = kinds[0][1] | kinds[1][1] | kinds[2][1] | kinds[3][1] | kinds[4][1] | kinds[5][1]
        if not strip.any():
            continue
        if bad is None:
            bad = np.zeros(a.shape, bool)
        bad[y0:y1] = strip
        for name, m in kinds:
            counts[name] = counts.get(name, 0) + int(np.count_nonzero(m))
    if bad is None:
        return None
    n = int(np.count_nonzero(bad))
    rows = np.flatnonzero(bad.any(axis=1))
    cols = np.flatnonzero(bad.any(axis=0))
    fi = int(np.argmax(bad.ravel()))  # the first True
    fy, fx = divmod(fi, a.shape[1])
    parts = [f"{k} {c}" for k, c in counts.items() if c]
    desc = (
        f"{n} invalid value{'s' if n != 1 else ''} of {a.size} ({', '.join(parts)}) in rows "
        f"{rows[0]}-{rows[-1]}, columns {cols[0]}-{cols[-1]}; first at x={fx}, y={fy}"
    )
    return bad, desc


def fill_nearest(values: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Give every ``invalid`` pixel the value of its nearest valid pixel (Euclidean, vectorised)."""
    from scipy.ndimage import distance_transform_edt

    if not invalid.any():
        return values
    # return_distances=False, return_indices=True: just the (2, H, W) index array
    idx = cast(np.ndarray, distance_transform_edt(invalid, return_distances=False, return_indices=True))
    return values[idx[0], idx[1]]


def load_depth(
    path,
    size: tuple[int, int] | None = None,
    kind: str = "depth",
    scale: float | None = None,
    repair: bool = False,
    photo_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a depth (or disparity) file as float32 z-depth (H, W) in the file's units.

    ``size``: (width, height) to resize to (see :func:`resize_depth`), None keeps the file's size.
    ``photo_size``: the (width, height) of the photo whose working size ``size`` is: the depth must
    have its aspect ratio (or ``size``'s), see :func:`check_depth_shape`.
    ``kind``: ``"depth"`` (z-depth) or ``"disparity"`` (inverse depth; the result is ``1 / value``).
    ``scale``: multiplies the stored values (required for integer images without a stored scale).
    ``repair``: fill NaN/inf/zero/negative values from the nearest valid pixel instead of failing.
    """
    path = Path(path)
    if kind not in ("depth", "disparity"):
        raise InputError(f"depth kind must be 'depth' or 'disparity', got {kind!r}")
    if scale is not None and not (math.isfinite(float(scale)) and float(scale) > 0):
        raise InputError(f"{_name(path)}: depth scale must be a positive number, got {scale}")
    check_file(path, "depth")
    ext = path.suffix.lower()
    if ext == ".exr":
        a = _read_exr(path)
    elif ext in (".png", ".tif", ".tiff"):
        a = _read_image_depth(path, scale)
        scale = None  # applied
    elif ext == ".npy":
        a = _read_npy(path)
    else:
        raise InputError(f"{_name(path)}: unsupported depth file type {ext or '(none)'} (use {', '.join(DEPTH_EXTENSIONS)})")
    if scale is not None:  # in float32 (float64 for float64 data); a product beyond it is infinite, refused as such
        ftype = np.float64 if a.dtype == np.float64 else np.float32
        with np.errstate(over="ignore"):
            a = a.astype(ftype, copy=False) * ftype(scale)
    return prepare_depth(a, size=size, kind=kind, repair=repair, source=_name(path), photo_size=photo_size)


def prepare_depth(
    values: np.ndarray,
    size: tuple[int, int] | None = None,
    kind: str = "depth",
    repair: bool = False,
    source: str = "depth",
    photo_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Validate (or repair), convert disparity to depth and resize an in-memory depth map.

    ``values``: (H, W) numbers. ``source`` names the data in error messages. ``size`` and
    ``photo_size``: as for :func:`load_depth`. Returns float32 z-depth.
    """
    a = np.asarray(values)
    if a.ndim != 2 or a.size == 0 or a.dtype.kind not in "fui":
        raise InputError(f"{source}: depth must be a non-empty 2-D numeric array, got shape {a.shape}")
    if size is not None:
        check_depth_shape((a.shape[1], a.shape[0]), size, photo_size, source)
        note_resampled_depth((a.shape[1], a.shape[0]), size, photo_size, source)
    what = "disparity" if kind == "disparity" else "depth"
    bad = invalid_summary(a)  # on the values as given: a cast first would make 1e300 infinite
    if bad is not None:
        mask, desc = bad
        if not repair:
            raise InputError(
                f"{source}: {desc} ({what} must be a finite number from {MIN_DEPTH:g} to {MAX_DEPTH:g}); repair them to fill from the nearest valid pixel"
            )
        if mask.all():
            raise InputError(f"{source}: no valid {what} value at all, nothing to repair from")
        a = fill_nearest(a, mask)
    a = a.astype(np.float32, copy=False)  # every value is now in range: no overflow
    if kind == "disparity":
        with np.errstate(over="ignore"):
            a = np.divide(np.float32(1.0), a, dtype=np.float32)  # in range: 1/z of 1e-12..1e12 is too
        if not np.isfinite(a).all():
            raise InputError(f"{source}: disparity too small to invert into a finite depth")
    if size is not None and (a.shape[1], a.shape[0]) != (int(size[0]), int(size[1])):
        a = resize_depth(a, size)
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.copy() if np.may_share_memory(a, values) else a  # never the caller's own array


def _aspect_interval(width: int, height: int, tol: float = ASPECT_TOLERANCE) -> tuple[float, float]:
    """The width/height ratios a ``width`` x ``height`` map may stand for: within ``tol``, or one
    pixel of rounding along either side."""
    r = width / height
    lo = min(r / (1.0 + tol), (width - 1) / height, width / (height + 1))
    hi = max(r * (1.0 + tol), (width + 1) / height, width / (height - 1) if height > 1 else math.inf)
    return lo, hi


def _working_ratios(w: int, h: int) -> tuple[float, float]:
    """The width/height ratios of the images whose :func:`working_size` is ``w`` x ``h``
    (both multiples of 64): the short side's rounding bin, in log space."""
    L, s = max(w, h), min(w, h)
    lo = 1.0 if s == L else math.sqrt((L / s) * (L / (s + 64)))
    hi = math.inf if s == 64 else math.sqrt((L / s) * (L / (s - 64)))
    if w > h:
        return lo, hi
    if w < h:
        return 1.0 / hi, 1.0 / lo
    return 1.0 / hi, hi


def check_depth_shape(depth_size: tuple[int, int], size: tuple[int, int], photo_size: tuple[int, int] | None = None, source: str = "depth") -> None:
    """InputError (one line, naming both sizes) when a ``depth_size`` = (w, h) map resized to ``size``
    would be stretched.

    Accepted: the same size; else a map of at least :data:`MIN_DEPTH_SIDE` pixels a side with the
    aspect ratio of ``size`` or of ``photo_size`` (the photo, when known), within
    :data:`ASPECT_TOLERANCE` or one pixel of rounding. Without ``photo_size``, a working size
    ``size`` (multiples of 64) accepts every aspect ratio a photo with that working size may have.
    """
    dw, dh = int(depth_size[0]), int(depth_size[1])
    w, h = int(size[0]), int(size[1])
    if (dw, dh) == (w, h) or w <= 0 or h <= 0:
        return  # a bad size is resize_depth's error
    ref = f"the {photo_size[0]}x{photo_size[1]} photo" if photo_size is not None else f"the {w}x{h} working size"
    if min(dw, dh) < MIN_DEPTH_SIDE:
        if photo_size is not None and min(int(photo_size[0]), int(photo_size[1])) < MIN_DEPTH_SIDE:
            raise InputError(
                f"{source}: the photo is {photo_size[0]}x{photo_size[1]} pixels and its depth map {dw}x{dh}, too small to make the "
                f"{w}x{h} working image from; give a photo and a depth map of at least {MIN_DEPTH_SIDE} pixels a side"
            )
        raise InputError(
            f"{source}: depth map is {dw}x{dh} pixels, too small to stretch over {ref}; "
            f"give a depth map of at least {MIN_DEPTH_SIDE} pixels a side, of the photo's aspect ratio"
        )
    lo, hi = _aspect_interval(dw, dh)
    targets = [w / h]
    if photo_size is not None and photo_size[0] > 0 and photo_size[1] > 0:
        targets.append(photo_size[0] / photo_size[1])
    if any(lo <= t <= hi for t in targets):
        return
    if photo_size is None and w % 64 == 0 and h % 64 == 0:
        blo, bhi = _working_ratios(w, h)
        if lo <= bhi and blo <= hi:
            return
    pw, ph = (int(photo_size[0]), int(photo_size[1])) if photo_size is not None else (w, h)
    raise InputError(
        f"{source}: depth map is {dw}x{dh} pixels (aspect {dw / dh:.3g}), the {'photo' if photo_size is not None else 'working size'} "
        f"is {pw}x{ph} (aspect {pw / ph:.3g}): it would be stretched; give a depth map of the photo's aspect ratio (any size)"
    )


def note_resampled_depth(depth_size: tuple[int, int], size: tuple[int, int], photo_size: tuple[int, int] | None, source: str = "depth") -> None:
    """Say, in one line, that a depth map of another size than the photo (and than the working
    size ``size``), accepted by :func:`check_depth_shape` for its aspect ratio, is resampled: a
    ``warnings.warn`` (the command line prints it as ``handles-studio: warning: ...``, the log keeps
    it). Nothing when ``photo_size`` is unknown (an estimated depth is made at its model's size)."""
    dw, dh = int(depth_size[0]), int(depth_size[1])
    w, h = int(size[0]), int(size[1])
    if photo_size is None or (dw, dh) in ((w, h), (int(photo_size[0]), int(photo_size[1]))):
        return
    pw, ph = int(photo_size[0]), int(photo_size[1])
    lo, hi = _aspect_interval(dw, dh)
    whose = "the photo's" if ph > 0 and lo <= pw / ph <= hi else "the working size's"
    warnings.warn(f"{source}: depth map is {dw}x{dh} pixels, the photo {pw}x{ph}: {whose} aspect ratio, resampled to the {w}x{h} working size", stacklevel=2)


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a valid (H, W) z-depth map to ``size`` = (w, h) without blending across depth edges.

    Smooth regions: area average (shrinking) or bilinear (enlarging). Where the source pixels
    around an output pixel contain a depth edge (see the module docstring), the nearest source
    sample is taken instead. Units are unchanged.
    """
    from PIL import Image
    from scipy.ndimage import maximum_filter

    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise InputError(f"depth size must be positive, got {w}x{h}")
    d = np.asarray(depth, dtype=np.float32)
    H, W = d.shape
    if (H, W) == (h, w):
        return d.copy()
    edge_src = _depth_edges(d)
    smooth = resize_float(d, (w, h))
    if not edge_src.any():
        return smooth
    near = np.asarray(Image.fromarray(d, mode="F").resize((w, h), Image.Resampling.NEAREST))
    # an output pixel is at an edge when its source footprint (plus a pixel of margin) holds one
    fy = max(1, int(math.ceil(H / h)) + 2)
    fx = max(1, int(math.ceil(W / w)) + 2)
    near_edge = maximum_filter(edge_src.view(np.uint8), size=(fy, fx), mode="nearest")
    del edge_src
    np.multiply(near_edge, np.uint8(255), out=near_edge)
    edge = np.asarray(Image.fromarray(near_edge, mode="L").resize((w, h), Image.Resampling.NEAREST)) > 0
    return np.where(edge, near, smooth).astype(np.float32)


def _depth_edges(d: np.ndarray) -> np.ndarray:
    """The (H, W) bool map of depth-edge pixels of ``d`` (see the module docstring), found in strips
    of rows (:data:`STRIP_PIXELS`, each with a row of context above and below): the float64
    disparities and second differences never exist for the whole map at once."""
    H, W = d.shape
    edges = np.zeros((H, W), bool)
    for y0, y1 in _row_strips(H, W):
        lo, hi = max(0, y0 - 1), min(H, y1 + 1)
        disp = 1.0 / np.maximum(d[lo:hi].astype(np.float64), 1e-30)
        mid = disp[y0 - lo : y1 - lo]  # the strip's own rows
        score = np.zeros(mid.shape)
        if W >= 3:
            score[:, 1:-1] = np.abs(mid[:, :-2] - 2.0 * mid[:, 1:-1] + mid[:, 2:])
        r0, r1 = max(y0, 1), min(y1, H - 1)  # rows with a neighbour above and below
        if H >= 3 and r1 > r0:
            ydiff = np.abs(disp[r0 - 1 - lo : r1 - 1 - lo] - 2.0 * disp[r0 - lo : r1 - lo] + disp[r0 + 1 - lo : r1 + 1 - lo])
            part = score[r0 - y0 : r1 - y0]
            np.maximum(part, ydiff, out=part)
        edges[y0:y1] = score > EDGE_THRESHOLD * mid
    return edges


# --------------------------------------------------------------------------- depth: writing
def save_depth(path, depth: np.ndarray, scale: float | None = None) -> Path:
    """Write a (H, W) depth map by extension, atomically (see :mod:`core.atomic`); returns the path.

    ``.exr``: float32, one channel "Y", ZIP compression. ``.npy``: float32. ``.tif``/``.tiff``:
    float32 (mode F). ``.png``: 16-bit grayscale, ``value = round(depth / scale)`` clipped to
    1..65535, the scale stored in the text chunk ``handles:depth_scale`` (default scale:
    ``max(depth) / 65535``); PNG needs finite, positive depth. A failed write leaves the previous
    file unchanged.
    """
    from core.atomic import atomic_write

    atomic_write(path, depth_writer(path, depth, scale), what="depth file")
    return Path(path)


def depth_writer(path, depth: np.ndarray, scale: float | None = None):
    """Check a depth map and ``path``'s type for :func:`save_depth` and return ``write(file)``,
    which writes it in ``path``'s format to any file name (a :class:`core.atomic.Output` writer).
    Raises InputError before anything is written for a bad array, type or PNG value."""
    path = Path(path)
    d = np.asarray(depth)
    if d.ndim != 2 or d.size == 0:
        raise InputError(f"{_name(path)}: depth to save must be a non-empty 2-D array, got shape {d.shape}")
    d = np.ascontiguousarray(d, dtype=np.float32)
    ext = path.suffix.lower()
    if ext == ".npy":

        def write(target: Path) -> None:
            with open(target, "wb") as fh:
                np.save(fh, d, allow_pickle=False)

    elif ext == ".exr":

        def write(target: Path) -> None:
            import OpenEXR

            header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
            try:
                with OpenEXR.File(header, {"Y": OpenEXR.Channel(d)}) as f:
                    f.write(str(target))
            except RuntimeError as exc:  # OpenEXR reports I/O errors so
                raise OSError(str(exc)) from exc

    elif ext in (".tif", ".tiff"):

        def write(target: Path) -> None:
            from PIL import Image

            Image.fromarray(d, mode="F").save(target, format="TIFF")

    elif ext == ".png":
        if not np.isfinite(d).all() or (d <= 0).any():
            raise InputError(f"{_name(path)}: a 16-bit PNG can only store finite positive depth; use .exr or .npy")
        s = float(scale) if scale is not None else float(d.max()) / 65535.0
        if not (math.isfinite(s) and s > 0):
            raise InputError(f"{_name(path)}: depth scale must be a positive number, got {s}")
        q = np.clip(np.rint(d.astype(np.float64) / s), 1, 65535).astype(np.uint16)

        def write(target: Path) -> None:
            from PIL import Image, PngImagePlugin

            info = PngImagePlugin.PngInfo()
            info.add_text(DEPTH_SCALE_KEY, repr(s))
            Image.fromarray(q).save(target, format="PNG", pnginfo=info)

    else:
        raise InputError(f"{_name(path)}: unsupported depth file type {ext or '(none)'} (use .exr, .npy, .png or .tif)")
    return write


# --------------------------------------------------------------------------- scenes
def scene_from_photo(
    path, depth=None, long_side: int = 512, fov_deg: float = DEFAULT_FOV_DEG, *, kind: str = "depth", repair: bool = False, depth_unit: str = "m"
):
    """A :class:`core.scene.Scene` (no objects) from a photo file and its depth.

    ``depth``: an (H, W) array (any size of the photo's or the working aspect ratio: it is resized
    to the working size, see :func:`resize_depth` and :func:`check_depth_shape`), a depth file path (read with :func:`load_depth`), or None: then the
    scene gets a flat placeholder depth (every pixel 1.0) and ``depth_source = "none"``, for a
    caller that estimates the real depth afterwards and replaces ``scene.depth``.
    """
    from core.scene import Scene

    photo = load_photo(path, long_side)
    w, h = photo.size
    if depth is None:
        d = np.ones((h, w), np.float32)
        source = "none"
    elif isinstance(depth, (str, os.PathLike)):
        d = load_depth(depth, size=(w, h), kind=kind, repair=repair, photo_size=photo.original_size)
        source = "file"
    else:
        d = prepare_depth(depth, size=(w, h), kind=kind, repair=repair, source="depth array", photo_size=photo.original_size)
        source = "array"
    return Scene(
        photo=photo.working,
        depth=d,
        camera=Camera(w, h, fov_deg),
        name=photo.path.stem,
        depth_unit=depth_unit,
        depth_source=source,
        original_photo=photo.original,
        alpha=photo.alpha,
    )
