#!/usr/bin/env bash
# One node, all its GPUs: a single JAX process drives every local GPU (the mesh's data axis spans
# them); batches are sharded over devices inside the jitted step.
#
#   launch/single_node.sh --config configs/default.py --workdir runs/tb_pet \
#       --config.data.raw_dir=/data/Dataset801_TBPET
#
# Set CUDA_VISIBLE_DEVICES to restrict the GPUs. Run with --dry-run first to size batch and patch.
set -euo pipefail
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
# Faster GPU kernels on Hopper/Ampere; harmless elsewhere.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
exec python -m petseg_jax.train "$@"
