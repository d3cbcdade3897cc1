"""`python -m petseg_jax.plan`: compiled candidates on a tiny store with a tiny U-Net."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from store_fixtures import make_tiny_store

from configs import default
from petseg_jax import plan as plan_lib
from petseg_jax.data import store as store_lib
from petseg_jax.planning import PlanError
from petseg_jax.training import mesh as mesh_lib
from petseg_jax.training.builder import build_training

TINY = ["--config.model.base_features=4", "--config.model.max_features=16",
        "--config.model.dtype=float32", "--config.total_steps=10"]
BUDGETS_GIB = (0.15, 0.3, 0.6)  # tiny U-Net on 40x32x48 cases: patch growth, then batch


def tiny_config():
    config = default.get_config()
    config.model.base_features, config.model.max_features = 4, 16
    config.model.dtype = "float32"
    config.total_steps = 10
    return config


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
        rc = plan_lib.main(["--store", str(store), "--memory-gb", str(budget), "--devices", "2",
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
    config.data.batch_size = plans[0]["data"]["batch_per_device"] * jax.device_count()
    schema = store_lib.manifest_schema(store_lib.read_manifest(plans[0]["store"]))
    training = build_training(config, schema, mesh_lib.make_mesh(config.mesh))
    state = training.init_state(config.seed)
    rng = np.random.default_rng(0)
    shape = (config.data.batch_size, *config.data.patch_size)
    batch = {"image": jnp.asarray(rng.random(shape + (1,), np.float32)),
             "label": jnp.asarray(rng.integers(0, schema.num_classes, shape, np.uint8))}
    batch = jax.device_put(batch, training.batch_sharding)
    state, metrics = training.train_step(state, batch)
    assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))


def test_too_small_budget_is_a_clear_error(store, tmp_path, capsys):
    out = tmp_path / "plan.json"
    rc = plan_lib.main(["--store", str(store), "--memory-gb", "0.001", "--out", str(out), *TINY])
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
    rc = plan_lib.main(["--store", str(tmp_path / "nope"), "--memory-gb", "1", *TINY])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
