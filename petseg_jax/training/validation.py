"""Validation during training: whole validation cases predicted as the evaluation will, Dice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from petseg_jax import metrics
from petseg_jax.data.pipeline import make_val_cases
from petseg_jax.data.schema import LabelSchema
from petseg_jax.inference.segment import segment
from petseg_jax.inference.spec import spec_schema
from petseg_jax.training.step import ModelDef


class Validator:
    """Mean and per-organ Dice of the current parameters on a fixed set of validation cases,
    predicted like ``evaluate`` does (the run's model record: sliding window and
    post-processing), so that the best checkpoint is chosen by what will be reported."""

    def __init__(self, store: Path, case_ids: Sequence[str], data_cfg, spec: dict):
        self.store, self.case_ids, self.spec = store, list(case_ids), spec
        self.schema: LabelSchema = spec_schema(spec)
        self.data_cfg = data_cfg
        self._predict = None

    def run(self, model_def: ModelDef, params) -> dict | None:
        """``{"mean_dice", "by_organ": name -> mean Dice, "n_cases"}`` (NaN organs skipped);
        ``None`` when there are no validation cases."""
        if not self.case_ids:
            return None
        if self._predict is None:  # one jitted predictor object: the compiled program is reused
            self._predict = jax.jit(model_def.apply_eval)
        per_organ: dict[str, list[float]] = {n: [] for n in self.schema.names}
        case_means = []
        for case in make_val_cases(self.store, self.case_ids, self.data_cfg):
            pred = segment(case["image"], case["meta"]["spacing"], self._predict, params,
                           self.spec)
            dices = [metrics.dice(pred, case["label"], i) for i in self.schema.foreground_ids]
            for name, d in zip(self.schema.names, dices):
                if not np.isnan(d):
                    per_organ[name].append(d)
            case_means.append(float(np.nanmean(dices)))
        return {"mean_dice": float(np.mean(case_means)) if case_means else float("nan"),
                "by_organ": {n: float(np.mean(v)) for n, v in per_organ.items() if v},
                "n_cases": len(case_means)}
