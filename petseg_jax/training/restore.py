"""Load a trained model from a training workdir's Orbax checkpoints, for inference."""

from __future__ import annotations

import dataclasses
from functools import partial
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections

from petseg_jax.data import position
from petseg_jax.data.schema import LabelSchema
from petseg_jax.models import build_model
from petseg_jax.training.checkpointing import Checkpointer, abstract_with_shardings
from petseg_jax.training.optim import make_optimizer
from petseg_jax.training.step import ModelDef, init_state


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
    """Restore the best checkpoint (or ``step``) of ``workdir`` onto this process's devices."""
    from petseg_jax.inference.spec import make_inference_spec

    ckpt_dir = Path(workdir) / "checkpoints"
    if not ckpt_dir.exists():
        raise FileNotFoundError(f"{workdir} has no checkpoints/: not a training workdir")
    ckpt = Checkpointer(ckpt_dir, read_only=True)
    step = ckpt.best_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{ckpt_dir} holds no checkpoint")
    meta = ckpt.restore_meta(step)
    config = ml_collections.ConfigDict(meta["config"])
    schema = LabelSchema.from_json(meta["schema"])
    model_def = ModelDef.build(partial(build_model, config.model,
                                       position.input_channels(config.data), schema.num_classes))
    tx = make_optimizer(config.optim, config.total_steps)
    abstract = jax.eval_shape(lambda: init_state(model_def, tx, config.seed))
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    state, _, _ = ckpt.restore(step, abstract_with_shardings(
        abstract, jax.tree.map(lambda _: local, abstract)))
    ckpt.close()
    spec = make_inference_spec(config, schema, step, str(workdir))
    return TrainedModel(model_def.apply_eval, state["params"], spec, step, config, schema)
