"""Evaluate a trained model the way the paper does: Dice per organ, tracer, center, dose, AC/NAC.

    python -m petseg_jax.evaluate --workdir W [--store S] [--split test] [--step N]
                                  [--dose-sweep 1,4,10,20,50,100] [--cpu-devices N]

See :mod:`petseg_jax.evaluation.evaluate` for what it does and writes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from petseg_jax.console import entry_point, setup_logging
from petseg_jax.evaluation import report
from petseg_jax.evaluation.evaluate import run
from petseg_jax.inference.runtime import add_cpu_devices_argument
from petseg_jax.training.mesh import configure_cpu_devices


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--store", help="store to evaluate on (default: the training store)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--step", type=int, help="checkpoint step (default: best)")
    parser.add_argument("--dose-sweep", default="",
                        help="comma-separated dose reduction factors, e.g. 1,4,10,20,50,100")
    parser.add_argument("--mip-cases", type=int, default=4)
    add_cpu_devices_argument(parser)
    args = parser.parse_args(argv)
    setup_logging()
    configure_cpu_devices(args.cpu_devices, "--cpu-devices")
    sweep = [float(f) for f in args.dose_sweep.split(",") if f.strip()]
    if any(f < 1 for f in sweep):
        parser.error("--dose-sweep factors must be >= 1")
    summary = run(args.workdir, args.store, args.split, args.step, sweep, args.mip_cases)
    print(report.format_summary(summary))
    return summary


cli = entry_point(main)

if __name__ == "__main__":
    main()
