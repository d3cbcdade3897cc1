"""The dataset fingerprint, read from the store's manifest alone (no voxel is read).

Per case the manifest holds the stored shape and spacing, the class voxel counts, the intensity
percentiles and the metadata (tracer). The spacing the images were *acquired* at is taken from a
case's ``original_spacing`` when the manifest has it, else the stored spacing stands in for it
(``spacing_source`` says which). Shapes are reported in stored voxels and in millimetres (the
extent, which resampling keeps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from petseg_jax.data.schema import LabelSchema
from petseg_jax.planning import PlanError

ORIGINAL_SPACING = "original_spacing"
SUV_STATS = ("p50", "p99.5")


def _summary(values: np.ndarray) -> dict[str, list[float]]:
    """Per-axis median, 10th/90th percentiles, min and max of an ``(n, 3)`` array."""
    return {"median": np.median(values, 0).tolist(),
            "p10": np.percentile(values, 10, 0).tolist(),
            "p90": np.percentile(values, 90, 0).tolist(),
            "min": values.min(0).tolist(), "max": values.max(0).tolist()}


def _vector(entry: Mapping[str, Any], key: str, case_id: str) -> np.ndarray:
    value = entry.get(key)
    try:
        vec = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        vec = np.zeros(0)
    if vec.shape != (3,) or not np.all(vec > 0):
        raise PlanError(f"case {case_id}: manifest {key!r} must be 3 positive numbers, "
                        f"got {value!r}")
    return vec


def case_geometry(cases: Mapping[str, Mapping[str, Any]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(shapes, spacings, original_spacings, source)``: three ``(n, 3)`` arrays in case order,
    and where the original spacings came from (``"original_spacing"`` or ``"store"``)."""
    if not cases:
        raise PlanError("the manifest lists no case")
    shapes = np.stack([_vector(e, "shape", c) for c, e in cases.items()])
    spacings = np.stack([_vector(e, "spacing", c) for c, e in cases.items()])
    if all(ORIGINAL_SPACING in e for e in cases.values()):
        original = np.stack([_vector(e, ORIGINAL_SPACING, c) for c, e in cases.items()])
        return shapes, spacings, original, ORIGINAL_SPACING
    return shapes, spacings, spacings, "store"


def _class_sizes(cases: Mapping[str, Mapping[str, Any]], spacings: np.ndarray,
                 schema: LabelSchema) -> dict[str, dict[str, float]]:
    """Per foreground class: cases holding it, median/min voxels and median volume (ml)."""
    voxel_ml = np.prod(spacings, 1) / 1000.0
    out = {}
    for label_id in schema.foreground_ids:
        counts = np.array([float(e.get("class_voxels", {}).get(str(label_id), 0))
                           for e in cases.values()])
        present = counts > 0
        entry: dict[str, float] = {"cases": int(present.sum())}
        if present.any():
            entry |= {"median_voxels": float(np.median(counts[present])),
                      "min_voxels": float(counts[present].min()),
                      "median_ml": float(np.median((counts * voxel_ml)[present]))}
        out[schema.name_of(label_id)] = entry
    return out


def _intensity_by_tracer(cases: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per tracer: the median over cases of each intensity statistic (raw image units) and, over
    the cases with an SUV factor, of the SUV median and 99.5th percentile."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for case_id, entry in cases.items():
        tracer = str(entry.get("metadata", {}).get("tracer", "unknown"))
        if not isinstance(entry.get("intensity"), Mapping):
            raise PlanError(f"case {case_id}: the manifest has no intensity statistics")
        groups.setdefault(tracer, []).append(entry)
    out = {}
    for tracer in sorted(groups):
        entries = groups[tracer]
        keys = sorted(set.intersection(*(set(e["intensity"]) for e in entries)))
        stats: dict[str, Any] = {"cases": len(entries)}
        stats |= {k: float(np.median([e["intensity"][k] for e in entries])) for k in keys}
        with_suv = [e for e in entries if e.get("suv_factor")]
        stats["cases_with_suv"] = len(with_suv)
        for k in SUV_STATS:
            if with_suv and k in keys:
                stats[f"suv_{k}"] = float(np.median([e["intensity"][k] * e["suv_factor"]
                                                     for e in with_suv]))
        out[tracer] = stats
    return out


def dataset_fingerprint(manifest: Mapping[str, Any], schema: LabelSchema) -> dict[str, Any]:
    """A JSON-ready summary of the store: spacings, shapes, class sizes, intensities per tracer."""
    cases = manifest["cases"]
    shapes, spacings, original, source = case_geometry(cases)
    return {
        "cases": len(cases),
        "store_spacing": [float(s) for s in manifest["spacing"]],
        "spacing_source": source,
        "spacing": _summary(original),
        "shape": _summary(shapes),
        "extent_mm": _summary(shapes * spacings),
        "classes": _class_sizes(cases, spacings, schema),
        "intensity": _intensity_by_tracer(cases),
    }
