"""A normalized volume in, its organ label map out: what every predictor shares.

Evaluation, validation during training, NIfTI prediction and the served model all go through
:func:`segment`: the body's box (windows only there, when the spec has ``body_box``), the
network input (PET plus position channels when the model has them, built band by band), the
streamed sliding window (bounded memory, argmax as each slab is finished),
left/right-aware test-time mirroring, background outside the scan's signal region (the spec's
``nonzero_mask``) and outside each organ's training position range (``position_ranges``), and
largest-component post-processing of the organs the spec lists: all of it as the spec (the
model folder's record) says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from petseg_jax.data import position
from petseg_jax.inference.postprocess import (body_box, largest_connected_component,
                                              outside_position_ranges, signal_region)
from petseg_jax.inference.sliding_window import Progress, Windows, sliding_window_labels
from petseg_jax.inference.spec import spec_schema
from petseg_jax.resources import Stages


def window_size(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]
                ) -> tuple[int, ...]:
    """The spec's patch, shrunk on axes where the volume is smaller to the volume's size
    rounded up to a multiple of the network's total stride (the window is padded to it)."""
    return tuple(min(int(p), -(-int(s) // int(t)) * int(t))
                 for s, p, t in zip(shape, patch, stride))


def segment(x: np.ndarray, spacing: Sequence[float], predict_fn: Callable, params: Any,
            spec: Mapping[str, Any], *, progress: Progress | None = None,
            stages: Stages | None = None) -> np.ndarray:
    """Label map ``(X, Y, Z)`` of a normalized PET volume ``x`` ``(X, Y, Z)`` at ``spacing`` mm.

    ``predict_fn(params, x)`` gives logits for ``(n, *window, C)`` inputs (the spec's patch,
    shrunk to small volumes: :func:`window_size`) and must be the same object across calls, so
    that the compiled program is reused. Everything else is the spec's decision (the model
    folder's record): with ``body_box``, windows only over the body's box
    (:func:`~petseg_jax.inference.postprocess.body_box`; background outside it); test-time
    mirroring of its ``mirror_axes``; with ``nonzero_mask``, voxels
    outside the scan's signal region (:func:`~petseg_jax.inference.postprocess.signal_region`
    of ``x``: normalization keeps "no activity" at 0) are background, and so are an organ's
    voxels outside its ``position_ranges`` (where it lay in the training cases, with a
    margin), both before the largest components of ``largest_component_labels`` are kept
    (when ``largest_component``). ``progress(windows_done, windows_total)`` follows the
    sliding window; ``stages`` times the body box and the windows as ``"windows"`` and the rest
    as ``"post-processing"``.
    """
    stages = stages or Stages()
    image = x if x.ndim == 4 else x[..., None]
    with stages("windows"):
        region = body_box(image[..., 0], **spec["body_box"]) if spec["body_box"] else None
        labels = sliding_window_labels(
            position.network_input(image, spacing, ()), predict_fn,
            Windows(window_size(image.shape[:3], spec["patch_size"], spec["total_stride"]),
                    overlap=spec["overlap"], mode="gaussian", batch_size=spec["batch_size"],
                    mirror_axes=tuple(sorted(spec["mirror_axes"])),
                    mirror_lut=spec_schema(spec).mirror_lut()),
            params=params,
            position_spacing=tuple(spacing) if position.enabled(spec) else None,
            position_axes=position.position_axes(spec),
            progress=progress, region=region)
    with stages("post-processing"):
        if spec["nonzero_mask"]:
            labels[~signal_region(image[..., 0])] = 0
        if spec["position_ranges"]:
            labels = outside_position_ranges(labels, spacing, spec["position_ranges"])
        if spec["largest_component"]:
            labels = largest_connected_component(labels, spec["largest_component_labels"])
    return labels
