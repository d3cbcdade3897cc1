"""Organ statistics of any mask on a PET scan: volume, SUV mean/max/peak/std/median, SUL, SUVbsa.

    python -m petseg_jax.stats --pet PET --labels LABELS [--totalseg] --out organs.csv
        [--series UID] [--dataset-json dataset.json] [--metadata case.json] [SUV flags]

``PET`` is a NIfTI or a folder of DICOM files (one PET series, or ``--series UID``).
``LABELS`` is a label map in schema ids (NIfTI, or a DICOM-SEG whose SegmentLabels are the
schema's organ names), moved onto the PET grid through both affines (nearest neighbour) when
its grid differs; with ``--totalseg`` it is a TotalSegmentator ``total`` CT label map, moved onto
the PET grid with the label transfer (majority vote): MOOSE's workflow, segment on CT and
measure on PET, no PET model needed. SUV: from the DICOM headers (QIBA), from ``--metadata``
(a case's metadata JSON) or from the flags; without any, the statistics are in the image's
units (``units=raw``). Columns: :data:`petseg_jax.metrics.ORGAN_STATS_COLUMNS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from petseg_jax.console import entry_point
from petseg_jax import metrics
from petseg_jax.data import dicom, nifti, suv
from petseg_jax.data.labels_from_totalseg import transfer_labels
from petseg_jax.data.schema import LabelSchema, check_label_values, load_schema


def load_pet(path: Path, series: str | None, overrides: suv.SuvOverrides,
             metadata: Path | None) -> tuple[nib.Nifti1Image, suv.SuvCalibration | None]:
    """The PET volume (in-memory NIfTI on its own grid) and its SUV calibration."""
    if path.is_dir():
        found = dicom.pet_series(path, series)
        if len(found) > 1:
            raise dicom.DicomError(f"{path} holds {len(found)} PET series: choose one with "
                                   "--series (see predict --list-series)")
        volume = dicom.read_pet(found[0])
        calibration = suv.from_headers(volume.headers, overrides, volume.uid)
        return nib.Nifti1Image(volume.image, volume.affine), calibration
    img = nifti.load(path)
    if metadata is not None:
        if overrides.any:
            raise suv.SuvError("give --metadata or SUV flags, not both")
        return img, suv.from_metadata(json.loads(metadata.read_text()))
    return img, suv.from_flags(overrides)


def load_labels(path: Path, pet: nib.Nifti1Image, schema: LabelSchema, totalseg: bool
                ) -> np.ndarray:
    """The label map on the PET grid (module docstring)."""
    if totalseg:
        return transfer_labels(nifti.load(path, label=True), pet, schema)
    if dicom.is_dicom_file(path):
        from petseg_jax.inference.dicom_output import read_seg

        data, affine = read_seg(path, schema)
    else:
        seg = nifti.load(path, label=True)
        data, affine = nifti.array(seg), seg.affine
        bad = check_label_values(data, schema)
        if bad:
            raise ValueError(f"{path}: label values {bad[:10]} are not in the label schema "
                             "(TotalSegmentator ids? add --totalseg)")
    if data.shape == pet.shape[:3] and np.allclose(affine, pet.affine, atol=1e-4):
        return data
    return nifti.resample_to_reference(data, affine, pet.shape[:3], pet.affine, order=0)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the CLI; returns the rows written."""
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pet", required=True, type=Path, help="PET NIfTI or DICOM folder")
    parser.add_argument("--labels", required=True, type=Path, help="label NIfTI or DICOM-SEG")
    parser.add_argument("--totalseg", action="store_true",
                        help="LABELS is a TotalSegmentator `total` CT label map")
    parser.add_argument("--out", required=True, type=Path, help="output CSV")
    parser.add_argument("--series", metavar="UID", help="the PET series of a DICOM folder")
    parser.add_argument("--dataset-json", type=Path,
                        help="label schema of LABELS (default: the 23-organ schema)")
    parser.add_argument("--metadata", type=Path,
                        help="a case's metadata JSON (units, weight, activity) for the SUV")
    suv.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        schema = load_schema(args.dataset_json)
        pet, calibration = load_pet(args.pet, args.series, suv.overrides_from(args),
                                    args.metadata)
        labels = load_labels(args.labels, pet, schema, args.totalseg)
        names = {i: schema.name_of(i) for i in schema.foreground_ids}
        rows = suv.organ_table(nifti.array(pet), pet.affine, labels, names, calibration)
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"error: {err}") from None
    suv.write_table(args.out, rows, metrics.ORGAN_STATS_COLUMNS)
    present = sum(r["volume_ml"] > 0 for r in rows)
    print(f"wrote {args.out}: {present} of {len(rows)} organs present"
          + ("" if calibration else " (no SUV calibration: values in image units)"),
          file=sys.stderr)
    return rows


cli = entry_point(main)

if __name__ == "__main__":
    main()
