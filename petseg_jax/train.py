"""Train a PET organ-segmentation U-Net.

    python -m petseg_jax.train --config configs/demo.py [--workdir W] [--config.key=value ...]
    python -m petseg_jax.train --config configs/default.py --dry-run   # compile only: memory, FLOPs

Reads top to bottom: config, data, mesh, model, sharding, step, dry run, input, checkpoint,
evals, loop, and the demo's closing stages (evaluate, export). A workdir with checkpoints resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
from jax.experimental import multihost_utils

from petseg_jax.configuration import load_config, split_overrides
from petseg_jax.data import store as store_lib
from petseg_jax.training.device_feed import DevicePrefetcher
from petseg_jax.data.pipeline import make_train_iterator
from petseg_jax.phantom.prepare import ensure_store
from petseg_jax.data.splits import make_splits
from petseg_jax.training import distributed, mesh as mesh_lib
from petseg_jax.training.builder import build_training, memory_report
from petseg_jax.training.checkpointing import Checkpointer
from petseg_jax.training.metrics_log import MetricsWriter
from petseg_jax.training.validation import Validator
from petseg_jax.console import setup_logging

log = logging.getLogger("petseg_jax.train")


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN/Inf."""


def parse_args(argv: Sequence[str] | None):
    rest, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file with get_config()")
    parser.add_argument("--workdir", help="run folder (default: config.workdir)")
    parser.add_argument("--dry-run", action="store_true",
                        help="compile the train step, print memory per device and FLOPs, exit")
    args = parser.parse_args(rest)
    return args, overrides


def main(argv: Sequence[str] | None = None) -> dict:
    args, overrides = parse_args(argv)
    config = load_config(args.config, overrides)
    if args.workdir:
        config.workdir = args.workdir
    setup_logging()
    distributed.initialize()
    main_process = distributed.is_main()
    # Only process 0 logs, unless asked (multi-process tests compare every process's loss).
    log_here = main_process or bool(os.environ.get("PETSEG_LOG_ALL_PROCESSES"))
    workdir = Path(config.workdir)

    # --- Plan -----------------------------------------------------------------------------
    if config.plan:
        from petseg_jax.planning.plan import apply_plan

        apply_plan(config, config.plan)

    # --- Data -----------------------------------------------------------------------------
    stage_s: dict[str, float] = {}  # wall time of each stage, printed at the end
    t_stage = time.perf_counter()
    if main_process:
        ensure_store(config.data, config.seed)
    stage_s["data (generate + ingest when missing)"] = time.perf_counter() - t_stage
    multihost_utils.sync_global_devices("store ready")
    store = Path(config.data.store)
    manifest = store_lib.read_manifest(store)
    schema = store_lib.manifest_schema(manifest)
    splits = make_splits(manifest["cases"], config.data.split)
    log.info("cases: %s", {k: len(v) for k, v in splits.items()})

    # --- Mesh -----------------------------------------------------------------------------
    mesh = mesh_lib.make_mesh(config.mesh)

    # --- Model, sharding, step -----------------------------------------------------------
    training = build_training(config, schema, mesh)
    schedule = training.schedule

    # --- Dry run --------------------------------------------------------------------------
    if args.dry_run:
        report = memory_report(training.compile(), config)
        for key, value in report.items():
            print(f"{key:>20}: {value:.3f}" if isinstance(value, float) else f"{key:>20}: {value}")
        print(json.dumps(report))
        return report

    # --- Checkpoint -----------------------------------------------------------------------
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.checkpoint_keep)
    start = ckpt.latest_step()
    data_state = None
    if start is not None:
        state, data_state, _ = ckpt.restore(start, training.abstract_sharded_state())
        log.info("resumed from %s at step %d", ckpt.directory, start)
    else:
        state = training.init_state(config.seed)
    if main_process:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))

    # --- Input ----------------------------------------------------------------------------
    local_batch = config.data.batch_size // jax.process_count()
    iterator = make_train_iterator(
        store, splits["train"], patch_size=tuple(config.data.patch_size),
        local_batch_size=local_batch, seed=config.seed, data_cfg=config.data,
        process_index=jax.process_index(), process_count=jax.process_count(),
        workers=config.data.workers)
    if data_state is not None:
        iterator.set_state(data_state)
    feed = DevicePrefetcher(iterator, training.batch_sharding, size=config.data.device_prefetch)

    # --- Evals ----------------------------------------------------------------------------
    validator = Validator(store, splits["val"][: config.data.val_cases], schema, config)
    if not splits["val"]:
        log.warning("no validation cases: checkpoints are kept by recency only")
    writer = MetricsWriter(workdir)
    meta = {"config": json.loads(config.to_json_best_effort()), "schema": schema.to_json(),
            "splits": splits, "store": str(store)}

    def save(step: int, metrics: dict | None) -> None:
        ckpt.save(step, state, feed.get_state(), meta | {"metrics": metrics or {}},
                  metrics=metrics)

    def evaluate(step: int) -> dict | None:
        params = multihost_utils.process_allgather(state["params"], tiled=True)
        result = validator.run(training.model_def, params) if main_process else None
        multihost_utils.sync_global_devices(f"eval {step}")
        if result is None:
            return None
        writer.write(step, "val", {"mean_dice": result["mean_dice"],
                                   **{f"dice/{k}": v for k, v in result["by_organ"].items()}})
        log.info("step %d: validation mean Dice %.4f", step, result["mean_dice"])
        return {"val_dice": result["mean_dice"]}

    # --- Loop -----------------------------------------------------------------------------
    t_stage = time.perf_counter()
    step = int(start or 0)
    end = config.total_steps
    if config.steps_per_job:
        end = min(end, step + config.steps_per_job)
    patches = wait = 0.0
    t_log = time.perf_counter()
    pending = None  # the previous step's metrics, checked one step late (no sync per step)
    try:
        while step < end:
            t0 = time.perf_counter()
            batch = next(feed)
            wait += time.perf_counter() - t0
            state, metrics = training.train_step(state, batch)
            if pending is not None:
                _check_finite(pending, step, ckpt)
            pending = (metrics, step)
            step += 1
            patches += config.data.batch_size
            last = step == end
            if step % config.log_every == 0 or last:
                _check_finite(pending, step, ckpt)
                dt = time.perf_counter() - t_log
                values = {"loss": _local(metrics["loss"]),
                          "grad_norm": _local(metrics["grad_norm"]),
                          "learning_rate": float(schedule(step - 1)),
                          "patches_per_s": patches / dt, "data_wait": wait / dt}
                writer.write(step, "train", values)
                if log_here:
                    log.info("step %d/%d  loss %.4f  lr %.2e  %.2f patches/s  data wait %.0f%%",
                             step, config.total_steps, values["loss"], values["learning_rate"],
                             values["patches_per_s"], 100 * values["data_wait"])
                patches = wait = 0.0
                t_log = time.perf_counter()
            is_eval = step % config.eval_every == 0 or step == config.total_steps
            is_ckpt = (config.checkpoint_every and step % config.checkpoint_every == 0) or last
            if is_eval or is_ckpt:
                _check_finite(pending, step, ckpt)
                save(step, evaluate(step) if is_eval else None)
    finally:
        ckpt.close()
        feed.close()
        writer.close()

    # --- Closing stages (the demo: evaluate held-out cases per tracer, export) -------------
    stage_s["training (compile, steps, validation, checkpoints)"] = time.perf_counter() - t_stage
    summary = {"workdir": str(workdir), "step": step, "best_step": ckpt.best_step()}
    if step >= config.total_steps:
        state = None  # arrays of the distributed runtime, left here (no cross-process waits)
        distributed.leave()
        if main_process:
            summary |= _closing_stages(config, workdir, store, stage_s)
    if main_process:
        print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in stage_s.items()))
    return summary | {"stage_seconds": stage_s}


