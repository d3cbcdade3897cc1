"""The model folder's record: everything a predictor needs besides its weights, as plain JSON.

Training writes it at its start into ``WORKDIR/model.json`` (:data:`MODEL_FILE`); ``evaluate``,
``export``, ``predict`` and serving read only that, never the training store or config again.
An export copies it into ``meta.json``. A missing key is an error naming it::

    {"format_version": 3, "schema": {...}, "patch_size": [..], "spacing": [..] (mm, RAS),
     "total_stride": [..], "normalization": {...}, "overlap": 0.5, "mirror_axes": [] | [0],
     "nonzero_mask": true | false, "largest_component": true | false,
     "largest_component_labels": [..], "position_ranges": {id: [[lo], [hi]]} | {},
     "body_box": null | {"threshold": t, "sigma_voxels": 1.0, "margin_voxels": 16,
                         "min_component_fraction": 0.01},
     "batch_size": 2, "in_channels": 1 | 3 | 4, "position_channels": "" | "xy" | "xyz",
     "input_layout": "NXYZC", "output_layout": "NXYZK", "input_dtype": "float32",
     "output_dtype": "float32", "jax_version": "...", "splits": {"train": [..], ...},
     "training_data": {"cases": N, "tracers": [..], "centers": [..],
                       "dose_reduction_factors": [..], "attenuation_corrected": [..]},
     "store": "/abs/path", "training": {"config": {...}, "step": N | null}}

The post-processing decisions are the training config's ``evaluation`` section, resolved against
the training cases: ``largest_component_labels`` lists the organs that are one component in every
training case, ``position_ranges`` each organ's position range widened by
``evaluation.position_prior_mm`` (empty when that is 0); ``body_box`` (windows only over the
body's box, :func:`~petseg_jax.inference.postprocess.body_box`) holds
``evaluation.body_box_suv`` as a threshold on the normalized image (the log1p transform of that
SUV) and ``evaluation.body_box_margin`` (voxels); ``null`` when the SUV is 0. A format-2 record
(before ``body_box``) reads as ``body_box: null``, which is what it did. ``position_channels``
names the axes whose positions are input channels (:mod:`petseg_jax.data.position`); a record
from before ``"xy"`` holds ``true`` (all three) or ``false``, and reads so.

The serving path imports this module: it must stay free of flax, optax, orbax and grain
(:func:`make_inference_spec` imports the model package lazily, at training time only).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from petseg_jax.data import position
from petseg_jax.data.normalization import NormalizationConfig
from petseg_jax.data.schema import LabelSchema
from petseg_jax.inference.postprocess import position_ranges, single_component_ids

FORMAT_VERSION = 3  # 3: body_box
MODEL_FILE = "model.json"
INPUT_LAYOUT = "NXYZC"
OUTPUT_LAYOUT = "NXYZK"
REQUIRED_KEYS = ("format_version", "schema", "patch_size", "spacing", "total_stride",
                 "normalization", "overlap", "mirror_axes", "nonzero_mask", "largest_component",
                 "largest_component_labels", "position_ranges", "body_box", "batch_size",
                 "in_channels",
                 "position_channels", "input_layout", "output_layout", "input_dtype",
                 "output_dtype", "splits", "training_data", "training")


BODY_BOX_SIGMA_VOXELS = 1.0  # smoothing before the body threshold
BODY_BOX_MIN_COMPONENT_FRACTION = 0.01  # body parts: components >= 1 % of the largest


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


def training_conditions(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the training cases (manifest entries) cover: tracers, centers, dose reduction
    factors, attenuation correction and, per axis, the range of image sizes in mm (the model
    card's conditions)."""
    meta = [c["metadata"] for c in cases]
    sizes = [[n * s for n, s in zip(c["shape"], c["spacing"])] for c in cases]
    return {"cases": len(meta),
            "extent_mm": [[round(min(e[a] for e in sizes), 1), round(max(e[a] for e in sizes), 1)]
                          for a in range(3)] if sizes else [],
            "tracers": sorted({str(m["tracer"]) for m in meta}),
            "centers": sorted({str(m["center"]) for m in meta}),
            "dose_reduction_factors": sorted({float(m["dose_reduction_factor"]) for m in meta}),
            "attenuation_corrected": sorted({bool(m["attenuation_corrected"]) for m in meta})}


