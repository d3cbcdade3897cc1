"""Evaluate a trained model the way the paper does: Dice per organ, tracer, center, dose, AC/NAC.

The library behind ``python -m petseg_jax.evaluate``. Uses the best checkpoint (by validation Dice)
unless ``--step`` is given, predicts every case of the split recorded in ``W/model.json`` by
sliding window on the store's grid (RAS, the training spacing) with the post-processing the model
records (what ``predict`` applies), and writes ``W/eval/``: ``cases.csv``, ``summary.json``,
``report.md``, ``report.html`` and figures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from petseg_jax import metrics
from petseg_jax.data import dose as dose_lib
from petseg_jax.data import store as store_lib
from petseg_jax.data.normalization import normalize
from petseg_jax.data.schema import LabelSchema
from petseg_jax.evaluation import report
from petseg_jax.inference.segment import segment
from petseg_jax.training.restore import TrainedModel, load_trained

log = logging.getLogger("petseg_jax.evaluate")
DOSE_SWEEP_SEED = 1234


def case_rows(case_id: str, case: dict, pred: np.ndarray, ref: np.ndarray, image: np.ndarray,
              schema: LabelSchema, nsd_tolerance_mm: float, **extra: Any) -> list[dict]:
    """One row per organ: overlap, surface, volume and SUV metrics plus the case's metadata, and
    ``fov_truncated``: the organ's reference touches the volume's first or last slice along an
    axis (the field of view cuts it; the report leaves such rows out of its means)."""
    spacing = tuple(case["spacing"])
    meta = case["metadata"]
    suv = image * (case["suv_factor"] if case.get("suv_factor") else 1.0)
    rows = []
    boxes = ndimage.find_objects(ref.astype(np.int64, copy=False))
    for label in schema.foreground_ids:
        box = boxes[label - 1] if label <= len(boxes) else None
        row = {"case_id": case_id, "organ": schema.name_of(label), "tracer": meta["tracer"],
               "center": meta["center"],
               "dose_reduction_factor": float(meta["dose_reduction_factor"]),
               "attenuation_corrected": bool(meta["attenuation_corrected"]),
               "field_of_view": meta.get("field_of_view"),
               "fov_truncated": box is not None and metrics.box_touches_edge(box, ref.shape)}
        row |= metrics.organ_metrics(pred, ref, label, spacing, suv, nsd_tolerance_mm)
        rows.append(row | extra)
    return rows


def _dose_noise(store: Path, case_id: str, case: dict, image: np.ndarray, model: str
                ) -> dose_lib.DoseNoise:
    """The dose model of a store case, as the training augmentation uses it."""
    if model == "independent":
        return dose_lib.DoseNoise(model, count_scale=dose_lib.estimate_count_scale(
            image, case["metadata"]))
    if case.get("noise") is None:
        raise store_lib.StoreError(f"case {case_id} of store {store} has no noise map: ingest "
                                   "it again for the dose sweep")
    return dose_lib.DoseNoise.simulator(
        case["noise"], store_lib.read_array(store_lib.noise_path(store, case_id)))


class CasePredictor:
    """Sliding-window prediction of a store case with one compiled program for all cases."""

    def __init__(self, trained: TrainedModel):
        self.trained = trained
        self.apply = jax.jit(trained.apply)

    def __call__(self, image: np.ndarray, case: dict, case_id: str) -> np.ndarray:
        spec = self.trained.spec
        x = normalize(image, case.get("suv_factor"), case["intensity"], spec["normalization"],
                      case_id=case_id)
        return segment(x, case["spacing"], self.apply, self.trained.params, spec)


def run(workdir: str | Path, store: str | Path | None = None, split: str = "test",
        step: int | None = None, dose_sweep: Sequence[float] = (), mip_cases: int = 4) -> dict:
    """Evaluate ``workdir``'s model on its recorded ``split`` (of ``store``, by default the
    training store the model records) and write ``workdir/eval``; returns the summary."""
    workdir = Path(workdir)
    trained = load_trained(workdir, step)
    store = Path(store or trained.spec["store"])
    manifest = store_lib.read_manifest(store)
    schema = trained.schema
    if store_lib.manifest_schema(manifest) != schema:
        raise ValueError(f"store {store} has another label schema than the model in {workdir}")
    case_ids = trained.spec["splits"][split]
    if not case_ids:
        raise ValueError(f"split {split!r} of {workdir} has no cases")
    missing = [c for c in case_ids if c not in manifest["cases"]]
    if missing:
        raise ValueError(f"store {store} lacks the {split} cases {missing[:5]} of {workdir}")
    nsd_mm = float(trained.config.evaluation.nsd_tolerance_mm)
    predictor = CasePredictor(trained)
    out_dir = workdir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, sweep_rows, mips = [], [], []
    rng = np.random.default_rng(DOSE_SWEEP_SEED)
    dose_model = trained.config.data.dose_augmentation.get("noise_model", "simulator")
    for case_id in tqdm(case_ids, desc=f"evaluate {split}", unit="case"):
        case = manifest["cases"][case_id]
        image = store_lib.read_array(store_lib.image_path(store, case_id)).astype(np.float32)
        ref = store_lib.read_array(store_lib.label_path(store, case_id))
        pred = predictor(image, case, case_id)
        rows += case_rows(case_id, case, pred, ref, image, schema, nsd_mm)
        if len(mips) < mip_cases:
            png = out_dir / f"mip_{case_id}.png"
            suv = image * (case.get("suv_factor") or 1.0)
            report.mip_figure(png, suv, ref, pred, tuple(case["spacing"]),
                              f"{case_id} ({case['metadata']['tracer']}, "
                              f"k={case['metadata']['dose_reduction_factor']:g})",
                              label_names={i: schema.name_of(i) for i in schema.foreground_ids})
            mips.append(png)
        if dose_sweep and float(case["metadata"]["dose_reduction_factor"]) == 1.0:
            noise = _dose_noise(store, case_id, case, image, dose_model)
            for factor in dose_sweep:
                low = dose_lib.reduce_dose(image, float(factor), 1.0, noise, rng)
                sweep_rows += case_rows(case_id, case, predictor(low, case, case_id), ref, low,
                                        schema, nsd_mm, swept_dose_factor=float(factor))
    summary = report.write_report(out_dir, rows, dose_sweep_rows=sweep_rows or None,
                                  mip_pngs=mips, title=f"{workdir.name}: {split} split, "
                                  f"checkpoint step {trained.step}")
    log.info("mean Dice %.4f over %d cases; report in %s", summary["mean_dice"],
             summary["n_cases"], out_dir)
    return summary
