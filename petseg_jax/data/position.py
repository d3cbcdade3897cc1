"""Position channels: where each voxel lies in the scan, as three extra input channels.

A small patch (the demo's 32^3 voxels are 19 cm) cannot tell a left kidney from a right one, the
brain from a hot bladder, or an arm from the abdomen: the network sees no more than the patch.
With ``data.position_channels`` the network gets, besides the normalized PET, each voxel's
physical position relative to the centre of the scan (RAS axes, in metres)::

    position[d] = (index[d] - (shape[d] - 1) / 2) * spacing[d] / POSITION_SCALE_MM

The same numbers are built in training (per patch, from the patch's place in its case: see
:func:`patch_position` and ``training.augment``) and at inference (per volume:
:func:`network_input`, before the sliding window cuts windows). A total-body scan is
about 2 m long, so the values stay within about +-1. Spatial augmentation moves the position with
the content it belongs to; a mirror flip of an axis negates that axis's position, so a flipped
patch reads as the same patch cut from the mirrored scan (consistent with the left/right label
swap). The channels assume the field of view is centred on the body, as in (total-)body PET.
This module is NumPy only: input workers and the serving path use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

POSITION_SCALE_MM = 1000.0
POSITION_CHANNELS = 3


def enabled(data_cfg: Mapping[str, Any]) -> bool:
    """Whether a training config's ``data`` section asks for position channels (configs from
    before the option have none)."""
    return bool(data_cfg.get("position_channels", False))


def input_channels(data_cfg: Mapping[str, Any]) -> int:
    """The network's number of input channels: PET, plus three position channels if enabled."""
    return 1 + (POSITION_CHANNELS if enabled(data_cfg) else 0)


def patch_position(lower: Sequence[int], shape: Sequence[int],
                   spacing: Sequence[float]) -> np.ndarray:
    """``(2, 3)`` float32: the position of a patch's first voxel (row 0) and the position step
    per voxel along each axis (row 1), for a patch whose first voxel is ``lower`` in a volume
    of ``shape`` at ``spacing`` mm (``lower`` may be negative for a padded patch)."""
    if not len(lower) == len(shape) == len(spacing) == 3:
        raise ValueError(f"lower, shape and spacing need 3 values each, got {lower}, {shape}, "
                         f"{spacing}")
    step = np.asarray(spacing, np.float64) / POSITION_SCALE_MM
    origin = (np.asarray(lower, np.float64) - (np.asarray(shape, np.float64) - 1) / 2) * step
    return np.stack([origin, step]).astype(np.float32)


def axis_positions(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Per axis, the float32 positions of a volume's voxels along it (1-D arrays)."""
    origin, step = patch_position((0, 0, 0), shape, spacing)
    return [o + s * np.arange(n, dtype=np.float32) for o, s, n in zip(origin, step, shape)]


def grid_position(axes: Sequence[np.ndarray]) -> np.ndarray:
    """``(len(a0), len(a1), len(a2), 3)`` float32 position channels from per-axis positions
    (e.g. index subsets of :func:`axis_positions`)."""
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)


def volume_position(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """``(X, Y, Z, 3)`` float32 position channels of a whole volume."""
    return grid_position(axis_positions(shape, spacing))


def network_input(normalized: np.ndarray, spacing: Sequence[float],
                  position_channels: bool) -> np.ndarray:
    """The network's input volume ``(X, Y, Z, C)`` float32 from a normalized PET volume
    ``(X, Y, Z)`` or ``(X, Y, Z, 1)``: the PET channel, then the position channels if enabled."""
    image = normalized if normalized.ndim == 4 else normalized[..., None]
    if image.ndim != 4 or image.shape[-1] != 1:
        raise ValueError(f"expected a PET volume (X, Y, Z) or (X, Y, Z, 1), got {normalized.shape}")
    image = image.astype(np.float32, copy=False)
    if not position_channels:
        return image
    return np.concatenate([image, volume_position(image.shape[:3], spacing)], axis=-1)
