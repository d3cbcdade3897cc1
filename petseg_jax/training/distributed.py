"""JAX's distributed runtime: one process per host (or per GPU), started by a launcher.

``initialize()`` is a no-op for a single process. Several processes are recognised from
``JAX_COORDINATOR_ADDRESS`` + ``JAX_NUM_PROCESSES`` + ``JAX_PROCESS_ID`` (set by
``launch/local_multiprocess.sh`` and ``launch/single_node.sh``) or from SLURM's variables (JAX
reads them itself under ``srun``). On CPU the collectives run over gloo.
"""

from __future__ import annotations

import os

import jax


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def initialize() -> None:
    """Join the distributed runtime when this process is one of several."""
    num = _env_int("JAX_NUM_PROCESSES")
    slurm = (_env_int("SLURM_NTASKS") or 1) > 1
    if not num or num <= 1:
        if not slurm:
            return
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = _env_int("PETSEG_INIT_TIMEOUT_S") or 300
    if num and num > 1:
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=num,
            process_id=int(os.environ["JAX_PROCESS_ID"]),
            initialization_timeout=timeout,
        )
    else:  # SLURM: cluster auto-detection
        jax.distributed.initialize(initialization_timeout=timeout)


def is_main() -> bool:
    """Process 0 logs, evaluates and writes outputs."""
    return jax.process_index() == 0
