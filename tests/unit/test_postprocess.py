import numpy as np
import pytest

from petseg_jax.data import position
from petseg_jax.inference.postprocess import (body_box, largest_connected_component,
                                              outside_position_ranges, position_ranges,
                                              signal_region, single_component_ids)


def _labels(dtype):
    labels = np.zeros((12, 10, 8), dtype=dtype)
    labels[0:2, 0:2, 0:2] = 1  # organ 1: large component (8 voxels)
    labels[8, 8, 6] = 1  # organ 1: stray voxel
    labels[5, 5, 5] = 2  # organ 2: two voxels touching only at a corner (26-connected)
    labels[6, 6, 6] = 2
    labels[10, 0, 0] = 3  # organ 3: two separate voxels
    labels[0, 9, 7] = 3
    return labels


@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_keeps_largest_component_per_organ(dtype):
    labels = _labels(dtype)
    out = largest_connected_component(labels)
    assert out.dtype == dtype and out.shape == labels.shape
    assert out[8, 8, 6] == 0 and (out[0:2, 0:2, 0:2] == 1).all()
    assert out[5, 5, 5] == 2 and out[6, 6, 6] == 2  # corner contact keeps them together
    assert (out == 3).sum() == 1  # tie: one of the two is kept
    assert out[10, 0, 0] == 0 and out[0, 9, 7] == 3  # the first in C scan order survives
    assert (labels == _labels(dtype)).all()  # input untouched


def test_only_listed_ids_are_processed():
    labels = _labels(np.uint8)
    out = largest_connected_component(labels, label_ids=[3, 7])
    assert out[8, 8, 6] == 1  # organ 1 not listed: untouched
    assert (out == 3).sum() == 1


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="integer"):
        largest_connected_component(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="3-D"):
        largest_connected_component(np.zeros((2, 2), np.uint8))


def test_single_component_ids():
    assert single_component_ids([{"1": 1, "2": 2}, {"1": 1, "4": 1}]) == [1, 4]
    assert single_component_ids([{"1": 1}, None]) is None
    assert single_component_ids([]) == []


def test_signal_region_fills_enclosed_cold_voxels_only():
    image = np.zeros((12, 12, 12), np.float32)
    image[2:10, 2:10, 2:10] = 1.0  # the body
    image[4:6, 4:6, 4:6] = 0.0  # an enclosed cold cavity (a lung at ultra-low dose)
    image[2:4, 8, 8] = 0.0  # a notch open to the air
    image[0, 0, 0] = -0.5  # negative values carry no activity either
    region = signal_region(image)
    assert region[4:6, 4:6, 4:6].all()  # enclosed: filled
    assert not region[2:4, 8, 8].any()  # open to the outside: not signal
    assert not region[0, 0, 0] and not region[11].any()
    assert region.sum() == 8 ** 3 - 2
    assert signal_region(np.ones((4, 4, 4))).all()  # no exact zeros: the whole volume
    with pytest.raises(ValueError, match="3-D"):
        signal_region(np.ones((4, 4)))


def test_position_ranges_span_the_training_cases_plus_a_margin():
    def case(shape, locations):
        return {"shape": shape, "spacing": [10.0, 10.0, 10.0],
                "class_locations": {k: v for k, v in locations.items()}}
    # organ 1 at voxels 2..4 of a 10^3 scan and 5..7 of a 12^3 scan; organ 2 absent in one
    cases = [case([10, 10, 10], {"1": [[2, 2, 2], [4, 4, 4]], "2": [[5, 5, 5]]}),
             case([12, 12, 12], {"1": [[5, 5, 5], [7, 7, 7]], "2": []})]
    ranges = position_ranges(cases, margin_mm=10.0)
    assert set(ranges) == {1, 2}
    # positions (m): (2 - 4.5) * 0.01 = -0.025 .. (7 - 5.5) * 0.01 = 0.015, then +-0.01
    np.testing.assert_allclose(ranges[1], [[-0.035] * 3, [0.025] * 3], atol=1e-9)
    np.testing.assert_allclose(ranges[2], [[-0.005] * 3, [0.015] * 3], atol=1e-9)


def test_outside_position_ranges_drops_only_far_voxels_of_listed_organs():
    shape, spacing = (10, 8, 6), (10.0, 10.0, 10.0)
    pos = position.volume_position(shape, spacing)
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 2:5, 1:3] = 1  # organ 1 near the low-x end
    labels[8, 6, 5] = 1  # a stray organ-1 voxel at the far corner
    labels[9, 0, 0] = 2  # organ 2 has no range: untouched
    low = pos[1, 2, 1] - 0.004
    high = pos[3, 4, 2] + 0.004
    out = outside_position_ranges(labels, spacing, {"1": [low.tolist(), high.tolist()]})
    assert out[8, 6, 5] == 0 and out[9, 0, 0] == 2
    np.testing.assert_array_equal(out[1:4, 2:5, 1:3], 1)
    assert (out == 1).sum() == 3 * 3 * 2
    assert labels[8, 6, 5] == 1  # the input is not changed


def test_body_box_keeps_body_parts_and_ignores_noise_in_the_air():
    x = np.zeros((40, 36, 30), np.float32)
    x[12:22, 10:18, 4:26] = 1.0  # the trunk
    x[30:33, 12:15, 10:13] = 1.0  # a detached hand: 27 voxels, >= 1 % of the trunk
    x[2, 30, 2] = x[38, 2, 28] = 0.5  # single-voxel noise: above threshold after smoothing
    kw = {"threshold": 0.02, "sigma_voxels": 1.0, "min_component_fraction": 0.01}
    # the smoothed image passes 0.02 two voxels beyond an edge, then the margin
    assert body_box(x, margin_voxels=0, **kw) == ((10, 35), (8, 20), (2, 28))
    assert body_box(x, margin_voxels=3, **kw) == ((7, 38), (5, 23), (0, 30))  # inside the volume
    assert body_box(x, margin_voxels=0, **kw | {"min_component_fraction": 0.5}) == (
        (10, 24), (8, 20), (2, 28))  # the trunk alone
    assert body_box(np.zeros((5, 5, 5)), margin_voxels=2, **kw) is None
