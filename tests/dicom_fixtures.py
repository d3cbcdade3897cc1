"""Synthetic PET DICOM series written with pydicom (test helper, no downloads).

:func:`write_pet_series` stores a float volume (i, j, k) = (column, row, slice) on a RAS affine as
PET Image Storage files: one uint16 slice per file with its own RescaleSlope, under nested
folders with meaningless names, in shuffled order. It returns the values a reader must find
(the stored integers times each slope).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PET_SOP = "1.2.840.10008.5.1.4.1.1.128"
F18_HALF_LIFE_S = 6586.2
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def oblique_affine(spacing=(4.0, 4.0, 3.0), angle_deg=20.0, origin=(120.0, -90.0, -400.0)
                   ) -> np.ndarray:
    """A RAS affine of an LPS-ordered grid (i -> L, j -> P, k -> S: DICOM axial) rotated by
    ``angle_deg`` about the A axis (oblique)."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing) @ np.diag([-1.0, -1.0, 1.0])  # DICOM axial: i->L, j->P
    affine[:3, 3] = origin
    return affine


def _dicom_time(t: dt.datetime) -> tuple[str, str]:
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S.%f")


def write_pet_series(folder: Path, volume: np.ndarray, affine_ras: np.ndarray, *,
                     series_time: dt.datetime = dt.datetime(2024, 5, 1, 10, 30),
                     injection: dt.datetime | None = dt.datetime(2024, 5, 1, 9, 30),
                     dose_bq: float | None = 350e6, half_life_s: float | None = F18_HALF_LIFE_S,
                     weight_kg: float | None = 70.0, height_m: float | None = 1.75,
                     sex: str | None = "M", units: str = "BQML", decay: str = "START",
                     description: str = "PET WB", study_uid: str | None = None,
                     frame_uid: str | None = None, seed: int = 0,
                     slice_positions: np.ndarray | None = None,
                     extra: dict | None = None) -> np.ndarray:
    """Write ``volume`` as a PET series under ``folder``; returns the dequantized volume.

    ``slice_positions`` (mm along the slice axis, one per slice) replaces the affine's even
    slice steps (for uneven-spacing tests); ``extra`` sets (or, with None, deletes) header
    keywords on every slice.
    """
    rng = np.random.default_rng(seed)
    lps = LPS @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    normal = np.cross(row_dir, col_dir)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), frame_uid or generate_uid()
    expected = np.empty(volume.shape, np.float32)
    order = rng.permutation(volume.shape[2])
    for n, k in enumerate(int(k) for k in order):
        plane = volume[:, :, k].T  # (rows, columns)
        slope = max(float(plane.max()), 1e-3) / 30000.0 * (1.0 + 0.1 * k)
        stored = np.round(plane / slope).astype(np.uint16)
        if slice_positions is None:
            ipp = (lps @ [0, 0, k, 1])[:3]
        else:
            ipp = lps[:3, 3] + normal * slice_positions[k]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = PET_SOP
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = PET_SOP
        ds.Modality = "PT"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Test^Phantom", "P001", "19700101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate, ds.StudyTime = _dicom_time(series_time)
        ds.SeriesDate, ds.SeriesTime = _dicom_time(series_time)
        ds.AcquisitionDate, ds.AcquisitionTime = _dicom_time(series_time
                                                             + dt.timedelta(seconds=10 * k))
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "A1", ""
        ds.SeriesNumber, ds.InstanceNumber = 1, int(n) + 1
        ds.SeriesDescription = description
        ds.Manufacturer = "petseg_jax tests"
        ds.Units, ds.DecayCorrection = units, decay
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [float(v) for v in ipp]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing, column spacing
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", "0"
        expected[:, :, k] = (stored.astype(np.float64) * float(f"{slope:.10g}")).T
        ds.FrameReferenceTime = 1000.0 * 10 * k
        ds.PixelData = stored.tobytes()
        for key, value in (("PatientWeight", weight_kg), ("PatientSize", height_m),
                           ("PatientSex", sex)):
            if value is not None:
                setattr(ds, key, value)
        rp = Dataset()
        if dose_bq is not None:
            rp.RadionuclideTotalDose = dose_bq
        if half_life_s is not None:
            rp.RadionuclideHalfLife = half_life_s
        if injection is not None:
            rp.RadiopharmaceuticalStartDateTime = injection.strftime("%Y%m%d%H%M%S.%f")
        ds.RadiopharmaceuticalInformationSequence = [rp]
        for key, value in (extra or {}).items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value)
        path = folder / f"d{rng.integers(100)}" / f"x{rng.integers(1 << 40):x}"
        path.parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return expected


def pet_like(shape=(20, 16, 12), seed: int = 0) -> np.ndarray:
    """A smooth positive volume with two hot boxes (Bq/ml scale)."""
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 2000.0, shape).astype(np.float32)
    image[3:12, 4:12, 2:8] += 20000.0
    image[13:18, 2:6, 5:11] += 60000.0
    return image
