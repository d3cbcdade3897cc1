"""Transfer a TotalSegmentator ``total`` label map (CT space) onto a PET grid in schema ids.

    python -m petseg_jax.data.labels_from_totalseg --seg TS.nii.gz --reference PET.nii.gz \
        --out LABELS.nii.gz [--method majority|nearest] [--dataset-json dataset.json]

TotalSegmentator ids are mapped to schema ids (``schema.totalseg_lut``), then resampled onto
the reference grid through both affines in world coordinates (any orientation, spacing and
field of view; PET voxels outside the CT field of view become background). ``majority`` (the
default) votes over a sub-grid of each PET voxel when it is coarser than the CT voxels and is
nearest-neighbour otherwise.
"""

from __future__ import annotations

import argparse
import sys

import nibabel as nib
import numpy as np

from petseg_jax.data import nifti
from petseg_jax.data.schema import DEFAULT_SCHEMA, LabelSchema, load_schema, totalseg_lut

METHODS = {"majority": "majority", "nearest": 0}


def transfer_labels(seg: nib.Nifti1Image, reference: nib.Nifti1Image,
                    schema: LabelSchema = DEFAULT_SCHEMA, method: str = "majority"
                    ) -> np.ndarray:
    """Schema label map (uint8) on ``reference``'s 3-D grid from a TotalSegmentator map
    ``seg`` (an image from :func:`nifti.load` with ``label=True``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    lut = totalseg_lut(schema)
    ts_ids = nifti.array(seg)
    bad = ts_ids[(ts_ids < 0) | (ts_ids >= lut.size)]
    if bad.size:
        raise ValueError(f"segmentation holds ids outside 0..{lut.size - 1}: "
                         f"{np.unique(bad)[:10].tolist()}")
    mapped = lut[ts_ids]
    return nifti.resample_to_reference(mapped, seg.affine, reference.shape[:3],
                                       reference.affine, order=METHODS[method])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m petseg_jax.data.labels_from_totalseg",
        description="TotalSegmentator `total` map (CT space) -> schema labels on a PET grid.")
    parser.add_argument("--seg", required=True, help="TotalSegmentator multilabel NIfTI")
    parser.add_argument("--reference", required=True, help="PET NIfTI whose grid to use")
    parser.add_argument("--out", required=True, help="output label NIfTI")
    parser.add_argument("--method", choices=sorted(METHODS), default="majority")
    parser.add_argument("--dataset-json", default=None,
                        help="take the label schema from this dataset.json (default schema)")
    args = parser.parse_args(argv)
    try:
        schema = load_schema(args.dataset_json)
        seg = nifti.load(args.seg, label=True)
        reference = nifti.load_header(args.reference)
    except (ValueError, OSError, KeyError) as e:  # NiftiError is a ValueError naming the file
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        labels = transfer_labels(seg, reference, schema, args.method)
    except ValueError as e:
        print(f"error: {args.seg}: {e}", file=sys.stderr)
        return 1
    nifti.save_like(args.out, labels, reference)
    present = [schema.name_of(int(i)) for i in np.unique(labels) if i]
    if not present:
        print(f"warning: no organ lands on the grid of {args.reference}; do the CT and PET "
              "fields of view overlap (same scanner coordinates)?", file=sys.stderr)
    print(f"wrote {args.out}: {labels.shape} grid, {len(present)} organs: {', '.join(present)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
