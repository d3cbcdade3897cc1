"""The paper's study: multi-center and cross-tracer protocols over several seeds.

A study is a set of *runs*, one per protocol fold and seed, each an ordinary training workdir
``OUT/<protocol>/<fold>/seed<k>/`` trained and evaluated by ``python -m petseg_jax.train`` in a
process of its own (the command a cluster job runs too). Protocols:

- ``multicenter``: leave one center out, one fold per center of the store
  (``data.split.protocol=leave_one_center_out``, ``data.split.test_center=<fold>``);
- ``cross_tracer``: one fold, ``train_<tracers>``: train on ``data.split.train_tracers``, test on
  the other tracers.

A seed sets ``config.seed`` (initialization, patch sampling, augmentation); the splits follow
``data.split.seed``, so every seed trains and tests on the same cases.

:func:`plan_study` ingests the store once, checks every fold's split and writes
``OUT/study_plan.json``; :func:`run_task` trains one run unless it is finished (its
``eval/summary.json`` and ``eval/cases.csv`` exist), so a study resumes where it stopped;
:func:`collect` gathers the finished runs into ``OUT/study.{json,md,html}``
(:mod:`petseg_jax.evaluation.study_report`). Bad input raises :class:`StudyError` before any
training: a fold without training or test cases, a run whose config differs from the plan,
and, for :func:`collect`, unfinished runs (named).
"""

from __future__ import annotations

import ast
import copy
import csv
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petseg_jax.configuration import load_config
from petseg_jax.data import store as store_lib
from petseg_jax.data.splits import SplitError, make_splits
from petseg_jax.evaluation.study_report import StudyError, write_study
from petseg_jax.phantom.prepare import ensure_store

log = logging.getLogger("petseg_jax.study")

PROTOCOLS = ("multicenter", "cross_tracer")
PLAN_FILE = "study_plan.json"
PLAN_VERSION = 1
# Config keys a study sets per run; the study's own --config overrides may not set them.
RUN_KEYS = ("seed", "workdir", "data.split.protocol", "data.split.test_center")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class Task:
    """One run of the study: a protocol's fold trained with one seed."""

    protocol: str
    fold: str
    seed: int

    @property
    def name(self) -> str:
        """``<protocol>/<fold>/seed<k>``, also the run's workdir relative to the study folder."""
        return f"{self.protocol}/{self.fold}/seed{self.seed}"


# ----------------------------------------------------------------------------- folds
def fold_split_keys(protocol: str, fold: str) -> dict[str, str]:
    """The ``data.split`` keys a protocol's fold sets (besides the config's own)."""
    if protocol == "multicenter":
        return {"protocol": "leave_one_center_out", "test_center": fold}
    if protocol == "cross_tracer":
        return {"protocol": "cross_tracer"}
    raise StudyError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def plan_folds(cases: Mapping[str, Mapping[str, Any]], split_cfg: Mapping[str, Any],
               protocols: Sequence[str], centers: Sequence[str] = ()) -> dict[str, dict]:
    """protocol -> fold -> ``{"split": data.split keys, "cases": counts, "test_cases": ids}``.

    ``centers`` limits the multi-center folds (default: every center of the store). Raises
    :class:`StudyError` for an unknown protocol, a center without cases, or a fold whose split
    leaves no training or no test cases."""
    if not protocols:
        raise StudyError("no protocol given; known: " + ", ".join(PROTOCOLS))
    present = sorted({str(c["metadata"]["center"]) for c in cases.values()})
    tracers = sorted({str(c["metadata"]["tracer"]) for c in cases.values()})
    out: dict[str, dict] = {}
    for protocol in protocols:
        if protocol == "multicenter":
            if missing := [c for c in centers if c not in present]:
                raise StudyError(f"multicenter: center(s) {missing} have no cases in the store "
                                 f"(its centers: {present})")
            folds = list(centers or present)
        elif protocol == "cross_tracer":
            folds = ["train_" + "+".join(split_cfg["train_tracers"])]
        else:
            raise StudyError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        out[protocol] = {}
        for fold in folds:
            if not _SAFE_NAME.fullmatch(fold):
                raise StudyError(f"{protocol}: fold name {fold!r} is not a safe folder name "
                                 "(letters, digits, _ . + - only)")
            keys = fold_split_keys(protocol, fold)
            where = (f"held-out center {fold!r}" if protocol == "multicenter" else
                     f"train_tracers {list(split_cfg['train_tracers'])}, tracers {tracers}")
            try:
                splits = make_splits(cases, {**split_cfg, **keys})
            except SplitError as err:
                raise StudyError(f"{protocol} fold {fold} ({where}): {err}") from None
            if not splits["test"]:
                raise StudyError(f"{protocol} fold {fold} ({where}): the split leaves no test "
                                 "cases")
            out[protocol][fold] = {"split": keys,
                                   "cases": {k: len(v) for k, v in splits.items()},
                                   "test_cases": splits["test"]}
    return out


