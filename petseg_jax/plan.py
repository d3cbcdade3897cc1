"""Plan a run from the dataset: spacing, patch, depth and batch sized by the compiler.

    python -m petseg_jax.plan --store STORE --memory-gb G [--devices N] [--out plan.json]
        [--target local|gpu] [--config configs/default.py] [--config.key=value ...]

See :mod:`petseg_jax.planning.plan` for what it does and writes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from petseg_jax.configuration import ConfigError, load_config
from petseg_jax.console import entry_point, setup_logging
from petseg_jax.data import store as store_lib
from petseg_jax.planning import PlanError
from petseg_jax.planning.plan import PLAN_FILE, make_plan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="preprocessed store (manifest.json)")
    parser.add_argument("--memory-gb", type=float, required=True,
                        help="memory budget per device in GiB (what the train step may use)")
    parser.add_argument("--devices", type=int, default=1,
                        help="data-parallel devices the run will use (global batch = per device "
                             "x N)")
    parser.add_argument("--config", default=str(Path(__file__).parents[1] / "configs"
                                                / "default.py"),
                        help="config whose model, optimizer and dtype are planned")
    parser.add_argument("--out", default=PLAN_FILE, help="plan file to write")
    parser.add_argument("--target", choices=("local", "gpu"), default="local",
                        help="gpu: on a CPU-only machine, compile the program a GPU runs (plan "
                             "a GPU budget offline); local: this machine's devices")
    parser.add_argument("--max-compiles", type=int, default=None,
                        help="most candidates to compile (default: 8)")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    try:
        config = load_config(args.config, overrides)
        plan = make_plan(args.store, args.memory_gb, config, args.devices, args.target,
                         args.max_compiles)
    except (PlanError, ConfigError, store_lib.StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(plan["table"])
    for reason in plan["reasons"]:
        print(f"- {reason}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store_lib.write_json_atomic(out, plan)
    d = plan["data"]
    print(f"wrote {out}: spacing {d['spacing']} mm, patch {d['patch_size']}, batch "
          f"{d['batch_per_device']} per device x {plan['devices']} = {d['batch_size']}, "
          f"{plan['model']['n_stages']} stages, {plan['memory']['compiled_gib_per_device']:.2f} "
          f"of {args.memory_gb:g} GiB per device, planned in {plan['planning_seconds']:.0f} s "
          f"on {plan['platform']}")
    return 0


cli = entry_point(main)

if __name__ == "__main__":
    sys.exit(main())
