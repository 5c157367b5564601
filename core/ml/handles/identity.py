"""The identity of a photo: what the edits of one photo share (inversion + captured activations).

An :class:`Identity` holds, for one (photo, depth, prompt, model, steps, resolution, inversion
settings):

* ``trajectory`` (N+1, 4, h, w) float32: the latent at the start of each denoising step
  (``trajectory[0]`` is the inverted noise z_T, ``trajectory[N]`` the clean latent that the
  reconstruction reaches);
* ``deltas`` (N, 4, h, w) float32 or None: per-step residuals between the trajectory and the
  classifier-free-guided DDIM step from it; adding them back makes the replay exact;
* ``cond_emb`` (1, L, D) and ``uncond_emb`` (1 or N, L, D): the text embeddings (one
  unconditional embedding per step after null-text optimisation);
* ``depth_cond`` (1, 1, h, w): the source depth conditioning in [-1, 1] and ``disparity_range``;
* ``recon_image``: the decoded reconstruction (for the background composite), made on demand;
* ``activations``: up_block index -> (n_captured, C, hb, wb) float16, the outputs of that block in
  the text-conditioned half of the guided pass at steps 0 .. n_captured-1.

Latent sizes are the image size / 8 (``h = H / 8``). ``to_bytes``/``from_bytes`` give a
self-describing ``.npz`` (no pickle) for project caches; :func:`identity_key` a stable key.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import InputError

FORMAT = "handles-identity/1"


def _check_archive(data: bytes) -> None:
    """InputError unless ``data`` is the archive :meth:`Identity.to_bytes` writes: members stored,
    never compressed (``np.savez``), none larger than the data itself. A project cache is capped
    by its declared size, but a compressed member inside it could inflate a thousand times over
    (a zip bomb inside the cache); stored members bound what ``np.load`` reads by the cache's size."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"stored identity cannot be read (not an identity archive: {exc}); it will be rebuilt") from exc
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > len(data) or info.compress_size != info.file_size:
            raise InputError(
                f"stored identity cannot be read (member {info.filename!r} is compressed or larger than the archive, "
                "which an identity never is); it will be rebuilt"
            )


def identity_key(content_id: str, prompt: str, model_id: str, size: tuple[int, int], fields: dict) -> str:
    """Stable hash of everything an identity depends on (the activations' count excepted)."""
    d = {"content": content_id, "prompt": prompt, "model": str(model_id), "size": list(size), "settings": fields}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Identity:
    key: str
    size: tuple[int, int]  # (width, height) of the image, pixels
    timesteps: list[int]
    trajectory: torch.Tensor
    deltas: torch.Tensor | None
    cond_emb: torch.Tensor
    uncond_emb: torch.Tensor
    depth_cond: torch.Tensor
    disparity_range: tuple[float, float]
    activations: dict[int, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    #: (H, W, 3) uint8 VAE decode of ``trajectory[N]`` (the plain reconstruction), made on demand
    recon_image: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    @property
    def n_captured(self) -> int:
        if not self.activations:
            return 0
        return min(int(a.shape[0]) for a in self.activations.values())

    def uncond_at(self, i: int) -> torch.Tensor:
        return self.uncond_emb[i : i + 1] if self.uncond_emb.shape[0] > 1 else self.uncond_emb

    def nbytes(self) -> int:
        ts = [self.trajectory, self.cond_emb, self.uncond_emb, self.depth_cond, *self.activations.values()]
        if self.deltas is not None:
            ts.append(self.deltas)
        extra = 0 if self.recon_image is None else int(self.recon_image.nbytes)
        return int(sum(t.numel() * t.element_size() for t in ts)) + extra

    def activation_bytes(self) -> int:
        return int(sum(t.numel() * t.element_size() for t in self.activations.values()))

    # ----- (de)serialisation -----
    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "trajectory": self.trajectory.detach().float().cpu().numpy(),
            "cond_emb": self.cond_emb.detach().float().cpu().numpy(),
            "uncond_emb": self.uncond_emb.detach().float().cpu().numpy(),
            "depth_cond": self.depth_cond.detach().float().cpu().numpy(),
        }
        if self.deltas is not None:
            arrays["deltas"] = self.deltas.detach().float().cpu().numpy()
        for b, a in self.activations.items():
            arrays[f"act_{int(b)}"] = a.detach().to(torch.float16).cpu().numpy()
        head = {
            "format": FORMAT,
            "key": self.key,
            "size": list(self.size),
            "timesteps": [int(t) for t in self.timesteps],
            "disparity_range": [float(v) for v in self.disparity_range],
            "meta": self.meta,
        }
        if self.recon_image is not None:
            arrays["recon_image"] = np.ascontiguousarray(self.recon_image, dtype=np.uint8)
        arrays["header"] = np.frombuffer(json.dumps(head).encode("utf-8"), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # pyright: ignore[reportArgumentType]  # keys are array names, never allow_pickle
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, device="cpu", activations_device=None) -> Identity:
        _check_archive(data)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                files = {k: z[k] for k in z.files}
            head = json.loads(bytes(files.pop("header")).decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - any damage is one user-facing error
            raise InputError(f"stored identity cannot be read ({type(exc).__name__}: {exc}); it will be rebuilt") from exc
        if head.get("format") != FORMAT:
            raise InputError(f"stored identity has format {head.get('format')!r}, expected {FORMAT!r}")
        dev = torch.device(device)
        adev = torch.device(activations_device) if activations_device is not None else dev
        acts = {int(k[4:]): torch.from_numpy(v).to(adev) for k, v in files.items() if k.startswith("act_")}
        return cls(
            key=str(head["key"]),
            size=(int(head["size"][0]), int(head["size"][1])),
            timesteps=[int(t) for t in head["timesteps"]],
            trajectory=torch.from_numpy(files["trajectory"]).to(dev),
            deltas=torch.from_numpy(files["deltas"]).to(dev) if "deltas" in files else None,
            cond_emb=torch.from_numpy(files["cond_emb"]).to(dev),
            uncond_emb=torch.from_numpy(files["uncond_emb"]).to(dev),
            depth_cond=torch.from_numpy(files["depth_cond"]).to(dev),
            disparity_range=(float(head["disparity_range"][0]), float(head["disparity_range"][1])),
            activations=acts,
            meta=dict(head.get("meta") or {}),
            recon_image=files.get("recon_image"),
        )

    @staticmethod
    def peek_key(data: bytes) -> str | None:
        """The key of serialised identity ``data`` without loading its arrays (None if unreadable)."""
        try:
            _check_archive(data)
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return str(json.loads(bytes(z["header"]).decode("utf-8"))["key"])
        except Exception:  # noqa: BLE001 - not an identity blob (damaged, foreign): the caller recomputes it
            return None
