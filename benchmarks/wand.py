"""Magic wand benchmark: IoU of one click per object against the exact mask, and the cost of a click.

``python -m benchmarks.wand`` (``--no-photogen`` to skip the real photos, ``--seeds N`` world
scenes). One click per object at its *inmost* pixel (the maximum of the distance transform of
its exact mask: "the middle of the object"), with :data:`core.selection.COLOR_WAND` (the
editor's defaults before the object wand), the crease-aware "Surfaces" mode of the editor and
:data:`core.selection.OBJECT_WAND`. Scenes:

* the sample scene and held-out world scenes (``core.world.random_layout`` from
  ``HELD_OUT_SEED``; exact depth and masks, 640x448);
* the photogen photos in ``../shared/photogen`` (Diffusion Handles format: estimated depth, one
  ground-truth object mask each), skipped with a message when the folder is absent.

Prints a table per object (IoU) and the means (and the mean precision on photogen), then the
milliseconds (wall and CPU) of one click at 512 x 512 on random data (the speed test's case).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from core import selection as sel

REPO = Path(__file__).resolve().parents[1]
PHOTOGEN = REPO.parent / "shared" / "photogen"

#: the editor's "Surfaces" mode (editor.main_window.set_wand_surfaces on the colour defaults)
SURFACES: sel.WandOptions = {**sel.COLOR_WAND, "normal_tol": 20.0, "color_smooth": 0.0, "color_tol": None, "crease_color_tol": 20.0}
CONFIGS: dict[str, sel.WandOptions] = {"colour": sel.COLOR_WAND, "surfaces": SURFACES, "object": sel.OBJECT_WAND}


def inmost_seed(mask: np.ndarray) -> tuple[float, float]:
    inner = ndimage.distance_transform_edt(mask)
    i, j = np.unravel_index(int(np.argmax(np.asarray(inner))), mask.shape)
    return (float(j) + 0.5, float(i) + 0.5)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(int((a | b).sum()), 1))


def world_cases(n_seeds: int):
    """(scene, object, photo, depth, mask) of the sample and ``n_seeds`` held-out world scenes."""
    from core.sample import sample_scene
    from core.world import HELD_OUT_SEED, random_layout, render_layout

    s = sample_scene()
    for o in s.objects:
        yield "sample", o.name, s.photo, s.depth, o.mask
    for k in range(n_seeds):
        r = render_layout(random_layout(HELD_OUT_SEED + k), 640, 448)
        for name, m in r.masks.items():
            if m.sum() >= 50:  # an object hidden behind another one: nothing to click
                yield f"world {k}", name, r.photo, r.depth, m


def photogen_cases():
    from core.dhformat import load_dh_scene

    for d in sorted(p for p in PHOTOGEN.iterdir() if (p / "input.png").is_file()):
        sc = load_dh_scene(d)
        yield d.name, "object", sc.photo, sc.depth, sc.objects[0].mask


def table(cases, title: str) -> None:
    names = list(CONFIGS)
    print(f"\n{title}: IoU of one click at the object's inmost pixel")
    print(f"{'scene':16s} {'object':12s} " + " ".join(f"{n:>9s}" for n in names))
    ious: dict[str, list[float]] = {n: [] for n in names}
    prec: dict[str, list[float]] = {n: [] for n in names}
    for scene, obj, photo, depth, mask in cases:
        seed = inmost_seed(mask)
        row = []
        for n, kw in CONFIGS.items():
            m = sel.magic_wand(photo, depth, seed, **kw)
            ious[n].append(iou(m, mask))
            prec[n].append(float((m & mask).sum() / max(int(m.sum()), 1)))
            row.append(ious[n][-1])
        print(f"{scene:16s} {obj:12s} " + " ".join(f"{v:9.2f}" for v in row))
    print(f"{'mean IoU':29s} " + " ".join(f"{np.mean(ious[n]):9.3f}" for n in names))
    print(f"{'mean precision':29s} " + " ".join(f"{np.mean(prec[n]):9.3f}" for n in names))


def speed() -> None:
    """Wall and CPU (process) time of one click: on a shared machine the CPU time is the cost."""
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    depth = (3.0 + rng.random((512, 512))).astype(np.float32)
    print("\nms per click at 512 x 512 (random photo and depth), median (min) of 7")
    print(f"{'':10s} {'wall':>15s} {'cpu':>15s}")
    for n, kw in CONFIGS.items():
        sel.magic_wand(photo, depth, (100, 100), **kw)
        wall, cpu = [], []
        for _ in range(7):
            t, c = time.perf_counter(), time.process_time()
            sel.magic_wand(photo, depth, (100, 100), **kw)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        print(f"{n:10s} " + " ".join(f"{1000 * statistics.median(v):7.1f} ({1000 * min(v):5.1f})" for v in (wall, cpu)))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seeds", type=int, default=12, help="held-out world scenes (default 12)")
    ap.add_argument("--no-photogen", action="store_true", help="skip the photogen photos")
    ap.add_argument("--no-speed", action="store_true", help="skip the timing")
    args = ap.parse_args()
    table(world_cases(args.seeds), "sample + world scenes (exact depth)")
    if args.no_photogen:
        pass
    elif PHOTOGEN.is_dir():
        table(photogen_cases(), "photogen photos (estimated depth)")
    else:
        print(f"\nphotogen photos not found at {PHOTOGEN}: skipped")
    if not args.no_speed:
        speed()


if __name__ == "__main__":
    main()
