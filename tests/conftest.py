"""Shared fixtures: the photogen scenes, temporary folders, the GL requirement."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the tests' own helpers (tests/fakes.py) import as top-level modules
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the user's own settings (model folders, device) must never leak into a test, nor a test into
# them: every test and every command it runs reads an empty config folder unless it sets one
if "HANDLES_STUDIO_CONFIG_DIR" not in os.environ:
    import tempfile

    os.environ["HANDLES_STUDIO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="hs-test-config-")

REPO = Path(__file__).resolve().parents[1]
PHOTOGEN = Path(os.environ.get("HANDLES_PHOTOGEN", REPO.parent / "shared" / "photogen"))
ARTIFACTS = Path(os.environ.get("HANDLES_ARTIFACTS", REPO / "artifacts"))


def photogen_scenes() -> list[Path]:
    if not PHOTOGEN.is_dir():
        return []
    return sorted(p for p in PHOTOGEN.iterdir() if (p / "input.png").is_file())


@pytest.fixture
def photogen_dir() -> Path:
    if not PHOTOGEN.is_dir():
        pytest.skip(f"photogen scenes not found at {PHOTOGEN} (set HANDLES_PHOTOGEN or check out ../shared)")
    return PHOTOGEN


@pytest.fixture
def photogen_scene(photogen_dir) -> Path:
    """One real scene (car) in the Diffusion Handles format."""
    return photogen_dir / "car"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def gl_required() -> bool:
    """`make test` sets HANDLES_STUDIO_REQUIRE_GL=1: there a missing GL context is a failure, not a skip."""
    return os.environ.get("HANDLES_STUDIO_REQUIRE_GL") == "1"


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory):
    """The log file that the CLI and the editor open (core.logs.setup_logging) goes to a temporary
    folder, never the real home (subprocesses inherit the variable)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HANDLES_STUDIO_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        yield
