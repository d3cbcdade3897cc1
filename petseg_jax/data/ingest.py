"""Ingest a raw nnU-Net-style PET dataset into the zarr3 store (see :mod:`petseg_jax.data.store`).

    python -m petseg_jax.data.ingest --raw DIR --out STORE [--spacing X Y Z] [--skip-invalid]
        [--workers N] [--dtype float32|float16] [--locations-per-class K] [--seed S]

Every case is validated (readable, 3-D or single-frame 4-D, image and label of equal shape and
affine, label values in the schema, finite intensities, a valid metadata row), reoriented to
RAS, resampled to the target spacing (default: the dataset's median spacing; image linear,
labels nearest) and written as one image and one label array, plus the dose model's full-dose
noise variance map (:mod:`petseg_jax.physics.noise`: attenuation from the body outline and the
labels, the axial profile of the ``field_of_view`` column's scanner class (default total body),
the texture fitted for the reconstruction setting of the ``psf_fwhm_mm`` / ``post_fwhm_mm``
columns (default 3 / 3 mm, ``data.lowdose``'s default; a setting with no fitted texture gets no
noise map, with a warning naming it, and the simulator dose model refuses such a case), the
level from the image's own noise). Bad input is an error naming the
case and the problem (exit 1); ``--skip-invalid`` reports such cases and leaves them out.

Never half-written: each finished case gets a marker in ``STORE/.ingest/`` (holding its manifest
entry and the fingerprint of its inputs and options) and ``manifest.json`` is written last,
atomically. A rerun skips cases whose marker matches (input sizes and mtimes, metadata,
options), redoes the rest and drops cases no longer ingested; a store made with other options
is rebuilt.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from petseg_jax.data import nifti
from petseg_jax.data import store as store_lib
from petseg_jax.data.normalization import intensity_stats
from petseg_jax.data.raw_dataset import RawDataset, RawDatasetError
from petseg_jax.data.schema import LabelSchema
from petseg_jax.console import entry_point, setup_logging
from petseg_jax.physics import noise as noise_model
from petseg_jax.workers import process_pool

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")
DEFAULT_LOCATIONS_PER_CLASS = 200
AFFINE_TOLERANCE_MM = 1e-3
MARKERS = ".ingest"
OPTIONS = "options.json"


class IngestError(RuntimeError):
    """Invalid input (the message names every bad case and its problem)."""


class CaseError(ValueError):
    """One case's input is invalid (``str()``: ``case <id>: <problem>``)."""

    def __init__(self, case_id: str, problem: str):
        super().__init__(case_id, problem)  # both in args: picklable across processes
        self.case_id, self.problem = case_id, problem

    def __str__(self) -> str:
        return f"case {self.case_id}: {self.problem}"


@dataclasses.dataclass(frozen=True)
class CaseTask:
    """Everything a worker process needs to ingest one case."""

    case_id: str
    image: str
    label: str
    metadata: dict[str, Any]
    suv_factor: float | None
    store: str
    options: dict[str, Any]

    def fingerprint(self) -> dict[str, Any]:
        """What a completion marker must match for the case to be reused."""
        files = {}
        for kind in ("image", "label"):
            st = os.stat(getattr(self, kind))
            files[kind] = [st.st_size, st.st_mtime_ns]
        # Through JSON, so that it compares equal to the copy read back from a marker.
        return json.loads(json.dumps({"files": files, "metadata": self.metadata,
                                      "options": self.options}))


def _marker_path(store: str | Path, case_id: str) -> Path:
    return Path(store) / MARKERS / f"{case_id}.json"


