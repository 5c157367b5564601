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
    renders/<n>_<render id>.png   render history images (request, info, created in the manifest;
                                  records with the same image share one entry)
    thumbnail.png                 long side 256 (the latest render, else the photo)
    caches/<n>.bin                named binary caches (stored, written streaming)

Saving is atomic: the zip is written to a temporary file in the target's folder, flushed and
fsynced; the previous file (if any) is kept as ``<name>.bak`` (hard link, else copy, made before
the new file replaces it, so the target path always holds a complete project); the temporary
file then replaces the target with ``os.replace`` and the folder is fsynced. A failed or
interrupted save leaves the previous file as it was and removes its temporary file when it can.
A save killed outright leaves ``.<name>.w<pid>-<start>-<host>.<random>.tmp`` behind: the name
says which process wrote it (its pid, its start time in ms and a tag of the host), so the next
save or load of the same project removes it at once when that process is gone
(:func:`remove_dead_temps`; temporaries of older versions, without a writer in the name, once
they are :data:`STALE_TEMP_SECONDS` old).

Loading checks everything before trusting it: the zip structure, the ``mimetype`` entry, entry
names (no ``..``, absolute paths, drive letters, backslashes, duplicates, links), entry counts,
declared sizes against per-entry and total caps, the manifest's types, nesting and counts
(:data:`MAX_NESTING`, :data:`MAX_OBJECTS`, :data:`MAX_VARIANTS`, :data:`MAX_VARIANT_TRANSFORMS`; the
working size against :data:`core.io.MAX_PROJECT_LONG_SIDE`), and the real decompressed size while reading
(zip bombs). Any problem is a :class:`core.errors.ProjectError` (one line) naming the file and
the entry. Nothing is ever extracted to disk. Older schemas are upgraded by :data:`MIGRATIONS`
(one function per version step); a newer schema is refused with a request to update.

Loading is lazy where it can be: the scene (photo, depth, masks) is decoded at once, but render
images and the thumbnail are decoded when first used (``RenderRecord.image``; each entry at
most once, records sharing an entry share the array) and caches are read when first used
(:class:`ProjectCaches`), each capped by what the photo's size can need (:func:`cache_cap`).
The loaded project keeps the file it came from open (on POSIX; elsewhere it reopens the path) to
read them, and a save copies entries that were never read straight from it, without decoding.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import stat
import struct
import tempfile
import threading
import weakref
import zipfile
from collections.abc import Callable, ItemsView, Iterator, Mapping, ValuesView
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, overload

import numpy as np

import core
from core.atomic import (  # noqa: F401 - the temporaries' names and ages, re-exported for the project's callers
    STALE_TEMP_SECONDS,
    _writer_tag,
    file_mode,
    fsync_dir,
    os_error_reason,
    temp_prefix,
)
from core.atomic import remove_dead_temps as _remove_dead_temps
from core.camera import Camera
from core.errors import HandlesError, ProjectError
from core.io import MAX_PROJECT_LONG_SIDE, check_file
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
#: the absolute cap of one cache entry; the real cap depends on the photo (:func:`cache_cap`)
MAX_CACHE_BYTES = 8 * 1024 * 1024 * 1024
MAX_TOTAL_BYTES = 32 * 1024 * 1024 * 1024
#: pixels of one image inside a project (the photo limit of core.io, plus headroom for masks)
MAX_IMAGE_PIXELS = 100_000_000
#: bytes per photo pixel a cache entry may hold. The largest cache is a stored identity: float16
#: activations of UNet up_blocks 2 and 3 (30 bytes per render pixel per captured step; 42.5 with
#: all four blocks) plus the latent trajectory. The reference preset captures 38 of 50 steps
#: (about 1.2 KB per render pixel), and a render may run at up to about 1.5 times the photo's
#: long side (the model's native resolution): 4 KiB per photo pixel leaves room for both.
CACHE_BYTES_PER_PIXEL = 4096
#: the cap of a cache entry for small photos (rendered at the model's resolution, not theirs)
CACHE_FLOOR_BYTES = 1024 * 1024 * 1024
#: variants of one scene (the DH import of transforms.json has the same cap)
MAX_VARIANTS = 10_000
#: objects of one scene: each holds a full-size mask (2.4 MB at 1536 px), so 256 of them stay
#: under 1 GB where the preview needs them (20 000 objects sharing one mask entry took 5 GB)
MAX_OBJECTS = 256
#: object transforms in all the variants together: ``info`` lists each (600 000 took 25 s)
MAX_VARIANT_TRANSFORMS = 100_000
#: nesting depth of the manifest's free-form values (settings, render request and info; real ones
#: nest about 5 deep), which saving walks recursively
MAX_NESTING = 64

_CHUNK = 1024 * 1024


def cache_cap(width: int, height: int) -> int:
    """The most bytes one cache entry of a project with a ``width`` x ``height`` photo may hold
    (see :data:`CACHE_BYTES_PER_PIXEL`)."""
    return min(MAX_CACHE_BYTES, max(CACHE_FLOOR_BYTES, CACHE_BYTES_PER_PIXEL * int(width) * int(height)))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short(text: Any, n: int = 120) -> str:
    """``str(text)`` on one line, at most ``n`` characters (for messages quoting file contents)."""
    t = " ".join(str(text).split())
    return t if len(t) <= n else t[: n - 3] + "..."


# =========================================================================== lazy entries
#: a loaded project keeps its file open to read lazy entries (POSIX: the path can be replaced meanwhile)
_KEEP_FILE_OPEN = os.name == "posix"


