"""nnU-Net-style patch sampling: crop boxes from the manifest, never a scan of a volume.

A batch of ``n`` samples has ``ceil(n * foreground_fraction)`` *foreground slots*, spread evenly
over the batch (:func:`foreground_slots`). A foreground sample picks a class uniformly among the
classes present in its case, then one of that class's stored voxel locations (manifest
``class_locations``), and centres the patch on it; every other sample takes a uniformly random
box. As in nnU-Net, a box is then shifted (never past its voxel) so that it overhangs the volume
only where the volume is smaller than the patch; what still overhangs is padded by
:func:`crop` (image 0, label background).

Pure numpy; boxes are plain integers, so the same box can be read from a numpy array or,
intersection only, from a TensorStore array (:func:`box_slices`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class PatchBox:
    """A crop box: ``lower`` corner (may lie outside the volume) and ``size``.

    ``class_id`` is the class whose voxel the box is centred on (0 for a random box).
    """

    lower: tuple[int, ...]
    size: tuple[int, ...]
    class_id: int = 0


def foreground_slots(batch_size: int, fraction: float) -> np.ndarray:
    """Boolean mask of the batch slots that must be class-centred: exactly
    ``ceil(batch_size * fraction)`` of them, spread evenly (slot 0 first)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"foreground_fraction must be in [0, 1], got {fraction}")
    marks = [math.ceil(round(j * fraction, 9)) for j in range(batch_size + 1)]
    return np.diff(marks) > 0


def class_locations(case: Mapping[str, Any], case_id: str = "?") -> dict[int, np.ndarray]:
    """The present classes of a manifest case entry -> their stored voxel locations (n, 3)."""
    shape = np.asarray(case["shape"])
    out = {}
    for key, locs in case.get("class_locations", {}).items():
        arr = np.asarray(locs, dtype=np.int64).reshape(-1, len(shape))
        if arr.size == 0:
            continue
        if (arr < 0).any() or (arr >= shape).any():
            raise ValueError(f"case {case_id}: class {key} has locations outside the volume "
                             f"shape {shape.tolist()}")
        out[int(key)] = arr
    return dict(sorted(out.items()))


def _lower_range(shape: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    shape, size = np.asarray(shape), np.asarray(size)
    need = np.maximum(size - shape, 0)
    low = -(need // 2)
    high = shape + need // 2 + need % 2 - size
    return low, high


def sample_box(rng: np.random.Generator, shape: Sequence[int], size: Sequence[int],
               locations: Mapping[int, np.ndarray], foreground: bool) -> PatchBox:
    """One crop box; class-centred when ``foreground`` and the case has a labelled class."""
    if any(s < 1 for s in size):
        raise ValueError(f"patch size must be positive, got {tuple(size)}")
    low, high = _lower_range(shape, size)
    if foreground and locations:
        classes = list(locations)
        class_id = classes[int(rng.integers(len(classes)))]
        locs = locations[class_id]
        voxel = locs[int(rng.integers(len(locs)))]
        lower = np.clip(voxel - np.asarray(size) // 2, low, high)
    else:
        class_id = 0
        lower = rng.integers(low, high + 1)
    return PatchBox(tuple(int(v) for v in lower), tuple(int(s) for s in size), class_id)


def box_slices(box: PatchBox, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(source slices into the volume, destination slices into the patch) of the overlap."""
    src, dst = [], []
    for lo, n, s in zip(box.lower, box.size, shape):
        a, b = max(lo, 0), min(lo + n, s)
        if b <= a:  # no overlap along this axis: empty slices
            a = b = 0
        src.append(slice(a, b))
        dst.append(slice(a - lo, a - lo + b - a))
    return tuple(src), tuple(dst)


def crop(array: np.ndarray, box: PatchBox, pad_value: float = 0, dtype=None) -> np.ndarray:
    """The box's patch of ``array`` (leading axes = the box's), padded with ``pad_value``."""
    ndim = len(box.size)
    out = np.full(tuple(box.size) + array.shape[ndim:], pad_value, dtype=dtype or array.dtype)
    src, dst = box_slices(box, array.shape[:ndim])
    out[dst] = array[src]
    return out
