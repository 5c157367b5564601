"""`make bench-render` itself: every backend's benchmark runs through the engine (tiny
configurations of the real classes, each backend in a process of its own) and prints its tables.

The benchmark asserts inside that the shortened runs count exactly the evaluations the presets
declare; here the printed per-preset counts are checked against the schedules as documented
(default: 25 steps, the first 40 % skipped by the warp-then-refine start, guided until 80 %;
turbo: 8 steps at CFG 1, guided until 75 %)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_render_runs_every_backend_and_prints_the_tables():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-m", "benchmarks.render", "--tiny", "--threads", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    assert "cores | load average" in out  # the machine it ran on
    for backend in ("sd2-depth", "sd15-controlnet", "sdxl-controlnet"):
        rows = re.findall(rf"^  {backend}\s+(\d+)(\*?) \|", out, re.M)
        assert ("128", "") in rows and ("256", "*") in rows, (backend, rows)  # measured + estimated side
    # the ControlNet backends report the UNet alone, the ControlNet alone and both
    assert out.count("ControlNet ") >= 4 and "UNet + ControlNet (the engine's)" in out
    assert "few-step LoRA" in out
    counts = dict(re.findall(r"^    (\w+)\s+\d+ steps: (edit .*)$", out, re.M))
    assert re.fullmatch(r"edit\s+0\s+15\s+10\s+identity\s+25\s+25\s+0", counts["default"].strip()), counts
    assert re.fullmatch(r"edit\s+5\s+0\s+3\s+identity\s+16\s+0\s+0", counts["turbo"].strip()), counts
    assert re.fullmatch(r"edit\s+0\s+25\s+0\s+identity\s+25\s+25\s+0", counts["plain"].strip()), counts
    assert "=== targets ===" in out and "FAILED" not in out
