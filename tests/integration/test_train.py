"""Training end to end, in-process: exact resume, the NaN guard, and the demo's closing stages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from petseg_jax import train
from petseg_jax.bench import learning
from petseg_jax.data import store as store_lib
from petseg_jax.training.restore import load_trained
from store_fixtures import make_tiny_store
from train_helpers import tiny_train_args


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_tiny_store(tmp_path_factory.mktemp("train") / "store", cases=3)


def _params(workdir: Path, step: int) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(load_trained(workdir, step).params)]


def test_exact_resume_is_bitwise(store, tmp_path):
    """2N steps straight == N steps, stop, N resumed steps (parameters bitwise equal)."""
    straight = train.main(tiny_train_args(store, tmp_path / "straight", 4))
    assert straight["step"] == 4
    first = train.main(tiny_train_args(store, tmp_path / "resumed", 4,
                                       "--config.steps_per_job=2"))
    assert first["step"] == 2
    second = train.main(tiny_train_args(store, tmp_path / "resumed", 4))
    assert second["step"] == 4
    a, b = _params(tmp_path / "straight", 4), _params(tmp_path / "resumed", 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, _params(tmp_path / "resumed", 2)))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(store, tmp_path):
    bad_store = tmp_path / "store"
    shutil.copytree(store, bad_store)
    workdir = tmp_path / "run"
    train.main(tiny_train_args(bad_store, workdir, 4, "--config.steps_per_job=2"))
    for case_id in store_lib.read_manifest(bad_store)["cases"]:  # the data turns to NaN
        path = store_lib.image_path(bad_store, case_id)
        image = store_lib.read_array(path)
        store_lib.write_array(path, np.full_like(image, np.nan), (4.0, 4.0, 4.0))
    with pytest.raises(train.TrainingDiverged, match="NaN/Inf at step 3.*last good checkpoint is "
                                                     "step 2"):
        train.main(tiny_train_args(bad_store, workdir, 4))
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2]
    assert all(np.isfinite(x).all() for x in _params(workdir, 2))


def test_demo_closing_stages_write_evaluation_and_export(store, tmp_path):
    """A short run with validation, evaluation of held-out cases and the export, as the demo."""
    workdir = tmp_path / "demo"
    summary = train.main(tiny_train_args(
        store, workdir, 2, "--config.data.val_cases=1", "--config.eval_every=2",
        "--config.evaluation.split=val", "--config.evaluation.mip_cases=1",
        "--config.export.enabled=True", "--config.export.platforms=('cpu',)"))
    eval_dir = workdir / "eval"
    for name in ("cases.csv", "summary.json", "report.md", "report.html",
                 "figures/dice_heatmap.png", "figures/dice_vs_dose.png"):
        assert (eval_dir / name).is_file(), name
    assert list(eval_dir.glob("mip_*.png"))
    result = json.loads((eval_dir / "summary.json").read_text())
    for key in ("mean_dice", "by_organ", "by_tracer", "by_center", "by_dose_reduction_factor",
                "by_attenuation_correction", "n_cases"):
        assert key in result
    assert result["n_cases"] == 1
    assert summary["evaluation"]["mean_dice"] == result["mean_dice"]
    for name in ("model.jaxexport", "model.mlir", "meta.json"):
        assert (workdir / "export" / name).is_file(), name
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "val"}
    assert list((workdir / "tensorboard").iterdir())


def test_dry_run_reports_memory_and_flops(store, tmp_path, capsys):
    report = train.main([*tiny_train_args(store, tmp_path / "dry", 2), "--dry-run"])
    assert report["peak_gib_per_device"] > 0 and report["flops_per_step"] > 0
    assert report["patch_size"] == [16, 16, 16] and report["global_batch"] == 4
    assert not (tmp_path / "dry" / "checkpoints").exists()  # compiled, nothing run or written
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report


def test_evaluate_dose_sweep(store, tmp_path):
    from petseg_jax import evaluate

    workdir = tmp_path / "sweep"
    train.main(tiny_train_args(store, workdir, 1))
    summary = evaluate.main(["--workdir", str(workdir), "--split", "val", "--dose-sweep", "1,20",
                             "--mip-cases", "0"])
    assert (workdir / "eval" / "dose_sweep.csv").is_file()
    assert (workdir / "eval" / "figures" / "dose_sweep.png").is_file()
    assert set(summary["dose_sweep"]["details"]) == {"1", "20"}


def test_learning_bench_stops_at_budget_or_total_steps(store, tmp_path, capsys):
    """``bench learning``: one evaluation per --eval-every steps, up to total_steps, or only the
    first one when the time budget is already spent."""
    args = tiny_train_args(store, tmp_path, 4)
    args = args[:2] + args[4:]  # the benchmark keeps no workdir
    bench = [*args, "--eval-every", "2", "--cases", "val"]
    learning.main([*bench, "--budget-s", "1000"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [p["step"] for p in result["curve"]] == [2, 4]
    assert result["eval_cases"] == ["case_002"]
    assert all(0.0 <= p["mean_dice"] <= 1.0 and p["train_s"] > 0 for p in result["curve"])
    learning.main([*bench, "--budget-s", "1e-9"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [p["step"] for p in result["curve"]] == [2]
