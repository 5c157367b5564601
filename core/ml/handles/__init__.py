"""The Diffusion Handles engine (Pandey et al., CVPR 2024) on a depth-conditioned Stable Diffusion.

Public API (torch and diffusers load lazily, on first use of the renderer):

* :class:`DiffusionHandlesRenderer` (``core.ml.handles.renderer``): implements
  :class:`core.jobs.Renderer`;
* ``PRESETS`` / :class:`HandlesSettings` (``core.ml.handles.presets``): "reference", "default",
  "fast", "draft";
* ``core.ml.handles.cli.register(subparsers)``: the ``render`` command.

Modules: ``presets`` (settings, pure Python), ``models`` (loading from disk, device and dtype),
``identity`` (inversion result + captured activations, serialisable), ``warping`` (moving
activations with the objects), ``engine`` (inversion, guidance energy, guided/injected DDIM,
decoding), ``renderer`` (the Renderer), ``cli``.
"""

from __future__ import annotations

from core.ml.handles.presets import PRESETS, HandlesSettings, preset

__all__ = ["PRESETS", "HandlesSettings", "preset", "DiffusionHandlesRenderer"]


def __getattr__(name: str):
    if name == "DiffusionHandlesRenderer":
        from core.ml.handles.renderer import DiffusionHandlesRenderer

        return DiffusionHandlesRenderer
    raise AttributeError(f"module 'core.ml.handles' has no attribute {name!r}")
