"""Paper scale: whole-body total-body PET, 23 organs, 128^3 patches, bfloat16 on GPUs.

    python -m petseg_jax.train --config configs/default.py --workdir W \
        --config.data.raw_dir=/data/Dataset801_TBPET
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.workdir = "runs/default"
    config.plan = ""  # path of a plan.json from `python -m petseg_jax.plan` (overrides sizes)
    config.total_steps = 250_000  # nnU-Net: 1000 epochs x 250 iterations
    config.log_every = 50
    config.eval_every = 5_000
    config.checkpoint_every = 0  # 0: checkpoint at each evaluation and at the end
    config.checkpoint_keep = 3  # the last N, plus the best by validation Dice

    config.data = data = ml_collections.ConfigDict()
    data.raw_dir = ""  # nnU-Net-style raw folder (imagesTr, labelsTr, dataset.json, metadata.csv)
    data.store = ""  # TensorStore zarr3 store; ingested from raw_dir when missing
    data.spacing = (2.0, 2.0, 2.0)  # target spacing for ingest (mm); () = dataset median
    data.image_dtype = "float16"
    data.phantom = ml_collections.ConfigDict()
    data.phantom.enabled = False  # generate a phantom raw set when neither raw nor store exist
    data.phantom.cases = 0
    data.phantom.seed = 0
    data.phantom.spacing = 2.0
    data.split = ml_collections.ConfigDict()
    data.split.protocol = "metadata"  # metadata | random | leave_one_center_out | cross_tracer
    data.split.val_fraction = 0.1
    data.split.test_fraction = 0.2
    data.split.test_center = ""  # leave_one_center_out: this center is the test set
    data.split.train_tracers = ("FDG",)  # cross_tracer: train on these, test on the rest
    data.patch_size = (128, 128, 128)
    data.batch_size = 2  # global batch (all devices, all processes)
    data.foreground_fraction = 1 / 3
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

    config.model = model = ml_collections.ConfigDict()
    model.name = "unet"  # unet | resenc
    model.n_stages = 6
    model.base_features = 32
    model.max_features = 320
    model.blocks_per_stage = 2
    model.decoder_blocks = 2
    model.deep_supervision = True
    model.dtype = "bfloat16"  # compute dtype; parameters are float32, logits float32
    model.conv_impl = "auto"

    config.loss = loss = ml_collections.ConfigDict()
    loss.batch_dice = True
    loss.dice_weight = 1.0
    loss.ce_weight = 1.0
    loss.ignore_label = -1  # -1: none

    config.optim = optim = ml_collections.ConfigDict()
    optim.name = "sgd"  # sgd (nnU-Net: Nesterov + poly) | adamw (warmup + cosine)
    optim.learning_rate = 0.01
    optim.momentum = 0.99
    optim.weight_decay = 3e-5
    optim.warmup_steps = 0
    optim.clip_norm = 12.0

    config.augment = aug = ml_collections.ConfigDict()
    aug.p_rotate = 0.2
    aug.max_rotation_deg = 15.0
    aug.p_scale = 0.2
    aug.scale_range = (0.85, 1.25)
    aug.p_brightness = 0.15
    aug.brightness_range = (0.75, 1.25)
    aug.p_contrast = 0.15
    aug.contrast_range = (0.75, 1.25)
    aug.p_gamma = 0.3
    aug.gamma_range = (0.7, 1.5)
    aug.p_noise = 0.1
    aug.noise_std = 0.1
    aug.p_blur = 0.2
    aug.blur_sigma = (0.5, 1.0)
    aug.p_lowres = 0.25
    aug.lowres_range = (0.5, 1.0)
    aug.p_mirror_lr = 0.5  # left/right-aware: swaps paired organs

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = -1  # -1: all devices
    mesh.model = 1
    mesh.fsdp = False  # shard parameters and optimizer state over the data axis

    config.evaluation = ev = ml_collections.ConfigDict()
    ev.split = "test"
    ev.overlap = 0.5
    ev.mirror = False
    ev.largest_component = False
    ev.batch_size = 2
    ev.mip_cases = 4

    config.export = ex = ml_collections.ConfigDict()
    ex.enabled = False  # export the best checkpoint at the end of training
    ex.platforms = ("cpu", "cuda")
    return config
