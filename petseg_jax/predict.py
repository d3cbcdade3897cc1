"""Segment PET (NIfTI or DICOM): labels on exactly the input grid, plus per-organ SUV statistics.

    python -m petseg_jax.predict --model PATH -i pet.nii.gz -o labels.nii.gz [--stats organs.csv]
        [--suv-factor F | --weight-kg W --injected-mbq A] [--per-organ] [--preview [PNG]]
        [--profile PATH.json]
    python -m petseg_jax.predict --model PATH -i NIFTI_DIR -o OUT_DIR [--stats organs.csv]
    python -m petseg_jax.predict --model PATH -i DICOM_DIR -o OUT_DIR [--series UID]
        [--output-type nifti dicom_seg dicom_rtstruct] [--stats organs.csv] [--preview]
    python -m petseg_jax.predict -i DICOM_DIR --list-series

``PATH`` is an export folder (it has ``meta.json``: served with jax/numpy/nibabel only), a
training workdir (``model.json`` and its best checkpoint, restored with flax) or the name of a
model installed with ``python -m petseg_jax.models install``. Everything about the prediction
(spacing, normalization, mirroring, post-processing) is what the model records, so the labels are
the ones ``evaluate`` scored. An input outside the model card (a ``--tracer`` the model never
saw, a voxel spacing far from the training spacing, an image cropped along an axis whose
position the model gets) gets a warning. Any orientation, spacing and
size in; the label map comes out with the input's shape and affine, as integers, with a
``labels.json`` sidecar (``<case>.labels.json`` beside ``<case>.nii.gz``).

NIfTI: a file, or every ``*.nii``/``*.nii.gz`` of a folder into ``OUT_DIR`` under the same name.
A model trained on SUV needs the SUV factor (``--suv-factor``, or ``--weight-kg`` with
``--injected-mbq``); a model trained with per-case scaling takes the image as it is, and its
stats are then in the image's units.

DICOM: a folder searched recursively for DICOM files (by their DICM marker, any names); every
PET series is predicted (``--series UID`` picks one) into ``OUT_DIR/<SeriesInstanceUID>/``
(``labels.nii.gz``, ``labels.json``, ``seg.dcm``, ``rtstruct.dcm``, ``preview.png`` as asked).
SUV comes from the headers (QIBA: Units, DecayCorrection, dose, half-life, injection and scan
times, weight); a flag replaces its header field, and a missing or implausible field is an
error naming the tag and its flag. The network's input uses the same SUVbw.

The stats of all cases go into one CSV; a case that fails is reported without stopping the
others (exit status 1). A progress bar follows the sliding window's windows. ``--profile``
writes the peak host memory (RSS), the peak device memory (where the backend reports it) and the
seconds per stage (read, resample, windows, post-processing, write; summed over the cases) as
JSON. The sliding window streams the volume slab by slab; a volume that cannot fit even so
stops with an error naming the memory it needs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from petseg_jax.console import entry_point
from petseg_jax.data import dicom, nifti, position
from petseg_jax.data import suv
from petseg_jax.inference import installed
from petseg_jax.inference.nifti_pipeline import (NIFTI_SUFFIXES, STATS_COLUMNS, Predictor,
                                                 case_name)
from petseg_jax.inference.outputs import OUTPUT_TYPES, OutputOptions
from petseg_jax.inference.runtime import (DEVICES, add_cpu_devices_argument,
                                          enable_compile_cache, select_device)
from petseg_jax.inference.serving import META_FILE
from petseg_jax.inference.sliding_window import Progress
from petseg_jax.resources import Stages, write_json_atomic
from petseg_jax.training.mesh import configure_cpu_devices


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


def progress_bar(bar: tqdm) -> Progress:
    """A sliding-window ``progress(windows_done, windows_total)`` callback moving ``bar``."""
    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return progress


def input_warnings(spec: dict, path: Path, tracer: str | None) -> list[str]:
    """The model card's warnings for the NIfTI input ``path`` (its header only)."""
    header = nifti.load_header(path)
    spacing = [float(s) for s in nifti.ras_spacing(header.affine)]
    extent = [float(e) for e in nifti.ras_extent(header.affine, header.shape)]
    return installed.card_warnings(spec["training_data"], spec["spacing"], spacing, tracer,
                                   extent, position.position_axes(spec))


def nifti_files(inp: Path) -> list[Path]:
    """The NIfTI files directly inside folder ``inp``."""
    return sorted(p for p in inp.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))


def input_pairs(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    """(input, output) files: one pair, or every NIfTI of a folder into the output folder."""
    if not inp.is_dir():
        if not inp.exists():
            raise FileNotFoundError(f"input {inp} does not exist")
        return [(inp, out)]
    files = nifti_files(inp)
    if not files:
        raise FileNotFoundError(f"input folder {inp} holds no .nii/.nii.gz file")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"-i is a folder, so -o must be a folder; {out} is a file")
    return [(p, out / p.name) for p in files]


