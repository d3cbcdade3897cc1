"""A synthetic store (PET-like blobs in a body) written straight in the store format.

For the loader benchmark and the tests: it needs neither the phantom generator nor the ingest,
only :mod:`petseg_jax.data.store`. Each case is an elliptic body cylinder of background uptake
holding one ellipsoid per class (random centre, radii and uptake; the first classes small, like
adrenals), with Poisson noise at a known count scale (counts per kBq/ml, recorded in the case's
metadata as ``true_count_scale`` for tests). Half the cases carry SUV metadata (weight and
injected activity), the others none (``suv_factor`` null), so both normalization paths run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from petseg_jax.data import store
from petseg_jax.data.ingest import component_counts
from petseg_jax.data.normalization import intensity_stats
from petseg_jax.data.schema import DEFAULT_SCHEMA, LabelSchema

TRACERS = ("FDG", "PSMA", "DOTATATE", "FAPI", "Grazytracer")
MAX_LOCATIONS = 1000


def _ellipsoid(shape: Sequence[int], centre: np.ndarray, radii: np.ndarray
               ) -> tuple[tuple[slice, ...], np.ndarray]:
    """Bounding-box slices and the boolean mask of an ellipsoid inside them."""
    lo = np.maximum(np.floor(centre - radii).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radii).astype(int) + 1, shape)
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    return tuple(slice(a, b) for a, b in zip(lo, hi)), dist <= 1.0


def synthetic_case(rng: np.random.Generator, shape: Sequence[int], class_ids: Sequence[int],
                   count_scale: float, kbq_per_suv: float) -> tuple[np.ndarray, np.ndarray]:
    """(image in kBq/ml, float32; label, uint8) of one case."""
    shape = tuple(int(s) for s in shape)
    x, y = np.ogrid[:shape[0], :shape[1]]
    cx, cy = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    rx, ry = 0.42 * shape[0], 0.32 * shape[1]
    body2d = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
    label = np.zeros(shape, np.uint8)
    suv = np.full(shape, 0.02, np.float32)  # scatter and randoms outside the body
    suv[body2d] = 1.0
    for i, cid in enumerate(class_ids):
        small = i < 2  # the first two classes stay tiny, like adrenals or the thyroid
        radii = rng.uniform(1.0, 2.0, 3) if small else rng.uniform(0.06, 0.16, 3) * min(shape)
        centre = np.array([rng.uniform(cx - rx / 2, cx + rx / 2), rng.uniform(cy - ry / 2,
                           cy + ry / 2), rng.uniform(radii[2], shape[2] - 1 - radii[2])])
        sl, mask = _ellipsoid(shape, centre, radii)
        label[sl][mask] = cid
        suv[sl][mask] = rng.uniform(0.5, 15.0)
    expected = suv * (kbq_per_suv * count_scale)
    image = rng.poisson(expected).astype(np.float32) / np.float32(count_scale)
    return image, label


def _case_entry(image: np.ndarray, label: np.ndarray, spacing: Sequence[float],
                metadata: dict[str, Any], suv_factor: float | None,
                rng: np.random.Generator) -> dict[str, Any]:
    flat = label.ravel()
    fg = np.flatnonzero(flat)
    fg = fg[np.argsort(flat[fg], kind="stable")]
    ids, starts, counts = np.unique(flat[fg], return_index=True, return_counts=True)
    locations = {}
    for cid, start, n in zip(ids, starts, counts):
        idx = fg[start:start + n]
        if n > MAX_LOCATIONS:
            idx = np.sort(rng.choice(idx, MAX_LOCATIONS, replace=False))
        locations[str(int(cid))] = np.stack(np.unravel_index(idx, label.shape), 1).tolist()
    return {"shape": list(image.shape), "spacing": list(map(float, spacing)),
            "affine": np.diag(list(map(float, spacing)) + [1.0]).tolist(),
            "metadata": metadata, "suv_factor": suv_factor,
            "class_voxels": {str(int(c)): int(n) for c, n in zip(ids, counts)},
            "class_locations": locations, "class_components": component_counts(label),
            "intensity": intensity_stats(image)}


def write_synthetic_store(out: str | Path, *, cases: int, shape: Sequence[int], seed: int = 0,
                          image_dtype: str = "float32", spacing: Sequence[float] = (4.0, 4.0, 4.0),
                          schema: LabelSchema = DEFAULT_SCHEMA, num_classes: int | None = None,
                          count_scale: float = 10.0, progress: bool = False) -> Path:
    """Write a complete store of ``cases`` synthetic cases (manifest last, atomically)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    class_ids = list(schema.foreground_ids[:num_classes])
    entries = {}
    for i in tqdm(range(cases), desc="synthetic store", disable=not progress):
        case_id = f"case_{i:03d}"
        weight_kg, injected_mbq = float(rng.uniform(50, 100)), float(rng.uniform(200, 400))
        kbq_per_suv = injected_mbq * 1e3 / (weight_kg * 1e3)
        scale = count_scale * float(rng.uniform(0.5, 2.0))
        image, label = synthetic_case(rng, shape, rng.permutation(class_ids), scale, kbq_per_suv)
        image = image.astype(image_dtype)
        metadata: dict[str, Any] = {
            "tracer": TRACERS[i % len(TRACERS)], "center": f"C{i % 2 + 1}",
            "dose_reduction_factor": 1.0, "attenuation_corrected": True,
            "split": "val" if i == cases - 1 and cases > 1 else "train",
            "true_count_scale": scale}
        suv_factor = None
        if i % 2 == 0:
            metadata |= {"patient_weight_kg": weight_kg, "injected_activity_bq": injected_mbq * 1e6,
                         "units": "kBq/ml"}
            suv_factor = 1.0 / kbq_per_suv
        store.write_array(store.image_path(out, case_id), image, spacing)
        store.write_array(store.label_path(out, case_id), label, spacing)
        # independent Poisson noise: white, variance image / count scale
        variance = np.maximum(image.astype(np.float32), 0.0) / np.float32(scale)
        store.write_array(store.noise_path(out, case_id),
                          np.stack([variance, np.zeros_like(variance)], -1), spacing)
        entries[case_id] = _case_entry(image, label, spacing, metadata, suv_factor, rng) | {
            "noise": {"scale": 1.0 / scale, "texture": None}}
    manifest = {"format_version": store.FORMAT_VERSION, "schema": schema.to_json(),
                "spacing": list(map(float, spacing)), "image_dtype": image_dtype, "cases": entries}
    store.write_json_atomic(out / store.MANIFEST, manifest)
    return out
