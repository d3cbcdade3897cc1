"""Segmentation and PET quantification metrics on integer label maps (NumPy / SciPy only).

Definitions follow MONAI 1.x (``DiceMetric``, ``compute_hausdorff_distance(percentile=95)``,
``compute_surface_dice`` without sub-voxels), for one organ ``label`` of two equal-shape label maps:

* **Dice** ``2 |P & R| / (|P| + |R|)``.
* **Surfaces**: the voxels of a mask that its binary erosion (6-connected cross, outside = 0)
  removes, ``mask XOR erode(mask)``; distances in mm between voxel centres (``spacing`` per axis),
  by a Euclidean distance transform.
* **HD95**: ``max(p95(d(P->R)), p95(d(R->P)))``: the larger of the two *directed* 95th percentiles
  (linear interpolation), MONAI's definition -- not the percentile of the pooled distances.
* **NSD** at tolerance ``tau``: ``(#{d(P->R) <= tau} + #{d(R->P) <= tau}) / (|dP| + |dR|)``.

Empty masks (``P`` prediction, ``R`` reference), following MONAI:

==============  =====================================  ====  ====
case            Dice                                   HD95  NSD
==============  =====================================  ====  ====
P and R empty   NaN (1.0 with ``ignore_empty=False``)  NaN   NaN
R empty, P not  NaN (0.0 with ``ignore_empty=False``)  inf   0.0
P empty, R not  0.0                                    inf   0.0
==============  =====================================  ====  ====

NaN means "not defined, leave out of means" (as MONAI's reductions do); inf is a real failure.
(MONAI itself returns NaN for the percentile HD of a one-sided empty case only because
``torch.quantile`` interpolates ``inf - inf``; its plain Hausdorff distance there is inf, as here.)
PET statistics of an empty organ are ``volume_ml = 0`` and NaN SUVs; a relative error against a
zero or NaN reference is NaN.

**Organ statistics** (:func:`organ_statistics`, the table of ``stats`` and ``predict --stats``):
one row per organ with :data:`ORGAN_STATS_COLUMNS`; ``suv_std`` is the population standard
deviation, ``suv_median`` the median of the organ's voxels; ``sul_mean`` and ``suvbsa_mean`` are
``suv_mean`` times the SUL/SUVbw and SUVbsa/SUVbw ratios of the scan (NaN when unknown);
``fov_truncated`` is true when the organ's mask touches the first or last slice along any axis
(the organ may extend beyond the field of view, so its volume and SUVs may be partial).

**SUVpeak** (PERCIST-like, as defined here): the maximum over the organ's voxels of the mean SUV of
the image voxels whose centres lie within ``SUV_PEAK_RADIUS_MM`` (6.2 mm: a 1 cm^3 sphere) of that
voxel's centre; sphere voxels outside the organ count, those outside the image do not. At a coarse
spacing the sphere is just the voxels within that radius (at least the centre voxel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage, signal, spatial

SUV_PEAK_RADIUS_MM = (3 * 1000.0 / (4 * np.pi)) ** (1 / 3)  # 1 cm^3 sphere: 6.2035 mm
PET_STATS = ("volume_ml", "suv_mean", "suv_max", "suv_peak")
ORGAN_STATS_COLUMNS = ("organ", "label", "volume_ml", "suv_mean", "suv_max", "suv_peak", "suv_std",
                       "suv_median", "sul_mean", "suvbsa_mean", "fov_truncated", "units",
                       "suv_source", "decay_correction")
PROVENANCE_COLUMNS = ORGAN_STATS_COLUMNS[-3:]
# SUVpeak's sphere sums: one voxel of an FFT-convolved box (sums and counts) costs as much as
# about 50 direct gathers (530-730 ns vs 11 ns, BUILD_NOTES.md "Session 5 -- evaluation speed").
_GATHERS_PER_FFT_VOXEL = 32
# SUVpeak by FFT works on slabs of about this many voxels (float64 and complex copies of a
# slab: ~0.3 GB), whatever the organ's box
_FFT_SLAB_VOXELS = 8_000_000
# ... and takes over from the gathers above this many voxels (their index arrays: ~50 bytes a
# voxel)
_GATHER_POINTS_MAX = 2_000_000


def _spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    s = np.asarray(spacing, dtype=np.float64)
    if s.shape != (ndim,) or not np.all(s > 0):
        raise ValueError(f"spacing must be {ndim} positive values (mm), got {spacing!r}")
    return s


def _masks(pred: np.ndarray, ref: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred.shape} vs {ref.shape}")
    return pred == label, ref == label


def _dice(p: np.ndarray, r: np.ndarray, ignore_empty: bool) -> float:
    n_ref, n_pred = int(r.sum()), int(p.sum())
    if n_ref == 0:
        if ignore_empty:
            return float("nan")
        return 1.0 if n_pred == 0 else 0.0
    return 2.0 * int(np.logical_and(p, r).sum()) / (n_ref + n_pred)


def _edges(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(mask) ^ mask


def _surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Indices ``(n, 3)`` of a non-empty mask's surface voxels (:func:`_edges`, background
    outside the volume), in C order; the erosion runs on the mask's own bounding box."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return np.argwhere(_edges(np.pad(mask[box], 1))) + np.array([b.start - 1 for b in box])


def _nearest_distances(points: np.ndarray, targets: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel of ``points`` to the nearest voxel of ``targets`` (both
    ``(n, 3)`` indices): what a Euclidean distance transform of the targets gives at the
    points, with its arithmetic (index differences times spacing, squared, summed, square
    root), the nearest target found by a k-d tree."""
    nearest = spatial.cKDTree(targets * spacing).query(points * spacing)[1]
    steps = (targets[nearest] - points).astype(np.float64) * spacing
    return np.sqrt(np.add.reduce(steps * steps, axis=1))


