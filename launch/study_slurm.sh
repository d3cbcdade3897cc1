#!/usr/bin/env bash
# The study on a SLURM cluster: plan here (ingest the store once, check every fold and run), then
# one array job per run (fold x seed, launch/study_task.sbatch), then one job that writes the
# tables once every run has ended (it names the runs that did not finish).
#
#   launch/study_slurm.sh --config configs/study_paper.py --protocols multicenter,cross_tracer \
#       --seeds 3 --out /scratch/study --config.data.raw_dir=/data/Dataset801_TBPET \
#       --config.data.store=/scratch/tbpet_store
#
# Partition, account and time limit through sbatch's environment (SBATCH_PARTITION,
# SBATCH_ACCOUNT, SBATCH_TIMELIMIT). Running the script again resumes: finished runs are reused,
# unfinished ones resume from their checkpoints.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
args=("$@")
out=""
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --out) out="${args[i + 1]:-}" ;;
    --out=*) out="${args[i]#--out=}" ;;
  esac
done
if [[ -z "$out" ]]; then
  echo "study_slurm.sh: --out DIR is required" >&2
  exit 2
fi
n=$(python -m petseg_jax.study "$@" --plan-only | tail -n 1)
array=$(sbatch --parsable --array="0-$((n - 1))" "$here/study_task.sbatch" "$out")
array=${array%%;*}
collect=$(sbatch --parsable --dependency="afterany:$array" --job-name=petseg_study_collect \
  --ntasks=1 --output="$out/collect_%j.log" \
  --wrap="python -m petseg_jax.study --collect '$out'")
echo "study $out: $n runs in array job $array; tables by job ${collect%%;*} in $out/study.md"
