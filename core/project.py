"""The ``.handles`` project file: a zip holding a scene, its render history, settings and caches.

Layout (schema :data:`SCHEMA_VERSION`)::

    mimetype                      "application/x-handles-studio" (first entry, stored, not compressed)
    manifest.json                 schema_version, app, app_version, created, modified, scene, renders,
                                  settings, caches, thumbnail (every asset referenced by entry name)
    scene/photo.png               working-resolution photo (RGB)
    scene/original.png            full-resolution original photo (only when it differs)
    scene/depth.npy               float32 (H, W) z-depth in scene.depth_unit
    scene/alpha.npy               float32 (H, W) alpha in [0, 1] (optional)
    scene/background_depth.npy    float32 (H, W) known background depth (optional)
    scene/masks/<object id>.png   1-bit object masks
    renders/<render id>.png       render history images (request, info, created in the manifest)
    thumbnail.png                 long side 256 (the latest render, else the photo)
    caches/<n>.bin                named binary caches (stored, written streaming)

Saving is atomic: the zip is written to a temporary file in the target's folder, flushed and
fsynced; the previous file (if any) is kept as ``<name>.bak`` (hard link, else copy, made before
the new file replaces it, so the target path always holds a complete project); the temporary
file then replaces the target with ``os.replace`` and the folder is fsynced. A failed or
interrupted save leaves the previous file as it was and removes its temporary file when it can
(a save killed outright leaves ``.<name>.*.tmp`` behind; the next successful save of the same
file removes such leftovers once they are :data:`STALE_TEMP_SECONDS` old).

Loading checks everything before trusting it: the zip structure, the ``mimetype`` entry, entry
names (no ``..``, absolute paths, drive letters, backslashes, duplicates, links), entry counts,
declared sizes against per-entry and total caps, and the real decompressed size while reading
(zip bombs). Any problem is a :class:`core.errors.ProjectError` naming the file and the entry.
Nothing is ever extracted to disk. Older schemas are upgraded by :data:`MIGRATIONS` (one function
per version step); a newer schema is refused with a request to update.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import math
import os
import re
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import core
from core.camera import Camera
from core.errors import HandlesError, ProjectError
from core.io import check_file
from core.scene import Scene, SceneObject, new_id
from core.transform import Transform3D

log = logging.getLogger(__name__)

MIMETYPE = "application/x-handles-studio"
EXTENSION = ".handles"
SCHEMA_VERSION = 1
APP_NAME = "Handles Studio"
THUMBNAIL_SIDE = 256

#: caps against hostile or damaged files (bytes)
MAX_ENTRIES = 100_000
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_ASSET_BYTES = 1024 * 1024 * 1024
MAX_CACHE_BYTES = 8 * 1024 * 1024 * 1024
MAX_TOTAL_BYTES = 32 * 1024 * 1024 * 1024
#: pixels of one image inside a project (the photo limit of core.io, plus headroom for masks)
MAX_IMAGE_PIXELS = 100_000_000

_CHUNK = 1024 * 1024


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RenderRecord:
    """One entry of the render history: the image, the request that made it (``RenderRequest.to_dict()``),
    the renderer's info, the creation time (ISO 8601) and an id."""

    image: np.ndarray
    request: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    id: str = field(default_factory=new_id)


@dataclass
class Project:
    """A scene plus everything saved with it.

    ``renders``: render history, oldest first. ``settings``: JSON-serialisable per-project settings.
    ``caches``: name -> bytes (e.g. a stored identity); written uncompressed and streamed.
    ``thumbnail``: (h, w, 3) uint8 with long side 256, or None (made on save from the latest render,
    else the photo). ``created``/``modified``: ISO 8601 times (set on save).
    ``schema_version``: of the file it was loaded from (the current one after migration).
    """

    scene: Scene
    renders: list[RenderRecord] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    caches: dict[str, bytes] = field(default_factory=dict)
    thumbnail: np.ndarray | None = None
    created: str | None = None
    modified: str | None = None
    app_version: str = core.__version__
    schema_version: int = SCHEMA_VERSION