def _surface_distances(p: np.ndarray, r: np.ndarray, spacing: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed surface distances (mm) P->R and R->P; None when either mask is empty."""
    if not p.any() or not r.any():
        return None
    ep, er = _surface_voxels(p), _surface_voxels(r)
    return _nearest_distances(ep, er, spacing), _nearest_distances(er, ep, spacing)


def _surface_metrics(p: np.ndarray, r: np.ndarray, spacing: np.ndarray, percentile: float = 95.0,
                     tolerance_mm: float = 0.0) -> tuple[float, float]:
    """(percentile Hausdorff distance, NSD at ``tolerance_mm``) with the empty-mask conventions."""
    dists = _surface_distances(p, r, spacing)
    if dists is None:
        both_empty = not p.any() and not r.any()
        return (float("nan"), float("nan")) if both_empty else (float("inf"), 0.0)
    hd = max(float(np.percentile(d, percentile)) for d in dists)
    nsd = sum(int((d <= tolerance_mm).sum()) for d in dists) / sum(d.size for d in dists)
    return hd, nsd


def dice(pred: np.ndarray, ref: np.ndarray, label: int, ignore_empty: bool = True) -> float:
    """Dice of organ ``label`` (NaN when the reference is empty and ``ignore_empty``)."""
    return _dice(*_masks(pred, ref, label), ignore_empty)


def hd95(pred: np.ndarray, ref: np.ndarray, label: int, spacing: Sequence[float],
         percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance in mm (MONAI: max of the directed percentiles)."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    p, r = _masks(pred, ref, label)
    return _surface_metrics(p, r, _spacing(spacing, p.ndim), percentile=percentile)[0]


def normalized_surface_dice(pred: np.ndarray, ref: np.ndarray, label: int, spacing: Sequence[float],
                            tolerance_mm: float) -> float:
    """Fraction of both surfaces within ``tolerance_mm`` of the other surface (MONAI's NSD)."""
    if tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    p, r = _masks(pred, ref, label)
    return _surface_metrics(p, r, _spacing(spacing, p.ndim), tolerance_mm=tolerance_mm)[1]


def volume_ml(labels: np.ndarray, label: int, spacing: Sequence[float]) -> float:
    """Volume of organ ``label`` in millilitres."""
    labels = np.asarray(labels)
    return int((labels == label).sum()) * float(np.prod(_spacing(spacing, labels.ndim))) / 1000.0


def _errors(name: str, pred_value: float, ref_value: float) -> dict[str, float]:
    """``<name>_pred``, ``<name>_ref``, ``<name>_error`` (pred - ref) and ``<name>_rel_error``."""
    rel = (pred_value - ref_value) / ref_value if ref_value and np.isfinite(ref_value) else float("nan")
    return {f"{name}_pred": pred_value, f"{name}_ref": ref_value,
            f"{name}_error": pred_value - ref_value, f"{name}_rel_error": rel}


def volume_error(pred: np.ndarray, ref: np.ndarray, label: int, spacing: Sequence[float]) -> dict[str, float]:
    """Predicted and reference volume (ml), signed error (ml) and relative error."""
    return _errors("volume_ml", volume_ml(pred, label, spacing), volume_ml(ref, label, spacing))


def _sphere_kernel(spacing: np.ndarray, radius_mm: float) -> np.ndarray:
    half = np.floor(radius_mm / spacing).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    return (sum(g**2 for g in grids) <= radius_mm**2).astype(np.float64)


def _sphere_means(image: np.ndarray, mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Mean of ``image`` over the ``kernel`` sphere around each voxel of ``mask`` (in C order),
    voxels outside ``image`` left out (neither summed nor counted).

    Two ways to the same sums: a few scattered voxels gather their sphere's voxels directly
    (cost: voxels x sphere size); a dense mask convolves its whole box by FFT (cost: box
    voxels, independent of the sphere). The cheaper one is taken; they agree to float
    rounding (1e-12 relative, tests/unit/test_metrics.py).
    """
    half = np.array(kernel.shape) // 2
    offsets = np.argwhere(kernel > 0) - half
    n = int(np.count_nonzero(mask))
    if n * len(offsets) > _GATHERS_PER_FFT_VOXEL * image.size or n > _GATHER_POINTS_MAX:
        return _sphere_means_fft(image, mask, kernel)
    points = np.argwhere(mask)
    pads = [(h, h) for h in half]
    padded, inside = np.pad(image, pads), np.pad(np.ones(image.shape, bool), pads)
    base = np.ravel_multi_index((points + half).T, padded.shape)
    steps = np.ravel_multi_index((offsets + half).T, padded.shape) - np.ravel_multi_index(
        tuple(half), padded.shape)
    sums, counts = np.zeros(len(points)), np.zeros(len(points), np.int32)
    for step in steps:
        sums += padded.ravel()[base + step]
        counts += inside.ravel()[base + step]
    return sums / counts


def _sphere_means_fft(image: np.ndarray, mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """:func:`_sphere_means` by FFT, slab by slab along the first axis (each slab read with the
    sphere's radius of margin on both sides, in float64), so that memory stays bounded on a
    whole-body box: an organ scattered over a 90 M-voxel volume would otherwise need several
    whole-volume float64 and complex copies."""
    h = kernel.shape[0] // 2
    plane = max(int(np.prod(image.shape[1:])), 1)
    depth = max(1, _FFT_SLAB_VOXELS // plane - 2 * h)
    out = []
    for x0 in range(0, image.shape[0], depth):
        x1 = min(x0 + depth, image.shape[0])
        lo, hi = max(x0 - h, 0), min(x1 + h, image.shape[0])
        inner = mask[x0:x1]
        if not inner.any():
            continue
        slab = image[lo:hi].astype(np.float64)
        sums = signal.fftconvolve(slab, kernel, mode="same")[x0 - lo:x1 - lo]
        counts = signal.fftconvolve(np.ones_like(slab), kernel, mode="same")[x0 - lo:x1 - lo]
        out.append(sums[inner] / np.round(counts[inner]))
    return np.concatenate(out) if out else np.zeros(0)


def _pet_stats(image: np.ndarray, mask: np.ndarray, spacing: np.ndarray) -> dict[str, float]:
    n = int(mask.sum())
    stats = {"volume_ml": n * float(np.prod(spacing)) / 1000.0}
    if n == 0:
        return stats | {"suv_mean": float("nan"), "suv_max": float("nan"), "suv_peak": float("nan")}
    kernel = _sphere_kernel(spacing, SUV_PEAK_RADIUS_MM)
    half = np.array(kernel.shape) // 2
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    box = tuple(slice(max(b.start - h, 0), min(b.stop + h, size))
                for b, h, size in zip(box, half, mask.shape))
    values = _sphere_means(image[box], mask[box], kernel)  # float64 sums of any input
    suv = image[mask].astype(np.float64)
    return stats | {"suv_mean": float(suv.mean()), "suv_max": float(suv.max()),
                    "suv_peak": float(values.max())}


def _image(image_suv: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image_suv)
    if image.shape != shape:
        raise ValueError(f"PET image shape {image.shape} differs from the label map's {shape}")
    return image


def organ_pet_stats(image_suv: np.ndarray, labels: np.ndarray, label: int,
                    spacing: Sequence[float]) -> dict[str, float]:
    """``volume_ml``, ``suv_mean``, ``suv_max`` and ``suv_peak`` of organ ``label`` (NaN SUVs if absent)."""
    labels = np.asarray(labels)
    return _pet_stats(_image(image_suv, labels.shape), labels == label, _spacing(spacing, labels.ndim))


def _pet_errors(image: np.ndarray, p: np.ndarray, r: np.ndarray, spacing: np.ndarray) -> dict[str, float]:
    sp, sr = _pet_stats(image, p, spacing), _pet_stats(image, r, spacing)
    return {k: v for name in PET_STATS for k, v in _errors(name, sp[name], sr[name]).items()}


def pet_quantification_errors(image_suv: np.ndarray, pred: np.ndarray, ref: np.ndarray, label: int,
                              spacing: Sequence[float]) -> dict[str, float]:
    """Per statistic of :data:`PET_STATS`: ``<stat>_pred``, ``_ref``, ``_error``, ``_rel_error``."""
    p, r = _masks(pred, ref, label)
    return _pet_errors(_image(image_suv, p.shape), p, r, _spacing(spacing, p.ndim))


def organ_metrics(pred: np.ndarray, ref: np.ndarray, label: int, spacing: Sequence[float],
                  image_suv: np.ndarray | None = None, nsd_tolerance_mm: float = 2.0) -> dict[str, float]:
    """Every metric of one organ in one pass: ``dice``, ``hd95_mm``, ``nsd``, the volume errors and,
    with a PET image, the SUV statistics and their errors (keys as in the functions above)."""
    p, r = _masks(pred, ref, label)
    s = _spacing(spacing, p.ndim)
    union = p | r
    if union.any():  # everything below depends only on a neighbourhood of the two masks
        margin = np.array(_sphere_kernel(s, SUV_PEAK_RADIUS_MM).shape) // 2 + 1
        box = ndimage.find_objects(union.astype(np.uint8))[0]
        box = tuple(slice(max(b.start - h, 0), min(b.stop + h, n)) for b, h, n in zip(box, margin, p.shape))
        p, r = p[box], r[box]
        image_suv = None if image_suv is None else _image(image_suv, union.shape)[box]
    hd, nsd = _surface_metrics(p, r, s, percentile=95.0, tolerance_mm=nsd_tolerance_mm)
    row = {"dice": _dice(p, r, ignore_empty=True), "hd95_mm": hd, "nsd": nsd}
    if image_suv is None:
        voxel_ml = float(np.prod(s)) / 1000.0
        return row | _errors("volume_ml", int(p.sum()) * voxel_ml, int(r.sum()) * voxel_ml)
    return row | _pet_errors(_image(image_suv, p.shape), p, r, s)


def organ_statistics(image_suv: np.ndarray, labels: np.ndarray, spacing: Sequence[float],
                     names: Mapping[int, str], provenance: Mapping[str, str],
                     sul_per_suv: float | None = None, bsa_per_suv: float | None = None
                     ) -> list[dict[str, Any]]:
    """One row of :data:`ORGAN_STATS_COLUMNS` per organ of ``names`` (label id -> name, in
    that order): volume, SUV mean/max/peak/std/median, SUL and SUVbsa means, truncation by
    the field of view; ``provenance`` gives ``units``, ``suv_source`` and ``decay_correction``."""
    labels = np.asarray(labels)
    s = _spacing(spacing, labels.ndim)
    image = _image(image_suv, labels.shape)
    missing = [c for c in PROVENANCE_COLUMNS if c not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {missing}")
    if not np.issubdtype(labels.dtype, np.integer):  # bool or float masks, as before
        labels = labels.astype(np.int64)
    boxes = ndimage.find_objects(labels) if labels.size else []
    # Each organ's work stays inside its box widened by the SUVpeak sphere (what _pet_stats
    # reads around it): no whole-volume mask per organ on a 90 M-voxel total-body grid.
    half = np.array(_sphere_kernel(s, SUV_PEAK_RADIUS_MM).shape) // 2
    rows = []
    for label, name in names.items():
        box = boxes[label - 1] if 0 < label <= len(boxes) else None
        around = (tuple(slice(max(b.start - h, 0), min(b.stop + h, n))
                        for b, h, n in zip(box, half, labels.shape))
                  if box is not None else (slice(0, 0),) * labels.ndim)
        mask = labels[around] == label
        stats = _pet_stats(image[around], mask, s)
        values = image[around][mask].astype(np.float64)
        mean = stats["suv_mean"]
        rows.append({
            "organ": name, "label": int(label), **stats,
            "suv_std": float(values.std()) if values.size else float("nan"),
            "suv_median": float(np.median(values)) if values.size else float("nan"),
            "sul_mean": mean * sul_per_suv if sul_per_suv is not None else float("nan"),
            "suvbsa_mean": mean * bsa_per_suv if bsa_per_suv is not None else float("nan"),
            "fov_truncated": box is not None and box_touches_edge(box, labels.shape),
            **{c: provenance[c] for c in PROVENANCE_COLUMNS}})
    return rows


def box_touches_edge(box: tuple[slice, ...], shape: tuple[int, ...]) -> bool:
    """Whether an organ's tight bounding box (``ndimage.find_objects``) reaches the first or
    last slice of any axis of a volume of ``shape``: the field of view may cut the organ."""
    return any(b.start == 0 or b.stop == n for b, n in zip(box, shape))
