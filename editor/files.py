"""Files: what a path is, opening projects and scene folders, depth for new photos, exports, and
crash recovery (autosave file plus a per-session lock that a clean exit removes).

Everything here is called from the GUI thread and is fast, except the depth estimation task
(:func:`depth_task`), which runs in the render worker because it loads a model.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.document import PROJECT_SUFFIX, Document
from core.errors import HandlesError, InputError
from core.settings import atomic_write_text, recovery_dir
from core.worker import TaskSpec

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
DEPTH_SUFFIXES = (".exr", ".npy", ".png", ".tif", ".tiff")
PHOTO_FILTER = "Photos (*.png *.jpg *.jpeg *.webp *.tif *.tiff *.bmp)"
PROJECT_FILTER = "Handles Studio projects (*.handles)"
DEPTH_FILTER = "Depth maps (*.exr *.npy *.png *.tif *.tiff)"
OPEN_FILTER = f"Projects and photos (*.handles *.png *.jpg *.jpeg *.webp *.tif *.tiff *.bmp);;{PROJECT_FILTER};;{PHOTO_FILTER};;All files (*)"


def classify(path: str | os.PathLike) -> str | None:
    """``"project"``, ``"photo"``, ``"scene"`` (a Diffusion Handles scene folder) or None."""
    p = Path(path)
    if p.is_dir():
        from core.dhformat import is_dh_scene

        return "scene" if is_dh_scene(p) else None
    suffix = p.suffix.lower()
    if suffix == PROJECT_SUFFIX:
        return "project"
    if suffix in PHOTO_SUFFIXES:
        return "photo"
    return None


def open_document(path: str | os.PathLike, long_side: int = 512) -> Document:
    """Open a ``.handles`` project or a Diffusion Handles scene folder as a document.

    A scene folder becomes an unsaved document (its path is None: Save asks where).
    Raises a HandlesError (one line) for a file that cannot be opened.
    """
    p = Path(path)
    kind = classify(p)
    if kind == "project":
        return Document.load(p)
    if kind == "scene":
        from core.dhformat import load_dh_scene

        scene = load_dh_scene(p, long_side=long_side)
        return Document(scene=scene)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    raise InputError(f"{p}: not a project (.handles), a photo or a Diffusion Handles scene folder")


# ----- depth for new photos -----
def depth_model_on_disk(preferred: str = "", extra_dirs=()) -> str | None:
    """The catalog name of a depth model that is on disk (``preferred`` first), or None."""
    try:
        from core.ml import store
    except ImportError:  # pragma: no cover - the ML layer is part of the program
        return None
    names = [preferred] if preferred else []
    try:
        entries = [e for e in store.catalog() if e.role == "depth"]
    except HandlesError:
        entries = []
    entries.sort(key=lambda e: not e.default)
    names += [e.name for e in entries if e.name != preferred]
    for name in names:
        try:
            store.find_model(name, role="depth", extra_dirs=list(extra_dirs))
            return name
        except HandlesError:
            continue
    return None


def depth_task(photo: np.ndarray, model: str, device: str = "auto", extra_dirs=()) -> TaskSpec:
    """An engine task estimating z-depth (H, W) float32 for ``photo`` (runs where the engine runs)."""
    return TaskSpec("depth", {"model": model, "device": device, "extra_dirs": [str(d) for d in extra_dirs]}, {"photo": np.ascontiguousarray(photo)})


# ----- exports -----
def edited_depth(scene) -> np.ndarray:
    """Z-depth (H, W) of the edited scene (the warp plan's), depth units."""
    from core.geometry.warp import plan

    return np.asarray(plan(scene).edited_depth, dtype=np.float32)


#: image export formats by extension
EXPORT_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def export_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> Path:
    """Write ``image`` as PNG or JPEG (by extension), atomically: a failed write leaves a
    previous file as it was."""
    from core.atomic import image_format, save_image

    p = Path(path)
    if p.suffix.lower() not in EXPORT_IMAGE_FORMATS:
        raise InputError(f"{p}: export an image as .png, .jpg or .jpeg")
    params = {"quality": int(quality)} if image_format(p, formats=EXPORT_IMAGE_FORMATS) == "JPEG" else {}
    save_image(p, np.ascontiguousarray(image, dtype=np.uint8), what="image", **params)
    return p


def export_depth(path: str | os.PathLike, depth: np.ndarray) -> Path:
    from core.io import save_depth

    p = Path(path)
    if p.suffix.lower() not in (".exr", ".png", ".npy", ".tif", ".tiff"):
        raise InputError(f"{p}: export depth as .exr, .png (16-bit), .npy or .tif")
    return Path(save_depth(p, depth))


def edited_points(scene) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float64 camera-frame points (depth units) and (N, 3) colours in [0, 1] of the edited
    scene: background as lifted, each visible object moved by its transform, hidden ones dropped."""
    from core.geometry.lift import lift_scene

    lifted = lift_scene(scene)
    pts = [lifted.points[lifted.object_index < 0].astype(np.float64)]
    cols = [lifted.colors[lifted.object_index < 0]]
    for i, obj in enumerate(scene.objects):
        own = lifted.object_index == i
        if not obj.visible or not own.any():
            continue
        pts.append(obj.transform.apply(lifted.points[own], scene.pivot(obj)))
        cols.append(lifted.colors[own])
    return np.concatenate(pts), np.concatenate(cols).astype(np.float64)


def export_ply(path: str | os.PathLike, scene) -> Path:
    """Write the edited scene's coloured point cloud as PLY through Open3D, atomically."""
    import open3d as o3d

    from core.atomic import atomic_write, check_output

    p = Path(path)
    check_output(p, "point cloud")
    points, colors = edited_points(scene)
    pc = o3d.geometry.PointCloud()
    pc.points = o3d.utility.Vector3dVector(points)
    pc.colors = o3d.utility.Vector3dVector(np.clip(colors, 0.0, 1.0))

    def write(tmp: Path) -> None:  # the temporary keeps the extension: Open3D picks the format by it
        if not o3d.io.write_point_cloud(str(tmp), pc, write_ascii=False):
            raise InputError(f"{p}: Open3D could not write the point cloud (check the .ply extension)")

    atomic_write(p, write, what="point cloud", keep_suffix=True)
    return p


def export_transforms(path: str | os.PathLike, scene) -> Path:
    from core.dhformat import write_transforms

    return Path(write_transforms(scene, path))


# ----- crash recovery -----
def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        import psutil

        return psutil.pid_exists(pid)
    except ImportError:  # pragma: no cover
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@dataclass
class Recoverable:
    """An autosave left by a session that did not exit cleanly."""

    lock: Path
    autosave: Path
    original: str  # the project path the session was editing ("" if never saved)
    saved_at: str


class RecoveryManager:
    """Autosave to ``<recovery dir>/session-<pid>.handles`` with a lock ``session-<pid>.lock``.

    The lock (JSON: pid, the original path, time of the last autosave) exists while a window is
    open; :meth:`finish` (a clean exit) removes both files. A lock whose process is gone means a
    crash: :meth:`find_recoverable` lists its autosave for the "recover?" offer.
    """

    def __init__(self, folder: Path | None = None, pid: int | None = None) -> None:
        self.folder = Path(folder) if folder is not None else recovery_dir()
        self.pid = os.getpid() if pid is None else int(pid)
        self.lock_path = self.folder / f"session-{self.pid}.lock"
        self.autosave_path = self.folder / f"session-{self.pid}{PROJECT_SUFFIX}"
        self.original = ""
        self.saved_at = ""

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_lock()
        log.info("recovery: session lock %s", self.lock_path)

    def _write_lock(self) -> None:
        data = {"pid": self.pid, "original": self.original, "saved_at": self.saved_at, "autosave": self.autosave_path.name}
        atomic_write_text(self.lock_path, json.dumps(data))

    def autosave(self, document: Document) -> Path:
        """Save ``document`` to the autosave file (atomic); its own path is left untouched."""
        from core.document import now_iso
        from core.project import save_project

        self.folder.mkdir(parents=True, exist_ok=True)
        save_project(self.autosave_path, document.to_project())
        bak = self.autosave_path.with_name(self.autosave_path.name + ".bak")
        if bak.exists():
            bak.unlink()
        self.original = str(document.path) if document.path else ""
        self.saved_at = now_iso()
        self._write_lock()
        log.info("autosaved %s to %s", self.original or "the unsaved document", self.autosave_path)
        return self.autosave_path

    def discard_autosave(self) -> None:
        """The document was saved by the user: the autosave is no longer needed."""
        for p in (self.autosave_path, self.autosave_path.with_name(self.autosave_path.name + ".bak")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        self.saved_at = ""
        if self.lock_path.exists():
            self._write_lock()

    def finish(self) -> None:
        """Clean exit: remove the lock and the autosave."""
        self.discard_autosave()
        try:
            self.lock_path.unlink()
        except FileNotFoundError:
            pass
        log.info("recovery: clean exit, session files removed from %s", self.folder)

    def find_recoverable(self) -> list[Recoverable]:
        """Autosaves of sessions whose process is gone (newest first). Stale locks without an
        autosave are removed."""
        out = []
        if not self.folder.is_dir():
            return out
        for lock in sorted(self.folder.glob("session-*.lock")):
            if lock == self.lock_path:
                continue
            try:
                data = json.loads(lock.read_text(encoding="utf-8"))
                pid = int(data.get("pid", -1))
            except (OSError, ValueError, TypeError, AttributeError):
                data, pid = {}, -1
            if pid > 0 and pid != self.pid and _pid_alive(pid):
                continue
            name = str(data.get("autosave") or lock.with_suffix(PROJECT_SUFFIX).name)
            autosave = self.folder / Path(name).name
            if not autosave.is_file():
                log.info("recovery: removing the stale lock %s (no autosave)", lock)
                try:
                    lock.unlink()
                except OSError:  # another session removed it, or a read-only folder: it is only skipped again
                    pass
                continue
            log.info("recovery: %s can be recovered (session %d, editing %s)", autosave, pid, data.get("original") or "an unsaved document")
            out.append(Recoverable(lock, autosave, str(data.get("original") or ""), str(data.get("saved_at") or "")))
        out.sort(key=lambda r: r.autosave.stat().st_mtime, reverse=True)
        return out

    @staticmethod
    def discard(rec: Recoverable) -> None:
        log.info("recovery: discarding %s", rec.autosave)
        for p in (rec.autosave, rec.autosave.with_name(rec.autosave.name + ".bak"), rec.lock):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