class _Source:
    """The project file a loaded project came from, for reading its entries later.

    On POSIX it keeps the opened file (the inode that was validated) so that later reads see the
    same bytes even after the path was replaced (a save), moved or deleted; it also looks at the
    path. An entry is found by name, else by content (CRC-32 and size: a re-save writes the same
    bytes under another name), and read with every check of a first load.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd
        if fd is not None:
            weakref.finalize(self, os.close, fd)

    @classmethod
    def of(cls, r: _Reader) -> _Source:
        fd = None
        if _KEEP_FILE_OPEN:
            try:
                fp = r.zf.fp
                if fp is not None:
                    fd = os.dup(fp.fileno())
            except (OSError, AttributeError, ValueError):
                fd = None
        return cls(r.path, fd)

    def _readers(self) -> Iterator[_Reader]:
        if self._fd is not None:
            try:
                r = _Reader(self.path, _PreadFile(self._fd))
            except ProjectError:
                r = None
            if r is not None:
                yield r
        try:
            yield _Reader(self.path)
        except ProjectError:
            return

    def find(self, name: str, crc: int, size: int) -> tuple[_Reader, str]:
        """An open reader holding the entry (the caller closes it) and the entry's name there."""
        for r in self._readers():
            info = r.infos.get(name)
            if info is None or (info.CRC, info.file_size) != (crc, size):
                info = next((i for i in r.infos.values() if i.CRC == crc and i.file_size == size), None)
            if info is not None:
                return r, info.filename
            r.close()
        raise ProjectError(f"{self.path}: entry '{name}' cannot be read any more (the file was changed or removed since it was opened); reopen the project")


