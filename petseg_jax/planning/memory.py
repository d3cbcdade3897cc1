"""Memory per device of a candidate's train step, read from XLA's compiled buffer assignment.

The step is built by :func:`petseg_jax.training.builder.build_training` — the very step training
runs — on a one-device mesh (the plan is per device), ahead-of-time compiled for the local
backend (a GPU when one is present, else the CPU) and never run.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from petseg_jax.data.schema import LabelSchema
from petseg_jax.models import build_model
from petseg_jax.planning.heuristics import Candidate
from petseg_jax.training import mesh as mesh_lib
from petseg_jax.training.builder import GIB, build_training, memory_report
from petseg_jax.training.optim import make_optimizer


def single_device_mesh() -> Mesh:
    """A (data=1, model=1) mesh on the first local device."""
    return jax.make_mesh((1, 1), (mesh_lib.DATA, mesh_lib.MODEL),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2,
                         devices=jax.local_devices()[:1])


def candidate_config(config: ml_collections.ConfigDict, candidate: Candidate
                     ) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the candidate's patch, batch (per device) and depth."""
    cfg = config.copy_and_resolve_references()
    cfg.data.patch_size = tuple(candidate.patch)
    cfg.data.batch_size = candidate.batch
    cfg.model.n_stages = candidate.n_stages
    return cfg


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


class CompiledMemory:
    """Compiles candidates of ``config`` (its model widths, optimizer, dtype) one at a time."""

    def __init__(self, config: ml_collections.ConfigDict, schema: LabelSchema):
        self.config, self.schema = config, schema
        self.mesh = single_device_mesh()
        self.platform = jax.local_devices()[0].platform
        self._fixed: dict[int, float] = {}

    def fixed_gib(self, candidate: Candidate) -> float:
        """Parameters, their gradients and the optimizer state (GiB), from shapes alone."""
        if candidate.n_stages not in self._fixed:
            cfg = candidate_config(self.config, candidate)
            model = nnx.eval_shape(lambda: build_model(cfg.model, 1, self.schema.num_classes,
                                                       nnx.Rngs(0)))
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
            opt = jax.eval_shape(make_optimizer(cfg.optim, cfg.total_steps).init, params)
            self._fixed[candidate.n_stages] = (2 * _nbytes(params) + _nbytes(opt)) / GIB
        return self._fixed[candidate.n_stages]

    def compiled_gib(self, candidate: Candidate) -> tuple[float, float]:
        """(peak memory per device in GiB, compile seconds) of the candidate's train step."""
        cfg = candidate_config(self.config, candidate)
        start = time.perf_counter()
        compiled = build_training(cfg, self.schema, self.mesh).compile()
        seconds = time.perf_counter() - start
        return memory_report(compiled, cfg)["peak_gib_per_device"], seconds


def platform_note(platform: str, dtype: str) -> str:
    """How the compiled figure relates to the memory of the device the run will use."""
    if platform != "cpu":
        return (f"memory: compiled for this {platform} device; the figure is XLA's buffer "
                "assignment for it, convolution workspace included")
    note = ("memory: compiled for the CPU (no GPU here): the figure is XLA CPU's buffer "
            "assignment of the same program; on a GPU, XLA fuses differently and adds cuDNN "
            "convolution workspace. No correction is applied")
    if dtype == "bfloat16":
        note += ("; for this bfloat16 model the CPU figure over-states a GPU's, because XLA CPU "
                 "computes bfloat16 convolutions in float32 (measured: the bfloat16 step "
                 f"compiles to {BF16_OVER_F32_CPU:.2f}x the float32 step's memory on the CPU, "
                 "where a native bfloat16 GPU step needs less); the slack covers the workspace")
    return note + ". Re-plan on the GPU for its exact figure"
