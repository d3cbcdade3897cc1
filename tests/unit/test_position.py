"""Position channels: patch and whole-volume positions agree, inputs are built as specified."""

import numpy as np
import pytest

from petseg_jax.data import position

SHAPE, SPACING = (20, 14, 30), (6.0, 4.0, 2.5)


def _patch_channels(lower, size):
    origin, step = position.patch_position(lower, SHAPE, SPACING)
    axes = [o + s * np.arange(n) for o, s, n in zip(origin, step, size)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def test_volume_positions_are_centred_metres():
    pos = position.volume_position(SHAPE, SPACING)
    assert pos.shape == (*SHAPE, 3) and pos.dtype == np.float32
    np.testing.assert_allclose(pos.mean(axis=(0, 1, 2)), 0.0, atol=1e-6)  # centred
    np.testing.assert_allclose(pos[1, 0, 0] - pos[0, 0, 0], [0.006, 0, 0], atol=1e-7)
    np.testing.assert_allclose(pos[-1, -1, -1], [(20 - 1) / 2 * 0.006, (14 - 1) / 2 * 0.004,
                                                 (30 - 1) / 2 * 0.0025], rtol=1e-6)


@pytest.mark.parametrize("lower", [(0, 0, 0), (5, 3, 11), (-4, 2, 20)])
def test_a_patch_position_is_the_volume_position_it_covers(lower):
    size = (8, 8, 8)
    patch = _patch_channels(lower, size)
    full = position.volume_position(SHAPE, SPACING)
    src = tuple(slice(max(lo, 0), min(lo + n, s)) for lo, n, s in zip(lower, size, SHAPE))
    dst = tuple(slice(sl.start - lo, sl.stop - lo) for sl, lo in zip(src, lower))
    np.testing.assert_allclose(patch[dst], full[src], atol=1e-6)
    if lower[0] < 0:  # padding continues the positions linearly
        np.testing.assert_allclose(patch[0, 0, 0, 0], full[0, 0, 0, 0] + lower[0] * 0.006,
                                   atol=1e-6)


def test_network_input_channels():
    pet = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    plain = position.network_input(pet, SPACING, False)
    assert plain.shape == (*SHAPE, 1)
    np.testing.assert_array_equal(plain[..., 0], pet)
    both = position.network_input(pet[..., None], SPACING, True)
    assert both.shape == (*SHAPE, 4) and both.dtype == np.float32
    np.testing.assert_array_equal(both[..., 0], pet)
    np.testing.assert_array_equal(both[..., 1:], position.volume_position(SHAPE, SPACING))
    with pytest.raises(ValueError, match="PET volume"):
        position.network_input(np.zeros((4, 4, 4, 2), np.float32), SPACING, True)
    with pytest.raises(ValueError, match="3 values"):
        position.patch_position((0, 0), SHAPE, SPACING)


def test_input_channels_from_a_config_section():
    assert position.input_channels({}) == 1  # configs from before the option
    assert position.input_channels({"position_channels": False}) == 1
    assert position.input_channels({"position_channels": True}) == 4
