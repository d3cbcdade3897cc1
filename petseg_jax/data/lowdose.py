"""Low-dose twins of a raw dataset of full-dose reconstructed PET images.

    python -m petseg_jax.data.lowdose --raw DIR --out DIR --factors 4,10,20,50,100 \\
        [--nac] [--ct-dir DIR] [--counts-per-kbq X]

Each image is taken as the activity (Bq/ml) and scanned again by the PET system model
(:mod:`petseg_jax.physics`, the PETSTEP approach for users without list-mode data): forward
projection through a 511 keV attenuation map, scatter, randoms, one Poisson draw of the
full-dose counts, binomial thinning by each factor and the same OSEM as the phantom's.

- The attenuation map comes from ``--ct-dir/<case_id>.nii.gz`` (HU, any grid covering the
  PET; bilinear HU -> 511 keV), else from the body outline and the case's label map.
- The count level (trues per kBq at the axial peak, at the input's own dose) is
  ``--counts-per-kbq`` or is estimated from the image's own noise (printed).
- Output: a raw folder with ``<case_id>_drf<k>`` (and ``<case_id>_drf<k>_nac`` with ``--nac``)
  per case and factor, labels copied under the new ids, metadata.csv rows with
  ``dose_reduction_factor`` = k x the input's, ``attenuation_corrected`` set and
  ``psf_fwhm_mm`` / ``post_fwhm_mm`` those of the twins' reconstruction (``--psf-fwhm-mm``,
  ``--post-fwhm-mm``; added when the input has no such columns: the dose model's noise texture
  follows them, as for the phantom's cases), every other column copied. It is written in a temporary folder renamed into place at the end, so a bad
  case leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from petseg_jax.data import nifti
from petseg_jax.data.raw_dataset import (
    IMAGES_DIR, LABELS_DIR, METADATA_CSV, RawDataset,
    image_file, label_file, save_nifti, write_dataset_json)
from petseg_jax.data.store import write_json_atomic
from petseg_jax.physics.attenuation import body_outline, mu_from_hu, mu_from_labels
from petseg_jax.physics.scanners import FIELDS_OF_VIEW
from petseg_jax.physics.simulation import Imaging, acquire, estimate_sensitivity, simulate

# metadata columns of the twins' reconstruction (the noise texture follows them at ingest)
RECONSTRUCTION_COLUMNS = ("psf_fwhm_mm", "post_fwhm_mm")
NEGATIVE_SIGMAS = 5.0  # negative voxels deeper than this many noise sigmas are an error


class LowDoseError(ValueError):
    """A case that cannot be simulated (the message names it)."""


def _noise_sigma(image: np.ndarray, body: np.ndarray) -> float:
    x = np.pad(image, 1, mode="edge")
    neighbours = sum(np.roll(x, s, a)[1:-1, 1:-1, 1:-1] for a in range(3) for s in (-1, 1)) / 6
    residual = (image - neighbours)[body]
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def _ct_mu(ct_path: Path, shape, affine, case_id: str) -> np.ndarray:
    ct = nifti.load(ct_path)
    ct_affine = np.asarray(ct.affine, float)
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    vox = (np.linalg.inv(ct_affine) @ affine @ corners)[:3]
    size = np.asarray(ct.shape[:3])[:, None]
    if (vox < -0.5 - 1e-3).any() or (vox > size - 0.5 + 1e-3).any():
        raise LowDoseError(f"case {case_id}: CT {ct_path} does not cover the PET grid")
    hu = nifti.resample_to_reference(nifti.array(ct), ct_affine, shape, affine, order=1)
    return mu_from_hu(hu)


def simulate_case(raw: RawDataset, case_id: str, factors: Sequence[float], nac: bool,
                  ct_dir: Path | None, counts_per_kbq: float | None, field_of_view: str,
                  imaging: Imaging, seed: int) -> tuple[nib.Nifti1Image, dict]:
    """The case's RAS image and its twins ``{(k, ac): image on the input's grid}``."""
    try:
        original = nifti.load(raw.image_path(case_id))
    except nifti.NiftiError as e:
        raise LowDoseError(f"case {case_id}: {e}") from None
    ras = nifti.to_ras(original)
    image, affine = nifti.array(ras).astype(np.float32), np.asarray(ras.affine, float)
    spacing = nifti.voxel_spacing(affine)
    body = body_outline(image)
    floor = NEGATIVE_SIGMAS * _noise_sigma(image, body) if body.any() else 0.0
    if image.min() < -floor:
        raise LowDoseError(f"case {case_id}: activity down to {image.min():.4g} is negative "
                           f"below the noise floor (-{floor:.4g}); is it a PET image in Bq/ml?")
    if ct_dir is not None:
        mu = _ct_mu(ct_dir / f"{case_id}.nii.gz", image.shape, affine, case_id)
    else:
        path = raw.label_path(case_id)
        if not path.is_file():
            raise LowDoseError(f"case {case_id}: no label map {path}, and no --ct-dir for the "
                               "attenuation map")
        labels = nifti.array(nifti.to_ras(nifti.load(path, label=True)))
        mu = mu_from_labels(body, labels, {raw.schema.id_of(n): n for n in raw.schema.names})
    rng = np.random.default_rng([seed, *case_id.encode()])
    if counts_per_kbq is None:
        sensitivity = estimate_sensitivity(image, mu, spacing, field_of_view, imaging,
                                           ndimage.binary_erosion(body, iterations=3), rng)
        print(f"{case_id}: estimated count level {sensitivity * 1000:.4g} counts per kBq")
    else:
        sensitivity = counts_per_kbq / 1000.0
    scan = acquire(np.maximum(image, 0.0), mu, spacing, field_of_view, sensitivity,
                   imaging.psf_fwhm_mm)
    conditions = [(k, ac) for k in factors for ac in ((True, False) if nac else (True,))]
    twins = simulate(scan, conditions, rng, imaging)
    back = nib.orientations.ornt_transform(nib.io_orientation(affine),
                                           nib.io_orientation(original.affine))
    return original, {c: nib.orientations.apply_orientation(v, back) for c, v in twins.items()}


def twin_id(case_id: str, factor: float, attenuation_corrected: bool) -> str:
    """``<case>_drf<k>`` (k as %g), ``_nac`` appended for NAC."""
    return f"{case_id}_drf{factor:g}" + ("" if attenuation_corrected else "_nac")


def _metadata_rows(raw_dir: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with (raw_dir / METADATA_CSV).open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), {r["case_id"].strip(): r for r in reader}


def make_twins(raw_dir: Path, out: Path, factors: Sequence[float], nac: bool = False,
               ct_dir: Path | None = None, counts_per_kbq: float | None = None,
               field_of_view: str | None = None, imaging: Imaging = Imaging(3.0, 3.0),
               seed: int = 0) -> int:
    """Write the low-dose raw folder ``out``; returns the number of cases written."""
    factors = [float(k) for k in factors]
    if not factors or min(factors) <= 1.0:
        raise LowDoseError(f"--factors must all be > 1, got {factors}")
    if counts_per_kbq is not None and not counts_per_kbq > 0:
        raise LowDoseError(f"--counts-per-kbq must be > 0, got {counts_per_kbq}")
    raw = RawDataset(raw_dir)
    columns, rows = _metadata_rows(raw_dir)
    columns += [c for c in RECONSTRUCTION_COLUMNS if c not in columns]
    if out.exists() and any(out.iterdir()):
        raise LowDoseError(f"{out} exists and is not empty")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / IMAGES_DIR).mkdir(parents=True)
    (tmp / LABELS_DIR).mkdir()
    written = []
    try:
        for case_id in raw.case_ids():
            meta = raw.metadata(case_id)
            if not meta.attenuation_corrected:
                raise LowDoseError(f"case {case_id}: the input is NAC; twins need the "
                                   "attenuation-corrected full-dose image")
            fov = field_of_view or rows[case_id].get("field_of_view") or "total_body"
            original, twins = simulate_case(raw, case_id, factors, nac, ct_dir, counts_per_kbq,
                                            fov, imaging, seed)
            label_path = raw.label_path(case_id)
            for (k, ac), image in twins.items():
                new_id = twin_id(case_id, k, ac)
                save_nifti(image_file(tmp, new_id, raw.file_ending), image, original.affine)
                if label_path.is_file():
                    shutil.copyfile(label_path, label_file(tmp, new_id, raw.file_ending))
                row = dict(rows[case_id], case_id=new_id,
                           dose_reduction_factor=f"{k * meta.dose_reduction_factor:g}",
                           attenuation_corrected="true" if ac else "false",
                           psf_fwhm_mm=f"{imaging.psf_fwhm_mm:g}",
                           post_fwhm_mm=f"{imaging.post_fwhm_mm:g}")
                written.append(row)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(written)
        (tmp / METADATA_CSV).write_text(buf.getvalue())
        write_dataset_json(tmp, raw.schema, len(written), raw.file_ending,
                           name=f"low-dose twins of {raw_dir.name}")
        write_json_atomic(tmp / "lowdose.json", {"source": str(raw_dir), "factors": factors,
                                                 "nac": nac, "seed": seed})
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(written)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m petseg_jax.data.lowdose",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", required=True, type=Path, help="raw folder of full-dose images")
    ap.add_argument("--out", required=True, type=Path, help="raw folder to write (new or empty)")
    ap.add_argument("--factors", required=True,
                    help="comma-separated dose reduction factors > 1, e.g. 4,10,20,50,100")
    ap.add_argument("--nac", action="store_true", help="also write NAC twins (same counts)")
    ap.add_argument("--ct-dir", type=Path, help="<case_id>.nii.gz CTs in HU")
    ap.add_argument("--counts-per-kbq", type=float,
                    help="count level of the input (default: estimated from its noise)")
    ap.add_argument("--field-of-view", choices=FIELDS_OF_VIEW,
                    help="scanner class (default: metadata column field_of_view, else "
                         "total_body)")
    ap.add_argument("--psf-fwhm-mm", type=float, default=3.0,
                    help="scanner resolution, modelled in OSEM")
    ap.add_argument("--post-fwhm-mm", type=float, default=3.0, help="Gaussian post-filter")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        factors = [float(f) for f in args.factors.split(",") if f.strip()]
        n = make_twins(args.raw, args.out, factors, args.nac, args.ct_dir, args.counts_per_kbq,
                       args.field_of_view, Imaging(args.psf_fwhm_mm, args.post_fwhm_mm),
                       args.seed)
    except (ValueError, OSError) as e:  # LowDoseError, RawDatasetError, NiftiError included
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {n} low-dose cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
