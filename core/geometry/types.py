"""Data types of the warp plan: what the geometry layer hands to the preview and the engine.

Coordinates: image pixels (see ``core.camera``: pixel (row i, col j) has centre (j+0.5, i+0.5)).
At a feature resolution ``1/factor`` the same convention holds on the feature grid: a target
position ``x_feat = x_img / factor`` so feature cell (i, j) has centre (j+0.5, i+0.5).
Depths are z-depth in the scene's depth units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ObjectFlow:
    """Where each source pixel of one object lands (image resolution).

    ``src_rows``, ``src_cols``: (N,) int32, the object's source pixels (its mask).
    ``tgt_x``, ``tgt_y``: (N,) float32 target pixel coordinates (continuous); nan when dropped.
    ``tgt_z``: (N,) float32 target z-depth.
    ``visible``: (N,) bool: on-screen, in front of the camera, and the nearest surface at its target.
    """

    index: int
    name: str
    src_rows: np.ndarray
    src_cols: np.ndarray
    tgt_x: np.ndarray
    tgt_y: np.ndarray
    tgt_z: np.ndarray
    visible: np.ndarray
    moved: bool = True


@dataclass
class FeatureCorrespondence:
    """Correspondences of all objects at a feature resolution (h, w) = (H/factor, W/factor).

    ``objects``: one entry per object with
      ``src_cells`` (M, 2) int32 (row, col) of feature cells the object covers in the source,
      ``tgt_xy`` (M, 2) float32 target positions (x, y) on the feature grid (bilinear sampling),
      ``weight`` (M,) float32 in [0, 1]: fraction of the cell's object pixels that stay visible
      times the fraction of the cell the object covers.
    ``fg_src``: (h, w) bool, cells covered by a moved object in the source.
    ``fg_tgt``: (h, w) bool, cells covered by a moved object after the move.
    ``hole``: (h, w) bool, cells of uncovered background.
    ``background``: (h, w) bool, cells untouched by any move (neither old nor new silhouette
    nor hole, after a dilation of ``margin`` cells): the region the engine keeps as it was.
    """

    factor: int
    shape: tuple[int, int]
    objects: list[dict]
    fg_src: np.ndarray
    fg_tgt: np.ndarray
    hole: np.ndarray
    background: np.ndarray


@dataclass
class WarpPlan:
    """Result of warping every object of a scene by its transform (image resolution).

    ``edited_depth``: (H, W) float32, depth of the edited scene (moved objects over the filled
    background). ``background_depth``: (H, W) float32, the depth with moved objects removed
    and their region filled. ``hole``: (H, W) bool, background uncovered by the moves (no known
    colour). ``target_object``: (H, W) int16, index of the object seen at each pixel after the
    move, -1 for background. ``src_x``, ``src_y``: (H, W) float32, for pixels showing a moved
    object, the source pixel coordinates of the surface seen there (nan elsewhere): a backward map
    for resampling colours and activations. ``flows``: one :class:`ObjectFlow` per object.
    ``changed``: (H, W) bool, old silhouettes ∪ new silhouettes ∪ hole of moved objects.
    """

    shape: tuple[int, int]
    edited_depth: np.ndarray
    background_depth: np.ndarray
    hole: np.ndarray
    target_object: np.ndarray
    src_x: np.ndarray
    src_y: np.ndarray
    flows: list[ObjectFlow]
    changed: np.ndarray
    extras: dict = field(default_factory=dict)

    @property
    def is_identity(self) -> bool:
        return not any(f.moved for f in self.flows)
