"""JAX's distributed runtime: one process per host (or per GPU), started by a launcher.

``initialize()`` is a no-op for a single process. Several processes are recognised from
``JAX_COORDINATOR_ADDRESS`` + ``JAX_NUM_PROCESSES`` + ``JAX_PROCESS_ID`` (set by
``launch/local_multiprocess.sh`` and ``launch/single_node.sh``) or from SLURM's variables (JAX
reads them itself under ``srun``). On CPU the collectives run over gloo.
"""

from __future__ import annotations

import os

import jax
import jax.extend.backend


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


def leave() -> None:
    """Leave the distributed runtime after the last collective work, so that process 0 can run
    the closing stages (evaluation, export) alone without any cross-process wait that can time
    out. Every process must call it at the same point (right after training: its shutdown
    barrier then waits only for the slowest process to get there). The backends are cleared:
    the next JAX call starts a single-process backend on this process's own devices, and
    arrays of the old runtime must not be used again. No-op for a single process."""
    if jax.process_count() == 1:
        return
    main = is_main()
    jax.distributed.shutdown()
    jax.extend.backend.clear_backends()
    if main and jax.process_count() != 1:
        raise RuntimeError(f"still {jax.process_count()} processes after leaving the runtime")


def is_main() -> bool:
    """Process 0 logs, evaluates and writes outputs."""
    return jax.process_index() == 0
