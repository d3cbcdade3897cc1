"""``python -m petseg_jax.bench loader``: input pipeline throughput, memory and determinism.

Times ``--batches`` batches after ``--warmup`` ones and reports patches/s, MB/s (image + label
bytes delivered), CPU core-seconds per patch over the process and its workers (so the cores a
host needs read off as patches/s x core_s_per_patch), resident memory of the process tree at the
start and end of the timed run (and 10 samples in between), and ``first_batches_sha256``: a hash
of the bytes of the first 4 batches, equal for any worker count. ``--synthetic-cases N`` first writes a synthetic store
(:mod:`petseg_jax.bench.synthetic_store`) at ``--store`` when none is there.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from petseg_jax.bench import common
from petseg_jax.bench.synthetic_store import write_synthetic_store
from petseg_jax.data import store
from petseg_jax.data.pipeline import data_config, make_train_iterator

HASHED_BATCHES = 4
RSS_SAMPLES = 10  # resident memory samples over the timed batches (rss_mb_trace)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m petseg_jax.bench loader", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, type=Path, help="preprocessed store")
    p.add_argument("--patch", nargs=3, type=int, default=[128, 128, 128], metavar=("X", "Y", "Z"))
    p.add_argument("--batch", type=int, default=2, help="local batch size")
    p.add_argument("--workers", type=int, default=0, help="grain worker processes (0 = inline)")
    p.add_argument("--batches", type=int, default=50, help="timed batches")
    p.add_argument("--warmup", type=int, default=4, help="untimed batches first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dose-prob", type=float, default=data_config().dose_augmentation.prob,
                   help="dose augmentation probability (default: configs/default.py's)")
    p.add_argument("--cache-mb", type=int, default=0, help="TensorStore cache per process")
    p.add_argument("--read-threads", type=int, default=data_config().read_threads)
    p.add_argument("--synthetic-cases", type=int, default=0,
                   help="write a synthetic store of this many cases at --store if it is absent")
    p.add_argument("--synthetic-shape", nargs=3, type=int, default=[180, 180, 500])
    p.add_argument("--synthetic-dtype", default="float16", choices=["float16", "float32"])
    args = p.parse_args(argv)
    if args.batch < 1 or args.batches < 1 or args.warmup < 0 or args.workers < 0:
        p.error("--batch and --batches must be >= 1, --warmup and --workers >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.synthetic_cases and not (args.store / store.MANIFEST).exists():
        write_synthetic_store(args.store, cases=args.synthetic_cases, shape=args.synthetic_shape,
                              image_dtype=args.synthetic_dtype, seed=args.seed, progress=True)
    manifest = store.read_manifest(args.store)
    cfg = data_config({"dose_augmentation": {"prob": args.dose_prob}, "cache_mb": args.cache_mb,
                       "read_threads": args.read_threads, "patch_size": tuple(args.patch)})
    rss_before = common.tree_rss_mb()
    digest = hashlib.sha256()
    trace_every, rss_trace = max(1, args.batches // RSS_SAMPLES), []
    t0 = time.perf_counter()
    with make_train_iterator(args.store, None, local_batch_size=args.batch, seed=args.seed, data_cfg=cfg,
                             workers=args.workers) as it:
        for i in range(args.warmup + args.batches):
            if i == args.warmup:
                t_start, cpu_start, rss_start = (time.perf_counter(), common.tree_cpu_s(),
                                                 common.tree_rss_mb())
                nbytes, bar = 0, tqdm(total=args.batches, desc="loader", unit="batch")
            batch = next(it)
            if i == 0:
                startup_s = time.perf_counter() - t0
            if i < HASHED_BATCHES:
                for key in sorted(batch):
                    digest.update(batch[key].tobytes())
            if i >= args.warmup:
                nbytes += sum(v.nbytes for v in batch.values())
                bar.update()
                if (i - args.warmup + 1) % trace_every == 0:
                    rss_trace.append([i - args.warmup + 1, common.tree_rss_mb()])
        wall = time.perf_counter() - t_start
        cpu_end, rss_end = common.tree_cpu_s(), common.tree_rss_mb()
        bar.close()
    patches = args.batches * args.batch
    cpu_s = None if cpu_end is None or cpu_start is None else round(cpu_end - cpu_start, 2)
    result = {
        "bench": "loader", "store": str(args.store), "cases": len(manifest["cases"]),
        "image_dtype": manifest.get("image_dtype"), "patch": args.patch, "batch": args.batch,
        "workers": args.workers, "batches": args.batches, "seed": args.seed,
        "dose_prob": args.dose_prob, "cache_mb": args.cache_mb,
        "patches_per_s": round(patches / wall, 2), "mb_per_s": round(nbytes / wall / 1e6, 1),
        "startup_s": round(startup_s, 2), "cpu_s": cpu_s,
        "core_s_per_patch": None if cpu_s is None else round(cpu_s / patches, 4),
        "cores_busy": None if cpu_s is None else round(cpu_s / wall, 2),
        "rss_mb_before": rss_before, "rss_mb_start": rss_start, "rss_mb_end": rss_end,
        "rss_mb_trace": rss_trace,
        "first_batches_sha256": digest.hexdigest(), **common.machine(),
    }
    rows = [(k, result[k]) for k in ("store", "patch", "batch", "workers", "dose_prob",
                                     "batches", "startup_s", "patches_per_s", "mb_per_s",
                                     "core_s_per_patch", "cores_busy", "rss_mb_start",
                                     "rss_mb_end", "first_batches_sha256")]
    common.report("input pipeline benchmark", rows, result)
    return 0
