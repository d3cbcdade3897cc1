"""Position channels: where each voxel lies in the scan, as extra input channels.

A small patch (the demo's 32^3 voxels are 19 cm) cannot tell a left kidney from a right one, the
brain from a hot bladder, or an arm from the abdomen: the network sees no more than the patch.
``data.position_channels`` names the axes whose positions the network gets besides the
normalized PET, each voxel's physical position relative to the centre of the scan (RAS axes, in
metres)::

    position[d] = (index[d] - (shape[d] - 1) / 2) * spacing[d] / POSITION_SCALE_MM

- ``"xy"``: the transaxial positions only. A PET image is reconstructed around the scanner's
  axis, in a transaxial field of view that does not depend on how much of the body the scan
  covers, so these mean the same on a total-body, a 106 cm and a skull-base-to-thigh scan
  (issue 15): left/right and anterior/posterior from the bore's centre.
- ``"xyz"``: the axial position too. That assumes a field of view centred on the body (the axial
  centre of a conventional scan is about 40 cm from a total-body one's), so use it only for data
  of one field of view.
- ``""``: none, the PET alone.

The same numbers are built in training (per patch, from the patch's place in its case: see
:func:`patch_position` and ``training.augment``) and at inference (per volume:
:func:`network_input`, or per band in the streamed sliding window). A total-body scan is about
2 m long, so the values stay within about +-1. Spatial augmentation moves the position with the
content it belongs to; a mirror flip of an axis negates that axis's position, so a flipped patch
reads as the same patch cut from the mirrored scan (consistent with the left/right label swap).
This module is NumPy only: input workers and the serving path use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

POSITION_SCALE_MM = 1000.0
ALL_AXES = (0, 1, 2)
# ``data.position_channels`` -> the axes whose positions are input channels, in channel order
AXES: dict[str, tuple[int, ...]] = {"": (), "xy": (0, 1), "xyz": ALL_AXES}


def position_axes(data_cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """The axes whose positions a training config's ``data`` section (or a model record) gives
    the network. Records from before ``"xy"`` hold a bool (``True``: all three axes) and configs
    from before the option none."""
    value = data_cfg.get("position_channels", "")
    if isinstance(value, bool):
        return ALL_AXES if value else ()
    if value not in AXES:
        raise ValueError(f"position_channels must be one of {sorted(AXES)}, got {value!r}")
    return AXES[value]


def enabled(data_cfg: Mapping[str, Any]) -> bool:
    """Whether a config's ``data`` section (or a model record) asks for position channels."""
    return bool(position_axes(data_cfg))


def input_channels(data_cfg: Mapping[str, Any]) -> int:
    """The network's number of input channels: PET, plus one per position axis."""
    return 1 + len(position_axes(data_cfg))


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


def grid_position(axes: Sequence[np.ndarray], which: Sequence[int] = ALL_AXES) -> np.ndarray:
    """``(len(a0), len(a1), len(a2), len(which))`` float32 position channels of the axes
    ``which`` from per-axis positions (e.g. index subsets of :func:`axis_positions`)."""
    shape = tuple(len(a) for a in axes)
    return np.stack([np.broadcast_to(np.asarray(axes[d], np.float32).reshape(
        [-1 if i == d else 1 for i in range(3)]), shape) for d in which], axis=-1)


def volume_position(shape: Sequence[int], spacing: Sequence[float],
                    which: Sequence[int] = ALL_AXES) -> np.ndarray:
    """``(X, Y, Z, len(which))`` float32 position channels of a whole volume."""
    return grid_position(axis_positions(shape, spacing), which)


def network_input(normalized: np.ndarray, spacing: Sequence[float],
                  which: Sequence[int]) -> np.ndarray:
    """The network's input volume ``(X, Y, Z, C)`` float32 from a normalized PET volume
    ``(X, Y, Z)`` or ``(X, Y, Z, 1)``: the PET channel, then the positions of the axes
    ``which`` (:func:`position_axes`; none for ``()``)."""
    image = normalized if normalized.ndim == 4 else normalized[..., None]
    if image.ndim != 4 or image.shape[-1] != 1:
        raise ValueError(f"expected a PET volume (X, Y, Z) or (X, Y, Z, 1), got {normalized.shape}")
    image = image.astype(np.float32, copy=False)
    if not which:
        return image
    return np.concatenate([image, volume_position(image.shape[:3], spacing, which)], axis=-1)
