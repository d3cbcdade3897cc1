"""A training run's set-up and its loop, shared by ``python -m petseg_jax.train`` and
``python -m petseg_jax.bench learning``.

:func:`prepare_run` reads (or makes) the store, the label schema and the splits, writes the model
folder's record (``WORKDIR/model.json``: splits, normalization, spacing, schema, post-processing)
before the first step, builds the mesh and the sharded training step; :meth:`Run.feed` starts the
input pipeline. :class:`Loop` runs steps with the one NaN/Inf guard.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from petseg_jax.data import store as store_lib
from petseg_jax.data.pipeline import make_train_iterator
from petseg_jax.data.schema import LabelSchema
from petseg_jax.data.splits import make_splits
from petseg_jax.inference.spec import (MODEL_FILE, SpecError, make_inference_spec,
                                       read_model_file, write_model_file)
from petseg_jax.phantom.prepare import ensure_store
from petseg_jax.training import distributed, mesh as mesh_lib
from petseg_jax.training.builder import Training, build_training
from petseg_jax.training.device_feed import DevicePrefetcher

log = logging.getLogger("petseg_jax.train")


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN/Inf."""


@dataclasses.dataclass
class Run:
    """Everything a training run has before its first step."""

    config: ml_collections.ConfigDict
    workdir: Path
    store: Path
    manifest: dict
    schema: LabelSchema
    splits: dict[str, list[str]]
    spec: dict
    mesh: Mesh
    training: Training

    def feed(self, data_state: dict | None = None) -> DevicePrefetcher:
        """The training batches on the devices (resumed from ``data_state`` when given)."""
        config = self.config
        iterator = make_train_iterator(
            self.store, self.splits["train"],
            local_batch_size=config.data.batch_size // jax.process_count(), seed=config.seed,
            data_cfg=config.data, process_index=jax.process_index(),
            process_count=jax.process_count(), workers=config.data.workers)
        if data_state is not None:
            iterator.set_state(data_state)
        return DevicePrefetcher(iterator, self.training.batch_sharding,
                                size=config.data.device_prefetch)


def prepare_run(config: ml_collections.ConfigDict, write_record: bool = True) -> Run:
    """Store, schema, splits, model record, mesh and training step of ``config``.

    The splits and post-processing decisions are made once, by the run that starts the
    workdir, and recorded in ``model.json``; a resumed run reads them from there (a record of
    another store is an error). ``write_record=False`` (benchmarks) leaves the workdir alone.
    """
    main_process = distributed.is_main()
    if main_process:
        ensure_store(config.data, config.seed)
    multihost_utils.sync_global_devices("store ready")
    store = Path(config.data.store).resolve()
    manifest = store_lib.read_manifest(store)
    schema = store_lib.manifest_schema(manifest)
    workdir = Path(config.workdir)
    if write_record and (workdir / MODEL_FILE).exists():
        spec = read_model_file(workdir)
        if spec["store"] != str(store):
            raise SpecError(f"{workdir / MODEL_FILE} records the store {spec['store']}, this run "
                            f"uses {store}; use a new workdir")
        splits = spec["splits"]
    else:
        splits = make_splits(manifest["cases"], config.data.split)
        spec = make_inference_spec(config, schema, manifest, splits, store)
        if write_record and main_process:
            workdir.mkdir(parents=True, exist_ok=True)
            write_model_file(workdir, spec)
    multihost_utils.sync_global_devices("model record written")
    log.info("cases: %s", {k: len(v) for k, v in splits.items()})
    mesh = mesh_lib.make_mesh(config.mesh)
    return Run(config, workdir, store, manifest, schema, splits, spec, mesh,
               build_training(config, schema, mesh))


def local_value(x: jax.Array) -> float:
    """A replicated scalar's value from this process's own copy (no cross-process transfer)."""
    return float(x.addressable_data(0))


class Loop:
    """Runs training steps; each step's metrics are checked one step late (no sync per step)
    and at the end of every :meth:`run`: NaN/Inf raises :class:`TrainingDiverged`."""

    def __init__(self, training: Training, feed: DevicePrefetcher, batch_size: int,
                 last_good: Callable[[], str] = lambda: "none"):
        self.training, self.feed, self.batch_size = training, feed, batch_size
        self.last_good = last_good

    def run(self, state: Any, step: int, end: int) -> tuple[Any, dict, dict[str, float]]:
        """Steps ``step .. end-1``; returns the state, the last step's metrics and throughput
        (``patches_per_s``, ``data_wait``: fraction of the time spent waiting for input)."""
        wait, t_start, pending = 0.0, time.perf_counter(), None
        metrics: dict = {}
        for at in range(step, end):
            t0 = time.perf_counter()
            batch = next(self.feed)
            wait += time.perf_counter() - t0
            state, metrics = self.training.train_step(state, batch)
            if pending is not None:
                self._check(*pending)
            pending = (metrics, at)
        if pending is not None:
            self._check(*pending)
        dt = max(time.perf_counter() - t_start, 1e-9)
        return state, metrics, {"patches_per_s": (end - step) * self.batch_size / dt,
                                "data_wait": wait / dt}

    def _check(self, metrics: dict, at: int) -> None:
        if not local_value(metrics["finite"]):
            raise TrainingDiverged(
                f"loss or gradients became NaN/Inf at step {at + 1}; training stopped. The last "
                f"good checkpoint is {self.last_good()}. Lower optim.lr or check the data.")
