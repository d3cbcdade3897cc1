"""Make sure a training run has its store: ingest the raw folder, or generate phantoms first."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from petseg_jax.data import store as store_lib

log = logging.getLogger(__name__)


def ensure_store(data_cfg: Mapping[str, Any], seed: int = 0) -> Path:
    """Return the store path, creating it when missing (process 0 only calls this).

    Order: an existing complete store is used as is; else the raw folder is ingested; else, when
    ``data.phantom.enabled``, a phantom raw folder is generated and ingested.
    """
    store = Path(data_cfg["store"])
    if not str(data_cfg["store"]):
        raise ValueError("config.data.store is empty: say where the preprocessed store lives")
    if (store / store_lib.MANIFEST).exists():
        return store
    raw = Path(data_cfg["raw_dir"]) if data_cfg["raw_dir"] else None
    if raw is None or not (raw / "dataset.json").exists():
        phantom = data_cfg["phantom"]
        if not phantom["enabled"]:
            raise FileNotFoundError(
                f"no store at {store} and no raw dataset at {raw or '(data.raw_dir unset)'}; "
                "point --config.data.raw_dir at an nnU-Net-style raw folder")
        if raw is None:
            raise ValueError("data.phantom.enabled needs data.raw_dir to write the phantoms to")
        from petseg_jax.phantom import generate as phantom_lib

        log.info("generating %d phantom cases into %s", phantom["cases"], raw)
        t0 = time.perf_counter()
        status = phantom_lib.main([
            "--out", str(raw), "--cases", str(phantom["cases"]), "--seed", str(phantom["seed"]),
            "--spacing", str(phantom["spacing"]), "--test-fraction", str(phantom["test_fraction"]),
            "--overwrite", "--workers", str(max(1, min(os.cpu_count() or 1, phantom["cases"])))])
        if status:
            raise RuntimeError(f"phantom generation into {raw} failed (exit status {status})")
        log.info("phantom generation took %.0f s", time.perf_counter() - t0)
    from petseg_jax.data import ingest as ingest_lib

    spacing = tuple(data_cfg["spacing"]) or None
    log.info("ingesting %s into %s", raw, store)
    t0 = time.perf_counter()
    ingest_lib.ingest(raw, store, spacing=spacing, dtype=data_cfg["image_dtype"])
    log.info("ingest took %.0f s", time.perf_counter() - t0)
    return store
