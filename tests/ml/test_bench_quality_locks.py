"""The lock table's own measures (benchmarks/quality.py): the neutral caption and the colour agreement."""

from __future__ import annotations

import numpy as np

from benchmarks.quality import color_agreement, neutral_caption
from core.world import SAMPLE_LAYOUT


def test_the_neutral_caption_names_the_objects_not_their_looks():
    cap = neutral_caption(SAMPLE_LAYOUT)
    assert cap == "a box, a beach ball and a cylinder on a tiled floor in front of a wall"
    for word in ("red", "blue", "green", "checkered", "striped"):
        assert word not in cap


def test_colour_agreement_is_a_histogram_intersection():
    a = np.zeros((4, 4, 3), np.uint8)
    region = np.ones((4, 4), bool)
    assert color_agreement(a, a.copy(), region) == 1.0
    b = np.full((4, 4, 3), 255, np.uint8)
    assert color_agreement(a, b, region) == 0.0
    half = a.copy()
    half[:2] = 255  # half the pixels white: half the histogram agrees
    assert abs(color_agreement(a, half, region) - 0.5) < 1e-9
    assert np.isnan(color_agreement(a, b, np.zeros((4, 4), bool)))
