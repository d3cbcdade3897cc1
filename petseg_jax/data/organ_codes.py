"""What an organ is called outside this project: SNOMED CT codes and display colours.

DICOM-SEG segments carry a SNOMED CT property type (with a laterality modifier for paired
organs), under the category "Anatomical structure" (SCT 123037004); the codes are those
TotalSegmentator and DCMR CID 7150/7151 use for the same structures. Colours are one per label
id, shared by the DICOM outputs, the prediction preview and the evaluation figures.
"""

from __future__ import annotations

import colorsys

ANATOMICAL_STRUCTURE = ("123037004", "Anatomical Structure")
RIGHT = ("24028007", "Right")
LEFT = ("7771000", "Left")

# schema organ name -> (SNOMED CT code, meaning, laterality modifier or None)
SNOMED: dict[str, tuple[str, str, tuple[str, str] | None]] = {
    "spleen": ("78961009", "Spleen", None),
    "kidney_right": ("64033007", "Kidney", RIGHT),
    "kidney_left": ("64033007", "Kidney", LEFT),
    "gallbladder": ("28231008", "Gallbladder", None),
    "liver": ("10200004", "Liver", None),
    "stomach": ("69695003", "Stomach", None),
    "pancreas": ("15776009", "Pancreas", None),
    "adrenal_gland_right": ("23451007", "Adrenal gland", RIGHT),
    "adrenal_gland_left": ("23451007", "Adrenal gland", LEFT),
    "lung_left": ("39607008", "Lung", LEFT),
    "lung_right": ("39607008", "Lung", RIGHT),
    "esophagus": ("32849002", "Esophagus", None),
    "trachea": ("44567001", "Trachea", None),
    "thyroid_gland": ("69748006", "Thyroid gland", None),
    "small_bowel": ("30315005", "Small intestine", None),
    "duodenum": ("38848004", "Duodenum", None),
    "colon": ("71854001", "Colon", None),
    "urinary_bladder": ("89837001", "Urinary bladder", None),
    "vertebrae": ("421060004", "Spine", None),
    "heart": ("80891009", "Heart", None),
    "aorta": ("15825003", "Aorta", None),
    "spinal_cord": ("2748008", "Spinal cord", None),
    "brain": ("12738006", "Brain", None),
}


def snomed(name: str) -> tuple[str, str, tuple[str, str] | None]:
    """(code, meaning, laterality modifier) of a schema organ; KeyError naming it if unknown."""
    try:
        return SNOMED[name]
    except KeyError:
        raise KeyError(f"organ {name!r} has no SNOMED CT code (petseg_jax.data.organ_codes."
                       "SNOMED): DICOM-SEG output needs one") from None


def organ_color(label_id: int) -> tuple[float, float, float]:
    """A saturated colour per label id (RGB in [0, 1]): golden-ratio hue steps, alternating
    brightness, so neighbouring ids differ."""
    hue = (label_id * 0.618034) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.9, 0.85 if label_id % 2 else 0.6)


def organ_color_255(label_id: int) -> tuple[int, int, int]:
    """:func:`organ_color` as 8-bit RGB."""
    return tuple(int(round(c * 255)) for c in organ_color(label_id))
