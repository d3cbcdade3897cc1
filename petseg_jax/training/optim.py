"""Optimisers and learning-rate schedules (optax).

Optimiser config keys (the ``optim`` section of ``configs/default.py``; missing keys take its
values):

* ``name``: ``"sgd"`` (nnU-Net: Nesterov SGD, poly decay) or ``"adamw"`` (warmup + cosine).
* ``lr``: peak learning rate (nnU-Net SGD: 0.01; AdamW is typically 1e-3 to 3e-4).
* ``weight_decay``: SGD: L2 term ``wd * param`` added to the gradients (like torch's SGD,
  nnU-Net: 3e-5); AdamW: decoupled decay.
* ``momentum`` (0.99), ``nesterov`` (True): SGD.
* ``poly_exponent`` (0.9): SGD schedule ``lr * (1 - step / total_steps) ** poly_exponent``.
* ``warmup_steps`` (0): AdamW linear warm-up from 0 (also applied to SGD when > 0).
* ``end_lr_ratio`` (0.0): AdamW cosine ends at ``lr * end_lr_ratio``.
* ``b1``, ``b2``, ``eps``: AdamW moments.
* ``grad_clip`` (12.0, nnU-Net): global-norm clipping of the raw gradients; 0/None disables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import optax

from petseg_jax.configuration import section

NAMES = ("sgd", "adamw")


def optim_config(optim_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``optim_cfg`` over the schema's ``optim`` section, validated."""
    cfg = section("optim", optim_cfg)
    if cfg["name"] not in NAMES:
        raise ValueError(f"optim.name must be one of {NAMES}, got {cfg['name']!r}")
    return cfg


def make_schedule(optim_cfg: Mapping[str, Any] | None, total_steps: int) -> optax.Schedule:
    """Learning rate per step: optional linear warm-up, then poly decay (SGD) or cosine
    (AdamW) reaching its end value at ``total_steps``."""
    cfg = optim_config(optim_cfg)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    lr, warmup = float(cfg["lr"]), int(cfg["warmup_steps"])
    if not 0 <= warmup < total_steps:
        raise ValueError(f"warmup_steps ({warmup}) must be in [0, total_steps={total_steps})")
    decay_steps = total_steps - warmup
    if cfg["name"] == "sgd":
        exponent = float(cfg["poly_exponent"])

        def decay(step):
            frac = jnp.clip(step / decay_steps, 0.0, 1.0)
            return lr * (1.0 - frac) ** exponent
    else:
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=float(cfg["end_lr_ratio"]))
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def make_optimizer(optim_cfg: Mapping[str, Any] | None, total_steps: int
                   ) -> optax.GradientTransformation:
    """Gradient clipping, then SGD-Nesterov with L2 (nnU-Net) or AdamW, on ``make_schedule``."""
    cfg = optim_config(optim_cfg)
    schedule = make_schedule(cfg, total_steps)
    parts = []
    if cfg["grad_clip"]:
        parts.append(optax.clip_by_global_norm(float(cfg["grad_clip"])))
    if cfg["name"] == "sgd":
        if cfg["weight_decay"]:
            parts.append(optax.add_decayed_weights(float(cfg["weight_decay"])))
        parts.append(optax.sgd(schedule, momentum=float(cfg["momentum"]) or None,
                               nesterov=bool(cfg["nesterov"])))
    else:
        parts.append(optax.adamw(schedule, b1=float(cfg["b1"]), b2=float(cfg["b2"]),
                                 eps=float(cfg["eps"]), weight_decay=float(cfg["weight_decay"])))
    return optax.chain(*parts)
