"""Synthetic total-body PET phantoms in the raw dataset format (see ``raw_dataset``).

    python -m petseg_jax.phantom --out runs/raw --cases 10 --seed 0

Each case is one synthetic subject (:mod:`anatomy`: whole body on the bed, 23 organs and
unlabeled tissue) in a scanner field of view (whole body, 106 cm or skull base to mid-thigh,
``metadata.csv`` column ``field_of_view``), a tracer biodistribution (:mod:`uptake`, with 68Ga's
positron range) and a scan at a center (:mod:`scanner`; the two meet only through the activity
and attenuation maps). Tissue is drawn on a grid ``SUPERSAMPLE`` times finer and averaged down:
activity and attenuation by the mean, labels by the majority (ties go to the lower id, so a
voxel half organ, half background is background). Labels are the anatomy at a CT breathing
phase, the activity at the time-averaged one (``Anatomy.ct_phase``). Images are float32 Bq/ml
with the patient weight and injected activity in ``metadata.csv`` (SUV computable); labels come
from the anatomy itself, never from the image. BUILD_NOTES.md ("Synthetic phantom" and
"Session 4 - issue 15") describes the design.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from petseg_jax.console import entry_point
from petseg_jax.phantom.anatomy import ORGANS, TISSUE_CODE, TISSUES, Anatomy, Grid
from petseg_jax.phantom.scanner import CENTERS, Center, gaussian_blur, simulate_scans
from petseg_jax.phantom.uptake import (
    COUNT_YIELD, INJECTED_MBQ_PER_KG, case_suv, positron_range_blur, suv_tables, textured_suv)
from petseg_jax.data.raw_dataset import (
    DATASET_JSON, FIELDS_OF_VIEW, IMAGES_DIR, LABELS_DIR, METADATA_CSV, CaseMetadata,
    RawDatasetError, canonical_tracer, image_file, label_file, save_nifti, write_dataset_json,
    write_metadata_csv)
from petseg_jax.data.schema import DEFAULT_SCHEMA, LabelSchema
from petseg_jax.data.store import write_json_atomic
from petseg_jax.workers import process_pool

MARKER = "phantom.json"
DEFAULT_TRACER_MIX = {"FDG": 0.4, "PSMA": 0.15, "DOTATATE": 0.15, "FAPI": 0.15,
                      "Grazytracer": 0.15}
DEFAULT_FOV_MIX = dict.fromkeys(FIELDS_OF_VIEW, 1.0)
DEFAULT_DOSE_FACTORS = (1.0, 4.0, 10.0, 20.0, 50.0, 100.0)
TEXTURE_FWHM_MM = 14.0  # within-organ texture correlation length (sigma ~6 mm)
SUPERSAMPLE = 2  # tissue drawn on a grid this many times finer per axis, then averaged down
_MU = np.array([t.mu for t in TISSUES], np.float32)
# relative axial length of a field of view's scans (generation time follows it)
_AXIAL_COST = {"total_body": 3, "long_axial": 2, "conventional": 1}
_LUNG = np.isin(np.arange(len(TISSUES)), [TISSUE_CODE["lung_right"], TISSUE_CODE["lung_left"]])


class PhantomCase(NamedTuple):
    """One generated case; unpacks as ``image, labels, affine, metadata``."""

    image: np.ndarray  # float32 (X, Y, Z), Bq/ml
    labels: np.ndarray  # uint8 (X, Y, Z), schema ids
    affine: np.ndarray  # 4x4 RAS
    metadata: CaseMetadata


def organ_lut(schema: LabelSchema) -> np.ndarray:
    """Tissue code -> schema label id (tissues of organs outside the schema -> 0)."""
    unknown = [n for n in schema.names if n not in ORGANS]
    if unknown:
        raise ValueError(f"the phantom cannot draw organ(s) {unknown}; it knows "
                         f"{sorted(ORGANS)}")
    return np.array([schema.id_of(t.organ) if t.organ in schema.names else 0 for t in TISSUES],
                    np.uint8)


def _center(name: str) -> Center:
    try:
        return CENTERS[name]
    except KeyError:
        raise ValueError(f"unknown center {name!r} (known: {', '.join(CENTERS)})") from None


def _texture_field(shape, spacing, rng: np.random.Generator) -> np.ndarray:
    field = gaussian_blur(rng.standard_normal(shape, np.float32), TEXTURE_FWHM_MM,
                          spacing)
    return field / np.float32(field.std() + 1e-12)


def _blocks(volume: np.ndarray, f: int) -> np.ndarray:
    """``(X, Y, Z, f**3)``: each ``f x f x f`` block of ``volume`` (shape divisible by f)."""
    x, y, z = (n // f for n in volume.shape)
    return volume.reshape(x, f, y, f, z, f).transpose(0, 2, 4, 1, 3, 5).reshape(x, y, z, -1)


def block_mean(volume: np.ndarray, f: int) -> np.ndarray:
    """Mean of each ``f x f x f`` block (float32; shape divisible by f)."""
    out = volume.astype(np.float32)
    for axis in range(3):
        step = [slice(None)] * 3
        parts = []
        for i in range(f):
            step[axis] = slice(i, None, f)
            parts.append(out[tuple(step)])
        out = sum(parts[1:], parts[0])
    return out / np.float32(f ** 3)


def block_majority(labels: np.ndarray, f: int) -> np.ndarray:
    """The most frequent label of each ``f x f x f`` block; ties go to the lowest label."""
    blocks = _blocks(labels, f)
    out = blocks[..., 0].copy()
    mixed = np.nonzero((blocks != blocks[..., :1]).any(-1))
    b = blocks[mixed].astype(np.int32)
    votes = (b[:, :, None] == b[:, None, :]).sum(2)
    out[mixed] = b[np.arange(len(b)), (votes * 1024 - b).argmax(1)]
    return out


def _body_box(anatomy: Anatomy, grid: Grid) -> tuple[slice, slice, slice]:
    """Index box of ``grid`` that holds the body and the bed (everything else is air)."""
    lo, hi = anatomy.body.bbox()
    lo = np.array([max(lo[0], -230.0), anatomy.bed_top_y - 14, lo[2]]) - 25
    hi = hi + 25
    box = []
    for ax, a, b in zip(grid.axes, lo, hi):
        box.append(slice(int(np.searchsorted(ax, a)), max(int(np.searchsorted(ax, b, "right")),
                                                          int(np.searchsorted(ax, a)) + 1)))
    return tuple(box)


def _fine(grid: Grid, box: tuple[slice, ...], f: int) -> Grid:
    """The grid ``f`` times finer over ``box`` of ``grid`` (each coarse voxel = f^3 fine)."""
    origin = tuple(o + s * (b.start - 0.5 + 0.5 / f)
                   for o, s, b in zip(grid.origin, grid.spacing, box))
    return Grid(origin, tuple(s / f for s in grid.spacing),
                tuple((b.stop - b.start) * f for b in box))


def render_maps(anatomy: Anatomy, grid: Grid, tracer: str, suv: dict[str, float],
                texture_rng: np.random.Generator, schema: LabelSchema = DEFAULT_SCHEMA
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(activity in SUV, mu per mm, labels)`` on ``grid``, drawn ``SUPERSAMPLE`` times finer
    inside the body's box: SUV and mu averaged down (68Ga positron range applied), labels the
    CT-phase anatomy's block majority."""
    f = SUPERSAMPLE
    box = _body_box(anatomy, grid)
    fine = _fine(grid, box, f)
    tissue = anatomy.render(fine)
    labels = np.zeros(grid.shape, np.uint8)
    labels[box] = block_majority(organ_lut(schema)[anatomy.ct_phase(tissue, fine)], f)
    mu = np.zeros(grid.shape, np.float32)
    mu[box] = block_mean(_MU[tissue], f)
    mean, weighted_amp = suv_tables([t.uptake for t in TISSUES], suv)
    field = _texture_field(tuple(b.stop - b.start for b in box), grid.spacing, texture_rng)
    suv_map = np.zeros(grid.shape, np.float32)
    suv_map[box] = textured_suv(block_mean(mean[tissue], f), block_mean(weighted_amp[tissue], f),
                                field)
    lung = np.zeros(grid.shape, np.float32)
    lung[box] = block_mean(_LUNG[tissue], f)
    return positron_range_blur(suv_map, lung, grid.spacing, tracer), mu, labels


