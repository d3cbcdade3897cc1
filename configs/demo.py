"""Demo: phantom data at 6 mm, a small U-Net, a few CPU minutes.

    python -m petseg_jax.train --config configs/demo.py
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.workdir = "runs/demo"
    # Steps are what the whole-body phantom needs most: on the same 40 cases, 3600 steps
    # reach validation Dice 0.413 where 2600 reach 0.288 (BUILD_NOTES.md, session 6), and
    # 10 800 reach 0.574 (session 11), ~30 training minutes. With the batch on two CPU devices
    # (below) 3600 steps and one validation at the end fit the demo's 15 minutes on the
    # 2-core VM (session 7).
    config.total_steps = 3600
    config.log_every = 100
    config.eval_every = 3600
    config.checkpoint_keep = 2

    data = config.data
    data.raw_dir = "runs/demo/raw"
    data.store = "runs/demo/store"
    data.spacing = (6.0, 6.0, 6.0)
    data.phantom.enabled = True
    data.phantom.cases = 40
    data.phantom.test_fraction = 0.35  # several held-out full-dose AC FDG cases
    data.phantom.spacing = 6.0  # whole bodies on the bed, a third each total-body, 106 cm and
    # skull base to mid-thigh (metadata.csv field_of_view): training sees every field of view
    # Small patches, many steps: on 2 CPU cores, 2 x 32^3 per step learns ~6x faster per second
    # than 2 x 64x48x64 (BUILD_NOTES.md, "Training and the demo").
    data.patch_size = (32, 32, 32)
    data.batch_size = 2
    # A third of the patches centred on a class, the rest anywhere (nnU-Net's default; with 2
    # patches a batch, ceil(2 / 3) = 1 slot of each batch is class-centred). Whole
    # bodies in 650 mm fields of view are mostly air, limbs and bed: with every patch
    # class-centred (sessions 1-3, on cropped trunks) the network never learnt them as
    # background and drew organs there (validation Dice 0.187 vs 0.311, BUILD_NOTES.md session 5).
    data.foreground_fraction = 1 / 3
    # The class-centred slot draws its class uniformly: drawing rare classes (brain, thyroid,
    # bladder) more often by exposure learnt the brain in 2 seeds of 3 but lost more elsewhere,
    # validation Dice 0.322 +- 0.021 vs 0.408 +- 0.038 (BUILD_NOTES.md, session 10). At 3x the
    # steps it no longer costs anything and finds the brain (session 11), but not within 15 minutes.
    data.class_sampling = "uniform"
    # No position channels. An axial offset from the scan centre means another place in the body
    # on a total-body, a 106 cm and a skull-base-to-thigh scan (issue 15). The transaxial offsets
    # ("xy") mean the same on each, but they did not help here: validation Dice 0.395 +- 0.031
    # with them against 0.404 +- 0.031 without, same seeds 0-3 (BUILD_NOTES.md, session 13).
    data.position_channels = ""
    data.workers = 0
    data.val_cases = 2

    # The batch's two patches run side by side on two CPU devices: the convolutions of one small
    # patch leave the second core partly idle (idle 2-core VM: 11.5-12.1 -> 12.7-13.5 patches/s
    # in the training loop, BUILD_NOTES.md session 7). A GPU machine uses its GPUs instead.
    config.mesh.cpu_devices = 2

    model = config.model
    model.n_stages = 4
    model.base_features = 8
    model.max_features = 64
    model.decoder_blocks = 1
    model.dtype = "float32"

    # Dice over the classes present in the batch: two 32^3 patches hold a few of the 23 organs,
    # and with every class averaged the Dice term mostly rewards predicting nothing of the rest.
    # Validation Dice (4 cases, seeds 0/1/2): 0.430/0.431/0.364 vs 0.362/0.418/0.331, better
    # for every seed (BUILD_NOTES.md, session 9).
    config.loss.dice_present_only = True

    optim = config.optim
    optim.name = "adamw"
    optim.lr = 1e-2
    optim.warmup_steps = 20
    optim.weight_decay = 1e-4

    # A few minutes of training: no rotation/zoom (their resampling costs step time and slows
    # early learning), and no mirroring: inside a small patch it makes every left/right pair
    # (and spleen versus liver) ambiguous (BUILD_NOTES.md, run J). The intensity and
    # low-resolution augmentations stay on.
    config.augment.p_rotation = 0.0
    config.augment.p_scale = 0.0
    config.augment.p_mirror = (0.0, 0.0, 0.0)

    config.evaluation.split = "test"
    # Small patches leave stray islands far from an organ (lung in the legs): keep the largest
    # component of each organ that is one component in every training case.
    config.evaluation.largest_component = True
    # Windows only over the body (air fills much of the 650 mm field of view; BUILD_NOTES.md,
    # "Session 5 -- evaluation speed").
    config.evaluation.body_box_suv = 0.02
    # No position prior: organ positions from the scan centre lean on the crop (issue 15).
    config.export.enabled = True
    return config
