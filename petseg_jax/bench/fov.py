"""Field-of-view invariance: the same held-out total-body cases, whole and cut to a
conventional scan (skull base to mid-thigh), predicted with the model's default flags.

    python -m petseg_jax.bench fov --workdir W --raw RAW [--store S] [--split test]

For each ``total_body`` case of the split (phantom datasets: the subject, hence its skull base
and mid-thigh, comes back from the dataset seed in ``RAW/phantom.json``) the volume is cut along
z to ``[mid_thigh, skull_base]`` and predicted again. Organs wholly inside the cut (judged on the
uncut reference) are compared: the mean Dice over those (case, organ) pairs of the cut
prediction against the whole-body prediction of the same organs (issue 15's target: a drop of
at most 0.03). Prints one JSON object (means, drop, pairs).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from petseg_jax import metrics


def cut_range(affine: Sequence[Sequence[float]], depth: int, z_lo_mm: float,
              z_hi_mm: float) -> tuple[int, int]:
    """Slice indices ``[lo, hi)`` along the third axis (RAS, +z superior) covering world
    ``z_lo_mm..z_hi_mm`` of a volume ``depth`` slices deep with this voxel-to-world affine."""
    aff = np.asarray(affine, np.float64)
    if aff[2, 2] <= 0 or np.any(aff[2, :2]) or np.any(aff[:2, 2]):
        raise ValueError("the volume's third axis must run inferior to superior (RAS)")
    lo = max(0, math.ceil((z_lo_mm - aff[2, 3]) / aff[2, 2]))
    hi = min(depth, math.floor((z_hi_mm - aff[2, 3]) / aff[2, 2]) + 1)
    if hi <= lo:
        raise ValueError(f"world z {z_lo_mm:.0f}..{z_hi_mm:.0f} mm lies outside the volume")
    return lo, hi


def wholly_inside(ref: np.ndarray, lo: int, hi: int) -> list[int]:
    """Labels of ``ref`` whose every voxel lies in slices ``[lo, hi)`` along the third axis."""
    inside = set(np.unique(ref[:, :, lo:hi]).tolist()) - {0}
    outside = set(np.unique(ref[:, :, :lo]).tolist()) | set(np.unique(ref[:, :, hi:]).tolist())
    return sorted(inside - outside)


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m petseg_jax.bench fov", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--raw", required=True, type=Path, help="the phantom raw folder")
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--split", default="test")
    args = ap.parse_args(argv)

    from petseg_jax.data import store as store_lib
    from petseg_jax.evaluation.evaluate import CasePredictor
    from petseg_jax.phantom.anatomy import Anatomy
    from petseg_jax.phantom.generate import MARKER, subject_seed
    from petseg_jax.training.restore import load_trained

    marker = json.loads((args.raw / MARKER).read_text())
    cli = marker.get("argv", [])
    seed = int(cli[cli.index("--seed") + 1]) if "--seed" in cli else 0
    trained = load_trained(args.workdir)
    store = args.store or Path(trained.spec["store"])
    manifest = store_lib.read_manifest(store)
    cases = manifest["cases"]
    chosen = [c for c in trained.spec["splits"][args.split]
              if cases[c]["metadata"].get("field_of_view") == "total_body"]
    if not chosen:
        raise SystemExit(f"no total_body case in split {args.split!r} of {store}")
    predictor = CasePredictor(trained)
    pairs = []
    for case_id in chosen:
        case = cases[case_id]
        anatomy = Anatomy(subject_seed(seed, int(case_id.rsplit("_", 1)[1])))
        image = store_lib.read_array(store_lib.image_path(store, case_id)).astype(np.float32)
        ref = np.asarray(store_lib.read_array(store_lib.label_path(store, case_id)))
        lo, hi = cut_range(case["affine"], ref.shape[2], anatomy.mid_thigh_z,
                           anatomy.skull_base_z)
        whole = predictor(image, case, case_id)
        cut = predictor(np.ascontiguousarray(image[:, :, lo:hi]), case, case_id)
        for label in wholly_inside(ref, lo, hi):
            pairs.append({"case_id": case_id, "label": label,
                          "dice_whole": metrics.dice(whole, ref, label),
                          "dice_cut": metrics.dice(cut, ref[:, :, lo:hi], label)})
    whole_mean = float(np.mean([p["dice_whole"] for p in pairs]))
    cut_mean = float(np.mean([p["dice_cut"] for p in pairs]))
    print(json.dumps({"cases": chosen, "pairs": len(pairs), "dice_whole": whole_mean,
                      "dice_cut": cut_mean, "drop": whole_mean - cut_mean,
                      "per_pair": pairs}))
    return 0
