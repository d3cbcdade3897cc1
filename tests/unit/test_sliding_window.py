"""Sliding-window inference against the plain predictor, a NumPy re-implementation of MONAI's
algorithm and (when installed) MONAI itself."""

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest

from requires import import_or_skip

from petseg_jax.data import position
from petseg_jax.inference import Windows, sliding_window
from petseg_jax.inference.sliding_window import window_starts

K = 3
LUT = np.array([0, 2, 1])  # channels 1 and 2 are a left/right pair


def position_dependent(x, xp=jnp):
    """(n, px, py, pz, 2) -> (n, px, py, pz, K): depends on the position inside the window, so that
    overlapping windows disagree and the blending weights matter."""
    px, py, pz = x.shape[1:4]
    ramp = (xp.arange(px)[:, None, None] * 0.7 + xp.arange(py)[None, :, None] * 0.3
            - xp.arange(pz)[None, None, :] * 0.2)
    a, b = x[..., 0], x[..., 1]
    return xp.stack([xp.sin(a + ramp), a * b + 0.1 * ramp, xp.cos(2 * b) - 0.05 * ramp], axis=-1)


def np_fn(x):
    return position_dependent(x, np)


def reference(volume, fn, patch, overlap, mode, mirror_axes=(), lut=None, sigma_scale=0.125):
    """MONAI's sliding_window_inference written out window by window (channels-last)."""
    shape = volume.shape[:3]
    deficit = [max(p - s, 0) for s, p in zip(shape, patch)]
    pads = [(d // 2, d - d // 2) for d in deficit]
    vol = np.pad(volume, pads + [(0, 0)])
    size = vol.shape[:3]
    starts = []
    for s, p in zip(size, patch):
        step = p if s == p else max(int(p * (1 - overlap)), 1)
        n = next(d for d in range(math.ceil(s / step)) if d * step + p >= s) + 1
        starts.append([d * step - max(d * step + p - s, 0) for d in range(n)])
    if mode == "gaussian":
        imp = np.ones(())
        for p in patch:
            t = np.arange(p) - (p - 1) / 2
            imp = imp[..., None] * np.exp(-t**2 / (2 * (sigma_scale * p) ** 2))
        imp = np.maximum(imp, max(imp.min(), 1e-3))
    else:
        imp = np.ones(patch)
    out = np.zeros(size + (K,))
    cnt = np.zeros(size)
    subsets = [c for r in range(len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, r)]
    for x0 in starts[0]:
        for y0 in starts[1]:
            for z0 in starts[2]:
                sl = (slice(x0, x0 + patch[0]), slice(y0, y0 + patch[1]), slice(z0, z0 + patch[2]))
                win = vol[sl][None]
                pred = 0
                for axes in subsets:
                    flip = tuple(a + 1 for a in axes)
                    y = np.flip(fn(np.flip(win, flip)), flip)
                    pred = pred + (y[..., lut] if 0 in axes and lut is not None else y)
                out[sl] += pred[0] / len(subsets) * imp[..., None]
                cnt[sl] += imp
    out /= cnt[..., None]
    return out[tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, shape))]


@pytest.fixture(scope="module")
def volume():
    # y (7) is smaller than the patch's 8: padded as MONAI does.
    return np.random.default_rng(0).normal(size=(13, 7, 11, 2)).astype(np.float32)


PATCH = (6, 8, 5)


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_one_window_equals_plain_prediction(mode):
    vol = np.random.default_rng(1).normal(size=PATCH + (2,)).astype(np.float32)
    out = sliding_window(vol, position_dependent, Windows(PATCH, overlap=0.5, mode=mode, batch_size=2))
    np.testing.assert_allclose(np.asarray(out), np_fn(vol[None])[0], rtol=1e-5, atol=1e-5)


def test_window_starts_follow_monai():
    # interval int(6 * 0.5) = 3: 0, 3, 6, then 9 -> moved back to 7 (flush with the end 13)
    starts = window_starts((13, 8, 5), (6, 8, 5), (0.5, 0.5, 0.5))
    assert sorted(set(starts[:, 0].tolist())) == [0, 3, 6, 7]
    assert set(starts[:, 1].tolist()) == {0} and set(starts[:, 2].tolist()) == {0}
    # overlap 0.25: interval int(6 * 0.75) = 4: 0, 4, 7
    assert sorted(set(window_starts((13, 8, 5), (6, 8, 5), (0.25,) * 3)[:, 0].tolist())) == [0, 4, 7]


@pytest.mark.parametrize("overlap,mode", [(0.5, "gaussian"), (0.25, "gaussian"), (0.5, "constant")])
def test_matches_numpy_reference(volume, overlap, mode):
    out = sliding_window(volume, position_dependent,
                         Windows(PATCH, overlap=overlap, mode=mode, batch_size=4))
    ref = reference(volume, np_fn, PATCH, overlap, mode)
    assert out.shape == volume.shape[:3] + (K,)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)


def test_mirroring_matches_reference_with_lut(volume):
    windows = Windows(PATCH, overlap=0.5, batch_size=3, mirror_axes=(0, 2), mirror_lut=LUT)
    out = sliding_window(volume, position_dependent, windows)
    ref = reference(volume, np_fn, PATCH, 0.5, "gaussian", mirror_axes=(0, 2), lut=LUT)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)


