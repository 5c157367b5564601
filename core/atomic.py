"""Atomic file output: every file the program writes (images, depth, point clouds, settings) goes
through here, so an interrupted or failed write never leaves a target half-written.

A write goes to a temporary file in the target's folder, named after the target and the writing
process (``.<name>.w<pid>-<start ms>-<host>.<random>.tmp``, see :func:`temp_prefix`), is flushed to
disk (fsync), and then replaces the target in one step (``os.replace``; the folder is fsynced too
where the system allows). If anything fails on the way, a full disk, a read-only folder, a
writer's error or Ctrl+C, the temporary is removed and the target keeps its previous contents (or
stays absent). A writer killed outright (SIGKILL, power loss) cannot remove its temporary; the
name says which process wrote it, so the next write of the same target removes it at once when
that process is gone (:func:`remove_dead_temps`), however young the file is.

Writers work on a *path* (Pillow, OpenEXR and Open3D open files by name): ``write(tmp_path)`` must
write the whole file at ``tmp_path``. The temporary's suffix is ``.tmp``, so a writer that picks
its format from the file name must be told the format (Pillow: ``format=``, see
:func:`image_format`), or ask for ``keep_suffix=True`` (the temporary then ends with the target's
suffix, e.g. ``.tmp.ply`` for Open3D).

Several outputs of one command (:func:`write_atomically` with a list of :class:`Output`): all the
temporaries are written first and only then do they replace their targets, so a failure on the
second output leaves the first target untouched. Only a failure of ``os.replace`` itself after
some targets were replaced (rare: the temporaries are already written in the same folders) can
leave a partial set; the error then says which files were written.

Errors are :class:`core.errors.InputError` with one line naming the target (never the temporary),
e.g. ``out.png: cannot write the preview image (disk full); the previous file is unchanged``.
The new file gets the mode of the file it replaces, or the usual ``0o666 & ~umask`` for a new one.
A link as target is kept: the file it points to is replaced.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.errors import HandlesError, InputError

log = logging.getLogger(__name__)

#: Pillow format names by file extension (the format of an image written through a temporary)
IMAGE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}


def image_format(path, what: str = "image", formats: dict[str, str] | None = None) -> str:
    """The Pillow format name for ``path``'s extension (among ``formats``, default
    :data:`IMAGE_FORMATS`); InputError naming ``what`` for another one."""
    p = Path(path)
    table = IMAGE_FORMATS if formats is None else formats
    fmt = table.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"{p}: unsupported {what} type {p.suffix or '(none)'} (use {', '.join(table)})")
    return fmt


@dataclass
class Output:
    """One file to write: ``write(tmp_path)`` writes the whole file at ``tmp_path``.

    ``what`` names the file in error messages ("preview image", "depth file").
    """

    path: str | os.PathLike
    write: Callable[[Path], object]
    what: str = "file"
    keep_suffix: bool = False


def image_output(path, image, *, what: str = "image", formats: dict[str, str] | None = None, **params) -> Output:
    """An :class:`Output` writing ``image`` (a NumPy array or a PIL image) in the format of
    ``path``'s extension (see :func:`image_format`; checked now), with Pillow ``params``
    (``quality=``...)."""
    fmt = image_format(path, what, formats)

    def write(tmp: Path) -> None:
        from PIL import Image

        im = image if isinstance(image, Image.Image) else Image.fromarray(image)
        im.save(tmp, format=fmt, **params)

    return Output(path, write, what)


def save_image(path, image, *, what: str = "image", **params) -> Path:
    """Write ``image`` atomically in the format of ``path``'s extension; returns the path."""
    return write_atomically([image_output(path, image, what=what, **params)])[0]


def target_path(path) -> Path:
    """The file a write of ``path`` replaces: ``path`` itself, or the file a link points to."""
    p = Path(path)
    if p.is_symlink():
        p = p.resolve()
    return p


def check_output(path, what: str = "file") -> Path:
    """Check, without writing anything, that ``path`` can be a written file: its folder exists and
    it is not a folder itself. Returns the target path (see :func:`target_path`)."""
    p = target_path(path)
    folder = _folder(p)
    if p.is_dir():
        raise InputError(f"{p}: cannot write the {what} (it is a folder)")
    if not folder.exists():
        raise InputError(f"{p}: cannot write the {what} (folder {folder} does not exist)")
    if not folder.is_dir():
        raise InputError(f"{p}: cannot write the {what} ({folder} is not a folder)")
    return p


