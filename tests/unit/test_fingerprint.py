"""Dataset fingerprint from the manifest, checked against the stored voxels themselves."""

import json

import numpy as np
import pytest
from store_fixtures import TINY_CLASSES, TINY_SHAPE, make_tiny_store

from petseg_jax.data import store as store_lib
from petseg_jax.planning import PlanError
from petseg_jax.planning.fingerprint import case_geometry, dataset_fingerprint

STORE_SPACING = 4.0  # the tiny store's spacing
# Known acquisition spacings, written into the manifest as ``original_spacing``.
ORIGINAL = [[2.0, 2.0, 3.0], [4.0, 4.0, 5.0], [3.0, 3.0, 4.0], [2.5, 2.5, 2.0], [2.0, 2.0, 6.0],
            [5.0, 5.0, 1.0]]  # 6 cases: two per tracer for the first tracer


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("fp_store"), cases=len(ORIGINAL))


@pytest.fixture(scope="module")
def manifest(store):
    return store_lib.read_manifest(store)


def _with_original(manifest):
    out = json.loads(json.dumps(manifest))
    for entry, spacing in zip(out["cases"].values(), ORIGINAL):
        entry["original_spacing"] = spacing
    return out


def test_spacing_and_shape_without_original_spacing(manifest):
    fp = dataset_fingerprint(manifest, store_lib.manifest_schema(manifest))
    assert fp["cases"] == len(ORIGINAL)
    assert fp["spacing_source"] == "store"
    assert fp["store_spacing"] == [STORE_SPACING] * 3
    assert fp["spacing"]["median"] == [STORE_SPACING] * 3
    assert fp["shape"]["median"] == list(TINY_SHAPE)
    assert fp["extent_mm"]["max"] == [s * STORE_SPACING for s in TINY_SHAPE]


def test_spacing_distribution_from_original_spacing(manifest):
    fp = dataset_fingerprint(_with_original(manifest), store_lib.manifest_schema(manifest))
    known = np.array(ORIGINAL)
    assert fp["spacing_source"] == "original_spacing"
    np.testing.assert_allclose(fp["spacing"]["median"], [2.75, 2.75, 3.5])
    np.testing.assert_allclose(fp["spacing"]["min"], known.min(0))
    np.testing.assert_allclose(fp["spacing"]["max"], known.max(0))
    np.testing.assert_allclose(fp["spacing"]["p10"], np.percentile(known, 10, 0))


def test_class_sizes_match_the_label_arrays(store, manifest):
    schema = store_lib.manifest_schema(manifest)
    fp = dataset_fingerprint(manifest, schema)
    counts = np.stack([np.bincount(store_lib.read_array(store_lib.label_path(store, c)).ravel(),
                                   minlength=schema.num_classes) for c in manifest["cases"]])
    voxel_ml = STORE_SPACING**3 / 1000
    for label_id in schema.foreground_ids:
        entry = fp["classes"][schema.name_of(label_id)]
        present = counts[:, label_id] > 0
        assert entry["cases"] == int(present.sum())
        if label_id <= TINY_CLASSES:  # the tiny store draws the first classes of the schema
            assert present.all()
            assert entry["median_voxels"] == pytest.approx(np.median(counts[:, label_id]))
            assert entry["median_ml"] == pytest.approx(np.median(counts[:, label_id]) * voxel_ml)
        else:
            assert "median_voxels" not in entry


def test_intensity_percentiles_per_tracer_match_the_images(store, manifest):
    fp = dataset_fingerprint(manifest, store_lib.manifest_schema(manifest))
    by_tracer: dict[str, list[str]] = {}
    for case_id, entry in manifest["cases"].items():
        by_tracer.setdefault(entry["metadata"]["tracer"], []).append(case_id)
    assert sorted(fp["intensity"]) == sorted(by_tracer)
    for tracer, case_ids in by_tracer.items():
        images = [store_lib.read_array(store_lib.image_path(store, c)) for c in case_ids]
        stats = fp["intensity"][tracer]
        assert stats["cases"] == len(case_ids)
        for q in (0.5, 50, 99.5):
            expected = np.median([np.percentile(im, q) for im in images])
            assert stats[f"p{q:g}"] == pytest.approx(expected, rel=1e-5)
        suv = [np.percentile(im, 99.5) * manifest["cases"][c]["suv_factor"]
               for im, c in zip(images, case_ids) if manifest["cases"][c]["suv_factor"]]
        assert stats["cases_with_suv"] == len(suv)
        if suv:
            assert stats["suv_p99.5"] == pytest.approx(np.median(suv), rel=1e-5)


@pytest.mark.parametrize("key, value", [("shape", [40, 32]), ("spacing", [4.0, 0.0, 4.0]),
                                        ("spacing", None)])
def test_bad_manifest_entry_names_the_case(manifest, key, value):
    broken = json.loads(json.dumps(manifest))
    case_id = sorted(broken["cases"])[1]
    broken["cases"][case_id][key] = value
    with pytest.raises(PlanError, match=f"case {case_id}: manifest '{key}'"):
        case_geometry(broken["cases"])


def test_empty_manifest_is_an_error():
    with pytest.raises(PlanError, match="no case"):
        case_geometry({})
