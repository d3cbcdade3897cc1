#!/usr/bin/env bash
# GPU benchmarks in one short call: the default config (bf16, 128^3 patches), batch per device
# from dry runs (the largest of 2, 4, 8, ... whose compiled step fits 90% of the GPU's memory),
# the train step (steps/s, FLOPs, MFU against the known bf16 peak of the GPU) and sliding-window
# inference of a 2 mm whole body; each prints its table and one JSON line.
#
#   launch/gpu_bench.sh                    # then record the two JSON lines in BUILD_NOTES.md
#   STEPS=50 SHAPE="288 144 900" launch/gpu_bench.sh --config.model.name=resenc
#
# Extra arguments (--config.key=value overrides) go to both benchmarks.
set -euo pipefail
CONFIG=${CONFIG:-configs/default.py}
STEPS=${STEPS:-20}
SHAPE=${SHAPE:-288 144 900}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -m petseg_jax.bench train --config "$CONFIG" --gpu auto --batch-per-device auto \
    --steps "$STEPS" --warmup 3 "$@"
# shellcheck disable=SC2086  # SHAPE is three numbers
python -m petseg_jax.bench infer --config "$CONFIG" --shape $SHAPE --repeats 2 "$@"
