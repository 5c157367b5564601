"""Moving captured activations with the objects (torch; one :class:`BlockWarp` per feature size).

Inputs are :class:`core.geometry.types.FeatureCorrespondence` records: for every object, the
feature cells it covers in the source (``src_cells`` (M, 2) int (row, col)), where each lands
(``tgt_xy`` (M, 2) float (x, y) on the feature grid, cell (i, j) has centre (j+0.5, i+0.5)) and a
visibility weight in [0, 1]. All objects of a scene are handled at once; grids may be non-square.

* :meth:`BlockWarp.splat` moves a stored feature map (C, h, w) to the targets: each source cell is
  spread bilinearly onto the four cells around its target position, weighted by visibility; the
  result is normalised by the accumulated weight, and ``coverage`` (h, w) in [0, 1] says how much
  of each target cell the moved objects fill (the injection blend factor).
* :meth:`BlockWarp.sample` reads current features (B, C, h, w) at the target positions with
  bilinear interpolation (differentiable): the foreground term compares them with the stored
  features at the source cells (:meth:`BlockWarp.gather`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.geometry.types import FeatureCorrespondence


@dataclass
class BlockWarp:
    """Correspondences of every object at one feature size, as tensors on ``device``."""

    shape: tuple[int, int]
    src_index: torch.Tensor  # (M,) long: flat source cell index r * w + c
    tgt_xy: torch.Tensor  # (M, 2) float32 target (x, y), feature-grid pixels
    weight: torch.Tensor  # (M,) float32 visibility weight (> 0 only)
    object_id: torch.Tensor  # (M,) long: object index into the correspondence list
    fg_src: torch.Tensor  # (h, w) bool
    fg_tgt: torch.Tensor  # (h, w) bool
    background: torch.Tensor  # (h, w) bool
    hole: torch.Tensor  # (h, w) bool
    # bilinear splat: 4 corners per correspondence
    _splat_index: torch.Tensor | None = None  # (4M,) long flat target index
    _splat_weight: torch.Tensor | None = None  # (4M,) float32 bilinear * visibility weight
    _grid: torch.Tensor | None = None  # (1, 1, M, 2) normalised grid_sample coordinates

    @classmethod
    def from_correspondence(cls, corr: FeatureCorrespondence, device="cpu") -> BlockWarp:
        h, w = (int(corr.shape[0]), int(corr.shape[1]))
        src, tgt, wt, oid = [], [], [], []
        for k, ob in enumerate(corr.objects):
            s = np.asarray(ob["src_cells"], dtype=np.int64).reshape(-1, 2)
            t = np.asarray(ob["tgt_xy"], dtype=np.float32).reshape(-1, 2)
            v = np.asarray(ob["weight"], dtype=np.float32).reshape(-1)
            if not (len(s) == len(t) == len(v)):
                raise ValueError(f"correspondence of object {k}: src_cells, tgt_xy and weight differ in length")
            keep = (v > 0) & np.all(np.isfinite(t), axis=1)
            keep &= (s[:, 0] >= 0) & (s[:, 0] < h) & (s[:, 1] >= 0) & (s[:, 1] < w)
            # a target must fall on the grid (cells whose centre lies inside [0, w) x [0, h))
            keep &= (t[:, 0] >= 0) & (t[:, 0] < w) & (t[:, 1] >= 0) & (t[:, 1] < h)
            src.append(s[keep, 0] * w + s[keep, 1])
            tgt.append(t[keep])
            wt.append(v[keep])
            oid.append(np.full(int(keep.sum()), k, dtype=np.int64))
        src_a = np.concatenate(src) if src else np.zeros(0, np.int64)
        tgt_a = np.concatenate(tgt) if tgt else np.zeros((0, 2), np.float32)
        wt_a = np.concatenate(wt) if wt else np.zeros(0, np.float32)
        oid_a = np.concatenate(oid) if oid else np.zeros(0, np.int64)

        def b(a):
            a = np.asarray(a, dtype=bool)
            if a.shape != (h, w):
                raise ValueError(f"correspondence mask shape {a.shape} does not match feature size {(h, w)}")
            return torch.from_numpy(a.copy()).to(device)

        bw = cls(
            shape=(h, w),
            src_index=torch.from_numpy(src_a).to(device),
            tgt_xy=torch.from_numpy(tgt_a).to(device),
            weight=torch.from_numpy(wt_a).to(device),
            object_id=torch.from_numpy(oid_a).to(device),
            fg_src=b(corr.fg_src),
            fg_tgt=b(corr.fg_tgt),
            background=b(corr.background),
            hole=b(corr.hole),
        )
        bw._prepare(tgt_a, wt_a, device)
        return bw

    def _prepare(self, tgt: np.ndarray, wt: np.ndarray, device) -> None:
        h, w = self.shape
        # continuous (x, y) -> cell-index space where cell (i, j) sits at integer (j, i)
        u = tgt[:, 0].astype(np.float64) - 0.5
        v = tgt[:, 1].astype(np.float64) - 0.5
        x0 = np.floor(u)
        y0 = np.floor(v)
        fx = u - x0
        fy = v - y0
        idx, wts = [], []
        for dx, dy, bw_ in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xi = x0 + dx
            yi = y0 + dy
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & (bw_ > 0)
            flat = np.where(ok, yi * w + xi, 0).astype(np.int64)
            idx.append(flat)
            wts.append(np.where(ok, bw_, 0.0) * wt)
        self._splat_index = torch.from_numpy(np.concatenate(idx)).to(device)
        self._splat_weight = torch.from_numpy(np.concatenate(wts).astype(np.float32)).to(device)
        # grid_sample with align_corners=False: normalised g = 2 * x / w - 1 for continuous x
        gx = 2.0 * tgt[:, 0] / w - 1.0
        gy = 2.0 * tgt[:, 1] / h - 1.0
        self._grid = torch.from_numpy(np.stack([gx, gy], axis=-1).astype(np.float32)).to(device).view(1, 1, -1, 2)

    @property
    def count(self) -> int:
        return int(self.src_index.numel())

    # ----------------------------------------------------------------------------------------
    def gather(self, feats: torch.Tensor) -> torch.Tensor:
        """Stored features (C, h, w) at the source cells -> (C, M)."""
        c = feats.shape[-3]
        return feats.reshape(c, -1).index_select(1, self.src_index)

    def sample(self, feats: torch.Tensor) -> torch.Tensor:
        """Current features (B, C, h, w) bilinearly at the target positions -> (B, C, M)."""
        b = feats.shape[0]
        assert self._grid is not None  # set by from_correspondence (_prepare)
        grid = self._grid.to(dtype=feats.dtype).expand(b, -1, -1, -1)
        out = torch.nn.functional.grid_sample(feats, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[:, :, 0, :]

    def splat(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move stored features (C, h, w) to the objects' targets.

        Returns ``(warped (C, h, w), coverage (h, w))``: ``warped`` is the visibility- and
        bilinear-weighted mean of the features landing on each cell (0 where none lands);
        ``coverage`` is the accumulated weight clipped to [0, 1].
        """
        h, w = self.shape
        c = feats.shape[-3]
        index, weight = self._splat_index, self._splat_weight
        assert index is not None and weight is not None  # set by from_correspondence (_prepare)
        vals = feats.reshape(c, -1).index_select(1, self.src_index).float()  # (C, M)
        vals4 = vals.repeat(1, 4) * weight  # (C, 4M)
        acc = torch.zeros(c, h * w, dtype=torch.float32, device=feats.device)
        acc.index_add_(1, index, vals4)
        norm = torch.zeros(h * w, dtype=torch.float32, device=feats.device)
        norm.index_add_(0, index, weight)
        warped = torch.where(norm > 1e-6, acc / norm.clamp_min(1e-6), torch.zeros_like(acc))
        return warped.view(c, h, w), norm.clamp(0.0, 1.0).view(h, w)
