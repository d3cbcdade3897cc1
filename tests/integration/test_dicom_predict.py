"""DICOM in, DICOM out: a synthetic PET series (pydicom, in the test) through prediction, the
DICOM-SEG round trip (highdicom.seg.segread, voxel for voxel, references), the RTSTRUCT round
trip (rt-utils, Dice), the predict CLI on a DICOM folder, and the stats command."""

from __future__ import annotations

import csv
import json

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_fixtures import F18_HALF_LIFE_S, oblique_affine, write_pet_series
from test_predict import BACKGROUND, LIVER, SPLEEN, fake_predictor

from petseg_jax import metrics, predict, stats
from petseg_jax.data import dicom, nifti, suv
from petseg_jax.data.schema import DEFAULT_SCHEMA as SCHEMA
from petseg_jax.inference.dicom_pipeline import predict_series
from petseg_jax.inference.outputs import OutputOptions

SUVBW = 70e3 / (350e6 * 2.0 ** (-3600.0 / F18_HALF_LIFE_S))  # the fixture's headers
AXIAL = np.diag([-5.0, -5.0, 5.0, 1.0]) @ np.array([[1, 0, 0, -16], [0, 1, 0, -16],
                                                    [0, 0, 1, -10], [0, 0, 0, 1.0]])


def suv_phantom(shape=(32, 32, 20)) -> tuple[np.ndarray, np.ndarray]:
    """(SUV image, its true label map): a liver and a spleen box on a low background."""
    image = np.full(shape, BACKGROUND, np.float32)
    labels = np.zeros(shape, np.uint8)
    for organ, value, box in (("liver", LIVER, np.s_[4:16, 6:20, 4:14]),
                              ("spleen", SPLEEN, np.s_[20:28, 8:18, 6:12])):
        image[box], labels[box] = value, SCHEMA.id_of(organ)
    return image, labels


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory):
    """Two PET series (axial and oblique) of one study, in Bq/ml, in one folder."""
    folder = tmp_path_factory.mktemp("pet_dicom")
    image, _ = suv_phantom()
    study = pydicom.uid.generate_uid()
    write_pet_series(folder, image / SUVBW, AXIAL, description="PET AC", study_uid=study)
    write_pet_series(folder, image / SUVBW, oblique_affine((5.0, 5.0, 5.0)),
                     description="PET oblique", study_uid=study, seed=3)
    return folder


def series_of(folder, description):
    return next(s for s in dicom.list_series(folder) if s.description == description)


def test_series_prediction_writes_every_output_and_suv_stats(dicom_folder, tmp_path):
    info = series_of(dicom_folder, "PET AC")
    options = OutputOptions(("nifti", "dicom_seg", "dicom_rtstruct"), per_organ=True,
                            preview=True)
    rows = predict_series(fake_predictor(), info, tmp_path, options=options)
    folder = tmp_path / info.uid
    assert sorted(p.name for p in folder.iterdir()) == [
        "labels.json", "labels.nii.gz", "organs", "preview.png", "rtstruct.dcm", "seg.dcm"]
    volume = dicom.read_pet(info)
    img = nib.load(folder / "labels.nii.gz")
    labels = np.asarray(img.dataobj)
    assert img.shape == volume.image.shape and np.allclose(img.affine, volume.affine)
    _, truth = suv_phantom()
    assert np.array_equal(labels, truth)  # SUV from the headers drives the network input
    assert json.loads((folder / "labels.json").read_text())["labels"]["spleen"] == 1
    assert np.array_equal(np.asarray(nib.load(folder / "organs" / "liver.nii.gz").dataobj),
                          (truth == SCHEMA.id_of("liver")).astype(np.uint8))
    by = {r["organ"]: r for r in rows}
    assert [c for c in rows[0]] == ["case", *metrics.ORGAN_STATS_COLUMNS]
    assert by["spleen"]["suv_max"] == pytest.approx(SPLEEN, rel=1e-3)
    assert by["liver"]["suv_mean"] == pytest.approx(LIVER, rel=1e-3)
    assert by["liver"]["suv_std"] < 1e-2 and by["liver"]["suv_median"] == pytest.approx(
        LIVER, rel=1e-3)
    assert by["liver"]["volume_ml"] == pytest.approx(12 * 14 * 10 * 0.125)
    assert not by["liver"]["fov_truncated"] and np.isnan(by["heart"]["suv_mean"])
    assert by["liver"]["sul_mean"] < by["liver"]["suv_mean"]
    assert {(r["case"], r["units"], r["suv_source"], r["decay_correction"]) for r in rows} == {
        (info.uid, "SUV", "dicom_headers", "START")}


