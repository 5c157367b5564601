"""Handles Studio core: scene model, geometry, previews, project files, jobs and CLI logic.

This package must stay light: importing it never imports torch, diffusers, transformers,
huggingface_hub, Qt or ``open3d.visualization``. Heavy machine-learning code lives in
``core.ml`` and imports its dependencies lazily inside functions.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
