"""Machine-learning services (depth estimation, segmentation, the Diffusion Handles engine).

Everything here imports torch, diffusers, transformers and huggingface_hub lazily, inside
functions, so that ``import core`` and ``import core.ml`` stay light.
"""

import os

#: the user's own HF_HUB_OFFLINE (None when unset), kept before the default below is applied:
#: ``handles-studio models download`` honours a user's offline mode but not our own default.
USER_HF_HUB_OFFLINE = os.environ.get("HF_HUB_OFFLINE")

# Never reach for a model hub at run time: models are loaded from disk only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
