"""nnU-Net-style patch sampling: crop boxes from the manifest, never a scan of a volume.

A batch of ``n`` samples has ``ceil(n * foreground_fraction)`` *foreground slots*, spread evenly
over the batch (:func:`foreground_slots`). A foreground sample picks a class uniformly among the
classes present in its case, then one of that class's stored voxel locations (manifest
``class_locations``), and centres the patch on it; every other sample takes a uniformly random
box. With class weights (:func:`exposure_weights`, ``data.class_sampling = "exposure"``) the
class is drawn in proportion to its weight instead. As in nnU-Net, a box is then shifted (never
past its voxel) so that it overhangs the volume only where the volume is smaller than the
patch; what still overhangs is padded by :func:`crop` (image 0, label background).

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
               locations: Mapping[int, np.ndarray], foreground: bool,
               class_weights: Mapping[int, float] | None = None) -> PatchBox:
    """One crop box; class-centred when ``foreground`` and the case has a labelled class.

    The class is drawn uniformly among the case's classes, or in proportion to
    ``class_weights`` (class id -> weight > 0; a class it lacks weighs 1) when given.
    """
    if any(s < 1 for s in size):
        raise ValueError(f"patch size must be positive, got {tuple(size)}")
    low, high = _lower_range(shape, size)
    if foreground and locations:
        classes = list(locations)
        if class_weights is None:
            class_id = classes[int(rng.integers(len(classes)))]
        else:
            p = np.array([class_weights.get(c, 1.0) for c in classes], np.float64)
            class_id = classes[int(rng.choice(len(classes), p=p / p.sum()))]
        locs = locations[class_id]
        voxel = locs[int(rng.integers(len(locs)))]
        lower = np.clip(voxel - np.asarray(size) // 2, low, high)
    else:
        class_id = 0
        lower = rng.integers(low, high + 1)
    return PatchBox(tuple(int(v) for v in lower), tuple(int(s) for s in size), class_id)


def _presence(lowers: np.ndarray, size: Sequence[int], points: np.ndarray,
              point_class: np.ndarray, n_classes: int) -> np.ndarray:
    """(boxes, n_classes) bool: which classes have a stored location inside each box."""
    inside = ((points[None] >= lowers[:, None]) &
              (points[None] < lowers[:, None] + np.asarray(size))).all(-1)
    return (inside.astype(np.float32) @ np.eye(n_classes, dtype=np.float32)[point_class]) > 0


def exposure_weights(cases: Sequence[tuple[Sequence[int], Mapping[int, np.ndarray]]],
                     size: Sequence[int], foreground_share: float, *, seed: int = 0,
                     random_boxes: int = 32, centred_boxes: int = 8, floor: float = 0.25,
                     ceiling: float = 8.0
                     ) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Class weights for the class-centred draw that even out how often each class is seen.

    ``cases``: (shape, :func:`class_locations`) of the training cases; ``foreground_share``:
    the share of class-centred samples (:func:`foreground_slots`' mean). The *exposure* of a
    class is the probability that a training patch holds at least one of its stored
    locations. It is estimated once, with :func:`sample_box` itself, from ``random_boxes``
    random and ``centred_boxes`` boxes centred on each class, per case. A class's weight is
    the mean exposure over its own under the uniform draw, held within ``[floor, ceiling]``:
    rarely seen classes (the brain of a whole body, which few random patches hold) are
    centred on more often, and classes that random patches already hold (liver, vertebrae)
    less. Returns the weights and the estimated exposures under the uniform and the weighted
    draw (class id -> value), all deterministic for a given ``seed``.
    """
    if not 0.0 <= foreground_share <= 1.0:
        raise ValueError(f"foreground share must be in [0, 1], got {foreground_share}")
    if not 0.0 < floor <= 1.0 <= ceiling:
        raise ValueError(f"need 0 < floor <= 1 <= ceiling, got {floor}, {ceiling}")
    classes = sorted({c for _, locations in cases for c in locations})
    if not classes:
        raise ValueError("no case has a labelled class to weight")
    index = {c: k for k, c in enumerate(classes)}
    n = len(classes)
    rng = np.random.default_rng([int(seed), 0xE4905])
    random_seen = np.zeros(n)
    centred_seen = np.zeros((len(cases), n, n))  # case, centred class, class seen
    present = np.zeros((len(cases), n), bool)
    for i, (shape, locations) in enumerate(cases):
        if not locations:
            continue
        points = np.concatenate([locations[c] for c in locations])
        point_class = np.concatenate([np.full(len(locations[c]), index[c]) for c in locations])
        lowers = [sample_box(rng, shape, size, {}, False).lower for _ in range(random_boxes)]
        random_seen += _presence(np.array(lowers), size, points, point_class, n).mean(0)
        for c in locations:
            present[i, index[c]] = True
            lowers = [sample_box(rng, shape, size, {c: locations[c]}, True).lower
                      for _ in range(centred_boxes)]
            centred_seen[i, index[c]] = _presence(np.array(lowers), size, points, point_class,
                                                  n).mean(0)
    random_seen /= len(cases)

    def exposure(w: np.ndarray) -> np.ndarray:
        share = present * w  # per case: probability of centring on each class
        share = share / np.maximum(share.sum(1, keepdims=True), 1e-30)
        centred = np.einsum("ik,ikc->c", share, centred_seen) / len(cases)
        return (1.0 - foreground_share) * random_seen + foreground_share * centred

    uniform = exposure(np.ones(n))
    w = np.clip(uniform.mean() / np.maximum(uniform, 1e-6), floor, ceiling)

    def as_dict(values: np.ndarray) -> dict[int, float]:
        return {c: float(v) for c, v in zip(classes, values)}

    return as_dict(w), as_dict(uniform), as_dict(exposure(w))


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
