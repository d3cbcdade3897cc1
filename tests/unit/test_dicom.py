"""DICOM PET series: discovery by the DICM marker, per-slice rescale, geometry equal to the same
data written as NIfTI (oblique and LPS-ordered grids), sorting, uneven spacing, several series,
multi-frame (legacy converted enhanced) PET."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_fixtures import oblique_affine, pet_like, write_pet_series

from petseg_jax.data import dicom, nifti, suv
from petseg_jax.data.schema import DEFAULT_SCHEMA
from petseg_jax.inference.dicom_output import write_seg


@pytest.fixture(scope="module")
def two_series(tmp_path_factory):
    """A folder with an oblique PET series, a second axial one and a non-DICOM file."""
    folder = tmp_path_factory.mktemp("dicom")
    affine = oblique_affine()
    expected = write_pet_series(folder, pet_like(), affine, description="PET WB")
    axial = np.diag([-3.0, -3.0, 4.0, 1.0])  # plain DICOM axial: i -> L, j -> P
    second = write_pet_series(folder, pet_like((8, 8, 5), seed=1), axial, description="PET NAC",
                              seed=1)
    (folder / "notes.dcm").write_text("not DICOM, whatever the name says")
    return folder, {"PET WB": (expected, affine), "PET NAC": (second, axial)}


def test_series_are_found_recursively_by_the_dicm_marker(two_series):
    folder, expected = two_series
    series = dicom.list_series(folder)
    assert sorted(s.description for s in series) == ["PET NAC", "PET WB"]
    assert all(s.is_pet for s in series)
    assert {s.description: len(s.files) for s in series} == {"PET WB": 12, "PET NAC": 5}
    table = dicom.series_table(series)
    assert all(s.uid in table for s in series) and "PET NAC" in table
    one = dicom.pet_series(folder, series[0].uid)
    assert [s.uid for s in one] == [series[0].uid]
    with pytest.raises(dicom.DicomError, match="no series 1.2.3"):
        dicom.pet_series(folder, "1.2.3")


def test_volume_and_affine_equal_the_same_data_as_nifti(two_series, tmp_path):
    folder, expected = two_series
    for info in dicom.list_series(folder):
        values, affine = expected[info.description]
        volume = dicom.read_pet(info)
        path = tmp_path / f"{info.description}.nii.gz"
        nib.save(nib.Nifti1Image(values, affine), path)
        ref = nifti.load(path)
        assert volume.image.dtype == np.float32
        np.testing.assert_allclose(volume.image, nifti.array(ref), rtol=1e-6)
        np.testing.assert_allclose(volume.affine, ref.affine, atol=1e-4)
        positions = [h.ImagePositionPatient[2] for h in volume.headers]
        normal = np.cross(*np.reshape(volume.headers[0].ImageOrientationPatient, (2, 3)))
        along = [np.dot(h.ImagePositionPatient, normal) for h in volume.headers]
        assert np.all(np.diff(along) > 0), positions  # sorted along the normal
        assert "PixelData" not in volume.headers[0]
    # per-slice slopes: one slope for all slices would not reproduce the values
    slopes = {float(h.RescaleSlope) for h in dicom.read_pet(dicom.list_series(folder)[1]).headers}
    assert len(slopes) > 1


def test_slices_stacked_against_the_normal_come_back_along_it(tmp_path):
    affine = np.diag([-4.0, -4.0, -3.0, 1.0])  # k runs feet-ward: opposite to i x j
    values = write_pet_series(tmp_path, pet_like((6, 6, 7)), affine)
    volume = dicom.read_pet(dicom.list_series(tmp_path)[0])
    np.testing.assert_allclose(volume.image, values[:, :, ::-1], rtol=1e-6)
    flipped = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 6], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(volume.affine, flipped, atol=1e-6)


def test_uneven_spacing_names_the_gap(tmp_path):
    positions = np.array([0.0, 3.0, 6.0, 12.0, 15.0])
    write_pet_series(tmp_path, pet_like((6, 6, 5)), np.diag([-4.0, -4.0, 3.0, 1.0]),
                     slice_positions=positions)
    with pytest.raises(dicom.DicomError, match=r"uneven slice spacing: gap of 6 mm between "
                       r"slice 2 .* and slice 3 .*the median gap is 3 mm"):
        dicom.read_pet(dicom.list_series(tmp_path)[0])


def test_duplicate_slices_and_bad_folders(tmp_path):
    write_pet_series(tmp_path / "a", pet_like((6, 6, 3)), np.diag([-4.0, -4.0, 3.0, 1.0]),
                     slice_positions=np.array([0.0, 3.0, 3.0]))
    with pytest.raises(dicom.DicomError, match="two slices at the same position"):
        dicom.read_pet(dicom.list_series(tmp_path / "a")[0])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(dicom.DicomError, match="no DICOM file"):
        dicom.list_series(tmp_path / "empty")
    ct = tmp_path / "ct"
    write_pet_series(ct, pet_like((4, 4, 2)), np.diag([-1.0, -1.0, 1.0, 1.0]),
                     extra={"Modality": "CT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"})
    with pytest.raises(dicom.DicomError, match="no PET series"):
        dicom.pet_series(ct)


def test_multiframe_pet_reads_like_its_single_frames(tmp_path):
    """A Legacy Converted Enhanced PET file (highdicom's conversion of the synthetic series)."""
    affine = oblique_affine()
    write_pet_series(tmp_path / "single", pet_like(), affine, decay="NONE")
    single = dicom.read_pet(dicom.list_series(tmp_path / "single")[0])
    sources = [pydicom.dcmread(f) for f in dicom.list_series(tmp_path / "single")[0].files]
    multi = hd.legacy.LegacyConvertedEnhancedPETImage(
        sources, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
        instance_number=1)
    (tmp_path / "multi").mkdir()
    multi.save_as(tmp_path / "multi" / "frames")
    info = dicom.list_series(tmp_path / "multi")[0]
    assert info.is_pet and len(info.files) == 1
    volume = dicom.read_pet(info)
    assert volume.multiframe and len(volume.headers) == volume.image.shape[2]
    np.testing.assert_allclose(volume.image, single.image, rtol=1e-6)
    np.testing.assert_allclose(volume.affine, single.affine, atol=1e-4)
    # per-frame FrameReferenceTime (DecayCorrection NONE) and the series times read alike
    assert suv.from_headers(volume.headers) == suv.from_headers(single.headers)
    with pytest.raises(ValueError, match="multi-frame PET: DICOM-SEG and RTSTRUCT"):
        write_seg(tmp_path / "seg.dcm", np.ones(volume.image.shape, np.uint8), volume,
                  DEFAULT_SCHEMA)
