#!/usr/bin/env bash
# Start N training processes on this machine, coordinated by JAX's distributed runtime on
# 127.0.0.1 (CPU: gloo collectives). For tests and debugging of multi-host code paths.
#
#   launch/local_multiprocess.sh N -- --config configs/demo.py --workdir runs/mp [--config.x=y]
#
# Each process sees XLA_FLAGS as given (e.g. --xla_force_host_platform_device_count=2 for two
# virtual CPU devices per process). If any process fails, the others are stopped and the script
# exits with that process's status; logs go to <workdir or /tmp>/process_<i>.log and stdout.
set -euo pipefail
if [[ $# -lt 2 || "$2" != "--" ]]; then
  echo "usage: $0 N -- <python -m petseg_jax.train arguments>" >&2
  exit 2
fi
n=$1; shift 2
port=${PETSEG_COORDINATOR_PORT:-$((20000 + RANDOM % 20000))}
logdir=${PETSEG_LOG_DIR:-$(mktemp -d /tmp/petseg_mp.XXXXXX)}
mkdir -p "$logdir"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
for ((i = 0; i < n; i++)); do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_NUM_PROCESSES=$n JAX_PROCESS_ID=$i \
    JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} \
    python -m petseg_jax.train "$@" >"$logdir/process_$i.log" 2>&1 &
  pids+=($!)
done
echo "started $n processes (coordinator 127.0.0.1:$port), logs in $logdir"
status=0
remaining=$n
while ((remaining > 0)); do
  # wait -n: the first process to end; a failure stops the whole job.
  if wait -n; then
    remaining=$((remaining - 1))
  else
    status=$?
    echo "a process exited with status $status: stopping the others" >&2
    break
  fi
done
cleanup
wait 2>/dev/null || true
for ((i = 0; i < n; i++)); do echo "--- process $i"; tail -n 5 "$logdir/process_$i.log"; done
exit $status
