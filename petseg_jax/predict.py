"""Segment PET NIfTI files: labels on exactly the input grid, plus per-organ SUV statistics.

    python -m petseg_jax.predict --model PATH -i pet.nii.gz -o labels.nii.gz [--stats organs.csv]
        [--suv-factor F | --weight-kg W --injected-mbq A] [--mirror] [--largest-component]
        [--profile PATH.json]
    python -m petseg_jax.predict --model PATH -i IN_DIR -o OUT_DIR [--stats organs.csv]

``PATH`` is an export folder (it has ``meta.json``: served with jax/numpy/nibabel only) or a
training workdir (its best checkpoint, restored with flax). Any orientation, spacing and size
in; the label map comes out with the input's shape and affine, as integers. Without an SUV
factor the network input is scaled per case and the stats are in the image's units. For a folder,
each ``*.nii``/``*.nii.gz`` is predicted into ``OUT_DIR`` under the same name, the stats of all
cases go into one CSV, and a case that fails is reported without stopping the others. A progress
bar follows the sliding window's windows. ``--profile`` writes the peak host memory (RSS), the
peak device memory (where the backend reports it) and the seconds per stage (read, resample,
windows, post-processing, write; summed over the cases) as JSON. The sliding window streams the
volume slab by slab; a volume that cannot fit even so stops with an error naming the memory it
needs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from petseg_jax.inference.nifti_pipeline import (NIFTI_SUFFIXES, Predictor, suv_factor_from,
                                                 write_stats_csv)
from petseg_jax.inference.serving import META_FILE
from petseg_jax.inference.sliding_window import Progress
from petseg_jax.resources import Stages, write_json_atomic


def load_predictor(path: str | Path, step: int | None = None) -> Predictor:
    """An export folder (served without flax) or a training workdir's checkpoint."""
    path = Path(path)
    if (path / META_FILE).exists():
        from petseg_jax.inference.serving import ServedModel

        return ServedModel(path)
    from petseg_jax.training.restore import load_trained  # flax, orbax: checkpoints only

    trained = load_trained(path, step)
    return Predictor(trained.apply, trained.params, trained.spec, f"{path} (step {trained.step})")


def progress_bar(bar: tqdm) -> Progress:
    """A sliding-window ``progress(windows_done, windows_total)`` callback moving ``bar``."""
    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return progress


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
    parser.add_argument("--model", required=True, help="export folder or training workdir")
    parser.add_argument("--step", type=int, help="checkpoint step of a workdir (default: best)")
    parser.add_argument("-i", "--input", required=True, type=Path, help="NIfTI file or folder")
    parser.add_argument("-o", "--output", required=True, type=Path, help="NIfTI file or folder")
    parser.add_argument("--stats", type=Path, help="per-organ volume and SUV statistics CSV")
    parser.add_argument("--suv-factor", type=float, help="SUV = image * factor")
    parser.add_argument("--weight-kg", type=float, help="patient weight (with --injected-mbq)")
    parser.add_argument("--injected-mbq", type=float,
                        help="injected activity, decay-corrected image in Bq/ml")
    parser.add_argument("--mirror", action="store_true",
                        help="test-time left/right mirroring (2 passes per window)")
    parser.add_argument("--largest-component", action="store_true",
                        help="keep only the largest connected component of each organ that is one "
                        "component in every training case (the model's spec lists them)")
    parser.add_argument("--profile", type=Path, metavar="PATH.json",
                        help="write peak memory and seconds per stage to this JSON file")
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
        predictor = load_predictor(args.model, args.step)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    rows, failed, stages = [], 0, Stages()
    for src, dst in tqdm(pairs, desc="predict", unit="case", disable=len(pairs) == 1):
        with tqdm(desc=src.name, unit="window", leave=False) as bar:
            try:
                rows += predictor.predict_nifti(src, dst, suv_factor=suv_factor,
                                                mirror=args.mirror,
                                                largest_component=args.largest_component,
                                                progress=progress_bar(bar), stages=stages)
            except (OSError, ValueError, MemoryError) as err:
                failed += 1
                tqdm.write(f"error: {err}", file=sys.stderr)
    if args.stats is not None and rows:
        write_stats_csv(args.stats, rows)
    if args.profile is not None:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.profile, {"cases": len(pairs), "failed": failed,
                                         **stages.report()})
    if failed:
        raise SystemExit(f"error: {failed} of {len(pairs)} case(s) failed")
    return rows


if __name__ == "__main__":
    main()