# =========================================================================== helpers
def _jsonable(v: Any) -> Any:
    """Plain JSON types from dicts/lists/tuples/numpy scalars and arrays; other objects by ``str``."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, Path):
        return str(v)
    return str(v)


def make_thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """(h, w, 3) uint8 copy of ``image`` with its long side ``side`` (never enlarged)."""
    from PIL import Image

    h, w = image.shape[:2]
    s = min(1.0, side / max(h, w))
    tw, th = max(1, round(w * s)), max(1, round(h * s))
    if (tw, th) == (w, h):
        return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8).copy()
    return np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)).resize((tw, th), Image.Resampling.LANCZOS))


def _png_bytes(arr: np.ndarray, level: int = 3) -> bytes:
    """PNG of an (H, W, 3) uint8 image, or of an (H, W) bool mask (1-bit); zlib ``level``."""
    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(arr)
    im.save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


# =========================================================================== saving
def save_project(path, project: Project) -> Path:
    """Write ``project`` to ``path`` atomically, keeping the previous file as ``<path>.bak``.

    Raises ProjectError (the previous file untouched) when the folder is missing or not writable,
    the disk is full, or the project holds something that cannot be saved.
    """
    path = Path(path)
    if path.is_symlink():  # save through a link: replace the file it points to, keep the link
        path = path.resolve()
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ProjectError(f"{path}: folder {folder} does not exist")
    if path.is_dir():
        raise ProjectError(f"{path}: is a folder, not a project file")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            mode = 0o666 & ~_umask()
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w+b") as fh:
            fd = -1
            created, modified = _write_zip(fh, project)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            _make_backup(path)
        os.replace(tmp, path)
        _fsync_dir(folder)
        project.created, project.modified = created, modified
        _remove_stale_temps(path)
    except BaseException as exc:
        log.warning("%s: save failed, the previous file is unchanged (%s: %s)", path, type(exc).__name__, exc)
        if fd >= 0:
            os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, HandlesError):
            raise
        if isinstance(exc, OSError):
            raise ProjectError(f"{path}: cannot save the project ({exc.strerror or exc}); the previous file is unchanged") from exc
        if isinstance(exc, (ValueError, TypeError)):
            raise ProjectError(f"{path}: cannot save the project ({exc}); the previous file is unchanged") from exc
        raise
    log.info("saved %s (%d bytes)", path, _size(path))
    return path


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone or unreadable already: the size is only for the log
        return -1


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


#: a temporary file of an interrupted save older than this (seconds) is removed by the next save
STALE_TEMP_SECONDS = 15 * 60


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files that a killed save of ``path`` left behind (untouched for a while)."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for prefix in (f".{path.name}.", f".{backup_path(path).name}."):
        for p in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
            try:
                if p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass


def backup_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".bak")


def _make_backup(path: Path) -> None:
    """Replace ``<path>.bak`` by the current ``path`` atomically, leaving ``path`` in place."""
    bak = backup_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{bak.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:  # no hard links on this file system: copy
            import shutil

            shutil.copy2(path, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, bak)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _write_zip(fh, project: Project) -> tuple[str, str]:
    scene = project.scene
    now = now_iso()
    with zipfile.ZipFile(fh, "w", allowZip64=True) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype", date_time=(1980, 1, 1, 0, 0, 0)), MIMETYPE.encode("ascii"), compress_type=zipfile.ZIP_STORED)

        def put(name: str, data: bytes, compress: bool) -> str:
            info = zipfile.ZipInfo(name, date_time=datetime.now().timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            zf.writestr(info, data, compresslevel=6 if compress else None)
            return name

        h, w = scene.depth.shape
        sc: dict[str, Any] = {
            "name": scene.name,
            "prompt": scene.prompt,
            "camera": scene.camera.to_dict(),
            "size": [w, h],
            "depth_unit": scene.depth_unit,
            "depth_source": scene.depth_source,
            "photo": put("scene/photo.png", _png_bytes(scene.photo), False),
            "depth": put("scene/depth.npy", _npy_bytes(scene.depth.astype(np.float32)), True),
            "original": None,
            "alpha": None,
            "background_depth": None,
            "objects": [],
            "variants": {},
        }
        orig = scene.original_photo
        if orig is not None and not (orig.shape == scene.photo.shape and np.array_equal(orig, scene.photo)):
            sc["original"] = put("scene/original.png", _png_bytes(np.ascontiguousarray(orig, dtype=np.uint8), 1), False)
        if scene.alpha is not None:
            sc["alpha"] = put("scene/alpha.npy", _npy_bytes(np.asarray(scene.alpha, np.float32)), True)
        if scene.background_depth is not None:
            sc["background_depth"] = put("scene/background_depth.npy", _npy_bytes(np.asarray(scene.background_depth, np.float32)), True)
        used_ids: set[str] = set()
        for i, obj in enumerate(scene.objects):
            oid = obj.id if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", obj.id or "") and obj.id not in used_ids else f"obj{i}"
            used_ids.add(oid)
            sc["objects"].append(
                {
                    "id": obj.id,
                    "name": obj.name,
                    "mask": put(f"scene/masks/{oid}.png", _png_bytes(np.ascontiguousarray(obj.mask, dtype=bool)), False),
                    "transform": obj.transform.to_dict(),
                    "visible": bool(obj.visible),
                }
            )
        sc["variants"] = {str(v): {str(o): t.to_dict() for o, t in ts.items()} for v, ts in scene.variants.items()}

        renders = []
        for i, r in enumerate(project.renders):
            rid = r.id if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", r.id or "") else f"r{i}"
            img = np.asarray(r.image)
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"render {r.id!r}: image must be (H, W, 3), got shape {img.shape}")
            renders.append(
                {
                    "id": r.id,
                    "image": put(f"renders/{i:04d}_{rid}.png", _png_bytes(np.ascontiguousarray(img, dtype=np.uint8)), False),
                    "request": _jsonable(r.request),
                    "info": _jsonable(r.info),
                    "created": r.created,
                }
            )

        thumb = project.thumbnail
        if thumb is None:
            thumb = make_thumbnail(project.renders[-1].image if project.renders else scene.photo)
        thumb_entry = put("thumbnail.png", _png_bytes(np.ascontiguousarray(thumb, dtype=np.uint8)), False)

        caches = []
        for i, (name, blob) in enumerate(project.caches.items()):
            entry = f"caches/{i:04d}.bin"
            mv = memoryview(blob).cast("B")
            info = zipfile.ZipInfo(entry, date_time=datetime.now().timetuple()[:6])
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = mv.nbytes
            with zf.open(info, "w", force_zip64=mv.nbytes > 0x7FFFFFFF) as out:
                for k in range(0, mv.nbytes, _CHUNK):
                    out.write(mv[k : k + _CHUNK])
            caches.append({"name": str(name), "entry": entry, "size": mv.nbytes})

        manifest = {
            "schema_version": SCHEMA_VERSION,
            "app": APP_NAME,
            "app_version": core.__version__,
            "created": project.created or now,
            "modified": now,
            "scene": sc,
            "renders": renders,
            "settings": _jsonable(project.settings),
            "caches": caches,
            "thumbnail": thumb_entry,
        }
        put("manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8"), True)
    return manifest["created"], now


# =========================================================================== loading
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_entry_name(name: str) -> str | None:
    """Why an entry name is unsafe (escapes the archive or is ambiguous), or None when it is fine."""
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL byte in the name"
    if "\\" in name:
        return "backslash in the name"
    if name.startswith("/"):
        return "absolute path"
    if _DRIVE.match(name):
        return "drive letter"
    parts = name.split("/")
    if any(p == ".." for p in parts):
        return "'..' escapes the archive"
    if any(p == "." for p in parts):
        return "'.' component"
    return None


class _Reader:
    """A validated, read-only view of a project zip. Every read is size-capped and CRC-checked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        check_file(path, "project", ProjectError, label=str(path))
        try:
            self.zf = zipfile.ZipFile(path, "r")
        except zipfile.BadZipFile as exc:
            raise ProjectError(f"{path}: not a Handles Studio project, or truncated/damaged ({exc})") from exc
        except (OSError, ValueError, EOFError) as exc:
            raise ProjectError(f"{path}: cannot read the project file ({exc})") from exc
        try:
            self._validate()
        except BaseException:
            self.zf.close()
            raise

    def close(self) -> None:
        self.zf.close()

    def _err(self, entry: str, msg: str) -> ProjectError:
        return ProjectError(f"{self.path}: entry '{entry}': {msg}")

    def _validate(self) -> None:
        infos = self.zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise ProjectError(f"{self.path}: {len(infos)} entries, more than the {MAX_ENTRIES} a project may have")
        seen: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = info.filename
            why = check_entry_name(name)
            if why:
                raise self._err(name, f"unsafe path ({why}); the file may be hostile and was not opened")
            if name in seen:
                raise self._err(name, "appears twice in the archive")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise self._err(name, "is a symbolic link")
            if info.flag_bits & 0x1:
                raise self._err(name, "is encrypted")
            if info.file_size < 0 or info.compress_size < 0:
                raise self._err(name, "has a negative size")
            cap = self._cap(name)
            if info.file_size > cap:
                raise self._err(name, f"declares {info.file_size} bytes, more than the {cap} allowed (zip bomb?)")
            total += info.file_size
            seen[name] = info
        if total > MAX_TOTAL_BYTES:
            raise ProjectError(f"{self.path}: entries declare {total} bytes in all, more than the {MAX_TOTAL_BYTES} allowed (zip bomb?)")
        self.infos = seen
        if not infos or infos[0].filename != "mimetype":
            raise ProjectError(f"{self.path}: not a Handles Studio project (its first entry is not 'mimetype')")
        mt = self.read("mimetype", max_bytes=256).decode("ascii", "replace").strip()
        if mt != MIMETYPE:
            raise ProjectError(f"{self.path}: not a Handles Studio project (mimetype is {mt[:60]!r})")

    @staticmethod
    def _cap(name: str) -> int:
        if name == "manifest.json" or name == "mimetype":
            return MAX_MANIFEST_BYTES
        if name.startswith("caches/"):
            return MAX_CACHE_BYTES
        return MAX_ASSET_BYTES

    def has(self, name: str) -> bool:
        return name in self.infos

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        """Bytes of entry ``name``; fails if the real size differs from the declared one or passes a cap."""
        if not isinstance(name, str) or not name:
            raise ProjectError(f"{self.path}: manifest names an invalid entry {name!r}")
        info = self.infos.get(name)
        if info is None:
            raise self._err(name, "missing from the project (the file is incomplete or damaged)")
        cap = min(self._cap(name), max_bytes or self._cap(name))
        declared = info.file_size
        if declared > cap:
            raise self._err(name, f"declares {declared} bytes, more than the {cap} allowed (zip bomb?)")
        if info.compress_type == zipfile.ZIP_STORED and declared > _CHUNK:
            return self._read_stored(info)
        buf = bytearray(declared)
        n = 0
        try:
            with self.zf.open(info, "r") as src:
                while True:
                    # ask for one byte more than is left, to notice data beyond the declared size
                    chunk = src.read(min(_CHUNK, declared - n + 1))
                    if not chunk:
                        break
                    if n + len(chunk) > declared:
                        raise self._err(name, f"holds more data than the {declared} bytes it declares (zip bomb?)")
                    buf[n : n + len(chunk)] = chunk
                    n += len(chunk)
        except ProjectError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError, NotImplementedError) as exc:
            raise self._err(name, f"damaged ({exc})") from exc
        except Exception as exc:  # zlib.error and friends
            raise self._err(name, f"damaged ({type(exc).__name__}: {exc})") from exc
        if n != declared:
            raise self._err(name, f"holds {n} bytes, not the {declared} it declares (damaged)")
        return bytes(buf)

    def _read_stored(self, info: zipfile.ZipInfo) -> bytes:
        """An uncompressed entry read straight from the file into one bytes object (large caches:
        no second copy), with the local header, the size and the CRC-32 checked."""
        import struct
        import zlib

        name = info.filename
        try:
            with open(self.path, "rb") as fh:
                fh.seek(info.header_offset)
                head = fh.read(30)
                if len(head) != 30 or head[:4] != b"PK\x03\x04":
                    raise self._err(name, "damaged (bad local header)")
                n_len, x_len = struct.unpack("<HH", head[26:30])
                local = fh.read(n_len).decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")
                if local != info.orig_filename:
                    raise self._err(name, "damaged (local header names another entry)")
                fh.seek(x_len, os.SEEK_CUR)
                data = fh.read(info.file_size)
        except OSError as exc:
            raise self._err(name, f"cannot be read ({exc.strerror or exc})") from exc
        if len(data) != info.file_size:
            raise self._err(name, f"holds {len(data)} bytes, not the {info.file_size} it declares (truncated)")
        crc = 0
        mv = memoryview(data)
        for k in range(0, len(data), 16 * _CHUNK):
            crc = zlib.crc32(mv[k : k + 16 * _CHUNK], crc)
        if crc != info.CRC:
            raise self._err(name, "damaged (CRC-32 mismatch)")
        return data

    # ----- typed reads -----
    def json(self, name: str) -> Any:
        data = self.read(name, MAX_MANIFEST_BYTES)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._err(name, f"not valid JSON ({exc})") from exc

    def image(self, name: str, mode: str = "RGB") -> np.ndarray:
        from PIL import Image

        data = self.read(name)
        try:
            im = Image.open(io.BytesIO(data), formats=["PNG"])
        except Exception as exc:  # noqa: BLE001 - Pillow raises several types for bad data
            raise self._err(name, f"not a readable PNG image ({exc})") from exc
        try:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS or w <= 0 or h <= 0:
                raise self._err(name, f"image size {w}x{h} is not allowed")
            im.load()
            if mode == "mask":
                return np.asarray(im.convert("L")) > 127
            return np.asarray(im.convert(mode)).copy()
        except ProjectError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._err(name, f"damaged PNG image ({exc})") from exc
        finally:
            im.close()

    def array(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        data = self.read(name)
        try:
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - ValueError, EOFError, OSError...
            raise self._err(name, f"not a readable .npy array ({exc})") from exc
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiub":
            raise self._err(name, "not a numeric array")
        if shape is not None and a.shape != tuple(shape):
            raise self._err(name, f"has shape {a.shape}, expected {tuple(shape)}")
        return a


# ----- migrations -----
#: schema_version N -> function(manifest, zip reader) returning the manifest of version N + 1
MIGRATIONS: dict[int, Callable[[dict, Any], dict]] = {}


def migration(from_version: int):
    """Register a function that upgrades a manifest from ``from_version`` to ``from_version + 1``."""

    def deco(fn):
        MIGRATIONS[int(from_version)] = fn
        return fn

    return deco


@migration(0)
def _migrate_0_to_1(manifest: dict, reader) -> dict:
    """Schema 0, the pre-release layout: a flat manifest (scene fields at the top level, no
    ``scene`` section), transforms as ``{"t": [x, y, z], "q": [w, x, y, z], "s": scale}``, no
    object ids or visibility, renders as ``{"image", "request", "created"}``, no caches."""

    def tr(d: dict) -> dict:
        d = d or {}
        return {"translation": d.get("t", [0.0, 0.0, 0.0]), "rotation": d.get("q", [1.0, 0.0, 0.0, 0.0]), "scale": d.get("s", 1.0)}

    cam = manifest.get("camera") or {}
    objects = []
    for i, o in enumerate(manifest.get("objects") or []):
        objects.append({"id": f"obj{i}", "name": o.get("name", f"object {i + 1}"), "mask": o.get("mask"), "transform": tr(o.get("transform")), "visible": True})
    size = manifest.get("size") or [cam.get("width"), cam.get("height")]
    scene = {
        "name": manifest.get("name", "Untitled"),
        "prompt": manifest.get("prompt", ""),
        "camera": cam,
        "size": size,
        "depth_unit": manifest.get("depth_unit", "m"),
        "depth_source": manifest.get("depth_source", "file"),
        "photo": manifest.get("photo"),
        "depth": manifest.get("depth"),
        "original": manifest.get("original"),
        "alpha": None,
        "background_depth": None,
        "objects": objects,
        "variants": {v: {o: tr(t) for o, t in (ts or {}).items()} for v, ts in (manifest.get("variants") or {}).items()},
    }
    renders = [
        {"id": f"r{i}", "image": r.get("image"), "request": r.get("request", {}), "info": {}, "created": r.get("created", "")}
        for i, r in enumerate(manifest.get("renders") or [])
    ]
    return {
        "schema_version": 1,
        "app": APP_NAME,
        "app_version": manifest.get("app_version", "0"),
        "created": manifest.get("created"),
        "modified": manifest.get("modified"),
        "scene": scene,
        "renders": renders,
        "settings": manifest.get("settings", {}),
        "caches": [],
        "thumbnail": manifest.get("thumbnail"),
    }


def migrate(manifest: dict, reader, path: Path | str = "project") -> dict:
    """Upgrade ``manifest`` step by step to :data:`SCHEMA_VERSION` using :data:`MIGRATIONS`."""
    v = manifest.get("schema_version")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ProjectError(f"{path}: entry 'manifest.json': schema_version must be a non-negative integer, got {v!r}")
    if v > SCHEMA_VERSION:
        raise ProjectError(f"{path}: made by a newer Handles Studio (schema {v}; this version reads up to {SCHEMA_VERSION}); update to open it")
    while v < SCHEMA_VERSION:
        fn = MIGRATIONS.get(v)
        if fn is None:
            raise ProjectError(f"{path}: schema {v} is too old to open (no migration from it)")
        try:
            manifest = fn(dict(manifest), reader)
        except ProjectError:
            raise
        except Exception as exc:  # noqa: BLE001 - a migration that fails on odd data
            raise ProjectError(f"{path}: cannot upgrade from schema {v} ({type(exc).__name__}: {exc})") from exc
        manifest["schema_version"] = v + 1
        v += 1
    return manifest


def _transform(d, where: str, path: Path) -> Transform3D:
    if not isinstance(d, dict):
        raise ProjectError(f"{path}: entry 'manifest.json': {where}: not a transform")
    try:
        return Transform3D.from_dict(d)
    except (ValueError, TypeError) as exc:
        raise ProjectError(f"{path}: entry 'manifest.json': {where}: {exc}") from exc


def load_project(path, caches: bool = True) -> Project:
    """Read a ``.handles`` file (see the module docstring); ProjectError naming the entry on any problem.

    ``caches=False`` leaves the cache blobs unread (``Project.caches`` is empty): for inspecting a
    project, not for re-saving it (the caches would be lost).
    """
    path = Path(path)
    try:
        r = _Reader(path)
        try:
            project = _load(r, path, caches)
        finally:
            r.close()
    except ProjectError as exc:
        log.warning("%s: cannot load the project (%s)", path, exc)
        raise
    log.info("loaded %s (%d bytes, %d renders)", path, _size(path), len(project.renders))
    return project


def _load(r: _Reader, path: Path, want_caches: bool) -> Project:
    M = "manifest.json"
    manifest = r.json(M)
    if not isinstance(manifest, dict):
        raise r._err(M, "is not a JSON object")
    manifest = migrate(manifest, r, path)

    def need(d: dict, key: str, typ, where: str):
        v = d.get(key) if isinstance(d, dict) else None
        if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
            raise r._err(M, f"{where}{key}: missing or not a {getattr(typ, '__name__', typ)}")
        return v

    sc = need(manifest, "scene", dict, "")
    try:
        camera = Camera.from_dict(need(sc, "camera", dict, "scene."))
    except (KeyError, TypeError, ValueError) as exc:
        raise r._err(M, f"scene.camera: {exc}") from exc
    w, h = camera.width, camera.height
    if w * h > MAX_IMAGE_PIXELS:
        raise r._err(M, f"scene.camera: size {w}x{h} is not allowed")
    photo_entry = need(sc, "photo", str, "scene.")
    photo = r.image(photo_entry, "RGB")
    if photo.shape != (h, w, 3):
        raise r._err(photo_entry, f"photo is {photo.shape[1]}x{photo.shape[0]}, the camera says {w}x{h}")
    depth_entry = need(sc, "depth", str, "scene.")
    depth = r.array(depth_entry, (h, w)).astype(np.float32)
    original = None
    if sc.get("original"):
        original = r.image(need(sc, "original", str, "scene."), "RGB")
    alpha = None
    if sc.get("alpha"):
        alpha = r.array(need(sc, "alpha", str, "scene."), (h, w)).astype(np.float32)
    bg = None
    if sc.get("background_depth"):
        bg = r.array(need(sc, "background_depth", str, "scene."), (h, w)).astype(np.float32)

    objects = []
    for i, o in enumerate(need(sc, "objects", list, "scene.")):
        where = f"scene.objects[{i}]."
        if not isinstance(o, dict):
            raise r._err(M, f"scene.objects[{i}]: not an object")
        mask_entry = need(o, "mask", str, where)
        mask = r.image(mask_entry, "mask")
        if mask.shape != (h, w):
            raise r._err(mask_entry, f"mask is {mask.shape[1]}x{mask.shape[0]}, the photo is {w}x{h}")
        oid = o.get("id")
        if not isinstance(oid, str):
            oid = new_id()
        objects.append(
            SceneObject(
                name=str(need(o, "name", str, where)),
                mask=mask,
                transform=_transform(o.get("transform", {}), where + "transform", path),
                visible=bool(o.get("visible", True)),
                id=oid,
            )
        )
    variants = {}
    for vname, ts in (sc.get("variants") or {}).items():
        if not isinstance(ts, dict):
            raise r._err(M, f"scene.variants.{vname}: not an object")
        variants[str(vname)] = {str(on): _transform(t, f"scene.variants.{vname}.{on}", path) for on, t in ts.items()}
    try:
        scene = Scene(
            photo=photo,
            depth=depth,
            camera=camera,
            prompt=str(sc.get("prompt", "")),
            objects=objects,
            variants=variants,
            name=str(sc.get("name", path.stem)),
            depth_unit=str(sc.get("depth_unit", "m")),
            depth_source=str(sc.get("depth_source", "file")),
            original_photo=original,
            alpha=alpha,
            background_depth=bg,
        )
    except ValueError as exc:
        raise r._err(M, f"inconsistent scene ({exc})") from exc

    renders = []
    for i, rd in enumerate(manifest.get("renders") or []):
        if not isinstance(rd, dict):
            raise r._err(M, f"renders[{i}]: not an object")
        img = r.image(need(rd, "image", str, f"renders[{i}]."), "RGB")
        req = rd.get("request") or {}
        info = rd.get("info") or {}
        if not isinstance(req, dict) or not isinstance(info, dict):
            raise r._err(M, f"renders[{i}]: request and info must be objects")
        renders.append(RenderRecord(image=img, request=req, info=info, created=str(rd.get("created", "")), id=str(rd.get("id") or new_id())))

    thumb = None
    if manifest.get("thumbnail"):
        thumb = r.image(need(manifest, "thumbnail", str, ""), "RGB")

    caches: dict[str, bytes] = {}
    if want_caches:
        for i, c in enumerate(manifest.get("caches") or []):
            if not isinstance(c, dict):
                raise r._err(M, f"caches[{i}]: not an object")
            name = need(c, "name", str, f"caches[{i}].")
            entry = need(c, "entry", str, f"caches[{i}].")
            blob = r.read(entry)
            if isinstance(c.get("size"), int) and c["size"] != len(blob):
                raise r._err(entry, f"holds {len(blob)} bytes, the manifest says {c['size']} (damaged)")
            caches[name] = blob

    settings = manifest.get("settings") or {}
    if not isinstance(settings, dict):
        raise r._err(M, "settings: not an object")
    return Project(
        scene=scene,
        renders=renders,
        settings=settings,
        caches=caches,
        thumbnail=thumb,
        created=manifest.get("created"),
        modified=manifest.get("modified"),
        app_version=str(manifest.get("app_version", "")),
        schema_version=SCHEMA_VERSION,
    )


def project_info(path) -> dict:
    """Manifest-level facts about a project without decoding its images (for listings)."""
    path = Path(path)
    r = _Reader(path)
    try:
        m = migrate(r.json("manifest.json"), r, path)
        return {
            "schema_version": m.get("schema_version"),
            "app_version": m.get("app_version"),
            "created": m.get("created"),
            "modified": m.get("modified"),
            "caches": {c.get("name"): c.get("size") for c in m.get("caches") or [] if isinstance(c, dict)},
            "renders": len(m.get("renders") or []),
            "file_size": path.stat().st_size,
        }
    finally:
        r.close()
