"""Ingest: raw NIfTI dataset -> zarr3 store (round trip, bad input, resume, CLI)."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
import tensorstore as ts

from petseg_jax.phantom import generate as phantom
from petseg_jax.data import store as store_lib
from petseg_jax.data.ingest import IngestError, ingest, main
from petseg_jax.data.raw_dataset import (CaseMetadata, RawDataset, image_file, label_file,
                                         save_nifti, write_dataset_json, write_metadata_csv)
from petseg_jax.data.schema import DEFAULT_SCHEMA

GRADIENT = np.array([0.3, -0.2, 0.5])
OFFSET = 50.0
# organ -> (world centre mm, half size mm) of a box label
ORGANS = {"liver": ((-8.0, 0.0, 0.0), 6.0), "spleen": ((10.0, 4.0, 3.0), 5.0),
          "kidney_left": ((6.0, -7.0, -6.0), 4.0)}


def _affine(flips, spacing, centre_mm, shape, tilt=0.0):
    """Affine with axis directions ``flips`` (+1/-1), a tilt about z, centred on ``centre_mm``."""
    c, s = np.cos(tilt), np.sin(tilt)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(
        np.multiply(flips, spacing))
    aff[:3, 3] = np.asarray(centre_mm) - aff[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return aff


# case -> (affine, shape, image saved as a single-frame 4-D file)
GEOMETRY = {
    "c01": (_affine((1, 1, 1), (2.0, 2.0, 3.0), (0, 0, 0), (22, 18, 12)), (22, 18, 12), False),
    "c02": (_affine((-1, -1, 1), (2.5, 2.0, 2.0), (1, -1, 0), (16, 20, 18), tilt=0.2),
            (16, 20, 18), False),
    "c03": (_affine((-1, 1, 1), (3.0, 3.0, 2.0), (0, 1, -1), (14, 13, 16)), (14, 13, 16), True),
}
MEDIAN_SPACING = [2.5, 2.0, 2.0]


def _world(shape, affine):
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _field(shape, affine):
    """Image = a linear function of world position (linear resampling reproduces it)."""
    return (_world(shape, affine) @ GRADIENT + OFFSET).astype(np.float32)


def _labels(shape, affine):
    world = _world(shape, affine)
    labels = np.zeros(shape, np.uint8)
    for name, (centre, half) in ORGANS.items():
        labels[np.all(np.abs(world - centre) <= half, axis=-1)] = DEFAULT_SCHEMA.id_of(name)
    return labels


def _metadata(case_id):
    suv = dict(patient_weight_kg=70.0, injected_activity_bq=3.0e8, units="Bq/ml")
    return CaseMetadata(case_id, "FDG" if case_id != "c02" else "PSMA", f"center{case_id[-1]}",
                        dose_reduction_factor=1.0 if case_id != "c03" else 10.0,
                        attenuation_corrected=case_id != "c03", split="train",
                        **(suv if case_id == "c01" else {}))


def _write_case(raw, case_id, affine, shape, four_d=False):
    image = _field(shape, affine)
    save_nifti(image_file(raw, case_id), image[..., None] if four_d else image, affine)
    save_nifti(label_file(raw, case_id), _labels(shape, affine), affine)


def _write_index(raw, case_ids, extra_csv_line=None):
    write_dataset_json(raw, DEFAULT_SCHEMA, len(list((raw / "imagesTr").glob("*.nii.gz"))))
    write_metadata_csv(raw, [_metadata(c) for c in case_ids])
    if extra_csv_line:
        with open(raw / "metadata.csv", "a") as f:
            f.write(extra_csv_line + "\n")


def make_raw(raw, case_ids=tuple(GEOMETRY)):
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for c in case_ids:
        _write_case(raw, c, *GEOMETRY[c])
    _write_index(raw, case_ids)
    return raw


def _open(path):
    """Plain TensorStore, no project code."""
    return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}},
                   read=True).result()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_raw(tmp_path_factory.mktemp("raw") / "raw")


@pytest.fixture(scope="module")
def ingested(raw, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "store"
    manifest = ingest(raw, store, workers=2, progress=False)  # spawn pool, median spacing
    return store, manifest


# ---- round trip --------------------------------------------------------------------------------

def test_round_trip_equals_canonical_resampled_input(ingested):
    store, manifest = ingested
    assert manifest["spacing"] == MEDIAN_SPACING
    assert set(manifest["cases"]) == set(GEOMETRY)
    for case_id, case in manifest["cases"].items():
        affine = np.array(case["affine"])
        assert nib.aff2axcodes(affine) == ("R", "A", "S")
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), MEDIAN_SPACING)
        image_arr = _open(store / "images" / case_id)
        label_arr = _open(store / "labels" / case_id)
        for arr in (image_arr, label_arr):
            assert list(arr.shape) == case["shape"]
            assert [(u.multiplier, u.base_unit) for u in arr.dimension_units] == [
                (s, "mm") for s in MEDIAN_SPACING]
        image = image_arr.read().result()
        labels = label_arr.read().result()
        assert image.dtype == np.float32 and labels.dtype == np.uint8
        # Intensities are the world field at the stored voxel centres (interior: no edge clamp).
        np.testing.assert_allclose(image[1:-1, 1:-1, 1:-1],
                                   _field(image.shape, affine)[1:-1, 1:-1, 1:-1], atol=1e-3)
        world = _world(labels.shape, affine)
        for name, (centre, _) in ORGANS.items():
            mask = labels == DEFAULT_SCHEMA.id_of(name)
            assert mask.any(), (case_id, name)
            np.testing.assert_allclose(world[mask].mean(0), centre, atol=2.0)
        assert set(np.unique(labels)) == {0} | {DEFAULT_SCHEMA.id_of(n) for n in ORGANS}


def test_native_spacing_is_an_exact_canonical_copy(tmp_path):
    raw = make_raw(tmp_path / "raw", ("c02",))  # LPS, tilted: to_ras flips x and y
    manifest = ingest(raw, tmp_path / "store", workers=1, progress=False)
    canonical = nib.as_closest_canonical(nib.load(str(image_file(raw, "c02"))))
    canonical_labels = nib.as_closest_canonical(nib.load(str(label_file(raw, "c02"))))
    np.testing.assert_allclose(manifest["cases"]["c02"]["affine"], canonical.affine, atol=1e-5)
    np.testing.assert_array_equal(_open(tmp_path / "store/images/c02").read().result(),
                                  canonical.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(_open(tmp_path / "store/labels/c02").read().result(),
                                  np.asanyarray(canonical_labels.dataobj))


def test_manifest_fields(ingested, raw):
    store, manifest = ingested
    assert manifest == json.loads((store / "manifest.json").read_text())
    assert manifest["format_version"] == store_lib.FORMAT_VERSION
    assert manifest["schema"] == DEFAULT_SCHEMA.to_json()
    assert manifest["image_dtype"] == "float32"
    dataset = RawDataset(raw)
    for case_id, case in manifest["cases"].items():
        meta = dataset.metadata(case_id)
        assert case["metadata"] == meta.to_json()
        assert case["suv_factor"] == meta.suv_factor()
        labels = _open(store / "labels" / case_id).read().result()
        image = _open(store / "images" / case_id).read().result()
        counts = np.bincount(labels.ravel(), minlength=DEFAULT_SCHEMA.num_classes)
        assert case["class_voxels"] == {str(i): int(n) for i, n in enumerate(counts)}
        assert set(case["class_locations"]) == {str(i) for i in np.unique(labels) if i}
        for label_id, locations in case["class_locations"].items():
            assert len(locations) == min(200, counts[int(label_id)])
            assert len({tuple(p) for p in locations}) == len(locations)
            assert all(labels[tuple(p)] == int(label_id) for p in locations)
        for label_id, n in case["class_components"].items():
            assert n == ndimage.label(labels == int(label_id), np.ones((3, 3, 3)))[1] >= 1
        assert set(case["class_components"]) == set(case["class_locations"])
        assert case["intensity"]["p50"] == pytest.approx(np.percentile(image, 50), rel=1e-5)
        assert case["intensity"]["p99.5"] == pytest.approx(np.percentile(image, 99.5), rel=1e-5)
    assert manifest["cases"]["c01"]["suv_factor"] == pytest.approx(70.0 * 1000 / 3.0e8)
    assert manifest["cases"]["c02"]["suv_factor"] is None


# ---- bad input ---------------------------------------------------------------------------------

def _bad_case(raw, problem):
    """Add case ``bad`` with one problem to a raw folder holding c01, c02."""
    aff, shape, _ = GEOMETRY["c01"]
    image, labels = _field(shape, aff), _labels(shape, aff)
    label_aff, extra_line = aff, None
    if problem == "frames":
        image = np.stack([image, image], -1)
    elif problem == "shape":
        labels = labels[:-2]
    elif problem == "affine":
        label_aff = aff.copy()
        label_aff[0, 3] += 2.0
    elif problem == "label_value":
        labels[0, 0, 0] = 99
    elif problem == "nan":
        image[3, 4, 5] = np.nan
    elif problem == "inf":
        image[3, 4, 5] = -np.inf
    save_nifti(image_file(raw, "bad"), image, aff)
    save_nifti(label_file(raw, "bad"), labels, label_aff)
    if problem == "unreadable":
        image_file(raw, "bad").write_bytes(b"\x1f\x8b not really gzip")
    elif problem == "missing_label":
        label_file(raw, "bad").unlink()
    if problem == "unknown_tracer":
        extra_line = "bad,XYZ-123,centerA,1,true,,,,"
    elif problem != "no_metadata_row":
        extra_line = "bad,FDG,centerA,1,true,,,,"
    _write_index(raw, ["c01", "c02"], extra_line)


BAD = {"unreadable": "unreadable", "frames": "one frame", "shape": "label shape",
       "affine": "affines differ", "label_value": "not in the schema", "nan": "NaN",
       "inf": "infinite", "no_metadata_row": "no row", "unknown_tracer": "unknown tracer",
       "missing_label": "does not exist"}


@pytest.fixture(scope="module")
def good_raw(tmp_path_factory):
    return make_raw(tmp_path_factory.mktemp("good") / "raw", ("c01", "c02"))


@pytest.mark.parametrize("problem", sorted(BAD))
def test_bad_input_fails_or_is_skipped(problem, good_raw, tmp_path, caplog):
    raw = tmp_path / "raw"
    shutil.copytree(good_raw, raw)
    _bad_case(raw, problem)
    store = tmp_path / "store"
    args = dict(spacing=(4.0, 4.0, 4.0), workers=1, progress=False)
    with pytest.raises(IngestError) as err:
        ingest(raw, store, **args)
    message = str(err.value)
    assert "case bad" in message and BAD[problem] in message, message
    assert "c01" not in message and "c02" not in message
    assert not (store / "manifest.json").exists()
    manifest = ingest(raw, store, skip_invalid=True, **args)
    assert set(manifest["cases"]) == {"c01", "c02"}
    assert BAD[problem] in caplog.text and "case bad" in caplog.text
    assert not (store / "images" / "bad").exists() and not (store / "labels" / "bad").exists()


def test_float16_overflow_is_reported(tmp_path):
    raw = make_raw(tmp_path / "raw", ("c01",))
    aff, shape, _ = GEOMETRY["c01"]
    save_nifti(image_file(raw, "c01"), _field(shape, aff) * 2000, aff)  # up to ~1e5 > 65504
    with pytest.raises(IngestError, match="case c01: .*overflow float16"):
        ingest(raw, tmp_path / "store", dtype="float16", workers=1, progress=False)


# ---- resume, rebuild ---------------------------------------------------------------------------

def _mtimes(store):
    return {p.relative_to(store).as_posix(): p.stat().st_mtime_ns
            for p in store.rglob("*") if p.is_file()}


def _arrays(store, case_ids):
    return {(kind, c): _open(store / kind / c).read().result()
            for kind in ("images", "labels") for c in case_ids}


def test_interrupted_ingest_resumes_identically(ingested, raw, tmp_path):
    store, manifest = ingested
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    before = _arrays(copy, GEOMETRY)
    (copy / "manifest.json").unlink()
    (copy / ".ingest" / "c02.json").unlink()
    shutil.rmtree(copy / "images" / "c02")  # as if killed while writing c02
    stamps = _mtimes(copy)
    assert ingest(raw, copy, workers=1, progress=False) == manifest
    assert json.loads((copy / "manifest.json").read_text()) == manifest
    after = _arrays(copy, GEOMETRY)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    now = _mtimes(copy)
    assert all(now[p] == t for p, t in stamps.items() if "c01" in p or "c03" in p)
    assert now[".ingest/c02.json"] and "images/c02/zarr.json" in now


def test_changed_inputs_and_options(raw, ingested, tmp_path):
    store, _ = ingested
    raw_copy, copy = tmp_path / "raw", tmp_path / "store"
    shutil.copytree(raw, raw_copy)
    shutil.copytree(store, copy)
    stamps = _mtimes(copy)
    # A touched input is redone; a case gone from the raw folder is dropped.
    os.utime(image_file(raw_copy, "c01"), ns=(1, 1))
    image_file(raw_copy, "c03").unlink()
    label_file(raw_copy, "c03").unlink()
    _write_index(raw_copy, ["c01", "c02"])
    manifest = ingest(raw_copy, copy, spacing=MEDIAN_SPACING, workers=1, progress=False)
    assert set(manifest["cases"]) == {"c01", "c02"}
    now = _mtimes(copy)
    assert now[".ingest/c01.json"] != stamps[".ingest/c01.json"]
    assert now[".ingest/c02.json"] == stamps[".ingest/c02.json"]
    assert not any("c03" in p for p in now)
    # Other options: the whole store is rebuilt.
    manifest = ingest(raw_copy, copy, spacing=(4.0, 4.0, 4.0), workers=1, progress=False)
    assert manifest["spacing"] == [4.0, 4.0, 4.0]
    for c in ("c01", "c02"):
        assert [u.multiplier for u in _open(copy / "images" / c).dimension_units] == [4.0] * 3
        assert _mtimes(copy)[f".ingest/{c}.json"] != now[f".ingest/{c}.json"]


# ---- CLI ---------------------------------------------------------------------------------------

def test_cli_float16_and_exit_codes(good_raw, tmp_path, capsys):
    store = tmp_path / "store"
    rc = main(["--raw", str(good_raw), "--out", str(store), "--spacing", "4", "4", "4",
               "--dtype", "float16", "--workers", "1", "--locations-per-class", "5"])
    assert rc == 0
    assert "ingested 2 cases" in capsys.readouterr().out
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["image_dtype"] == "float16"
    assert _open(store / "images" / "c01").dtype == ts.float16
    assert all(len(v) <= 5 for c in manifest["cases"].values()
               for v in c["class_locations"].values())
    raw = tmp_path / "raw"
    shutil.copytree(good_raw, raw)
    _bad_case(raw, "nan")
    args = ["--raw", str(raw), "--out", str(tmp_path / "s2"), "--workers", "1"]
    assert main(args) == 1
    assert "case bad" in capsys.readouterr().err
    assert main(args + ["--skip-invalid"]) == 0
    with pytest.raises(SystemExit) as usage:
        main(["--raw", str(raw)])
    assert usage.value.code == 2


def test_cli_module_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "petseg_jax.data.ingest", "--raw",
                           str(tmp_path / "nowhere"), "--out", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "nowhere" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "store").exists()



def test_phantom_dataset_end_to_end(tmp_path):
    raw, store = tmp_path / "raw", tmp_path / "store"
    assert phantom.main(["--out", str(raw), "--cases", "2", "--seed", "3", "--spacing", "8",
                         "--fields-of-view", "conventional", "long_axial"]) == 0
    assert main(["--raw", str(raw), "--out", str(store), "--workers", "1"]) == 0
    manifest = json.loads((store / "manifest.json").read_text())
    dataset = RawDataset(raw)
    assert sorted(manifest["cases"]) == dataset.case_ids()
    assert manifest["spacing"] == [8.0, 8.0, 8.0]
    for case_id, case in manifest["cases"].items():
        source = nib.as_closest_canonical(nib.load(str(dataset.label_path(case_id))))
        labels = _open(store / "labels" / case_id).read().result()
        np.testing.assert_array_equal(labels, np.asanyarray(source.dataobj))
        assert case["suv_factor"] == pytest.approx(dataset.metadata(case_id).suv_factor())
        assert case["metadata"]["field_of_view"] in ("conventional", "long_axial")
        assert sum(case["class_voxels"].values()) == labels.size
