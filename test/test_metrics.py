# SPDX-License-Identifier: Apache-2.0
"""Error breakdown of bench/eval_model.py --breakdown: label-edge band vs interior, depth by
distance."""

from __future__ import annotations

import numpy as np
import pytest

from edgemoe_ros.model.config import IGNORE_INDEX
from edgemoe_ros.training.metrics import DEPTH_BIN_EDGES, ErrorBreakdown, boundary_band


def _two_regions() -> np.ndarray:
    labels = np.zeros((1, 12, 16), dtype=np.uint8)
    labels[:, :, 8:] = 2  # one vertical edge between columns 7 and 8
    return labels


def test_boundary_band_marks_pixels_within_radius_of_another_label():
    labels = _two_regions()
    for radius in (1, 2, 3):
        band = boundary_band(labels, radius)
        cols = np.flatnonzero(band[0].any(0))
        assert cols.tolist() == list(range(8 - radius, 8 + radius))
        assert band[0, :, cols].all()  # whole columns, image borders do not count as edges
    assert not boundary_band(labels, 0).any()
    diag = np.zeros((9, 9), dtype=np.uint8)
    diag[4, 4] = 1
    assert boundary_band(diag, 2).sum() == 25  # Chebyshev: a 5x5 square around a single pixel


def test_ignored_pixels_form_edges_too():
    labels = np.zeros((7, 7), dtype=np.uint8)
    labels[3, 3] = IGNORE_INDEX
    assert boundary_band(labels, 1).sum() == 9


def test_errors_only_at_the_edge_leave_the_interior_perfect():
    labels = _two_regions()
    pred = labels.copy()
    pred[:, :, 7] = 2  # the column left of the edge predicted as the right-hand class
    depth = np.where(labels == 0, 5.0, 30.0).astype(np.float32)
    pred_depth = depth.copy()
    pred_depth[:, :, 7] = 30.0  # and given the far side's depth
    b = ErrorBreakdown(num_classes=3, max_depth=80.0, radius=1)
    b.add(pred, pred_depth, labels, depth)
    s = b.summary()
    assert s["interior"]["miou"] == pytest.approx(1.0)
    assert s["interior"]["delta1"] == pytest.approx(1.0)
    assert s["band"]["pixel_share"] == pytest.approx(2 / 16)
    assert s["band"]["iou"]["flat"] == pytest.approx(0.0)  # the only flat band column is wrong
    assert s["band"]["delta1"] == pytest.approx(0.5)
    assert s["wrong_pixels_in_band"] == pytest.approx(1.0)
    assert (
        s["band_share"]["flat"] == pytest.approx(1 / 8)
        and s["band_share"]["vehicle"] == pytest.approx(1 / 8)
    )
    bins = s["depth_bins"]
    assert (
        list(bins) == ["0-10 m", "10-20 m", "20-40 m", "40-80 m"]
        and len(bins) == len(DEPTH_BIN_EDGES) + 1
    )
    assert bins["0-10 m"]["pixels"] == 12 * 8 and bins["20-40 m"]["pixels"] == 12 * 8
    assert bins["0-10 m"]["delta1"] == pytest.approx(7 / 8)  # column 7 is 6x too far
    assert bins["20-40 m"]["delta1"] == pytest.approx(1.0) and bins["10-20 m"]["pixels"] == 0
