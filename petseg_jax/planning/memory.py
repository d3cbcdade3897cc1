"""Memory per device of a candidate's train step, read from XLA's compiled buffer assignment.

The step is built by :func:`petseg_jax.training.builder.build_training` — the very step training
runs — on a one-device mesh (the plan is per device), from shapes alone (no weights), ahead-of-time
compiled for the local backend (a GPU when one is present, else the CPU) and never run.

On the CPU the compile skips LLVM's optimizations (``CPU_COMPILE_OPTIONS``): buffer assignment
is done on the optimized HLO before code generation, so the memory figures are identical (checked
in BUILD_NOTES.md, "Planning") and the compile is about 3x faster.
"""

from __future__ import annotations

import time
from typing import ClassVar

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from petseg_jax.data.schema import LabelSchema
from petseg_jax.planning.heuristics import Candidate
from petseg_jax.training import mesh as mesh_lib
from petseg_jax.training.builder import GIB, Training, build_training, memory_report

TARGETS = ("local", "gpu")
CPU_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0,
                       "xla_llvm_disable_expensive_passes": True}
# Measured (BUILD_NOTES.md, "Planning"): XLA CPU's memory for the default config's bfloat16 step
# over its float32 step (64^3 and 128^3 patches). XLA CPU computes bfloat16 convolutions in
# float32 and keeps both copies, where a GPU computes them natively in bfloat16.
BF16_OVER_F32_CPU = 1.11
HALF_DTYPES = ("bfloat16", "float16")


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
    """Compiles candidates of ``config`` (its model widths, optimizer, dtype) one at a time.

    Figures are remembered per process (keyed by the config and the candidate), so planning
    several budgets for one config compiles each candidate once.

    ``target="gpu"`` on a CPU-only machine compiles the program a GPU would run: the plain XLA
    convolutions instead of the CPU's folded ones (see :mod:`petseg_jax.models.conv`), and for a
    half-precision model its float32 twin, an upper bound of the GPU's figure (see
    :func:`platform_note`)."""

    _compiled: ClassVar[dict[tuple[str, Candidate], tuple[float, float]]] = {}

    def __init__(self, config: ml_collections.ConfigDict, schema: LabelSchema,
                 target: str = "local"):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.config = config.copy_and_resolve_references()
        self.schema = schema
        self.mesh = single_device_mesh()
        self.platform = jax.local_devices()[0].platform
        if target == "gpu" and self.platform == "cpu":
            if self.config.model.conv_impl == "auto":
                self.config.model.conv_impl = "xla"
            if self.config.model.dtype in HALF_DTYPES:
                self.config.model.dtype = "float32"
        self._key = self.config.to_json_best_effort(sort_keys=True)
        self._fixed: dict[int, float] = {}

    def _build(self, candidate: Candidate) -> tuple[Training, ml_collections.ConfigDict]:
        cfg = candidate_config(self.config, candidate)
        return build_training(cfg, self.schema, self.mesh), cfg

    def fixed_gib(self, candidate: Candidate) -> float:
        """Train state (parameters, optimizer) and the gradients (GiB), from shapes alone."""
        if candidate.n_stages not in self._fixed:
            state = self._build(candidate)[0].abstract_state
            self._fixed[candidate.n_stages] = (_nbytes(state) + _nbytes(state["params"])) / GIB
        return self._fixed[candidate.n_stages]

    def compiled_gib(self, candidate: Candidate) -> tuple[float, float]:
        """(peak memory per device in GiB, seconds to build and compile) of the step."""
        key = (self._key, candidate)
        if key not in self._compiled:
            self._compiled[key] = self._compile(candidate)
        return self._compiled[key]

    def _compile(self, candidate: Candidate) -> tuple[float, float]:
        start = time.perf_counter()
        training, cfg = self._build(candidate)
        lowered = training.train_step.lower(training.abstract_sharded_state(),
                                            training.batch_spec)
        compiled = lowered.compile(CPU_COMPILE_OPTIONS if self.platform == "cpu" else None)
        seconds = time.perf_counter() - start
        return memory_report(compiled, cfg)["peak_gib_per_device"], seconds


def platform_note(platform: str, target: str, dtype: str) -> str:
    """How the compiled figure relates to the memory of the device the run will use."""
    if platform != "cpu":
        return (f"memory: compiled for this {platform} device: XLA's buffer assignment for it, "
                "convolution workspace included")
    if target == "local":
        return ("memory: compiled for this CPU, the very program a CPU run executes: XLA CPU's "
                "buffer assignment")
    note = ("memory: compiled on the CPU (no GPU here) for a GPU: the program a GPU runs (XLA "
            "convolutions) with XLA CPU's buffer assignment; XLA GPU fuses differently and adds "
            "cuDNN convolution workspace")
    if dtype in HALF_DTYPES:
        note += (f"; the model computes in {dtype}, which XLA CPU computes in float32 while "
                 f"keeping both copies (measured: {BF16_OVER_F32_CPU:.2f}x the float32 step), so "
                 "the float32 twin was compiled instead: every buffer of the GPU's "
                 f"{dtype} step is the same size or half, so this figure bounds it from above "
                 "(the GPU step should need less; the slack covers the workspace)")
    return note + ". Re-plan on the GPU for its exact figure"
