"""The built-in sample scene: one scene of the procedural world (:mod:`core.world`).

A floor with a checker pattern and a back wall with planks, and three objects, ``"box"`` (red
checker), ``"sphere"`` (blue beach-ball segments) and ``"cylinder"`` (green with yellow stripes),
lit by a directional sun with cast shadows plus ambient light: :data:`core.world.SAMPLE_LAYOUT`,
ray cast exactly (depth and masks exact). Frames and units as in :mod:`core.world`: camera frame
(+X image-right, +Y image-down, +Z forward), metres; the camera is :class:`core.camera.Camera`
(55 degrees over the larger side).

Ground truth for moved objects: :func:`render_sample` moves each object about the pivot the scene
computes (``sample_scene(w, h).pivot(obj)``), the pivot the warp plan and the preview use.
"""

from __future__ import annotations

import numpy as np

from core.scene import Scene
from core.transform import Transform3D
from core.world import (  # noqa: F401 - re-exported constants of the stage
    AMBIENT,
    FLOOR_Y,
    PITCH_DEG,
    SAMPLE_LAYOUT,
    SKY_DEPTH,
    STAGE_TO_CAM,
    SUN_DIR,
    WALL_Z,
    check_size,
    layout_pivots,
    layout_scene,
    render_moved,
)
from core.world import (
    WorldRender as SampleRender,
)

OBJECT_NAMES = SAMPLE_LAYOUT.names
PROMPT = SAMPLE_LAYOUT.caption()

# object placement in the level stage frame (metres), as SAMPLE_LAYOUT has it
_BOX, _SPHERE, _CYL = (SAMPLE_LAYOUT.object(n) for n in ("box", "sphere", "cylinder"))
BOX_SIZE = _BOX.size[0]
BOX_CENTRE = (_BOX.x, FLOOR_Y - BOX_SIZE / 2, _BOX.z)
BOX_YAW_DEG = _BOX.yaw_deg
SPHERE_RADIUS = _SPHERE.size[0]
SPHERE_CENTRE = (_SPHERE.x, FLOOR_Y - SPHERE_RADIUS, _SPHERE.z)
CYL_RADIUS, CYL_HEIGHT = _CYL.size
CYL_CENTRE = (_CYL.x, FLOOR_Y - CYL_HEIGHT / 2, _CYL.z)


def sample_scene(width: int = 640, height: int = 448, fov_deg: float = 55.0) -> Scene:
    """The sample stage as a :class:`Scene` (photo, exact depth in metres, exact masks of the
    objects ``"box"``, ``"sphere"``, ``"cylinder"`` with identity transforms, a prompt).

    Default size 640x448 (non-square on purpose; multiples of 64). Each call returns a new Scene
    whose arrays may be edited freely.
    """
    w, h = check_size(width, height)
    return layout_scene(SAMPLE_LAYOUT, w, h, fov_deg, name="Sample")


def sample_pivots(width: int = 640, height: int = 448, fov_deg: float = 55.0) -> dict[str, np.ndarray]:
    """Pivot (3,) of each object, camera frame, metres: ``Scene.pivot`` of the identity render."""
    return layout_pivots(SAMPLE_LAYOUT, width, height, fov_deg)


def render_sample(transforms: dict[str, Transform3D] | None = None, width: int = 640, height: int = 448, fov_deg: float = 55.0) -> SampleRender:
    """Render the sample with objects moved: ``transforms`` maps object names to
    :class:`Transform3D` (camera frame, metres) applied about :func:`sample_pivots`; objects not
    named stay in place. Returns the exact photo, depth and masks of the moved scene."""
    return render_moved(SAMPLE_LAYOUT, transforms, width, height, fov_deg)
