"""python -m petseg_jax.data.lowdose: twins, metadata, count estimate, noise texture, bad input."""

import csv

import numpy as np
import pytest
from physics_fixtures import SPACING, ellipse_phantom, lag1_autocorrelation
from scipy import ndimage

from petseg_jax.data import lowdose, nifti
from petseg_jax.data.raw_dataset import (
    CaseMetadata, image_file, label_file, save_nifti, write_dataset_json, write_metadata_csv)
from petseg_jax.data.schema import DEFAULT_SCHEMA
from petseg_jax.phantom.scanner import CENTERS, simulate_scans
from petseg_jax.physics.simulation import estimate_sensitivity

AFFINE = np.diag([*SPACING, 1.0])


def _write_raw(root, images: dict, labels: dict, weight=None):
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    rows = []
    for case_id, image in images.items():
        save_nifti(image_file(root, case_id), image.astype(np.float32), AFFINE)
        if case_id in labels:
            save_nifti(label_file(root, case_id), labels[case_id].astype(np.uint8), AFFINE)
        rows.append(CaseMetadata(case_id, "FDG", "center_a", 2.0, True, "test", weight, None,
                                 "Bq/ml"))
    write_metadata_csv(root, rows)
    write_dataset_json(root, DEFAULT_SCHEMA, len(images))
    return root


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    activity, mu, masks, _ = ellipse_phantom()
    center = CENTERS["center_a"]
    image = simulate_scans(activity, mu, SPACING, center, [(1.0, True)], 1.0,
                           np.random.default_rng(3))[(1.0, True)]
    labels = np.zeros(activity.shape, np.uint8)
    labels[masks["liver"]] = DEFAULT_SCHEMA.id_of("liver")
    labels[masks["lung"]] = DEFAULT_SCHEMA.id_of("lung_left")
    root = tmp_path_factory.mktemp("lowdose")
    raw = _write_raw(root / "raw", {"case_a": image}, {"case_a": labels}, weight=70.0)
    out = root / "out"
    assert lowdose.main(["--raw", str(raw), "--out", str(out), "--factors", "10,100",
                         "--nac"]) == 0
    return out, masks


def test_twins_layout_and_metadata(twins):
    out, _ = twins
    with (out / "metadata.csv").open() as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"case_a_drf10", "case_a_drf10_nac", "case_a_drf100",
                         "case_a_drf100_nac"}
    assert rows["case_a_drf10"]["dose_reduction_factor"] == "20"  # k x the input's factor 2
    assert rows["case_a_drf100_nac"]["attenuation_corrected"] == "false"
    assert float(rows["case_a_drf10"]["patient_weight_kg"]) == 70.0  # other columns copied
    # the twins' reconstruction (the defaults), as the phantom writes its center's
    assert {(r["psf_fwhm_mm"], r["post_fwhm_mm"]) for r in rows.values()} == {("3", "3")}
    for case_id in rows:
        assert label_file(out, case_id).is_file() and image_file(out, case_id).is_file()
    assert not image_file(out, "case_a").exists()


def test_twins_are_quantitative_and_correlated(twins):
    out, masks = twins
    images = {k: nifti.array(nifti.load(image_file(out, f"case_a_drf{k}"))) for k in (10, 100)}
    core = ndimage.binary_erosion(masks["liver"], iterations=3)
    assert abs(images[100][core].mean() / 10000.0 - 1.0) < 0.1
    assert lag1_autocorrelation(images[100] - images[10], core) >= 0.25


def test_count_level_is_estimated_within_30_percent():
    activity, mu, masks, _ = ellipse_phantom()
    center = CENTERS["center_a"]
    image = simulate_scans(activity, mu, SPACING, center, [(4.0, True)], 1.0,
                           np.random.default_rng(5))[(4.0, True)]
    body = lowdose.body_outline(image)
    estimate = estimate_sensitivity(image, mu, SPACING, "total_body", center.imaging,
                                    ndimage.binary_erosion(body, iterations=3),
                                    np.random.default_rng(0))
    truth = center.counts_per_kbq / 1000.0 / 4.0
    assert abs(estimate / truth - 1.0) < 0.3, (estimate, truth)


def _bad(tmp_path, image, labels=True, extra=()):
    images = {"bad_case": image}
    raw = _write_raw(tmp_path / "raw", images,
                     {"bad_case": np.zeros(image.shape, np.uint8)} if labels else {})
    return ["--raw", str(raw), "--out", str(tmp_path / "out"), "--factors", "10",
            "--counts-per-kbq", "1000", *extra]


def _tiny():
    image = np.zeros((16, 16, 4), np.float32)
    image[4:12, 4:12] = 5000.0
    return image


@pytest.mark.parametrize("problem", ["nan", "negative", "ct", "factor", "labels"])
def test_bad_input_names_the_case_and_writes_nothing(tmp_path, capsys, problem):
    image, labels, extra = _tiny(), True, []
    if problem == "nan":
        image[5, 5, 1] = np.nan
    elif problem == "negative":
        image[8, 8, 2] = -1e6
    elif problem == "ct":
        (tmp_path / "ct").mkdir()
        save_nifti(tmp_path / "ct" / "bad_case.nii.gz", np.zeros((16, 16, 2), np.float32),
                   AFFINE)
        extra = ["--ct-dir", str(tmp_path / "ct")]
    elif problem == "labels":
        labels = False
    args = _bad(tmp_path, image, labels, extra)
    if problem == "factor":
        args[args.index("--factors") + 1] = "1,10"
    assert lowdose.main(args) == 1
    err = capsys.readouterr().err
    assert ("bad_case" in err) if problem != "factor" else ("> 1" in err), err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))
