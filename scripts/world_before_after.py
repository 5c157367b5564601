"""Makes docs/world-before-after.png: the sample with the box moved, four ways side by side.

photo | geometric preview | Diffusion Handles with the bundled world model (default preset) |
ground truth (the world re-rendered with the box moved). Run: `.venv/bin/python scripts/world_before_after.py`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(out: Path) -> int:
    import numpy as np
    from PIL import Image, ImageDraw

    from core.ml.handles.renderer import DiffusionHandlesRenderer
    from core.preview import render_preview
    from core.sample import render_sample, sample_scene
    from core.transform import Transform3D
    from core.world import STAGE_TO_CAM

    scene = sample_scene()
    photo = scene.photo.copy()
    # the box slides 0.8 m to the right along the floor and turns by 40 degrees
    tr = Transform3D.from_axis_angle(tuple(STAGE_TO_CAM @ np.array([0.0, -1.0, 0.0])), 40.0, translation=tuple(STAGE_TO_CAM @ np.array([0.8, 0.0, -0.3])))
    scene.object("box").transform = tr
    preview = render_preview(scene).image
    from core.request import resolve_request
    from core.settings import Settings

    req = resolve_request(scene, {"preset": "default", "steps": 25}, Settings(device="cpu"))
    t0 = time.monotonic()
    rendered = DiffusionHandlesRenderer().render(scene, req).image
    secs = time.monotonic() - t0
    truth = render_sample({"box": tr}).photo
    tiles = [("photo", photo), ("geometric preview", preview), (f"Diffusion Handles, world model ({secs:.0f} s)", rendered), ("ground truth", truth)]
    w, h = photo.shape[1], photo.shape[0]
    sheet = Image.new("RGB", (2 * w, 2 * h + 2 * 22), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (label, img) in enumerate(tiles):
        x, y = (k % 2) * w, (k // 2) * (h + 22)
        draw.text((x + 6, y + 5), label, fill="black")
        sheet.paste(Image.fromarray(img), (x, y + 22))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"saved {out} (render {secs:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "world-before-after.png"))
