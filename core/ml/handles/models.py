"""Loading a depth-conditioned diffusion model from disk, in one of three backends.

``sd2-depth``: the StableDiffusionDepth2ImgPipeline layout: ``unet/`` (UNet2DConditionModel, 4
latent + 1 depth input channels), ``vae/`` (AutoencoderKL), ``text_encoder/`` (CLIPTextModel),
``tokenizer/`` (CLIPTokenizer) and optionally ``scheduler/`` (also the bundled world model).
``sd15-controlnet``: an SD 1.x folder (4-channel UNet) plus a depth ControlNetModel, either the
folder's own ``controlnet/`` (what StableDiffusionControlNetPipeline.save_pretrained writes) or a
separate ControlNet folder (``controlnet=``, e.g. ``lllyasviel/control_v11f1p_sd15_depth``).
``sdxl-controlnet``: an SDXL folder (UNet with ``addition_embed_type="text_time"``, plus
``text_encoder_2/`` CLIPTextModelWithProjection and ``tokenizer_2/``) plus a depth ControlNet.

A folder may be a plain folder or a Hugging Face cache snapshot, with full-precision weights or
only the ``fp16`` variant files. Components are loaded one by one with ``local_files_only=True``
(no pipeline class, no depth estimator is instantiated). :func:`set_lora` loads a LoRA file
(few-step LCM / Hyper-SD / TCD) into the loaded UNet through diffusers' PEFT adapters. The scheduler is always DDIM with the reference's schedule
(scaled-linear betas 0.00085-0.012, no clipping, ``set_alpha_to_one=False``, offset 0), keeping
the folder's ``prediction_type``.

Loaded models are cached per (folder, device, dtype); :func:`unload` frees them.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelError

DEFAULT_MODEL = "stable-diffusion-2-depth"
DEFAULT_REPO = "stabilityai/stable-diffusion-2-depth"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer")
#: the backends (see the module docstring)
BACKENDS = ("sd2-depth", "sd15-controlnet", "sdxl-controlnet")

_lock = threading.RLock()


@dataclass
class HandlesModels:
    """The loaded components plus where they live."""

    path: Path
    model_id: str
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    device: Any  # torch.device
    dtype: Any  # torch.dtype of the UNet / VAE / text encoder
    extras: dict = field(default_factory=dict)
    #: one of :data:`BACKENDS`
    backend: str = "sd2-depth"
    controlnet: Any = None
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    #: the LoRA file loaded into the UNet ("" when none; see :func:`set_lora`)
    lora: str = ""

    @property
    def vae_dtype(self):
        """The VAE's own dtype (SDXL's VAE stays fp32 under fp16: it overflows in half precision)."""
        return next(self.vae.parameters()).dtype

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))


# ----------------------------------------------------------------------------- resolution
def resolve_model(model: str | os.PathLike) -> Path:
    """A model name, repo id or folder -> its checked folder (:func:`core.ml.store.find_model`).

    Raises ModelError: missing -> the ``hf download`` command that fetches it; incomplete ->
    the component at fault.
    """
    from core.ml.store import find_model

    return Path(find_model(model, role="renderer"))


def pick_device(pref: str = "auto", dtype: str | None = None):
    """(torch.device, torch.dtype) for "auto"|"cpu"|"cuda"|"mps" and None|"fp32"|"fp16"|"bf16".

    Defaults as :func:`core.ml.device.pick_device`: fp16 on CUDA/MPS, fp32 on the CPU (bf16 opt-in).
    """
    import torch

    from core.ml.device import pick_device as _pick

    info = _pick(pref or "auto", dtype or "auto")
    return torch.device(info.torch_device), dtype_from_name(info.dtype)


def dtype_from_name(name):
    import torch

    table = {
        None: torch.float32,
        "auto": torch.float32,
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
        "half": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if isinstance(name, torch.dtype):
        return name
    if name not in table:
        raise ModelError(f"unknown precision {name!r} (use fp32, fp16 or bf16)")
    return table[name]


# ----------------------------------------------------------------------------- loading
def _component_error(folder: Path, name: str, exc: BaseException) -> ModelError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelError(f"model component '{name}' in {folder} cannot be loaded ({msg[:200]}); re-download the model")


_COMPONENT_TITLES = {"unet": "UNet", "vae": "VAE", "text_encoder": "text encoder"}


def _weights_file(folder: Path, name: str) -> str:
    """``name/<weights file>`` relative to the model folder (for messages), or just ``name/``."""
    d = folder / name
    for suffix in (".safetensors", ".bin"):
        files = sorted(p.name for p in d.glob(f"*{suffix}")) if d.is_dir() else []
        if files:
            return f"{name}/{files[0]}"
    return f"{name}/"


def _check_weights_loaded(folder: Path, name: str, module: Any) -> None:
    """Refuse a module whose weights file left parameters unset (still on the meta device).

    from_pretrained does not fail when the file holds another component's tensors (e.g. the VAE's
    weights copied over the UNet's): the missing ones stay meta tensors and fail later, obscurely.
    """
    if not hasattr(module, "parameters"):  # the tokenizer
        return
    try:
        tensors = list(module.parameters()) + list(module.buffers())
    except (AttributeError, TypeError, RuntimeError):  # pragma: no cover - not a torch module
        return
    if any(getattr(t, "is_meta", False) for t in tensors):
        title = _COMPONENT_TITLES.get(name, name)
        raise ModelError(
            f"model {folder}: {_weights_file(folder, name)} does not hold {title} weights (they look like another component's); fetch the model again"
        )


def _make_scheduler(folder: Path):
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    prediction_type = "epsilon"
    zero_snr, spacing = False, "leading"
    cfg_file = folder / "scheduler" / "scheduler_config.json"
    if cfg_file.is_file():
        import json

        try:
            cfg = json.loads(cfg_file.read_text())
            prediction_type = cfg.get("prediction_type", "epsilon") or "epsilon"
            # SD2's betas rescaled to a zero terminal SNR, sampled from t = 999 (Lin et al. 2024)
            zero_snr = bool(cfg.get("rescale_betas_zero_snr", False))
            spacing = "trailing" if cfg.get("timestep_spacing") == "trailing" else "leading"
        except (OSError, ValueError, AttributeError) as exc:
            raise _component_error(folder, "scheduler", exc) from exc
    return DDIMScheduler(
        rescale_betas_zero_snr=zero_snr,
        timestep_spacing=spacing,
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=0,
        prediction_type=prediction_type,
    )


def load_models(
    model: str | os.PathLike = DEFAULT_MODEL, device: str = "auto", dtype: str | None = None, controlnet: str | os.PathLike | None = None
) -> HandlesModels:
    """Load (or fetch from the cache) the components of a depth-conditioned SD model folder.

    ``device``: "auto"|"cpu"|"cuda"|"mps"; ``dtype``: None (fp16 on GPUs, fp32 on CPU), "fp32",
    "fp16" or "bf16" (opt-in on CPU). ``controlnet``: the folder of a depth ControlNetModel for a
    model whose UNet takes no depth channel (SD 1.5, SDXL) and whose folder has no ``controlnet/``.
    A missing or unreadable component is a ModelError naming it.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = resolve_model(model)
    cn = Path(controlnet) if controlnet else None
    dev, dt = pick_device(device, dtype)
    from core.ml.device import MODEL_CACHE

    key = ("renderer", str(folder.resolve()), str(dev), str(dt), str(cn.resolve()) if cn else "")
    with _lock:
        if key not in MODEL_CACHE:
            # one diffusion model at a time: a new one frees the old (each is several GB)
            unload()
        return MODEL_CACHE.get(key, lambda: _load_uncached(folder, str(model), dev, dt, cn))


