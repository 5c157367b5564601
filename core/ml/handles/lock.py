"""Identity lock: personalise the loaded model on one object so that it stays itself when a large
rotation reveals sides the photo does not show.

Diffusion Handles keeps an object's identity only where its captured activations reach; the side
a rotation turns into view comes from the model's prior. A lock teaches the model this object:

* ``ti``: Textual Inversion (Gal et al. 2023): the embedding of the object's word in the prompt
  (its noun, "box") is replaced by learnt vectors, one per token of the word and per text encoder.
  Kilobytes; the model's weights are untouched.
* ``custom``: Custom Diffusion (Kumari et al. 2023): the learnt word plus the cross-attention
  keys and values of every transformer block of the UNet, as a low-rank (LoRA) update of
  ``attn2.to_k`` / ``attn2.to_v`` so that diffusers' PEFT adapters carry it (the paper tunes them
  in full; at rank 16 the update is a few percent of their size).
* ``lora``: DreamBooth (Ruiz et al. 2023) as a LoRA on every attention projection of the UNet, the
  word's embedding unchanged, with prior preservation: images the model itself makes of "a
  <word>" on the same depth crops are trained on beside the object's, so the class keeps its
  prior.

Training data: square crops of the photo around the object at several scales and positions
(never mirrored unless allowed: mirroring changes asymmetric objects), half of them with the
background replaced by a flat colour so that the lock does not learn the surroundings; the
denoising loss counts only the latent cells the object covers (the prior images count whole).
Extra photos of the same object (with their masks) join the crops.

A lock is stored as bytes (:meth:`IdentityLock.to_bytes`: safetensors with a JSON header) in the
project's caches and applied to the loaded model by :func:`apply_locks`: the vectors through a
forward hook on each text encoder's token embedding (the model code is not forked), the low-rank
weights as PEFT adapters through diffusers' ``add_adapter`` / ``set_adapters`` beside a few-step
LoRA. Every backend carries all three methods (SDXL: a vector per text encoder); a ControlNet's
own weights are never changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from core.errors import InputError
from core.jobs import CancelToken, EmitFn, Progress, ProgressClock
from core.locks import (  # the light part, re-exported: the editor estimates without torch
    CPU_FWD_BWD_512,
    METHOD_LABELS,
    METHODS,
    WORLD_FWD_BWD_128,
    LockSettings,
    _words,
    estimate_seconds,
    lock_settings,
    word_for,
)

__all__ = [
    "CPU_FWD_BWD_512",
    "METHODS",
    "WORLD_FWD_BWD_128",
    "IdentityLock",
    "LockSettings",
    "apply_locks",
    "estimate_seconds",
    "learn_lock",
    "lock_prompt",
    "lock_settings",
    "make_examples",
    "word_for",
]

#: adapter names of locks in the UNet start with this (the few-step LoRA is "handles")
ADAPTER_PREFIX = "lock-"
_MAGIC = "handles-studio identity lock"
_VERSION = 1
_TARGETS = {
    "custom": ("attn2.to_k", "attn2.to_v"),
    "lora": ("to_q", "to_k", "to_v", "to_out.0"),
}


# ----------------------------------------------------------------------------- the lock
@dataclass
class IdentityLock:
    """A learnt lock of one object on one model. ``vectors``: per text encoder, (k, D) float
    tensors for the k tokens of ``word`` (empty for ``lora``); ``adapter``: the PEFT state dict of
    the UNet's low-rank update (empty for ``ti``) with ``rank`` and ``targets``; ``info``: how it
    was learnt (steps, seconds, evaluations, loss)."""

    method: str
    word: str
    object_id: str
    model: str
    vectors: list[torch.Tensor] = field(default_factory=list)
    adapter: dict[str, torch.Tensor] = field(default_factory=dict)
    rank: int = 0
    targets: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)
    _bytes: bytes | None = field(default=None, repr=False, compare=False)

    def to_bytes(self) -> bytes:
        if self._bytes is None:
            from safetensors.torch import save

            tensors = {f"vector.{i}": v.detach().to("cpu", torch.float16).contiguous() for i, v in enumerate(self.vectors)}
            tensors.update({f"adapter.{k}": v.detach().to("cpu", torch.float16).contiguous() for k, v in self.adapter.items()})
            head = {
                "magic": _MAGIC,
                "version": _VERSION,
                "method": self.method,
                "word": self.word,
                "object_id": self.object_id,
                "model": self.model,
                "rank": self.rank,
                "targets": list(self.targets),
                "info": self.info,
            }
            self._bytes = save(tensors, metadata={"lock": json.dumps(head)})
        return self._bytes

    @property
    def nbytes(self) -> int:
        return len(self.to_bytes())

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]

    @property
    def cache_name(self) -> str:
        from core.locks import cache_name

        return cache_name(self.object_id, self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "identity lock") -> IdentityLock:
        """A lock from :meth:`to_bytes`; damaged or foreign data is a one-line InputError."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        from core.locks import read_header

        head = read_header(data, what)  # the header first: a foreign file is refused before decoding
        try:
            tensors = load(bytes(data))
        except (SafetensorError, ValueError, TypeError, OSError) as exc:
            raise InputError(f"{what} is damaged ({type(exc).__name__}); learn the lock again (Object > Lock Identity)") from exc
        if head.get("magic") != _MAGIC or head.get("method") not in METHODS:
            raise InputError(f"{what} is not an identity lock of this program; learn the lock again")
        if int(head.get("version", 0)) > _VERSION:
            raise InputError(f"{what} was made by a newer Handles Studio (version {head.get('version')}); update the program")
        n_vec = len([k for k in tensors if k.startswith("vector.")])
        vectors = [tensors[f"vector.{i}"].float() for i in range(n_vec) if f"vector.{i}" in tensors]
        if len(vectors) != n_vec or any(v.ndim != 2 for v in vectors):
            raise InputError(f"{what} is damaged (its word vectors are incomplete); learn the lock again")
        adapter = {k[len("adapter.") :]: v.float() for k, v in tensors.items() if k.startswith("adapter.")}
        lock = cls(
            method=str(head["method"]),
            word=str(head.get("word", "")),
            object_id=str(head.get("object_id", "")),
            model=str(head.get("model", "")),
            vectors=vectors,
            adapter=adapter,
            rank=int(head.get("rank", 0)),
            targets=tuple(str(t) for t in head.get("targets", ())),
            info=dict(head.get("info") or {}),
        )
        if lock.method != "lora" and not vectors:
            raise InputError(f"{what} is damaged (a {lock.method} lock without its word vectors); learn the lock again")
        if lock.method != "ti" and (not adapter or lock.rank < 1 or not lock.targets):
            raise InputError(f"{what} is damaged (a {lock.method} lock without its adapter weights); learn the lock again")
        lock._bytes = bytes(data)
        return lock


