"""The study on the demo's phantoms: both protocols x 3 seeds on a 2-core CPU.

    python -m petseg_jax.study --config configs/study_demo.py \
        --protocols multicenter,cross_tracer --seeds 3 --out runs/study_demo

The demo's data (its phantom store, generated when missing), model and training recipe, with
fewer steps per run: the study trains 12 runs (3 held-out centers + 1 cross-tracer fold, x 3
seeds) and evaluates 64 test cases per seed, where the demo trains once. Budget per run on 2
idle cores, from the demo's figures (BUILD_NOTES.md): 500 steps x 0.245 s = 2 min of training,
~40 s of start-up and compilation (a study-wide compilation cache), ~7 s per test case; 12 runs
then take about 55 minutes (51 min 49 s measured in session 6). 500 steps reach less than the
demo's 3600 (its validation Dice was 0.34 at 1000 steps): the study measures the spread over seeds and
the gaps between protocols, the demo stays the first result.
"""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
    config = demo.get_config()
    config.workdir = "runs/study_demo"  # the study gives each run its own workdir
    config.total_steps = 500
    config.eval_every = 500  # one validation, at the end (the best checkpoint is the last)
    config.checkpoint_keep = 1
    config.optim.warmup_steps = 20
    config.evaluation.mip_cases = 0  # the study's figures summarise the runs instead
    config.export.enabled = False  # the study evaluates; nothing is deployed
    return config