def write_atomically(outputs: Sequence[Output]) -> list[Path]:
    """Write every output through a temporary, then replace all the targets (see the module
    docstring). Returns the target paths. Nothing is replaced unless every output was written."""
    pending: list[_Pending] = []
    current: _Pending | None = None
    try:
        for out in outputs:
            pending.append(_Pending.create(out.path, out.what, out.keep_suffix))
        for job, out in zip(pending, outputs):
            current = job
            job.write(out.write)
    except BaseException as exc:
        for job in pending:
            job.discard()
        err = _as_input_error(exc, current)
        if err is exc:
            raise
        raise err from exc
    done: list[Path] = []
    for i, job in enumerate(pending):
        try:
            job.commit()
        except BaseException as exc:
            for rest in pending[i:]:
                rest.discard()
            err = _as_input_error(exc, job)
            if done and isinstance(err, InputError):
                err = InputError(f"{err}; already written: {', '.join(str(d) for d in done)}")
            if err is exc:
                raise
            raise err from exc
        done.append(job.target)
    for folder in {_folder(job.target) for job in pending}:
        fsync_dir(folder)
    return done


def atomic_write(path, write: Callable[[Path], object], *, what: str = "file", keep_suffix: bool = False) -> Path:
    """Write one file atomically: ``write(tmp_path)`` writes it, then it replaces ``path``."""
    return write_atomically([Output(path, write, what, keep_suffix)])[0]


def atomic_write_bytes(path, data: bytes, *, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write, what=what)


def atomic_write_text(path, text: str, *, what: str = "file", encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding), what=what)


@contextmanager
def atomic_output(path, *, what: str = "file", keep_suffix: bool = False) -> Iterator[Path]:
    """``with atomic_output(p) as tmp:`` write ``tmp``; on a normal exit it replaces ``p``, on an
    exception it is removed and ``p`` is left as it was."""
    job = _Pending.create(path, what, keep_suffix)
    try:
        yield job.tmp
        job.finish_write()
        job.commit()
    except BaseException as exc:
        job.discard()
        err = _as_input_error(exc, job)
        if err is exc:
            raise
        raise err from exc
    fsync_dir(_folder(job.target))


