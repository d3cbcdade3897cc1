"""The paper's study: multi-center and cross-tracer protocols, several seeds, one command.

    python -m petseg_jax.study --config configs/study_demo.py \\
        --protocols multicenter,cross_tracer --seeds 3 --out runs/study [--config.key=value ...]
    python -m petseg_jax.study --collect runs/study          # tables from the finished runs
    python -m petseg_jax.study --run-task runs/study 5       # one run (a cluster array job)

Ingests the store once, checks every fold, then trains each fold and seed as an ordinary
workdir ``OUT/<protocol>/<fold>/seed<k>/`` (``python -m petseg_jax.train`` in a subprocess,
its output in ``train.log``), reusing finished ones, and writes ``OUT/study.{json,md,html}``:
the paper's multi-center and cross-tracer tables with mean ± sd over seeds beside the
published values. ``--plan-only`` stops after the checks (``launch/study_slurm.sh`` then
submits one array job per run).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from petseg_jax.configuration import ConfigError, override_pairs
from petseg_jax.console import entry_point, setup_logging
from petseg_jax.evaluation import study
from petseg_jax.evaluation.study_report import StudyError, format_study

log = logging.getLogger("petseg_jax.study")


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--config", help="config file with get_config() (plans and runs a study)")
    mode.add_argument("--collect", metavar="OUT", help="write OUT/study.* from finished runs")
    mode.add_argument("--run-task", nargs=2, metavar=("OUT", "INDEX"),
                      help="run the INDEX-th run (0-based) of the study planned in OUT")
    parser.add_argument("--protocols", default="multicenter,cross_tracer",
                        help=f"comma-separated, of {', '.join(study.PROTOCOLS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--out", help="study folder (with --config)")
    parser.add_argument("--centers", default="",
                        help="comma-separated held-out centers (default: every center)")
    parser.add_argument("--plan-only", action="store_true",
                        help="ingest, check and write OUT/study_plan.json; train nothing")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        overrides = override_pairs(rest)
    except ConfigError as err:
        parser.error(str(err))
    if overrides and not args.config:
        parser.error("--config.key=value overrides need --config")
    if args.config and not args.out:
        parser.error("--config needs --out")
    setup_logging()
    try:
        if args.run_task:
            out, index = Path(args.run_task[0]), args.run_task[1]
            plan = study.read_plan(out)
            tasks = study.tasks_of(plan)
            if not index.isdigit() or int(index) >= len(tasks):
                raise StudyError(f"--run-task index {index!r}: the study has runs "
                                 f"0..{len(tasks) - 1}")
            task = tasks[int(index)]
            ran = study.run_task(plan, task, out)
            log.info("%s: %s", task.name, "done" if ran else "finished already")
            return None
        out = Path(args.collect or args.out)
        if args.config:
            plan = study.plan_study(args.config, overrides, _names(args.protocols), args.seeds,
                                    out, _names(args.centers))
            if args.plan_only:
                print(len(plan["tasks"]))
                return None
            study.run_study(plan, out)
        summary = study.collect(out)
    except StudyError as err:
        log.error("%s", err)
        raise SystemExit(2) from None
    print(format_study(summary))
    print(f"study written to {out / 'study.md'} and {out / 'study.html'}")
    return summary


cli = entry_point(main)

if __name__ == "__main__":
    main()
