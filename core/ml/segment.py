"""Click-to-segment with Segment Anything (SAM) through transformers (``SamModel``, ``SamProcessor``).

Coordinates are photo pixels: ``x`` to the right, ``y`` down, in the photo passed to
:meth:`Segmenter.segment` (pixel ``(i, j)`` covers ``x`` in ``[j, j + 1)``, ``y`` in ``[i, i + 1)``;
a click on a pixel's centre is ``(j + 0.5, i + 0.5)``). Point labels: 1 = on the object,
0 = not on it. A box is ``(x0, y0, x1, y1)`` in the same pixels.

The expensive part of SAM is the image encoder; its embedding of the last photo is kept, so that
further clicks on the same photo only run the small prompt decoder (interactive speed on a CPU).
The model folder is found and checked at construction: a missing SAM raises
:class:`~core.errors.ModelError` whose message names the ``hf download`` command; the editor disables
its tool with that message as the hint. torch and transformers are imported lazily.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from core.errors import InputError, ModelError
from core.ml.device import MODEL_CACHE, DeviceInfo, load_pretrained_pair, pick_device
from core.ml.store import default_model, find_model

Point = tuple[float, float, int]


def segmenter_available(model: str | os.PathLike | None = None, extra_dirs: Iterable[str | os.PathLike] = ()) -> tuple[bool, str]:
    """``(True, folder)`` when a SAM model is usable, else ``(False, hint)``: the one-line reason
    with the command to fetch it (for the editor to show on its disabled tool). Never raises."""
    try:
        name = model if model is not None else default_model("segmenter").name
        return True, str(find_model(name, role="segmenter", extra_dirs=extra_dirs))
    except ModelError as exc:
        return False, str(exc)


def _photo_key(rgb: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(rgb.shape).encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


class Segmenter:
    """SAM from a folder on disk: points and/or a box to one object mask.

    ``model``: catalog name, repo id or folder (default: the catalog's default segmenter);
    ``device``/``dtype`` as :func:`core.ml.device.pick_device`; ``extra_dirs``: more folders to search.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        dtype: str | None = None,
        extra_dirs: Iterable[str | os.PathLike] = (),
    ) -> None:
        self.model = model if model is not None else default_model("segmenter").name
        self.path: Path = find_model(self.model, role="segmenter", extra_dirs=extra_dirs)
        self.device_info: DeviceInfo = pick_device(device, dtype)
        self._lock = threading.Lock()
        self._embedding_key: str | None = None
        self._embedding = None  # (image_embeddings, original_sizes, reshaped_input_sizes)

    @property
    def cache_key(self) -> tuple:
        return ("sam", str(self.path.resolve()), self.device_info.device, self.device_info.dtype)

    def load(self):
        """Load (or fetch from the cache) ``(model, processor)``."""
        return MODEL_CACHE.get(self.cache_key, self._load)

    def _load(self):
        from transformers import SamModel, SamProcessor

        return load_pretrained_pair(self.path, self.device_info, SamProcessor, SamModel, "SAM model")

    def unload(self) -> None:
        """Drop the model and the kept image embedding; free their memory."""
        with self._lock:
            self._embedding = None
            self._embedding_key = None
        MODEL_CACHE.unload(self.cache_key)

    def _image_embedding(self, rgb: np.ndarray):
        import torch
        from PIL import Image

        key = _photo_key(rgb)
        if self._embedding_key == key and self._embedding is not None:
            return self._embedding
        model, processor = self.load()
        enc = processor.image_processor(images=Image.fromarray(rgb), return_tensors="pt")
        pixels = enc["pixel_values"].to(self.device_info.device, dtype=getattr(torch, self.device_info.dtype))
        with torch.inference_mode():
            emb = model.get_image_embeddings(pixels)
        self._embedding = (emb, enc["original_sizes"], enc["reshaped_input_sizes"])
        self._embedding_key = key
        return self._embedding

    def set_image(self, photo: np.ndarray) -> None:
        """Encode ``photo`` now (e.g. when the tool is picked) so that the first click is fast."""
        rgb = _as_rgb(photo)
        with self._lock:
            self._image_embedding(rgb)

    def segment(
        self,
        photo: np.ndarray,
        points: Sequence[Point] = (),
        box: Sequence[float] | None = None,
    ) -> np.ndarray:
        """The object mask for clicks ``points=[(x, y, label)]`` and/or ``box=(x0, y0, x1, y1)``.

        Returns a bool ``H x W`` array at the photo's size: SAM's highest-scoring mask (three
        candidates for a single click, one for several prompts, as SAM recommends).
        """
        import torch

        rgb = _as_rgb(photo)
        height, width = rgb.shape[:2]
        pts, labels = _check_points(points, width, height)
        box_list = _check_box(box, width, height)
        if not pts and box_list is None:
            raise InputError("segmenting needs at least one click or a box")

        with self._lock:
            emb, original_sizes, reshaped_sizes = self._image_embedding(rgb)
            model, processor = self.load()
            multimask = len(pts) + (2 if box_list is not None else 0) <= 1
            dev = self.device_info.device
            dtype = getattr(torch, self.device_info.dtype)
            # SAM's prompt coordinates live in the resized (longest side = encoder size) image.
            oh, ow = (float(v) for v in original_sizes[0])
            rh, rw = (float(v) for v in reshaped_sizes[0])
            scale = torch.tensor([rw / ow, rh / oh], dtype=torch.float32)
            kwargs = {"image_embeddings": emb, "multimask_output": multimask}
            if pts:
                xy = torch.tensor(pts, dtype=torch.float32) * scale
                kwargs["input_points"] = xy[None, None].to(dev, dtype=dtype)
                kwargs["input_labels"] = torch.tensor(labels, dtype=torch.int64)[None, None].to(dev)
            if box_list is not None:
                xyxy = torch.tensor(box_list, dtype=torch.float32) * scale.repeat(2)
                kwargs["input_boxes"] = xyxy[None, None].to(dev, dtype=dtype)
            with torch.inference_mode():
                out = model(**kwargs)
            masks = processor.image_processor.post_process_masks(out.pred_masks.float().cpu(), original_sizes, reshaped_sizes, binarize=True)[
                0
            ]  # (prompts, candidates, H, W)
            scores = out.iou_scores.float().cpu()[0]  # (prompts, candidates)
        best = int(torch.argmax(scores[0]))
        mask = masks[0, best].numpy().astype(bool)
        if mask.shape != (height, width):  # pragma: no cover - post_process_masks restores the size
            raise ModelError(f"SAM returned a {mask.shape[1]}x{mask.shape[0]} mask for a {width}x{height} photo")
        return mask


