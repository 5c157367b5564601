"""The scene model: a photo with depth, a camera, a prompt and any number of movable objects.

All arrays are at the *working resolution* (both sides multiples of 64, see ``core.io``):

* ``photo``: (H, W, 3) uint8 RGB.
* ``depth``: (H, W) float32 z-depth in ``depth_unit`` (see ``core.camera`` for the frame), > 0.
* each object's ``mask``: (H, W) bool, True on the object.

Object transforms are :class:`core.transform.Transform3D` in the camera frame, about the object's
pivot (the centroid of its 3D points, computed from mask, depth and camera).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

import numpy as np

from core.camera import Camera
from core.transform import Transform3D


def new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class SceneObject:
    """A movable object: a name, a boolean mask (H, W) and a transform about its pivot."""

    name: str
    mask: np.ndarray
    transform: Transform3D = field(default_factory=Transform3D)
    visible: bool = True
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.ndim != 2:
            raise ValueError(f"object mask must be 2-D, got shape {self.mask.shape}")


@dataclass
class Scene:
    """Photo + depth + camera + objects. See the module docstring for shapes and units."""

    photo: np.ndarray
    depth: np.ndarray
    camera: Camera
    prompt: str = ""
    objects: list[SceneObject] = field(default_factory=list)
    #: variant name -> object name -> transform
    variants: dict[str, dict[str, Transform3D]] = field(default_factory=dict)
    name: str = "Untitled"
    depth_unit: str = "m"
    #: where the depth came from: "file", "sample", "estimated:<model id>", ...
    depth_source: str = "file"
    #: full-resolution original photo (H0, W0, 3) uint8 kept for export; None = same as photo
    original_photo: np.ndarray | None = None
    #: optional alpha of the source photo at working resolution (H, W) float32 in [0, 1]
    alpha: np.ndarray | None = None
    #: optional known depth of the background behind the objects (H, W), e.g. bg_depth.exr
    background_depth: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.photo = np.ascontiguousarray(self.photo, dtype=np.uint8)
        self.depth = np.ascontiguousarray(self.depth, dtype=np.float32)
        h, w = self.depth.shape
        if self.photo.shape != (h, w, 3):
            raise ValueError(f"photo shape {self.photo.shape} does not match depth shape {(h, w)}")
        if (self.camera.width, self.camera.height) != (w, h):
            raise ValueError(f"camera {self.camera.width}x{self.camera.height} does not match image {w}x{h}")
        for obj in self.objects:
            self._check_mask(obj.mask)

    # ----- shape -----
    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.camera.width, self.camera.height

    def _check_mask(self, mask: np.ndarray) -> None:
        if mask.shape != self.depth.shape:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {self.depth.shape}")

    # ----- objects -----
    def object(self, name: str) -> SceneObject:
        for obj in self.objects:
            if obj.name == name:
                return obj
        names = ", ".join(o.name for o in self.objects) or "none"
        raise KeyError(f"no object named {name!r} (objects: {names})")

    def object_by_id(self, obj_id: str) -> SceneObject:
        for obj in self.objects:
            if obj.id == obj_id:
                return obj
        raise KeyError(f"no object with id {obj_id!r}")

    def unique_name(self, base: str = "object") -> str:
        names = {o.name for o in self.objects}
        if base not in names:
            return base
        i = 2
        while f"{base} {i}" in names:
            i += 1
        return f"{base} {i}"

    def add_object(self, mask: np.ndarray, name: str | None = None, transform: Transform3D | None = None) -> SceneObject:
        mask = np.asarray(mask, dtype=bool)
        self._check_mask(mask)
        obj = SceneObject(name=self.unique_name(name or "object"), mask=mask, transform=transform or Transform3D())
        self.objects.append(obj)
        return obj

    def pivot(self, obj: SceneObject) -> np.ndarray:
        """Centroid (3,) of the object's 3D points, camera frame, depth units.

        An empty mask has no points: its pivot is the point on the optical axis at the median depth.
        """
        ys, xs = np.nonzero(obj.mask)
        if len(xs) == 0:
            return np.array([0.0, 0.0, float(np.median(self.depth))])
        pts = self.camera.unproject(xs + 0.5, ys + 0.5, self.depth[ys, xs])
        return pts.mean(axis=0)

    # ----- variants -----
    def transforms(self) -> dict[str, Transform3D]:
        """Current transform of every object, by name."""
        return {o.name: o.transform for o in self.objects}

    def store_variant(self, name: str) -> None:
        self.variants[name] = self.transforms()

    def apply_variant(self, name: str) -> None:
        """Set every object's transform from variant ``name`` (objects it does not name: identity)."""
        if name not in self.variants:
            names = ", ".join(self.variants) or "none"
            raise KeyError(f"no variant named {name!r} (variants: {names})")
        v = self.variants[name]
        for obj in self.objects:
            obj.transform = v.get(obj.name, Transform3D())

    # ----- identity of the content -----
    def content_id(self) -> str:
        """Hash of what a render's identity depends on: photo, depth and field of view."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.photo).tobytes())
        h.update(np.ascontiguousarray(self.depth, dtype=np.float32).tobytes())
        h.update(repr((self.camera.width, self.camera.height, round(self.camera.fov_deg, 6))).encode())
        return h.hexdigest()[:16]
