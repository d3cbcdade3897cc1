"""Tiny stores for tests, written straight in the store format (no phantom generator, no ingest).

Import from any test (``tests/`` is on ``sys.path`` through its conftest)::

    from store_fixtures import make_tiny_store

    @pytest.fixture(scope="module")
    def tiny_store(tmp_path_factory):
        return make_tiny_store(tmp_path_factory.mktemp("store"))

Cases ``case_000 ..``: 40x32x48 voxels at 4 mm, float32 kBq/ml, a body cylinder holding one
ellipsoid per class (the first two classes a few voxels only), Poisson noise; even cases have SUV
metadata, odd ones ``suv_factor: null``; the last case has ``split: "val"``; manifest with
``class_voxels``, ``class_locations``, ``class_components`` and ``intensity`` filled.
"""

from __future__ import annotations

from pathlib import Path

from petseg_jax.bench.synthetic_store import write_synthetic_store

TINY_SHAPE = (40, 32, 48)
TINY_CLASSES = 5


def make_tiny_store(path: str | Path, *, cases: int = 3, shape: tuple[int, ...] = TINY_SHAPE,
                    num_classes: int = TINY_CLASSES, seed: int = 0,
                    image_dtype: str = "float32") -> Path:
    """Write a tiny complete store at ``path`` and return ``path``."""
    return write_synthetic_store(path, cases=cases, shape=shape, seed=seed,
                                 image_dtype=image_dtype, num_classes=num_classes)