def make_inference_spec(config: Any, schema: LabelSchema, manifest: Mapping[str, Any],
                        splits: Mapping[str, Sequence[str]], store: str | Path
                        ) -> dict[str, Any]:
    """The record of a model trained with ``config`` on ``store`` (its ``manifest``, label
    ``schema`` and ``splits``). A training case without the ingest's component counts, when
    ``evaluation.largest_component`` needs them, is an error naming it."""
    from petseg_jax.models import total_stride  # flax: import at training time only

    cfg = to_jsonable(config)
    data, evaluation = cfg["data"], cfg["evaluation"]
    train = [manifest["cases"][c] for c in splits["train"]]
    labels: list[int] = []
    if evaluation["largest_component"]:
        lacking = [c for c in splits["train"] if "class_components" not in manifest["cases"][c]]
        if lacking:
            raise SpecError(f"evaluation.largest_component needs the ingest's class_components, "
                            f"which training cases {lacking[:5]} of {store} lack; re-ingest")
        labels = single_component_ids(c["class_components"] for c in train)
    body = None
    if float(evaluation["body_box_suv"]) > 0:
        norm = NormalizationConfig.from_config(data["normalization"])
        if norm.transform != "log1p":
            raise SpecError("evaluation.body_box_suv needs data.normalization.transform = "
                            f"'log1p' (a fixed threshold), not {norm.transform!r}")
        body = {"threshold": float(np.log1p(float(evaluation["body_box_suv"])) * norm.scale),
                "sigma_voxels": BODY_BOX_SIGMA_VOXELS,
                "margin_voxels": int(evaluation["body_box_margin"]),
                "min_component_fraction": BODY_BOX_MIN_COMPONENT_FRACTION}
    margin = float(evaluation["position_prior_mm"])
    ranges = {str(k): v for k, v in position_ranges(train, margin).items()} if margin > 0 else {}
    return {
        "format_version": FORMAT_VERSION,
        "schema": schema.to_json(),
        "patch_size": [int(p) for p in data["patch_size"]],
        "spacing": [float(s) for s in manifest["spacing"]],
        "total_stride": [int(s) for s in total_stride(cfg["model"])],
        "normalization": dataclasses.asdict(NormalizationConfig.from_config(
            data["normalization"])),
        "overlap": float(evaluation["overlap"]),
        "mirror_axes": [0] if evaluation["mirror"] else [],
        "nonzero_mask": bool(evaluation["nonzero_mask"]),
        "largest_component": bool(evaluation["largest_component"]),
        "largest_component_labels": labels,
        "position_ranges": ranges,
        "body_box": body,
        "batch_size": int(evaluation["batch_size"]),
        "in_channels": position.input_channels(data),
        "position_channels": data["position_channels"],
        "input_layout": INPUT_LAYOUT,
        "output_layout": OUTPUT_LAYOUT,
        "input_dtype": "float32",
        "output_dtype": "float32",
        "jax_version": jax.__version__,
        "splits": {k: list(v) for k, v in splits.items()},
        "training_data": training_conditions(train),
        "store": str(Path(store).resolve()),
        "training": {"config": cfg, "step": None},
    }


def write_model_file(workdir: str | Path, spec: Mapping[str, Any]) -> Path:
    """Write ``workdir/model.json`` atomically (creating ``workdir``); returns its path."""
    from petseg_jax.data.store import write_json_atomic  # tensorstore: training time only

    Path(workdir).mkdir(parents=True, exist_ok=True)
    path = Path(workdir) / MODEL_FILE
    write_json_atomic(path, to_jsonable(spec))
    return path


def read_model_file(workdir: str | Path) -> dict[str, Any]:
    """The validated ``workdir/model.json``; a missing file is an error naming it."""
    path = Path(workdir) / MODEL_FILE
    if not path.is_file():
        raise SpecError(f"{path} does not exist: {workdir} is not a model folder of this "
                        f"petseg_jax (train writes it at its start)")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}: not valid JSON ({err})") from None
    return check_spec(spec, str(path))


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
    if version < 3:  # before body_box: windows over the whole volume
        spec = dict(spec) | {"body_box": spec.get("body_box")}
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
        NormalizationConfig(**spec["normalization"])
    except (KeyError, TypeError, ValueError) as err:
        raise SpecError(f"{source}: invalid schema or normalization ({err})") from None
    try:
        channels = position.input_channels(spec)
    except ValueError as err:
        raise SpecError(f"{source}: {err}") from None
    if int(spec["in_channels"]) != channels:
        raise SpecError(f"{source}: in_channels {spec['in_channels']} does not match "
                        f"position_channels {spec['position_channels']!r} ({channels} channels)")
    return dict(spec)


def spec_schema(spec: Mapping[str, Any]) -> LabelSchema:
    """The label schema a spec predicts."""
    return LabelSchema.from_json(spec["schema"])
