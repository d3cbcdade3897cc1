"""A tiny "trained" run for inference tests: random weights saved by the real Checkpointer.

Built once per test process under pytest's session temp folder (both the workdir and its
export), so the export and predict tests share one model and few compiled shapes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import nibabel as nib
import numpy as np

from configs import default
from petseg_jax.data.schema import DEFAULT_SCHEMA
from petseg_jax.inference.spec import make_inference_spec, write_model_file
from petseg_jax.models import build_model
from petseg_jax.training.checkpointing import Checkpointer
from petseg_jax.training.optim import make_optimizer
from petseg_jax.training.step import ModelDef, init_state

SPACING = 6.0


def tiny_config():
    """The default config with a 3-stage, 4-feature float32 U-Net and 16^3 patches at 6 mm."""
    config = default.get_config()
    config.total_steps = 10
    config.data.patch_size = (16, 16, 16)
    config.data.spacing = (SPACING,) * 3
    config.model.n_stages = 3
    config.model.base_features = 4
    config.model.max_features = 16
    config.model.dtype = "float32"
    config.evaluation.batch_size = 2
    config.data.normalization.mode = "case"  # the test images have no SUV factor
    return config


def random_state(config, num_classes: int, seed: int = 0):
    """A train state of the real structure (``init_state``) filled with NumPy random weights.

    Initialising through the model's own initializers compiles one XLA program per layer (tens
    of seconds on a busy CPU); the state's shapes come from ``jax.eval_shape`` instead. Kernels
    are normal with variance 1 / fan-in, norm scales 1, everything else 0.
    """
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda: init_state(
        ModelDef.build(functools.partial(build_model, config.model, 1, num_classes)),
        make_optimizer(config.optim, config.total_steps), config.seed))

    def fill(path, leaf):
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        if names[0] == "params" and len(leaf.shape) >= 2:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, fan_in**-0.5, leaf.shape).astype(leaf.dtype)
        if names[0] == "params" and "scale" in names[-1]:
            return np.ones(leaf.shape, leaf.dtype)
        return np.zeros(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


@functools.cache
def tiny_workdir(root: Path) -> Path:
    """``root/tiny_run`` with one checkpoint (step 1) of a randomly initialised tiny model."""
    workdir = root / "tiny_run"
    config = tiny_config()
    schema = DEFAULT_SCHEMA
    no_cases = {"train": [], "val": [], "test": []}
    write_model_file(workdir, make_inference_spec(
        config, schema, {"spacing": list(config.data.spacing), "cases": {}}, no_cases,
        root / "no_store"))
    ckpt = Checkpointer(workdir / "checkpoints")
    ckpt.save(1, random_state(config, schema.num_classes), {}, {}, metrics={"val_dice": 0.5})
    ckpt.close()
    return workdir


@functools.cache
def tiny_export(root: Path) -> Path:
    """``root/tiny_export``: the tiny workdir exported for cpu and cuda."""
    from petseg_jax.training.export import export_workdir

    return export_workdir(tiny_workdir(root), root / "tiny_export")


def write_pet(path: Path, shape=(24, 20, 12), seed: int = 0) -> Path:
    """A smooth random PET-like volume (LAS, 6 x 5 x 7 mm voxels) as NIfTI."""
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 1.0, shape).astype(np.float32)
    image[4:14, 6:16, 3:9] += 8.0
    affine = np.diag([-SPACING, 5.0, 7.0, 1.0])
    affine[:3, 3] = (100.0, -40.0, -300.0)
    nib.save(nib.Nifti1Image(image, affine), path)
    return path