def generate_case(seed: int, tracer: str = "FDG", center: str = "center_a",
                  dose_reduction_factor: float = 1.0, attenuation_corrected: bool = True,
                  spacing_mm: float | Sequence[float] | None = None,
                  schema: LabelSchema = DEFAULT_SCHEMA, case_id: str = "phantom",
                  field_of_view: str = "total_body") -> PhantomCase:
    """One synthetic case. The anatomy (hence the labels) depends only on ``seed``, the
    field of view and the grid spacing; uptake on ``tracer``; noise on the dose factor and
    AC/NAC as well."""
    condition = (float(dose_reduction_factor), bool(attenuation_corrected))
    return generate_conditions(seed, tracer, center, [condition], spacing_mm, schema, case_id,
                               field_of_view)[condition]


def generate_conditions(seed: int, tracer: str, center: str,
                        conditions: Sequence[tuple[float, bool]],
                        spacing_mm: float | Sequence[float] | None = None,
                        schema: LabelSchema = DEFAULT_SCHEMA, case_id: str = "phantom",
                        field_of_view: str = "total_body"
                        ) -> dict[tuple[float, bool], PhantomCase]:
    """One subject scanned once, imaged at several ``(dose_reduction_factor, AC)``
    conditions (the scanner's low-dose twins of one acquisition, ``scanner.simulate_scans``);
    a condition's image is the same whichever other conditions are asked for."""
    tracer = canonical_tracer(tracer)
    site = _center(center)
    conditions = [(float(k), bool(ac)) for k, ac in conditions]
    if not conditions or not all(k >= 1 for k, _ in conditions):
        raise ValueError(f"dose reduction factors must be >= 1 (one at least), got {conditions}")
    if spacing_mm is None:
        spacing = site.spacing
    else:
        spacing = tuple(float(s) for s in np.broadcast_to(spacing_mm, 3))
    anatomy = Anatomy(seed)
    grid = Grid.covering(*anatomy.field_of_view(field_of_view), spacing)
    tag = zlib.crc32(tracer.encode())
    suv = case_suv(tracer, np.random.default_rng([seed, 1, tag]))
    suv_map, mu, labels = render_maps(anatomy, grid, tracer, suv,
                                      np.random.default_rng([seed, 2]), schema)
    act_rng = np.random.default_rng([seed, 3, tag])
    injected_bq = float(INJECTED_MBQ_PER_KG[tracer] * anatomy.weight_kg * 1e6
                        * np.exp(0.1 * act_rng.standard_normal()))
    activity = suv_map * np.float32(injected_bq / (anatomy.weight_kg * 1000.0))  # 1 g/ml
    images = simulate_scans(activity, mu, spacing, site, conditions, COUNT_YIELD[tracer],
                            np.random.default_rng([seed, 4, tag]), field_of_view=field_of_view)
    return {(k, ac): PhantomCase(images[(k, ac)], labels, grid.affine, CaseMetadata(
        case_id, tracer, site.name, k, ac, None, anatomy.weight_kg, round(injected_bq), "Bq/ml",
        field_of_view, site.psf_fwhm_mm, site.post_fwhm_mm)) for k, ac in conditions}


