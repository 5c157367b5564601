"""The editor's document, Qt-free: a scene, its render history, render settings, caches, a path.

A :class:`Document` is what one editor window edits and what a ``.handles`` project stores
(:meth:`to_project` / :meth:`from_project` convert through ``core.project``). It tracks whether
anything outside the undo history changed since the last save (``renders_modified``); the undo
history's own clean state is the editor's business.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.scene import Scene

PROJECT_SUFFIX = ".handles"

#: render settings of a document (stored in the project's ``settings``) and their defaults
#: the catalog name of the bundled world model (resources/models/world)
WORLD_MODEL = "world"

DEFAULT_RENDER_SETTINGS: dict[str, Any] = {
    "model": "sd2-depth",
    "preset": "default",
    "steps": 25,
    "seed": 0,
    #: foreground identity preservation, percent of the preset's weight (100 = the preset's)
    "foreground": 100,
    #: background preservation, percent of the preset's weight (100 = the preset's)
    "background": 100,
}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def make_thumbnail(image: np.ndarray, long_side: int = 256) -> np.ndarray:
    """Downscale an (H, W, 3) uint8 image so its long side is at most ``long_side`` (area average)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    img.thumbnail((long_side, long_side), Image.Resampling.BOX)
    return np.asarray(img.convert("RGB"))


@dataclass
class Document:
    """What one editor window edits. ``renders`` are ``core.project.RenderRecord`` values."""

    scene: Scene
    renders: list = field(default_factory=list)
    #: render settings given by the project; missing keys take DEFAULT_RENDER_SETTINGS, and a
    #: scene of the procedural world (the sample) renders with the bundled world model
    render_settings: dict = field(default_factory=dict)
    #: name -> bytes; from a project, a ``core.project.ProjectCaches`` (each read on first access)
    caches: dict[str, bytes] = field(default_factory=dict)
    #: the .handles file this document was opened from or saved to (None: never saved)
    path: Path | None = None
    #: the render history changed since the last save (undoable edits are tracked by the editor)
    renders_modified: bool = False
    #: other project settings kept as they were loaded (round-tripped untouched)
    extra_settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        merged = dict(DEFAULT_RENDER_SETTINGS)
        if "model" not in (self.render_settings or {}):
            from core.world import is_world_scene

            if is_world_scene(self.scene):
                merged["model"] = WORLD_MODEL
        merged.update(self.render_settings or {})
        self.render_settings = merged

    @property
    def display_name(self) -> str:
        if self.path is not None:
            return Path(self.path).stem
        return self.scene.name or "Untitled"

    # ----- render history -----
    def add_render(self, image: np.ndarray, request: dict, info: dict):
        """Append a render to the history and return its record."""
        from core.project import RenderRecord

        rec = RenderRecord(
            image=np.ascontiguousarray(image, dtype=np.uint8),
            request=dict(request),
            info=dict(info),
            created=now_iso(),
            id=uuid.uuid4().hex[:12],
        )
        self.renders.append(rec)
        self.renders_modified = True
        return rec

    def remove_render(self, render_id: str) -> None:
        self.renders = [r for r in self.renders if r.id != render_id]
        self.renders_modified = True

    def render_by_id(self, render_id: str):
        for r in self.renders:
            if r.id == render_id:
                return r
        raise KeyError(f"no render with id {render_id!r}")

    # ----- projects -----
    def thumbnail(self) -> np.ndarray:
        """The project's thumbnail: the latest render, or the photo."""
        img = self.renders[-1].image if self.renders else self.scene.photo
        return make_thumbnail(img)

    def to_project(self):
        from core.project import Project

        settings = dict(self.extra_settings)
        settings["render"] = dict(self.render_settings)
        return Project(
            scene=self.scene,
            renders=list(self.renders),
            settings=settings,
            caches=_copy_caches(self.caches),
            thumbnail=self.thumbnail(),
        )

    @classmethod
    def from_project(cls, project, path: str | Path | None = None) -> Document:
        settings = dict(project.settings or {})
        render = settings.pop("render", {}) or {}
        if not isinstance(render, dict):
            render = {}
        return cls(
            scene=project.scene,
            renders=list(project.renders or []),
            render_settings=render,
            caches=_copy_caches(project.caches),
            path=Path(path) if path is not None else None,
            extra_settings=settings,
        )

    def save(self, path: str | Path) -> Path:
        """Save as a .handles project (atomically, through core.project) and remember the path."""
        from core.project import save_project

        p = Path(path)
        save_project(p, self.to_project())
        self.path = p
        self.renders_modified = False
        return p

    @classmethod
    def load(cls, path: str | Path) -> Document:
        from core.project import load_project

        return cls.from_project(load_project(path), path)


def _copy_caches(caches) -> dict:
    """A copy of a caches mapping that reads nothing (a lazy ``ProjectCaches`` stays lazy)."""
    if caches is None:
        return {}
    return caches.copy() if isinstance(caches, dict) else dict(caches)


# ----- numeric rotation fields (objects panel) -----
def quat_from_euler_xyz(rx_deg: float, ry_deg: float, rz_deg: float) -> tuple[float, float, float, float]:
    """Unit quaternion (w, x, y, z) of ``R = Rz(rz) @ Ry(ry) @ Rx(rx)`` (degrees, camera frame:
    rotate about X first, then Y, then Z, all about fixed camera axes through the pivot)."""
    from core.transform import quat_from_axis_angle, quat_multiply, quat_normalize

    qx = quat_from_axis_angle((1.0, 0.0, 0.0), rx_deg)
    qy = quat_from_axis_angle((0.0, 1.0, 0.0), ry_deg)
    qz = quat_from_axis_angle((0.0, 0.0, 1.0), rz_deg)
    w, x, y, z = quat_normalize(quat_multiply(qz, quat_multiply(qy, qx)))
    return float(w), float(x), float(y), float(z)


def euler_xyz_from_quat(q) -> tuple[float, float, float]:
    """Inverse of :func:`quat_from_euler_xyz`: (rx, ry, rz) in degrees, ry in [-90, 90].

    At gimbal lock (ry = +-90) rx is set to 0 and the whole remaining turn goes to rz.
    """
    import math

    from core.transform import quat_to_matrix

    m = quat_to_matrix(q)
    cy = math.hypot(float(m[0, 0]), float(m[1, 0]))  # |cos(ry)|, stable near +-90 degrees
    ry = math.degrees(math.atan2(-float(m[2, 0]), cy))
    if cy > 1e-9:
        rx = math.degrees(math.atan2(m[2, 1], m[2, 2]))
        rz = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    else:
        rx = 0.0
        rz = math.degrees(math.atan2(-m[0, 1], m[1, 1]))
    return rx, ry, rz