def _read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_pair(task: CaseTask, schema: LabelSchema) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The validated image and its label array (uint8, on the image's grid)."""
    try:
        image = nifti.load(task.image)
        label_img = nifti.load(task.label, label=True)
    except nifti.NiftiError as e:
        raise CaseError(task.case_id, str(e)) from None
    if image.shape != label_img.shape:
        raise CaseError(task.case_id,
                        f"image shape {image.shape} != label shape {label_img.shape}")
    diff = np.abs(image.affine - label_img.affine).max()
    if diff > AFFINE_TOLERANCE_MM:
        raise CaseError(task.case_id, f"image and label affines differ by up to {diff:.4g} "
                        f"(tolerance {AFFINE_TOLERANCE_MM}): image "
                        f"{image.affine[:3].round(3).tolist()}, label "
                        f"{label_img.affine[:3].round(3).tolist()}")
    labels = nifti.array(label_img)
    outside = labels[(labels < 0) | (labels >= schema.num_classes)]
    if outside.size:
        bad = np.unique(outside)
        raise CaseError(task.case_id, f"{task.label}: label values {bad[:10].tolist()} are not "
                        f"in the schema (ids 0..{schema.num_classes - 1})")
    return image, labels.astype(np.uint8)


def _class_locations(labels: np.ndarray, k: int, rng: np.random.Generator
                     ) -> dict[str, list[list[int]]]:
    """Up to ``k`` random voxel indices of every foreground class present."""
    flat = np.flatnonzero(labels)
    values = labels.ravel()[flat]
    order = np.argsort(values, kind="stable")
    ids, starts, counts = np.unique(values[order], return_index=True, return_counts=True)
    out = {}
    for label_id, start, count in zip(ids, starts, counts):
        pick = rng.choice(count, size=min(k, count), replace=False)
        xyz = np.unravel_index(flat[order[start + pick]], labels.shape)
        out[str(int(label_id))] = np.stack(xyz, 1).tolist()
    return out


def component_counts(labels: np.ndarray) -> dict[str, int]:
    """Number of 26-connected components of each foreground id present (``{"3": 1, ...}``), so
    post-processing can be chosen later without rescanning volumes."""
    boxes = ndimage.find_objects(labels)
    return {str(i + 1): int(ndimage.label(labels[box] == i + 1, structure=np.ones((3, 3, 3)))[1])
            for i, box in enumerate(boxes) if box is not None}


def _noise_map(task: CaseTask, data: np.ndarray, labels: np.ndarray, schema: LabelSchema,
               spacing: list[float]) -> dict[str, Any] | None:
    """Write the case's full-dose noise variance map (the dose model's,
    :func:`petseg_jax.physics.noise.full_dose_variance`); returns its manifest entry, or None
    (with a warning) for an image whose noise cannot be measured (noise-free, too little
    tissue): the simulator dose model then refuses the case."""
    meta = task.metadata
    try:
        texture = noise_model.Texture(meta.get("psf_fwhm_mm", noise_model.DEFAULT_PSF_FWHM_MM),
                                      meta.get("post_fwhm_mm", noise_model.DEFAULT_POST_FWHM_MM),
                                      spacing)
        variance, coarse, scale = noise_model.full_dose_variance(
            data.astype(np.float32), labels, {schema.id_of(n): n for n in schema.names}, spacing,
            texture, bool(meta["attenuation_corrected"]), meta.get("field_of_view", "total_body"),
            float(meta["dose_reduction_factor"]))
    except ValueError as e:
        log.warning("case %s: no noise map (%s); the simulator dose model cannot use it",
                    task.case_id, e)
        return None
    store_lib.write_array(store_lib.noise_path(task.store, task.case_id),
                          np.stack([variance, coarse], -1), spacing)
    return {"scale": scale, "texture": texture.to_json()}


def process_case(task: CaseTask) -> dict[str, Any]:
    """Validate, reorient, resample and write one case; returns its manifest entry.

    Runs in worker processes (opens its own TensorStore handles). Raises :class:`CaseError`."""
    opts = task.options
    schema = LabelSchema.from_json(opts["schema"])
    image, labels = _load_pair(task, schema)
    labels = nifti.array(nifti.to_ras(nib.Nifti1Image(labels, image.affine)))
    image = nifti.to_ras(image)
    data, affine = nifti.resample_to_spacing(nifti.array(image), image.affine, opts["spacing"], 1)
    labels, _ = nifti.resample_to_spacing(labels, image.affine, opts["spacing"], 0)
    dtype = np.dtype(opts["image_dtype"])
    peak = float(np.abs(data).max())
    if peak > float(np.finfo(dtype).max):
        raise CaseError(task.case_id, f"intensities up to {peak:.4g} overflow {dtype}; use "
                        "--dtype float32")
    data = data.astype(dtype)
    spacing = nifti.voxel_spacing(affine).tolist()
    store_lib.write_array(store_lib.image_path(task.store, task.case_id), data, spacing)
    store_lib.write_array(store_lib.label_path(task.store, task.case_id), labels, spacing)
    noise = _noise_map(task, data, labels, schema, spacing)
    rng = np.random.default_rng([opts["seed"], zlib.crc32(task.case_id.encode())])
    counts = np.bincount(labels.ravel(), minlength=schema.num_classes)
    entry = {
        "shape": list(labels.shape),
        "spacing": spacing,
        "affine": affine.tolist(),
        "metadata": task.metadata,
        "suv_factor": task.suv_factor,
        "class_voxels": {str(i): int(n) for i, n in enumerate(counts)},
        "class_locations": _class_locations(labels, opts["locations_per_class"], rng),
        "class_components": component_counts(labels),
        "intensity": intensity_stats(data),
        "noise": noise,
    }
    store_lib.write_json_atomic(_marker_path(task.store, task.case_id),
                                {"fingerprint": task.fingerprint(), "entry": entry}, indent=None)
    return entry


def _run(tasks: Sequence[CaseTask], workers: int
         ) -> Iterator[tuple[CaseTask, dict[str, Any] | None, CaseError | None]]:
    """Process tasks (in this process when ``workers <= 1``); yields (task, entry, error)."""
    if workers <= 1:
        for task in tasks:
            try:
                yield task, process_case(task), None
            except CaseError as e:
                yield task, None, e
        return
    pool = process_pool(workers)
    try:
        futures = {pool.submit(process_case, t): t for t in tasks}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result(), None
            except CaseError as e:
                yield futures[future], None, e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _median_spacing(paths: dict[str, str], problems: dict[str, str]) -> list[float]:
    """Median RAS spacing over the readable images (unreadable ones go to ``problems``)."""
    spacings = []
    for case_id, path in paths.items():
        try:
            spacings.append(nifti.ras_spacing(nifti.load_header(path).affine))
        except nifti.NiftiError as e:
            problems[case_id] = str(e)
    if not spacings:
        raise IngestError("no readable image to take the median spacing from")
    return [round(float(s), 6) for s in np.median(spacings, axis=0)]


def _prepare_store(store: Path, options: dict[str, Any]) -> None:
    """Create the store folders; wipe ingest outputs made with other options."""
    options_file = store / MARKERS / OPTIONS
    stale = options_file.exists() and _read_json(options_file) != options
    unknown = not options_file.exists() and any(
        (store / p).exists() for p in (store_lib.IMAGES, store_lib.LABELS, store_lib.MANIFEST))
    if stale or unknown:
        log.info("store %s was made with other ingest options: rebuilding it", store)
        (store / store_lib.MANIFEST).unlink(missing_ok=True)
        for sub in (MARKERS, store_lib.IMAGES, store_lib.LABELS, store_lib.NOISE):
            shutil.rmtree(store / sub, ignore_errors=True)
    (store / MARKERS).mkdir(parents=True, exist_ok=True)
    store_lib.write_json_atomic(options_file, options)


def _reusable(task: CaseTask) -> dict[str, Any] | None:
    """The case's manifest entry when its completion marker matches the inputs and options."""
    marker = _read_json(_marker_path(task.store, task.case_id))
    if not isinstance(marker, dict) or marker.get("fingerprint") != task.fingerprint():
        return None
    return marker.get("entry")


def _drop_stale_cases(store: Path, keep: set[str]) -> None:
    """Remove arrays and markers of cases that are not (or no longer) in the store."""
    for sub in (store_lib.IMAGES, store_lib.LABELS, store_lib.NOISE):
        for path in (store / sub).glob("*"):
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
    for path in (store / MARKERS).glob("*.json"):
        if path.name != OPTIONS and path.stem not in keep:
            path.unlink()


def _report(problems: dict[str, str]) -> list[str]:
    """One line per problem (keys: case ids, or ``line N`` of metadata.csv)."""
    return [f"{k if k.startswith('line ') else 'case ' + k}: {problems[k]}"
            for k in sorted(problems)]


def _check_valid(raw_dir: str | Path, problems: dict[str, str], skip_invalid: bool) -> None:
    """Raise one error listing every problem (unless ``skip_invalid``)."""
    lines = _report(problems)
    if lines and not skip_invalid:
        raise IngestError(f"{len(lines)} invalid case(s) in {raw_dir}:\n  " + "\n  ".join(lines)
                          + "\nfix them, or rerun with --skip-invalid to leave them out")


def _plan(raw: RawDataset, store: Path, spacing: Sequence[float] | None, dtype: str,
          locations_per_class: int, seed: int, problems: dict[str, str]
          ) -> tuple[dict[str, Any], list[CaseTask]]:
    """The ingest options and one task per case that passes the metadata and file checks
    (the others go to ``problems``)."""
    metadata = {c: raw.metadata(c) for c in raw.case_ids()}
    if spacing is None:
        spacing = _median_spacing({c: str(raw.image_path(c)) for c in metadata}, problems)
    elif len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {list(spacing)}")
    options = json.loads(json.dumps({  # JSON-normalized: compared with the stored copy
        "format_version": store_lib.FORMAT_VERSION, "schema": raw.schema.to_json(),
        "spacing": [float(s) for s in spacing], "image_dtype": dtype,
        "locations_per_class": int(locations_per_class), "seed": int(seed)}))
    tasks = []
    for case_id, meta in metadata.items():
        task = CaseTask(case_id, str(raw.image_path(case_id)), str(raw.label_path(case_id)),
                        meta.to_json(), meta.suv_factor(), str(store), options)
        missing = [p for p in (task.image, task.label) if not os.path.isfile(p)]
        if missing:
            problems[case_id] = f"{missing[0]} does not exist"
        elif case_id not in problems:
            tasks.append(task)
    return options, tasks


def ingest(raw_dir: str | Path, store_dir: str | Path, spacing: Sequence[float] | None = None,
           *, dtype: str = "float32", skip_invalid: bool = False, workers: int | None = None,
           locations_per_class: int = DEFAULT_LOCATIONS_PER_CLASS, seed: int = 0,
           progress: bool = True) -> dict[str, Any]:
    """Ingest ``raw_dir`` into ``store_dir`` (resuming a previous run) and return the manifest.

    Raises :class:`IngestError` on invalid cases unless ``skip_invalid`` (then they are logged and
    left out) and :class:`~petseg_jax.data.raw_dataset.RawDatasetError` on a bad dataset folder.
    Problems found before any image is read (metadata, missing files) fail before the store is
    touched; the others after every valid case is written (a rerun resumes from those).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if locations_per_class < 1:
        raise ValueError(f"locations_per_class must be >= 1, got {locations_per_class}")
    raw = RawDataset(raw_dir, strict=False)
    if raw.schema.num_classes > 256:
        raise IngestError(f"{raw.schema.num_classes} classes do not fit the uint8 label arrays")
    problems: dict[str, str] = dict(raw.invalid)
    store = Path(store_dir)
    options, tasks = _plan(raw, store, spacing, dtype, locations_per_class, seed, problems)
    _check_valid(raw_dir, problems, skip_invalid)
    (store / store_lib.MANIFEST).unlink(missing_ok=True)  # incomplete until written again
    _prepare_store(store, options)
    entries = {t.case_id: e for t in tasks if (e := _reusable(t)) is not None}
    # largest images first, so that no worker is left with a long case while the others idle
    pending = sorted((t for t in tasks if t.case_id not in entries),
                     key=lambda t: -os.path.getsize(t.image))
    if entries:
        log.info("resuming: %d of %d cases already ingested", len(entries), len(tasks))
    n_workers = max(1, min(workers or min(os.cpu_count() or 1, 4), len(pending)))
    with tqdm(total=len(pending), desc="ingest", unit="case", disable=not progress) as bar:
        for task, entry, error in _run(pending, n_workers):
            if error is None:
                entries[task.case_id] = entry
            else:
                problems[task.case_id] = error.problem
            bar.update()
    _check_valid(raw_dir, problems, skip_invalid)
    for line in _report(problems):
        log.warning("skipped invalid %s", line)
    _drop_stale_cases(store, set(entries))
    if not entries:
        raise IngestError(f"no valid case in {raw_dir}")
    manifest = {"format_version": store_lib.FORMAT_VERSION, "schema": raw.schema.to_json(),
                "spacing": options["spacing"], "image_dtype": dtype,
                "cases": {c: entries[c] for c in sorted(entries)}}
    # compact: 200 voxel locations per class and case make an indented manifest ~7 MB and
    # slow to write and to read in every loader process
    store_lib.write_json_atomic(store / store_lib.MANIFEST, manifest, indent=None)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.data.ingest",
                                     description="Raw NIfTI PET dataset -> zarr3 store.")
    parser.add_argument("--raw", required=True, help="raw dataset folder (dataset.json, ...)")
    parser.add_argument("--out", required=True, help="store folder to create or resume")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="target spacing in mm (default: the dataset's median)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="report invalid cases and leave them out instead of failing")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: min(CPUs, 4))")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="image dtype")
    parser.add_argument("--locations-per-class", type=int, default=DEFAULT_LOCATIONS_PER_CLASS,
                        help="foreground voxel locations sampled per class and case")
    parser.add_argument("--seed", type=int, default=0, help="seed of the location sample")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        manifest = ingest(args.raw, args.out, args.spacing, dtype=args.dtype,
                          skip_invalid=args.skip_invalid, workers=args.workers,
                          locations_per_class=args.locations_per_class, seed=args.seed)
    except (IngestError, RawDatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"ingested {len(manifest['cases'])} cases into {args.out} at spacing "
          f"{manifest['spacing']} mm")
    return 0


cli = entry_point(main)

if __name__ == "__main__":
    sys.exit(main())
