"""Augmentation invariants: identity at p=0, left/right-aware mirroring, image/label alignment,
position channels that follow the content."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from petseg_jax.data import position
from petseg_jax.data.schema import DEFAULT_SCHEMA
from petseg_jax.training.augment import augment_batch, augment_config

S = 16
OFF = {k: 0.0 for k in augment_config(None) if k.startswith("p_")} | {"p_mirror": (0.0, 0.0, 0.0)}
LUT = DEFAULT_SCHEMA.mirror_lut()


def _run(cfg, image, label, seeds=(0,), positions=None, axes=(0, 1, 2)):
    """Outputs for each seed (one compilation)."""
    fn = jax.jit(partial(augment_batch, cfg=cfg, mirror_lut=LUT, position_axes=axes))
    outs = [fn(jax.random.key(s), image, label, position=positions) for s in seeds]
    return outs if len(seeds) > 1 else outs[0]


@pytest.fixture(scope="module")
def cube():
    """Two samples: a bright cube (10 on a noisy ~0 background) labelled 1 inside."""
    image = np.zeros((2, S, S, S, 1), np.float32)
    label = np.zeros((2, S, S, S), np.uint8)
    image[:, 4:11, 5:12, 3:10] = 10.0
    label[:, 4:11, 5:12, 3:10] = 1
    image += np.random.default_rng(0).normal(0, 0.1, image.shape).astype(np.float32)
    return jnp.asarray(image), jnp.asarray(label)


def test_zero_probabilities_are_the_identity(cube):
    image, label = _run(OFF, *cube)
    np.testing.assert_array_equal(image, cube[0])
    np.testing.assert_array_equal(label, cube[1])


def test_right_left_flip_swaps_paired_labels():
    right, left = DEFAULT_SCHEMA.id_of("kidney_right"), DEFAULT_SCHEMA.id_of("kidney_left")
    liver = DEFAULT_SCHEMA.id_of("liver")
    label = np.zeros((1, S, S, S), np.uint8)
    label[0, 1:4, 5:9, 5:9] = right  # near x = 0
    label[0, 6:9, 2:5, 2:5] = liver
    image = (label[..., None] * 1.5).astype(np.float32)
    out_img, out_lbl = _run({**OFF, "p_mirror": (1.0, 0.0, 0.0)}, jnp.asarray(image),
                            jnp.asarray(label))
    out_lbl = np.asarray(out_lbl)
    assert not (out_lbl == right).any()
    np.testing.assert_array_equal(out_lbl[0, S - 4:S - 1, 5:9, 5:9], left)  # mirrored x range
    np.testing.assert_array_equal(out_lbl[0, S - 9:S - 6, 2:5, 2:5], liver)  # unpaired: same id
    np.testing.assert_array_equal(np.asarray(out_img)[0, ::-1], image[0])  # image flipped only


def test_rotation_and_scaling_keep_image_and_label_aligned(cube):
    cfg = {**OFF, "p_rotation": 1.0, "p_scale": 1.0, "rotation_deg": 40.0}
    image, label = _run(cfg, *cube)
    image, label = np.asarray(image[..., 0]), np.asarray(label)
    assert (label != np.asarray(cube[1])).any(), "the transform should change the labels"
    bright, inside = image > 5.0, label == 1
    assert inside.sum() > 50
    iou = (bright & inside).sum() / (bright | inside).sum()
    assert iou > 0.85, iou


def test_all_ops_on_keep_labels_deterministic_and_finite(cube):
    cfg = {k: (1.0 if k.startswith("p_") else v) for k, v in augment_config(None).items()}
    cfg |= {"p_rotation": 0.0, "p_scale": 0.0, "p_mirror": (0.0, 1.0, 1.0)}
    (a_img, a_lbl), (b_img, _), (c_img, _) = _run(cfg, *cube, seeds=(1, 1, 2))
    np.testing.assert_array_equal(a_img, b_img)
    assert not np.allclose(a_img, c_img)
    assert bool(jnp.all(jnp.isfinite(a_img)))
    # Y and Z flips move the labels but never relabel them
    np.testing.assert_array_equal(a_lbl, cube[1][:, :, ::-1, ::-1])
    assert not np.allclose(a_img, cube[0][:, :, ::-1, ::-1])  # intensities changed


def test_bad_config_is_reported(cube):
    with pytest.raises(ValueError, match="did you mean .augment.p_rotation."):
        augment_config({"p_rotate": 0.5})
    with pytest.raises(ValueError, match="probability"):
        augment_config({"p_noise": 1.5})
    with pytest.raises(ValueError, match=r"\(N,X,Y,Z,1\)"):
        augment_batch(jax.random.key(0), cube[0][..., 0], cube[1], OFF, LUT)


# A 2-sample batch of S^3 patches cut at LOWER from a VOLUME-shaped scan at SPACING mm.
VOLUME, SPACING, LOWER = (40, 30, 50), (6.0, 6.0, 6.0), ((3, 2, 10), (20, 9, 30))


def _positions():
    return jnp.stack([jnp.asarray(position.patch_position(lo, VOLUME, SPACING)) for lo in LOWER])


def _cut(volume, lower):
    return volume[tuple(slice(lo, lo + S) for lo in lower)]


def test_position_channels_are_the_patch_place_in_the_scan(cube):
    image, label = _run(OFF, *cube, positions=_positions())
    assert image.shape == (2, S, S, S, 4)
    np.testing.assert_array_equal(image[..., 0], cube[0][..., 0])  # PET untouched
    full = position.volume_position(VOLUME, SPACING)
    for k, lower in enumerate(LOWER):
        np.testing.assert_allclose(image[k, ..., 1:], _cut(full, lower), atol=1e-6)


def test_mirrored_patch_reads_as_cut_from_the_mirrored_scan(cube):
    """An X flip negates X positions: the patch is the one at the mirrored place of the
    mirrored scan, where the paired labels are swapped too."""
    image, _ = _run({**OFF, "p_mirror": (1.0, 0.0, 0.0)}, *cube, positions=_positions())
    full = position.volume_position(VOLUME, SPACING)
    for k, (x, y, z) in enumerate(LOWER):
        mirrored = (VOLUME[0] - x - S, y, z)
        np.testing.assert_allclose(image[k, ..., 1:], _cut(full, mirrored), atol=1e-6)
    np.testing.assert_array_equal(image[..., 0], cube[0][:, ::-1, ..., 0])
    transaxial, _ = _run({**OFF, "p_mirror": (1.0, 0.0, 0.0)}, *cube, positions=_positions(),
                         axes=(0, 1))  # "xy": the same X and Y channels, no Z
    assert transaxial.shape == (2, S, S, S, 3)
    np.testing.assert_array_equal(transaxial, image[..., :3])


def test_positions_follow_the_content_through_rotation_and_zoom():
    """PET = the X position itself: after rotation and zoom (trilinear, exact for a linear
    ramp) the PET channel still equals the X position channel away from the patch border."""
    pos = _positions()
    ramp = position.volume_position(VOLUME, SPACING)[..., :1]
    image = jnp.stack([jnp.asarray(_cut(ramp, lo)) for lo in LOWER])
    label = jnp.zeros(image.shape[:4], jnp.uint8)
    cfg = {**OFF, "p_rotation": 1.0, "p_scale": 1.0, "rotation_deg": 30.0,
           "scale_range": (1.1, 1.3)}  # zoom in: every output voxel samples inside the patch
    out, _ = _run(cfg, image, label, positions=pos)
    assert not np.allclose(out[..., 1], image[..., 0], atol=1e-3)  # the transform did act
    inner = (slice(None), *(slice(4, S - 4),) * 3)  # samples inside the patch for any draw
    np.testing.assert_allclose(out[inner][..., 0], out[inner][..., 1], atol=1e-5)