def weights_variant(component: Path) -> str | None:
    """``"fp16"`` when a component folder holds only fp16 variant weights (``*.fp16.safetensors``,
    as the mirrors' fp16 fetch commands download), else None (its plain weights file)."""
    if not component.is_dir():
        return None
    names = [p.name for p in component.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
    plain = [n for n in names if ".fp16." not in n]
    return "fp16" if names and not plain else None


def _backend_of(folder: Path, unet_config, controlnet: Path | None) -> str:
    has_cn = controlnet is not None or (folder / "controlnet").is_dir()
    if getattr(unet_config, "addition_embed_type", None) == "text_time":
        if not (folder / "text_encoder_2").is_dir() or not (folder / "tokenizer_2").is_dir():
            raise ModelError(f"model folder {folder} is an SDXL model without text_encoder_2/ or tokenizer_2/; re-download the model")
        return "sdxl-controlnet"
    return "sd15-controlnet" if has_cn else "sd2-depth"


def _load_uncached(folder: Path, model_id: str, dev, dt, controlnet: Path | None = None) -> HandlesModels:
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    for name in COMPONENTS:
        if not (folder / name).is_dir():
            raise ModelError(
                f"model folder {folder} has no '{name}' component (expected the StableDiffusionDepth2ImgPipeline "
                f"layout: {', '.join(COMPONENTS)}); re-download the model"
            )
    if controlnet is not None and not controlnet.is_dir():
        raise ModelError(f"depth ControlNet folder {controlnet} does not exist; fetch it (see `handles-studio models list`)")
    try:
        unet_config = UNet2DConditionModel.load_config(folder, subfolder="unet", local_files_only=True)
        if isinstance(unet_config, tuple):  # (config, unused kwargs) in some diffusers versions
            unet_config = unet_config[0]
    except Exception as exc:  # noqa: BLE001 - any unreadable config is the component's fault
        raise _component_error(folder, "unet", exc) from exc
    backend = _backend_of(folder, _Attrs(unet_config), controlnet)

    def var(name: str, base: Path = folder) -> dict:
        v = weights_variant(base / name)
        return {"variant": v} if v else {}

    loaders = {
        "unet": lambda: UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True, torch_dtype=dt, **var("unet")),
        # SDXL's VAE overflows in fp16 (its config says force_upcast): it stays fp32 then
        "vae": lambda: AutoencoderKL.from_pretrained(
            folder,
            subfolder="vae",
            local_files_only=True,
            torch_dtype=torch.float32 if backend == "sdxl-controlnet" and dt == torch.float16 else dt,
            **var("vae"),
        ),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True, dtype=dt, **var("text_encoder")),
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True),
    }
    if backend == "sdxl-controlnet":
        loaders["text_encoder_2"] = lambda: CLIPTextModelWithProjection.from_pretrained(
            folder, subfolder="text_encoder_2", local_files_only=True, dtype=dt, **var("text_encoder_2")
        )
        loaders["tokenizer_2"] = lambda: CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2", local_files_only=True)
    if backend != "sd2-depth":
        from diffusers.models.controlnets.controlnet import ControlNetModel

        if controlnet is not None:
            loaders["controlnet"] = lambda: ControlNetModel.from_pretrained(controlnet, local_files_only=True, torch_dtype=dt, **var(".", controlnet))
        else:
            loaders["controlnet"] = lambda: ControlNetModel.from_pretrained(
                folder, subfolder="controlnet", local_files_only=True, torch_dtype=dt, **var("controlnet")
            )
    loaded: dict[str, Any] = {}
    try:  # no per-shard progress bars on the terminal: the engine reports its own progress
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
        dlog.disable_progress_bar()
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    quiet = [logging.getLogger(n) for n in ("diffusers", "transformers")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        for name, fn in loaders.items():
            try:
                loaded[name] = fn()
            except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise _component_error(folder, name, exc) from exc
            except Exception as exc:  # safetensors' own errors, NotImplementedError and the like
                raise _component_error(folder, name, exc) from exc
            _check_weights_loaded(folder, name, loaded[name])
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    unet = loaded["unet"]
    vae = loaded["vae"]
    in_ch = int(unet.config.in_channels)
    lat_ch = int(vae.config.latent_channels)
    if backend == "sd2-depth" and in_ch != lat_ch + 1:
        raise ModelError(
            f"model {folder} is not depth-conditioned: its UNet takes {in_ch} input channels, expected "
            f"{lat_ch + 1} ({lat_ch} latent + 1 depth) as sd2-depth has, or a depth ControlNet next to it "
            "(sd15-depth-controlnet, sdxl-depth-controlnet in `handles-studio models list`)"
        )
    if backend != "sd2-depth" and in_ch != lat_ch:
        raise ModelError(f"model {folder}: its UNet takes {in_ch} input channels, a ControlNet base model takes {lat_ch} (the latent)")
    if len(unet.up_blocks) < 3:
        raise ModelError(f"model {folder}: UNet has {len(unet.up_blocks)} up blocks; Diffusion Handles needs the SD layout")
    for name in [n for n in ("unet", "vae", "text_encoder", "text_encoder_2", "controlnet") if n in loaded]:
        m = loaded[name]
        m.requires_grad_(False)
        m.eval()
        try:
            m.to(dev)
        except (NotImplementedError, RuntimeError, ValueError) as exc:  # e.g. "Cannot copy out of meta tensor"
            raise _component_error(folder, name, exc) from exc
    cn = loaded.get("controlnet")
    if cn is not None and int(cn.config.cross_attention_dim) != int(unet.config.cross_attention_dim):
        where = controlnet or folder / "controlnet"
        raise ModelError(
            f"depth ControlNet {where} does not fit the model {folder} (cross-attention {cn.config.cross_attention_dim} vs "
            f"{unet.config.cross_attention_dim}): use the ControlNet made for this base model"
        )
    scheduler = _make_scheduler(folder)
    extras: dict = {}
    rgb_file = folder / "vae" / "latent_rgb.json"
    if rgb_file.is_file():  # the model's own linear latent -> RGB map for step previews
        import json

        try:
            d = json.loads(rgb_file.read_text(encoding="utf-8"))
            m, b = np.asarray(d["matrix"], np.float32), np.asarray(d["bias"], np.float32)
            if m.shape == (lat_ch, 3) and b.shape == (3,):
                extras["latent_rgb"] = (m, b)
        except (OSError, ValueError, KeyError, TypeError):
            logging.getLogger(__name__).warning("ignoring unreadable %s", rgb_file)
    return HandlesModels(
        path=folder,
        model_id=model_id,
        unet=unet,
        vae=vae,
        text_encoder=loaded["text_encoder"],
        tokenizer=loaded["tokenizer"],
        scheduler=scheduler,
        device=dev,
        dtype=dt,
        extras=extras,
        backend=backend,
        controlnet=cn,
        text_encoder_2=loaded.get("text_encoder_2"),
        tokenizer_2=loaded.get("tokenizer_2"),
    )


class _Attrs:
    """A config dict read as attributes (``load_config`` returns a plain dict)."""

    def __init__(self, d: dict) -> None:
        self._d = d

    def __getattr__(self, name: str):
        return self._d.get(name)


def set_lora(models: HandlesModels, path: str | os.PathLike | None, scale: float = 1.0) -> None:
    """Load the LoRA file ``path`` (a ``.safetensors`` file, or a folder holding
    ``pytorch_lora_weights.safetensors``) into ``models.unet`` as the only active adapter; None or
    "" removes any. Keys in diffusers, PEFT or kohya naming (LCM-LoRA, Hyper-SD, TCD) are read by
    diffusers' own LoRA loader; no model code is forked. A file that does not fit the UNet is a
    ModelError and leaves the UNet without adapters."""
    want = str(Path(path).resolve()) if path else ""
    if want == models.lora:
        return
    unet = models.unet
    if models.lora:
        unet.delete_adapters(["handles"])
        models.lora = ""
    if not want:
        return
    p = Path(want)
    if p.is_dir():
        folder, weight = p, "pytorch_lora_weights.safetensors"
    else:
        folder, weight = p.parent, p.name
    if not (folder / weight).is_file():
        raise ModelError(f"LoRA file {folder / weight} does not exist; fetch it (see `handles-studio models list`)")
    try:
        from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin
    except ImportError as exc:  # pragma: no cover - peft missing
        raise ModelError(f"LoRAs need the peft package ({exc}); reinstall with `make venv`") from exc
    mixin = StableDiffusionXLLoraLoaderMixin if models.backend == "sdxl-controlnet" else StableDiffusionLoraLoaderMixin
    quiet = logging.getLogger("diffusers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        kw = {"unet_config": unet.config} if models.backend == "sdxl-controlnet" else {}
        loaded = mixin.lora_state_dict(str(folder), weight_name=weight, local_files_only=True, **kw)
        state, alphas = loaded[0], loaded[1]  # (+ metadata when asked for)
        if not any(k.startswith("unet.") for k in state):
            raise ValueError("it holds no UNet weights")
        mixin.load_lora_into_unet(state, alphas, unet, adapter_name="handles")
        unet.set_adapters(["handles"], weights=[float(scale)])
        unet.to(device=models.device, dtype=models.dtype)
        unet.requires_grad_(False)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a wrong or damaged file: one line, the UNet unchanged
        try:
            unet.delete_adapters(["handles"])
        except Exception:  # noqa: BLE001 - nothing was loaded
            pass
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"LoRA {folder / weight} does not fit this model ({msg[:200]}); use a LoRA made for its base model") from exc
    finally:
        quiet.setLevel(level)
    models.lora = want


def unload(model: str | os.PathLike | None = None) -> int:
    """Drop cached diffusion models (all, or those loaded from ``model``) and free their memory."""
    from core.ml.device import MODEL_CACHE

    if model is None:
        return MODEL_CACHE.unload(where=lambda k: isinstance(k, tuple) and k[:1] == ("renderer",))
    try:
        target = str(resolve_model(model).resolve())
    except ModelError:
        return 0
    return MODEL_CACHE.unload(where=lambda k: isinstance(k, tuple) and k[:2] == ("renderer", target))


def loaded_models() -> list[tuple]:
    """Keys ("renderer", folder, device, dtype) of the cached diffusion models."""
    from core.ml.device import MODEL_CACHE

    return [k for k in MODEL_CACHE.keys() if isinstance(k, tuple) and k[:1] == ("renderer",)]