# ----------------------------------------------------------------------------- configs
def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(expected: Mapping[str, Any], actual: Mapping[str, Any],
                       ignore: Sequence[str] = ("workdir",)) -> list[str]:
    """``key: expected != actual`` for every dotted key whose values differ (or that only one
    side has), ``ignore``d keys left out."""
    a, b = _flatten(expected), _flatten(actual)
    return [f"{k}: {a.get(k, '(absent)')!r} != {b.get(k, '(absent)')!r}"
            for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)]


def task_config(plan: Mapping[str, Any], task: Task) -> dict[str, Any]:
    """The config a run trains with: the plan's config with the run's seed and split keys."""
    config = copy.deepcopy(plan["config"])
    config["seed"] = task.seed
    config["data"]["split"].update(plan["folds"][task.protocol][task.fold]["split"])
    return config


def _override_text(value: Any) -> str:
    """``--config.key=<text>`` for a value: strings bare unless they read as another literal."""
    text = str(value)
    if isinstance(value, str):
        try:
            ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        return repr(text)
    return text


def train_command(plan: Mapping[str, Any], task: Task, out: Path) -> list[str]:
    """The ``python -m petseg_jax.train`` command line of one run."""
    run_keys = [("seed", task.seed), *((f"data.split.{k}", v) for k, v in
                                       plan["folds"][task.protocol][task.fold]["split"].items())]
    return [sys.executable, "-m", "petseg_jax.train", "--config", plan["config_file"],
            "--workdir", str(out / task.name),
            *(f"--config.{k}={text}" for k, text in plan["overrides"]),  # as the user typed
            *(f"--config.{k}={_override_text(v)}" for k, v in run_keys)]


def check_run_config(plan: Mapping[str, Any], task: Task, out: Path) -> None:
    """A run's ``config.json`` (when it started) must be the plan's config for that run."""
    path = out / task.name / "config.json"
    if not path.is_file():
        return
    diffs = config_differences(task_config(plan, task), json.loads(path.read_text()))
    if diffs:
        raise StudyError(f"run {task.name} was trained with another config than the study's "
                         f"plan ({len(diffs)} differences: {'; '.join(diffs[:8])}). Every run of "
                         f"a study must share one config: use a new --out, or delete "
                         f"{out / task.name}")


def _check_study_config(config, overrides: Sequence[tuple[str, str]]) -> None:
    if bad := [k for k, _ in overrides if k in RUN_KEYS]:
        raise StudyError(f"--config.{bad[0]} is set by the study for each run "
                         f"(it sets {', '.join(RUN_KEYS)})")
    if config.evaluation.split != "test":
        raise StudyError(f"the study evaluates the test split, but evaluation.split is "
                         f"{config.evaluation.split!r}: set --config.evaluation.split=test")
    if config.steps_per_job:
        raise StudyError("config.steps_per_job stops a run before its evaluation: the study "
                         "needs every run to finish (set it to 0)")
    if config.plan:
        raise StudyError("config.plan (a planner's plan.json applied at training time) is not "
                         "supported by the study: write the plan's sizes into the config file")


