"""NIfTI in -> labels out: geometry on a real LAS anisotropic header, bad inputs, the CLI, and
checkpoint vs export agreement."""

from __future__ import annotations

import csv
import dataclasses
import json

import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from petseg_jax import predict
from petseg_jax.data import nifti
from petseg_jax.data.schema import DEFAULT_SCHEMA
from petseg_jax.data import suv
from petseg_jax.data.normalization import NormalizationConfig
from petseg_jax.inference.nifti_pipeline import Predictor
from petseg_jax.inference.segment import window_size
from petseg_jax.inference.spec import FORMAT_VERSION

SCHEMA = DEFAULT_SCHEMA
BACKGROUND, LIVER, SPLEEN = 0.1, 5.0, 20.0  # image values (SUV with factor 1)
# Boxes in world (RAS) mm: [lo, hi] per axis. Asymmetric in x, so a left/right flip shows.
BOXES = {"liver": ((60, 140), (100, 180), (-797, -775)),
         "spleen": ((-150, -70), (250, 330), (-797, -775))}


def intensity_classifier(centers, x):
    """Fake network: the class whose centre is nearest to the normalized intensity."""
    return -((x - centers) ** 2)


def fake_predictor(spacing=(5.0, 5.0, 5.0)) -> Predictor:
    centers = np.full(SCHEMA.num_classes, 100.0, np.float32)
    centers[0] = np.log1p(BACKGROUND)
    centers[SCHEMA.id_of("liver")] = np.log1p(LIVER)
    centers[SCHEMA.id_of("spleen")] = np.log1p(SPLEEN)
    spec = {"format_version": FORMAT_VERSION, "schema": SCHEMA.to_json(),
            "patch_size": [16, 16, 16], "spacing": list(spacing), "total_stride": [4, 4, 4],
            "normalization": dataclasses.asdict(NormalizationConfig.from_config()),
            "overlap": 0.5, "mirror_axes": [], "batch_size": 4, "nonzero_mask": False, "body_box": None,
            "largest_component": False, "largest_component_labels": [], "position_ranges": {},
            "in_channels": 1, "position_channels": "", "input_layout": "NXYZC",
            "output_layout": "NXYZK", "input_dtype": "float32", "output_dtype": "float32",
            "splits": {}, "training_data": {}, "training": {}}
    return Predictor(intensity_classifier, jnp.asarray(centers), spec)


def world_coords(shape, affine) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def in_box(world, box, margin=0.0) -> np.ndarray:
    return np.all([(world[..., a] >= lo - margin) & (world[..., a] <= hi + margin)
                   for a, (lo, hi) in enumerate(box)], axis=0)


