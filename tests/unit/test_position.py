"""Position channels: patch and whole-volume positions agree, inputs are built as specified."""

import numpy as np
import pytest

from petseg_jax.configuration import CHOICES
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
    plain = position.network_input(pet, SPACING, ())
    assert plain.shape == (*SHAPE, 1)
    np.testing.assert_array_equal(plain[..., 0], pet)
    both = position.network_input(pet[..., None], SPACING, (0, 1, 2))
    assert both.shape == (*SHAPE, 4) and both.dtype == np.float32
    np.testing.assert_array_equal(both[..., 0], pet)
    np.testing.assert_array_equal(both[..., 1:], position.volume_position(SHAPE, SPACING))
    transaxial = position.network_input(pet, SPACING, (0, 1))  # x and y, no z
    assert transaxial.shape == (*SHAPE, 3)
    np.testing.assert_array_equal(transaxial, both[..., :3])
    with pytest.raises(ValueError, match="PET volume"):
        position.network_input(np.zeros((4, 4, 4, 2), np.float32), SPACING, (0, 1, 2))
    with pytest.raises(ValueError, match="3 values"):
        position.patch_position((0, 0), SHAPE, SPACING)


def test_input_channels_from_a_config_section():
    assert position.input_channels({}) == 1  # configs from before the option
    assert position.input_channels({"position_channels": ""}) == 1
    assert position.input_channels({"position_channels": "xy"}) == 3
    assert position.input_channels({"position_channels": "xyz"}) == 4
    assert position.position_axes({"position_channels": "xy"}) == (0, 1)
    # model records from before "xy" hold a bool
    assert position.position_axes({"position_channels": True}) == (0, 1, 2)
    assert position.position_axes({"position_channels": False}) == ()
    with pytest.raises(ValueError, match="position_channels must be one of"):
        position.input_channels({"position_channels": "z"})
    assert tuple(position.AXES) == CHOICES["data.position_channels"]  # what check_config allows


def test_transaxial_channels_do_not_depend_on_the_axial_field_of_view():
    """The same body slices cut from a long and a short scan (same transaxial grid) get the
    same "xy" channels, whereas the scan-centred z channel moves with the cut."""
    long_scan, short_scan = (20, 14, 300), (20, 14, 120)
    whole = position.volume_position(long_scan, SPACING, (0, 1))
    cut = position.volume_position(short_scan, SPACING, (0, 1))
    np.testing.assert_array_equal(whole[:, :, :120], cut)  # the scan's lower end
    z_whole = position.volume_position(long_scan, SPACING)[:, :, :120, 2]
    z_cut = position.volume_position(short_scan, SPACING)[..., 2]
    np.testing.assert_allclose(z_cut - z_whole, 0.225, atol=1e-6)  # 90 slices of 2.5 mm
