#!/usr/bin/env bash
# GPU benchmarks in one short call (about 10 minutes with compilation): the default config
# (bf16, 128^3 patches), batch per device from dry runs (the largest of 2, 4, 8, ... whose
# compiled step fits 90% of the GPU's memory), the train step (steps/s, FLOPs, MFU against the
# known bf16 peak of the GPU), and the streamed sliding-window inference of a 2 mm whole body
# (300 x 300 x 1000 voxels: seconds, peak host and device memory); each prints its table and
# one JSON line.
#
#   launch/gpu_wheels.sh                   # here, once: the wheels the GPU image lacks -> .whl/
#   launch/gpu_bench.sh                    # there; then record the JSON lines in BUILD_NOTES.md
#   STEPS=50 SHAPE="288 144 900" launch/gpu_bench.sh --config.model.name=resenc
#
# The GPU image brings its own (newer) jax, jaxlib and CUDA plugin: they are used as they are;
# only the wheels in .whl/ that it lacks are installed, without dependencies. Extra arguments
# (--config.key=value overrides) go to both benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CONFIG=${CONFIG:-configs/default.py}
STEPS=${STEPS:-20}
SHAPE=${SHAPE:-300 300 1000}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install --quiet --no-index --no-deps .whl/*.whl
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
"$PYTHON" -m petseg_jax.bench train --config "$CONFIG" --gpu auto --batch-per-device auto \
    --steps "$STEPS" --warmup 3 "$@"
# shellcheck disable=SC2086  # SHAPE is three numbers
"$PYTHON" -m petseg_jax.bench infer --config "$CONFIG" --shape $SHAPE --repeats 1 "$@"
