"""Everything the train step needs, built from a config: model, optimizer, shardings, jitted step.

Shared by ``train`` (the run and its ``--dry-run``) and ``plan`` (which compiles candidates to read
their memory), so that what is planned is exactly what is trained.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from petseg_jax.data import position
from petseg_jax.data.schema import LabelSchema
from petseg_jax.models import build_model, total_stride
from petseg_jax.training import mesh as mesh_lib
from petseg_jax.training.checkpointing import abstract_with_shardings
from petseg_jax.training.optim import make_optimizer, make_schedule
from petseg_jax.training.step import ModelDef, init_state, make_train_step

GIB = 2.0**30


@dataclasses.dataclass
class Training:
    """The static parts of a run: structure, shardings and the jitted (not yet compiled) step."""

    model_def: ModelDef
    tx: optax.GradientTransformation
    schedule: Callable[[int], Any]
    abstract_state: Any
    state_sharding: Any
    batch_sharding: NamedSharding
    batch_spec: dict[str, jax.ShapeDtypeStruct]
    train_step: Any

    def init_state(self, seed: int):
        return jax.device_put(init_state(self.model_def, self.tx, seed), self.state_sharding)

    def abstract_sharded_state(self):
        return abstract_with_shardings(self.abstract_state, self.state_sharding)

    def compile(self):
        """Ahead-of-time compile of the step for the configured batch and patch."""
        return self.train_step.lower(self.abstract_sharded_state(), self.batch_spec).compile()


def check_sizes(config, n_data_devices: int, n_processes: int) -> None:
    """Patch a multiple of the network's stride; batch divisible over devices and processes."""
    patch = tuple(config.data.patch_size)
    stride = total_stride(config.model)
    if any(p % s for p, s in zip(patch, stride)):
        raise ValueError(f"data.patch_size {patch} must be a multiple of the network's total "
                         f"stride {stride}")
    batch = config.data.batch_size
    if batch % n_data_devices or batch % n_processes:
        raise ValueError(f"data.batch_size {batch} must be divisible by the {n_data_devices} "
                         f"data-parallel devices and the {n_processes} processes")


def build_training(config, schema: LabelSchema, mesh: Mesh) -> Training:
    """The run's static parts; the model exists only as shapes until ``init_state``."""
    check_sizes(config, mesh.shape[mesh_lib.DATA], jax.process_count())
    model_def = ModelDef.build(partial(build_model, config.model,
                                       position.input_channels(config.data), schema.num_classes))
    tx = make_optimizer(config.optim, config.total_steps)
    abstract_state = jax.eval_shape(lambda: init_state(model_def, tx, config.seed))
    state_sharding = mesh_lib.state_shardings(abstract_state, mesh, config.mesh.fsdp)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    shape = (config.data.batch_size, *config.data.patch_size)
    batch_spec = {
        "image": jax.ShapeDtypeStruct(shape + (1,), jnp.float32, sharding=batch_sharding),
        "label": jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=batch_sharding),
    }
    if position.enabled(config.data):
        batch_spec["position"] = jax.ShapeDtypeStruct((shape[0], 2, 3), jnp.float32,
                                                      sharding=batch_sharding)
    step_fn = make_train_step(model_def, tx, config, schema.mirror_lut())
    train_step = jax.jit(step_fn, in_shardings=(state_sharding, batch_sharding),
                         out_shardings=(state_sharding, mesh_lib.replicated(mesh)),
                         donate_argnums=0)
    return Training(model_def, tx, make_schedule(config.optim, config.total_steps),
                    abstract_state, state_sharding, batch_sharding, batch_spec, train_step)


def memory_report(compiled, config) -> dict[str, Any]:
    """Memory per device (GiB) and FLOPs per step of a compiled train step."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    report = {
        "devices": jax.device_count(), "platform": jax.devices()[0].platform,
        "patch_size": list(config.data.patch_size), "global_batch": config.data.batch_size,
        "argument_gib": mem.argument_size_in_bytes / GIB,
        "output_gib": mem.output_size_in_bytes / GIB,
        "temp_gib": mem.temp_size_in_bytes / GIB,
        "alias_gib": mem.alias_size_in_bytes / GIB,
        "flops_per_step": float((cost or {}).get("flops", np.nan)),
    }
    report["peak_gib_per_device"] = (report["argument_gib"] + report["output_gib"]
                                     + report["temp_gib"] - report["alias_gib"])
    return report