@pytest.fixture(scope="module")
def las_case(totalseg_dir, tmp_path_factory):
    """A PET-like image on the real LAS, anisotropic header, 8x coarser in-plane (64x64x20)."""
    ref = nib.load(totalseg_dir / "example_seg_dicom.nii.gz")
    assert nib.aff2axcodes(ref.affine) == ("L", "A", "S")
    affine = ref.affine @ np.diag([8.0, 8.0, 1.0, 1.0])
    shape = (ref.shape[0] // 8, ref.shape[1] // 8, ref.shape[2])
    world = world_coords(shape, affine)
    image = np.full(shape, BACKGROUND, np.float32)
    for organ, value in (("liver", LIVER), ("spleen", SPLEEN)):
        image[in_box(world, BOXES[organ])] = value
    path = tmp_path_factory.mktemp("las") / "pet_las.nii.gz"
    img = nib.Nifti1Image(image, affine, ref.header.copy())
    img.set_data_dtype(np.float32)
    nib.save(img, path)
    return path, world


def test_window_shrinks_to_stride_multiples():
    assert window_size((100, 7, 16), (16, 16, 16), (4, 4, 4)) == (16, 8, 16)


def test_suv_factor_from_weight_and_activity():
    calibration = suv.from_flags(suv.SuvOverrides(weight_kg=70.0, injected_mbq=350.0))
    assert calibration.suvbw == pytest.approx(70e3 / 350e6) and calibration.source == "flags"
    assert suv.from_flags(suv.SuvOverrides()) is None
    with pytest.raises(ValueError, match="not plausible"):
        suv.from_flags(suv.SuvOverrides(weight_kg=70.0, injected_mbq=0.0))


def test_labels_on_the_input_grid_at_their_world_position(las_case, tmp_path):
    path, world = las_case
    out, stats = tmp_path / "labels.nii.gz", tmp_path / "organs.csv"
    rows = fake_predictor().predict_nifti(path, out, stats,
                                          suv.from_flags(suv.SuvOverrides(suv_factor=1.0)))
    src, res = nib.load(path), nib.load(out)
    assert res.shape == src.shape and np.array_equal(res.affine, src.affine)
    assert np.issubdtype(res.get_data_dtype(), np.integer)
    assert int(res.header["sform_code"]) == int(src.header["sform_code"])
    labels = np.asarray(res.dataobj)
    margin = 12.0  # mm: resampling 7.8 x 7.8 x 2 mm -> 5 mm and back blurs edges by < 1.5 voxels
    # Linear resampling makes a partial-volume ring of intermediate values around each box,
    # which the intensity classifier may call the other organ: compare away from the edges.
    near_edges = np.any([in_box(world, b, margin) & ~in_box(world, [(lo + margin, hi - margin)
                                                                     for lo, hi in b])
                         for b in BOXES.values()], axis=0)
    for organ, box in BOXES.items():
        label = SCHEMA.id_of(organ)
        assert np.all(labels[in_box(world, [(lo + margin, hi - margin) for lo, hi in box])]
                      == label), organ
        assert not np.any((labels == label) & ~in_box(world, box, margin) & ~near_edges), organ
        centroid = world[(labels == label) & in_box(world, box, margin)].mean(0)
        expected = world[in_box(world, box)].mean(0)
        assert np.allclose(centroid, expected, atol=4.0), (organ, centroid, expected)
    # Stats on the input grid (the spleen has no partial-volume ring of another organ).
    spleen = {r["organ"]: r for r in rows}["spleen"]
    box_ml = in_box(world, BOXES["spleen"]).sum() * np.prod(nifti.voxel_spacing(src.affine)) / 1e3
    assert spleen["volume_ml"] == pytest.approx(box_ml, rel=0.2)
    assert spleen["suv_max"] == pytest.approx(SPLEEN) and 0.8 * SPLEEN < spleen["suv_mean"]
    with stats.open() as f:
        table = list(csv.DictReader(f))
    assert [r["organ"] for r in table] == list(SCHEMA.names)
    assert {r["units"] for r in table} == {"SUV"}
    assert float(table[SCHEMA.id_of("spleen") - 1]["volume_ml"]) == spleen["volume_ml"]


def _bad_inputs(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    ok = np.ones((8, 8, 8), np.float32)
    nan = ok.copy()
    nan[1, 2, 3] = np.nan
    (tmp_path / "text.nii.gz").write_text("not a nifti")
    cases = {"text.nii.gz": "unreadable", "frames.nii.gz": "3-D", "nan.nii.gz": "NaN",
             "zeros.nii.gz": "empty"}
    for name, data in (("frames.nii.gz", np.ones((8, 8, 8, 2), np.float32)),
                       ("nan.nii.gz", nan), ("zeros.nii.gz", np.zeros_like(ok))):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / name)
    return cases


def test_bad_inputs_raise_and_write_nothing(tmp_path):
    predictor = fake_predictor()
    for name, message in _bad_inputs(tmp_path).items():
        out, stats = tmp_path / f"out_{name}", tmp_path / f"{name}.csv"
        with pytest.raises(nifti.NiftiError, match=message):
            predictor.predict_nifti(tmp_path / name, out, stats)
        assert not out.exists() and not stats.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out_")) == []


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tiny_run import tiny_export, tiny_workdir

    root = tmp_path_factory.getbasetemp()
    return tiny_workdir(root), tiny_export(root)


def test_checkpoint_and_export_give_the_same_labels(run, tmp_path):
    from tiny_run import write_pet

    workdir, export_dir = run
    pet = write_pet(tmp_path / "pet.nii.gz")
    maps = {}
    for name, model in (("checkpoint", workdir), ("export", export_dir)):
        out = tmp_path / f"{name}.nii.gz"
        rows = predict.main(["--model", str(model), "-i", str(pet), "-o", str(out),
                             "--weight-kg", "70", "--injected-mbq", "350",
                             "--profile", str(tmp_path / f"{name}.json")])
        assert len(rows) == len(SCHEMA.names)
        maps[name] = nib.load(out)
        profile = json.loads((tmp_path / f"{name}.json").read_text())
        assert set(profile["seconds"]) == {"read", "resample", "windows", "post-processing",
                                           "write"}
        assert all(s >= 0 for s in profile["seconds"].values()) and profile["peak_rss_mb"] > 100
        assert profile["cases"] == 1 and profile["failed"] == 0
    src = nib.load(pet)
    for img in maps.values():
        assert img.shape == src.shape and np.array_equal(img.affine, src.affine)
        assert img.get_data_dtype() == np.uint8
    labels = [np.asarray(img.dataobj) for img in maps.values()]
    assert np.array_equal(*labels)
    assert len(np.unique(labels[0])) > 1  # random weights still give a non-trivial map


def test_cli_folder_mode_reports_bad_cases_and_keeps_going(run, tmp_path):
    from tiny_run import write_pet

    _, export_dir = run
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    write_pet(inp / "a.nii.gz", seed=1)
    write_pet(inp / "b.nii", seed=2)
    (inp / "broken.nii.gz").write_text("not a nifti")
    (inp / "notes.txt").write_text("ignored")
    stats = tmp_path / "organs.csv"
    with pytest.raises(SystemExit, match="1 of 3 case"):
        predict.main(["--model", str(export_dir), "-i", str(inp), "-o", str(out),
                      "--stats", str(stats)])
    assert sorted(p.name for p in out.iterdir()) == ["a.labels.json", "a.nii.gz",
                                                     "b.labels.json", "b.nii"]
    with stats.open() as f:
        table = list(csv.DictReader(f))
    assert {r["case"] for r in table} == {"a", "b"} and {r["units"] for r in table} == {"raw"}


def test_cli_errors(run, tmp_path):
    _, export_dir = run
    with pytest.raises(SystemExit, match="does not exist"):
        predict.main(["--model", str(export_dir), "-i", str(tmp_path / "x.nii.gz"),
                      "-o", str(tmp_path / "y.nii.gz")])
    bad = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), bad)
    with pytest.raises(SystemExit, match="1 of 1"):
        predict.main(["--model", str(export_dir), "-i", str(bad), "-o", str(tmp_path / "y.nii")])
    assert not (tmp_path / "y.nii").exists()
    with pytest.raises(SystemExit, match="model.json does not exist"):
        predict.main(["--model", str(tmp_path), "-i", str(bad), "-o", str(tmp_path / "y.nii")])
