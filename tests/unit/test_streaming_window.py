"""The streamed sliding window (bounded memory): labels bitwise equal to the whole-volume
program, progress, and the memory budget."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from petseg_jax import resources
from petseg_jax.data import position
from petseg_jax.inference.sliding_window import (Windows, sliding_window, sliding_window_labels,
                                                 window_devices, window_rows, window_starts)
from petseg_jax.models.unet import build_model

CLASSES = 5
LUT = np.array([0, 2, 1, 3, 4])
PATCH = (8, 8, 8)
SPACING = (2.0, 3.0, 2.5)
_model = build_model({"n_stages": 2, "base_features": 4, "max_features": 8}, 4, CLASSES,
                     nnx.Rngs(0))
_model.eval()
GRAPH, STATE = nnx.split(_model)


@jax.jit
def unet(state, x):
    return nnx.merge(GRAPH, state)(x)


@pytest.mark.parametrize("shape,mirror,batch", [
    ((10, 9, 21), (), 3),       # streamed along Z (the slab axis is not MONAI's slowest axis)
    ((6, 12, 9), (0, 2), 2),    # padded along X, streamed along Y, mirrored with a L/R table
    ((17, 8, 8), (0,), 4),      # streamed along X: MONAI's own window order
])
def test_labels_bitwise_equal_to_the_whole_volume_program(shape, mirror, batch):
    pet = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    windows = Windows(PATCH, batch_size=batch, mirror_axes=mirror, mirror_lut=LUT)
    whole = sliding_window(position.network_input(pet, SPACING, (0, 1, 2)), unet, windows,
                           output="labels", params=STATE, position_axes=(0, 1, 2))
    seen = []
    streamed = sliding_window_labels(pet[..., None], unet, windows, params=STATE,
                                     position_spacing=SPACING,
                                     progress=lambda done, total: seen.append((done, total)))
    assert streamed.dtype == np.uint8 and streamed.shape == shape
    np.testing.assert_array_equal(streamed, np.asarray(whole))
    assert len(np.unique(streamed)) > 1  # a non-trivial map
    _, _, weights = window_rows([max(s, 8) for s in shape], PATCH, (0.5,) * 3, batch,
                                int(np.argmax([max(s, 8) for s in shape])))
    total = int(np.count_nonzero(weights))
    assert [t for _, t in seen] == [total] * len(seen) and seen[-1][0] == total
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_transaxial_positions_stream_like_the_whole_volume():
    """With X and Y positions only, the per-band channels equal the whole volume's: the same
    labels from a pointwise predictor whose scores depend on the positions."""
    weights = np.random.default_rng(2).normal(size=(3, CLASSES)).astype(np.float32)
    weights[1:] *= 50.0  # positions are metres: make them decide the labels

    def pointwise(x):
        return x @ weights

    pet = np.random.default_rng(1).normal(size=(10, 9, 21)).astype(np.float32)
    windows = Windows(PATCH, batch_size=2, mirror_axes=(0,), mirror_lut=LUT)
    whole = sliding_window(position.network_input(pet, SPACING, (0, 1)), pointwise, windows,
                           output="labels", position_axes=(0, 1))
    streamed = sliding_window_labels(pet[..., None], pointwise, windows,
                                     position_spacing=SPACING, position_axes=(0, 1))
    assert len(np.unique(streamed)) > 1
    np.testing.assert_array_equal(streamed, np.asarray(whole))


def test_the_compiled_band_program_is_reused():
    from petseg_jax.inference.sliding_window import _compiled_band

    pet = np.zeros((9, 8, 12, 1), np.float32)
    sliding_window_labels(pet, unet, Windows(PATCH), params=STATE, position_spacing=SPACING)
    before = _compiled_band.cache_info()
    sliding_window_labels(pet + 1, unet, Windows(PATCH), params=STATE, position_spacing=SPACING)
    after = _compiled_band.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1


@pytest.mark.parametrize("box", [((3, 12), (2, 12), (4, 22)),   # every axis at least a patch
                                 ((5, 9), (0, 12), (1, 26))])  # X grown to a patch: (3, 11)
def test_a_region_is_the_volume_cut_to_it_with_the_same_program(box):
    from petseg_jax.inference.sliding_window import _compiled_band, grown_region

    vol = np.random.default_rng(2).normal(size=(14, 12, 26, 4)).astype(np.float32)
    windows = Windows(PATCH, batch_size=3)
    sliding_window_labels(vol, unet, windows, params=STATE)
    before = _compiled_band.cache_info()
    seen = []
    labels = sliding_window_labels(vol, unet, windows, params=STATE, region=box,
                                   progress=lambda done, total: seen.append((done, total)))
    assert _compiled_band.cache_info().misses == before.misses  # no compile per box
    cut = tuple(slice(*r) for r in grown_region(box, ((0, 0),) * 3, vol.shape[:3], PATCH))
    want = np.zeros(vol.shape[:3], np.uint8)
    want[cut] = sliding_window_labels(vol[cut], unet, windows, params=STATE)
    np.testing.assert_array_equal(labels, want)
    assert len(np.unique(labels[cut])) > 1
    total = len(window_starts([c.stop - c.start for c in cut], PATCH, (0.5,) * 3))
    assert seen[-1] == (total, total)


def test_window_rows_hold_every_window_once_in_row_order():
    rows, starts, weights = window_rows((20, 9, 13), (6, 8, 5), (0.5, 0.5, 0.5), 4, axis=2)
    assert rows.tolist() == [0, 2, 4, 6, 8]
    assert np.all(starts[..., 2] == rows[:, None, None])  # a row holds one start along Z
    real = starts[weights > 0]
    monai = window_starts((20, 9, 13), (6, 8, 5), (0.5, 0.5, 0.5))
    assert sorted(map(tuple, real.tolist())) == sorted(map(tuple, monai.tolist()))
    # within a row, MONAI's order of the other axes (X slowest)
    row = real[real[:, 2] == 4]
    np.testing.assert_array_equal(row, monai[monai[:, 2] == 4])


def test_a_band_that_cannot_fit_names_the_memory_needed():
    # 10^5 x 10^5 voxels per plane: even one band of scores is far beyond any machine. The
    # volume is a zero-stride view, so the test itself allocates nothing.
    huge = np.broadcast_to(np.float32(1.0), (100_000, 100_000, 50_000, 1))
    with pytest.raises(resources.MemoryBudgetError,
                       match=r"needs \d+\.\d\d GiB of memory but only [\d.]+ GiB is available"):
        sliding_window_labels(huge, unet, Windows(PATCH), params=STATE, position_spacing=SPACING)
    small = np.ones((12, 8, 8, 1), np.float32)
    with pytest.raises(resources.MemoryBudgetError,
                       match=r"12x8x8 volume \(score band 8x8x8 x 5 classes in float32\) needs "
                       r"[\d.]+ MiB"):
        sliding_window_labels(small, unet, Windows(PATCH), params=STATE, position_spacing=SPACING,
                              memory_budget=10_000)


def test_available_memory_is_within_mem_available():
    budget = resources.available_memory()
    assert budget is not None and 0 < budget <= resources.mem_available()


SPLIT_SCRIPT = """
import sys
import jax
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_streaming_window as t
from petseg_jax.inference.sliding_window import Windows, sliding_window_labels, window_devices

devices = jax.devices()
assert len(devices) == 2, devices
assert [len(window_devices(b)) for b in (1, 2, 3, 4)] == [1, 2, 1, 2]
pet = np.random.default_rng(2).normal(size=(10, 9, 21, 1)).astype(np.float32)
windows = Windows(t.PATCH, batch_size=4, mirror_axes=(0,), mirror_lut=t.LUT)
one = sliding_window_labels(pet, t.unet, windows, params=t.STATE, devices=devices[:1],
                            position_spacing=t.SPACING)
two = sliding_window_labels(pet, t.unet, windows, params=t.STATE, position_spacing=t.SPACING)
assert len(np.unique(one)) > 1
np.testing.assert_array_equal(one, two)
print("split ok")
"""


def test_windows_split_over_two_devices_give_the_same_labels():
    """Each batch split over 2 CPU devices (every device adding every window to its copy of
    the band) gives the one-device labels bitwise."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT, str(Path(__file__).parent)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "split ok" in out.stdout


def test_window_devices_rejects_an_empty_list():
    with pytest.raises(ValueError, match="no devices"):
        window_devices(2, [])
