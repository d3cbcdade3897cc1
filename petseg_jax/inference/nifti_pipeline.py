"""NIfTI in -> organ label map out on exactly the input grid, for any predictor (no flax).

A :class:`Predictor` is ``predict_fn(params, x)`` (normalized ``(N, X, Y, Z, C)`` float32 ->
logits ``(N, X, Y, Z, K)``), its ``params`` and its inference spec (:mod:`.spec`). A case goes:
load and validate -> reorient to RAS -> resample (linear, in blocks of planes) to the spec's
spacing -> normalize in place as the model was trained (a model trained on SUV needs the SUV
factor) -> :func:`.segment.segment` (sliding window streamed slab by slab, the post-processing
the model records) -> nearest-neighbour back onto the input grid (in blocks) -> integer NIfTI with the
input's header, written atomically. Per-organ volume and SUV statistics are computed on the
input grid. A restored checkpoint and an exported model run the same code, so their label maps
agree whenever their logits do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from petseg_jax import metrics
from petseg_jax.data import nifti
from petseg_jax.data.normalization import intensity_stats, normalize
from petseg_jax.data.suv import SuvCalibration, organ_table, write_table
from petseg_jax.inference.outputs import (OutputOptions, nifti_sidecars, write_nifti_outputs,
                                          write_preview)
from petseg_jax.inference.segment import segment
from petseg_jax.inference.sliding_window import Progress
from petseg_jax.inference.spec import check_spec, spec_schema
from petseg_jax.resources import Stages

STATS_COLUMNS = ("case", *metrics.ORGAN_STATS_COLUMNS)
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def case_name(path: str | Path) -> str:
    """A file's name without its NIfTI suffix."""
    name = Path(path).name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_output_path(path: str | Path) -> Path:
    """An output NIfTI path: it must end in ``.nii`` or ``.nii.gz``."""
    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise ValueError(f"output {path} must end in .nii or .nii.gz")
    return path


def load_input(path: str | Path) -> nib.Nifti1Image:
    """Read a PET volume: a finite, non-empty 3-D NIfTI (else :class:`nifti.NiftiError`)."""
    img = nifti.load(path)
    data = nifti.array(img)
    if data.size == 0 or not np.any(data > 0):
        raise nifti.NiftiError(f"{path}: empty image (no voxel above 0)")
    return img


class Predictor:
    """Whole-volume NIfTI prediction with ``predict_fn(params, x)`` and an inference spec.

    ``predict_fn`` must be the same (hashable) object across calls so that the compiled
    sliding-window program is reused.
    """

    def __init__(self, predict_fn: Callable[[Any, Any], Any], params: Any, spec: dict,
                 source: str = "spec"):
        self.predict_fn = predict_fn
        self.params = params
        self.spec = check_spec(spec, source)
        self.schema = spec_schema(self.spec)
        self.label_dtype = np.uint8 if self.schema.num_classes <= 256 else np.uint16

    def predict_image(self, img: nib.Nifti1Image, suv_factor: float | None = None,
                      name: str = "?", progress: Progress | None = None,
                      stages: Stages | None = None) -> np.ndarray:
        """Label map of a loaded PET image, on exactly its grid (shape ``img.shape[:3]``).

        ``progress(windows_done, windows_total)`` follows the sliding window; ``stages`` gets
        the seconds of ``resample``, ``windows`` and ``post-processing``.
        """
        spec = self.spec
        if spec["normalization"]["mode"] == "suv" and suv_factor is None:
            raise ValueError(f"{name}: the model was trained on SUV (normalization mode 'suv'); "
                             "give the image's SUV factor (--suv-factor, or --weight-kg with "
                             "--injected-mbq)")
        stages = stages or Stages()
        with stages("resample"):
            ras = nifti.to_ras(img)
            data, affine = nifti.resample_to_spacing(nifti.array(ras), ras.affine,
                                                     spec["spacing"], order=1)
            x = normalize(data, suv_factor, intensity_stats(data), spec["normalization"],
                          case_id=name, out=data)
        labels = segment(x, spec["spacing"], self.predict_fn, self.params, spec,
                         progress=progress, stages=stages)
        del data, x
        with stages("resample"):
            labels = nifti.to_original_grid(labels, affine, img, order=0)
        return labels.astype(self.label_dtype, copy=False)

    def organ_stats(self, image: np.ndarray, affine: np.ndarray, labels: np.ndarray,
                    calibration: SuvCalibration | None, name: str) -> list[dict[str, Any]]:
        """Per-organ statistics rows (:data:`STATS_COLUMNS`) on the image grid: SUVs with a
        calibration, else the image's own values (``units="raw"``)."""
        names = {i: self.schema.name_of(i) for i in self.schema.foreground_ids}
        return [{"case": name, **row}
                for row in organ_table(image, affine, labels, names, calibration)]

    def predict_nifti(self, input_path: str | Path, output_path: str | Path,
                      stats: str | Path | None = None,
                      calibration: SuvCalibration | None = None,
                      options: OutputOptions = OutputOptions(),
                      preview: str | Path | None = None, progress: Progress | None = None,
                      stages: Stages | None = None) -> list[dict[str, Any]]:
        """Predict one file; write the label map with its ``<case>.labels.json`` (and per-organ
        masks, the stats CSV and a preview PNG as asked).

        Returns the per-organ statistics rows. Nothing is written when the input is invalid;
        outputs are written atomically. ``progress(windows_done, windows_total)`` follows the
        sliding window; ``stages`` gets the seconds of ``read``, ``resample``, ``windows``,
        ``post-processing`` (with the organ statistics) and ``write``.
        """
        stages = stages or Stages()
        if options.dicom:
            raise ValueError("DICOM output needs a DICOM input series to reference; "
                             f"{input_path} is NIfTI")
        output_path = check_output_path(output_path)
        with stages("read"):
            img = load_input(input_path)
        name = case_name(input_path)
        suv_factor = None if calibration is None else calibration.suvbw
        labels = self.predict_image(img, suv_factor, name, progress, stages)
        with stages("post-processing"):
            rows = self.organ_stats(nifti.array(img), img.affine, labels, calibration, name)
        with stages("write"):
            sidecar, organs = nifti_sidecars(output_path, case_name(output_path))
            write_nifti_outputs(output_path, labels, img, self.schema, sidecar,
                                organs if options.per_organ else None)
            if preview is not None:
                write_preview(Path(preview), nifti.array(img), img.affine, labels, self.schema,
                              name)
            if stats is not None:
                write_table(stats, rows, STATS_COLUMNS)
        return rows