class _PreadFile(io.RawIOBase):
    """A read-only file over a shared descriptor with its own position (``os.pread``): readers in
    several threads never move each other's offset. Closing it leaves the descriptor open."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        else:
            pos = os.fstat(self._fd).st_size + offset
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def reopen(self) -> Any:
        """A new, independent buffered file of the same (possibly deleted) file where the system
        offers one (Linux: /proc/self/fd), else None."""
        try:
            return open(f"/proc/self/fd/{self._fd}", "rb")
        except OSError:
            return None

    def readinto(self, buffer: Any) -> int:
        mv = memoryview(buffer).cast("B")
        data = os.pread(self._fd, mv.nbytes, self._pos)
        mv[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, os.fstat(self._fd).st_size - self._pos)
        data = os.pread(self._fd, size, self._pos)
        if len(data) == size or not data:
            self._pos += len(data)
            return data
        # one pread returns at most about 2 GiB: fill one buffer (no second copy of big entries)
        buf = bytearray(size)
        n = len(data)
        buf[:n] = data
        del data
        mv = memoryview(buf)
        while n < size:
            k = os.preadv(self._fd, [mv[n:]], self._pos + n)
            if k == 0:
                break
            n += k
        self._pos += n
        del mv
        if n < size:
            del buf[n:]
        return bytes(buf)


@dataclass(frozen=True)
class _EntryRef:
    """An entry of a loaded project file, identified by its content (CRC-32 and size)."""

    source: _Source
    name: str
    crc: int
    size: int

    def read(self, cap: int) -> bytes:
        r, entry = self.source.find(self.name, self.crc, self.size)
        try:
            return r.read(entry, cap)
        finally:
            r.close()


class _LazyImage:
    """Decodes one PNG entry on first call (thread-safe) and keeps the array for later calls."""

    def __init__(self, ref: _EntryRef, mode: str = "RGB") -> None:
        self.ref = ref
        self.mode = mode
        self._value: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def decoded(self) -> bool:
        return self._value is not None

    def __call__(self) -> np.ndarray:
        with self._lock:
            if self._value is None:
                r, entry = self.ref.source.find(self.ref.name, self.ref.crc, self.ref.size)
                try:
                    self._value = r.image(entry, self.mode)
                finally:
                    r.close()
            return self._value


class _LazyArray:
    """A dataclass field holding an array or a :class:`_LazyImage` that is decoded on first access."""

    def __init__(self, optional: bool) -> None:
        self.optional = optional
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def get(self, obj: object) -> Any:
        """The stored value (an array, None or a pending loader) without decoding anything."""
        return obj.__dict__.get(self.slot)

    def __set__(self, obj: object, value: np.ndarray | _LazyImage | None) -> None:
        obj.__dict__[self.slot] = value

    def _resolve(self, obj: object) -> Any:
        v = obj.__dict__.get(self.slot)
        if isinstance(v, _LazyImage):
            v = v()
            obj.__dict__[self.slot] = v
        return v


class _LazyRequiredArray(_LazyArray):
    def __init__(self) -> None:
        super().__init__(optional=False)

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Any: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> np.ndarray: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            raise AttributeError(self.slot)  # no default: the dataclass field is required
        return self._resolve(obj)


class _LazyOptionalArray(_LazyArray):
    def __init__(self) -> None:
        super().__init__(optional=True)

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Any: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> np.ndarray | None: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return None  # the dataclass default
        return self._resolve(obj)


class _PendingCache:
    __slots__ = ("ref", "cap")

    def __init__(self, ref: _EntryRef, cap: int) -> None:
        self.ref = ref
        self.cap = cap


class ProjectCaches(dict):
    """A project's caches, name -> bytes, each read from the project file on first access.

    A plain ``dict`` to its users (``in``, ``len``, iteration, ``del``, ``update``, ``items``...
    work as usual and never read more than they return; ``in``, ``len`` and iterating names read
    nothing). :meth:`size` tells a cache's size without reading it; :meth:`copy` stays lazy, and
    saving a project copies caches that were never read straight from the file it came from.
    A value that cannot be read raises :class:`ProjectError` on access.
    """

    def __getitem__(self, key: str) -> bytes:
        v = dict.__getitem__(self, key)
        if isinstance(v, _PendingCache):
            data = v.ref.read(v.cap)
            if dict.get(self, key) is v:
                dict.__setitem__(self, key, data)
            return data
        return v

    def __iter__(self) -> Iterator[str]:  # defined here so that dict(x) and {**x} go through __getitem__
        return dict.__iter__(self)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def items(self) -> ItemsView[str, bytes]:  # type: ignore[override]
        return ItemsView(self)

    def values(self) -> ValuesView[bytes]:  # type: ignore[override]
        return ValuesView(self)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            v = self[key]
            dict.__delitem__(self, key)
            return v
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[str, bytes]:
        if not self:
            raise KeyError("popitem(): the caches are empty")
        key = next(reversed(dict.keys(self)))
        return key, self.pop(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        dict.__setitem__(self, key, default)
        return default

    def copy(self) -> ProjectCaches:
        new = ProjectCaches()
        dict.update(new, dict.items(self))
        return new

    __copy__ = copy

    def __deepcopy__(self, memo: dict) -> ProjectCaches:
        return self.copy()  # bytes and pending entries are immutable

    def __reduce__(self) -> tuple:
        return (dict, (dict(self.items()),))

    def __or__(self, other: Any) -> ProjectCaches:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def __ror__(self, other: Any) -> ProjectCaches:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = ProjectCaches()
        dict.update(new, other)
        dict.update(new, dict.items(self))
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return len(self) == len(other) and all(k in other and self[k] == other[k] for k in self)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = []
        for k, v in dict.items(self):
            parts.append(f"{k!r}: <{v.ref.size} bytes, not read>" if isinstance(v, _PendingCache) else f"{k!r}: <{len(v)} bytes>")
        return "ProjectCaches({" + ", ".join(parts) + "})"

    def size(self, key: str) -> int:
        """The size of cache ``key`` in bytes, without reading it."""
        v = dict.__getitem__(self, key)
        return v.ref.size if isinstance(v, _PendingCache) else len(v)

    def is_read(self, key: str) -> bool:
        return not isinstance(dict.__getitem__(self, key), _PendingCache)

    def _raw(self, key: str) -> bytes | _PendingCache:
        return dict.__getitem__(self, key)


@dataclass(eq=False, repr=False)
class RenderRecord:
    """One entry of the render history: the image, the request that made it (``RenderRequest.to_dict()``),
    the renderer's info, the creation time (ISO 8601) and an id.

    ``image`` is an (H, W, 3) uint8 array; a record loaded from a project decodes it on first
    access (a damaged or vanished entry then raises ProjectError). Records compare by identity.
    """

    image: _LazyRequiredArray = _LazyRequiredArray()
    request: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    id: str = field(default_factory=new_id)

    @property
    def image_loaded(self) -> bool:
        """Whether ``image`` is in memory (reading it decodes nothing)."""
        v = RenderRecord.__dict__["image"].get(self)
        return not isinstance(v, _LazyImage) or v.decoded

    def __repr__(self) -> str:
        v = RenderRecord.__dict__["image"].get(self)
        img = f"<{v.ref.name}, not decoded>" if isinstance(v, _LazyImage) and not v.decoded else f"<{getattr(v, 'shape', '?')}>"
        return f"RenderRecord(id={self.id!r}, created={self.created!r}, image={img}, request={_short(self.request, 80)}, info={_short(self.info, 80)})"


@dataclass
class Project:
    """A scene plus everything saved with it.

    ``renders``: render history, oldest first. ``settings``: JSON-serialisable per-project settings.
    ``caches``: name -> bytes (e.g. a stored identity); written uncompressed and streamed; a
    loaded project's caches are a :class:`ProjectCaches`, read on first access.
    ``thumbnail``: (h, w, 3) uint8 with long side 256, or None (made on save from the latest render,
    else the photo); a loaded one is decoded on first access. ``created``/``modified``: ISO 8601
    times (set on save). ``schema_version``: of the file it was loaded from (the current one after
    migration).
    """

    scene: Scene
    renders: list[RenderRecord] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    caches: dict[str, bytes] = field(default_factory=dict)
    thumbnail: _LazyOptionalArray = _LazyOptionalArray()
    created: str | None = None
    modified: str | None = None
    app_version: str = core.__version__
    schema_version: int = SCHEMA_VERSION


def _pending_image(obj: object, cls: type, name: str) -> _LazyImage | None:
    """The loader of a lazily loaded image field that was never accessed on ``obj``, else None."""
    v = cls.__dict__[name].get(obj)
    return v if isinstance(v, _LazyImage) else None


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
    the disk is full, or the project holds something that cannot be saved. Temporary files that
    killed saves of ``path`` left behind are removed (:func:`remove_dead_temps`).
    """
    path = Path(path)
    if path.is_symlink():  # save through a link: replace the file it points to, keep the link
        path = path.resolve()
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ProjectError(f"{path}: folder {folder} does not exist")
    if path.is_dir():
        raise ProjectError(f"{path}: is a folder, not a project file")
    remove_dead_temps(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=folder)
    except OSError as exc:  # e.g. a read-only folder: name the project, not the temporary
        raise ProjectError(f"{path}: cannot save the project ({os_error_reason(path, exc)}); the previous file is unchanged") from exc
    tmp = Path(tmp_name)
    try:
        mode = file_mode(path)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w+b") as fh:
            fd = -1
            created, modified = _write_zip(fh, project, path)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            _make_backup(path)
        os.replace(tmp, path)
        fsync_dir(folder)
        project.created, project.modified = created, modified
        remove_dead_temps(path)
    except BaseException as exc:
        log.warning("%s: save failed, the previous file is unchanged (%s: %s)", path, type(exc).__name__, _short(exc, 300))
        if fd >= 0:
            os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, HandlesError):
            raise
        if isinstance(exc, OSError):
            raise ProjectError(f"{path}: cannot save the project ({os_error_reason(path, exc, tmp)}); the previous file is unchanged") from exc
        if isinstance(exc, RecursionError):
            raise ProjectError(f"{path}: cannot save the project (its settings or render info nest too deeply); the previous file is unchanged") from exc
        if isinstance(exc, (ValueError, TypeError)):
            raise ProjectError(f"{path}: cannot save the project ({_short(exc, 300)}); the previous file is unchanged") from exc
        raise
    log.info("saved %s (%d bytes)", path, _size(path))
    return path


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone or unreadable already: the size is only for the log
        return -1


