"""Label transfer from real TotalSegmentator outputs onto synthetic PET grids."""

import nibabel as nib
import numpy as np
import pytest

from petseg_jax.data import nifti
from petseg_jax.data.labels_from_totalseg import main, transfer_labels
from petseg_jax.data.schema import DEFAULT_SCHEMA, totalseg_lut

PET_MM = 4.0
MIN_ML = 20.0  # organs compared by centroid and volume (smaller ones are a few PET voxels)


def _world(shape, affine):
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _organ_stats(labels, affine):
    """{schema id: (centroid in world mm, volume in ml)} for every organ present."""
    world = _world(labels.shape, affine)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    return {int(i): (world[labels == i].mean(0), np.sum(labels == i) * voxel_ml)
            for i in np.unique(labels) if i}


def _pet_grid(seg, flips=(1, 1, 1), margin_mm=12.0, crop=None):
    """A PET-like grid (4 mm, own orientation, origin off the CT grid) covering the CT's field
    of view plus a margin; ``crop`` keeps a fraction of the R-L extent."""
    corners = _world((2, 2, 2), seg.affine @ np.diag([*(np.array(seg.shape) - 1), 1]))
    lo, hi = corners.reshape(-1, 3).min(0) - margin_mm, corners.reshape(-1, 3).max(0) + margin_mm
    if crop is not None:
        hi[0] = lo[0] + crop * (hi[0] - lo[0])
    shape = np.ceil((hi - lo) / PET_MM).astype(int) + 1
    ras = np.diag([PET_MM, PET_MM, PET_MM, 1.0])
    ras[:3, 3] = lo + 0.37  # never aligned with the CT voxel grid
    flip = np.eye(4)  # same voxel centres, axes reversed where flips == -1
    for ax, f in enumerate(flips):
        if f < 0:
            flip[ax, ax], flip[ax, 3] = -1, shape[ax] - 1
    return nib.Nifti1Image(np.zeros(shape, np.float32), ras @ flip)


@pytest.fixture(scope="module")
def seg(totalseg_dir):
    return nifti.load(totalseg_dir / "example_seg.nii.gz", label=True)


@pytest.fixture(scope="module")
def seg_dicom(totalseg_dir):
    return nifti.load(totalseg_dir / "example_seg_dicom.nii.gz", label=True)


def _assert_same_organs(seg, out, reference):
    source = _organ_stats(totalseg_lut()[nifti.array(seg)], seg.affine)
    target = _organ_stats(out, reference.affine)
    large = [i for i, (_, ml) in source.items() if ml >= MIN_ML]
    assert len(large) >= 4
    for i in large:
        name = DEFAULT_SCHEMA.name_of(i)
        assert i in target, name
        dist = np.linalg.norm(target[i][0] - source[i][0])
        assert dist < PET_MM, f"{name}: centroid moved {dist:.1f} mm"
        assert abs(target[i][1] / source[i][1] - 1) < 0.10, (name, source[i][1], target[i][1])
    assert set(target) <= set(source)


@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, 1, 1), (-1, -1, 1)], ids=["RAS", "LAS", "LPS"])
def test_transfer_keeps_organ_positions_and_volumes(seg, flips):
    reference = _pet_grid(seg, flips)
    out = transfer_labels(seg, reference)
    assert out.shape == reference.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(range(DEFAULT_SCHEMA.num_classes))
    _assert_same_organs(seg, out, reference)


def test_flipped_reference_gives_same_world_labels(seg):
    ras = _pet_grid(seg)
    lps = _pet_grid(seg, (-1, -1, 1))
    out_ras = transfer_labels(seg, ras)
    out_lps = transfer_labels(seg, lps)
    np.testing.assert_array_equal(nifti.array(nifti.to_ras(nib.Nifti1Image(out_lps, lps.affine))),
                                  out_ras)


def test_lung_lobes_merge_and_unmapped_ids_vanish(seg):
    # Same grid as the CT: the transfer is exactly the lookup table.
    out = transfer_labels(seg, seg, method="nearest")
    ts = nifti.array(seg)
    np.testing.assert_array_equal(out, totalseg_lut()[ts])
    lung_right = DEFAULT_SCHEMA.id_of("lung_right")
    assert np.all(out[np.isin(ts, (12, 13, 14))] == lung_right)
    assert np.all(out[ts == 117] == 0)  # a TotalSegmentator class outside the schema


def test_translated_grid_is_not_an_index_copy(seg):
    ref_aff = seg.affine.copy()
    ref_aff[:3, 3] += seg.affine[:3, :3] @ [5, -3, 2]  # shift by whole CT voxels
    reference = nib.Nifti1Image(np.zeros(seg.shape, np.float32), ref_aff)
    out = transfer_labels(seg, reference, method="nearest")
    expected = totalseg_lut()[nifti.array(seg)][5:, :, 2:]
    np.testing.assert_array_equal(out[:-5, 3:, :-2], expected[:, :-3])
    assert np.all(out[-5:] == 0) and np.all(out[:, :3] == 0)


def test_cropped_field_of_view(seg):
    reference = _pet_grid(seg, (-1, 1, 1), crop=0.5)
    out = transfer_labels(seg, reference)
    world_x = _world(out.shape, reference.affine)[..., 0]
    assert out.any() and world_x[out > 0].max() <= world_x.max() + 1e-6
    assert DEFAULT_SCHEMA.id_of("liver") in out  # the subject's right half (world x < 0)


def test_dicom_las_anisotropic(seg_dicom):
    assert nib.aff2axcodes(seg_dicom.affine) == ("L", "A", "S")
    reference = _pet_grid(seg_dicom)
    out = transfer_labels(seg_dicom, reference)
    _assert_same_organs(seg_dicom, out, reference)


def test_cli_writes_labels_on_reference_grid(tmp_path, totalseg_dir, seg_dicom):
    ref = _pet_grid(seg_dicom, (-1, -1, 1))
    ref = nib.Nifti1Image(np.zeros(ref.shape + (1,), np.float32), ref.affine)
    ref.set_sform(ref.affine, code=2)
    nib.save(ref, str(tmp_path / "pet.nii.gz"))
    out = tmp_path / "labels.nii.gz"
    rc = main(["--seg", str(totalseg_dir / "example_seg_dicom.nii.gz"),
               "--reference", str(tmp_path / "pet.nii.gz"), "--out", str(out)])
    assert rc == 0
    written = nib.load(str(out))
    assert written.shape == ref.shape[:3] and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, ref.affine, atol=1e-4)
    assert int(written.header["sform_code"]) == 2
    expected = transfer_labels(seg_dicom, nib.load(str(tmp_path / "pet.nii.gz")))
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), expected)


def test_cli_errors(tmp_path, totalseg_dir, capsys):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"nope")
    seg = str(totalseg_dir / "example_seg.nii.gz")
    assert main(["--seg", seg, "--reference", str(junk), "--out", str(tmp_path / "o.nii.gz")]) == 1
    assert "junk.nii.gz" in capsys.readouterr().err
    bad = tmp_path / "bad_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), 300, np.int16), np.eye(4)), str(bad))
    assert main(["--seg", str(bad), "--reference", seg, "--out", str(tmp_path / "o.nii.gz")]) == 1
    assert "bad_seg.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()