def is_dicom_input(inp: Path) -> bool:
    """A folder without NIfTI files at its top and with DICOM files below it."""
    return inp.is_dir() and not nifti_files(inp) and dicom.is_dicom_folder(inp)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="export folder, training workdir or installed model name")
    parser.add_argument("--step", type=int, help="checkpoint step of a workdir (default: best)")
    parser.add_argument("-i", "--input", required=True, type=Path,
                        help="NIfTI file, folder of NIfTIs, or folder of DICOM files")
    parser.add_argument("-o", "--output", type=Path, help="NIfTI file or output folder")
    parser.add_argument("--list-series", action="store_true",
                        help="list the DICOM series of -i (UID, modality, slices, description)")
    parser.add_argument("--series", metavar="UID", help="predict only this DICOM series")
    parser.add_argument("--output-type", nargs="+", choices=OUTPUT_TYPES, default=["nifti"],
                        help="outputs per case (DICOM ones need DICOM input)")
    parser.add_argument("--per-organ", action="store_true",
                        help="also one NIfTI mask per organ")
    parser.add_argument("--stats", type=Path, help="per-organ volume and SUV statistics CSV")
    parser.add_argument("--preview", nargs="?", const=True, metavar="PNG",
                        help="coronal + sagittal preview with the organs (a PNG path for a "
                        "single NIfTI; preview.png / <case>.preview.png otherwise)")
    suv.add_arguments(parser)
    parser.add_argument("--tracer", help="the scan's tracer (warns when the model never saw it)")
    parser.add_argument("--profile", type=Path, metavar="PATH.json",
                        help="write peak memory and seconds per stage to this JSON file")
    parser.add_argument("--device", choices=DEVICES,
                        help="run on this device (default: JAX's); no GPU falls back to CPU")
    add_cpu_devices_argument(parser)
    parser.add_argument("--compile-cache", type=Path,
                        help="JAX persistent compilation cache folder (default: "
                        "$JAX_COMPILATION_CACHE_DIR or ~/.cache/petseg_jax/jax)")
    args = parser.parse_args(argv)
    if not args.list_series and (args.model is None or args.output is None):
        parser.error("--model and -o are required (except with --list-series)")
    try:
        args.overrides = suv.overrides_from(args)
    except suv.SuvError as err:
        parser.error(str(err))
    return args


def warn(message: str) -> None:
    """A warning on stderr that does not break the progress bars."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def _jobs(args: argparse.Namespace, predictor: Predictor, options: OutputOptions
          ) -> list[tuple[str, Callable[[Progress, Stages], list[dict]]]]:
    """(name, run(progress, stages)) per case of the input."""
    if is_dicom_input(args.input):
        from petseg_jax.inference.dicom_pipeline import predict_series

        if isinstance(args.preview, str):
            raise ValueError("--preview PNG names one file; each DICOM series gets its "
                             "preview.png: give --preview alone")
        if args.output.exists() and not args.output.is_dir():
            raise NotADirectoryError(f"DICOM input writes a folder per series; {args.output} "
                                     "is a file")
        return [(s.uid, lambda progress, stages, s=s: predict_series(
            predictor, s, args.output, args.overrides, options, progress=progress,
            stages=stages, tracer=args.tracer, warn=warn))
                for s in dicom.pet_series(args.input, args.series)]
    if args.series is not None:
        raise ValueError("--series selects a DICOM series; -i is not a DICOM folder")
    if options.dicom:
        raise ValueError("DICOM output (dicom_seg, dicom_rtstruct) needs DICOM input: there is "
                         "no source series to reference")
    calibration = suv.from_flags(args.overrides)
    pairs = input_pairs(args.input, args.output)
    if isinstance(args.preview, str) and len(pairs) > 1:
        raise ValueError("--preview PNG names one file: give --preview alone for a folder")

    def preview(src: Path, dst: Path) -> Path | None:
        if args.preview is None:
            return None
        if isinstance(args.preview, str):
            return Path(args.preview)
        return dst.with_name(f"{case_name(dst)}.preview.png")

    def run(src: Path, dst: Path, progress: Progress, stages: Stages) -> list[dict]:
        for warning in input_warnings(predictor.spec, src, args.tracer):
            warn(f"{src.name}: {warning}")
        return predictor.predict_nifti(src, dst, calibration=calibration, options=options,
                                       preview=preview(src, dst), progress=progress,
                                       stages=stages)

    return [(src.name, lambda progress, stages, src=src, dst=dst: run(src, dst, progress, stages))
            for src, dst in pairs]


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the CLI; returns the stats rows. Exits with status 1 when any case failed."""
    args = parse_args(argv)
    try:
        if args.list_series:
            print(dicom.series_table(dicom.list_series(args.input)))
            return []
        configure_cpu_devices(args.cpu_devices, "--cpu-devices")
        select_device(args.device)
        enable_compile_cache(args.compile_cache)
        options = OutputOptions(tuple(args.output_type), args.per_organ,
                                args.preview is not None)
        predictor = load_predictor(model_folder(args.model), args.step)
        jobs = _jobs(args, predictor, options)
    except (OSError, ValueError) as err:  # DicomError, SuvError and NiftiError included
        raise SystemExit(f"error: {err}") from None
    rows, failed, stages = [], 0, Stages()
    for name, run in tqdm(jobs, desc="predict", unit="case", disable=len(jobs) == 1):
        with tqdm(desc=name, unit="window", leave=False) as bar:
            try:
                rows += run(progress_bar(bar), stages)
            except (OSError, ValueError, KeyError, MemoryError) as err:
                failed += 1
                tqdm.write(f"error: {name}: {err}", file=sys.stderr)
    if args.stats is not None and rows:
        suv.write_table(args.stats, rows, STATS_COLUMNS)
    if args.profile is not None:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.profile, {"cases": len(jobs), "failed": failed,
                                         **stages.report()})
    if failed:
        raise SystemExit(f"error: {failed} of {len(jobs)} case(s) failed")
    return rows


cli = entry_point(main)

if __name__ == "__main__":
    main()