# ----------------------------------------------------------------------------- words and prompts
def lock_prompt(prompt: str, words: Sequence[str]) -> str:
    """``prompt`` with each lock's word present: a word the prompt lacks is added as ", a <word>"
    (its learnt vectors take the word's place)."""
    out = prompt
    for w in words:
        if f" {' '.join(w.lower().split())} " not in _words(out):
            out = f"{out}, a {w}" if out else f"a {w}"
    return out


def _encoders(models) -> list[tuple[Any, Any]]:
    pairs = [(models.tokenizer, models.text_encoder)]
    if getattr(models, "text_encoder_2", None) is not None:
        pairs.append((models.tokenizer_2, models.text_encoder_2))
    return pairs


def _word_ids(tokenizer, word: str) -> list[int]:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise InputError(f"the word {word!r} gives no tokens; choose another word for the lock")
    return [int(i) for i in ids]


class _WordHooks:
    """Forward hooks on the text encoders' token embeddings: wherever a word's token ids occur in
    the input, their embeddings are replaced by the word's vectors (one list per encoder)."""

    def __init__(self, models, words: list[tuple[str, list[torch.Tensor]]]) -> None:
        self.handles = []
        for e, (tok, enc) in enumerate(_encoders(models)):
            table = []
            for word, vecs in words:
                if e < len(vecs):
                    table.append((_word_ids(tok, word), vecs[e]))
            if table:
                self.handles.append(enc.get_input_embeddings().register_forward_hook(self._make(table)))

    @staticmethod
    def _make(table):
        def hook(_module, inputs, output):
            ids = inputs[0]
            out = output
            for wid, vec in table:
                k = len(wid)
                if ids.shape[1] < k:
                    continue
                want = torch.tensor(wid, device=ids.device)
                win = ids.unfold(1, k, 1)  # (B, L - k + 1, k)
                hits = (win == want).all(-1).nonzero().tolist()
                for b, p in hits:
                    if out is output:
                        out = output.clone()
                    out[b, p : p + k] = vec.to(device=out.device, dtype=out.dtype)
            return out

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