def test_dicom_seg_round_trip_voxel_for_voxel_with_references(dicom_folder, tmp_path):
    for description in ("PET AC", "PET oblique"):
        info = series_of(dicom_folder, description)
        predict_series(fake_predictor(), info, tmp_path,
                       options=OutputOptions(("nifti", "dicom_seg")))
        folder = tmp_path / info.uid
        labels = np.asarray(nib.load(folder / "labels.nii.gz").dataobj)
        assert len(np.unique(labels)) == 3, description
        volume = dicom.read_pet(info)
        seg = hd.seg.segread(folder / "seg.dcm")
        uids = [h.SOPInstanceUID for h in volume.headers]
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                                   combine_segments=True, relabel=False)
        lut = np.zeros(len(seg.SegmentSequence) + 1, np.uint8)
        for item in seg.SegmentSequence:
            lut[item.SegmentNumber] = SCHEMA.id_of(item.SegmentLabel)
        assert np.array_equal(lut[pixels].transpose(2, 1, 0), labels), description
        assert {s.SegmentLabel for s in seg.SegmentSequence} == {"liver", "spleen"}
        liver = next(s for s in seg.SegmentSequence if s.SegmentLabel == "liver")
        assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
        assert liver.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        source = volume.headers[0]
        referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                      for i in s.ReferencedInstanceSequence}
        assert referenced == set(uids)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == info.uid
        for key in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
            assert seg[key].value == source[key].value, key


def test_rtstruct_round_trip_dice(dicom_folder, tmp_path):
    from rt_utils import RTStruct

    info = series_of(dicom_folder, "PET AC")
    predict_series(fake_predictor(), info, tmp_path, options=OutputOptions(("dicom_rtstruct",)))
    volume = dicom.read_pet(info)
    ds = pydicom.dcmread(tmp_path / info.uid / "rtstruct.dcm")
    assert ds.Modality == "RTSTRUCT" and ds.StudyInstanceUID == volume.headers[0].StudyInstanceUID
    rt = RTStruct(volume.headers, ds)
    _, truth = suv_phantom()
    assert sorted(rt.get_roi_names()) == ["liver", "spleen"]
    for name in ("liver", "spleen"):
        mask = rt.get_roi_mask_by_name(name).transpose(1, 0, 2)  # (rows, cols) -> (cols, rows)
        assert metrics.dice(mask.astype(np.uint8), (truth == SCHEMA.id_of(name)).astype(
            np.uint8), 1) >= 0.95, name


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from tiny_run import tiny_export

    return tiny_export(tmp_path_factory.getbasetemp())


