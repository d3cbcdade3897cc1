"""NIfTI loading, RAS reorientation and world-consistent resampling."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from petseg_jax.data import nifti

GRADIENT = np.array([0.3, -0.2, 0.5])


def _world(shape, affine):
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _linear_field(shape, affine):
    """A linear function of world position: linear resampling reproduces it exactly."""
    return (_world(shape, affine) @ GRADIENT + 7).astype(np.float32)


def _oblique_lps_affine():
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-2.0, -2.5, 3.0])  # L, P, S with a 0.3 rad tilt
    aff[:3, 3] = [40.0, 30.0, -20.0]
    return aff


def _block_labels(shape, affine, centre, half, value):
    """A box of ``value`` around a world point."""
    inside = np.all(np.abs(_world(shape, affine) - centre) <= half, axis=-1)
    return np.where(inside, value, 0).astype(np.uint8)


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


# ---- loading -------------------------------------------------------------------------------

def test_load_image_float32_and_label_integer(tmp_path):
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    ints = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nifti.load(_save(tmp_path / "im.nii.gz", ints, aff))
    assert nifti.array(img).dtype == np.float32 and img.shape == (2, 3, 4)
    lab = nifti.load(_save(tmp_path / "lab.nii.gz", np.full((2, 3, 4), 7.0, np.float32), aff),
                     label=True)
    assert np.issubdtype(nifti.array(lab).dtype, np.integer)
    assert np.all(nifti.array(lab) == 7)
    np.testing.assert_allclose(lab.affine, aff)


def test_load_squeezes_single_frame(tmp_path):
    data = np.random.default_rng(0).random((3, 4, 5, 1)).astype(np.float32)
    img = nifti.load(_save(tmp_path / "im.nii.gz", data, np.eye(4)))
    assert img.shape == (3, 4, 5)
    np.testing.assert_array_equal(nifti.array(img), data[..., 0])


@pytest.mark.parametrize("problem, data, match", [
    ("frames", np.zeros((3, 4, 5, 2), np.float32), "one frame"),
    ("2d", np.zeros((3, 4), np.float32), "3-D"),
    ("nan", np.where(np.eye(4)[:, :, None] > 0, np.nan, 1.0).astype(np.float32), "NaN"),
    ("inf", np.full((2, 2, 2), np.inf, np.float32), "infinite"),
])
def test_load_rejects_bad_volumes(tmp_path, problem, data, match):
    path = _save(tmp_path / f"{problem}.nii.gz", data, np.eye(4))
    with pytest.raises(nifti.NiftiError, match=match) as err:
        nifti.load(path)
    assert str(path) in str(err.value)


def test_load_rejects_unreadable_and_truncated(tmp_path):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"this is not a nifti file")
    with pytest.raises(nifti.NiftiError, match="junk.nii.gz"):
        nifti.load(junk)
    noise = np.random.default_rng(0).random((30, 30, 30)).astype(np.float32)
    whole = _save(tmp_path / "whole.nii", noise, np.eye(4))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(whole.read_bytes())[:2000])
    with pytest.raises(nifti.NiftiError, match="cut.nii.gz"):
        nifti.load(cut)


def test_load_label_rejects_fractions(tmp_path):
    path = _save(tmp_path / "lab.nii.gz", np.full((2, 2, 2), 1.5, np.float32), np.eye(4))
    with pytest.raises(nifti.NiftiError, match="non-integer"):
        nifti.load(path, label=True)


# ---- orientation and spacing -----------------------------------------------------------------

def test_to_ras_keeps_world_values():
    aff = _oblique_lps_affine()
    img = nib.Nifti1Image(_linear_field((6, 7, 8), aff), aff)
    ras = nifti.to_ras(img)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    np.testing.assert_allclose(nifti.array(ras), _linear_field(ras.shape, ras.affine), atol=1e-4)
    np.testing.assert_allclose(nifti.ras_spacing(aff), nifti.voxel_spacing(ras.affine))


@pytest.mark.parametrize("spacing", [(4.0, 4.0, 4.0), (1.0, 1.5, 2.0)])
def test_resample_to_spacing_world_consistent(spacing):
    aff = np.array([[2.0, 0, 0, -30], [0, 3.0, 0, 12], [0, 0, 1.5, 80], [0, 0, 0, 1]])
    shape = (20, 15, 30)
    data, new_aff = nifti.resample_to_spacing(_linear_field(shape, aff), aff, spacing, order=1)
    expected_shape = np.round(np.array(shape) * [2.0, 3.0, 1.5] / spacing).astype(int)
    assert data.shape == tuple(expected_shape)
    np.testing.assert_allclose(nifti.voxel_spacing(new_aff), spacing)
    # Values equal the field at the new voxel centres (exact for a linear field, inside the FOV).
    np.testing.assert_allclose(data[1:-1, 1:-1, 1:-1],
                               _linear_field(data.shape, new_aff)[1:-1, 1:-1, 1:-1], atol=1e-3)
    # Same field-of-view centre.
    centre = lambda s, a: a[:3, :3] @ ((np.array(s) - 1) / 2) + a[:3, 3]  # noqa: E731
    np.testing.assert_allclose(centre(data.shape, new_aff), centre(shape, aff), atol=1e-9)


def test_resample_labels_nearest_keeps_values_and_position():
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    labels = _block_labels((40, 40, 40), aff, np.array([20.0, 14.0, 25.0]), 6.0, 5)
    out, new_aff = nifti.resample_to_spacing(labels, aff, (3.0, 2.0, 4.0), order=0)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 5}
    centroid = _world(out.shape, new_aff)[out == 5].mean(0)
    np.testing.assert_allclose(centroid, [20.0, 14.0, 25.0], atol=2.0)


def test_resample_to_reference_any_orientation():
    src_aff = np.array([[2.0, 0, 0, -20], [0, 2.0, 0, -20], [0, 0, 2.0, -20], [0, 0, 0, 1]])
    src = _linear_field((24, 24, 24), src_aff)
    ref_aff = _oblique_lps_affine()
    ref_aff[:3, 3] = [10.0, 8.0, -12.0]
    ref_shape = (8, 9, 10)
    out = nifti.resample_to_reference(src, src_aff, ref_shape, ref_aff, order=1)
    inside = np.all(np.abs(_world(ref_shape, ref_aff) - 3) < 22, axis=-1)
    assert inside.sum() > 100
    np.testing.assert_allclose(out[inside], _linear_field(ref_shape, ref_aff)[inside], atol=1e-3)


def test_resample_outside_field_of_view_is_zero():
    aff = np.eye(4)
    src = np.ones((10, 10, 10), np.float32)
    ref_aff = np.eye(4)
    ref_aff[:3, 3] = [-4.5, 0, 0]  # the first 4 target voxels lie left of the source
    for order in (0, 1, "majority"):
        data = src.astype(np.uint8) if order != 1 else src
        out = nifti.resample_to_reference(data, aff, (10, 10, 10), ref_aff, order=order)
        assert np.all(out[:4] == 0) and np.all(out[5:] == 1), order
        clamped = nifti.resample_to_reference(data, aff, (10, 10, 10), ref_aff, order=order,
                                              outside="nearest")
        assert np.all(clamped == 1)


def test_majority_vote_on_coarser_grid():
    # 2x2x2 source voxels per target voxel; 5 of 8 carry label 3, 3 of 8 carry label 1.
    src = np.ones((4, 2, 2), np.uint8)
    src[:2].reshape(-1)[:5] = 3
    src[2:] = 2
    ref_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    ref_aff[:3, 3] = 0.5
    out = nifti.resample_to_reference(src, np.eye(4), (2, 1, 1), ref_aff, order="majority")
    np.testing.assert_array_equal(out.ravel(), [3, 2])


def test_majority_equals_nearest_when_not_coarser():
    labels = _block_labels((20, 20, 20), np.eye(4), np.array([9.3, 10.0, 8.0]), 4.0, 2)
    ref_aff = np.diag([0.7, 0.8, 1.0, 1.0])
    ref_aff[:3, 3] = [1.1, 0.3, -0.2]
    args = (labels, np.eye(4), (25, 22, 20), ref_aff)
    np.testing.assert_array_equal(nifti.resample_to_reference(*args, order="majority"),
                                  nifti.resample_to_reference(*args, order=0))


def test_to_original_grid_round_trip(tmp_path):
    aff = _oblique_lps_affine()
    shape = (30, 24, 12)
    labels = _block_labels(shape, aff, aff[:3, :3] @ [15, 12, 6] + aff[:3, 3], 12.0, 4)
    original = nib.Nifti1Image(labels, aff)
    ras = nifti.to_ras(original)
    coarse, coarse_aff = nifti.resample_to_spacing(nifti.array(ras), ras.affine, (3, 3, 3), 0)
    back = nifti.to_original_grid(coarse, coarse_aff, original)
    assert back.shape == shape
    dice = 2 * np.sum((back == 4) & (labels == 4)) / (np.sum(back == 4) + np.sum(labels == 4))
    assert dice > 0.85
    same, same_aff = nifti.resample_to_spacing(nifti.array(ras), ras.affine,
                                               nifti.voxel_spacing(ras.affine), 0)
    np.testing.assert_array_equal(nifti.to_original_grid(same, same_aff, original), labels)


# ---- saving -----------------------------------------------------------------------------------

def test_save_like_preserves_header_and_label_dtype(tmp_path):
    aff = _oblique_lps_affine()
    ref = nib.Nifti1Image(np.zeros((5, 6, 7, 1), np.float32), aff)
    ref.set_qform(aff, code=1)
    ref.set_sform(aff, code=2)
    ref_path = tmp_path / "ref.nii.gz"
    nib.save(ref, str(ref_path))
    ref = nib.load(str(ref_path))
    labels = np.random.default_rng(1).integers(0, 24, (5, 6, 7)).astype(np.uint8)
    out = tmp_path / "labels.nii.gz"
    nifti.save_like(out, labels, ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz", "ref.nii.gz"]
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.uint8 and back.shape == (5, 6, 7)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels)
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-5)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2
    np.testing.assert_allclose(back.get_qform(), ref.get_qform(), atol=1e-5)
    with pytest.raises(ValueError, match="reference grid"):
        nifti.save_like(out, labels[:2], ref)


def test_save_writes_affine(tmp_path):
    aff = np.diag([2.0, 3.0, 4.0, 1.0])
    data = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    nifti.save(tmp_path / "x.nii.gz", data, aff)
    img = nifti.load(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(nifti.array(img), data)
    np.testing.assert_allclose(img.affine, aff)


@pytest.mark.parametrize("order,outside", [(1, "nearest"), (1, "zero"), (0, "nearest")])
def test_resampling_in_blocks_equals_one_block(monkeypatch, order, outside):
    """Resampling works in blocks of target planes (bounded memory) with the same result."""
    rng = np.random.default_rng(3)
    data = rng.random((9, 8, 23)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    ref_affine = np.diag([1.5, 2.5, 1.73, 1.0])  # no target point exactly between two voxels
    ref_affine[:3, 3] = [-1.1, 0.55, 2.03]
    whole = nifti.resample_to_reference(data, affine, (12, 7, 41), ref_affine, order, outside)
    monkeypatch.setattr(nifti, "_SAMPLE_BLOCK", 12 * 7 * 5)  # 5 planes per block
    blocks = nifti.resample_to_reference(data, affine, (12, 7, 41), ref_affine, order, outside)
    np.testing.assert_allclose(blocks, whole, rtol=0, atol=1e-6)