# ----------------------------------------------------------------------------- plan
def tasks_of(plan: Mapping[str, Any]) -> list[Task]:
    """The plan's runs in order: protocol, fold, seed."""
    return [Task(t["protocol"], t["fold"], int(t["seed"])) for t in plan["tasks"]]


def read_plan(out: str | Path) -> dict[str, Any]:
    """``OUT/study_plan.json``; a clear error when ``out`` holds no study."""
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        raise StudyError(f"{out} holds no study ({PLAN_FILE} missing): plan it first with "
                         "`python -m petseg_jax.study --config ... --out DIR`")
    plan = json.loads(path.read_text())
    if plan.get("format_version") != PLAN_VERSION:
        raise StudyError(f"{path}: format_version {plan.get('format_version')!r}, expected "
                         f"{PLAN_VERSION}")
    return plan


def plan_study(config_file: str | Path, overrides: Sequence[tuple[str, str]],
               protocols: Sequence[str], seeds: int, out: str | Path,
               centers: Sequence[str] = ()) -> dict[str, Any]:
    """Ingest the store (once), plan and check every fold and run, write ``OUT/study_plan.json``.

    An existing plan in ``out`` must have the same config (its protocols and seeds may
    change: the study grows or shrinks); every run already started must match the plan."""
    if seeds < 1:
        raise StudyError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out)
    config_file = Path(config_file).resolve()
    overrides = [(str(k), str(v)) for k, v in overrides]
    config = load_config(config_file, [f"--config.{k}={v}" for k, v in overrides])
    _check_study_config(config, overrides)
    store = ensure_store(config.data, config.seed).resolve()
    # Every run reads this store, from any folder.
    overrides = [o for o in overrides if o[0] != "data.store"] + [("data.store", str(store))]
    config = load_config(config_file, [f"--config.{k}={v}" for k, v in overrides])
    manifest = store_lib.read_manifest(store)
    folds = plan_folds(manifest["cases"], config.data.split, protocols, centers)
    plan = {"format_version": PLAN_VERSION, "config_file": str(config_file),
            "overrides": overrides, "config": json.loads(config.to_json_best_effort()),
            "protocols": list(protocols), "seeds": seeds, "store": str(store), "folds": folds,
            "tasks": [{"protocol": p, "fold": f, "seed": s}
                      for p in folds for f in folds[p] for s in range(seeds)]}
    if (out / PLAN_FILE).is_file():
        old = read_plan(out)
        if diffs := config_differences(old["config"], plan["config"], ignore=()):
            raise StudyError(f"{out} holds a study with another config ({len(diffs)} "
                             f"differences: {'; '.join(diffs[:8])}): use a new --out, or the "
                             "same config and overrides")
    for task in tasks_of(plan):
        check_run_config(plan, task, out)
    out.mkdir(parents=True, exist_ok=True)
    store_lib.write_json_atomic(out / PLAN_FILE, plan)
    n = {p: len(f) for p, f in folds.items()}
    log.info("study in %s: %s folds x %d seeds = %d runs; store %s", out, n, seeds,
             len(plan["tasks"]), store)
    return plan


# ----------------------------------------------------------------------------- runs
def is_finished(workdir: Path) -> bool:
    """A run is finished when its evaluation wrote ``eval/summary.json`` and ``eval/cases.csv``."""
    return (workdir / "eval" / "summary.json").is_file() and (workdir / "eval" / "cases.csv"
                                                              ).is_file()


