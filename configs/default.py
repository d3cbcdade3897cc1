"""Paper scale: whole-body total-body PET, 23 organs, 128^3 patches, bfloat16 on GPUs.

    python -m petseg_jax.train --config configs/default.py --workdir W \
        --config.data.raw_dir=/data/Dataset801_TBPET
"""

import ml_collections

from petseg_jax.models.unet import MODEL_DEFAULTS
from petseg_jax.training.augment import AUGMENT_DEFAULTS
from petseg_jax.training.loss import LOSS_DEFAULTS
from petseg_jax.training.optim import OPTIM_DEFAULTS


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.workdir = "runs/default"
    config.plan = ""  # path of a plan.json from `python -m petseg_jax.plan` (overrides sizes)
    config.total_steps = 250_000  # nnU-Net: 1000 epochs x 250 iterations
    config.steps_per_job = 0  # >0: stop after this many steps (time-limited jobs; resume later)
    config.log_every = 50
    config.eval_every = 5_000
    config.checkpoint_every = 0  # 0: checkpoint at each evaluation and at the end
    config.checkpoint_keep = 3  # the last N, plus the best by validation Dice

    config.data = data = ml_collections.ConfigDict()
    data.raw_dir = ""  # nnU-Net-style raw folder (imagesTr, labelsTr, dataset.json, metadata.csv)
    data.store = ""  # TensorStore zarr3 store; ingested from raw_dir when missing
    data.spacing = (2.0, 2.0, 2.0)  # target spacing for ingest (mm); () = dataset median
    data.image_dtype = "float32"  # float16 halves the store; only for data in kBq/ml or SUV
    data.phantom = ml_collections.ConfigDict()
    data.phantom.enabled = False  # generate a phantom raw set when neither raw nor store exist
    data.phantom.cases = 0
    data.phantom.seed = 0
    data.phantom.spacing = 2.0
    data.phantom.test_fraction = 0.2
    data.split = ml_collections.ConfigDict()
    data.split.protocol = "metadata"  # metadata | random | leave_one_center_out | cross_tracer
    data.split.seed = 0  # random and validation draws (not config.seed: all seeds share the data)
    data.split.val_fraction = 0.1
    data.split.test_fraction = 0.2
    data.split.test_center = ""  # leave_one_center_out: this center is the test set
    data.split.train_tracers = ("FDG",)  # cross_tracer: train on these, test on the rest
    data.patch_size = (128, 128, 128)
    data.batch_size = 2  # global batch (all devices, all processes)
    data.foreground_fraction = 1 / 3
    data.position_channels = False  # 3 extra input channels: each voxel's place in the scan
    data.workers = 4
    data.worker_buffer = 2
    data.device_prefetch = 2
    data.val_cases = 8  # validation cases evaluated (sliding window) at each evaluation
    data.normalization = ml_collections.ConfigDict()
    data.normalization.mode = "suv"  # suv | case
    data.normalization.transform = "log1p"  # log1p | clip
    data.normalization.clip_percentile = 99.5
    data.dose_augmentation = ml_collections.ConfigDict()
    data.dose_augmentation.prob = 0.5
    data.dose_augmentation.min_factor = 1.0
    data.dose_augmentation.max_factor = 100.0
    data.dose_augmentation.distribution = "loguniform"  # loguniform | uniform | choice

    # Model, loss, optimizer and augmentation start from their modules' documented defaults
    # (nnU-Net's values); the lines below are what this config changes.
    config.model = model = ml_collections.ConfigDict(MODEL_DEFAULTS)
    model.name = "unet"  # unet | resenc
    model.n_stages = 6
    model.base_features = 32
    model.max_features = 320
    model.dtype = "bfloat16"  # compute dtype; parameters are float32, logits float32

    config.loss = loss = ml_collections.ConfigDict(LOSS_DEFAULTS)
    loss.batch_dice = True

    config.optim = ml_collections.ConfigDict(OPTIM_DEFAULTS)  # sgd: Nesterov + poly (nnU-Net)

    config.augment = ml_collections.ConfigDict(AUGMENT_DEFAULTS)

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = -1  # -1: all devices
    mesh.model = 1
    mesh.fsdp = False  # shard parameters and optimizer state over the data axis

    config.evaluation = ev = ml_collections.ConfigDict()
    ev.split = "test"
    ev.overlap = 0.5
    ev.mirror = False
    ev.largest_component = False
    ev.nonzero_mask = True  # no organ where the scan has no signal (nnU-Net's nonzero mask)
    # >0: no organ farther than this (mm) from where it lay in the training cases (positions
    # from the scan centre; for fields of view centred on the body, like the position channels)
    ev.position_prior_mm = 0.0
    ev.batch_size = 2
    ev.mip_cases = 4

    config.export = ex = ml_collections.ConfigDict()
    ex.enabled = False  # export the best checkpoint at the end of training
    ex.platforms = ("cpu", "cuda")
    return config
