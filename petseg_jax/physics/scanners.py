"""Scanner classes: axial geometry, scatter and randoms fractions, OSEM protocol.

The axial sensitivity of a cylindrical scanner at a point on its axis is the fraction of the
photon pairs through it that both hit the detector and stay within the accepted ring
difference: with ring radius ``R`` and accepted half-span ``H(z) = min(z, L - z, D / 2)`` of
the detector around the point (``L`` the axial length, ``D`` the largest accepted axial extent
of a line of response), it is ``H / sqrt(H^2 + R^2)`` (the sine of the accepted angle). A
multi-bed scan adds one such profile per bed position, the beds overlapping by a fraction.

The figures are the published ones of the class's reference scanner (NEMA NU 2-2018 papers and
clinical protocols, listed with each class); where a paper gives a range, the value used is
noted in BUILD_NOTES.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FIELDS_OF_VIEW = ("total_body", "long_axial", "conventional")


@dataclasses.dataclass(frozen=True)
class ScannerClass:
    """A class of cylindrical PET scanner and its standard clinical reconstruction."""

    name: str
    axial_mm: float  # axial length of the detector (one bed)
    ring_radius_mm: float
    max_axial_span_mm: float  # largest accepted axial extent of a line of response
    bed_overlap: float  # fraction of a bed shared with the next (multi-bed only)
    scatter_fraction: float  # NEMA NU 2 scatter fraction
    randoms_fraction: float  # randoms / prompts at a clinical activity (assumed)
    osem_iterations: int
    osem_subsets: int
    source: str  # where the figures come from


SCANNER_CLASSES: dict[str, ScannerClass] = {c.name: c for c in (
    # uEXPLORER: 194 cm, ring diameter 786 mm, acceptance angle 57 deg (axial span 2 R tan 57),
    # SF 36% (Spencer et al., J Nucl Med 2021;62:861); TOF-OSEM 3 it x 20 subsets (Tan et al.,
    # Eur J Nucl Med Mol Imaging 2021;48:4174, clinical uEXPLORER protocol).
    ScannerClass("total_body", 1940.0, 393.0, 2 * 393.0 * np.tan(np.radians(57.0)), 0.0,
                 0.36, 0.30, 3, 20, "uEXPLORER"),
    # Biograph Vision Quadra: 106 cm, ring diameter 820 mm, clinical MRD 85 rings of 3.3 mm,
    # SF 37% (Prenosil et al., J Nucl Med 2022;63:476); PSF+TOF 4 it x 5 subsets (Alberts et
    # al., Eur J Nucl Med Mol Imaging 2021;48:2395).
    ScannerClass("long_axial", 1060.0, 410.0, 85 * 3.3, 0.0, 0.37, 0.25, 4, 5, "Quadra"),
    # Conventional 26 cm PET/CT (Biograph Vision 600), full acceptance, beds overlapping by
    # 45%, SF 33% (van Sluis et al., J Nucl Med 2019;60:1031); 4 it x 5 subsets (ibid.).
    ScannerClass("conventional", 263.0, 410.0, 263.0, 0.45, 0.33, 0.15, 4, 5,
                 "Biograph Vision 600"),
)}


def scanner_class(field_of_view: str) -> ScannerClass:
    """The scanner class of a field of view; a clear error for an unknown one."""
    try:
        return SCANNER_CLASSES[field_of_view]
    except KeyError:
        raise ValueError(f"unknown field_of_view {field_of_view!r} (known: "
                         f"{', '.join(FIELDS_OF_VIEW)})") from None


def _one_bed(z: np.ndarray, cls: ScannerClass) -> np.ndarray:
    """Sensitivity of one bed position at axial offsets ``z`` from its first ring."""
    half_span = np.minimum(np.minimum(z, cls.axial_mm - z), cls.max_axial_span_mm / 2)
    half_span = np.maximum(half_span, 0.0)
    return half_span / np.hypot(half_span, cls.ring_radius_mm)


def bed_starts(extent_mm: float, cls: ScannerClass) -> np.ndarray:
    """First-ring positions (mm from the scan's first slice) of the beds covering
    ``extent_mm``, centred on it; one bed when the scan fits in one.

    A one-bed class (``bed_overlap`` 0: total body, long axial) scans a longer extent (a
    106 cm field of view rounded up to whole slices, a subject taller than 194 cm) in two beds
    spread over it, the second moved by just the extra length: abutting beds would leave a
    slice of zero sensitivity between them, which no clinical bed plan does.
    """
    step = cls.axial_mm * (1.0 - cls.bed_overlap)
    beds = 1 if extent_mm <= cls.axial_mm else int(np.ceil((extent_mm - cls.axial_mm) / step)) + 1
    if beds > 1 and cls.bed_overlap == 0.0:
        step = (extent_mm - cls.axial_mm) / (beds - 1)
    span = cls.axial_mm + (beds - 1) * step
    return (extent_mm - span) / 2 + step * np.arange(beds)


def axial_sensitivity(nz: int, dz: float, field_of_view: str) -> np.ndarray:
    """Relative sensitivity (peak 1) of each of ``nz`` slices ``dz`` mm apart, the scan centred
    in its scanner (or tiled by overlapping beds). Slices outside the detector get 0."""
    cls = scanner_class(field_of_view)
    z = (np.arange(nz) + 0.5) * dz
    profile = sum(_one_bed(z - start, cls) for start in bed_starts(nz * dz, cls))
    return (profile / profile.max()).astype(np.float32)