def _log_tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_task(plan: Mapping[str, Any], task: Task, out: Path) -> bool:
    """Train and evaluate one run in a subprocess, its output in ``<workdir>/train.log``.
    Returns False when the run was already finished (reused), True when it ran."""
    workdir = out / task.name
    check_run_config(plan, task, out)
    if is_finished(workdir):
        return False
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # One compilation cache for the study's runs: every run after the first skips most compiles.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str((out / "jax_cache").resolve()))
    log_path = workdir / "train.log"
    with log_path.open("a", encoding="utf-8") as log_file:
        rc = subprocess.run(train_command(plan, task, out), stdout=log_file,
                            stderr=subprocess.STDOUT, env=env, check=False).returncode
    if rc != 0:
        raise StudyError(f"run {task.name} failed (exit status {rc}); the end of {log_path}:\n"
                         f"{_log_tail(log_path)}")
    if not is_finished(workdir):
        raise StudyError(f"run {task.name} ended without eval/summary.json and eval/cases.csv; "
                         f"see {log_path}")
    return True


def run_study(plan: Mapping[str, Any], out: Path) -> None:
    """Run every unfinished run of the plan, one after another, with progress and an ETA."""
    tasks = tasks_of(plan)
    todo = [t for t in tasks if not is_finished(out / t.name)]
    log.info("%d of %d runs finished already; %d to run", len(tasks) - len(todo), len(tasks),
             len(todo))
    t0 = time.perf_counter()
    for i, task in enumerate(todo):
        log.info("[%d/%d] %s: training (log %s)", i + 1, len(todo), task.name,
                 out / task.name / "train.log")
        run_task(plan, task, out)
        spent = time.perf_counter() - t0
        log.info("[%d/%d] %s: done; %.0f s so far, about %.0f s to go", i + 1, len(todo),
                 task.name, spent, spent / (i + 1) * (len(todo) - i - 1))


# ----------------------------------------------------------------------------- collect
REQUIRED_COLUMNS = ("case_id", "organ", "tracer", "center", "dose_reduction_factor",
                    "attenuation_corrected", "dice")


def read_case_rows(path: Path) -> list[dict[str, Any]]:
    """``eval/cases.csv`` as metric rows (the columns the study uses, typed)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if missing := [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]:
            raise StudyError(f"{path} lacks the column(s) {missing}")
        rows = []
        for row in reader:
            ac = row["attenuation_corrected"]
            if ac not in ("True", "False"):
                raise StudyError(f"{path}: attenuation_corrected {ac!r} is not True/False")
            rows.append({"case_id": row["case_id"], "organ": row["organ"],
                         "tracer": row["tracer"], "center": row["center"],
                         "dose_reduction_factor": float(row["dose_reduction_factor"]),
                         "attenuation_corrected": ac == "True", "dice": float(row["dice"]),
                         "field_of_view": row.get("field_of_view") or None,
                         "fov_truncated": row.get("fov_truncated") == "True"})
    if not rows:
        raise StudyError(f"{path} has no rows")
    return rows


def gather(out: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(plan, runs) of a study whose every run finished: each run ``{"protocol", "fold",
    "seed", "workdir", "rows"}``. Unfinished runs are named in the error."""
    out = Path(out)
    plan = read_plan(out)
    tasks = tasks_of(plan)
    if missing := [t.name for t in tasks if not is_finished(out / t.name)]:
        raise StudyError(f"{len(missing)} of {len(tasks)} runs of {out} are not finished: "
                         f"{', '.join(missing)}. Run the study again (it resumes), or "
                         "`python -m petseg_jax.study --run-task DIR I` for each")
    runs = []
    for task in tasks:
        check_run_config(plan, task, out)
        runs.append({"protocol": task.protocol, "fold": task.fold, "seed": task.seed,
                     "workdir": task.name,
                     "rows": read_case_rows(out / task.name / "eval" / "cases.csv")})
    return plan, runs


def collect(out: str | Path) -> dict[str, Any]:
    """Write ``OUT/study.{json,md,html}`` and figures from the finished runs; returns the
    study summary."""
    plan, runs = gather(out)
    return write_study(Path(out), plan, runs)
