"""Plan a run from the dataset: spacing, patch, depth and batch sized by the compiler.

The library behind ``python -m petseg_jax.plan``. Fingerprints the store's manifest, derives the
target spacing and a ladder of candidates (patch following the median case shape, depth from the
patch, batch from 2 per device), compiles candidates of the config's exact train step to read their
memory per device from XLA, and keeps the largest that fits ``--memory-gb`` (GiB per device). Plans
are per device: ``--devices N`` multiplies the batch per device into the global
``data.batch_size``. ``plan.json`` holds the fingerprint, the chosen values, the candidates tried
and the reasons; train with ``--config.plan=plan.json``.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from petseg_jax.data import store as store_lib
from petseg_jax.planning import PlanError
from petseg_jax.planning.fingerprint import case_geometry, dataset_fingerprint
from petseg_jax.planning.heuristics import (candidate_ladder, capped_features, shapes_at_spacing,
                                            target_spacing)

log = logging.getLogger("petseg_jax.plan")

PLAN_VERSION = 1
PLAN_FILE = "plan.json"
FILL_TARGET = 0.7  # the plan should use at least this fraction of the budget
SPACING_TOLERANCE_MM = 1e-3


def _reasons(fp: dict[str, Any], spacing: list[float], spacing_reason: str,
             median_shape: list[int], result, top_of_ladder: bool, budget_gib: float,
             devices: int, feature_reason: str, platform_note: str) -> list[str]:
    """Why the plan is what it is, one sentence per decision."""
    chosen = result.chosen
    c = chosen.candidate
    fill = chosen.compiled_gib / budget_gib
    reasons = [
        f"spacing: {spacing_reason} (from the {fp['spacing_source']} spacings of "
        f"{fp['cases']} cases)",
        f"median case shape at the target spacing: {median_shape} voxels; patches keep its "
        "aspect, never exceed it, and are multiples of the network's total stride",
        f"depth: {c.n_stages} stages (total stride {c.stride}) leave the patch's shortest axis "
        f"{min(c.patch) // c.stride} voxels at the bottleneck",
        f"features: {feature_reason}",
        f"patch x batch: the largest candidate within {budget_gib:g} GiB per device after "
        f"{len(result.trials)} compiles: patch {list(c.patch)}, batch {c.batch} per device "
        f"({chosen.compiled_gib:.3f} GiB, {100 * fill:.0f}% of the budget)",
        f"devices: planned for one device; the global batch is {c.batch} x {devices} devices",
        platform_note,
    ]
    if not np.allclose(spacing, fp["store_spacing"], atol=SPACING_TOLERANCE_MM):
        reasons.append(f"the store is at {fp['store_spacing']} mm: ingest the raw data again "
                       f"at {spacing} mm (a new data.store) before training with this plan")
    if not result.converged:
        reasons.append(f"the search stopped after {len(result.trials)} compiles before "
                       "bracketing the boundary: a larger candidate may fit")
    if fill < FILL_TARGET:
        why = (f"the ladder ends at batch {c.batch} per device" if top_of_ladder
               else "the next candidate up does not fit")
        reasons.append(f"the plan fills only {100 * fill:.0f}% of the budget ({why})")
    return reasons


def make_plan(store: str | Path, memory_gb: float, config: ml_collections.ConfigDict,
              devices: int = 1, target: str = "local", max_compiles: int | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Fingerprint ``store`` and size ``config``'s step for ``memory_gb`` GiB per device.

    ``target="gpu"`` on a CPU-only machine compiles the program a GPU runs (see
    :class:`~petseg_jax.planning.memory.CompiledMemory`).

    Returns the plan (JSON-ready, with the candidate table under ``"table"``). Raises
    :class:`PlanError` when nothing fits and :class:`~petseg_jax.data.store.StoreError` on a
    missing or incomplete store.
    """
    from petseg_jax.planning import memory, search  # jax and the model: only when compiling

    if not memory_gb > 0:
        raise PlanError(f"--memory-gb must be > 0, got {memory_gb}")
    if devices < 1:
        raise PlanError(f"--devices must be >= 1, got {devices}")
    start = time.perf_counter()
    manifest = store_lib.read_manifest(store)
    schema = store_lib.manifest_schema(manifest)
    fp = dataset_fingerprint(manifest, schema)
    shapes, spacings, original, _ = case_geometry(manifest["cases"])
    spacing, spacing_reason = target_spacing(original, shapes_at_spacing(shapes, spacings,
                                                                         original))
    median_shape = np.median(shapes_at_spacing(shapes, spacings, spacing), 0).astype(int)
    ladder = candidate_ladder(median_shape)

    config = config.copy_and_resolve_references()
    base, max_features, feature_reason = capped_features(config.model.base_features,
                                                         config.model.max_features)
    config.model.base_features, config.model.max_features = base, max_features
    compiler = memory.CompiledMemory(config, schema, target)
    result = search.find_largest_fitting(
        ladder, compiler.compiled_gib, compiler.fixed_gib, memory_gb,
        max_compiles or search.MAX_COMPILES, progress)
    chosen = result.chosen
    c = chosen.candidate
    return {
        "format_version": PLAN_VERSION,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "store": str(Path(store).resolve()),
        "budget_gib_per_device": memory_gb,
        "devices": devices,
        "platform": compiler.platform,
        "target": target,
        "planning_seconds": round(time.perf_counter() - start, 1),
        "data": {"spacing": spacing, "patch_size": list(c.patch),
                 "batch_size": c.batch * devices, "batch_per_device": c.batch,
                 "median_shape": median_shape.tolist()},
        "model": {"n_stages": c.n_stages, "base_features": base, "max_features": max_features,
                  "dtype": config.model.dtype},
        "memory": {"compiled_gib_per_device": chosen.compiled_gib,
                   "fraction_of_budget": chosen.compiled_gib / memory_gb},
        "candidates": [{"patch": list(t.candidate.patch), "batch_per_device": t.candidate.batch,
                        "n_stages": t.candidate.n_stages, "predicted_gib": t.predicted_gib,
                        "compiled_gib": t.compiled_gib, "compile_seconds": t.seconds}
                       for t in result.trials],
        "reasons": _reasons(fp, spacing, spacing_reason, median_shape.tolist(), result,
                            chosen.index == len(ladder) - 1, memory_gb, devices,
                            feature_reason,
                            memory.platform_note(compiler.platform, target, config.model.dtype)),
        "table": search.format_table(result.trials, memory_gb, chosen),
        "fingerprint": fp,
    }