def _as_rgb(photo: np.ndarray) -> np.ndarray:
    arr = np.asarray(photo)
    if arr.dtype != np.uint8:
        raise InputError(f"photo must be uint8 RGB, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise InputError(f"photo must be an H x W x 3 RGB array, got shape {arr.shape}")
    return np.ascontiguousarray(arr[:, :, :3])


def _check_points(points: Sequence[Point], width: int, height: int) -> tuple[list[list[float]], list[int]]:
    pts: list[list[float]] = []
    labels: list[int] = []
    for p in points or ():
        try:
            x, y, label = p
            x, y, label = float(x), float(y), int(label)
        except (TypeError, ValueError):
            raise InputError(f"a click must be (x, y, label), got {p!r}") from None
        if label not in (0, 1):
            raise InputError(f"click label must be 1 (object) or 0 (not object), got {label}")
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= width and 0 <= y <= height):
            raise InputError(f"click ({x:g}, {y:g}) is outside the {width}x{height} photo")
        pts.append([x, y])
        labels.append(label)
    return pts, labels


def _check_box(box: Sequence[float] | None, width: int, height: int) -> list[float] | None:
    if box is None:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"a box must be (x0, y0, x1, y1), got {box!r}") from None
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InputError(f"box {box!r} is not finite")
    x0, x1 = max(0.0, x0), min(float(width), x1)
    y0, y1 = max(0.0, y0), min(float(height), y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise InputError(f"box {tuple(box)!r} does not cover any pixel of the {width}x{height} photo")
    return [x0, y0, x1, y1]
