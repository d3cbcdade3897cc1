"""What a prediction writes besides its label map: label sidecars, per-organ masks, previews.

* ``labels.json`` (dataset.json style ``{"labels": {"background": 0, "spleen": 1, ...}}``,
  readable by :meth:`LabelSchema.from_json`) beside every multilabel NIfTI:
  ``<case>.labels.json`` for ``<case>.nii.gz``, ``labels.json`` in a series folder.
* Per-organ masks (``--per-organ``): ``<organ>.nii.gz`` (uint8 0/1, the label map's header)
  in ``<case>_organs/`` beside ``<case>.nii.gz``, or ``organs/`` in a series folder.
* A preview PNG (coronal and sagittal MIPs with filled organs, :mod:`.preview`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np

from petseg_jax.data import nifti
from petseg_jax.data.schema import LabelSchema
from petseg_jax.resources import write_json_atomic

OUTPUT_TYPES = ("nifti", "dicom_seg", "dicom_rtstruct")


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """Which outputs a prediction writes."""

    types: tuple[str, ...] = ("nifti",)
    per_organ: bool = False
    preview: bool = False

    def __post_init__(self):
        object.__setattr__(self, "types", tuple(dict.fromkeys(self.types)))  # no repeats
        bad = [t for t in self.types if t not in OUTPUT_TYPES]
        if bad or not self.types:
            raise ValueError(f"output types must be among {OUTPUT_TYPES}, got {self.types}")
        if self.per_organ and "nifti" not in self.types:
            raise ValueError("--per-organ writes NIfTI masks: add nifti to --output-type")

    @property
    def dicom(self) -> bool:
        return any(t.startswith("dicom") for t in self.types)


def write_labels_json(path: Path, schema: LabelSchema) -> Path:
    """The label sidecar of a multilabel map (module docstring)."""
    return write_json_atomic(path, {"labels": schema.to_dataset_labels()})


def write_per_organ(folder: Path, labels: np.ndarray, reference: nib.Nifti1Image,
                    schema: LabelSchema) -> list[Path]:
    """One 0/1 uint8 NIfTI per schema organ (empty organs too, so the set is fixed)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for label in schema.foreground_ids:
        path = folder / f"{schema.name_of(label)}.nii.gz"
        nifti.save_like(path, (labels == label).astype(np.uint8), reference)
        paths.append(path)
    return paths


def write_preview(path: Path, image: np.ndarray, affine: np.ndarray, labels: np.ndarray,
                  schema: LabelSchema, title: str) -> Path:
    """Coronal and sagittal preview of ``image`` and ``labels`` (any orientation: shown in
    RAS) with every organ named."""
    from petseg_jax.inference.preview import preview_figure

    pet = nifti.to_ras(nib.Nifti1Image(np.asarray(image, np.float32), affine))
    lab = nifti.to_ras(nib.Nifti1Image(np.asarray(labels), affine))
    return preview_figure(path, nifti.array(pet), np.asarray(lab.dataobj),
                          nifti.ras_spacing(affine),
                          {i: schema.name_of(i) for i in schema.foreground_ids}, title)


def write_nifti_outputs(path: Path, labels: np.ndarray, reference: nib.Nifti1Image,
                        schema: LabelSchema, sidecar: Path, organs: Path | None) -> list[Path]:
    """The multilabel NIfTI at ``path`` (the reference's header), its label sidecar and, with
    ``organs``, the per-organ masks there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nifti.save_like(path, labels, reference)
    written = [path, write_labels_json(sidecar, schema)]
    if organs is not None:
        written += write_per_organ(organs, labels, reference, schema)
    return written


def nifti_sidecars(output: Path, case: str) -> tuple[Path, Path]:
    """(label sidecar, per-organ folder) of ``<case>.nii[.gz]`` written at ``output``."""
    return output.with_name(f"{case}.labels.json"), output.with_name(f"{case}_organs")
