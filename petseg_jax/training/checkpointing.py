"""Orbax checkpoints of a training run: train state, data-iterator state and run metadata.

Each checkpoint ``W/checkpoints/<step>/`` holds three items: ``state`` (parameters, optimizer
state, step, RNG key; restorable onto any device count through target shardings), ``data`` (the
input pipeline's iterator state, JSON) and ``meta`` (config, schema, validation metrics). Saves
are asynchronous; the last ``keep`` checkpoints are kept, plus the best by validation Dice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

METRIC = "val_dice"
ITEMS = ("state", "data", "meta")


class Checkpointer:
    """A thin wrapper over ``ocp.CheckpointManager`` with the run's items and policies."""

    def __init__(self, directory: str | Path, keep: int = 3, read_only: bool = False):
        preserve = policies.AnyPreservationPolicy([
            policies.LatestN(n=keep),
            policies.BestN(get_metric_fn=lambda m: m[METRIC], reverse=False, n=1,  # keeps the highest
                           keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preserve, best_fn=lambda m: m[METRIC], best_mode="max",
            create=not read_only, read_only=read_only,
            enable_async_checkpointing=True)
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def save(self, step: int, state: Any, data_state: dict, meta: dict,
             metrics: dict[str, float] | None = None) -> None:
        """Start an asynchronous save (all processes call this together)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data_state),
                                  meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """Step of the best checkpoint by validation Dice (the latest if none has metrics)."""
        return self.manager.best_step() or self.latest_step()

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
        """Restore ``step`` into the shapes/dtypes/shardings of ``abstract_state``."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        return out["state"], out["data"], out["meta"]

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Restore only the parameters of ``step`` (not the optimizer state) into the
        shapes/dtypes/shardings of ``abstract_params``."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item={"params": abstract_params}, partial_restore=True,
                                         restore_args=ocp.checkpoint_utils.construct_restore_args(
                                             {"params": abstract_params}))))
        return out["state"]["params"]

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying the target shardings (for restore)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)