def test_cli_lists_chooses_and_predicts_series(dicom_folder, export_dir, tmp_path, capsys):
    assert predict.main(["-i", str(dicom_folder), "--list-series"]) == []
    listed = capsys.readouterr().out
    series = dicom.list_series(dicom_folder)
    assert all(s.uid in listed for s in series) and "PET oblique" in listed
    out, table = tmp_path / "out", tmp_path / "organs.csv"
    rows = predict.main(["--model", str(export_dir), "-i", str(dicom_folder), "-o", str(out),
                         "--stats", str(table), "--device", "gpu", "--tracer", "Rb-82",
                         "--compile-cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert "JAX finds no GPU" in err  # CPU-only test machine
    for s in series:  # the model card's warning, per series
        assert f"series {s.uid}: tracer 'Rb-82' is not one the model was trained on" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(s.uid for s in series)
    for s in series:
        assert sorted(p.name for p in (out / s.uid).iterdir()) == ["labels.json",
                                                                  "labels.nii.gz"]
    with table.open() as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["case", *metrics.ORGAN_STATS_COLUMNS]
    assert {r["case"] for r in read} == {s.uid for s in series} and len(rows) == len(read)
    assert {r["suv_source"] for r in read} == {"dicom_headers"}
    one = tmp_path / "one"
    predict.main(["--model", str(export_dir), "-i", str(dicom_folder), "-o", str(one),
                  "--series", series[0].uid, "--weight-kg", "80"])
    assert [p.name for p in one.iterdir()] == [series[0].uid]


def test_cli_errors_for_dicom(dicom_folder, export_dir, tmp_path):
    from tiny_run import write_pet

    pet = write_pet(tmp_path / "pet.nii.gz")
    with pytest.raises(SystemExit, match="DICOM output .* needs DICOM input"):
        predict.main(["--model", str(export_dir), "-i", str(pet), "-o", str(tmp_path / "x"),
                      "--output-type", "dicom_seg"])
    with pytest.raises(SystemExit, match="each DICOM series gets its preview.png"):
        predict.main(["--model", str(export_dir), "-i", str(dicom_folder), "-o",
                      str(tmp_path / "y"), "--preview", str(tmp_path / "p.png")])
    with pytest.raises(SystemExit, match="no series 9.9"):
        predict.main(["--model", str(export_dir), "-i", str(dicom_folder), "-o",
                      str(tmp_path / "y"), "--series", "9.9"])
    bad = tmp_path / "bad"
    write_pet_series(bad, np.ones((4, 4, 3), np.float32), AXIAL, weight_kg=None)
    with pytest.raises(SystemExit, match="1 of 1"):
        predict.main(["--model", str(export_dir), "-i", str(bad), "-o", str(tmp_path / "z")])
    assert not (tmp_path / "z").exists() or not any((tmp_path / "z").iterdir())


def test_nifti_outputs_per_organ_and_preview(export_dir, tmp_path):
    from tiny_run import write_pet

    pet = write_pet(tmp_path / "pet.nii.gz")
    out = tmp_path / "res" / "labels.nii.gz"
    predict.main(["--model", str(export_dir), "-i", str(pet), "-o", str(out), "--per-organ",
                  "--preview", str(tmp_path / "p.png")])
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.labels.json",
                                                           "labels.nii.gz", "labels_organs"]
    assert len(list((out.parent / "labels_organs").iterdir())) == len(SCHEMA.names)
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_stats_on_the_totalsegmentator_example(totalseg_dir, tmp_path):
    """MOOSE's workflow: a CT label map (TotalSegmentator) measured on a PET-like volume."""
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    ts = np.asarray(seg.dataobj)
    pet = np.full(seg.shape, 0.5, np.float32)
    pet[ts == 5] = 2.0  # liver
    pet[ts == 1] = 3.0  # spleen
    pet_path = tmp_path / "pet.nii.gz"
    nib.save(nib.Nifti1Image(pet, seg.affine), pet_path)
    out = tmp_path / "organs.csv"
    rows = stats.main(["--pet", str(pet_path), "--labels", str(totalseg_dir / "example_seg.nii.gz"),
                       "--totalseg", "--suv-factor", "1", "--out", str(out)])
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(metrics.ORGAN_STATS_COLUMNS)
    by = {r["organ"]: r for r in rows}
    voxel_ml = float(np.prod(seg.header.get_zooms()[:3])) / 1000
    assert by["liver"]["volume_ml"] == pytest.approx((ts == 5).sum() * voxel_ml)
    assert by["liver"]["suv_mean"] == pytest.approx(2.0) and by["spleen"]["suv_max"] == 3.0
    assert by["liver"]["fov_truncated"]  # the 30-slice crop cuts the liver
    assert {r["units"] for r in rows} == {"SUV"} and {r["suv_source"] for r in rows} == {"flags"}
    # the same label map in schema ids, on another grid: resampled, without --totalseg
    from petseg_jax.data.labels_from_totalseg import transfer_labels

    schema_ids = transfer_labels(nifti.load(totalseg_dir / "example_seg.nii.gz", label=True),
                                 seg)
    lab_path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(schema_ids, seg.affine), lab_path)
    again = stats.main(["--pet", str(pet_path), "--labels", str(lab_path), "--out",
                        str(tmp_path / "b.csv")])
    assert {r["organ"]: r["volume_ml"] for r in again} == {r["organ"]: r["volume_ml"]
                                                           for r in rows}
    assert {r["units"] for r in again} == {"raw"}
    with pytest.raises(SystemExit, match="not in the label schema"):
        stats.main(["--pet", str(pet_path), "--labels", str(totalseg_dir / "example_seg.nii.gz"),
                    "--out", str(tmp_path / "c.csv")])


