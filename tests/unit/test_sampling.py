"""Patch sampling: foreground quota, uniform and exposure-weighted class choice, padding."""

import math

import numpy as np
import pytest

from petseg_jax.data.sampling import (PatchBox, box_slices, class_locations, crop,
                                      exposure_weights, foreground_slots, sample_box)

SHAPE = (60, 50, 70)
PATCH = (16, 16, 16)


def _case():
    """Three classes of very different sizes: 2000 voxels, 27 voxels, 1 voxel."""
    label = np.zeros(SHAPE, np.uint8)
    label[10:30, 10:20, 10:20] = 1
    label[40:43, 30:33, 50:53] = 2
    label[55, 45, 65] = 3
    entry = {"shape": list(SHAPE), "class_locations": {
        str(c): np.argwhere(label == c).tolist() for c in (1, 2, 3)} | {"4": []}}
    return label, class_locations(entry, "c0")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 12])
@pytest.mark.parametrize("fraction", [0.0, 1 / 3, 0.5, 1.0])
def test_foreground_slots_quota(n, fraction):
    slots = foreground_slots(n, fraction)
    assert slots.shape == (n,) and slots.sum() == math.ceil(n * fraction - 1e-9)


def test_foreground_slots_spread():
    assert foreground_slots(6, 1 / 3).tolist() == [True, False, False, True, False, False]
    assert foreground_slots(2, 1 / 3).tolist() == [True, False]


def test_class_balance_uniform_over_present_classes():
    label, locations = _case()
    assert list(locations) == [1, 2, 3]  # the empty class 4 is not "present"
    rng = np.random.default_rng(0)
    n = 6000
    chosen = []
    for _ in range(n):
        box = sample_box(rng, SHAPE, PATCH, locations, foreground=True)
        assert (crop(label, box) == box.class_id).any()  # the patch holds its class
        chosen.append(box.class_id)
    freq = np.bincount(chosen, minlength=4)[1:] / n
    np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.03)
    # a random patch, by contrast, almost never sees the 1-voxel class
    random_hits = sum((crop(label, sample_box(rng, SHAPE, PATCH, locations, False)) == 3).any()
                      for _ in range(500))
    assert random_hits < 500 * 0.05


def test_class_weights_draw_classes_in_proportion():
    label, locations = _case()
    rng = np.random.default_rng(4)
    weights = {1: 1.0, 2: 3.0}  # class 3 is not listed: weight 1
    chosen = [sample_box(rng, SHAPE, PATCH, locations, True, weights).class_id
              for _ in range(6000)]
    np.testing.assert_allclose(np.bincount(chosen, minlength=4)[1:] / 6000, [0.2, 0.6, 0.2],
                               atol=0.03)


def _seen(label, boxes, c):
    return np.mean([(crop(label, b) == c).any() for b in boxes])


def test_exposure_estimate_matches_the_sampler_and_lifts_the_rare_class():
    """The estimated share of patches holding each class is what sample_box delivers, under
    the uniform draw and under the weights; the weights lift the classes random patches miss."""
    label, locations = _case()
    share = 0.5
    weights, uniform, weighted = exposure_weights([(SHAPE, locations)], PATCH, share, seed=0,
                                                  random_boxes=400, centred_boxes=100)
    assert list(weights) == [1, 2, 3]
    assert weights[3] > weights[2] > weights[1] and weights[3] > 1.0 > weights[1]  # rarest: most
    assert weighted[3] > uniform[3] + 0.025 and weighted[1] < uniform[1]
    rng = np.random.default_rng(5)
    for w, expected in ((None, uniform), (weights, weighted)):
        boxes = [sample_box(rng, SHAPE, PATCH, locations, k % 2 == 0, w) for k in range(3000)]
        for c in (1, 2, 3):
            assert abs(_seen(label, boxes, c) - expected[c]) < 0.04, (w, c)
    again = exposure_weights([(SHAPE, locations)], PATCH, share, seed=0, random_boxes=400,
                             centred_boxes=100)
    assert again == (weights, uniform, weighted)  # deterministic


def test_exposure_weights_bounds_and_bad_input():
    _, locations = _case()
    weights, _, _ = exposure_weights([(SHAPE, locations)], PATCH, 0.5, random_boxes=400,
                                     centred_boxes=100, floor=0.95, ceiling=1.1)
    assert weights[1] == 0.95 and weights[3] == 1.1  # held at the floor and the ceiling
    with pytest.raises(ValueError, match="foreground share"):
        exposure_weights([(SHAPE, locations)], PATCH, 1.5)
    with pytest.raises(ValueError, match="floor"):
        exposure_weights([(SHAPE, locations)], PATCH, 0.5, floor=0.0)
    with pytest.raises(ValueError, match="no case has a labelled class"):
        exposure_weights([(SHAPE, {})], PATCH, 0.5)


def test_class_centred_box_is_centred_inside_the_volume():
    _, locations = _case()
    box = sample_box(np.random.default_rng(1), SHAPE, PATCH, {2: locations[2][13:14]}, True)
    assert box.lower == tuple(int(v) for v in locations[2][13] - np.array(PATCH) // 2)
    corner = sample_box(np.random.default_rng(1), SHAPE, PATCH, {3: locations[3]}, True)
    assert corner.lower == tuple(s - p for s, p in zip(SHAPE, PATCH))  # shifted, not overhanging


def test_random_boxes_stay_inside_and_cover_the_range():
    rng = np.random.default_rng(2)
    lowers = np.array([sample_box(rng, SHAPE, PATCH, {}, True).lower for _ in range(3000)])
    assert (lowers >= 0).all() and (lowers <= np.subtract(SHAPE, PATCH)).all()
    assert (lowers.min(0) == 0).all() and (lowers.max(0) == np.subtract(SHAPE, PATCH)).all()


def test_small_volume_is_padded_symmetrically():
    image = np.arange(10 * 12 * 6, dtype=np.float32).reshape(10, 12, 6) + 1
    box = sample_box(np.random.default_rng(3), image.shape, (16, 12, 8), {}, False)
    assert box.lower == (-3, 0, -1)
    patch = crop(image, box, pad_value=0)
    assert patch.shape == (16, 12, 8)
    np.testing.assert_array_equal(patch[3:13, :, 1:7], image)
    assert patch[:3].sum() == 0 and patch[13:].sum() == 0 and patch[:, :, 0].sum() == 0


def test_box_slices_of_overhanging_box():
    src, dst = box_slices(PatchBox((-2, 5, 8), (4, 4, 4)), (10, 10, 10))
    assert src == (slice(0, 2), slice(5, 9), slice(8, 10))
    assert dst == (slice(2, 4), slice(0, 4), slice(0, 2))


def test_locations_outside_the_volume_are_an_error():
    with pytest.raises(ValueError, match="case c9.*class 5"):
        class_locations({"shape": [4, 4, 4], "class_locations": {"5": [[1, 2, 4]]}}, "c9")