# ----------------------------------------------------------------------------- applying locks
def _adapter_name(lock: IdentityLock) -> str:
    return f"{ADAPTER_PREFIX}{lock.digest}"


def _lora_config(rank: int, targets: Sequence[str]):
    from peft import LoraConfig

    return LoraConfig(r=int(rank), lora_alpha=int(rank), target_modules=list(targets), init_lora_weights="gaussian")


def apply_locks(models, locks: Sequence[IdentityLock]) -> None:
    """Make ``locks`` the active locks of ``models`` (idempotent): the word hooks replaced, lock
    adapters not wanted deleted, new ones added, and every wanted adapter active beside the
    few-step LoRA ("handles"). Two locks on one word, or a lock learnt on another model, are a
    one-line InputError and leave no lock applied."""
    words: dict[str, IdentityLock] = {}
    for lk in locks:
        other = words.get(lk.word)
        if other is not None and other.object_id != lk.object_id:
            _clear(models)
            raise InputError(f"two locked objects bind the word {lk.word!r}; switch one lock off or learn it on another word")
        words[lk.word] = lk
    state = models.extras.setdefault("locks", {"hooks": None, "adapters": {}})
    if state["hooks"] is not None:
        state["hooks"].remove()
        state["hooks"] = None
    unet = models.unet
    want = {_adapter_name(lk): lk for lk in locks if lk.adapter}
    for name in [n for n in state["adapters"] if n not in want]:
        unet.delete_adapters([name])
        del state["adapters"][name]
    for name, lk in want.items():
        if name in state["adapters"]:
            continue
        _add_adapter(models, name, lk)
        state["adapters"][name] = lk.digest
    names = (["handles"] if models.lora else []) + list(want)
    if names:
        unet.set_adapters(names, weights=[1.0] * len(names))
    vec_words = [(lk.word, lk.vectors) for lk in locks if lk.vectors]
    if vec_words:
        state["hooks"] = _WordHooks(models, vec_words)


def _clear(models) -> None:
    state = models.extras.get("locks")
    if not state:
        return
    if state["hooks"] is not None:
        state["hooks"].remove()
        state["hooks"] = None
    for name in list(state["adapters"]):
        models.unet.delete_adapters([name])
        del state["adapters"][name]
    if models.lora:
        models.unet.set_adapters(["handles"], weights=[1.0])


def _add_adapter(models, name: str, lk: IdentityLock) -> None:
    from peft import set_peft_model_state_dict

    unet = models.unet
    try:
        with warnings.catch_warnings():  # PEFT warns that the UNet holds several adapters: it is meant to
            warnings.simplefilter("ignore", UserWarning)
            unet.add_adapter(_lora_config(lk.rank, lk.targets), adapter_name=name)
        result = set_peft_model_state_dict(unet, dict(lk.adapter), adapter_name=name)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if name in k or "lora" in k]
        missing = [k for k in getattr(result, "missing_keys", []) or [] if f".{name}." in k]
        if unexpected or missing:
            raise ValueError(f"{len(unexpected)} weights do not fit, {len(missing)} are missing")
        unet.to(device=models.device)
        for n, p in unet.named_parameters():
            if f".{name}." in n:
                p.data = p.data.to(models.dtype)
                p.requires_grad_(False)
    except Exception as exc:  # noqa: BLE001 - a lock of another model: one line, the UNet unchanged
        try:
            unet.delete_adapters([name])
        except Exception:  # noqa: BLE001 - nothing was added
            pass
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(
            f"the identity lock of '{lk.word}' was learnt on another model ({lk.model}) and does not fit this one ({msg}); learn it again"
        ) from exc


