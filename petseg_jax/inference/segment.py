"""A normalized volume in, its organ label map out: what every predictor shares.

Evaluation, validation during training, NIfTI prediction and the served model all go through
:func:`segment`: the network input (PET plus position channels when the model has them, built
band by band), the streamed sliding window (bounded memory, argmax as each slab is finished), optional left/right-aware test-time
mirroring, background outside the scan's signal region (the spec's ``nonzero_mask``) and
outside each organ's training position range (``position_ranges``), and optional
largest-component post-processing of the organs the spec lists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from petseg_jax.data import position
from petseg_jax.inference.postprocess import (largest_connected_component,
                                              outside_position_ranges, signal_region)
from petseg_jax.inference.sliding_window import Progress, sliding_window_labels
from petseg_jax.resources import Stages
from petseg_jax.inference.spec import spec_schema

# Test-time mirroring flips the left/right (RAS x) axis: the one the training augmentation flips.
MIRROR_AXES = (0,)


def segment(x: np.ndarray, spacing: Sequence[float], predict_fn: Callable, params: Any,
            spec: Mapping[str, Any], *, window: Sequence[int] | None = None,
            mirror: bool = False, largest_component: bool = False,
            progress: Progress | None = None, stages: Stages | None = None) -> np.ndarray:
    """Label map ``(X, Y, Z)`` of a normalized PET volume ``x`` ``(X, Y, Z)`` at ``spacing`` mm.

    ``predict_fn(params, x)`` gives logits for ``(n, *window, C)`` inputs (``window`` defaults
    to the spec's patch size) and must be the same object across calls, so that the compiled
    program is reused. ``mirror`` adds test-time mirroring of the R-L axis (on top of the
    spec's ``mirror_axes``); ``largest_component`` keeps the largest component of the spec's
    ``largest_component_labels`` (of every organ when the spec does not know them). With
    the spec's ``nonzero_mask`` voxels outside the scan's signal region
    (:func:`~petseg_jax.inference.postprocess.signal_region` of ``x``: normalization keeps
    "no activity" at 0) are background, and so are an organ's voxels outside its spec
    ``position_ranges`` (where it lay in the training cases, with a margin), both before the
    largest components are chosen. ``progress(windows_done, windows_total)`` follows the
    sliding window; ``stages`` times it as ``"windows"`` and the rest as ``"post-processing"``.
    """
    stages = stages or Stages()
    axes = set(spec["mirror_axes"]) | (set(MIRROR_AXES) if mirror else set())
    image = x if x.ndim == 4 else x[..., None]
    with stages("windows"):
        labels = sliding_window_labels(
            position.network_input(image, spacing, False), predict_fn,
            tuple(window or spec["patch_size"]), overlap=spec["overlap"], mode="gaussian",
            batch_size=spec.get("batch_size", 2), mirror_axes=tuple(sorted(axes)),
            mirror_lut=spec_schema(spec).mirror_lut(), params=params,
            position_spacing=tuple(spacing) if position.enabled(spec) else None,
            progress=progress)
    with stages("post-processing"):
        if spec.get("nonzero_mask", False):
            labels[~signal_region(image[..., 0])] = 0
        if spec.get("position_ranges"):
            labels = outside_position_ranges(labels, spacing, spec["position_ranges"])
        if largest_component:
            labels = largest_connected_component(labels, spec.get("largest_component_labels"))
    return labels
