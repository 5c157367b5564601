"""Monocular depth estimation with Depth Anything V2 (transformers), to a z-depth map.

Frames and units: the output is a float32 ``H x W`` array of z-depth along the camera's +Z axis
(see :mod:`core.camera`: +X right, +Y down, +Z forward), one value per pixel of the requested size
(pixel ``(i, j)`` is the pixel whose centre is at ``(j + 0.5, i + 0.5)``), always finite and > 0.

Two kinds of model, told apart by ``config.depth_estimation_type`` of the transformers
``DepthAnythingConfig``:

``metric`` (the Metric-Indoor/Outdoor checkpoints, ``max_depth`` 20 m / 80 m)
    The network's output is depth in metres; it is resized to the working size and used as-is
    (clamped below at 1 mm).

``relative`` (the default Small checkpoint)
    The network's output is *relative inverse depth*: disparity known only up to scale and shift.
    It is turned into depth with one documented assumption: the nearest visible point is
    ``near`` (1 m) and the farthest ``far`` (10 m) away, and disparity is affine in inverse depth:

        d = (disp - min disp) / (max disp - min disp)            in [0, 1]
        depth = 1 / (d / near + (1 - d) / far)                   in [near, far]

    so the largest disparity maps to ``near``, the smallest to ``far``, and depth decreases
    strictly with disparity. With the editor's 55 degree pinhole camera a point 1 m away spans a
    view about 1.04 m wide: a tabletop object at arm's length in front of a room-sized background,
    which is the scale the gizmos' snapping steps (0.1 units) assume. A constant disparity map
    (no structure) gives a constant depth of ``sqrt(near * far)``.

The prediction (at the image processor's resolution, aspect kept) is resized to the target size
with bilinear interpolation (antialiased when shrinking), never bicubic: bicubic overshoots at depth
edges and can produce negative values. Relative maps are resized in the disparity domain (what the
network predicts) and converted afterwards.

torch and transformers are imported lazily; loaded models are shared through
:data:`core.ml.device.MODEL_CACHE`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core.errors import InputError, ModelError
from core.ml.device import MODEL_CACHE, DeviceInfo, load_pretrained_pair, pick_device
from core.ml.store import default_model, find_model

#: the relative-depth assumption (metres): nearest and farthest visible points
DEFAULT_NEAR = 1.0
DEFAULT_FAR = 10.0
_MIN_METRIC_DEPTH = 1e-3


def disparity_to_depth(disparity: np.ndarray, near: float = DEFAULT_NEAR, far: float = DEFAULT_FAR) -> np.ndarray:
    """Relative inverse depth (any affine scale) -> z-depth in ``[near, far]`` (see the module docstring).

    ``disparity``: float array, larger = closer; non-finite values are treated as the farthest.
    Returns float32 depth of the same shape; strictly decreasing in disparity, ``near`` at the
    maximum and ``far`` at the minimum.
    """
    if not (np.isfinite(near) and np.isfinite(far) and 0 < near < far):
        raise InputError(f"relative depth needs 0 < near < far, got near={near}, far={far}")
    disp = np.asarray(disparity, dtype=np.float64)
    finite = np.isfinite(disp)
    if not finite.any():
        return np.full(disp.shape, np.sqrt(near * far), dtype=np.float32)
    lo = float(disp[finite].min())
    hi = float(disp[finite].max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.full(disp.shape, np.sqrt(near * far), dtype=np.float32)
    d = np.where(finite, (disp - lo) / (hi - lo), 0.0)
    inv = d / near + (1.0 - d) / far
    return (1.0 / inv).astype(np.float32)


def _as_rgb_uint8(photo: np.ndarray) -> np.ndarray:
    arr = np.asarray(photo)
    if arr.dtype != np.uint8:
        raise InputError(f"photo must be uint8 RGB, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"photo must be an H x W x 3 RGB array, got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise InputError(f"photo is too small ({arr.shape[1]}x{arr.shape[0]} pixels)")
    return np.ascontiguousarray(arr[:, :, :3])


def _check_size(size, photo: np.ndarray) -> tuple[int, int]:
    if size is None:
        return int(photo.shape[1]), int(photo.shape[0])
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"depth size must be (width, height), got {size!r}") from None
    if w < 1 or h < 1:
        raise InputError(f"depth size must be positive, got {w}x{h}")
    return w, h


def resize_map(values, size: tuple[int, int]):
    """Resize a torch ``h x w`` float map to ``size=(W, H)``: bilinear, antialiased when shrinking."""
    import torch.nn.functional as F

    w, h = size
    x = values.float()[None, None]
    if tuple(x.shape[-2:]) == (h, w):
        return x[0, 0]
    shrink = h < x.shape[-2] or w < x.shape[-1]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)[0, 0]


class DepthEstimator:
    """Depth Anything V2 (or any transformers depth-estimation model) loaded from disk.

    ``model``: a catalog name, repo id or model folder (default: the catalog's default depth
    model); ``device``: ``auto``/``cpu``/``cuda``/``cuda:N``/``mps``; ``dtype``: ``auto``/``fp32``/
    ``fp16``/``bf16``; ``extra_dirs``: more folders to search; ``near``/``far``: the relative-depth
    assumption in metres. The folder is found and checked at construction (a missing model raises
    :class:`~core.errors.ModelError` with the fetch command); weights load on first use or
    :meth:`load`.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        dtype: str | None = None,
        extra_dirs: Iterable[str | os.PathLike] = (),
        near: float = DEFAULT_NEAR,
        far: float = DEFAULT_FAR,
    ) -> None:
        self.model = model if model is not None else default_model("depth").name
        self.path: Path = find_model(self.model, role="depth", extra_dirs=extra_dirs)
        self.device_info: DeviceInfo = pick_device(device, dtype)
        if not (0 < near < far):
            raise InputError(f"relative depth needs 0 < near < far, got near={near}, far={far}")
        self.near = float(near)
        self.far = float(far)
        try:
            cfg = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:  # checked by find_model; a race at most
            raise ModelError(f"{self.path / 'config.json'} cannot be read: {exc}") from None
        self.kind: str = "metric" if str(cfg.get("depth_estimation_type", "relative")) == "metric" else "relative"
        self.max_depth: float | None = float(cfg["max_depth"]) if self.kind == "metric" and cfg.get("max_depth") else None

    @property
    def is_metric(self) -> bool:
        return self.kind == "metric"

    @property
    def cache_key(self) -> tuple:
        return ("depth", str(self.path.resolve()), self.device_info.device, self.device_info.dtype)

    def load(self):
        """Load (or fetch from the cache) ``(model, image_processor)``."""
        return MODEL_CACHE.get(self.cache_key, self._load)

    def _load(self):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        return load_pretrained_pair(self.path, self.device_info, AutoImageProcessor, AutoModelForDepthEstimation, "depth model")

    def unload(self) -> None:
        """Drop this model from the cache and free its memory."""
        MODEL_CACHE.unload(self.cache_key)

    def predict(self, photo: np.ndarray):
        """The network's raw output for ``photo`` as a float32 torch ``h x w`` map on the CPU
        (metres for metric models, relative disparity otherwise), at the processor's resolution."""
        import torch
        from PIL import Image

        rgb = _as_rgb_uint8(photo)
        model, processor = self.load()
        inputs = processor(images=Image.fromarray(rgb), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device_info.device, dtype=getattr(torch, self.device_info.dtype))
        with torch.inference_mode():
            out = model(pixel_values=pixels).predicted_depth
        pred = out.float().cpu()
        if pred.ndim == 3:
            pred = pred[0]
        elif pred.ndim == 4:
            pred = pred[0, 0]
        return pred

    def estimate(self, photo: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Z-depth of ``photo`` (uint8 ``H x W x 3``) at ``size=(W, H)`` (default: the photo's size).

        Returns float32 ``H x W``: metres for metric models, the ``near``..``far`` assumption for
        relative ones (module docstring). Finite and > 0 everywhere.
        """
        rgb = _as_rgb_uint8(photo)
        target = _check_size(size, rgb)
        pred = resize_map(self.predict(rgb), target).numpy()
        if self.is_metric:
            depth = np.nan_to_num(pred, nan=_MIN_METRIC_DEPTH, posinf=self.max_depth or 1e4, neginf=_MIN_METRIC_DEPTH)
            return np.maximum(depth, _MIN_METRIC_DEPTH).astype(np.float32)
        return disparity_to_depth(pred, self.near, self.far)

    def describe_units(self) -> str:
        """One line saying what the depth values mean (for the CLI and the editor's status bar)."""
        if self.is_metric:
            return f"metric depth in metres ({self.path.name}, up to {self.max_depth:g} m)" if self.max_depth else "metric depth in metres"
        return f"relative depth mapped to {self.near:g}..{self.far:g} m (nearest..farthest point assumed)"
