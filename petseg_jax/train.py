"""Train a PET organ-segmentation U-Net.

    python -m petseg_jax.train --config configs/demo.py [--workdir W] [--config.key=value ...]
    python -m petseg_jax.train --config configs/default.py --dry-run   # compile only: memory, FLOPs

``--config`` is a config file (or the name of a shipped one: ``demo``, ``default``); every key it
can set is in ``configs/default.py``. Reads top to bottom: config, run set-up
(:func:`petseg_jax.training.run.prepare_run`: store, splits, the model record ``W/model.json``,
mesh, step), dry run, checkpoint, input, evals, loop, and the demo's closing stages (evaluate,
export). A workdir with checkpoints resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from jax.experimental import multihost_utils

from petseg_jax.configuration import parse_args
from petseg_jax.console import setup_logging
from petseg_jax.planning.plan import apply_plan
from petseg_jax.training import distributed
from petseg_jax.training import mesh as mesh_lib
from petseg_jax.training.builder import memory_report
from petseg_jax.training.checkpointing import Checkpointer
from petseg_jax.training.metrics_log import MetricsWriter
from petseg_jax.training.run import Loop, TrainingDiverged, local_value, prepare_run
from petseg_jax.training.validation import Validator

log = logging.getLogger("petseg_jax.train")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file with get_config()")
    parser.add_argument("--workdir", help="run folder (default: config.workdir)")
    parser.add_argument("--dry-run", action="store_true",
                        help="compile the train step, print memory per device and FLOPs, exit")
    args, config = parse_args(parser, argv)
    if args.workdir:
        with config.unlocked():
            config.workdir = args.workdir
    setup_logging()
    mesh_lib.configure_cpu_devices(config.mesh.cpu_devices)
    distributed.initialize()
    main_process = distributed.is_main()
    # Only process 0 logs, unless asked (multi-process tests compare every process's loss).
    log_here = main_process or bool(os.environ.get("PETSEG_LOG_ALL_PROCESSES"))

    if config.plan:
        apply_plan(config, config.plan)
    stage_s: dict[str, float] = {}  # wall time of each stage, printed at the end
    t_stage = time.perf_counter()
    run = prepare_run(config, write_record=not args.dry_run)
    training, workdir = run.training, run.workdir
    stage_s["set-up (data generated and ingested when missing, splits, model record)"] = (
        time.perf_counter() - t_stage)

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
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))

    # --- Input, evals ---------------------------------------------------------------------
    feed = run.feed(data_state)
    validator = Validator(run.store, run.splits["val"][: config.data.val_cases], config.data,
                          run.spec)
    if not run.splits["val"]:
        log.warning("no validation cases: checkpoints are kept by recency only")
    writer = MetricsWriter(workdir)

    def last_good() -> str:
        last = ckpt.latest_step()
        return f"{'step ' + str(last) if last is not None else 'none'} in {ckpt.directory}"

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

    # --- Loop: runs of steps between log, evaluation and checkpoint boundaries -------------
    t_stage = time.perf_counter()
    loop = Loop(training, feed, config.data.batch_size, last_good)
    step = int(start or 0)
    end = config.total_steps
    if config.steps_per_job:
        end = min(end, step + config.steps_per_job)
    boundaries = [config.log_every, config.eval_every, config.checkpoint_every]
    try:
        while step < end:
            stop = min([end] + [(step // b + 1) * b for b in boundaries if b])
            state, metrics, speed = loop.run(state, step, stop)
            step = stop
            last = step == end
            if step % config.log_every == 0 or last:
                values = {"loss": local_value(metrics["loss"]),
                          "grad_norm": local_value(metrics["grad_norm"]),
                          "learning_rate": float(training.schedule(step - 1)), **speed}
                writer.write(step, "train", values)
                if log_here:
                    log.info("step %d/%d  loss %.4f  lr %.2e  %.2f patches/s  data wait %.0f%%",
                             step, config.total_steps, values["loss"], values["learning_rate"],
                             values["patches_per_s"], 100 * values["data_wait"])
            is_eval = step % config.eval_every == 0 or step == config.total_steps
            is_ckpt = (config.checkpoint_every and step % config.checkpoint_every == 0) or last
            if is_eval or is_ckpt:
                metrics = evaluate(step) if is_eval else None
                ckpt.save(step, state, feed.get_state(), {"metrics": metrics or {}},
                          metrics=metrics)
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
            summary |= _closing_stages(config, workdir, stage_s)
    if main_process:
        print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in stage_s.items()))
    return summary | {"stage_seconds": stage_s}


def _closing_stages(config, workdir: Path, stage_s: dict[str, float]) -> dict:
    """Evaluate the best checkpoint on the test split and export it, when configured (their
    wall times go into ``stage_s``)."""
    out = {}
    t_stage = time.perf_counter()
    if config.evaluation.split:
        from petseg_jax.evaluation import evaluate

        out["evaluation"] = evaluate.run(workdir, split=config.evaluation.split,
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
    """Console entry point: exit status 3 when training diverged."""
    try:
        main()
    except TrainingDiverged as err:
        logging.getLogger("petseg_jax.train").error("%s", err)
        raise SystemExit(3) from None


if __name__ == "__main__":
    cli()
