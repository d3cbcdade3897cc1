"""Organ label maps as DICOM: segmentation objects (highdicom) and RT structure sets (rt-utils).

Both reference the PET series they were predicted from: ``labels`` are on that series' grid,
indexed (column, row, slice) with slices in the order of ``PetVolume.headers`` (sorted along
the normal), as :func:`petseg_jax.data.dicom.read_pet` returns them.

* **DICOM-SEG** (:func:`write_seg`): a BINARY segmentation with one segment per organ present,
  SegmentLabel = the schema's organ name, SNOMED CT property type (and laterality) from
  :mod:`petseg_jax.data.organ_codes`, the organ's display colour; highdicom copies the patient
  and study attributes and references the source series (StudyInstanceUID,
  FrameOfReferenceUID, every source SOPInstanceUID).
* **RTSTRUCT** (:func:`write_rtstruct`): one ROI per organ present (contours per slice by
  rt-utils), named by the schema, in the organ's colour. rt-utils maps contour points with
  the row spacing on both in-plane axes, so series with non-square pixels are refused.

:func:`read_seg` reads a DICOM-SEG back as a schema label map on its own grid (RAS affine).
Files are written atomically (temporary file + rename).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from petseg_jax import __version__
from petseg_jax.data.dicom import LPS_TO_RAS, PetVolume
from petseg_jax.data.organ_codes import ANATOMICAL_STRUCTURE, organ_color_255, snomed
from petseg_jax.data.schema import LabelSchema
from petseg_jax.resources import write_atomic

MANUFACTURER = "petseg_jax"
SCT = "SCT"


def _organs_on_grid(labels: np.ndarray, volume: PetVolume, schema: LabelSchema,
                    what: str) -> tuple[np.ndarray, list[int]]:
    """``labels`` checked against the series grid, and the organ ids present in it; an error
    naming ``what`` (the object to write) when there is nothing to write."""
    if volume.multiframe:
        raise ValueError(f"series {volume.uid} is multi-frame PET: DICOM-SEG and RTSTRUCT are "
                         "written for single-frame series only (use --output-type nifti)")
    labels = np.asarray(labels)
    if labels.shape != volume.image.shape:
        raise ValueError(f"labels of shape {labels.shape} are not on the series grid "
                         f"{volume.image.shape}")
    ids = [int(i) for i in np.unique(labels) if i]
    bad = [i for i in ids if i >= schema.num_classes]
    if bad:
        raise ValueError(f"labels {bad} are not in the schema (1..{schema.num_classes - 1})")
    if not ids:
        raise ValueError(f"series {volume.uid}: no organ in the label map: no {what} to write")
    return labels, ids


def _segment_description(number: int, label_id: int, schema: LabelSchema):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    name = schema.name_of(label_id)
    code, meaning, laterality = snomed(name)
    prop = hd.sr.CodedConcept(code, SCT, meaning)
    if laterality is not None:  # a paired organ: the modifier rides on the property type
        prop.SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(laterality[0], SCT, laterality[1])]
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=name,
        segmented_property_category=Code(ANATOMICAL_STRUCTURE[0], SCT, ANATOMICAL_STRUCTURE[1]),
        segmented_property_type=prop,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=MANUFACTURER, version=__version__,
            family=codes.cid7162.ArtificialIntelligence),
        display_color=hd.color.CIELabColor.from_rgb(*organ_color_255(label_id)))


def write_seg(path: str | Path, labels: np.ndarray, volume: PetVolume, schema: LabelSchema,
              series_description: str = "petseg_jax organs") -> Path:
    """Write ``labels`` (on ``volume``'s grid) as a DICOM-SEG referencing its series."""
    import highdicom as hd

    labels, ids = _organs_on_grid(labels, volume, schema, "DICOM-SEG")
    segment_of = np.zeros(schema.num_classes, np.uint8)
    segment_of[ids] = np.arange(1, len(ids) + 1)
    pixels = segment_of[labels].transpose(2, 1, 0)  # (slices, rows, columns), as the headers
    seg = hd.seg.Segmentation(
        source_images=volume.headers, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description(n, i, schema) for n, i in
                              enumerate(ids, start=1)],
        series_instance_uid=hd.UID(), series_number=9001, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name="petseg_jax",
        software_versions=__version__, device_serial_number="0",
        series_description=series_description)
    return write_atomic(path, lambda tmp: seg.save_as(tmp))


def read_seg(path: str | Path, schema: LabelSchema) -> tuple[np.ndarray, np.ndarray]:
    """A DICOM-SEG as ``(labels, ras_affine)``: segments are matched to the schema by their
    SegmentLabel (the schema's organ name), overlaps are an error."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as e:  # highdicom/pydicom raise many types for a file that is not a SEG
        raise ValueError(f"{path}: not a readable DICOM-SEG ({type(e).__name__}: {e})") from None
    lut = np.zeros(len(seg.SegmentSequence) + 1, np.uint16)
    for item in seg.SegmentSequence:
        try:
            lut[int(item.SegmentNumber)] = schema.id_of(str(item.SegmentLabel))
        except KeyError:
            raise ValueError(f"{path}: segment {item.SegmentNumber} {item.SegmentLabel!r} is "
                             "not an organ of the label schema") from None
    volume = seg.get_volume(combine_segments=True, skip_overlap_checks=False)
    # highdicom volumes are (slice, row, column) on an LPS affine of those axes
    data = lut[np.asarray(volume.array)].transpose(2, 1, 0)
    affine = LPS_TO_RAS @ volume.affine @ np.array(
        [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    return data.astype(np.uint8 if schema.num_classes <= 256 else np.uint16), affine


def write_rtstruct(path: str | Path, labels: np.ndarray, volume: PetVolume, schema: LabelSchema,
                   series_description: str = "petseg_jax organs") -> Path:
    """Write ``labels`` (on ``volume``'s grid) as an RTSTRUCT of one ROI per organ present."""
    from rt_utils import RTStruct
    from rt_utils.ds_helper import create_rtstruct_dataset

    labels, ids = _organs_on_grid(labels, volume, schema, "RTSTRUCT")
    row_spacing, column_spacing = (float(v) for v in volume.headers[0].PixelSpacing)
    if abs(row_spacing - column_spacing) > 1e-4 * row_spacing:
        raise ValueError(f"series {volume.uid}: PixelSpacing {row_spacing} x {column_spacing} is "
                         "not square; rt-utils' contours would be distorted: use dicom_seg")
    headers = [_with_study_id(h) for h in volume.headers]
    rtstruct = RTStruct(headers, create_rtstruct_dataset(headers))
    rtstruct.set_series_description(series_description)
    for label_id in ids:
        mask = (labels == label_id).transpose(1, 0, 2)  # (rows, columns, slices)
        rtstruct.add_roi(mask=mask, name=schema.name_of(label_id),
                         color=list(organ_color_255(label_id)))
    rtstruct.ds.Manufacturer = MANUFACTURER
    return write_atomic(path, lambda tmp: rtstruct.ds.save_as(tmp, enforce_file_format=True))


def _with_study_id(ds: Dataset) -> Dataset:
    """rt-utils copies StudyID, a type-2 attribute that may be absent: give it the empty value."""
    if "StudyID" not in ds:
        ds = ds.copy()
        ds.StudyID = ""
    return ds
