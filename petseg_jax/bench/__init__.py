"""Benchmarks: ``python -m petseg_jax.bench train|infer|loader ...``.

Each prints a table and ends with one JSON line (:mod:`petseg_jax.bench.common`). A benchmark is
a module of this package with ``main(argv) -> int``, registered in ``__main__.SUBCOMMANDS``.
"""
