"""Load a trained model for inference: the model folder's record (``model.json``) and the
parameters of one of its Orbax checkpoints (no optimizer state is built or read)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import jax
import ml_collections
from flax import nnx

from petseg_jax.data.schema import LabelSchema
from petseg_jax.inference.spec import read_model_file, spec_schema
from petseg_jax.models import build_model
from petseg_jax.training.checkpointing import Checkpointer
from petseg_jax.training.step import ModelDef


@dataclasses.dataclass
class TrainedModel:
    """A model restored for inference: ``apply(params, x)`` -> float32 logits."""

    apply: Callable[[Any, jax.Array], jax.Array]
    params: Any
    spec: dict
    step: int
    config: ml_collections.ConfigDict
    schema: LabelSchema


def load_trained(workdir: str | Path, step: int | None = None) -> TrainedModel:
    """Restore the parameters of the best checkpoint (or ``step``) of ``workdir`` onto this
    process's first device, with the model folder's record (``workdir/model.json``)."""
    spec = read_model_file(workdir)
    ckpt_dir = Path(workdir) / "checkpoints"
    if not ckpt_dir.exists():
        raise FileNotFoundError(f"{workdir} has no checkpoints/: not a training workdir")
    ckpt = Checkpointer(ckpt_dir, read_only=True)
    try:
        step = ckpt.best_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{ckpt_dir} holds no checkpoint")
        config = ml_collections.ConfigDict(spec["training"]["config"])
        schema = spec_schema(spec)
        model_def = ModelDef.build(partial(build_model, config.model, int(spec["in_channels"]),
                                           schema.num_classes))
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        params = ckpt.restore_params(step, jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local),
            nnx.to_pure_dict(model_def.template)))
    finally:
        ckpt.close()
    spec["training"] = spec["training"] | {"step": int(step), "workdir": str(workdir)}
    return TrainedModel(model_def.apply_eval, params, spec, step, config, schema)
