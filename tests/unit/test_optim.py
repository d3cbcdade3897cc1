"""Learning-rate schedules and optimiser updates."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from petseg_jax.training.optim import make_optimizer, make_schedule


def test_sgd_poly_schedule():
    sched = make_schedule({"name": "sgd", "lr": 0.01}, total_steps=100)
    np.testing.assert_allclose(sched(0), 0.01, rtol=1e-6)
    np.testing.assert_allclose(sched(50), 0.01 * 0.5 ** 0.9, rtol=1e-6)
    np.testing.assert_allclose(sched(99), 0.01 * 0.01 ** 0.9, rtol=1e-5)
    np.testing.assert_allclose(sched(100), 0.0, atol=1e-12)


def test_adamw_warmup_then_cosine():
    cfg = {"name": "adamw", "lr": 1e-3, "warmup_steps": 10, "end_lr_ratio": 0.1}
    sched = make_schedule(cfg, total_steps=110)
    np.testing.assert_allclose([sched(0), sched(5), sched(10)], [0.0, 5e-4, 1e-3], rtol=1e-6)
    # half-way through the cosine (step 10 + 50): mean of peak and end value
    np.testing.assert_allclose(sched(60), 1e-3 * (0.1 + 0.9 * 0.5), rtol=1e-5)
    np.testing.assert_allclose(sched(110), 1e-4, rtol=1e-5)


def test_sgd_nesterov_with_l2_and_clipping_matches_hand_update():
    cfg = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.5, "grad_clip": 1.0,
           "poly_exponent": 1.0}
    opt = make_optimizer(cfg, total_steps=10)
    p = {"w": jnp.asarray([1.0, -2.0])}
    state = opt.init(p)
    g = {"w": jnp.asarray([3.0, 4.0])}  # norm 5 -> clipped to (0.6, 0.8)
    upd, state = opt.update(g, state, p)
    clipped = np.array([0.6, 0.8]) + 0.5 * np.array([1.0, -2.0])  # + L2
    buf = clipped  # momentum buffer after one step
    np.testing.assert_allclose(upd["w"], -0.1 * (clipped + 0.9 * buf), rtol=1e-6)
    p2 = optax.apply_updates(p, upd)
    upd2, _ = opt.update(g, state, p2)
    lr1 = 0.1 * (1 - 1 / 10)
    clipped2 = np.array([0.6, 0.8]) + 0.5 * np.asarray(p2["w"])
    buf2 = 0.9 * buf + clipped2
    np.testing.assert_allclose(upd2["w"], -lr1 * (clipped2 + 0.9 * buf2), rtol=1e-5)


def test_adamw_first_step_and_no_clip():
    opt = make_optimizer({"name": "adamw", "lr": 1e-2, "weight_decay": 0.0, "grad_clip": None},
                         total_steps=5)
    p = {"w": jnp.asarray([1.0, 1.0])}
    upd, _ = opt.update({"w": jnp.asarray([100.0, -1e-3])}, opt.init(p), p)
    np.testing.assert_allclose(upd["w"], [-1e-2, 1e-2], rtol=1e-3)  # Adam: sign * lr


def test_bad_config_is_reported():
    with pytest.raises(ValueError, match="unknown config key .optim.learning_rate.*did you mean"):
        make_schedule({"learning_rate": 1.0}, 10)
    with pytest.raises(ValueError, match="optim.name"):
        make_optimizer({"name": "lion"}, 10)
    with pytest.raises(ValueError, match="warmup_steps"):
        make_schedule({"name": "adamw", "warmup_steps": 10}, 10)