def test_mirroring_axis0_swaps_paired_channels():
    # A voxel-wise predictor is flip-equivariant, so mirroring axis 0 only averages the output
    # with its left/right-swapped copy.
    vol = np.random.default_rng(2).normal(size=(6, 8, 5, 2)).astype(np.float32)
    out = np.asarray(sliding_window(vol, _pointwise, Windows(PATCH, mirror_axes=(0,), mirror_lut=LUT)))
    plain = np.asarray(_pointwise(jnp.asarray(vol[None])))[0]
    np.testing.assert_allclose(out, (plain + plain[..., LUT]) / 2, rtol=1e-5, atol=1e-6)


def _x_position(x):
    return x[..., 1:2]


def test_position_channels_negate_on_test_time_flips_and_edge_pad():
    """A flip of axis 0 negates the X position, as in training: a predictor that outputs the X
    position averages to 0 over the two passes. Padding extends positions with edge values."""
    vol = position.network_input(np.zeros((6, 5, 4), np.float32), (2.0, 2.0, 2.0), (0, 1, 2))
    plain = np.asarray(sliding_window(vol, _x_position, Windows(PATCH), position_axes=(0, 1, 2)))
    np.testing.assert_allclose(plain[..., 0], vol[..., 1], atol=1e-6)  # padded, cropped back
    mirrored = np.asarray(sliding_window(vol, _x_position, Windows(PATCH, mirror_axes=(0,)),
                                         position_axes=(0, 1, 2)))
    np.testing.assert_allclose(mirrored, 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="need 4 input channels"):
        sliding_window(vol[..., :2], _x_position, Windows(PATCH), position_axes=(0, 1, 2))


def test_transaxial_position_channels_flip_only_with_their_axes():
    """With X and Y positions only ("xy"), a flip of Z changes no channel's sign and a flip of
    X still negates channel 1."""
    vol = position.network_input(np.zeros((6, 5, 4), np.float32), (2.0, 2.0, 2.0), (0, 1))
    assert vol.shape[-1] == 3
    z_flip = np.asarray(sliding_window(vol, _x_position, Windows(PATCH, mirror_axes=(2,)),
                                       position_axes=(0, 1)))
    np.testing.assert_allclose(z_flip[..., 0], vol[..., 1], atol=1e-6)
    x_flip = np.asarray(sliding_window(vol, _x_position, Windows(PATCH, mirror_axes=(0,)),
                                       position_axes=(0, 1)))
    np.testing.assert_allclose(x_flip, 0.0, atol=1e-6)


def _pointwise(x):
    return jnp.stack([x[..., 0], x[..., 1] * 2, x[..., 0] - x[..., 1]], axis=-1)


def test_labels_output_is_argmax_and_params_are_passed(volume):
    def with_params(scale, x):
        return position_dependent(x) * scale

    avg = sliding_window(volume, with_params, Windows(PATCH), params=jnp.float32(-1.0))
    labels = sliding_window(volume, with_params, Windows(PATCH), output="labels",
                            params=jnp.float32(-1.0))
    assert labels.dtype == jnp.uint8 and labels.shape == volume.shape[:3]
    np.testing.assert_array_equal(np.asarray(labels), np.argmax(np.asarray(avg), axis=-1))
    ref = reference(volume, lambda x: -np_fn(x), PATCH, 0.5, "gaussian")
    np.testing.assert_allclose(np.asarray(avg), ref, rtol=1e-4, atol=1e-5)


def test_bfloat16_accumulation_is_close(volume):
    out = sliding_window(volume, position_dependent, Windows(PATCH), accum_dtype="bfloat16")
    ref = reference(volume, np_fn, PATCH, 0.5, "gaussian")
    np.testing.assert_allclose(np.asarray(out), ref, atol=0.05)


def test_bad_input_is_rejected(volume):
    with pytest.raises(ValueError, match="channels-last"):
        sliding_window(volume[..., 0], position_dependent, Windows(PATCH))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(volume, position_dependent, Windows(PATCH, overlap=1.0))
    with pytest.raises(ValueError, match="mirror_lut"):
        sliding_window(volume, position_dependent,
                       Windows(PATCH, mirror_axes=(0,), mirror_lut=[0, 1]))


def test_matches_monai_when_installed(volume):
    torch = import_or_skip("torch")
    monai_inferers = import_or_skip("monai.inferers")

    def predictor(t):  # channels-first torch <-> channels-last numpy
        x = t.permute(0, 2, 3, 4, 1).numpy()
        return torch.from_numpy(np.ascontiguousarray(np_fn(x).astype(np.float32))).permute(0, 4, 1, 2, 3)

    inputs = torch.from_numpy(np.ascontiguousarray(volume.transpose(3, 0, 1, 2)))[None]
    for overlap, mode in [(0.5, "gaussian"), (0.25, "constant")]:
        ref = monai_inferers.sliding_window_inference(inputs, PATCH, 3, predictor, overlap=overlap, mode=mode)
        ref = ref[0].numpy().transpose(1, 2, 3, 0)
        out = sliding_window(volume, position_dependent,
                             Windows(PATCH, overlap=overlap, mode=mode, batch_size=3))
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)


def test_inference_and_metrics_import_no_training_stack():
    import subprocess
    import sys

    code = ("import sys, petseg_jax.inference, petseg_jax.inference.postprocess, petseg_jax.metrics; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'flax', 'optax', 'orbax', 'grain', 'matplotlib', 'tensorstore'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
