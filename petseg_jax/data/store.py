"""The preprocessed dataset store: TensorStore zarr3 arrays plus one JSON manifest.

Layout (written by :mod:`petseg_jax.data.ingest`)::

    STORE/
      manifest.json          # written last, atomically: a store without it is incomplete
      images/<case_id>/      # zarr3, (X, Y, Z), RAS, float32 or float16, raw PET units
      labels/<case_id>/      # zarr3, (X, Y, Z), uint8 schema ids
      noise/<case_id>/       # zarr3, (X, Y, Z, 2), float32: full-dose noise variance (image
                             # units^2) and the noise texture's coarse fraction
      .ingest/               # ingest's per-case completion markers (resume after interruption)

Arrays are sharded (``sharding_indexed``) with small inner chunks so that a patch read touches
few bytes; the voxel spacing is recorded in the arrays' ``dimension_units`` (e.g. ``"2.0 mm"``).

``manifest.json`` holds::

    {"format_version": 1, "schema": {"labels": {...}, "left_right_pairs": [...]},
     "spacing": [sx, sy, sz], "image_dtype": "float32",
     "cases": {case_id: {"shape": [...], "spacing": [...], "affine": 4x4,
                         "metadata": {tracer, center, dose_reduction_factor,
                                      attenuation_corrected, split?, patient_weight_kg?,
                                      injected_activity_bq?, units?},
                         "suv_factor": float | null,        # SUV = image * suv_factor
                         "class_voxels": {"<id>": n},
                         "class_locations": {"<id>": [[x, y, z], ...]},  # a sample
                         "intensity": {"p0.5", "p50", "p99.5", "mean", "std"},
                         "noise": {"scale": s, "texture": {psf_fwhm_mm, post_fwhm_mm,
                                   spacing} | null}}}}

The noise maps and entry are the dose model's (:mod:`petseg_jax.physics.noise`): the variance of
the stored image's noise at full dose, its texture's coarse fraction, and its texture (null:
independent voxels).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from petseg_jax.data.schema import LabelSchema
from petseg_jax.resources import write_json_atomic  # noqa: F401  (store's callers import it here)

FORMAT_VERSION = 4  # 2: noise maps (session 5); 3: per-setting textures (session 6); 4: refit (7)
MANIFEST = "manifest.json"
IMAGES = "images"
LABELS = "labels"
NOISE = "noise"
DEFAULT_INNER_CHUNK = 32
DEFAULT_SHARD = 256


class StoreError(RuntimeError):
    """A store that is missing, incomplete or of an unknown format."""


def array_spec(path: str | Path) -> dict[str, Any]:
    """TensorStore spec of one zarr3 array on the local file system."""
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}


def _chunking(shape: Sequence[int], inner: int, shard: int) -> tuple[list[int], list[int]]:
    inner_shape = [min(inner, s) for s in shape]
    # A shard holds a whole number of inner chunks.
    shard_shape = [min(-(-s // i) * i, max(i, shard // i * i)) for s, i in zip(shape, inner_shape)]
    return inner_shape, shard_shape


def write_array(path: str | Path, data: np.ndarray, spacing: Sequence[float],
                inner_chunk: int = DEFAULT_INNER_CHUNK, shard: int = DEFAULT_SHARD) -> None:
    """Write ``data`` as a sharded zarr3 array (replacing any array at ``path``); a 4th axis is
    a channel axis (no spacing)."""
    channels = data.ndim - len(spacing)
    inner_shape, shard_shape = _chunking(data.shape, inner_chunk, shard)
    spec = array_spec(path) | {
        "metadata": {
            "shape": list(data.shape),
            "data_type": np.dtype(data.dtype).name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": shard_shape}},
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": inner_shape,
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                           {"name": "zstd", "configuration": {"level": 3}}],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                 {"name": "crc32c"}],
            }}],
            "dimension_names": ["x", "y", "z"] + ["channel"] * channels,
            "fill_value": 0,
        },
        "schema": {"dimension_units": [[float(s), "mm"] for s in spacing] + [None] * channels},
        "create": True,
        "delete_existing": True,
    }
    ts.open(spec).result().write(data).result()


def open_array(path: str | Path) -> ts.TensorStore:
    """Open a zarr3 array read-only (synchronously). Call per process: not fork-safe."""
    return ts.open(array_spec(path) | {"open": True}, read=True).result()


def array_spacing(arr: ts.TensorStore) -> tuple[float, ...]:
    """Voxel spacing in mm, read from the array's dimension units."""
    return tuple(float(u.multiplier) for u in arr.dimension_units)


def read_array(path: str | Path) -> np.ndarray:
    return open_array(path).read().result()


def image_path(store: str | Path, case_id: str) -> Path:
    return Path(store) / IMAGES / case_id


def label_path(store: str | Path, case_id: str) -> Path:
    return Path(store) / LABELS / case_id


def noise_path(store: str | Path, case_id: str) -> Path:
    """The case's full-dose noise variance map."""
    return Path(store) / NOISE / case_id


def read_manifest(store: str | Path) -> dict[str, Any]:
    """The store's manifest; a clear error when the store is missing or incomplete."""
    path = Path(store) / MANIFEST
    if not Path(store).exists():
        raise StoreError(f"store {store} does not exist; create it with petseg_jax.data.ingest")
    if not path.exists():
        raise StoreError(f"store {store} is incomplete (no {MANIFEST}); rerun "
                         "`python -m petseg_jax.data.ingest` to finish it")
    manifest = json.loads(path.read_text())
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise StoreError(f"store {store} has format_version {version}; this petseg_jax reads "
                         f"{FORMAT_VERSION}: ingest the raw folder again (python -m "
                         "petseg_jax.data.ingest)")
    return manifest


def manifest_schema(manifest: dict[str, Any]) -> LabelSchema:
    return LabelSchema.from_json(manifest["schema"])
