"""Label-map post-processing (NumPy / SciPy)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage

# 26-connectivity: voxels touching by a face, an edge or a corner belong to one component.
_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def largest_connected_component(labels: np.ndarray, label_ids: Iterable[int] | None = None) -> np.ndarray:
    """Keep, for each organ id, only its largest 26-connected component (the rest becomes 0).

    ``label_ids`` defaults to every non-zero id present; ids not listed are left untouched
    (inference specs list the organs that are one component in every training case). Ties
    keep the component met first in C (x-major) scan order. Returns a new array of the same dtype.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3-D label map, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    present = np.unique(labels)
    if present[0] < 0:
        raise ValueError(f"labels must be non-negative, found {present[0]}")
    out = labels.copy()
    ids = present[present != 0] if label_ids is None else np.intersect1d(present[present != 0], list(label_ids))
    boxes = ndimage.find_objects(labels) if ids.size else []
    for label_id in ids:
        box = boxes[int(label_id) - 1]
        view = out[box]
        mask = view == label_id
        components, n = ndimage.label(mask, structure=_CONNECTIVITY_26)
        if n > 1:
            sizes = np.bincount(components.ravel())[1:]
            view[mask & (components != int(np.argmax(sizes)) + 1)] = 0
    return out


def signal_region(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the scan's region with signal: voxels > 0, enclosed holes filled.

    nnU-Net's nonzero mask, for PET: air that the reconstruction clipped to zero holds no
    activity, so no organ; cold organs inside the body (lungs, airways) are enclosed and
    filled. On a scan without exact zeros it is the whole volume (no effect).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be a 3-D volume, got shape {image.shape}")
    return ndimage.binary_fill_holes(image > 0)


def single_component_ids(counts: Iterable[Mapping[str, int] | None]) -> list[int] | None:
    """The ids that are ONE connected component in every case where they occur (the organs
    largest-component post-processing cannot hurt on these cases), from per-case
    counts (the manifest's ``class_components``, written by ingest); ``None`` when a case has no counts (a store from before they were
    recorded)."""
    seen: dict[int, bool] = {}
    for case in counts:
        if case is None:
            return None
        for key, n in case.items():
            seen[int(key)] = seen.get(int(key), True) and int(n) == 1
    return sorted(i for i, single in seen.items() if single)
