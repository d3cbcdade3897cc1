"""The study's fold planning, aggregation, bootstrap, tables and bad input, on synthetic results
(no training: runs are written as finished workdirs by hand)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from petseg_jax.data.splits import SplitError, make_splits
from petseg_jax.evaluation import study
from petseg_jax.evaluation import study_report as sr
from petseg_jax.evaluation.study_report import StudyError
from store_fixtures import make_tiny_store

REPO = Path(__file__).resolve().parents[2]
SPLIT = {"protocol": "metadata", "seed": 0, "val_fraction": 0.1, "test_fraction": 0.2,
         "test_center": "", "train_tracers": ("FDG",)}
ORGANS = ("liver", "spleen")


def _cases(spec):
    """{case_id: manifest entry} from (center, tracer, dose, ac) tuples."""
    return {f"c{i:02d}": {"metadata": {"center": c, "tracer": t, "dose_reduction_factor": k,
                                       "attenuation_corrected": ac}}
            for i, (c, t, k, ac) in enumerate(spec)}


CASES = _cases([(c, t, k, ac) for c in ("A", "B", "C") for t in ("FDG", "PSMA")
                for k, ac in ((1.0, True), (10.0, False))])


def test_folds_leave_each_center_out_and_cross_tracer_tests_the_other_tracers():
    folds = study.plan_folds(CASES, SPLIT, ["multicenter", "cross_tracer"])
    assert list(folds["multicenter"]) == ["A", "B", "C"]
    for center, fold in folds["multicenter"].items():
        assert fold["split"] == {"protocol": "leave_one_center_out", "test_center": center}
        assert {CASES[c]["metadata"]["center"] for c in fold["test_cases"]} == {center}
        assert fold["cases"]["test"] == 4 and sum(fold["cases"].values()) == len(CASES)
    cross = folds["cross_tracer"]["train_FDG"]
    assert {CASES[c]["metadata"]["tracer"] for c in cross["test_cases"]} == {"PSMA"}
    assert cross["cases"]["test"] == 6
    assert list(study.plan_folds(CASES, SPLIT, ["multicenter"], centers=["B"])["multicenter"]) \
        == ["B"]


def test_splits_follow_the_split_seed_not_the_run_seed():
    cfg = {**SPLIT, "protocol": "leave_one_center_out", "test_center": "A", "val_fraction": 0.5}
    base = make_splits(CASES, cfg)
    assert base == make_splits(CASES, dict(cfg))  # no run seed involved
    assert any(make_splits(CASES, {**cfg, "seed": s})["val"] != base["val"] for s in range(1, 6))
    with pytest.raises(SplitError, match="no 'seed'"):
        make_splits(CASES, {k: v for k, v in cfg.items() if k != "seed"})


@pytest.mark.parametrize("cases, protocols, centers, match", [
    (_cases([("A", "FDG", 1.0, True)] * 3), ["multicenter"], (), "fold A.*no training cases"),
    (_cases([("A", "FDG", 1.0, True), ("B", "FDG", 1.0, True)]), ["cross_tracer"], (),
     "train_FDG.*no test cases"),
    (_cases([("A", "PSMA", 1.0, True), ("B", "FAPI", 1.0, True)]), ["cross_tracer"], (),
     "train_FDG.*no training cases"),
    (CASES, ["multicenter"], ("A", "Z"), r"center\(s\) \['Z'\] have no cases"),
    (CASES, ["leave_one_out"], (), "unknown protocol 'leave_one_out'"),
    (CASES, [], (), "no protocol"),
])
def test_bad_folds_fail_with_a_clear_error(cases, protocols, centers, match):
    with pytest.raises(StudyError, match=match):
        study.plan_folds(cases, SPLIT, protocols, centers)


# ----------------------------------------------------------------------------- statistics
def _rows(case_id, meta, dices):
    return [{"case_id": case_id, "organ": o, "dice": d, **meta} for o, d in zip(ORGANS, dices)]


def _run(protocol, seed, cases):
    """cases: {case_id: (center, tracer, dose, ac, (dice per organ))}."""
    rows = []
    for cid, (c, t, k, ac, dices) in cases.items():
        rows += _rows(cid, {"center": c, "tracer": t, "dose_reduction_factor": k,
                            "attenuation_corrected": ac}, dices)
    return {"protocol": protocol, "fold": "f", "seed": seed, "workdir": f"{protocol}/f/seed{seed}",
            "rows": rows}


def test_cells_are_mean_and_sd_over_seeds_of_case_means():
    runs = [_run("multicenter", s, {"x": ("A", "FDG", 1.0, True, (0.8 + 0.1 * s, 0.6)),
                                    "y": ("A", "FDG", 10.0, False, (0.4, 0.4 + 0.1 * s))})
            for s in (0, 1)]
    pr = sr.ProtocolResults("multicenter", runs)
    # seed 0: x 0.7, y 0.4 -> 0.55; seed 1: x 0.75, y 0.45 -> 0.60
    cell = pr.cell(ci=True)
    assert cell["seed_means"] == pytest.approx([0.55, 0.60])
    assert cell["mean"] == pytest.approx(0.575) and cell["sd"] == pytest.approx(0.05 / 2**0.5)
    assert cell["n_cases"] == 2 and cell["n_seeds"] == 2
    assert cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
    assert pr.cell({"attenuation_corrected": "NAC"})["mean"] == pytest.approx(0.425)
    assert pr.cell({"dose_reduction_factor": "1"}, organ="liver")["seed_means"] == \
        pytest.approx([0.8, 0.9])
    nac_minus_ac = sr.difference("d", (pr, {"attenuation_corrected": "NAC"}),
                                 (pr, {"attenuation_corrected": "AC"}))
    assert nac_minus_ac["mean"] == pytest.approx(-0.3) and nac_minus_ac["seed_sd"] == \
        pytest.approx(0.0, abs=1e-12)
    assert math.isnan(nac_minus_ac["ci95"][0])  # one case a side: no bootstrap interval


def test_results_that_do_not_combine_are_refused():
    case = {"x": ("A", "FDG", 1.0, True, (0.5, 0.5))}
    with pytest.raises(StudyError, match="tested twice with seed 0"):
        sr.ProtocolResults("multicenter", [_run("multicenter", 0, case)] * 2)
    with pytest.raises(StudyError, match=r"case y was tested with seeds \[1\]"):
        sr.ProtocolResults("multicenter", [
            _run("multicenter", 0, case),
            _run("multicenter", 1, case | {"y": ("B", "FDG", 1.0, True, (0.5, 0.5))})])


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_cases():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.7, 0.1, 10), rng.normal(0.7, 0.1, 400)
    lo, hi = sr.bootstrap_ci(small)
    assert lo < small.mean() < hi
    lo2, hi2 = sr.bootstrap_ci(large)
    assert hi2 - lo2 < (hi - lo) / 3
    assert sr.bootstrap_ci([0.5] * 5) == [0.5, 0.5]
    lo, hi = sr.bootstrap_ci(large + 0.2, large)  # unpaired: spread of both sides
    assert lo < 0.2 < hi and hi - lo > 0.02
    assert sr.bootstrap_ci((large + 0.2) - large) == pytest.approx([0.2, 0.2])  # paired
    assert sr.bootstrap_ci(small) == sr.bootstrap_ci(small)  # seeded
    assert all(math.isnan(v) for v in sr.bootstrap_ci([0.3], [0.2, 0.4]))


def test_paired_protocol_difference_uses_the_shared_cases():
    cases = {"p": ("A", "PSMA", 1.0, True, (0.6, 0.6)), "q": ("B", "PSMA", 1.0, True, (0.5, 0.5)),
             "f": ("A", "FDG", 1.0, True, (0.9, 0.9))}
    multi = sr.ProtocolResults("multicenter", [_run("multicenter", s, cases) for s in (0, 1)])
    worse = {k: v[:4] + ((v[4][0] - 0.1, v[4][1] - 0.1),) for k, v in cases.items() if k != "f"}
    cross = sr.ProtocolResults("cross_tracer", [_run("cross_tracer", s, worse) for s in (0, 1)])
    d = sr.difference("d", (cross, {}), (multi, {}), paired=True)
    assert d["n_cases"] == [2] and d["mean"] == pytest.approx(-0.1)
    assert d["ci95"] == pytest.approx([-0.1, -0.1])


# ----------------------------------------------------------------------------- whole studies
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("study") / "store", cases=6)


def _plan(tmp_path, store, seeds=2, protocols=("multicenter", "cross_tracer"), **extra):
    overrides = [("data.store", str(store)), ("data.raw_dir", ""), *extra.items()]
    return study.plan_study(REPO / "configs" / "demo.py", overrides, list(protocols), seeds,
                            tmp_path / "out")


def _finish(out: Path, plan, task, dice_by_case):
    """Write a finished run by hand: config.json as train writes it, eval/cases.csv, summary."""
    workdir = out / task.name
    (workdir / "eval").mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps(study.task_config(plan, task)
                                                    | {"workdir": str(workdir)}))
    fold = plan["folds"][task.protocol][task.fold]
    with (workdir / "eval" / "cases.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*study.REQUIRED_COLUMNS, "hd95_mm"])
        writer.writeheader()
        for cid in fold["test_cases"]:
            meta = dice_by_case[cid]
            for organ in ORGANS:
                writer.writerow({"case_id": cid, "organ": organ, "tracer": meta["tracer"],
                                 "center": meta["center"], "dose_reduction_factor": "1.0",
                                 "attenuation_corrected": "True",
                                 "dice": meta["dice"] + 0.01 * task.seed, "hd95_mm": "inf"})
    (workdir / "eval" / "summary.json").write_text("{}")


def _meta(store):
    manifest = json.loads((store / "manifest.json").read_text())
    return {cid: {**c["metadata"], "dice": 0.5 + 0.05 * i}
            for i, (cid, c) in enumerate(sorted(manifest["cases"].items()))}


def test_plan_runs_commands_and_a_collected_study(tmp_path, tiny_store):
    plan = _plan(tmp_path, tiny_store)
    out = tmp_path / "out"
    names = [t.name for t in study.tasks_of(plan)]
    assert names == ["multicenter/C1/seed0", "multicenter/C1/seed1", "multicenter/C2/seed0",
                     "multicenter/C2/seed1", "cross_tracer/train_FDG/seed0",
                     "cross_tracer/train_FDG/seed1"]
    assert json.loads((out / study.PLAN_FILE).read_text())["tasks"] == plan["tasks"]
    cmd = study.train_command(plan, study.tasks_of(plan)[3], out)
    assert cmd[1:3] == ["-m", "petseg_jax.train"]
    assert cmd[cmd.index("--workdir") + 1] == str(out / "multicenter/C2/seed1")
    assert "--config.seed=1" in cmd and "--config.data.split.test_center=C2" in cmd
    assert "--config.data.split.protocol=leave_one_center_out" in cmd
    assert study._override_text("True") == "'True'" and study._override_text("C1") == "C1"

    meta = _meta(tiny_store)
    tasks = study.tasks_of(plan)
    for task in tasks[:-1]:
        _finish(out, plan, task, meta)
    with pytest.raises(StudyError, match=r"1 of 6 runs .* not finished: "
                                         r"cross_tracer/train_FDG/seed1\."):
        study.collect(out)
    _finish(out, plan, tasks[-1], meta)
    summary = study.collect(out)

    multi = summary["protocols"]["multicenter"]
    c1 = [c for c, m in meta.items() if m["center"] == "C1"]
    expected = np.mean([meta[c]["dice"] for c in c1])
    assert multi["groups"]["C1"]["all"]["seed_means"] == pytest.approx([expected,
                                                                         expected + 0.01])
    assert multi["groups"]["C1"]["all"]["sd"] == pytest.approx(0.01 / 2**0.5)
    assert set(summary["protocols"]["cross_tracer"]["groups"]) == {"DOTATATE", "FAPI",
                                                                   "Grazytracer", "PSMA"}
    labels = [d["label"] for d in summary["differences"]]
    assert "multicenter: C2 - C1" in labels and "cross_tracer - multicenter, PSMA cases" in labels
    for name in ("study.json", "study.md", "study.html", "figures/dice_vs_dose.png",
                 "figures/center_tracer_heatmap.png", "figures/organ_dice_vs_dose.png"):
        assert (out / name).is_file(), name
    md = (out / "study.md").read_text()
    for text in ("0.834", "institution 4", "– (we have 2 centers)", "0.830", "training",
                 "Grazytracer", "± 0.007", "(paired)", "PSMA"):
        assert text in md, text
    assert json.loads((out / "study.json").read_text())["reference"]["cross_tracer"]["FAPI"] \
        == 0.573

    # Resuming with the same config keeps the plan; another config is refused.
    assert _plan(tmp_path, tiny_store)["tasks"] == plan["tasks"]
    with pytest.raises(StudyError, match="another config.*total_steps: 3600 != 5"):
        _plan(tmp_path, tiny_store, total_steps="5")


def test_a_run_with_another_config_is_named(tmp_path, tiny_store):
    plan = _plan(tmp_path, tiny_store, seeds=1, protocols=("cross_tracer",))
    out = tmp_path / "out"
    task = study.tasks_of(plan)[0]
    _finish(out, plan, task, _meta(tiny_store))
    config = json.loads((out / task.name / "config.json").read_text())
    config["optim"]["lr"] = 0.5
    (out / task.name / "config.json").write_text(json.dumps(config))
    with pytest.raises(StudyError, match=r"run cross_tracer/train_FDG/seed0 was trained with "
                                         r"another config .*optim.lr: 0.01 != 0.5"):
        study.collect(out)
    with pytest.raises(StudyError, match="optim.lr"):  # and before any training, on a rerun
        _plan(tmp_path, tiny_store, seeds=1, protocols=("cross_tracer",))


@pytest.mark.parametrize("extra, match", [
    ({"seed": "3"}, "--config.seed is set by the study"),
    ({"evaluation.split": "val"}, "evaluation.split is 'val'"),
    ({"steps_per_job": "10"}, "steps_per_job"),
])
def test_bad_study_configs_fail_before_anything_runs(tmp_path, tiny_store, extra, match):
    with pytest.raises(StudyError, match=match):
        _plan(tmp_path, tiny_store, **extra)
    assert not (tmp_path / "out").exists()


def test_collect_without_a_plan(tmp_path):
    with pytest.raises(StudyError, match="holds no study"):
        study.collect(tmp_path)


@pytest.mark.parametrize("name", ["study_demo", "study_paper"])
def test_study_configs_are_accepted(name):
    from petseg_jax.configuration import load_config

    config = load_config(REPO / "configs" / f"{name}.py")
    study._check_study_config(config, [])
    assert config.total_steps < 3600 if name == "study_demo" else config.total_steps == 250_000
