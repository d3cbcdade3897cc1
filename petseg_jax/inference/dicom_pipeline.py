"""A DICOM PET series in -> its organs out, in ``OUT/<SeriesInstanceUID>/``.

The series is read with each slice's rescale and its LPS geometry turned into RAS
(:mod:`petseg_jax.data.dicom`), calibrated to SUV from its headers and the flags
(:mod:`petseg_jax.data.suv`; the network's input normalization uses the same SUVbw), segmented
on its own grid by the :class:`~.nifti_pipeline.Predictor`, and written as asked:
``labels.nii.gz`` + ``labels.json`` (+ ``organs/<organ>.nii.gz``), ``seg.dcm`` (DICOM-SEG),
``rtstruct.dcm`` (RTSTRUCT) and ``preview.png``. The statistics rows carry the series UID as
``case``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from petseg_jax.data import dicom
from petseg_jax.data import position
from petseg_jax.data.nifti import ras_extent, ras_spacing
from petseg_jax.data.suv import SuvOverrides, from_headers
from petseg_jax.inference.dicom_output import write_rtstruct, write_seg
from petseg_jax.inference.installed import card_warnings
from petseg_jax.inference.nifti_pipeline import Predictor
from petseg_jax.inference.outputs import OutputOptions, write_nifti_outputs, write_preview
from petseg_jax.inference.sliding_window import Progress
from petseg_jax.resources import Stages


def nifti_image(volume: dicom.PetVolume, image: np.ndarray | None = None) -> nib.Nifti1Image:
    """The series as an in-memory NIfTI (RAS affine, sform/qform set)."""
    img = nib.Nifti1Image(volume.image if image is None else image, volume.affine)
    img.set_sform(volume.affine, code=1)
    img.set_qform(volume.affine, code=1)
    return img


def predict_series(predictor: Predictor, info: dicom.SeriesInfo, out_root: Path,
                   overrides: SuvOverrides = SuvOverrides(),
                   options: OutputOptions = OutputOptions(), progress: Progress | None = None,
                   stages: Stages | None = None, tracer: str | None = None,
                   warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Predict one series into ``out_root/<SeriesInstanceUID>/``; returns its stats rows.
    Nothing is written when the series or its SUV headers are invalid.
    ``progress(windows_done, windows_total)`` follows the sliding window; ``stages`` gets the
    seconds per stage (as :meth:`Predictor.predict_nifti`); ``warn`` gets each model-card
    warning (a ``tracer`` the model never saw, a spacing far from the training spacing, a
    cropped image: :func:`~petseg_jax.inference.installed.card_warnings`)."""
    stages = stages or Stages()
    with stages("read"):
        volume = dicom.read_pet(info)
        if warn is not None:
            for warning in card_warnings(predictor.spec["training_data"],
                                         predictor.spec["spacing"],
                                         [float(v) for v in ras_spacing(volume.affine)], tracer,
                                         [float(e) for e in ras_extent(volume.affine,
                                                                       volume.image.shape)],
                                         position.position_axes(predictor.spec)):
                warn(f"series {volume.uid}: {warning}")
        if options.dicom and volume.multiframe:
            raise ValueError(f"series {volume.uid} is multi-frame PET: DICOM-SEG and RTSTRUCT "
                             "are written for single-frame series only (use --output-type nifti)")
        calibration = from_headers(volume.headers, overrides, volume.uid)
        image = calibration.image_at_reference(volume.image)
        img = nifti_image(volume, image)
    labels = predictor.predict_image(img, calibration.suvbw, volume.uid, progress, stages)
    with stages("post-processing"):
        rows = predictor.organ_stats(volume.image, volume.affine, labels, calibration,
                                     volume.uid)
    if options.dicom and not labels.any():
        raise ValueError(f"series {volume.uid}: no organ found, so no DICOM-SEG/RTSTRUCT "
                         "(they cannot be empty)")
    with stages("write"):
        folder = out_root / volume.uid
        folder.mkdir(parents=True, exist_ok=True)
        schema = predictor.schema
        if "nifti" in options.types:
            write_nifti_outputs(folder / "labels.nii.gz", labels, img, schema,
                                folder / "labels.json", folder / "organs" if options.per_organ
                                else None)
        if "dicom_seg" in options.types:
            write_seg(folder / "seg.dcm", labels, volume, schema)
        if "dicom_rtstruct" in options.types:
            write_rtstruct(folder / "rtstruct.dcm", labels, volume, schema)
        if options.preview:
            write_preview(folder / "preview.png", image, volume.affine, labels, schema,
                          f"{info.description or 'PET'} ({volume.uid})")
    return rows
