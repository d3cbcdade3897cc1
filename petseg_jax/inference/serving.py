"""Serve an exported model (``python -m petseg_jax.export``) with only jax, numpy and nibabel.

An export folder holds ``model.jaxexport`` (``jax.export.Exported.serialize()``: normalized patch
batch ``(N, X, Y, Z, C)`` float32 -> logits ``(N, X, Y, Z, K)`` float32, weights inside),
``model.mlir`` (the same program as StableHLO text) and ``meta.json`` (the inference spec plus
export details). Importing this module imports no flax, optax, orbax or grain::

    from petseg_jax.inference.serving import ServedModel
    ServedModel("runs/demo/export").predict_nifti("pet.nii.gz", "labels.nii.gz", "organs.csv")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
from jax import export as jax_export

from petseg_jax.inference.nifti_pipeline import Predictor
from petseg_jax.inference.spec import SpecError, check_spec

MODEL_FILE = "model.jaxexport"
MLIR_FILE = "model.mlir"
META_FILE = "meta.json"
ARTIFACT_FILES = (META_FILE, MODEL_FILE, MLIR_FILE)


class ArtifactError(SpecError):
    """An export folder that is incomplete, unreadable or of a newer format."""


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The validated ``meta.json`` of an export folder (every artifact file must exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: export folder does not exist")
    missing = [f for f in ARTIFACT_FILES if not (directory / f).is_file()]
    if missing:
        raise ArtifactError(f"{directory}: incomplete export, missing {missing}; re-export with "
                            "`python -m petseg_jax.export`")
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{directory / META_FILE}: not valid JSON ({err})") from None
    try:
        return check_spec(meta, str(directory / META_FILE))
    except SpecError as err:
        raise ArtifactError(str(err)) from None


def load_exported(directory: str | Path) -> jax_export.Exported:
    """Deserialize ``model.jaxexport``; an error names the platforms when this one is missing."""
    path = Path(directory) / MODEL_FILE
    try:
        exported = jax_export.deserialize(bytearray(path.read_bytes()))
    except Exception as err:  # corrupt bytes or an unsupported serialization version
        raise ArtifactError(f"{path}: cannot deserialize ({type(err).__name__}: {err})") from None
    platform = jax_export.default_export_platform()
    if platform not in exported.platforms:
        raise ArtifactError(f"{path}: exported for {list(exported.platforms)}, not for this "
                            f"machine's {platform!r}; re-export with --platforms {platform}")
    return exported


class ServedModel(Predictor):
    """An export folder as a :class:`Predictor` (``predict_nifti``, ``predict_image``)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta = read_meta(self.directory)
        self.exported = load_exported(self.directory)

        def predict_fn(params: Any, x: jax.Array) -> jax.Array:  # weights live in the export
            return self.exported.call(x)

        super().__init__(predict_fn, {}, meta, str(self.directory / META_FILE))