def read_plan(path: str | Path) -> dict[str, Any]:
    """A plan.json, checked for its version and the fields :func:`apply_plan` sets."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"plan {path} does not exist; make it with `python -m petseg_jax.plan`")
    try:
        plan = json.loads(path.read_text())
    except ValueError as err:
        raise PlanError(f"plan {path} is not valid JSON: {err}") from None
    if plan.get("format_version") != PLAN_VERSION:
        raise PlanError(f"plan {path} has format_version {plan.get('format_version')}; this "
                        f"petseg_jax reads {PLAN_VERSION}")
    for section, keys in (("data", ("spacing", "patch_size", "batch_size")),
                          ("model", ("n_stages", "base_features", "max_features"))):
        missing = [k for k in keys if k not in plan.get(section, {})]
        if missing:
            raise PlanError(f"plan {path} lacks {section}.{', '.join(missing)}")
    return plan


def _check_store_spacing(config: ml_collections.ConfigDict, spacing: Sequence[float],
                         path: Path) -> None:
    """An existing store made at another spacing would silently void the planned spacing."""
    manifest_path = Path(config.data.store) / store_lib.MANIFEST if config.data.store else None
    if manifest_path is None or not manifest_path.exists():
        return
    stored = store_lib.read_manifest(config.data.store)["spacing"]
    if not np.allclose(stored, spacing, atol=SPACING_TOLERANCE_MM):
        raise PlanError(f"plan {path} wants spacing {list(spacing)} mm but the store "
                        f"{config.data.store} holds {stored} mm: point --config.data.store at a "
                        "new folder to ingest at the planned spacing")


def apply_plan(config: ml_collections.ConfigDict, path: str | Path) -> dict[str, Any]:
    """Override ``config``'s sizes with the plan's and copy the plan into ``config.workdir``."""
    path = Path(path)
    plan = read_plan(path)
    data, model = plan["data"], plan["model"]
    _check_store_spacing(config, data["spacing"], path)
    config.data.spacing = tuple(float(s) for s in data["spacing"])
    config.data.patch_size = tuple(int(p) for p in data["patch_size"])
    config.data.batch_size = int(data["batch_size"])
    for key in ("n_stages", "base_features", "max_features"):
        config.model[key] = int(model[key])
    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / PLAN_FILE).exists() or not (workdir / PLAN_FILE).samefile(path):
        tmp = workdir / (PLAN_FILE + ".tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(workdir / PLAN_FILE)
    log.info("plan %s: patch %s, batch %d, %d stages, spacing %s mm", path,
             config.data.patch_size, config.data.batch_size, config.model.n_stages,
             config.data.spacing)
    import jax  # the run's devices (initialized by now in training)

    if jax.device_count() != plan.get("devices", 1):
        log.warning("plan %s was made for %s devices and this run has %d: the batch per device "
                    "is no longer the planned one; plan again with --devices %d", path,
                    plan.get("devices", 1), jax.device_count(), jax.device_count())
    return plan
