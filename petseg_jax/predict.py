"""Segment PET NIfTI files: labels on exactly the input grid, plus per-organ SUV statistics.

    python -m petseg_jax.predict --model PATH -i pet.nii.gz -o labels.nii.gz [--stats organs.csv]
        [--suv-factor F | --weight-kg W --injected-mbq A]
    python -m petseg_jax.predict --model PATH -i IN_DIR -o OUT_DIR [--stats organs.csv]

``PATH`` is an export folder (it has ``meta.json``: served with jax/numpy/nibabel only), a
training workdir (``model.json`` and its best checkpoint, restored with flax) or the name of a
model installed with ``python -m petseg_jax.models install``. Everything about
the prediction (spacing, normalization, mirroring, post-processing) is what the model records,
so the labels are the ones ``evaluate`` scored. Any orientation, spacing and size in; the label
map comes out with the input's shape and affine, as integers. A model trained on SUV needs the
image's SUV factor. An input outside the model card (a ``--tracer`` the model never saw, a voxel
spacing far from the training spacing) gets a warning. For a folder,
each ``*.nii``/``*.nii.gz`` is predicted into ``OUT_DIR`` under the same name, the stats of all
cases go into one CSV, and a case that fails is reported without stopping the others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from petseg_jax.console import entry_point
from petseg_jax.data import nifti
from petseg_jax.inference.nifti_pipeline import (NIFTI_SUFFIXES, Predictor, suv_factor_from,
                                                 write_stats_csv)
from petseg_jax.inference import installed
from petseg_jax.inference.serving import META_FILE


def model_folder(model: str) -> Path:
    """``model`` as a folder: a path, else the name of an installed model
    (``python -m petseg_jax.models install``; location: :func:`installed.models_dir`)."""
    path = Path(model)
    if path.exists():
        return path
    found = installed.find_installed(model) if "/" not in model else None
    if found is None:
        raise FileNotFoundError(f"--model {model}: no such folder, and no model of that name is "
                                f"installed in {installed.models_dir()}")
    return found


def load_predictor(path: str | Path, step: int | None = None) -> Predictor:
    """An export folder (served without flax) or a training workdir (``model.json`` and a
    checkpoint's parameters)."""
    path = Path(path)
    if (path / META_FILE).exists():
        from petseg_jax.inference.serving import ServedModel

        return ServedModel(path)
    from petseg_jax.training.restore import load_trained  # flax, orbax: checkpoints only

    trained = load_trained(path, step)
    return Predictor(trained.apply, trained.params, trained.spec, f"{path} (step {trained.step})")


def input_warnings(spec: dict, path: Path, tracer: str | None) -> list[str]:
    """The model card's warnings for the input file ``path`` (its header only)."""
    spacing = [float(s) for s in nifti.voxel_spacing(nifti.load_header(path).affine)]
    return installed.card_warnings(spec["training_data"], spec["spacing"], spacing, tracer)


def input_pairs(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    """(input, output) files: one pair, or every NIfTI of a folder into the output folder."""
    if not inp.is_dir():
        if not inp.exists():
            raise FileNotFoundError(f"input {inp} does not exist")
        return [(inp, out)]
    files = sorted(p for p in inp.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"input folder {inp} holds no .nii/.nii.gz file")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"-i is a folder, so -o must be a folder; {out} is a file")
    return [(p, out / p.name) for p in files]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="export folder, training workdir or installed model name")
    parser.add_argument("--step", type=int, help="checkpoint step of a workdir (default: best)")
    parser.add_argument("-i", "--input", required=True, type=Path, help="NIfTI file or folder")
    parser.add_argument("-o", "--output", required=True, type=Path, help="NIfTI file or folder")
    parser.add_argument("--stats", type=Path, help="per-organ volume and SUV statistics CSV")
    parser.add_argument("--suv-factor", type=float, help="SUV = image * factor")
    parser.add_argument("--weight-kg", type=float, help="patient weight (with --injected-mbq)")
    parser.add_argument("--injected-mbq", type=float,
                        help="injected activity, decay-corrected image in Bq/ml")
    parser.add_argument("--tracer", help="the scan's tracer (warns when the model never saw it)")
    args = parser.parse_args(argv)
    if (args.weight_kg is None) != (args.injected_mbq is None):
        parser.error("--weight-kg and --injected-mbq go together")
    if args.suv_factor is not None and args.weight_kg is not None:
        parser.error("give --suv-factor or --weight-kg/--injected-mbq, not both")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the CLI; returns the stats rows. Exits with status 1 when any case failed."""
    args = parse_args(argv)
    try:
        suv_factor = args.suv_factor
        if args.weight_kg is not None:
            suv_factor = suv_factor_from(args.weight_kg, args.injected_mbq)
        pairs = input_pairs(args.input, args.output)
        predictor = load_predictor(model_folder(args.model), args.step)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    rows, failed = [], 0
    for src, dst in tqdm(pairs, desc="predict", unit="case", disable=len(pairs) == 1):
        try:
            for warning in input_warnings(predictor.spec, src, args.tracer):
                tqdm.write(f"warning: {src.name}: {warning}", file=sys.stderr)
            rows += predictor.predict_nifti(src, dst, suv_factor=suv_factor)
        except (OSError, ValueError) as err:
            failed += 1
            tqdm.write(f"error: {err}", file=sys.stderr)
    if args.stats is not None and rows:
        write_stats_csv(args.stats, rows)
    if failed:
        raise SystemExit(f"error: {failed} of {len(pairs)} case(s) failed")
    return rows


cli = entry_point(main)

if __name__ == "__main__":
    main()
