"""Paper scale: whole-body total-body PET, 23 organs, 128^3 patches, bfloat16 on GPUs.

    python -m petseg_jax.train --config configs/default.py --workdir W \
        --config.data.raw_dir=/data/Dataset801_TBPET

This file is the schema of every config: a run has exactly these keys (other config files
change values, never add keys), each with the type given here. A misspelt key, in a config file
or as ``--config.key=value``, is an error naming the nearest key below.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # parameters, splits and the sample stream
    config.workdir = "runs/default"  # run folder: checkpoints, model.json, eval/, export/
    config.plan = ""  # path of a plan.json from `python -m petseg_jax.plan` (overrides sizes)
    config.total_steps = 250_000  # nnU-Net: 1000 epochs x 250 iterations
    config.steps_per_job = 0  # >0: stop after this many steps (time-limited jobs; resume later)
    config.log_every = 50  # steps between training-metric lines
    config.eval_every = 5_000  # steps between validations (and checkpoints)
    config.checkpoint_every = 0  # 0: checkpoint at each evaluation and at the end
    config.checkpoint_keep = 3  # the last N, plus the best by validation Dice

    config.data = data = ml_collections.ConfigDict()
    data.raw_dir = ""  # nnU-Net-style raw folder (imagesTr, labelsTr, dataset.json, metadata.csv)
    data.store = ""  # TensorStore zarr3 store; ingested from raw_dir when missing
    data.spacing = (2.0, 2.0, 2.0)  # target spacing for ingest (mm); () = dataset median
    data.image_dtype = "float32"  # float16 halves the store; only for data in kBq/ml or SUV
    data.phantom = ml_collections.ConfigDict()
    data.phantom.enabled = False  # generate a phantom raw set when neither raw nor store exist
    data.phantom.cases = 0  # phantom subjects (each scanned with several tracers/doses)
    data.phantom.seed = 0  # phantom generator seed
    data.phantom.spacing = 2.0  # phantom voxel size (mm)
    data.phantom.test_fraction = 0.2  # subjects whose scans go to the metadata test split
    data.split = ml_collections.ConfigDict()
    data.split.protocol = "metadata"  # metadata | random | leave_one_center_out | cross_tracer
    data.split.seed = 0  # random and validation draws (not config.seed: all seeds share the data)
    data.split.val_fraction = 0.1  # of the non-test subjects
    data.split.test_fraction = 0.2  # random protocol
    data.split.test_center = ""  # leave_one_center_out: this center is the test set
    data.split.train_tracers = ("FDG",)  # cross_tracer: train on these, test on the rest
    data.patch_size = (128, 128, 128)  # training patch (voxels); a multiple of the strides
    data.batch_size = 2  # global batch (all devices, all processes)
    data.foreground_fraction = 1 / 3  # patches centred on a class voxel (nnU-Net: a third)
    # how a class-centred patch picks its class: uniform (nnU-Net) among the case's classes, or
    # exposure: in inverse proportion to the share of patches that hold the class (the brain of a
    # whole body, which few patches hold, more often; data/sampling.py exposure_weights). On the
    # demo phantom, exposure lost 0.086 validation Dice at 3600 steps but cost nothing at 10 800
    # and found the brain (0.92 vs 0-0.32; BUILD_NOTES.md sessions 10-11): for long runs.
    data.class_sampling = "uniform"
    # extra input channels, each voxel's place in the scan (data/position.py): "" none; "xy" the
    # transaxial offsets from the scanner's axis, the same on every axial field of view; "xyz"
    # also the axial offset from the scan's centre, for data of one field of view only
    data.position_channels = ""
    data.workers = 4  # grain worker processes building batches (0: in the training process)
    data.worker_buffer = 2  # batches each worker keeps ready
    data.read_threads = 1  # read-ahead threads inside each process that builds batches
    data.read_buffer = 2  # batches of read-ahead per process
    data.cache_mb = 0  # TensorStore chunk cache per process (0: none, for data >> memory)
    data.device_prefetch = 2  # batches placed on the devices ahead of the step
    data.val_cases = 8  # validation cases evaluated (sliding window) at each evaluation
    data.normalization = ml_collections.ConfigDict()
    data.normalization.mode = "suv"  # suv | case
    data.normalization.transform = "log1p"  # log1p | clip
    data.normalization.clip_percentile = 99.5  # clip: upper percentile of the case (case mode)
    data.normalization.case_reference = 10.0  # case mode: the percentile maps to this value
    data.normalization.scale = 1.0  # the transformed image is divided by this
    data.dose_augmentation = ml_collections.ConfigDict()
    data.dose_augmentation.prob = 0.5  # per patch: re-simulate at a lower dose
    data.dose_augmentation.min_factor = 1.0  # dose reduction factor range
    data.dose_augmentation.max_factor = 100.0
    data.dose_augmentation.distribution = "loguniform"  # loguniform | uniform | choice
    data.dose_augmentation.choices = (1.0, 4.0, 10.0, 20.0, 50.0, 100.0)  # for "choice"
    data.dose_augmentation.exact_below = 2.0  # independent model: Poisson drawn exactly below this
    # simulator: the scanner simulator's noise (correlated texture, variance following activity,
    # attenuation, axial sensitivity and the factor; petseg_jax/physics/noise.py), from the
    # store's noise maps; independent: the sessions 1-3 model (Poisson per voxel, white)
    data.dose_augmentation.noise_model = "simulator"

    # Model (petseg_jax/models/unet.py documents each key).
    config.model = model = ml_collections.ConfigDict()
    model.name = "unet"  # unet (nnU-Net PlainConvUNet) | resenc (residual encoder)
    model.n_stages = 6  # resolution levels, bottleneck included
    model.base_features = 32  # stage s has min(base * 2**s, max) features
    model.max_features = 320
    model.blocks_per_stage = 2  # int or one per stage (resenc M: (1, 3, 4, 6, 6, 6))
    model.decoder_blocks = 2  # int or one per decoder stage, deepest first
    model.strides = ()  # (): stage 0 stride 1, then 2 per axis; else one int/3 ints per stage
    model.kernel_size = 3
    model.deep_supervision = True  # one loss per decoder stage
    model.dtype = "bfloat16"  # compute dtype; parameters are float32, logits float32
    model.conv_impl = "auto"  # auto | xla | fold (petseg_jax/models/conv.py)

    # Loss: Dice + cross-entropy (nnU-Net's DC_and_CE_loss).
    config.loss = loss = ml_collections.ConfigDict()
    loss.batch_dice = True  # Dice sums over the whole batch (nnU-Net's batch Dice)
    loss.smooth = 1e-5
    loss.do_bg = False  # background in the Dice term
    loss.ignore_label = placeholder(int)  # None, or a label whose voxels count in neither term
    loss.weight_ce = 1.0
    loss.weight_dice = 1.0
    loss.dice_present_only = False  # Dice over the classes present in the ground truth only
    loss.ds_drop_lowest = True  # deep supervision: the lowest-resolution head gets weight 0

    # Optimizer: sgd (nnU-Net: Nesterov + poly decay) or adamw (warm-up + cosine).
    config.optim = optim = ml_collections.ConfigDict()
    optim.name = "sgd"
    optim.lr = 0.01  # peak learning rate
    optim.weight_decay = 3e-5  # sgd: L2 added to the gradients; adamw: decoupled
    optim.momentum = 0.99  # sgd
    optim.nesterov = True  # sgd
    optim.poly_exponent = 0.9  # sgd: lr * (1 - step / total_steps) ** poly_exponent
    optim.warmup_steps = 0  # linear warm-up from 0
    optim.end_lr_ratio = 0.0  # adamw: the cosine ends at lr * end_lr_ratio
    optim.b1 = 0.9  # adamw moments
    optim.b2 = 0.999
    optim.eps = 1e-8
    optim.grad_clip = 12.0  # global-norm clipping of the raw gradients; 0 disables

    # On-device augmentation (nnU-Net v2's values; petseg_jax/training/augment.py). p_*: the
    # per-sample probability of an op; ranges are (low, high).
    config.augment = aug = ml_collections.ConfigDict()
    aug.p_rotation = 0.2
    aug.rotation_deg = 30.0  # about each axis, U(-deg, deg)
    aug.p_scale = 0.2
    aug.scale_range = (0.7, 1.4)  # isotropic zoom (> 1 enlarges)
    aug.p_noise = 0.1
    aug.noise_variance = (0.0, 0.1)
    aug.p_blur = 0.2
    aug.blur_sigma = (0.5, 1.0)  # voxels
    aug.p_brightness = 0.15
    aug.brightness_range = (0.75, 1.25)
    aug.p_contrast = 0.15
    aug.contrast_range = (0.75, 1.25)
    aug.p_lowres = 0.25
    aug.lowres_zoom = (0.5, 1.0)
    aug.p_gamma_invert = 0.1
    aug.p_gamma = 0.3
    aug.gamma_range = (0.7, 1.5)
    aug.p_mirror = (0.5, 0.0, 0.0)  # per axis (X is right-left: paired labels swap)

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = -1  # -1: all devices
    mesh.model = 1  # model-parallel axis size
    mesh.fsdp = False  # shard parameters and optimizer state over the data axis
    # >0: split the host CPU into this many JAX devices (jax_num_cpu_devices), so that the batch's
    # samples run side by side on a CPU-only machine; 0: JAX's default (one CPU device, or what
    # XLA_FLAGS' --xla_force_host_platform_device_count sets, which takes precedence)
    mesh.cpu_devices = 0

    # Evaluation and the post-processing a trained model carries into prediction.
    config.evaluation = ev = ml_collections.ConfigDict()
    ev.split = "test"  # split evaluated by the closing stage of training ("" = none)
    ev.overlap = 0.5  # sliding-window overlap (fraction of the patch)
    ev.mirror = False  # test-time left/right mirroring (2 passes per window)
    # Keep the largest component of each organ that is one component in every training case.
    ev.largest_component = False
    ev.nonzero_mask = True  # no organ where the scan has no signal (nnU-Net's nonzero mask)
    # >0: no organ farther than this (mm) from where it lay in the training cases (positions
    # from the scan centre; for fields of view centred on the body, like "xyz" position channels)
    ev.position_prior_mm = 0.0
    # >0: sliding windows only over the body's box: components of the smoothed image above this
    # SUV (log1p-normalized), widened by body_box_margin voxels; labels outside are background
    ev.body_box_suv = 0.0
    ev.body_box_margin = 16  # voxels around the body's box (network context at its edge)
    ev.batch_size = 2  # sliding-window patches per forward pass
    ev.mip_cases = 4  # cases with a maximum-intensity-projection figure in the report
    ev.nsd_tolerance_mm = 2.0  # normalized surface Dice tolerance

    config.export = ex = ml_collections.ConfigDict()
    ex.enabled = False  # export the best checkpoint at the end of training
    ex.platforms = ("cpu", "cuda")  # StableHLO lowered for these platforms
    return config
