"""Dispatch ``python -m petseg_jax.bench <benchmark> [args]`` to the benchmark's module."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from petseg_jax.console import entry_point

# Registration points: benchmark name -> module with ``main(argv: list[str]) -> int``.
SUBCOMMANDS = {
    "train": "petseg_jax.bench.train",  # train step: steps/s, FLOPs, MFU (performance issue)
    "infer": "petseg_jax.bench.infer",  # sliding-window inference (performance issue)
    "loader": "petseg_jax.bench.loader",  # input pipeline: patches/s, MB/s, determinism hash
    "learning": "petseg_jax.bench.learning",  # Dice on held-out cases vs training wall time
    "fov": "petseg_jax.bench.fov",  # Dice whole-body vs cut to skull base..mid-thigh
    "physics": "petseg_jax.bench.physics",  # scanner model: one scan with its low-dose twins
}
USAGE = (f"usage: python -m petseg_jax.bench {{{','.join(SUBCOMMANDS)}}} [options] "
         "(--help per benchmark)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"unknown benchmark {name!r}; {USAGE}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(SUBCOMMANDS[name])
    except ModuleNotFoundError as e:
        if e.name != SUBCOMMANDS[name]:
            raise
        print(f"benchmark {name!r} is not available yet: {SUBCOMMANDS[name]} does not exist",
              file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


cli = entry_point(main)

if __name__ == "__main__":
    sys.exit(main())
