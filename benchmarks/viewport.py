"""Viewport frame time: the sample scene's point cloud (about 250k points) in the 3D view.

Run on a display (a virtual one is fine): ``scripts/with-display.sh .venv/bin/python -m benchmarks.viewport``
(``make bench-viewport``). Prints figures; it is not a timed test. Software GL (llvmpipe) when
there is no GPU.

Figures:
* draw: ``paintGL`` followed by ``glFinish`` (the GPU work of one frame, no compositing);
* frame: a full synchronous ``repaint()`` of the widget in its window, including Qt's compositing,
  then ``glFinish``;
* drag frame: the same while a gizmo drag changes the object's transform every frame (no buffer
  re-upload: the transform is a uniform).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

TARGET_MS = 40.0


def _scene(points: int):
    """The sample scene at the size whose cloud (pixels + the hole fill) is close to ``points``."""
    from core.sample import sample_scene

    # the fill adds the objects' pixels again: about 1.16 points per pixel in the sample scene
    ratio = 640 / 448
    h = int(round((points / 1.16 / ratio) ** 0.5 / 32)) * 32
    w = int(round(h * ratio / 32)) * 32
    return sample_scene(width=w, height=h)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=250_000, help="point budget of the cloud (default 250000)")
    ap.add_argument("--frames", type=int, default=40, help="repaints per measurement (median reported)")
    ap.add_argument("--size", default="960x640", help="viewport size WxH in pixels (default 960x640)")
    args = ap.parse_args(argv)
    vw, vh = (int(v) for v in args.size.lower().split("x"))

    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    from PySide6.QtWidgets import QApplication

    from viewport.view import PointCloudView

    app = QApplication.instance() or QApplication(sys.argv[:1])
    scene = _scene(args.points)
    view = PointCloudView(point_budget=args.points)
    view.resize(vw, vh)
    view.show()
    app.processEvents()
    t0 = time.perf_counter()
    view.set_scene(scene)
    build_ms = (time.perf_counter() - t0) * 1000.0
    view.grabFramebuffer()  # first frame: uploads the buffer, compiles shaders
    if view.gl_error() or view.context() is None or not view.context().isValid():
        print(f"viewport benchmark: no usable OpenGL context ({view.gl_error() or 'context creation failed'})", file=sys.stderr)
        return 1
    ctx = view.context()
    f = ctx.functions()
    renderer = f.glGetString(0x1F01)  # GL_RENDERER
    version = f.glGetString(0x1F02)  # GL_VERSION

    cpu: list[float] = []

    def draw_only() -> float:
        view.makeCurrent()
        t, c = time.perf_counter(), time.process_time()
        view.paintGL()
        f.glFinish()
        ms = (time.perf_counter() - t) * 1000.0
        cpu.append((time.process_time() - c) * 1000.0)
        view.doneCurrent()
        return ms

    def full_frame() -> float:
        t = time.perf_counter()
        view.repaint()
        app.processEvents()
        view.makeCurrent()
        f.glFinish()
        view.doneCurrent()
        return (time.perf_counter() - t) * 1000.0

    for _ in range(3):
        draw_only()
    cpu.clear()
    load0 = os.getloadavg()[0]
    draw = [draw_only() for _ in range(args.frames)]
    frame = [full_frame() for _ in range(args.frames)]

    # a drag: the selected object's transform changes every frame
    obj = scene.objects[0]
    view.set_selected(obj.id)
    from core.transform import Transform3D

    drag = []
    for i in range(args.frames):
        obj.transform = Transform3D.from_axis_angle((0, 1, 0), 2.0 * i, translation=(0.01 * i, 0.0, 0.0))
        view.refresh_object(obj.id)
        drag.append(full_frame())
    obj.transform = Transform3D()

    cloud = view.cloud()
    med = statistics.median
    print("Viewport benchmark (PointCloudView, software GL when no GPU)")
    print(f"  GL: {renderer} | {version}")
    print(f"  CPU cores: {os.cpu_count()} (load average {load0:.1f} at the start: other processes inflate wall times)")
    print(f"  viewport: {vw}x{vh}   scene: {scene.size[0]}x{scene.size[1]}")
    print(f"  points drawn: {cloud.count:,} (budget {args.points:,}, before downsampling {cloud.source_points:,})")
    print(f"  cloud build (lift + fill + Open3D + bounds): {build_ms:.0f} ms")
    print(f"  draw (paintGL + glFinish), median of {args.frames}: {med(draw):.1f} ms   (min {min(draw):.1f}, max {max(draw):.1f})")
    print(f"  draw CPU time (all threads of this process, llvmpipe included), median: {med(cpu):.1f} ms")
    print(f"  frame (repaint + compositing + glFinish), median: {med(frame):.1f} ms   (min {min(frame):.1f}, max {max(frame):.1f})")
    print(f"  frame during a drag (selection + gizmo), median: {med(drag):.1f} ms")
    ok = med(frame) <= TARGET_MS
    print(f"  target <= {TARGET_MS:.0f} ms per frame: {'met' if ok else 'NOT met'}")
    view.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
