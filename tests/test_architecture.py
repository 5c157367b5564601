"""The layer rules of ARCHITECTURE.md as failing checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "huggingface_hub", "PySide6", "open3d.visualization")


def _modules_after(stmt: str) -> set[str]:
    code = f"import sys\n{stmt}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "stmt",
    [
        "import core",
        "import core.scene, core.camera, core.transform, core.jobs, core.cli",
        "import core.ml",
        "from core.cli import build_parser; build_parser()",
    ],
)
def test_core_import_is_light(stmt):
    mods = _modules_after(stmt)
    leaked = sorted(m for m in HEAVY if m in mods)
    assert not leaked, f"`{stmt}` imports {leaked}: core must stay light and Qt-free"


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed in this environment (make test installs it)"
    out = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_core_never_uses_open3d_visualization():
    # import-linter cannot forbid a subpackage of an external package, so read the sources.
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "core").rglob("*.py")
        if any(k in p.read_text(encoding="utf-8") for k in ("open3d.visualization", "o3d.visualization"))
    ]
    assert not offenders, f"core draws with Open3D (only geometry is allowed there): {offenders}"
