"""Learning speed: Dice on fixed held-out cases against training wall time.

    python -m petseg_jax.bench learning --config configs/demo.py --budget-s 420 \
        --eval-every 250 [--cases test-fdg | val | ID,ID,...] [--config.key=value ...]

The tool for tuning a config to a time budget (the demo's 15 minutes on 2 CPU cores). It trains
from scratch with ``petseg_jax.train``'s set-up and loop (:func:`petseg_jax.training.run.prepare_run`,
:class:`~petseg_jax.training.run.Loop`, NaN guard included; no checkpoints, no model record, no
closing stages) and every ``--eval-every`` steps predicts whole cases as the
training's validation does (sliding window and the post-processing of the run's model record)
and prints one JSON line: step, training seconds so far (compile included,
evaluations excluded), the step's loss, mean Dice and per-organ Dice. It stops at the first
evaluation after ``--budget-s`` training seconds, or at ``total_steps`` (whose value still sets
the learning-rate schedule). ``--cases test-fdg`` (default) is the demo's target set: the test
split's full-dose FDG cases. The last line is one JSON object with the whole curve.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from petseg_jax.bench import common
from petseg_jax.configuration import parse_args as parse_args_with_config


def parse_args(argv: Sequence[str] | None):
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.bench learning",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file with get_config()")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="training seconds after which the next evaluation is the last")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations")
    parser.add_argument("--cases", default="test-fdg",
                        help="test-fdg | val | comma-separated case ids")
    args, config = parse_args_with_config(parser, argv)
    if args.budget_s <= 0 or args.eval_every < 1:
        parser.error("--budget-s must be > 0 and --eval-every >= 1")
    return args, config


def select_cases(which: str, splits: Mapping[str, Sequence[str]],
                 cases: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The evaluation cases: ``test-fdg`` (full-dose FDG test cases), ``val`` or an id list."""
    if which == "val":
        chosen = list(splits["val"])
    elif which == "test-fdg":
        chosen = [c for c in splits["test"]
                  if cases[c]["metadata"].get("tracer") == "FDG"
                  and float(cases[c]["metadata"].get("dose_reduction_factor") or 0) == 1.0]
    else:
        chosen = [c.strip() for c in which.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in cases]
        if unknown:
            raise SystemExit(f"--cases: not in the store: {unknown}")
    if not chosen:
        raise SystemExit(f"--cases {which!r} selects no case")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, config = parse_args(argv)

    from petseg_jax.training import mesh as mesh_lib

    mesh_lib.configure_cpu_devices(config.mesh.cpu_devices)  # before JAX starts
    import jax

    from petseg_jax.training.run import Loop, prepare_run
    from petseg_jax.training.validation import Validator

    run = prepare_run(config, write_record=False)
    eval_cases = select_cases(args.cases, run.splits, run.manifest["cases"])
    training = run.training
    state = training.init_state(config.seed)
    feed = run.feed()
    loop = Loop(training, feed, config.data.batch_size)
    validator = Validator(run.store, eval_cases, config.data, run.spec)
    print(f"learning: {len(run.splits['train'])} training cases, evaluating {eval_cases}",
          flush=True)

    curve, step, train_s = [], 0, 0.0
    try:
        while step < config.total_steps and train_s <= args.budget_s:
            t0 = time.perf_counter()
            end = min(step + args.eval_every, config.total_steps)
            state, metrics, _ = loop.run(state, step, end)
            step = end
            loss = float(metrics["loss"])
            train_s += time.perf_counter() - t0
            # host copies: the validator's sliding window runs on one device, the training
            # state may be replicated over several (mesh.cpu_devices)
            result = validator.run(training.model_def, jax.device_get(state["params"]))
            point = {"step": step, "train_s": round(train_s, 1), "loss": round(loss, 4),
                     "mean_dice": round(result["mean_dice"], 4),
                     "by_organ": {k: round(v, 3) for k, v in result["by_organ"].items()}}
            curve.append(point)
            print(json.dumps(point), flush=True)
    finally:
        feed.close()
    overrides = [a for a in argv if a.startswith("--config.")]
    best = max(curve, key=lambda p: p["mean_dice"])
    common.report(
        "learning curve",
        [(f"step {p['step']:>6} at {p['train_s']:>7.1f} s", f"mean Dice {p['mean_dice']:.3f}")
         for p in curve],
        {"bench": "learning", "config": args.config, "overrides": overrides,
         "eval_cases": eval_cases, "total_steps": config.total_steps,
         "budget_s": args.budget_s, "final_dice": curve[-1]["mean_dice"],
         "best_dice": best["mean_dice"], "best_step": best["step"],
         "curve": [{k: p[k] for k in ("step", "train_s", "loss", "mean_dice")} for p in curve],
         **common.machine()})
    return 0
