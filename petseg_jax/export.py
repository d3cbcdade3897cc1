"""Export a trained model to StableHLO with ``jax.export``, for serving without training code.

    python -m petseg_jax.export --workdir W --out DIR [--dtype float32|bfloat16]
                                [--platforms cpu,cuda] [--step N]

See :mod:`petseg_jax.training.export` for what it does and writes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from petseg_jax.console import entry_point
from petseg_jax.training.export import DTYPES, export_workdir


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="training run folder (checkpoints/)")
    parser.add_argument("--out", required=True, help="export folder to write")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--platforms", default="cpu,cuda",
                        help="comma-separated jax platforms to lower for (default: cpu,cuda)")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the best)")
    args = parser.parse_args(argv)
    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    out = export_workdir(args.workdir, args.out, args.dtype, platforms, args.step)
    print(out)
    return out


cli = entry_point(main)

if __name__ == "__main__":
    main()
