"""Dose re-simulation: mean preserved, variance grows with the factor, seeded, count scale."""

import numpy as np
import pytest
from scipy import stats

from petseg_jax.data.dose import (DoseConfig, augment_dose, estimate_count_scale, poisson_draws,
                                  sample_dose_factor, simulate_dose_reduction)

LEVEL, SCALE = 5.0, 10.0  # image units, counts per image unit: 50 counts per voxel
FLAT = np.full((64, 64, 64), LEVEL, np.float32)


@pytest.mark.parametrize("factor", [2.0, 10.0, 50.0])  # 50, 5.6 and 1.0 counts per voxel
def test_mean_preserved_and_variance_matches_the_count_model(factor):
    out = simulate_dose_reduction(FLAT, factor, SCALE, np.random.default_rng(1))
    assert out.dtype == np.float32
    expected_var = LEVEL * (factor - 1.0) / SCALE  # added on top of the input's own LEVEL/SCALE
    assert abs(out.mean() - LEVEL) < 4 * np.sqrt(expected_var / out.size)
    assert out.var() == pytest.approx(expected_var, rel=0.03)


def test_variance_grows_with_factor():
    variances = [simulate_dose_reduction(FLAT, f, SCALE, np.random.default_rng(2)).var()
                 for f in (1.0, 2.0, 4.0, 20.0, 100.0)]
    assert variances[0] == 0.0
    assert all(a < b for a, b in zip(variances, variances[1:]))


@pytest.mark.parametrize("lam", [0.05, 0.7, 1.9, 2.0, 6.0, 40.0])  # exact below 2, then approx.
def test_poisson_draws_follow_the_poisson_law(lam):
    counts = poisson_draws(np.full(400_000, lam, np.float32), np.random.default_rng(3))
    assert counts.dtype == np.float32 and (counts == np.round(counts)).all() and counts.min() >= 0
    k = np.arange(int(lam + 10 * np.sqrt(lam) + 10))
    observed = np.bincount(counts.astype(int), minlength=k.size)[:k.size] / counts.size
    assert 0.5 * np.abs(observed - stats.poisson.pmf(k, lam)).sum() < 0.012  # total variation
    assert counts.mean() == pytest.approx(lam, rel=0.01, abs=0.002)
    assert counts.var() == pytest.approx(lam, rel=0.015, abs=0.002)


def test_poisson_draws_mixed_intensities_keep_their_place():
    lam = np.array([0.0, 0.5, 300.0, 1.0, 5000.0] * 1000, np.float32).reshape(50, 20, 5)
    counts = poisson_draws(lam, np.random.default_rng(4))
    assert counts.shape == lam.shape
    means = counts.reshape(-1, 5).mean(0)
    np.testing.assert_allclose(means, [0.0, 0.5, 300.0, 1.0, 5000.0], rtol=0.1, atol=0.05)
    assert (counts[lam == 0] == 0).all()


def test_seeded_and_zero_stays_zero():
    image = FLAT.copy()
    image[:10] = 0.0
    a = simulate_dose_reduction(image, 10.0, SCALE, np.random.default_rng(4))
    b = simulate_dose_reduction(image, 10.0, SCALE, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert (a[:10] == 0).all()
    assert not np.array_equal(a, simulate_dose_reduction(image, 10.0, SCALE,
                                                         np.random.default_rng(5)))
    c = simulate_dose_reduction(image, 10.0, SCALE, np.random.default_rng(4), inplace=True)
    assert c is image and np.array_equal(c, a)


def test_estimate_count_scale_from_poisson_image():
    rng = np.random.default_rng(6)
    x, y, z = np.meshgrid(*[np.linspace(0, 1, 48)] * 3, indexing="ij")
    activity = 2.0 + 6.0 * x + 3.0 * np.sin(3 * y) * z  # smooth, 2..11 units
    for scale in (3.0, 30.0):
        image = rng.poisson(activity * scale) / scale
        assert estimate_count_scale(image) == pytest.approx(scale, rel=0.15)
    assert estimate_count_scale(image, {"count_scale": 7.0}) == 7.0


def test_estimate_count_scale_errors():
    with pytest.raises(ValueError, match="inside the body"):
        estimate_count_scale(np.zeros((20, 20, 20)))
    with pytest.raises(ValueError, match="3D"):
        estimate_count_scale(np.ones((20, 20)))


def test_loguniform_factors():
    rng = np.random.default_rng(7)
    cfg = DoseConfig.from_config(dict(min_factor=1.0, max_factor=100.0))
    logs = np.log10([sample_dose_factor(rng, cfg) for _ in range(4000)])
    assert logs.min() >= 0.0 and logs.max() <= 2.0
    assert np.histogram(logs, bins=4, range=(0, 2))[0] == pytest.approx([1000] * 4, rel=0.15)


def test_choice_and_uniform_factors():
    rng = np.random.default_rng(8)
    choice = DoseConfig.from_config({"distribution": "choice", "choices": (4.0, 20.0)})
    picks = {sample_dose_factor(rng, choice) for _ in range(50)}
    assert picks == {4.0, 20.0}
    uniform = DoseConfig.from_config(dict(distribution="uniform", min_factor=2.0, max_factor=3.0))
    draws = [sample_dose_factor(rng, uniform) for _ in range(200)]
    assert 2.0 <= min(draws) and max(draws) <= 3.0 and np.mean(draws) == pytest.approx(2.5,
                                                                                      abs=0.1)


def test_augment_dose_probability_and_stored_factor():
    rng = np.random.default_rng(9)
    off = DoseConfig.from_config(dict(prob=0.0))
    assert augment_dose(FLAT, rng, off, SCALE)[0] is FLAT
    always = DoseConfig.from_config({"prob": 1.0, "distribution": "choice", "choices": (10.0,)})
    out, factor = augment_dose(FLAT, rng, always, SCALE, stored_factor=1.0)
    assert factor == 10.0 and out.var() > 0
    out, factor = augment_dose(FLAT, rng, always, SCALE, stored_factor=20.0)  # cannot add counts
    assert factor == 20.0 and out is FLAT
    some = DoseConfig.from_config(dict(prob=0.3, min_factor=2.0))
    applied = sum(augment_dose(FLAT[:2, :2, :2], rng, some, SCALE)
                  [1] > 1.0 for _ in range(2000))
    assert applied == pytest.approx(600, abs=80)


def test_bad_dose_config():
    with pytest.raises(ValueError, match="prob"):
        DoseConfig.from_config(dict(prob=2.0))
    with pytest.raises(ValueError, match="distribution"):
        DoseConfig.from_config({"distribution": "gamma"})
    with pytest.raises(ValueError, match="did you mean .data.dose_augmentation.max_factor."):
        DoseConfig.from_config({"max": 3})
    with pytest.raises(ValueError, match=">= 1"):
        simulate_dose_reduction(FLAT, 0.5, SCALE, np.random.default_rng(0))
