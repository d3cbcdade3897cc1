"""Reference organ volumes of adults (ICRP Publication 89, 2002) for checking the phantom.

ICRP 89 gives reference masses (g) of the adult male and female. ``ICRP89_ML`` turns those of
the labeled organs into volumes (ml) with the tissue density, for the structure as the label
draws it: organ plus contents for the hollow organs (stomach, small intestine, colon,
gallbladder, urinary bladder) and the heart with the blood in its chambers; the lungs with
their air (mass over the density of inflated lung, 0.26 g/ml). Values were taken from ICRP 89's
reference-value tables as recalled for this project (not re-checked against the publication in
the session that wrote them; BUILD_NOTES.md, issue 15); organs the publication does not give
as the label draws them (trachea with its lumen, duodenum, aorta, vertebrae) are left out.

:func:`icrp89_range` widens the reference pair to the spread the phantom is meant to cover:
individual variation (ICRP 89: roughly 20-30 % standard deviation for solid organs) and
subjects of 150-200 cm and BMI 18-40; hollow organs vary with their filling.
"""

from __future__ import annotations

# organ -> (male ml, female ml, low factor on female, high factor on male)
_SOLID, _FILLED = (0.5, 1.7), (0.2, 2.5)
ICRP89_ML: dict[str, tuple[float, float, float, float]] = {
    "liver": (1800 / 1.06, 1400 / 1.06, *_SOLID),
    "spleen": (150 / 1.06, 130 / 1.06, *_SOLID),
    "kidney_right": (155 / 1.05, 137.5 / 1.05, *_SOLID),
    "kidney_left": (155 / 1.05, 137.5 / 1.05, *_SOLID),
    "pancreas": (140 / 1.05, 120 / 1.05, *_SOLID),
    "adrenal_gland_right": (7 / 1.03, 6.5 / 1.03, *_SOLID),
    "adrenal_gland_left": (7 / 1.03, 6.5 / 1.03, *_SOLID),
    "thyroid_gland": (20 / 1.05, 17 / 1.05, *_SOLID),
    "brain": (1450 / 1.04, 1300 / 1.04, *_SOLID),
    "spinal_cord": (30 / 1.04, 28 / 1.04, *_SOLID),
    "esophagus": (40 / 1.04, 35 / 1.04, *_SOLID),
    "heart": ((330 + 510) / 1.05, (250 + 370) / 1.05, *_SOLID),
    "lung_right": (1200 / 2 / 0.26, 950 / 2 / 0.26, *_SOLID),
    "lung_left": (1200 / 2 / 0.26, 950 / 2 / 0.26, *_SOLID),
    "stomach": ((150 + 250) / 1.04, (140 + 230) / 1.04, *_FILLED),
    "small_bowel": ((650 + 350) / 1.04, (600 + 280) / 1.04, *_FILLED),
    "colon": ((370 + 300) / 1.04, (360 + 320) / 1.04, *_FILLED),
    "gallbladder": ((8 + 58) / 1.03, (7 + 48) / 1.03, *_FILLED),
    "urinary_bladder": ((50 + 200) / 1.04, (40 + 200) / 1.04, *_FILLED),
}


def icrp89_range(organ: str) -> tuple[float, float]:
    """``(low, high)`` plausible adult volume (ml) of a labeled organ (module docstring)."""
    try:
        male, female, low, high = ICRP89_ML[organ]
    except KeyError:
        raise KeyError(f"no ICRP 89 reference volume for {organ!r} "
                       f"(known: {', '.join(ICRP89_ML)})") from None
    return female * low, male * high