# ----------------------------------------------------------------------------- dataset plan

@dataclasses.dataclass(frozen=True)
class CasePlan:
    case_id: str
    seed: int
    tracer: str
    center: str
    dose_reduction_factor: float
    attenuation_corrected: bool
    split: str
    field_of_view: str = "total_body"


def _allocate(n: int, weights: Mapping[str, float] | Mapping[float, float]) -> list:
    """``n`` items split by weight (largest remainder); each key gets one first when n allows."""
    keys = [k for k, w in weights.items() if w > 0]
    total = sum(weights[k] for k in keys)
    base = dict.fromkeys(keys, 1) if n >= len(keys) else dict.fromkeys(keys, 0)
    rest = n - sum(base.values())
    quota = {k: rest * weights[k] / total for k in keys}
    counts = {k: base[k] + math.floor(quota[k]) for k in keys}
    order = sorted(keys, key=lambda k: (quota[k] - math.floor(quota[k]), weights[k]),
                   reverse=True)
    for k in order[:n - sum(counts.values())]:
        counts[k] += 1
    return [k for k in keys for _ in range(counts[k])]


def subject_seed(dataset_seed: int, index: int) -> int:
    """The anatomy seed of case ``phantom_<index>`` of a dataset planned with ``dataset_seed``
    (``Anatomy(subject_seed(...))`` gives back a case's subject, e.g. its landmarks)."""
    return int(np.random.SeedSequence([dataset_seed, index]).generate_state(1)[0])


