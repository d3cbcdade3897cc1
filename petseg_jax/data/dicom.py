"""DICOM PET series in: discovery, geometry and voxel values (pydicom + numpy; no JAX).

* **Discovery.** Every file under a folder (recursively, whatever its name) whose bytes
  128-131 are the ``DICM`` preamble marker is a DICOM file; headers are read without pixel data
  and grouped by SeriesInstanceUID. PET series are those of PET Image Storage (or Modality
  ``PT``) and of Enhanced or Legacy Converted Enhanced (multi-frame) PET, whose volume highdicom
  builds; each frame then gets a header merged from the top level and its functional groups, so
  the SUV code reads both kinds alike (a true Enhanced PET file carries its units as a real-world
  value map, not Units (0054,1001): give ``--suv-factor`` for it).
* **Values.** Each slice's own RescaleSlope and RescaleIntercept (``value = stored * slope +
  intercept``), float32.
* **Geometry.** The array is indexed (i, j, k) = (column, row, slice). Slices are sorted along
  the normal ``n = row_dir x col_dir`` of ImageOrientationPatient (ascending ``IPP . n``); the
  affine's columns are ``row_dir * PixelSpacing[1]``, ``col_dir * PixelSpacing[0]`` and the
  step between the first and last ImagePositionPatient over ``n_slices - 1``; DICOM's LPS is
  turned into the RAS+ of our NIfTI files by negating x and y. A gap between neighbouring
  slices that differs from the median gap by more than 1 % (or two slices at one position)
  is an error naming the gap and the files.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
ENHANCED_PET_STORAGE = ("1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.128.1")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SPACING_TOLERANCE = 0.01  # relative deviation of a slice gap from the median gap


class DicomError(ValueError):
    """A DICOM folder or series that cannot be read as a PET volume."""


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` starts with the 128-byte preamble and the ``DICM`` marker."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def find_dicom_files(folder: str | Path) -> list[Path]:
    """Every DICOM file under ``folder`` (recursively, by the DICM marker), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_dicom_file(p))


