"""Dice + CE loss against hand-computed values; deep supervision; ignore label."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from petseg_jax.training.loss import (deep_supervision_weights, dice_ce_loss, downsample_labels,
                                      segmentation_loss)

L3 = math.log(3.0)  # logits (0, log 3) give softmax (1/4, 3/4)


def _volume(values, shape=(1, 2, 1, 1)):
    return jnp.asarray(values, jnp.float32).reshape(*shape, -1)


def test_two_voxels_by_hand():
    logits = _volume([[0.0, L3], [L3, 0.0]])  # p(fg) = 0.75, 0.25
    labels = jnp.asarray([1, 0]).reshape(1, 2, 1, 1)
    ce = -math.log(0.75)  # both voxels get 0.75 on their true class
    tp, pred, gt, s = 0.75, 0.75 + 0.25, 1.0, 1e-5
    dice = (2 * tp + s) / (pred + gt + s)
    np.testing.assert_allclose(dice_ce_loss(logits, labels), ce + 1 - dice, rtol=1e-6)
    # with the background class: its Dice is (2*0.75 + s) / (0.25 + 0.75 + 1 + s) as well
    np.testing.assert_allclose(dice_ce_loss(logits, labels, {"do_bg": True}), ce + 1 - dice,
                               rtol=1e-6)
    np.testing.assert_allclose(dice_ce_loss(logits, labels, {"weight_dice": 0.0}), ce, rtol=1e-6)


def test_batch_dice_differs_from_per_sample_dice():
    # sample 0: one fg voxel predicted 0.75; sample 1: no fg at all, predicted 0.25
    logits = _volume([[0.0, L3], [L3, 0.0]], (2, 1, 1, 1))
    labels = jnp.asarray([1, 0]).reshape(2, 1, 1, 1)
    s = 1e-5
    ce = -math.log(0.75)
    per_sample = ((2 * 0.75 + s) / (0.75 + 1 + s) + s / (0.25 + s)) / 2
    batch = (2 * 0.75 + s) / (0.75 + 0.25 + 1 + s)
    np.testing.assert_allclose(dice_ce_loss(logits, labels, {"batch_dice": False}),
                               ce + 1 - per_sample, rtol=1e-6)
    np.testing.assert_allclose(dice_ce_loss(logits, labels, {"batch_dice": True}),
                               ce + 1 - batch, rtol=1e-6)


def test_present_only_dice_skips_absent_classes():
    # three classes; sample 0 holds class 1, sample 1 holds class 2; class 3 absent everywhere
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 2, 2, 1, 4)), jnp.float32)
    labels = jnp.asarray([[1, 0, 0, 0], [2, 2, 0, 0]]).reshape(2, 2, 2, 1)
    probs = np.asarray(jnp.exp(logits - jax.nn.logsumexp(logits, -1, keepdims=True)))
    onehot = np.eye(4)[np.asarray(labels)]
    ce = -np.mean(np.log(np.take_along_axis(probs, np.asarray(labels)[..., None], -1)))
    s = 1e-5
    for batch_dice in (True, False):
        axes = (0, 1, 2, 3) if batch_dice else (1, 2, 3)
        tp = (probs * onehot).sum(axes)[..., 1:]
        denom = (probs + onehot).sum(axes)[..., 1:]
        dice = (2 * tp + s) / (denom + s)
        present = onehot.sum(axes)[..., 1:] > 0
        cfg = {"batch_dice": batch_dice}
        np.testing.assert_allclose(dice_ce_loss(logits, labels, cfg), ce + 1 - dice.mean(),
                                   rtol=1e-5)
        np.testing.assert_allclose(
            dice_ce_loss(logits, labels, {**cfg, "dice_present_only": True}),
            ce + 1 - dice[present].mean(), rtol=1e-5)
    # nothing present: the Dice term is a constant 1 (no gradient), CE stays
    bg = jnp.zeros((1, 2, 2, 1), int)
    grad = jax.grad(lambda x: dice_ce_loss(x, bg, {"dice_present_only": True, "weight_ce": 0}))
    np.testing.assert_allclose(dice_ce_loss(logits[:1], bg, {"dice_present_only": True,
                                                            "weight_ce": 0.0}), 1.0)
    np.testing.assert_allclose(grad(logits[:1]), 0.0)


def test_ignored_voxels_count_in_neither_term():
    logits = _volume([[0.0, L3], [L3, 0.0]])
    labels = jnp.asarray([1, 0]).reshape(1, 2, 1, 1)
    extra = _volume([[0.0, L3], [L3, 0.0], [5.0, -3.0]], (1, 3, 1, 1))
    labels3 = jnp.asarray([1, 0, 9]).reshape(1, 3, 1, 1)
    ref = dice_ce_loss(logits, labels)
    np.testing.assert_allclose(dice_ce_loss(extra, labels3, {"ignore_label": 9}), ref, rtol=1e-6)
    assert abs(float(dice_ce_loss(extra, jnp.where(labels3 == 9, 1, labels3))) - float(ref)) > 0.1


def test_deep_supervision_weights():
    np.testing.assert_allclose(deep_supervision_weights(3), [2 / 3, 1 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(deep_supervision_weights(3, drop_lowest=False),
                               [4 / 7, 2 / 7, 1 / 7], rtol=1e-6)
    np.testing.assert_allclose(deep_supervision_weights(1), [1.0])


def test_deep_supervision_loss_is_weighted_sum_on_strided_labels():
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.integers(0, 3, (2, 8, 8, 4)))
    outs = [jnp.asarray(rng.normal(size=(2, 8 // f, 8 // f, 4 // f, 3)), jnp.float32)
            for f in (1, 2, 4)]
    small = downsample_labels(labels, (4, 4, 2))
    np.testing.assert_array_equal(small, labels[:, ::2, ::2, ::2])
    parts = [dice_ce_loss(o, labels[:, ::f, ::f, ::f]) for o, f in zip(outs, (1, 2, 4))]
    for drop, w in [(True, [2 / 3, 1 / 3, 0]), (False, [4 / 7, 2 / 7, 1 / 7])]:
        got = segmentation_loss(outs, labels, {"ds_drop_lowest": drop})
        np.testing.assert_allclose(got, sum(a * b for a, b in zip(w, parts)), rtol=1e-5)
    np.testing.assert_allclose(segmentation_loss(outs[0], labels), parts[0], rtol=1e-6)


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="does not divide"):
        downsample_labels(jnp.zeros((1, 8, 8, 8)), (3, 4, 4))
    with pytest.raises(ValueError, match="did you mean .loss.smooth."):
        dice_ce_loss(jnp.zeros((1, 2, 2, 2, 2)), jnp.zeros((1, 2, 2, 2), int), {"smoth": 1})
    with pytest.raises(ValueError, match="disagree"):
        dice_ce_loss(jnp.zeros((1, 2, 2, 2, 2)), jnp.zeros((1, 2, 2, 1), int))