def plan_cases(n: int, seed: int, tracers: Mapping[str, float] = DEFAULT_TRACER_MIX,
               centers: Sequence[str] = tuple(CENTERS),
               dose_factors: Sequence[float] = DEFAULT_DOSE_FACTORS,
               nac_fraction: float = 0.2, test_fraction: float = 0.2,
               val_fraction: float = 0.1,
               fields_of_view: Mapping[str, float] = DEFAULT_FOV_MIX) -> list[CasePlan]:
    """Deterministic case attributes and splits.

    Tracers follow the weights, centers are balanced, fields of view follow their weights
    (drawn independently of the center), half the cases are full dose (when 1 is
    among ``dose_factors``; the other factors share the rest), ``nac_fraction`` are NAC. Every
    tracer with >= 2 cases has held-out test cases (about ``test_fraction``), at least half of
    them full-dose AC when such cases are allowed (the demo is judged on full-dose AC FDG test
    cases); validation cases are drawn from the rest, keeping >= 1 train case per tracer.
    """
    if n < 1:
        raise ValueError("--cases must be >= 1")
    rng = np.random.default_rng([seed, 0x5EED])
    tracer_of = rng.permutation(_allocate(n, {canonical_tracer(t): w
                                              for t, w in tracers.items()}))
    center_of = rng.permutation(_allocate(n, dict.fromkeys(map(str, centers), 1.0)))
    unknown = set(fields_of_view) - set(FIELDS_OF_VIEW)
    if unknown:
        raise ValueError(f"unknown field(s) of view {sorted(unknown)} (known: {FIELDS_OF_VIEW})")
    fov_of = np.random.default_rng([seed, 0xF0F]).permutation(_allocate(n, fields_of_view))
    factors = sorted({float(f) for f in dose_factors})
    weights = {f: 1.0 for f in factors}
    if 1.0 in weights and len(factors) > 1:
        weights = {f: 0.5 if f == 1.0 else 0.5 / (len(factors) - 1) for f in factors}
    k_of = list(rng.permutation(_allocate(n, weights)))
    n_nac = int(round(nac_fraction * n))
    ac_of = list(rng.permutation([False] * n_nac + [True] * (n - n_nac)))

    split = ["train"] * n
    forced: set[int] = set()
    for tracer in dict.fromkeys(tracer_of):
        idx = [int(i) for i in rng.permutation(np.flatnonzero(tracer_of == tracer))]
        if len(idx) < 2:
            continue
        n_test = max(1, int(round(test_fraction * len(idx))))
        for i in idx[:n_test]:
            split[i] = "test"
        for i in idx[:(n_test + 1) // 2]:  # at least half the test cases: full-dose AC
            forced.add(i)
            for values, wanted in ((k_of, 1.0), (ac_of, True)):
                if values[i] != wanted and wanted in values:
                    donor = next((j for j in range(n) if values[j] == wanted
                                  and j not in forced), None)
                    if donor is None:
                        values[i] = wanted
                    else:
                        values[i], values[donor] = values[donor], values[i]
    n_val = int(round(val_fraction * n)) if n >= 5 else 0
    for i in rng.permutation(n):
        if n_val == 0:
            break
        same = [j for j in range(n) if tracer_of[j] == tracer_of[i] and split[j] == "train"]
        if split[i] == "train" and len(same) > 1:
            split[i] = "val"
            n_val -= 1
    return [CasePlan(f"phantom_{i:04d}", subject_seed(seed, i),
                     str(tracer_of[i]), str(center_of[i]), float(k_of[i]), bool(ac_of[i]),
                     split[i], str(fov_of[i])) for i in range(n)]


# ----------------------------------------------------------------------------- writing

def write_case(out: Path, plan: CasePlan, spacing_mm: float | None,
               schema: LabelSchema = DEFAULT_SCHEMA) -> CaseMetadata:
    """Generate one planned case and write its image and label files (atomically)."""
    case = generate_case(plan.seed, plan.tracer, plan.center, plan.dose_reduction_factor,
                         plan.attenuation_corrected, spacing_mm, schema, plan.case_id,
                         plan.field_of_view)
    save_nifti(image_file(out, plan.case_id), case.image, case.affine)
    save_nifti(label_file(out, plan.case_id), case.labels, case.affine)
    return dataclasses.replace(case.metadata, split=plan.split)


def longest_first(plans: Sequence[CasePlan]) -> list[int]:
    """Indices of ``plans``, the longest scans first (total body, 106 cm, conventional; stable
    within a class): handed to a worker pool in this order, no worker is left with a long
    case while the others idle at the end."""
    return sorted(range(len(plans)), key=lambda i: -_AXIAL_COST[plans[i].field_of_view])


def _prepare_out(out: Path, overwrite: bool, marker: dict) -> None:
    """Refuse foreign non-empty folders; mark the dataset incomplete until it is finished."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists() and not overwrite:
        raise RawDatasetError(f"{out} is not empty and is not a phantom dataset (no {MARKER}); "
                              "choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for name in (DATASET_JSON, METADATA_CSV):
        (out / name).unlink(missing_ok=True)
    for sub in (IMAGES_DIR, LABELS_DIR):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir()
    write_json_atomic(out / MARKER, marker)


def write_dataset(out: str | Path, plans: Sequence[CasePlan], spacing_mm: float | None = None,
                  workers: int = 1, overwrite: bool = False, marker: dict | None = None) -> Path:
    """Write all planned cases, then metadata.csv, then dataset.json (the completion mark)."""
    out = Path(out)
    _prepare_out(out, overwrite, marker or {"generator": __name__})
    bar = tqdm(total=len(plans), desc="phantom", unit="case")
    if workers <= 1:
        rows = []
        for plan in plans:
            rows.append(write_case(out, plan, spacing_mm))
            bar.update()
    else:
        # spawn, not fork: the scanner model runs JAX, which must not be forked once started
        with process_pool(workers) as pool:
            futures = {i: pool.submit(write_case, out, plans[i], spacing_mm)
                       for i in longest_first(plans)}
            for f in futures.values():
                f.add_done_callback(lambda _: bar.update())
            rows = [futures[i].result() for i in range(len(plans))]
    bar.close()
    write_metadata_csv(out, rows)
    write_dataset_json(out, DEFAULT_SCHEMA, len(rows), name="petseg_jax synthetic PET phantom")
    return out


def _weights(items: Sequence[str], canonical=str) -> dict[str, float]:
    weights = {}
    for item in items:
        name, _, w = item.partition(":")
        weights[canonical(name)] = float(w) if w else 1.0
    return weights


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m petseg_jax.phantom", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="raw dataset folder to write")
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tracers", nargs="+", metavar="NAME[:WEIGHT]",
                    help="tracer mix (default FDG:0.4 and 0.15 each for PSMA, DOTATATE, FAPI, "
                         "Grazytracer)")
    ap.add_argument("--centers", nargs="+", default=list(CENTERS), choices=list(CENTERS))
    ap.add_argument("--fields-of-view", nargs="+", metavar="NAME[:WEIGHT]",
                    help="scanner field-of-view mix, drawn independently of the center "
                         f"(default: {', '.join(FIELDS_OF_VIEW)} equally)")
    ap.add_argument("--dose-reduction-factors", nargs="+", type=float,
                    default=list(DEFAULT_DOSE_FACTORS), metavar="K",
                    help="dose reduction factors (1 = full dose; half the cases get 1)")
    ap.add_argument("--nac-fraction", type=float, default=0.2,
                    help="fraction of non-attenuation-corrected cases")
    ap.add_argument("--spacing", type=float, default=None, metavar="MM",
                    help="isotropic voxel spacing (default: each center's own grid)")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=1, help="parallel processes")
    ap.add_argument("--overwrite", action="store_true",
                    help="write into a non-empty folder that is not a phantom dataset "
                         "(replaces its imagesTr/, labelsTr/, dataset.json, metadata.csv)")
    args = ap.parse_args(argv)
    try:
        tracers = _weights(args.tracers, canonical_tracer) if args.tracers else DEFAULT_TRACER_MIX
        fovs = _weights(args.fields_of_view) if args.fields_of_view else DEFAULT_FOV_MIX
        if any(k < 1 for k in args.dose_reduction_factors):
            raise ValueError("dose reduction factors must be >= 1")
        if not 0 <= args.nac_fraction <= 1:
            raise ValueError("--nac-fraction must be in [0, 1]")
        plans = plan_cases(args.cases, args.seed, tracers, args.centers,
                           args.dose_reduction_factors, args.nac_fraction, args.test_fraction,
                           args.val_fraction, fovs)
        marker = {"generator": __name__, "argv": list(sys.argv[1:] if argv is None else argv)}
        write_dataset(args.out, plans, args.spacing, args.workers, args.overwrite, marker)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    counts = {s: sum(p.split == s for p in plans) for s in ("train", "val", "test")}
    print(f"wrote {len(plans)} cases to {args.out} ({counts})")
    return 0


cli = entry_point(main)