def _local(x: jax.Array) -> float:
    """A replicated scalar's value from this process's own copy (no cross-process transfer)."""
    return float(x.addressable_data(0))


def _check_finite(pending, step: int, ckpt: Checkpointer) -> None:
    metrics, at = pending
    if not _local(metrics["finite"]):
        last = ckpt.latest_step()
        raise TrainingDiverged(
            f"loss or gradients became NaN/Inf at step {at + 1}; training stopped. The last "
            f"good checkpoint is {'step ' + str(last) if last is not None else 'none'} in "
            f"{ckpt.directory}. Lower optim.learning_rate or check the data.")


def _closing_stages(config, workdir: Path, store: Path, stage_s: dict[str, float]) -> dict:
    """Evaluate the best checkpoint on the test split and export it, when configured (their
    wall times go into ``stage_s``)."""
    out = {}
    t_stage = time.perf_counter()
    if config.evaluation.split:
        from petseg_jax.evaluation import evaluate

        out["evaluation"] = evaluate.run(
            workdir, store=store, split=config.evaluation.split, mirror=config.evaluation.mirror,
            largest_component=config.evaluation.largest_component,
            mip_cases=config.evaluation.mip_cases)
        print(evaluate.report.format_summary(out["evaluation"]))
        stage_s["evaluation"] = time.perf_counter() - t_stage
    t_stage = time.perf_counter()
    if config.export.enabled:
        from petseg_jax.training import export

        out["export"] = str(export.export_workdir(workdir, workdir / "export",
                                                  platforms=tuple(config.export.platforms)))
        stage_s["export"] = time.perf_counter() - t_stage
    return out


def cli() -> None:
    try:
        main()
    except TrainingDiverged as err:
        logging.getLogger("petseg_jax.train").error("%s", err)
        raise SystemExit(3) from None


if __name__ == "__main__":
    cli()
