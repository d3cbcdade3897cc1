"""Learning speed: Dice on fixed held-out cases against training wall time.

    python -m petseg_jax.bench learning --config configs/demo.py --budget-s 420 \
        --eval-every 250 [--cases test-fdg | val | ID,ID,...] [--config.key=value ...]

The tool for tuning a config to a time budget (the demo's 15 minutes on 2 CPU cores). It trains
from scratch like ``petseg_jax.train`` (same store preparation, splits, step and input pipeline;
no checkpoints, no closing stages) and every ``--eval-every`` steps predicts whole cases as the
training's validation does (sliding window, then the ``evaluation.largest_component``
post-processing when the config asks for it) and prints one JSON line: step, training seconds so far (compile included,
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
from pathlib import Path
from typing import Any

from petseg_jax.bench import common
from petseg_jax.configuration import load_config, split_overrides


def parse_args(argv: Sequence[str]):
    rest, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.bench learning",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file with get_config()")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="training seconds after which the next evaluation is the last")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations")
    parser.add_argument("--cases", default="test-fdg",
                        help="test-fdg | val | comma-separated case ids")
    args = parser.parse_args(rest)
    if args.budget_s <= 0 or args.eval_every < 1:
        parser.error("--budget-s must be > 0 and --eval-every >= 1")
    return args, overrides


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
    args, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
    config = load_config(args.config, overrides)

    from petseg_jax.data import store as store_lib
    from petseg_jax.training.device_feed import DevicePrefetcher
    from petseg_jax.data.pipeline import make_train_iterator
    from petseg_jax.phantom.prepare import ensure_store
    from petseg_jax.data.splits import make_splits
    from petseg_jax.training import mesh as mesh_lib
    from petseg_jax.training.builder import build_training
    from petseg_jax.training.validation import Validator

    ensure_store(config.data, config.seed)
    store = Path(config.data.store)
    manifest = store_lib.read_manifest(store)
    schema = store_lib.manifest_schema(manifest)
    splits = make_splits(manifest["cases"], config.data.split)
    eval_cases = select_cases(args.cases, splits, manifest["cases"])
    training = build_training(config, schema, mesh_lib.make_mesh(config.mesh))
    state = training.init_state(config.seed)
    iterator = make_train_iterator(
        store, splits["train"], patch_size=tuple(config.data.patch_size),
        local_batch_size=config.data.batch_size, seed=config.seed, data_cfg=config.data,
        workers=config.data.workers)
    feed = DevicePrefetcher(iterator, training.batch_sharding, size=config.data.device_prefetch)
    validator = Validator(store, eval_cases, schema, config)
    print(f"learning: {len(splits['train'])} training cases, evaluating {eval_cases}",
          flush=True)

    curve, step, train_s = [], 0, 0.0
    try:
        while step < config.total_steps and train_s <= args.budget_s:
            t0 = time.perf_counter()
            for _ in range(min(args.eval_every, config.total_steps - step)):
                state, metrics = training.train_step(state, next(feed))
                step += 1
            loss = float(metrics["loss"])  # waits for the last step
            train_s += time.perf_counter() - t0
            result = validator.run(training.model_def, state["params"])
            point = {"step": step, "train_s": round(train_s, 1), "loss": round(loss, 4),
                     "mean_dice": round(result["mean_dice"], 4),
                     "by_organ": {k: round(v, 3) for k, v in result["by_organ"].items()}}
            curve.append(point)
            print(json.dumps(point), flush=True)
    finally:
        feed.close()
    best = max(curve, key=lambda p: p["mean_dice"])
    common.report(
        "learning curve",
        [(f"step {p['step']:>6} at {p['train_s']:>7.1f} s", f"mean Dice {p['mean_dice']:.3f}")
         for p in curve],
        {"bench": "learning", "config": args.config, "overrides": dict(overrides),
         "eval_cases": eval_cases, "total_steps": config.total_steps,
         "budget_s": args.budget_s, "final_dice": curve[-1]["mean_dice"],
         "best_dice": best["mean_dice"], "best_step": best["step"],
         "curve": [{k: p[k] for k in ("step", "train_s", "loss", "mean_dice")} for p in curve],
         **common.machine()})
    return 0
