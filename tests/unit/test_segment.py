"""segment(): the network input, the sliding window and the post-processing every predictor shares."""

import jax.numpy as jnp
import numpy as np
import pytest

from petseg_jax.data import position
from petseg_jax.data.schema import DEFAULT_SCHEMA
from petseg_jax.inference.postprocess import body_box
from petseg_jax.inference.segment import segment

LIVER = DEFAULT_SCHEMA.id_of("liver")


def _spec(**extra):
    return {"schema": DEFAULT_SCHEMA.to_json(), "patch_size": [8, 8, 8], "overlap": 0.5,
            "total_stride": [4, 4, 4], "mirror_axes": [], "batch_size": 2,
            "largest_component": False, "largest_component_labels": [], "position_ranges": {},
            "position_channels": "", "nonzero_mask": False, "body_box": None} | extra


def _liver_everywhere(params, x):
    """Logits that pick the liver in every voxel of every window."""
    logits = jnp.zeros(x.shape[:4] + (DEFAULT_SCHEMA.num_classes,), jnp.float32)
    return logits.at[..., LIVER].set(1.0 + 0.0 * x[..., :1].sum())


def _scan():
    x = np.zeros((16, 12, 10), np.float32)
    x[3:13, 2:10, 1:9] = 1.0  # the body; air (no activity) around it
    x[14:16, 0:2, 0:2] = 2.0  # a separate hot speck in the air corner
    return x


def test_labels_outside_the_signal_region_are_background_with_nonzero_mask():
    x = _scan()
    plain = segment(x, (2.0, 2.0, 2.0), _liver_everywhere, {}, _spec())
    assert (plain == LIVER).all()
    masked = segment(x, (2.0, 2.0, 2.0), _liver_everywhere, {}, _spec(nonzero_mask=True))
    np.testing.assert_array_equal(masked == LIVER, x > 0)
    both = segment(x, (2.0, 2.0, 2.0), _liver_everywhere, {},  # the mask comes first: the body,
                   _spec(nonzero_mask=True, largest_component=True,  # not the air, wins
                         largest_component_labels=[LIVER]))
    np.testing.assert_array_equal(both == LIVER, np.pad(np.ones((10, 8, 8), bool),
                                                        ((3, 3), (2, 2), (1, 1))))


@pytest.mark.parametrize("recorded, channels", [("xy", 3), ("xyz", 4), (True, 4)])
def test_position_channels_reach_the_predictor(recorded, channels):
    """The record's axes decide the input (a record from before "xy" holds a bool); channel 1
    is the X position from the scan's centre: liver where it is positive."""
    seen = {}

    def liver_at_positive_x(params, x):
        seen["channels"] = x.shape[-1]
        logits = jnp.zeros(x.shape[:4] + (DEFAULT_SCHEMA.num_classes,), jnp.float32)
        return logits.at[..., LIVER].set(x[..., 1])

    labels = segment(_scan(), (2.0, 2.0, 2.0), liver_at_positive_x, {},
                     _spec(position_channels=recorded))
    assert seen["channels"] == channels
    assert (labels[8:] == LIVER).all() and not labels[:8].any()


def test_position_ranges_limit_each_organ():
    x = _scan()
    pos = position.volume_position(x.shape, (2.0, 2.0, 2.0))
    ranges = {str(LIVER): [pos[0, 0, 0].tolist(), pos[7, 11, 9].tolist()]}  # the low-x half
    labels = segment(x, (2.0, 2.0, 2.0), _liver_everywhere, {}, _spec(position_ranges=ranges))
    assert (labels[:8] == LIVER).all() and not labels[8:].any()


def test_scan_shorter_than_a_patch_along_an_axis():
    """A scan 5 voxels long under an 8-voxel patch: padded for the window, cut back after."""
    x = _scan()[:, :, 2:7]
    labels = segment(x, (2.0, 2.0, 2.0), _liver_everywhere, {}, _spec(nonzero_mask=True))
    assert labels.shape == x.shape
    np.testing.assert_array_equal(labels == LIVER, x > 0)


def test_bed_and_large_empty_regions_stay_background():
    """A small body in a wide field of view, the bed below it (no activity, and reconstruction
    noise on it) and air around: no organ in the air, none on a noisy bed away from the body."""
    x = np.zeros((40, 40, 12), np.float32)
    x[15:25, 18:28, 2:10] = 1.0  # the body
    x[8:32, 14:16, :] = np.random.default_rng(0).uniform(0, 0.01, (24, 2, 12))  # noisy bed
    labels = segment(x, (6.0, 6.0, 6.0), _liver_everywhere, {},
                     _spec(nonzero_mask=True, largest_component=True,
                           largest_component_labels=[LIVER]))
    np.testing.assert_array_equal(labels == LIVER, x == 1.0)


def test_windows_only_over_the_body_box_with_background_around():
    """A body in a wide field of view with faint noise in the air: the windows tile the body's
    box and margin, the labels outside are background."""
    x = np.zeros((40, 36, 30), np.float32)
    x[12:22, 10:18, 4:26] = 1.0  # the body
    x[35, 30, 2] = x[2, 2, 28] = 0.5  # single-voxel noise in the air, far from the body
    body = {"threshold": 0.02, "sigma_voxels": 1.0, "margin_voxels": 2,
            "min_component_fraction": 0.01}
    seen = []
    labels = segment(x, (6.0, 6.0, 6.0), _liver_everywhere, {}, _spec(body_box=body),
                     progress=lambda done, total: seen.append(total))
    box = tuple(slice(*b) for b in body_box(x, **body))
    assert [(b.start, b.stop) for b in box] == [(8, 26), (6, 22), (0, 30)]
    want = np.zeros(x.shape, bool)
    want[box] = True
    np.testing.assert_array_equal(labels == LIVER, want)
    assert seen[-1] == 4 * 3 * 7  # windows over the 18 x 16 x 30 box (the volume: 9 x 8 x 7)