# ----------------------------------------------------------------------------- training data
def _resize(a: np.ndarray, size: int, mode: str) -> np.ndarray:
    from PIL import Image

    if a.dtype == np.uint8:
        img = Image.fromarray(a)
        return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC if mode == "rgb" else Image.Resampling.NEAREST))
    img = Image.fromarray(a.astype(np.float32), mode="F")
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def make_examples(
    photo: np.ndarray,
    depth: np.ndarray,
    mask: np.ndarray,
    size: int,
    n: int,
    seed: int = 0,
    mirror: bool = False,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n`` square crops (rgb uint8, depth float32, mask bool; ``size`` px) around the object:
    the crop side 1.2-2.5x the object's larger side (at most the photo's smaller side), the object
    at a random place inside; every other crop with the background replaced by a flat colour."""
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if ys.size < 16:
        raise InputError("the object's mask covers fewer than 16 pixels; select the object first")
    h, w = mask.shape
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    obj = max(y1 - y0, x1 - x0)
    rng = np.random.default_rng([int(seed), 7041])
    out = []
    for i in range(int(n)):
        side = int(min(min(h, w), max(8, round(obj * rng.uniform(1.2, 2.5)))))
        # the crop holds the object where it can; a large object is cropped around its centre
        lo_y, hi_y = max(0, y1 - side), min(y0, h - side)
        lo_x, hi_x = max(0, x1 - side), min(x0, w - side)
        cy = (y0 + y1 - side) // 2 if lo_y > hi_y else int(rng.integers(lo_y, hi_y + 1))
        cx = (x0 + x1 - side) // 2 if lo_x > hi_x else int(rng.integers(lo_x, hi_x + 1))
        cy, cx = int(np.clip(cy, 0, h - side)), int(np.clip(cx, 0, w - side))
        sl = (slice(cy, cy + side), slice(cx, cx + side))
        rgb, dep, m = photo[sl], depth[sl], mask[sl]
        rgb = _resize(np.ascontiguousarray(rgb), size, "rgb").copy()
        dep = _resize(np.ascontiguousarray(dep), size, "depth")
        m = _resize(np.ascontiguousarray(m.astype(np.uint8) * 255), size, "mask") > 127
        if i % 2 == 1:
            rgb[~m] = rng.integers(40, 216, size=3).astype(np.uint8)
        if mirror and rng.random() < 0.5:
            rgb, dep, m = rgb[:, ::-1].copy(), dep[:, ::-1].copy(), m[:, ::-1].copy()
        out.append((rgb, dep, m))
    return out


# ----------------------------------------------------------------------------- learning
def _text(engine, prompt: str, grad: bool) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        if engine.m.backend == "sdxl-controlnet":
            return engine._encode_text_xl(prompt)
        tok = engine.m.tokenizer
        ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        return engine.m.text_encoder(ids.to(engine.device))[0]


def _cell_weights(masks: list[np.ndarray], h: int, w: int) -> torch.Tensor:
    m = torch.from_numpy(np.stack([mm.astype(np.float32) for mm in masks]))[:, None]
    return torch.nn.functional.adaptive_avg_pool2d(m, (h, w))


def learn_lock(
    engine,
    views: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    prompt: str,
    word: str,
    settings: LockSettings,
    object_id: str = "",
    model_name: str = "",
    emit: EmitFn | None = None,
    token: CancelToken | None = None,
) -> IdentityLock:
    """Learn a lock of one object from ``views`` ((photo, depth, mask), the first the project's
    photo, more for extra photos of the same object) on ``engine``'s model. ``prompt``: the
    scene's prompt (the word is added when it lacks it); ``word``: what the lock binds to.
    Cancelling (``token``) raises :class:`core.errors.RenderCancelled` and leaves the model as it was."""
    emit = emit or (lambda _e: None)
    s = settings
    m = engine.m
    f = m.vae_factor
    if s.size % (8 * f):
        s = replace(s, size=max(8 * f, s.size - s.size % (8 * f)))
    if token is not None:
        token.check()
    t_start = time.monotonic()
    counts0 = dict(engine.counts)
    # no other adapter or lock while learning: the lock is learnt against the base model
    from core.ml.handles.models import set_lora

    set_lora(m, None)
    _clear(m)
    for part in (m.unet, m.vae, m.controlnet, m.text_encoder, getattr(m, "text_encoder_2", None)):
        if part is not None:
            part.requires_grad_(False)
    g = torch.Generator().manual_seed(int(s.seed))
    per_view = max(1, math.ceil(s.examples / max(1, len(views))))
    ex = []
    for v, (photo, depth, mask) in enumerate(views):
        ex += make_examples(photo, depth, mask, s.size, per_view, seed=s.seed * 1009 + v, mirror=s.mirror)
    train_prompt = lock_prompt(prompt, [word])
    emit(Progress(stage="learning", step=0, total=s.steps, message=f"preparing {len(ex)} crops of '{word}'"))
    with torch.no_grad():
        lat = torch.cat([engine.encode_image(rgb) for rgb, _, _ in ex]).float()
        dcs = torch.cat([engine.depth_condition(dep) for _, dep, _ in ex]).float()
    lh, lw = lat.shape[-2:]
    cells = _cell_weights([mm for _, _, mm in ex], lh, lw).to(engine.device)
    ac = engine.alphas_cumprod.to(engine.device).float()

    # prior preservation: the base model's own images of "a <word>" on the crops' depths
    prior_lat = prior_dc = None
    class_emb = None
    if s.method == "lora" and s.prior_images > 0 and s.prior_weight > 0:
        class_prompt = f"a {word}"
        imgs = []
        for k in range(s.prior_images):
            emit(Progress(stage="learning", step=0, total=s.steps, message=f"prior image {k + 1}/{s.prior_images} of '{class_prompt}'"))
            dep = ex[k % len(ex)][1]
            gk = torch.Generator().manual_seed(int(s.seed) * 7919 + k)
            imgs.append(engine.sample(dep, class_prompt, steps=s.prior_steps, guidance_scale=5.0, generator=gk, token=token))
        with torch.no_grad():
            prior_lat = torch.cat([engine.encode_image(im) for im in imgs]).float()
            prior_dc = torch.cat([engine.depth_condition(ex[k % len(ex)][1]) for k in range(s.prior_images)]).float()
            class_emb = _text(engine, class_prompt, grad=False).float()

    # trainable parameters
    params: list[dict] = []
    vectors: list[torch.Tensor] = []
    hooks = None
    if s.method in ("ti", "custom"):
        for tok, enc in _encoders(m):
            ids = _word_ids(tok, word)
            table = enc.get_input_embeddings().weight
            vectors.append(table[torch.tensor(ids, device=table.device)].detach().float().clone().requires_grad_(True))
        params.append({"params": vectors, "lr": s.token_lr})
        hooks = _WordHooks(m, [(word, vectors)])
    name = "lock-train"
    targets = _TARGETS.get(s.method, ())
    unet = m.unet
    adapter_params: list[torch.Tensor] = []
    was_training = unet.training
    if targets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            unet.add_adapter(_lora_config(s.rank, targets), adapter_name=name)
        unet.set_adapters(([] if not m.lora else ["handles"]) + [name])
        for n, p in unet.named_parameters():
            if f".{name}." in n:
                p.data = p.data.float()
                p.requires_grad_(True)
                adapter_params.append(p)
            else:
                p.requires_grad_(False)
        params.append({"params": adapter_params, "lr": s.lr})
    opt = torch.optim.AdamW(params, weight_decay=0.0)
    clock = ProgressClock(s.steps)
    n = lat.shape[0]
    losses: list[float] = []
    fixed_emb = None if vectors else _text(engine, train_prompt, grad=False).float()
    try:
        for step in range(s.steps):
            if token is not None:
                token.check()
            idx = torch.randint(n, (s.batch,), generator=g)
            t = torch.randint(20, 980, (s.batch,), generator=g)
            noise = torch.randn((s.batch, *lat.shape[1:]), generator=g)
            a = ac[t].view(-1, 1, 1, 1).cpu()
            x0 = lat[idx]
            zt = (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(engine.device)
            emb = _text(engine, train_prompt, grad=True).float() if vectors else fixed_emb
            assert emb is not None
            pred = _predict(engine, zt, dcs[idx].to(engine.device), t, emb.expand(s.batch, -1, -1))
            target = _target(engine, x0.to(engine.device), noise.to(engine.device), a.to(engine.device))
            w = cells[idx]
            loss = (((pred - target) ** 2).mean(1, keepdim=True) * w).sum() / w.sum().clamp(min=1.0)
            if prior_lat is not None and prior_dc is not None and class_emb is not None:
                j = torch.randint(prior_lat.shape[0], (s.batch,), generator=g)
                tp = torch.randint(20, 980, (s.batch,), generator=g)
                npr = torch.randn((s.batch, *prior_lat.shape[1:]), generator=g)
                ap = ac[tp].view(-1, 1, 1, 1).cpu()
                zp = (ap.sqrt() * prior_lat[j] + (1 - ap).sqrt() * npr).to(engine.device)
                pp = _predict(engine, zp, prior_dc[j].to(engine.device), tp, class_emb.expand(s.batch, -1, -1))
                tgt = _target(engine, prior_lat[j].to(engine.device), npr.to(engine.device), ap.to(engine.device))
                loss = loss + s.prior_weight * ((pp - tgt) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for grp in params for p in grp["params"]], 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if (step + 1) % 5 == 0 or step + 1 == s.steps:
                emit(
                    Progress(stage="learning", step=step + 1, total=s.steps, eta_s=clock.eta(step + 1), message=f"locking '{word}' ({METHOD_LABELS[s.method]})")
                )
        adapter: dict[str, torch.Tensor] = {}
        if targets:
            from peft import get_peft_model_state_dict

            adapter = {k: v.detach().cpu().float() for k, v in get_peft_model_state_dict(unet, adapter_name=name).items()}
    finally:
        if hooks is not None:
            hooks.remove()
        if targets:
            unet.delete_adapters([name])
        unet.requires_grad_(False)
        unet.train(was_training)
        for _tok, enc in _encoders(m):
            enc.requires_grad_(False)
    seconds = time.monotonic() - t_start
    counts = {k: int(v - counts0.get(k, 0)) for k, v in engine.counts.items() if v - counts0.get(k, 0)}
    info = {
        "method": s.method,
        "settings": asdict(s),
        "seconds": round(seconds, 2),
        "evaluations": counts,
        "crops": len(ex),
        "views": len(views),
        "loss_first": round(float(np.mean(losses[: max(1, len(losses) // 10)])), 5),
        "loss_last": round(float(np.mean(losses[-max(1, len(losses) // 10) :])), 5),
        "prompt": train_prompt,
    }
    return IdentityLock(
        method=s.method,
        word=word,
        object_id=object_id,
        model=model_name,
        vectors=[v.detach().cpu() for v in vectors],
        adapter=adapter,
        rank=s.rank if targets else 0,
        targets=tuple(targets),
        info=info,
    )


def _predict(engine, zt: torch.Tensor, dcond: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The model's output for a training batch with per-sample timesteps, through the engine's one
    UNet call (counted as one forward+backward per crop)."""
    return engine.unet(zt, dcond, t, emb, None, kind="forward_backward", n=int(zt.shape[0]))


def _target(engine, x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    if engine.prediction_type == "v_prediction":
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    if engine.prediction_type == "sample":
        return x0
    return noise
