"""The inference spec: everything a predictor needs besides its weights, as plain JSON.

Every predictor (a restored checkpoint or an exported model) carries one, and an export writes it
into ``meta.json``, so a served model resamples, normalizes and tiles exactly as it was trained::

    {"format_version": 1, "schema": {...}, "patch_size": [..], "spacing": [..] (mm, RAS),
     "total_stride": [..], "normalization": {...}, "overlap": 0.5, "mirror_axes": [],
     "nonzero_mask": true | false, "position_ranges": {id: [[lo], [hi]]} | null,
     "batch_size": 2, "largest_component_labels": [..] | null, "in_channels": 1 | 4,
     "position_channels": false | true, "input_layout": "NXYZC", "output_layout": "NXYZK",
     "input_dtype": "float32", "output_dtype": "float32", "jax_version": "...",
     "training": {"config": {...}, "step": N, "workdir": "..."}}

The serving path imports this module: it must stay free of flax, optax, orbax and grain
(:func:`make_inference_spec` imports the model package lazily, at training/export time only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from petseg_jax.data import position
from petseg_jax.data.normalization import NormalizationConfig
from petseg_jax.data.schema import LabelSchema

FORMAT_VERSION = 1
INPUT_LAYOUT = "NXYZC"
OUTPUT_LAYOUT = "NXYZK"
REQUIRED_KEYS = ("format_version", "schema", "patch_size", "spacing", "total_stride",
                 "normalization", "overlap", "mirror_axes", "input_layout", "output_layout",
                 "input_dtype", "output_dtype")


class SpecError(ValueError):
    """An inference spec that is missing keys, inconsistent or of a newer format."""


def to_jsonable(obj: Any) -> Any:
    """Nested mappings/sequences/NumPy values as plain JSON types (tuples become lists)."""
    if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
        obj = obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic | np.ndarray):
        return to_jsonable(obj.tolist())
    return obj


def _training_spacing(data_cfg: Mapping[str, Any]) -> list[float]:
    """``data.spacing``, or the store's (the dataset median) when the config leaves it empty."""
    if data_cfg.get("spacing"):
        return [float(s) for s in data_cfg["spacing"]]
    from petseg_jax.data.store import read_manifest  # tensorstore: only when needed

    return [float(s) for s in read_manifest(data_cfg["store"])["spacing"]]


def _training_cases(cfg: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The manifest entries of the store's training cases; ``None`` when not available."""
    from petseg_jax.data.splits import SplitError, make_splits  # training/export time only
    from petseg_jax.data.store import StoreError, read_manifest

    data = cfg["data"]
    try:
        cases = read_manifest(data["store"])["cases"]
        train = make_splits(cases, data["split"])["train"]
    except (StoreError, SplitError, OSError, KeyError):
        return None
    return [cases[c] for c in train]


def _single_component_labels(cases: list[Mapping[str, Any]] | None) -> list[int] | None:
    """The organs that are one connected component in every training case (the ones
    ``largest_component`` post-processing keeps to); ``None`` when the cases or their
    component counts are not available (the option then applies to every organ)."""
    from petseg_jax.inference.postprocess import single_component_ids

    return None if cases is None else single_component_ids(c.get("class_components")
                                                           for c in cases)


def _position_ranges(cases: list[Mapping[str, Any]] | None,
                     margin_mm: float) -> dict[str, list[list[float]]] | None:
    """Each organ's position range over the training cases, widened by ``margin_mm``
    (the config's ``evaluation.position_prior_mm``); ``None`` when that is 0 or the cases are
    not available."""
    from petseg_jax.inference.postprocess import position_ranges

    if cases is None or margin_mm <= 0:
        return None
    return {str(k): v for k, v in position_ranges(cases, margin_mm).items()}


def make_inference_spec(config: Any, schema: LabelSchema, step: int | None,
                        workdir: str | None) -> dict[str, Any]:
    """The spec of a model trained with ``config`` (a ConfigDict or its dict) on ``schema``."""
    from petseg_jax.models import total_stride  # flax: import at training/export time only

    cfg = to_jsonable(config)
    data, evaluation = cfg["data"], cfg.get("evaluation", {})
    train_cases = _training_cases(cfg)  # one manifest read for the post-processing facts
    return {
        "format_version": FORMAT_VERSION,
        "schema": schema.to_json(),
        "patch_size": [int(p) for p in data["patch_size"]],
        "spacing": _training_spacing(data),
        "total_stride": [int(s) for s in total_stride(cfg["model"])],
        "normalization": NormalizationConfig.from_json(data.get("normalization")).to_json(),
        "overlap": float(evaluation.get("overlap", 0.5)),
        "mirror_axes": [],
        "nonzero_mask": bool(evaluation.get("nonzero_mask", False)),
        "batch_size": int(evaluation.get("batch_size", 2)),
        "largest_component_labels": _single_component_labels(train_cases),
        "position_ranges": _position_ranges(
            train_cases, float(evaluation.get("position_prior_mm", 0.0))),
        "in_channels": position.input_channels(data),
        "position_channels": position.enabled(data),
        "input_layout": INPUT_LAYOUT,
        "output_layout": OUTPUT_LAYOUT,
        "input_dtype": "float32",
        "output_dtype": "float32",
        "jax_version": jax.__version__,
        "training": {"config": cfg, "step": None if step is None else int(step),
                     "workdir": None if workdir is None else str(workdir)},
    }


def check_spec(spec: Mapping[str, Any], source: str = "spec") -> dict[str, Any]:
    """Validate a spec read from ``source`` (named in errors); returns it as a dict.

    A newer ``format_version`` than this code knows, a missing key or an inconsistent patch
    size gets a :class:`SpecError`.
    """
    if not isinstance(spec, Mapping):
        raise SpecError(f"{source}: expected a JSON object, got {type(spec).__name__}")
    version = spec.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise SpecError(f"{source}: missing or invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise SpecError(f"{source}: format_version {version} is newer than this petseg_jax "
                        f"reads ({FORMAT_VERSION}); upgrade petseg_jax to use this model")
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise SpecError(f"{source}: missing keys {missing}")
    for key in ("patch_size", "spacing", "total_stride"):
        if len(spec[key]) != 3 or min(spec[key]) <= 0:
            raise SpecError(f"{source}: {key} must be 3 positive numbers, got {spec[key]}")
    if any(p % s for p, s in zip(spec["patch_size"], spec["total_stride"])):
        raise SpecError(f"{source}: patch_size {spec['patch_size']} is not a multiple of "
                        f"total_stride {spec['total_stride']}")
    if (spec["input_layout"], spec["output_layout"]) != (INPUT_LAYOUT, OUTPUT_LAYOUT):
        raise SpecError(f"{source}: layouts {spec['input_layout']}/{spec['output_layout']} are "
                        f"not {INPUT_LAYOUT}/{OUTPUT_LAYOUT}")
    try:
        LabelSchema.from_json(spec["schema"])
        NormalizationConfig.from_json(spec["normalization"])
    except (KeyError, TypeError, ValueError) as err:
        raise SpecError(f"{source}: invalid schema or normalization ({err})") from None
    channels = position.input_channels(spec)
    if int(spec.get("in_channels", 1)) != channels:
        raise SpecError(f"{source}: in_channels {spec.get('in_channels')} does not match "
                        f"position_channels {position.enabled(spec)} ({channels} channels)")
    return dict(spec)


def spec_schema(spec: Mapping[str, Any]) -> LabelSchema:
    """The label schema a spec predicts."""
    return LabelSchema.from_json(spec["schema"])