# --------------------------------------------------------------------------- internals
class _Pending:
    """A target and its temporary (created empty, with the target's mode)."""

    def __init__(self, target: Path, tmp: Path, what: str, existed: bool, mode: int) -> None:
        self.target, self.tmp, self.what, self.existed, self.mode = target, tmp, what, existed, mode

    @classmethod
    def create(cls, path, what: str, keep_suffix: bool) -> _Pending:
        target = check_output(path, what)
        folder = _folder(target)
        existed = target.exists()
        suffix = ".tmp" + (target.suffix if keep_suffix else "")
        remove_dead_temps(target)  # what killed writers of this target left behind
        try:
            fd, name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix, dir=folder)
        except OSError as exc:
            raise InputError(_message(target, what, exc, existed)) from exc
        mode = file_mode(target)
        job = cls(target, Path(name), what, existed, mode)
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            else:  # pragma: no cover - Windows
                os.chmod(name, mode)
        except OSError:  # keep the temporary's private mode rather than fail the write
            pass
        finally:
            os.close(fd)
        return job

    def write(self, writer: Callable[[Path], object]) -> None:
        writer(self.tmp)
        self.finish_write()

    def finish_write(self) -> None:
        """Flush the written temporary to disk (and give it back its mode, should a writer have
        recreated it)."""
        if not self.tmp.is_file():
            raise InputError(f"{self.target}: cannot write the {self.what} (the writer produced no file)")
        try:
            if stat.S_IMODE(self.tmp.stat().st_mode) != self.mode:
                os.chmod(self.tmp, self.mode)
        except OSError:  # the mode is a courtesy; the contents are what matter
            pass
        fd = os.open(self.tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def commit(self) -> None:
        os.replace(self.tmp, self.target)
        log.info("wrote %s", self.target)

    def discard(self) -> None:
        try:
            self.tmp.unlink()
        except OSError:
            pass


def _folder(p: Path) -> Path:
    return p.parent if str(p.parent) else Path(".")


def _as_input_error(exc: BaseException, job: _Pending | None) -> BaseException:
    """``exc`` as a one-line InputError naming the target, for an OSError; other exceptions
    (HandlesError, KeyboardInterrupt, a writer's bug) are passed on as they are."""
    if job is None or isinstance(exc, HandlesError) or not isinstance(exc, OSError):
        return exc  # (creating a temporary raises InputError itself)
    log.warning("%s: write failed, %s (%s)", job.target, "the previous file is unchanged" if job.existed else "nothing written", exc)
    return InputError(_message(job.target, job.what, exc, job.existed, job.tmp))


def _message(target: Path, what: str, exc: OSError, existed: bool, tmp: Path | None = None) -> str:
    tail = "; the previous file is unchanged" if existed else ""
    return f"{target}: cannot write the {what} ({os_error_reason(target, exc, tmp)}){tail}"


#: how NumPy reports a write the system cut short (a full disk takes what fits, then refuses)
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def os_error_reason(target, exc: OSError, tmp: Path | None = None) -> str:
    """Why writing ``target`` failed, in a few words for a one-line message ("disk full", "no
    permission to write in folder F"...). The temporary ``tmp`` is never named: where the system's
    text names it, the target is named instead."""
    target = Path(target)
    folder = _folder(target)
    code = exc.errno
    if code == errno.ENOSPC:
        return "disk full"
    if code == errno.EFBIG:
        return "file too large for the file system or the process's file size limit"
    if code is None and _SHORT_WRITE.search(str(exc)):  # NumPy's words for a write cut short
        return "disk full (only part of it could be written)"
    if code == getattr(errno, "EDQUOT", -1):
        return "disk quota exceeded"
    if code == errno.EROFS:
        return "read-only file system"
    if code in (errno.EACCES, errno.EPERM):
        return f"no permission to write in folder {folder}"
    if code == errno.ENOENT and not folder.is_dir():
        return f"folder {folder} does not exist"
    reason = " ".join((exc.strerror or str(exc)).split())
    if tmp is not None:  # name the target, never the temporary
        reason = reason.replace(str(tmp), str(target)).replace(tmp.name, target.name)
    return reason


# --------------------------------------------------------------------------- writer-tagged temporaries
#: a temporary file without a writer in its name (older versions) older than this (seconds) is
#: removed by the next write of its target
STALE_TEMP_SECONDS = 15 * 60
#: how far (ms) a live process's start time may differ from the one in a temporary's name and still
#: be the same process (start times derive from the boot time, which the kernel reports to 1 s)
_START_SLACK_MS = 2500
#: what follows ``.<target name>`` in a temporary's name: the writer, mkstemp's random part, .tmp
#: and (``keep_suffix``) the target's suffix
_TEMP_WRITER = re.compile(r"\.w(\d{1,10})-(\d{1,16})-([0-9a-f]{8})\.[A-Za-z0-9_]+\.tmp(?:\.[A-Za-z0-9]{1,16})?$")
_writer_tag_cache: list[str] = []


def _start_ms(pid: int) -> int | None:
    """The start time of process ``pid`` in ms since the epoch, or None when there is no such process."""
    import psutil

    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except psutil.NoSuchProcess:
        return None


def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _writer_tag() -> str:
    """``w<pid>-<start ms>-<host>``: which process writes a temporary file (cached per process)."""
    pid = os.getpid()
    if not _writer_tag_cache or not _writer_tag_cache[0].startswith(f"w{pid}-"):  # after a fork: a new pid
        _writer_tag_cache[:] = [f"w{pid}-{_start_ms(pid) or 0}-{_host_tag()}"]
    return _writer_tag_cache[0]


def temp_prefix(path) -> str:
    """The prefix of this process's temporary files for ``path`` (``.<name>.w<pid>-<start>-<host>.``)."""
    return f".{Path(path).name}.{_writer_tag()}."


def _writer_dead(pid: int, start_ms: int) -> bool:
    """Whether the process that named a temporary file (on this host) is gone."""
    import psutil

    if pid == os.getpid():
        return False
    try:
        now = _start_ms(pid)
    except (psutil.Error, OSError, ValueError):  # no access: assume it is alive
        return False
    return now is None or abs(now - start_ms) > _START_SLACK_MS


def remove_dead_temps(path, also: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Delete the temporary files that killed writers of ``path`` (and of the files ``also``, in
    the same folder) left behind.

    A temporary names its writer (:func:`temp_prefix`): it is removed when that process is gone,
    however young the file is; a live writer's is kept. One of another host is kept; one without
    a writer in its name (older versions) is removed once it is :data:`STALE_TEMP_SECONDS` old.
    Never fails (a read-only folder keeps its files). Returns the removed paths.
    """
    path = Path(path)
    folder = _folder(path)
    host = None
    cutoff = time.time() - STALE_TEMP_SECONDS
    removed = []
    for name in (path.name, *(Path(a).name for a in also)):
        prefix = f".{name}."
        try:
            candidates = [*folder.glob(f"{glob.escape(prefix)}*.tmp"), *folder.glob(f"{glob.escape(prefix)}*.tmp.*")]
        except OSError:
            continue
        for p in candidates:
            rest = p.name[len(prefix) - 1 :]  # from the dot before the writer tag
            m = _TEMP_WRITER.match(rest)
            try:
                if m:
                    host = host or _host_tag()
                    if m.group(3) != host or not _writer_dead(int(m.group(1)), int(m.group(2))):
                        continue
                elif _TEMP_WRITER.search(rest) or not rest.endswith(".tmp") or p.stat().st_mtime >= cutoff:
                    continue  # another file's temporary (".<name>.<more>.w..."), or a recent old-style one
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    removed.append(p)
            except OSError:
                pass
    if removed:
        log.info("%s: removed %d temporary file(s) of killed writes", path, len(removed))
    return removed


def file_mode(target: Path) -> int:
    """The permission bits a file written over ``target`` gets: the target's own, else what a new
    file gets under the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode) & 0o777
    except OSError:
        return 0o666 & ~umask()


def umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def fsync_dir(folder: Path) -> None:
    """Make the replacement durable (best effort: some systems cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
