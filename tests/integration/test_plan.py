"""`python -m petseg_jax.plan`: compiled candidates on a tiny store with a tiny U-Net."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from store_fixtures import make_tiny_store

from petseg_jax import plan as plan_cmd
from petseg_jax.planning import plan as plan_lib
from petseg_jax.configuration import load_config
from petseg_jax.data import store as store_lib
from petseg_jax.planning import PlanError
from petseg_jax.planning.memory import CPU_COMPILE_OPTIONS
from petseg_jax.training import mesh as mesh_lib
from petseg_jax.training.builder import build_training

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.py"
AUGMENT_OFF = ("rotation", "scale", "noise", "blur", "brightness", "contrast", "lowres",
               "gamma_invert", "gamma", "mirror")
# A tiny float32 U-Net without augmentation or deep supervision: a small graph compiles fast.
TINY = ["--config.model.base_features=4", "--config.model.max_features=16",
        "--config.model.dtype=float32", "--config.model.blocks_per_stage=1",
        "--config.model.decoder_blocks=1", "--config.model.deep_supervision=False",
        "--config.total_steps=10", *(f"--config.augment.p_{op}=0" for op in AUGMENT_OFF)]
BUDGETS_GIB = (0.04, 0.15, 0.4)  # on 40x32x48 cases: patch growth, then batch growth


def tiny_config():
    """The config the CLI plans with ``TINY``."""
    return load_config(DEFAULT_CONFIG, TINY)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("plan_store"))


@pytest.fixture(scope="module")
def plans(store, tmp_path_factory):
    """One plan per budget through the CLI (plan.json files), smallest budget first."""
    out = tmp_path_factory.mktemp("plans")
    result = []
    for budget in BUDGETS_GIB:
        path = out / f"plan_{budget}.json"
        rc = plan_cmd.main(["--store", str(store), "--memory-gb", str(budget), "--devices", "2",
                            "--out", str(path), *TINY])
        assert rc == 0
        result.append(json.loads(path.read_text()))
    return result


def test_plan_fills_the_budget(plans, store):
    for budget, plan in zip(BUDGETS_GIB, plans):
        used = plan["memory"]["compiled_gib_per_device"]
        assert plan_lib.FILL_TARGET * budget <= used <= budget, plan["table"]
        data, model = plan["data"], plan["model"]
        stride = 2 ** (model["n_stages"] - 1)
        assert all(p % stride == 0 for p in data["patch_size"])
        assert data["batch_per_device"] >= 2
        assert data["batch_size"] == 2 * data["batch_per_device"]  # --devices 2
        assert data["spacing"] == store_lib.read_manifest(store)["spacing"]
        assert plan["fingerprint"]["cases"] == 3
        assert any("bottleneck" in r for r in plan["reasons"])
        compiled = [c for c in plan["candidates"] if c["compiled_gib"] <= budget]
        assert max(c["compiled_gib"] for c in compiled) == used


def test_larger_budget_never_plans_less(plans):
    sizes = [np.prod(p["data"]["patch_size"]) * p["data"]["batch_per_device"] for p in plans]
    assert all(b >= a for a, b in zip(sizes, sizes[1:])), sizes
    assert sizes[-1] > sizes[0]


def test_planned_config_trains_a_step(plans, tmp_path):
    config = tiny_config()
    config.workdir = str(tmp_path / "run" / "nested")  # does not exist yet
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plans[0]))
    plan_lib.apply_plan(config, path)
    assert json.loads((tmp_path / "run" / "nested" / "plan.json").read_text()) == plans[0]
    assert list(config.data.patch_size) == plans[0]["data"]["patch_size"]
    assert config.model.n_stages == plans[0]["model"]["n_stages"]
    assert config.data.batch_size == plans[0]["data"]["batch_size"]
    config.data.batch_size = plans[0]["data"]["batch_per_device"] * jax.device_count()
    schema = store_lib.manifest_schema(store_lib.read_manifest(plans[0]["store"]))
    training = build_training(config, schema, mesh_lib.make_mesh(config.mesh))
    # The planner's compile options: the plan's own compile is reused from JAX's cache.
    step = training.train_step.lower(training.abstract_sharded_state(),
                                     training.batch_spec).compile(CPU_COMPILE_OPTIONS)
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), training.abstract_state)
    state["params"] = jax.tree.map(lambda a: rng.normal(0, 0.2, a.shape).astype(a.dtype),
                                   training.abstract_state["params"])
    shape = (config.data.batch_size, *config.data.patch_size)
    batch = {"image": rng.random(shape + (1,), np.float32),
             "label": rng.integers(0, schema.num_classes, shape).astype(np.uint8)}
    state, metrics = step(jax.device_put(state, training.state_sharding),
                          jax.device_put(batch, training.batch_sharding))
    assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    assert int(state["step"]) == 1


def test_too_small_budget_is_a_clear_error(store, tmp_path, capsys):
    out = tmp_path / "plan.json"
    rc = plan_cmd.main(["--store", str(store), "--memory-gb", "0.001", "--out", str(out), *TINY])
    assert rc == 1 and not out.exists()
    err = capsys.readouterr().err
    assert "smallest candidate" in err and "raise --memory-gb" in err


def test_apply_plan_rejects_a_store_at_another_spacing(plans, store, tmp_path):
    plan = json.loads(json.dumps(plans[0]))
    plan["data"]["spacing"] = [2.0, 2.0, 2.0]  # the tiny store is at 4 mm
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    config = tiny_config()
    config.data.store, config.workdir = str(store), str(tmp_path / "w")
    with pytest.raises(PlanError, match="new folder to ingest"):
        plan_lib.apply_plan(config, path)


def test_missing_store_is_a_clear_error(tmp_path, capsys):
    rc = plan_cmd.main(["--store", str(tmp_path / "nope"), "--memory-gb", "1", *TINY])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
