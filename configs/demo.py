"""Demo: phantom data at 6 mm, a small U-Net, a few CPU minutes.

    python -m petseg_jax.train --config configs/demo.py
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.workdir = "runs/demo"
    config.total_steps = 240
    config.log_every = 20
    config.eval_every = 120
    config.checkpoint_keep = 2

    data = config.data
    data.raw_dir = "runs/demo/raw"
    data.store = "runs/demo/store"
    data.spacing = (6.0, 6.0, 6.0)
    data.phantom.enabled = True
    data.phantom.cases = 40
    data.phantom.test_fraction = 0.35  # several held-out full-dose AC FDG cases
    data.phantom.spacing = 6.0
    data.patch_size = (64, 48, 64)
    data.batch_size = 2
    data.workers = 0
    data.val_cases = 2

    model = config.model
    model.n_stages = 4
    model.base_features = 8
    model.max_features = 64
    model.decoder_blocks = 1
    model.dtype = "float32"

    optim = config.optim
    optim.name = "adamw"
    optim.lr = 3e-3
    optim.warmup_steps = 25
    optim.weight_decay = 1e-4

    config.evaluation.split = "test"
    config.export.enabled = True
    return config