# ----- temporary files -----
# The writer-tagged temporaries are core.atomic's (every output of the program uses them); a
# project's cleaning also covers the temporaries of its ``.bak``.
def remove_dead_temps(path) -> list[Path]:
    """Delete the temporary files that killed saves of ``path`` (and of its ``.bak``) left behind
    (see :func:`core.atomic.remove_dead_temps`). Never fails. Returns the removed paths."""
    return _remove_dead_temps(path, also=(backup_path(path),))


def backup_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".bak")


def _make_backup(path: Path) -> None:
    """Replace ``<path>.bak`` by the current ``path`` atomically, leaving ``path`` in place."""
    bak = backup_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(bak), suffix=".tmp", dir=path.parent)
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


class _Copier:
    """Copies entries of loaded project files into the zip being written, streaming, one reader per file."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.readers: dict[int, _Reader] = {}

    def copy(self, ref: _EntryRef, out_name: str) -> None:
        key = id(ref.source)
        r = self.readers.get(key)
        entry = None
        if r is not None:
            entry = next((i.filename for i in r.infos.values() if i.CRC == ref.crc and i.file_size == ref.size), None)
        if r is None or entry is None:
            if r is not None:
                r.close()
            r, entry = ref.source.find(ref.name, ref.crc, ref.size)
            self.readers[key] = r
        info = zipfile.ZipInfo(out_name, date_time=datetime.now().timetuple()[:6])
        info.compress_type = zipfile.ZIP_STORED
        info.file_size = ref.size
        with self.zf.open(info, "w", force_zip64=ref.size > 0x7FFFFFFF) as out:
            for chunk in r.stream(entry):
                out.write(chunk)

    def close(self) -> None:
        for r in self.readers.values():
            r.close()
        self.readers.clear()


def _write_zip(fh, project: Project, path: Path | None = None) -> tuple[str, str]:
    scene = project.scene
    now = now_iso()
    where = path if path is not None else "project"
    if len(scene.variants) > MAX_VARIANTS:
        raise ProjectError(f"{where}: the scene has {len(scene.variants)} variants, more than the {MAX_VARIANTS} a project may hold; delete some variants")
    if len(scene.objects) > MAX_OBJECTS:
        raise ProjectError(f"{where}: the scene has {len(scene.objects)} objects, more than the {MAX_OBJECTS} a project may hold; delete some objects")
    transforms = sum(len(v) for v in scene.variants.values())
    if transforms > MAX_VARIANT_TRANSFORMS:
        raise ProjectError(
            f"{where}: the variants hold {transforms} object transforms, more than the {MAX_VARIANT_TRANSFORMS} a project may hold; delete some variants"
        )
    with zipfile.ZipFile(fh, "w", allowZip64=True) as zf:
        copier = _Copier(zf)
        try:
            manifest = _write_entries(zf, copier, project, now)
        finally:
            copier.close()
    return manifest["created"], now


def _write_entries(zf: zipfile.ZipFile, copier: _Copier, project: Project, now: str) -> dict:
    scene = project.scene
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

    # render images: one entry per distinct image (records loaded from one entry share it); images
    # never decoded since loading are copied from their file as they are
    renders = []
    written: dict[int, str] = {}  # id(loader or array) -> entry
    keep: list[Any] = []  # holds what the ids refer to until the end
    for i, r in enumerate(project.renders):
        rid = r.id if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", r.id or "") else f"r{i}"
        name = f"renders/{i:04d}_{rid}.png"
        pending = _pending_image(r, RenderRecord, "image")
        if pending is not None and not pending.decoded:
            entry = written.get(id(pending))
            if entry is None:
                copier.copy(pending.ref, name)
                entry = written[id(pending)] = name
            keep.append(pending)
        else:
            img = r.image
            entry = written.get(id(img))
            if entry is None:
                arr = np.asarray(img)
                if arr.ndim != 3 or arr.shape[2] != 3:
                    raise ValueError(f"render {r.id!r}: image must be (H, W, 3), got shape {arr.shape}")
                entry = written[id(img)] = put(name, _png_bytes(np.ascontiguousarray(arr, dtype=np.uint8)), False)
            keep.append(img)
        renders.append(
            {
                "id": r.id,
                "image": entry,
                "request": _jsonable(r.request),
                "info": _jsonable(r.info),
                "created": r.created,
            }
        )

    pending = _pending_image(project, Project, "thumbnail")
    if pending is not None and not pending.decoded:
        copier.copy(pending.ref, "thumbnail.png")
        thumb_entry = "thumbnail.png"
    else:
        thumb = project.thumbnail
        if thumb is None:
            thumb = make_thumbnail(project.renders[-1].image if project.renders else scene.photo)
        thumb_entry = put("thumbnail.png", _png_bytes(np.ascontiguousarray(thumb, dtype=np.uint8)), False)

    caches = []
    raw = project.caches._raw if isinstance(project.caches, ProjectCaches) else project.caches.__getitem__
    for i, name in enumerate(list(project.caches)):
        entry = f"caches/{i:04d}.bin"
        blob = raw(name)
        if isinstance(blob, _PendingCache):
            copier.copy(blob.ref, entry)
            caches.append({"name": str(name), "entry": entry, "size": blob.ref.size})
            continue
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
    return manifest


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
    """A validated, read-only view of a project zip. Every read is size-capped and CRC-checked.

    ``fh``: an open binary file of the project to read instead of opening ``path`` (the reader
    then owns and closes it); ``path`` still names the file in messages.
    """

    def __init__(self, path: Path, fh: Any = None) -> None:
        self.path = path
        self._fh = fh
        if fh is None:
            check_file(path, "project", ProjectError, label=str(path))
        try:
            self.zf = zipfile.ZipFile(fh if fh is not None else path, "r")
        except zipfile.BadZipFile as exc:
            self._close_fh()
            raise ProjectError(f"{path}: not a Handles Studio project, or truncated/damaged ({exc})") from exc
        except (OSError, ValueError, EOFError) as exc:
            self._close_fh()
            raise ProjectError(f"{path}: cannot read the project file ({exc})") from exc
        try:
            self._validate()
        except BaseException:
            self.close()
            raise

    def _close_fh(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass

    def close(self) -> None:
        self.zf.close()
        self._close_fh()

    def _err(self, entry: str, msg: str) -> ProjectError:
        return ProjectError(f"{self.path}: entry '{_short(entry, 200)}': {msg}")

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

    def info(self, name: Any, max_bytes: int | None = None) -> zipfile.ZipInfo:
        """The entry ``name``, checked to exist and to declare no more than its cap (nothing is read)."""
        if not isinstance(name, str) or not name:
            raise ProjectError(f"{self.path}: manifest names an invalid entry {_short(repr(name), 80)}")
        info = self.infos.get(name)
        if info is None:
            raise self._err(name, "missing from the project (the file is incomplete or damaged)")
        cap = min(self._cap(name), max_bytes or self._cap(name))
        if info.file_size > cap:
            raise self._err(name, f"declares {info.file_size} bytes, more than the {cap} allowed (zip bomb?)")
        return info

    def stream(self, name: str, max_bytes: int | None = None) -> Iterator[bytes]:
        """The bytes of entry ``name`` in chunks of at most 1 MiB, counted against the declared size
        while they are decompressed (a lying header fails after one byte too many) and CRC-checked."""
        info = self.info(name, max_bytes)
        declared = info.file_size
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
                    n += len(chunk)
                    yield chunk
        except ProjectError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError, NotImplementedError) as exc:
            raise self._err(name, f"damaged ({_short(exc, 200)})") from exc
        except Exception as exc:  # noqa: BLE001 - zlib.error and friends
            raise self._err(name, f"damaged ({type(exc).__name__}: {_short(exc, 200)})") from exc
        if n != declared:
            raise self._err(name, f"holds {n} bytes, not the {declared} it declares (damaged)")

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        """Bytes of entry ``name``; fails if the real size differs from the declared one or passes a cap."""
        info = self.info(name, max_bytes)
        declared = info.file_size
        if info.compress_type == zipfile.ZIP_STORED and declared > _CHUNK:
            return self._read_stored(info)
        buf = bytearray(declared)
        n = 0
        for chunk in self.stream(name, max_bytes):
            buf[n : n + len(chunk)] = chunk
            n += len(chunk)
        return bytes(buf)

    def _read_stored(self, info: zipfile.ZipInfo) -> bytes:
        """An uncompressed entry read straight from the file into one bytes object (large caches:
        no second copy), with the local header, the size and the CRC-32 checked."""
        import contextlib
        import zlib

        name = info.filename
        try:
            own = open(self.path, "rb") if self._fh is None else self._fh.reopen() if isinstance(self._fh, _PreadFile) else None
            cm: Any = own if own is not None else contextlib.nullcontext(self._fh)
            with cm as fh:
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

    def ref(self, name: str, source: _Source) -> _EntryRef:
        info = self.info(name)
        return _EntryRef(source, name, info.CRC, info.file_size)

    # ----- typed reads -----
    def json(self, name: str) -> Any:
        data = self.read(name, MAX_MANIFEST_BYTES)
        try:
            return json.loads(data.decode("utf-8"))
        except RecursionError as exc:  # the parser recursed as deep as Python allows
            raise self._err(name, f"JSON nested too deeply (more than {MAX_NESTING} levels are refused); the file is damaged or hostile") from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._err(name, f"not valid JSON ({_short(exc, 200)})") from exc

    def png_size(self, name: str) -> tuple[int, int]:
        """(width, height) from the PNG header of entry ``name``, reading only its first bytes."""
        info = self.info(name)
        try:
            with self.zf.open(info, "r") as src:
                head = src.read(24)
        except Exception as exc:  # noqa: BLE001 - zipfile and zlib raise several types for bad data
            raise self._err(name, f"damaged ({_short(exc, 200)})") from exc
        if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
            raise self._err(name, "not a PNG image")
        w, h = struct.unpack(">II", head[16:24])
        if w * h > MAX_IMAGE_PIXELS or w <= 0 or h <= 0:
            raise self._err(name, f"image size {w}x{h} is not allowed")
        return w, h

    def image(self, name: str, mode: str = "RGB", size: tuple[int, int] | None = None) -> np.ndarray:
        """Decode PNG entry ``name`` (``mode`` "RGB" or "mask"); ``size``: the (w, h) it must have,
        checked from its header before anything is decoded."""
        from PIL import Image, UnidentifiedImageError

        from core.io import pillow_warnings_to_log

        data = self.read(name)
        # Pillow's warnings (a damaged ancillary chunk, a palette's transparency as bytes) go to the
        # log; its decompression-bomb warning is replaced by the MAX_IMAGE_PIXELS check below
        with pillow_warnings_to_log(f"{self.path}: entry {name!r}"):
            try:
                im = Image.open(io.BytesIO(data), formats=["PNG"])
            except UnidentifiedImageError as exc:
                raise self._err(name, "not a readable PNG image (damaged, or not a PNG at all)") from exc
            except Exception as exc:  # noqa: BLE001 - Pillow raises several types for bad data
                raise self._err(name, f"not a readable PNG image ({_short(exc, 200)})") from exc
        conv = im
        try:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS or w <= 0 or h <= 0:
                raise self._err(name, f"image size {w}x{h} is not allowed")
            if size is not None and (w, h) != tuple(size):
                raise self._err(name, f"image is {w}x{h}, the photo is {size[0]}x{size[1]}")
            with pillow_warnings_to_log(f"{self.path}: entry {name!r}"):
                im.load()
                del data
                want = "L" if mode == "mask" else mode
                if im.mode == "P" and "transparency" in im.info:  # the palette's colours, not its alpha
                    conv = im.convert("RGBA")
                    im.close()
                    im = conv
                if im.mode != want:
                    conv = im.convert(want)
                    im.close()
            return _pixels(conv, mask=mode == "mask")
        except ProjectError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._err(name, f"damaged PNG image ({_short(exc, 200)})") from exc
        finally:
            im.close()
            conv.close()

    def array(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        data = self.read(name)
        try:
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - ValueError, EOFError, OSError...
            if "allow_pickle" in str(exc):  # numpy's text suggests loading it unsafely: never
                raise self._err(
                    name, "holds pickled Python objects, not a numeric array (refused: unpickling can run code); the file is damaged or hostile"
                ) from exc
            raise self._err(name, f"not a readable .npy array ({_short(exc, 200)})") from exc
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiub":
            raise self._err(name, "not a numeric array")
        if shape is not None and a.shape != tuple(shape):
            raise self._err(name, f"has shape {a.shape}, expected {tuple(shape)}")
        return a


def _float32(a: np.ndarray) -> np.ndarray:
    """``a`` as float32; values beyond float32's range become infinite without a warning (a depth
    of them is refused with one line where it is used, see :func:`core.geometry.lift.check_depth`)."""
    with np.errstate(over="ignore"):
        return a.astype(np.float32)


def _pixels(im: Any, mask: bool) -> np.ndarray:
    """A writable array of a loaded Pillow image (a bool ``> 127`` mask of an "L" one), copied in
    strips of about 16 MiB: the peak is Pillow's pixels plus the array (``np.asarray(im)`` would
    add two more full copies)."""
    w, h = im.size
    bands = len(im.getbands())
    out = np.empty((h, w) if mask or bands == 1 else (h, w, bands), bool if mask else np.uint8)
    rows = max(1, (16 << 20) // max(1, w * bands))
    for y in range(0, h, rows):
        strip = im.crop((0, y, w, min(h, y + rows)))
        a = np.asarray(strip)
        out[y : y + a.shape[0]] = a > 127 if mask else a
        strip.close()
    return out


def _too_deep(value: Any, limit: int) -> bool:
    """Whether lists/objects in ``value`` nest more than ``limit`` deep (counting ``value`` itself)."""
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nxt: list = []
        for v in level:
            items = v.values() if isinstance(v, dict) else v
            nxt.extend(x for x in items if isinstance(x, (dict, list)))
        level = nxt
    return False


# ----- migrations -----
#: schema_version N -> function(manifest, zip reader) returning the manifest of version N + 1
MIGRATIONS: dict[int, Callable[[dict, Any], dict]] = {}


def migration(from_version: int):
    """Register a function that upgrades a manifest from ``from_version`` to ``from_version + 1``."""

    def deco(fn):
        MIGRATIONS[int(from_version)] = fn
        return fn

    return deco


def _obj(v: Any, where: str, path: Path | str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ProjectError(f"{path}: entry 'manifest.json': {where} must be an object, not {_json_type(v)}; the file is damaged")
    return v


def _list(v: Any, where: str, path: Path | str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ProjectError(f"{path}: entry 'manifest.json': {where} must be a list, not {_json_type(v)}; the file is damaged")
    return v


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}.get(
        type(v), type(v).__name__
    )


def _check_counts(objects: list, variants: dict, path: Path | str, where: str) -> None:
    """ProjectError (one line) for more objects, variants or variant transforms than a project may
    hold (:data:`MAX_OBJECTS`, :data:`MAX_VARIANTS`, :data:`MAX_VARIANT_TRANSFORMS`), counted
    before any of them is read."""
    at = f"{path}: entry 'manifest.json': {where}"
    if len(objects) > MAX_OBJECTS:
        raise ProjectError(f"{at}objects: {len(objects)} objects, more than the {MAX_OBJECTS} a project may hold")
    if len(variants) > MAX_VARIANTS:
        raise ProjectError(f"{at}variants: {len(variants)} variants, more than the {MAX_VARIANTS} a project may hold")
    transforms = sum(len(v) if isinstance(v, (dict, list)) else 1 for v in variants.values())
    if transforms > MAX_VARIANT_TRANSFORMS:
        raise ProjectError(f"{at}variants: {transforms} object transforms, more than the {MAX_VARIANT_TRANSFORMS} a project may hold")


@migration(0)
def _migrate_0_to_1(manifest: dict, reader) -> dict:
    """Schema 0, the pre-release layout: a flat manifest (scene fields at the top level, no
    ``scene`` section), transforms as ``{"t": [x, y, z], "q": [w, x, y, z], "s": scale}``, no
    object ids or visibility, renders as ``{"image", "request", "created"}``, no caches."""
    path = getattr(reader, "path", "project")

    def tr(d: Any, where: str) -> dict:
        d = _obj(d, where, path)
        return {"translation": d.get("t", [0.0, 0.0, 0.0]), "rotation": d.get("q", [1.0, 0.0, 0.0, 0.0]), "scale": d.get("s", 1.0)}

    cam = _obj(manifest.get("camera"), "camera", path)
    objects = []
    _check_counts(_list(manifest.get("objects"), "objects", path), _obj(manifest.get("variants"), "variants", path), path, "")
    for i, o in enumerate(_list(manifest.get("objects"), "objects", path)):
        o = _obj(o, f"objects[{i}]", path)
        objects.append(
            {
                "id": f"obj{i}",
                "name": o.get("name", f"object {i + 1}"),
                "mask": o.get("mask"),
                "transform": tr(o.get("transform"), f"objects[{i}].transform"),
                "visible": True,
            }
        )
    size = manifest.get("size") or [cam.get("width"), cam.get("height")]
    variants = _obj(manifest.get("variants"), "variants", path)
    if len(variants) > MAX_VARIANTS:
        raise ProjectError(f"{path}: entry 'manifest.json': {len(variants)} variants, more than the {MAX_VARIANTS} a project may hold")
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
        "variants": {
            v: {o: tr(t, f"variants.{_short(v, 40)}.{_short(o, 40)}") for o, t in _obj(ts, f"variants.{_short(v, 40)}", path).items()}
            for v, ts in variants.items()
        },
    }
    renders = []
    for i, r in enumerate(_list(manifest.get("renders"), "renders", path)):
        r = _obj(r, f"renders[{i}]", path)
        renders.append({"id": f"r{i}", "image": r.get("image"), "request": r.get("request", {}), "info": {}, "created": r.get("created", "")})
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
    if not isinstance(manifest, dict):
        raise ProjectError(f"{path}: entry 'manifest.json': is not a JSON object; the file is damaged")
    v = manifest.get("schema_version")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ProjectError(f"{path}: entry 'manifest.json': schema_version must be a non-negative integer, got {_short(repr(v), 60)}")
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
            raise ProjectError(f"{path}: cannot upgrade from schema {v} ({type(exc).__name__}: {_short(exc, 200)}); the file is damaged") from exc
        if not isinstance(manifest, dict):
            raise ProjectError(f"{path}: cannot upgrade from schema {v} (the migration gave no manifest)")
        manifest["schema_version"] = v + 1
        v += 1
    return manifest


def _transform(d, where: str, path: Path) -> Transform3D:
    if not isinstance(d, dict):
        raise ProjectError(f"{path}: entry 'manifest.json': {where}: not a transform (an object with translation, rotation, scale)")
    try:
        return Transform3D.from_dict(d)
    except (ValueError, TypeError, OverflowError, KeyError, AttributeError) as exc:
        raise ProjectError(f"{path}: entry 'manifest.json': {where}: {_short(exc, 200)}") from exc


def load_project(path, caches: bool = True) -> Project:
    """Read a ``.handles`` file (see the module docstring); ProjectError naming the entry on any problem.

    The scene is decoded at once; render images, the thumbnail and caches when first used.
    ``caches=True``: ``Project.caches`` is a :class:`ProjectCaches` (each value read from the
    file on access; a declared size beyond :func:`cache_cap` fails here, before anything is read).
    ``caches=False`` leaves them out (``Project.caches`` is empty): for inspecting a project, not
    for re-saving it (the caches would be lost). Temporary files of killed saves of ``path`` are
    removed (:func:`remove_dead_temps`).
    """
    path = Path(path)
    remove_dead_temps(path)
    try:
        r = _Reader(path)
        try:
            project = _load(r, path, caches)
        except RecursionError as exc:
            raise ProjectError(f"{path}: entry 'manifest.json': nested too deeply; the file is damaged or hostile") from exc
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

    def text(d: dict, key: str, default: str, where: str) -> str:
        v = d.get(key, default)
        if v is None:
            return default
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise r._err(M, f"{where}{key}: must be a string, not {_json_type(v)}")
        return str(v)

    source: list[_Source] = []  # made on first need (it keeps the file open)

    def src() -> _Source:
        if not source:
            source.append(_Source.of(r))
        return source[0]

    sc = need(manifest, "scene", dict, "")
    try:
        camera = Camera.from_dict(need(sc, "camera", dict, "scene."))
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise r._err(M, f"scene.camera: {_short(exc, 200)}") from exc
    w, h = camera.width, camera.height
    if w * h > MAX_IMAGE_PIXELS:
        raise r._err(M, f"scene.camera: size {w}x{h} is not allowed")
    if max(w, h) > MAX_PROJECT_LONG_SIDE:  # the editor, preview and render would need gigabytes for it
        raise r._err(
            M,
            f"the working resolution is {w}x{h}, over the {MAX_PROJECT_LONG_SIDE}-pixel long side this version opens; import the scene again at a smaller --long-side",
        )
    _check_counts(need(sc, "objects", list, "scene."), _obj(sc.get("variants"), "scene.variants", path), path, "scene.")
    decoded: dict[tuple[str, str], np.ndarray] = {}  # each entry decoded once

    def image(entry: str, mode: str, size: tuple[int, int] | None) -> np.ndarray:
        key = (entry, mode)
        if key in decoded:
            a = decoded[key]
            if size is not None and (a.shape[1], a.shape[0]) != size:
                raise r._err(entry, f"image is {a.shape[1]}x{a.shape[0]}, the photo is {size[0]}x{size[1]}")
            return a.copy()
        a = decoded[key] = r.image(entry, mode, size)
        return a

    photo_entry = need(sc, "photo", str, "scene.")
    photo = image(photo_entry, "RGB", (w, h))
    depth_entry = need(sc, "depth", str, "scene.")
    depth = _float32(r.array(depth_entry, (h, w)))
    original = None
    if sc.get("original"):
        original = image(need(sc, "original", str, "scene."), "RGB", None)
    alpha = None
    if sc.get("alpha"):
        alpha = _float32(r.array(need(sc, "alpha", str, "scene."), (h, w)))
    bg = None
    if sc.get("background_depth"):
        bg = _float32(r.array(need(sc, "background_depth", str, "scene."), (h, w)))

    objects = []
    for i, o in enumerate(need(sc, "objects", list, "scene.")):
        where = f"scene.objects[{i}]."
        if not isinstance(o, dict):
            raise r._err(M, f"scene.objects[{i}]: not an object")
        mask_entry = need(o, "mask", str, where)
        mask = image(mask_entry, "mask", (w, h))
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
    raw_variants = _obj(sc.get("variants"), "scene.variants", path)
    if len(raw_variants) > MAX_VARIANTS:
        raise r._err(M, f"scene.variants: {len(raw_variants)} variants, more than the {MAX_VARIANTS} a project may hold")
    variants = {}
    for vname, ts in raw_variants.items():
        vw = f"scene.variants.{_short(vname, 60)}"
        variants[str(vname)] = {str(on): _transform(t, f"{vw}.{_short(on, 60)}", path) for on, t in _obj(ts, vw, path).items()}
    try:
        scene = Scene(
            photo=photo,
            depth=depth,
            camera=camera,
            prompt=text(sc, "prompt", "", "scene."),
            objects=objects,
            variants=variants,
            name=text(sc, "name", path.stem, "scene."),
            depth_unit=text(sc, "depth_unit", "m", "scene."),
            depth_source=text(sc, "depth_source", "file", "scene."),
            original_photo=original,
            alpha=alpha,
            background_depth=bg,
        )
    except (ValueError, TypeError) as exc:
        raise r._err(M, f"inconsistent scene ({_short(exc, 200)})") from exc

    # render images: checked to be there and to be PNGs of an allowed size, decoded when first used
    renders = []
    loaders: dict[str, _LazyImage] = {}
    for i, rd in enumerate(_list(manifest.get("renders"), "renders", path)):
        if not isinstance(rd, dict):
            raise r._err(M, f"renders[{i}]: not an object")
        entry = need(rd, "image", str, f"renders[{i}].")
        loader = loaders.get(entry)
        if loader is None:
            r.png_size(entry)
            loader = loaders[entry] = _LazyImage(r.ref(entry, src()), "RGB")
        req = rd.get("request") or {}
        info = rd.get("info") or {}
        if not isinstance(req, dict) or not isinstance(info, dict):
            raise r._err(M, f"renders[{i}]: request and info must be objects")
        if _too_deep(req, MAX_NESTING) or _too_deep(info, MAX_NESTING):
            raise r._err(M, f"renders[{i}]: request or info nested more than {MAX_NESTING} levels deep; the file is damaged or hostile")
        rid = rd.get("id")
        renders.append(
            RenderRecord(
                image=loader,
                request=req,
                info=info,
                created=text(rd, "created", "", f"renders[{i}]."),
                id=str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid) else new_id(),
            )
        )

    thumb: _LazyImage | None = None
    if manifest.get("thumbnail"):
        entry = need(manifest, "thumbnail", str, "")
        tw, th = r.png_size(entry)
        if max(tw, th) <= 4 * THUMBNAIL_SIDE:
            thumb = loaders.get(entry) or _LazyImage(r.ref(entry, src()), "RGB")
        else:  # not a thumbnail: ignored (the next save makes a new one)
            log.warning("%s: ignoring the thumbnail entry '%s' (%dx%d, not a thumbnail)", path, _short(entry, 200), tw, th)

    caches = ProjectCaches() if want_caches else {}
    if want_caches:
        cap = cache_cap(w, h)
        for i, c in enumerate(_list(manifest.get("caches"), "caches", path)):
            if not isinstance(c, dict):
                raise r._err(M, f"caches[{i}]: not an object")
            name = need(c, "name", str, f"caches[{i}].")
            entry = need(c, "entry", str, f"caches[{i}].")
            info = r.info(entry)
            if info.file_size > cap:
                raise r._err(
                    entry,
                    f"cache '{_short(name, 80)}' declares {info.file_size} bytes, more than the {cap} a {w}x{h} photo's caches may need "
                    "(zip bomb?); the project was not opened",
                )
            size = c.get("size")
            if isinstance(size, int) and not isinstance(size, bool) and size != info.file_size:
                raise r._err(entry, f"holds {info.file_size} bytes, the manifest says {size} (damaged)")
            dict.__setitem__(caches, name, _PendingCache(r.ref(entry, src()), cap))

    settings = _obj(manifest.get("settings"), "settings", path)
    if _too_deep(settings, MAX_NESTING):
        raise r._err(M, f"settings: nested more than {MAX_NESTING} levels deep; the file is damaged or hostile")
    created, modified = manifest.get("created"), manifest.get("modified")
    return Project(
        scene=scene,
        renders=renders,
        settings=settings,
        caches=caches,
        thumbnail=thumb,
        created=created if isinstance(created, str) else None,
        modified=modified if isinstance(modified, str) else None,
        app_version=text(manifest, "app_version", "", ""),
        schema_version=SCHEMA_VERSION,
    )


def project_info(path) -> dict:
    """Manifest-level facts about a project without decoding its images (for listings)."""
    path = Path(path)
    r = _Reader(path)
    try:
        m = migrate(r.json("manifest.json"), r, path)
        caches = {}
        for c in m.get("caches") or [] if isinstance(m.get("caches"), list) else []:
            if isinstance(c, dict) and isinstance(c.get("name"), str):
                entry = c.get("entry")
                size = r.infos[entry].file_size if isinstance(entry, str) and entry in r.infos else c.get("size")
                caches[c["name"]] = size if isinstance(size, int) and not isinstance(size, bool) else None
        renders = m.get("renders")
        return {
            "schema_version": m.get("schema_version"),
            "app_version": m.get("app_version"),
            "created": m.get("created"),
            "modified": m.get("modified"),
            "caches": caches,
            "renders": len(renders) if isinstance(renders, list) else 0,
            "file_size": path.stat().st_size,
        }
    finally:
        r.close()
