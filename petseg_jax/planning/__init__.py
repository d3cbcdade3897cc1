"""Experiment planning: dataset fingerprint, nnU-Net-style heuristics, compiler-sized search.

``fingerprint`` reads the store's manifest, ``heuristics`` turns it into target spacing and a
ladder of (patch, depth, batch) candidates, ``search`` compiles candidates to pick the largest
that fits a memory budget; :mod:`petseg_jax.plan` is the command line.
"""


class PlanError(ValueError):
    """A dataset, config or budget that cannot be planned (the message says why)."""
