"""Soft Dice + cross-entropy (nnU-Net's DC_and_CE_loss), ignore label and deep supervision.

Loss config keys (the ``loss`` section of ``configs/default.py``; missing keys take its values):

* ``batch_dice``: Dice sums over the whole batch (nnU-Net's batch Dice) instead of per sample.
* ``smooth`` (1e-5), ``do_bg`` (False): nnU-Net's Dice smoothing and background handling.
* ``ignore_label``: ``None`` or a label value whose voxels count in neither term.
* ``weight_ce``, ``weight_dice``: term weights (1, 1).
* ``dice_present_only``: the Dice term averages only the classes present in the ground truth
  (per batch with ``batch_dice``, else per sample); ``False`` (nnU-Net) averages all classes,
  so an absent class scores ~0 whenever anything of it is predicted.
* ``ds_drop_lowest``: deep supervision weights are ``1 / 2**i`` (full resolution first) with
  the lowest-resolution head's weight set to 0 (nnU-Net v2 does this), then normalised to sum 1;
  ``False`` keeps that head.

The Dice term is ``1 - mean soft Dice`` (nnU-Net uses ``-mean``: same gradient, but the total
stays >= 0 here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from petseg_jax.configuration import section


def loss_config(loss_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``loss_cfg`` over the schema's ``loss`` section (unknown keys are an error)."""
    return section("loss", loss_cfg)


def mean_soft_dice(probs: jax.Array, onehot: jax.Array, mask: jax.Array, *, batch_dice: bool,
                   smooth: float, present_only: bool) -> jax.Array:
    """Soft Dice per class (over the batch with ``batch_dice``, else per sample), averaged over
    all classes, or with ``present_only`` over those whose ground truth is not empty (0 when
    none is).

    ``probs``, ``onehot``: ``(N, X, Y, Z, K)``; ``mask``: ``(N, X, Y, Z, 1)`` of 0/1.
    """
    axes = (0, 1, 2, 3) if batch_dice else (1, 2, 3)
    tp = jnp.sum(probs * onehot * mask, axes)
    sum_pred = jnp.sum(probs * mask, axes)
    sum_gt = jnp.sum(onehot * mask, axes)
    dice = (2 * tp + smooth) / jnp.maximum(sum_pred + sum_gt + smooth, 1e-8)
    if not present_only:
        return jnp.mean(dice)
    present = (sum_gt > 0).astype(dice.dtype)
    return jnp.sum(dice * present) / jnp.maximum(jnp.sum(present), 1.0)


def dice_ce_loss(logits: jax.Array, labels: jax.Array, loss_cfg: Mapping[str, Any] | None = None
                 ) -> jax.Array:
    """``weight_ce * CE + weight_dice * (1 - mean soft Dice)`` for one logit map.

    ``logits``: ``(N, X, Y, Z, K)`` float; ``labels``: ``(N, X, Y, Z)`` int.
    """
    cfg = loss_config(loss_cfg)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} disagree in shape")
    logits = logits.astype(jnp.float32)
    k = logits.shape[-1]
    labels = labels.astype(jnp.int32)
    if cfg["ignore_label"] is None:
        mask = jnp.ones(labels.shape, jnp.float32)
    else:
        mask = (labels != cfg["ignore_label"]).astype(jnp.float32)
        labels = jnp.where(mask > 0, labels, 0)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    ce = jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    onehot = jax.nn.one_hot(labels, k, dtype=jnp.float32)
    first = 0 if cfg["do_bg"] else 1
    dice = mean_soft_dice(jnp.exp(logp)[..., first:], onehot[..., first:], mask[..., None],
                          batch_dice=cfg["batch_dice"], smooth=cfg["smooth"],
                          present_only=cfg["dice_present_only"])
    return cfg["weight_ce"] * ce + cfg["weight_dice"] * (1.0 - dice)


def deep_supervision_weights(n: int, drop_lowest: bool = True) -> np.ndarray:
    """Weights ``1 / 2**i`` for ``n`` outputs (full resolution first), normalised to sum 1;
    ``drop_lowest`` zeroes the last (lowest-resolution) one when ``n > 1``."""
    w = 0.5 ** np.arange(n, dtype=np.float64)
    if drop_lowest and n > 1:
        w[-1] = 0.0
    return (w / w.sum()).astype(np.float32)


def downsample_labels(labels: jax.Array, spatial_shape: Sequence[int]) -> jax.Array:
    """Labels ``(N, X, Y, Z)`` at a head's resolution by strided selection (voxel 0 of every
    block), which is where the network's strided convs (padding k // 2) centre their windows."""
    factors = []
    for full, small in zip(labels.shape[1:], spatial_shape):
        if small < 1 or full % small:
            raise ValueError(f"head shape {tuple(spatial_shape)} does not divide label shape "
                             f"{labels.shape[1:]}")
        factors.append(full // small)
    return labels[:, ::factors[0], ::factors[1], ::factors[2]]


def segmentation_loss(outputs: jax.Array | Sequence[jax.Array], labels: jax.Array,
                      loss_cfg: Mapping[str, Any] | None = None) -> jax.Array:
    """The training loss: :func:`dice_ce_loss` of one logit map, or the deep-supervision
    weighted sum over a list of maps (full resolution first) against downsampled labels."""
    cfg = loss_config(loss_cfg)
    if not isinstance(outputs, (list, tuple)):
        return dice_ce_loss(outputs, labels, cfg)
    weights = deep_supervision_weights(len(outputs), cfg["ds_drop_lowest"])
    return sum(float(w) * dice_ce_loss(o, downsample_labels(labels, o.shape[1:4]), cfg)
               for w, o in zip(weights, outputs) if w > 0)
