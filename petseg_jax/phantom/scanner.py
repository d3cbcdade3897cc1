"""Scanner model of the synthetic PET phantom: the join between a subject and the physics.

A subject enters only through its activity (Bq/ml) and attenuation (1/mm at 511 keV) maps.
A scan of it (:func:`simulate_scans`) is made the way a scanner makes one
(:mod:`petseg_jax.physics`):

1. resolution: the scanner's intrinsic PSF (a Gaussian of the center's FWHM) on the activity;
2. acquisition: rebinned sinograms of the attenuated activity with the axial sensitivity
   profile of the field of view's scanner class, plus scatter and randoms; one Poisson draw of
   the full-dose prompts, at the center's count level times the tracer's count yield;
3. low dose: binomial thinning of those counts by each dose reduction factor ``k``;
4. reconstruction: OSEM with the class's protocol, attenuation- and scatter-corrected (AC) or
   neither (NAC, from the same counts), then the center's post-filter and calibration.

The center gives the resolution, post-filter, count level and calibration; the field of view
(drawn independently of the center) gives the scanner geometry and its OSEM protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from petseg_jax.physics.acquisition import Scan
from petseg_jax.physics.reconstruction import gaussian_blur
from petseg_jax.physics.simulation import Condition, Imaging, simulate
from petseg_jax.physics.simulation import acquire as physics_acquire

__all__ = ["CENTERS", "Center", "acquire", "gaussian_blur", "simulate_scan", "simulate_scans"]


@dataclasses.dataclass(frozen=True)
class Center:
    """A site: its scanner's resolution, reconstruction grid, count level and calibration."""

    name: str
    psf_fwhm_mm: float  # intrinsic resolution of the scanner (NEMA, near the centre)
    post_fwhm_mm: float  # Gaussian post-filter of the site's clinical protocol
    spacing: tuple[float, float, float]
    counts_per_kbq: float  # expected trues per kBq of unattenuated activity, axial peak, k = 1
    calibration: float  # cross-calibration factor of the site's images
    # The site's stated image resolution (point source, FWHM). PSF OSEM at clinical iterations
    # leaves part of the PSF unrecovered (2.3-2.9 mm of 5 mm, BUILD_NOTES.md session 5), and
    # the post-filter adds to that: a site whose PSF is wide uses a narrower post-filter.
    resolution_fwhm_mm: float

    @property
    def imaging(self) -> Imaging:
        """How the site reconstructs: PSF modelled, post-filter, calibration."""
        return Imaging(self.psf_fwhm_mm, self.post_fwhm_mm, self.calibration)


# count levels: NEMA NU 2-2018 sensitivity x a clinical acquisition time (BUILD_NOTES.md)
CENTERS: dict[str, Center] = {c.name: c for c in (
    # uEXPLORER class: 174 cps/kBq x 300 s
    Center("center_a", 3.0, 3.0, (4.0, 4.0, 4.0), 52000.0, 1.00, 3.0),
    # Quadra class: 83 cps/kBq (MRD 85) x 300 s
    Center("center_b", 3.6, 4.0, (3.6, 3.6, 4.0), 25000.0, 0.97, 4.0),
    # conventional PET/CT: 16.4 cps/kBq x 180 s per bed; a 4.25 mm post-filter on top of the
    # unrecovered part of its 5 mm PSF gives its stated 5 mm (4.5-5.4 mm over the protocols)
    Center("center_c", 5.0, 4.25, (4.8, 4.8, 4.0), 3000.0, 1.04, 5.0),
)}

def simulate_scans(activity: np.ndarray, mu: np.ndarray, spacing, center: Center,
                   conditions: Sequence[Condition], count_yield: float,
                   rng: np.random.Generator, field_of_view: str = "total_body"
                   ) -> dict[Condition, np.ndarray]:
    """PET images (float32 Bq/ml; NAC in uncorrected Bq/ml) of one acquisition, one per
    ``(dose_reduction_factor, attenuation_corrected)`` condition; the full-dose counts are
    drawn once and thinned for each factor (:func:`petseg_jax.physics.simulation.simulate`)."""
    scan = acquire(activity, mu, spacing, center, count_yield, field_of_view)
    return simulate(scan, conditions, rng, center.imaging)


def acquire(activity: np.ndarray, mu: np.ndarray, spacing, center: Center, count_yield: float,
            field_of_view: str = "total_body") -> Scan:
    """The expected full-dose data of a subject scanned at ``center``."""
    if not count_yield > 0:
        raise ValueError(f"count_yield must be > 0, got {count_yield}")
    return physics_acquire(activity, mu, spacing, field_of_view,
                           center.counts_per_kbq * count_yield / 1000.0, center.psf_fwhm_mm)


def simulate_scan(activity: np.ndarray, mu: np.ndarray, spacing, center: Center,
                  dose_reduction_factor: float, attenuation_corrected: bool, count_yield: float,
                  rng: np.random.Generator, field_of_view: str = "total_body") -> np.ndarray:
    """One PET image (float32, Bq/ml; NAC images in uncorrected Bq/ml) of an activity volume."""
    condition = (float(dose_reduction_factor), bool(attenuation_corrected))
    return simulate_scans(activity, mu, spacing, center, [condition], count_yield, rng,
                          field_of_view)[condition]
