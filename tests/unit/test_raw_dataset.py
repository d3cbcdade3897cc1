"""The raw dataset format: writing, reading back, and a clear error for each bad input."""

import json

import numpy as np
import pytest

from petseg_jax.data.raw_dataset import (
    CaseMetadata, RawDataset, RawDatasetError, canonical_tracer, image_file, label_file,
    parse_bool, save_nifti, write_dataset_json, write_metadata_csv)
from petseg_jax.data.schema import DEFAULT_SCHEMA, LabelSchema

ROWS = [
    CaseMetadata("a1", "FDG", "site1", 1.0, True, "train", 70.0, 3.5e8, "Bq/ml"),
    CaseMetadata("a2", "psma", "site2", 20, False, "test"),
    CaseMetadata("a3", "Grazytracer", "site1", 4.0, True, None, 60.5, 1.2e8, "kBq/ml"),
]
HEADER = ("case_id,tracer,center,dose_reduction_factor,attenuation_corrected,split,"
          "patient_weight_kg,injected_activity_bq,units\n")


def make_raw(root, rows=ROWS, schema=DEFAULT_SCHEMA, images=None):
    """A tiny but complete raw dataset folder."""
    root.mkdir(exist_ok=True)
    (root / "imagesTr").mkdir(exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    for case in images if images is not None else [r.case_id for r in rows]:
        save_nifti(image_file(root, case), np.ones((4, 3, 2), np.float32), affine)
        save_nifti(label_file(root, case), np.zeros((4, 3, 2), np.uint8), affine)
    write_metadata_csv(root, rows)
    n = len(images) if images is not None else len(rows)
    write_dataset_json(root, schema, n)
    return root


def test_round_trip(tmp_path):
    raw = RawDataset(make_raw(tmp_path / "raw"))
    assert raw.case_ids() == ["a1", "a2", "a3"]
    assert raw.schema == DEFAULT_SCHEMA
    assert raw.file_ending == ".nii.gz"
    for row in ROWS:
        assert raw.metadata(row.case_id) == row
        assert raw.image_path(row.case_id).is_file()
        assert raw.label_path(row.case_id).is_file()
    assert raw.metadata("a2").tracer == "PSMA"  # canonical spelling
    assert not list((tmp_path / "raw").rglob(".*"))  # no temp files left behind


def test_custom_schema_round_trip(tmp_path):
    schema = LabelSchema(("liver", "kidney_right", "kidney_left"),
                         (("kidney_right", "kidney_left"),))
    raw = RawDataset(make_raw(tmp_path / "raw", schema=schema))
    assert raw.schema == schema


def test_metadata_json_round_trip():
    for row in ROWS:
        obj = json.loads(json.dumps(row.to_json()))
        assert CaseMetadata.from_json(obj) == row
    assert "split" not in ROWS[2].to_json()  # unknown optional values are left out


def test_suv_factor():
    assert ROWS[0].suv_factor() == pytest.approx(70.0 * 1000 / 3.5e8)
    assert ROWS[1].suv_factor() is None  # no weight / activity
    assert ROWS[2].suv_factor() == pytest.approx(1000 * 60.5 * 1000 / 1.2e8)  # kBq/ml
    assert CaseMetadata("x", "FDG", "c", units="SUV").suv_factor() == 1.0
    assert CaseMetadata("x", "FDG", "c", 1, True, None, 70, 3e8, "counts").suv_factor() is None


def test_canonical_tracer_and_bool():
    assert canonical_tracer(" fdg ") == "FDG"
    assert canonical_tracer("GRAZYTRACER") == "Grazytracer"
    assert parse_bool("TRUE") and parse_bool("yes") and not parse_bool("false")
    with pytest.raises(RawDatasetError, match="unknown tracer 'FLT'"):
        canonical_tracer("FLT")
    with pytest.raises(RawDatasetError, match="true/false"):
        parse_bool("maybe")


def _write_csv(root, body):
    (root / "metadata.csv").write_text(HEADER + body)


BAD_ROWS = {
    "unknown tracer": ("a1,FLT,site1,1,true,,,,\n", r"line 2, case 'a1'.*'tracer'.*FLT"),
    "dose below 1": ("a1,FDG,site1,0.5,true,,,,\n", r"case 'a1'.*dose_reduction_factor.*>= 1"),
    "dose not a number": ("a1,FDG,site1,full,true,,,,\n",
                          r"case 'a1'.*'dose_reduction_factor'"),
    "bad boolean": ("a1,FDG,site1,1,perhaps,,,,\n", r"case 'a1'.*'attenuation_corrected'.*perhaps"),
    "bad split": ("a1,FDG,site1,1,true,holdout,,,\n", r"case 'a1'.*split"),
    "bad weight": ("a1,FDG,site1,1,true,,-3,,\n", r"case 'a1'.*patient_weight_kg"),
    "empty center": ("a1,FDG,,1,true,,,,\n", r"case 'a1'.*'center' is empty"),
    "duplicate": ("a1,FDG,site1,1,true,,,,\na1,FDG,site1,4,true,,,,\n",
                  r"line 3: duplicate case_id 'a1' \(first on line 2\)"),
}


@pytest.mark.parametrize("name", sorted(BAD_ROWS))
def test_bad_metadata_rows(tmp_path, name):
    body, message = BAD_ROWS[name]
    root = make_raw(tmp_path / "raw", rows=ROWS[:1])
    _write_csv(root, body)
    with pytest.raises(RawDatasetError, match=message):
        RawDataset(root)
    lenient = RawDataset(root, strict=False)  # per-case problems are collected instead
    assert lenient.case_ids() == [] and "a1" in lenient.invalid
    with pytest.raises(RawDatasetError, match="case 'a1'"):
        lenient.metadata("a1")


def test_missing_files_and_columns(tmp_path):
    with pytest.raises(RawDatasetError, match="does not exist"):
        RawDataset(tmp_path / "nowhere")
    root = make_raw(tmp_path / "raw")
    (root / "metadata.csv").unlink()
    with pytest.raises(RawDatasetError, match="metadata.csv is missing"):
        RawDataset(root)
    (root / "metadata.csv").write_text("case_id,tracer,center\na1,FDG,x\n")
    with pytest.raises(RawDatasetError, match="missing column.*dose_reduction_factor"):
        RawDataset(root)
    (root / "dataset.json").unlink()
    with pytest.raises(RawDatasetError, match="dataset.json is missing"):
        RawDataset(root)


def test_image_metadata_mismatch(tmp_path):
    root = make_raw(tmp_path / "raw", images=["a1", "a2", "a3", "extra"])
    with pytest.raises(RawDatasetError, match=r"extra_0000.nii.gz has no row in .*metadata.csv"):
        RawDataset(root)
    lenient = RawDataset(root, strict=False)
    assert lenient.case_ids() == ["a1", "a2", "a3"] and "extra" in lenient.invalid
    root = make_raw(tmp_path / "raw2", images=["a1", "a2"])
    with pytest.raises(RawDatasetError, match=r"lists case 'a3' but image .*a3_0000.nii.gz is"):
        RawDataset(root)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(channel_names={"0": "PET", "1": "CT"}), "exactly one channel"),
    (lambda d: d.pop("file_ending"), "missing key 'file_ending'"),
    (lambda d: d.update(numTraining=7), "numTraining is 7 but"),
    (lambda d: d["labels"].update(liver=99), "bad labels"),
])
def test_bad_dataset_json(tmp_path, edit, message):
    root = make_raw(tmp_path / "raw")
    obj = json.loads((root / "dataset.json").read_text())
    edit(obj)
    (root / "dataset.json").write_text(json.dumps(obj))
    with pytest.raises(RawDatasetError, match=message):
        RawDataset(root)


def test_invalid_json_and_second_channel_file(tmp_path):
    root = make_raw(tmp_path / "raw")
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(RawDatasetError, match="not valid JSON"):
        RawDataset(root)
    root = make_raw(tmp_path / "raw2")
    save_nifti(root / "imagesTr" / "a1_0001.nii.gz", np.ones((2, 2, 2), np.float32), np.eye(4))
    with pytest.raises(RawDatasetError, match="only one channel"):
        RawDataset(root)