def test_stats_on_dicom_pet_and_dicom_seg(dicom_folder, tmp_path):
    info = series_of(dicom_folder, "PET oblique")
    predict_series(fake_predictor(), info, tmp_path, options=OutputOptions(("dicom_seg",)))
    with pytest.raises(SystemExit, match="2 PET series: choose one with --series"):
        stats.main(["--pet", str(dicom_folder), "--labels", str(tmp_path / info.uid / "seg.dcm"),
                    "--out", str(tmp_path / "x.csv")])
    rows = stats.main(["--pet", str(dicom_folder), "--series", info.uid, "--labels",
                       str(tmp_path / info.uid / "seg.dcm"), "--out", str(tmp_path / "s.csv")])
    by = {r["organ"]: r for r in rows}
    assert by["spleen"]["suv_max"] == pytest.approx(SPLEEN, rel=1e-3)
    assert by["spleen"]["suv_source"] == "dicom_headers"
    volume = dicom.read_pet(info)
    cal = suv.from_headers(volume.headers)
    assert cal.suvbw == pytest.approx(SUVBW, rel=1e-6)


def test_rtstruct_and_seg_of_real_organ_shapes(totalseg_dir, tmp_path):
    """The TotalSegmentator example's organs (schema ids, a 101 x 101 x 15 RAS crop: rt-utils reads
    square slices only) on a series written from its grid: RTSTRUCT Dice >= 0.95 for the large
    organs, DICOM-SEG exact."""
    from rt_utils import RTStruct

    from petseg_jax.data.labels_from_totalseg import transfer_labels
    from petseg_jax.inference.dicom_output import read_seg, write_rtstruct, write_seg

    seg = nifti.load(totalseg_dir / "example_seg.nii.gz", label=True)
    labels = transfer_labels(seg, seg)[:101, :, 10:25]
    affine = seg.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 10], [0, 0, 0, 1.0]])
    write_pet_series(tmp_path / "pet", np.where(labels > 0, 5.0, 1.0).astype(np.float32), affine)
    volume = dicom.read_pet(dicom.list_series(tmp_path / "pet")[0])
    assert np.allclose(volume.affine, affine, atol=1e-4)
    write_rtstruct(tmp_path / "rt.dcm", labels, volume, SCHEMA)
    rt = RTStruct(volume.headers, pydicom.dcmread(tmp_path / "rt.dcm"))
    large = [n for n in SCHEMA.names if (labels == SCHEMA.id_of(n)).sum() * 27e-3 > 30]  # > 30 ml
    assert {"liver", "spleen", "stomach", "colon"} <= set(large)
    for name in large:
        mask = rt.get_roi_mask_by_name(name).transpose(1, 0, 2).astype(np.uint8)
        assert metrics.dice(mask, (labels == SCHEMA.id_of(name)).astype(np.uint8), 1) >= 0.95
    write_seg(tmp_path / "seg.dcm", labels, volume, SCHEMA)
    back, affine = read_seg(tmp_path / "seg.dcm", SCHEMA)
    assert np.array_equal(nifti.resample_to_reference(back, affine, labels.shape, volume.affine),
                          labels)
