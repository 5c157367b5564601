"""The layer rules of ARCHITECTURE.md as failing checks."""

from __future__ import annotations

import ast
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
        "import core.scene, core.camera, core.transform, core.jobs, core.cli, core.request, core.logs",
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


def _uses_open3d_visualization(source: str) -> bool:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.startswith("open3d.visualization") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("open3d.visualization"):
                return True
            if node.module == "open3d" and any(a.name == "visualization" for a in node.names):
                return True
        if isinstance(node, ast.Attribute) and node.attr == "visualization":
            return True
    return False


def test_core_never_uses_open3d_visualization():
    # import-linter cannot forbid a subpackage of an external package, so read the code (not the prose).
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "core").rglob("*.py") if _uses_open3d_visualization(p.read_text(encoding="utf-8"))]
    assert not offenders, f"core draws with Open3D (only geometry is allowed there): {offenders}"


def test_visualization_check_can_fail():
    assert _uses_open3d_visualization("import open3d as o3d\no3d.visualization.draw([])")
    assert _uses_open3d_visualization("from open3d.visualization import rendering")
    assert not _uses_open3d_visualization('"""never uses open3d.visualization"""\nimport open3d')
