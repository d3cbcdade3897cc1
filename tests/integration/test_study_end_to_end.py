"""A tiny study end to end through the command line: plan, one run as a cluster task, the rest
with resume, collect, the SLURM launch script (with a stand-in sbatch) and a config mismatch."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from petseg_jax import study as study_cli
from store_fixtures import make_tiny_store
from train_helpers import REPO, tiny_train_args


def _study_overrides(store: Path) -> list[str]:
    """The tiny training runs' overrides (3 steps, evaluation on the test split), without the
    workdir and the split protocol, which the study sets per run."""
    args = tiny_train_args(store, Path("unused"), 3, "--config.evaluation.split=test",
                           "--config.evaluation.mip_cases=0")
    return [a for a in args if a.startswith("--config.")
            and not a.startswith("--config.data.split.protocol=")]


def test_tiny_study_end_to_end(tmp_path, capsys):
    store = make_tiny_store(tmp_path / "store", cases=6)
    out = tmp_path / "study"
    command = ["--config", str(REPO / "configs" / "demo.py"), "--protocols", "cross_tracer",
               "--seeds", "2", "--out", str(out), *_study_overrides(store)]

    assert study_cli.main([*command, "--plan-only"]) is None
    assert capsys.readouterr().out.strip() == "2"
    assert not (out / "cross_tracer").exists()  # planned, nothing trained

    study_cli.main(["--run-task", str(out), "0"])  # what one array job runs
    first = out / "cross_tracer" / "train_FDG" / "seed0"
    log_size = (first / "train.log").stat().st_size
    with pytest.raises(SystemExit):  # the other run is missing: named, nothing written
        study_cli.main(["--collect", str(out)])
    assert "cross_tracer/train_FDG/seed1" in capsys.readouterr().err
    assert not (out / "study.md").exists()

    summary = study_cli.main(command)  # resumes: trains seed 1 only
    assert (first / "train.log").stat().st_size == log_size
    second = out / "cross_tracer" / "train_FDG" / "seed1"
    assert json.loads((second / "config.json").read_text())["seed"] == 1
    cell = summary["protocols"]["cross_tracer"]["overall"]
    assert cell["n_seeds"] == 2 and cell["n_cases"] == 4
    assert all(0.0 <= v <= 1.0 for v in cell["seed_means"])
    for name in ("study.json", "study.md", "study.html", "figures/dice_vs_dose.png"):
        assert (out / name).is_file(), name
    assert "0.737" in (out / "study.md").read_text()

    # The SLURM launch: plan, one array job of two runs, a collect job after it.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/usr/bin/env bash\necho "$@" >> "$SBATCH_CALLS"\n'
                                 'echo 4242\n')
    (fake / "sbatch").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}",
               SBATCH_CALLS=str(tmp_path / "calls"))
    result = subprocess.run([str(REPO / "launch" / "study_slurm.sh"), *command], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0].startswith("--parsable --array=0-1 ") and calls[0].endswith(
        f"study_task.sbatch {out}")
    assert "--dependency=afterany:4242" in calls[1] and "--collect" in calls[1]

    # Another config over the same folder: refused before any training.
    with pytest.raises(SystemExit):
        study_cli.main([*command, "--config.total_steps=4"])
    assert "another config" in capsys.readouterr().err