def is_dicom_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding at least one DICOM file (anywhere below it)."""
    path = Path(path)
    return path.is_dir() and any(p.is_file() and is_dicom_file(p) for p in path.rglob("*"))


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """One series of a folder: its UID, description, modality and files."""

    uid: str
    description: str
    modality: str
    sop_class_uid: str
    files: tuple[Path, ...]

    @property
    def is_pet(self) -> bool:
        return self.sop_class_uid == PET_IMAGE_STORAGE or self.sop_class_uid in \
            ENHANCED_PET_STORAGE or self.modality == "PT"


def _read_header(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # pydicom raises many types for damaged files
        raise DicomError(f"{path}: unreadable DICOM ({type(e).__name__}: {e})") from None


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """Every series under ``folder``, ordered by description then UID."""
    files = find_dicom_files(folder)
    if not files:
        raise DicomError(f"{folder} holds no DICOM file (none with the DICM marker)")
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in files:
        ds = _read_header(path)
        uid = str(ds.get("SeriesInstanceUID", ""))
        if uid:  # DICOMDIR and other files without a series are not images
            groups[uid].append((path, ds))
    series = []
    for uid, members in groups.items():
        first = members[0][1]
        series.append(SeriesInfo(uid, str(first.get("SeriesDescription", "")),
                                 str(first.get("Modality", "")), str(first.get("SOPClassUID", "")),
                                 tuple(p for p, _ in members)))
    return sorted(series, key=lambda s: (s.description, s.uid))


def pet_series(folder: str | Path, uid: str | None = None) -> list[SeriesInfo]:
    """The PET series of ``folder`` (only the one with SeriesInstanceUID ``uid`` if given)."""
    series = list_series(folder)
    if uid is not None:
        chosen = [s for s in series if s.uid == uid]
        if not chosen:
            raise DicomError(f"{folder} holds no series {uid}; it has "
                             f"{', '.join(s.uid for s in series)} (see --list-series)")
        if not chosen[0].is_pet:
            raise DicomError(f"series {uid} is {chosen[0].modality or 'not PET'}, not PET")
        return chosen
    pet = [s for s in series if s.is_pet]
    if not pet:
        found = ", ".join(f"{s.modality or '?'} {s.uid}" for s in series)
        raise DicomError(f"{folder} holds no PET series (found: {found})")
    return pet


@dataclasses.dataclass
class PetVolume:
    """A PET series as a volume: float32 ``image`` (i, j, k) = (column, row, slice) in the
    units of the header (after each slice's rescale), its RAS ``affine``, and the headers
    (no pixel data) sorted like the slices; for a multi-frame file, one header per slice
    made of its top-level, shared and per-frame attributes (``multiframe`` is then true)."""

    info: SeriesInfo
    image: np.ndarray
    affine: np.ndarray
    headers: list[Dataset]
    multiframe: bool = False

    @property
    def uid(self) -> str:
        return self.info.uid


def _float_list(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        raise DicomError(f"{path}: {keyword} missing or not {n} numbers")
    return np.asarray([float(v) for v in value])


def _same(values: Iterable[np.ndarray], name: str, uid: str, atol: float = 1e-4) -> np.ndarray:
    values = list(values)
    for v in values[1:]:
        if v.shape != values[0].shape or not np.allclose(v, values[0], atol=atol):
            raise DicomError(f"series {uid}: {name} differs between slices "
                             f"({values[0].tolist()} vs {v.tolist()})")
    return values[0]


def _sorted_slices(datasets: list[tuple[Path, Dataset]], uid: str
                   ) -> tuple[list[tuple[Path, Dataset]], np.ndarray, np.ndarray]:
    """Slices sorted along the normal, with (row_dir, col_dir, normal) and the step vector."""
    orient = _same([_float_list(ds, "ImageOrientationPatient", 6, p) for p, ds in datasets],
                   "ImageOrientationPatient", uid)
    row, col = orient[:3], orient[3:]
    if not (abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3
            and abs(row @ col) < 1e-3):
        raise DicomError(f"series {uid}: ImageOrientationPatient {orient.tolist()} is not two "
                         "orthogonal unit vectors")
    normal = np.cross(row, col)
    positions = [_float_list(ds, "ImagePositionPatient", 3, p) for p, ds in datasets]
    order = np.argsort([pos @ normal for pos in positions], kind="stable")
    datasets = [datasets[i] for i in order]
    positions = np.array([positions[i] for i in order])
    along = positions @ normal
    if len(datasets) == 1:
        thickness = datasets[0][1].get("SpacingBetweenSlices") or datasets[0][1].get(
            "SliceThickness")
        if not thickness:
            raise DicomError(f"series {uid}: one slice without SliceThickness: no slice spacing")
        return datasets, np.stack([row, col, normal]), normal * float(thickness)
    gaps = np.diff(along)
    median = float(np.median(gaps))
    same = np.flatnonzero(gaps < 1e-3 * max(float(gaps.max()), 1.0))
    uneven = np.flatnonzero(np.abs(gaps - median) > SPACING_TOLERANCE * median)
    for what, bad in (("two slices at the same position", same),
                      ("uneven slice spacing", uneven)):
        if bad.size:
            i = int(bad[0])
            raise DicomError(
                f"series {uid}: {what}: gap of {gaps[i]:.4g} mm between slice {i} "
                f"({datasets[i][0].name}, {along[i]:.4g} mm along the normal) and slice {i + 1} "
                f"({datasets[i + 1][0].name}, {along[i + 1]:.4g} mm); the median gap is "
                f"{median:.4g} mm")
    step = (positions[-1] - positions[0]) / (len(datasets) - 1)
    return datasets, np.stack([row, col, normal]), step


def read_pet(info: SeriesInfo) -> PetVolume:
    """Read one PET series (see the module docstring) into a :class:`PetVolume`."""
    if info.sop_class_uid in ENHANCED_PET_STORAGE:
        return _read_multiframe(info)
    datasets = []
    for path in info.files:
        try:
            datasets.append((path, pydicom.dcmread(path)))
        except Exception as e:
            raise DicomError(f"{path}: unreadable DICOM ({type(e).__name__}: {e})") from None
    datasets, (row, col, _), step = _sorted_slices(datasets, info.uid)
    rows, cols = _same([np.array([int(ds.Rows), int(ds.Columns)]) for _, ds in datasets],
                       "Rows/Columns", info.uid)
    spacing = _same([_float_list(ds, "PixelSpacing", 2, p) for p, ds in datasets],
                    "PixelSpacing", info.uid)
    image = np.empty((int(cols), int(rows), len(datasets)), np.float32)
    headers = []
    for k, (path, ds) in enumerate(datasets):
        try:
            stored = ds.pixel_array
        except Exception as e:
            raise DicomError(f"{path}: cannot decode the pixel data ({type(e).__name__}: {e})"
                             ) from None
        slope = float(ds.get("RescaleSlope", 1.0))
        intercept = float(ds.get("RescaleIntercept", 0.0))
        image[:, :, k] = (stored.astype(np.float64) * slope + intercept).T
        del ds.PixelData
        headers.append(ds)
    lps = np.eye(4)
    lps[:3, 0] = row * spacing[1]  # along a row: the column index i, column spacing
    lps[:3, 1] = col * spacing[0]  # down a column: the row index j, row spacing
    lps[:3, 2] = step
    lps[:3, 3] = _float_list(datasets[0][1], "ImagePositionPatient", 3, datasets[0][0])
    if not np.all(np.isfinite(image)):
        raise DicomError(f"series {info.uid}: non-finite voxel values after rescale")
    return PetVolume(info, image, LPS_TO_RAS @ lps, headers)


_SWAP_IK = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)


def _frame_headers(ds: Dataset) -> list[Dataset]:
    """One single-frame-like header per frame: the top-level attributes (no pixel data or
    functional groups) with the shared and that frame's functional groups' items merged in,
    converted attributes of a legacy conversion included."""
    top = [elem for elem in ds if elem.keyword not in (
        "PixelData", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence")]
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    headers = []
    for frame in ds.PerFrameFunctionalGroupsSequence:
        h = Dataset()  # a new element dict per frame (Dataset(ds) and .copy() share theirs)
        for elem in top:
            h.add(elem)
        for groups in (shared, frame):
            for macro in groups:
                if macro.VR == "SQ" and len(macro.value):
                    for elem in macro.value[0]:
                        h[elem.tag] = elem
        when = h.get("FrameAcquisitionDateTime") or h.get("AcquisitionDateTime")
        if when and "AcquisitionTime" not in h:
            h.AcquisitionDate, h.AcquisitionTime = str(when)[:8], str(when)[8:]
        headers.append(h)
    return headers


def _read_multiframe(info: SeriesInfo) -> PetVolume:
    """An Enhanced or Legacy Converted Enhanced PET file (highdicom builds the volume, with
    each frame's own rescale); frames sorted along the normal like single-frame slices."""
    import highdicom as hd

    if len(info.files) != 1:
        raise DicomError(f"series {info.uid}: {len(info.files)} multi-frame files; one expected")
    path = info.files[0]
    try:
        image = hd.imread(path)
        volume = image.get_volume(dtype=np.float32)
    except Exception as e:  # highdicom raises several types for irregular frames
        raise DicomError(f"{path}: multi-frame PET not readable as a volume "
                         f"({type(e).__name__}: {e})") from None
    data = np.asarray(volume.array, np.float32).transpose(2, 1, 0)
    lps = np.asarray(volume.affine, float) @ _SWAP_IK
    headers = _frame_headers(image)
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    if lps[:3, 2] @ normal < 0:  # stack along the normal, as single-frame series are
        data = data[:, :, ::-1]
        lps = lps @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, data.shape[2] - 1],
                              [0, 0, 0, 1]], float)
    if len(headers) != data.shape[2]:
        raise DicomError(f"series {info.uid}: {len(headers)} frames for {data.shape[2]} slices")
    along = [_float_list(h, "ImagePositionPatient", 3, path) @ normal for h in headers]
    headers = [headers[i] for i in np.argsort(along, kind="stable")]
    if not np.all(np.isfinite(data)):
        raise DicomError(f"series {info.uid}: non-finite voxel values after rescale")
    return PetVolume(info, np.ascontiguousarray(data), LPS_TO_RAS @ lps, headers, True)


def series_table(series: Sequence[SeriesInfo]) -> str:
    """A plain-text table of series: UID, modality, number of slices, description."""
    lines = [f"{'SeriesInstanceUID':<64}  {'modality':<8}  {'slices':>6}  description"]
    lines += [f"{s.uid:<64}  {s.modality:<8}  {len(s.files):>6}  {s.description}"
              for s in series]
    return "\n".join(lines)
