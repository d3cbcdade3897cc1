"""Planning rules and the memory search, on synthetic memory curves (no compile)."""

import math

import numpy as np
import pytest

from petseg_jax.planning import PlanError
from petseg_jax.planning.heuristics import (BOTTLENECK_VOXELS, MIN_BATCH, candidate_ladder,
                                            capped_features, patch_ladder, shapes_at_spacing,
                                            smallest_patch, target_spacing)
from petseg_jax.planning.search import find_largest_fitting, format_table


def test_target_spacing_is_the_median_when_isotropic_enough():
    spacings = np.array([[2.0, 2.0, 3.0], [3.0, 3.0, 3.0], [4.0, 4.0, 5.0]])
    shapes = np.array([[200, 200, 300]] * 3)
    target, reason = target_spacing(spacings, shapes)
    assert target == [3.0, 3.0, 3.0] and "anisotropic" not in reason


def test_target_spacing_anisotropy_rule():
    # z is > 3x coarser and has > 3x fewer voxels: it takes its 10th percentile spacing.
    z = np.array([4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0])
    spacings = np.stack([np.full_like(z, 1.0), np.full_like(z, 1.0), z], 1)
    shapes = np.array([[512, 512, 40]] * len(z))
    target, reason = target_spacing(spacings, shapes)
    assert target[:2] == [1.0, 1.0]
    assert target[2] == pytest.approx(np.percentile(z, 10))
    assert "axis 2 is anisotropic" in reason
    # Coarse but not short in voxels: the median stays.
    target, _ = target_spacing(spacings, np.array([[512, 512, 400]] * len(z)))
    assert target[2] == pytest.approx(9.0)


def test_shapes_at_spacing_keep_the_extent():
    out = shapes_at_spacing(np.array([[100, 50, 30]]), np.array([[2.0, 2.0, 4.0]]), [4.0, 4.0, 2.0])
    assert out.tolist() == [[50, 25, 60]]


@pytest.mark.parametrize("median", [(100, 60, 320), (40, 32, 48), (300, 170, 950), (10, 64, 64)])
def test_patch_ladder(median):
    ladder = patch_ladder(np.array(median))
    voxels = [math.prod(p) for p, _ in ladder]
    assert all(b > a for a, b in zip(voxels, voxels[1:]))  # strictly increasing
    assert ladder[0][0] == (smallest_patch(),) * 3
    for patch, n_stages in ladder:
        stride = 2 ** (n_stages - 1)
        assert all(p % stride == 0 for p in patch)
        assert all(p <= max(m, smallest_patch()) for p, m in zip(patch, median))
        bottleneck = min(patch) // stride
        assert BOTTLENECK_VOXELS <= bottleneck < 2 * BOTTLENECK_VOXELS
    top = np.array(ladder[-1][0], float)
    stride = 2 ** (ladder[-1][1] - 1)
    # The largest patch is the median shape, rounded down to the stride (at least the minimum).
    expected = np.maximum(np.floor(np.array(median) / stride) * stride, smallest_patch())
    assert top.tolist() == expected.tolist()


def test_ladder_follows_the_median_aspect():
    median = np.array([100, 60, 320])
    for patch, n_stages in patch_ladder(median)[-20:]:
        ratio = np.array(patch) / median
        assert ratio.max() - ratio.min() <= 2 ** (n_stages - 1) / median.min() + 1e-9


def test_candidate_ladder_grows_batch_after_the_median_shape():
    ladder = candidate_ladder(np.array([40, 32, 48]), max_batch=5)
    assert all(c.batch == MIN_BATCH for c in ladder[:-3])
    assert [c.batch for c in ladder[-4:]] == [2, 3, 4, 5]
    assert len({c.patch for c in ladder[-4:]}) == 1
    assert all(b.voxels > a.voxels for a, b in zip(ladder, ladder[1:]))


def test_capped_features():
    assert capped_features(32, 512)[:2] == (32, 320)
    assert capped_features(8, 64)[:2] == (8, 64)
    with pytest.raises(PlanError):
        capped_features(64, 32)


# --- the search, on a synthetic memory curve ------------------------------------------------

LADDER = candidate_ladder(np.array([100, 60, 320]), max_batch=8)


def _fixed(c):
    return 0.05 * c.n_stages  # GiB: deeper nets hold more parameters


def _memory(c):
    """Activations linear in voxels, plus a small depth-dependent wiggle the model cannot see."""
    return _fixed(c) + 0.2 + 2.5e-6 * c.voxels * (1 + 0.03 * (c.n_stages % 2))


def _search(budget, max_compiles=10):
    calls = []

    def compiled(c):
        calls.append(c)
        return _memory(c), 0.0

    return find_largest_fitting(LADDER, compiled, _fixed, budget, max_compiles,
                                progress=False), calls


@pytest.mark.parametrize("budget", [0.5, 1.0, 2.0, 4.0, 8.0, 30.0])
def test_search_finds_the_exact_boundary(budget):
    result, calls = _search(budget)
    fits = [i for i, c in enumerate(LADDER) if _memory(c) <= budget]
    assert result.converged
    assert result.chosen.index == max(fits)
    assert len(calls) <= 6  # the secant search, not a walk of the ladder
    assert result.chosen.compiled_gib <= budget
    table = format_table(result.trials, budget, result.chosen)
    assert "<- plan" in table and len(table.splitlines()) == len(result.trials) + 3


def test_search_is_monotonic_in_the_budget():
    chosen = [_search(b)[0].chosen.candidate.voxels for b in np.geomspace(0.4, 40, 25)]
    assert all(b >= a for a, b in zip(chosen, chosen[1:]))


def test_search_top_of_the_ladder():
    result, _ = _search(1e6)
    assert result.chosen.index == len(LADDER) - 1 and result.converged


def test_budget_below_the_smallest_candidate_is_an_error():
    with pytest.raises(PlanError, match="smallest candidate .* needs .* GiB per device"):
        _search(0.1)


def test_search_stops_after_max_compiles():
    result, calls = _search(8.0, max_compiles=2)
    assert len(calls) == 2 and result.chosen.compiled_gib <= 8.0
