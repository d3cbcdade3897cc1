"""nnU-Net-style planning rules: target spacing, and the ordered ladder of (patch, depth, batch).

The ladder is what the memory search walks: candidates in strictly increasing voxels per device
step (patch voxels x batch). Patches keep the aspect of the median case shape (in voxels at the
target spacing), never exceed it, are multiples of the network's total stride, and set the depth:
the U-Net pools (stride 2 per stage, every axis) until the patch's shortest axis is 4-8 voxels at
the bottleneck. Once the patch is the median shape, the batch grows instead (from 2 per device).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from petseg_jax.planning import PlanError

ANISOTROPY_THRESHOLD = 3.0  # nnU-Net: an axis 3x coarser than the others is "anisotropic"
BOTTLENECK_VOXELS = 4  # the shortest patch axis keeps 4..7 voxels at the bottleneck
MIN_STAGES, MAX_STAGES = 3, 7
MIN_BATCH = 2  # per device (batch Dice and statistics need more than one patch)
MAX_BATCH = 64  # per device: beyond this the ladder stops (the plan says so)
MAX_FEATURES_CAP = 320  # nnU-Net's cap on 3-D feature maps
LADDER_GROWTH = 1.01  # scale step of the patch search before snapping to the stride


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the search: a patch, the U-Net depth it implies, a batch per device."""

    patch: tuple[int, int, int]
    n_stages: int
    batch: int

    @property
    def stride(self) -> int:
        return 2 ** (self.n_stages - 1)

    @property
    def voxels(self) -> int:
        """Voxels per device and step (patch voxels x batch)."""
        return math.prod(self.patch) * self.batch

    def label(self) -> str:
        return f"{'x'.join(map(str, self.patch))} b{self.batch} s{self.n_stages}"


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[list[float], str]:
    """nnU-Net's rule: the median spacing, except that an axis which is both much coarser than the
    others (> 3x) and much shorter in voxels (x 3 < the others) takes its 10th percentile spacing
    (not finer than the other axes), so that resampling does not invent slices.

    ``spacings`` and ``shapes`` are ``(n, 3)``: each case's acquired spacing and its shape there.
    """
    target = np.median(spacings, 0)
    median_shape = np.median(shapes, 0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    aniso_voxels = median_shape[worst] * ANISOTROPY_THRESHOLD < min(median_shape[others])
    reason = f"median spacing {np.round(target, 4).tolist()} mm"
    if aniso_spacing and aniso_voxels:
        coarse = float(np.percentile(spacings[:, worst], 10))
        coarse = max(coarse, float(max(target[others])) + 1e-5)
        reason += (f"; axis {worst} is anisotropic (> {ANISOTROPY_THRESHOLD:g}x coarser and "
                   f"{ANISOTROPY_THRESHOLD:g}x fewer voxels): its 10th percentile {coarse:.4g} mm")
        target[worst] = coarse
    return [round(float(s), 6) for s in target], reason


def shapes_at_spacing(shapes: np.ndarray, spacings: np.ndarray,
                      target: np.ndarray | Sequence[float]) -> np.ndarray:
    """Case shapes in voxels once resampled from ``spacings`` to ``target`` (one spacing, or
    one per case), extents kept."""
    return np.maximum(np.round(shapes * spacings / np.asarray(target)), 1).astype(int)


def stages_for(shortest_axis: int) -> int:
    """U-Net stages so that the shortest patch axis is ``BOTTLENECK_VOXELS``..2x at the bottom."""
    pools = math.floor(math.log2(max(shortest_axis, 1) / BOTTLENECK_VOXELS))
    return int(np.clip(pools + 1, MIN_STAGES, MAX_STAGES))


def snap(raw_patch: np.ndarray) -> tuple[tuple[int, int, int], int]:
    """A real-valued patch -> (the patch rounded down to its depth's stride, the depth)."""
    n_stages = stages_for(int(min(raw_patch)))
    stride = 2 ** (n_stages - 1)
    patch = np.maximum(np.floor(raw_patch / stride), BOTTLENECK_VOXELS) * stride
    return tuple(int(p) for p in patch), n_stages


def smallest_patch() -> int:
    """The shortest axis of the smallest patch the ladder starts from."""
    return BOTTLENECK_VOXELS * 2 ** (MIN_STAGES - 1)


def patch_ladder(median_shape: np.ndarray) -> list[tuple[tuple[int, int, int], int]]:
    """(patch, n_stages) pairs in strictly increasing voxels, from the smallest patch to the
    median shape: the median shape scaled down (every axis at least the smallest patch)."""
    shape = np.asarray(median_shape, dtype=np.float64)
    low = float(smallest_patch())
    cap = np.maximum(shape, low)
    ladder, scale = [], low / cap.max()
    while True:
        scale = min(scale, 1.0)
        patch, n_stages = snap(np.clip(shape * scale, low, cap))
        if not ladder or math.prod(patch) > math.prod(ladder[-1][0]):
            ladder.append((patch, n_stages))
        if scale == 1.0:
            return ladder
        scale *= LADDER_GROWTH


def candidate_ladder(median_shape: np.ndarray, max_batch: int = MAX_BATCH) -> list[Candidate]:
    """Every patch of :func:`patch_ladder` at the minimum batch, then the largest patch at
    batch 3, 4, .. ``max_batch`` per device."""
    if max_batch < MIN_BATCH:
        raise PlanError(f"max batch per device {max_batch} is below the minimum {MIN_BATCH}")
    patches = patch_ladder(median_shape)
    ladder = [Candidate(p, n, MIN_BATCH) for p, n in patches]
    top, n_top = patches[-1]
    ladder += [Candidate(top, n_top, b) for b in range(MIN_BATCH + 1, max_batch + 1)]
    return ladder


def capped_features(base_features: int, max_features: int) -> tuple[int, int, str]:
    """(base, max, reason): the config's widths with the maximum capped as nnU-Net's."""
    if base_features < 1 or max_features < base_features:
        raise PlanError(f"model.base_features={base_features} and model.max_features="
                        f"{max_features} must satisfy 1 <= base <= max")
    capped = min(max_features, MAX_FEATURES_CAP)
    reason = (f"features start at {base_features} and double per stage up to {capped}"
              + (f" (config's {max_features} capped at {MAX_FEATURES_CAP})"
                 if capped < max_features else ""))
    return base_features, capped, reason
