"""The study at paper scale on GPUs: both protocols x 3 seeds, each run nnU-Net-sized.

    launch/study_slurm.sh --config configs/study_paper.py \
        --protocols multicenter,cross_tracer --seeds 3 --out /scratch/study \
        --config.data.raw_dir=/data/Dataset801_TBPET --config.data.store=/scratch/tbpet_store

The default (paper-scale) config: 128^3 patches, 250,000 steps, bfloat16, one GPU per run
(launch/study_task.sbatch). The dataset's metadata must name each case's center and tracer;
the multi-center protocol holds out each center in turn, the cross-tracer protocol trains on
data.split.train_tracers (FDG) and tests on the others.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.workdir = "runs/study_paper"  # the study gives each run its own workdir
    config.data.workers = 12  # the input pipeline's processes per run (16 CPUs per GPU job)
    config.evaluation.split = "test"
    config.export.enabled = False  # the study evaluates; nothing is deployed
    return config
