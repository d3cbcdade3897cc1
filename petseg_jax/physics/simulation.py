"""A scan from start to finish: acquisition, one Poisson draw, thinning, reconstruction.

:func:`acquire` turns an activity map (Bq/ml) and a 511 keV attenuation map (1/mm) into the
expected full-dose data, after the scanner's intrinsic PSF (a Gaussian) on the activity.
:func:`simulate` draws the full-dose counts once, thins them binomially for each dose reduction
factor (the analogue of list-mode subsampling) and reconstructs each condition with
:func:`image_of`: OSEM with the PSF modelled, the site's post-filter and calibration, AC or NAC
from the same counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from petseg_jax.physics.acquisition import Scan, draw_counts, expected_scan, thin_counts
from petseg_jax.physics.reconstruction import gaussian_blur, reconstruct

Condition = tuple[float, bool]  # (dose reduction factor, attenuation corrected)


@dataclasses.dataclass(frozen=True)
class Imaging:
    """How a site makes its images: PSF (modelled in OSEM), post-filter, calibration."""

    psf_fwhm_mm: float
    post_fwhm_mm: float
    calibration: float = 1.0
    iterations: int | None = None  # None: the scanner class's protocol


def acquire(activity: np.ndarray, mu: np.ndarray, spacing, field_of_view: str,
            sensitivity: float, psf_fwhm_mm: float) -> Scan:
    """Expected full-dose data of ``activity`` seen through a Gaussian PSF of ``psf_fwhm_mm``
    (``sensitivity``: trues per Bq at the axial peak, before attenuation)."""
    blurred = np.asarray(activity, np.float32)
    if psf_fwhm_mm > 0:
        blurred = gaussian_blur(blurred, psf_fwhm_mm, spacing)
    return expected_scan(blurred, mu, spacing, field_of_view, sensitivity)


def image_of(scan: Scan, counts: np.ndarray, dose_reduction_factor: float,
             attenuation_corrected: bool, imaging: Imaging) -> np.ndarray:
    """The site's image (float32 Bq/ml) of ``counts``; ``counts = scan.prompts`` (expected, not
    drawn) gives the noise-free image."""
    image = reconstruct(scan, counts, dose_reduction_factor, attenuation_corrected,
                        imaging.iterations, imaging.psf_fwhm_mm)
    if imaging.post_fwhm_mm > 0:
        image = gaussian_blur(image, imaging.post_fwhm_mm, scan.spacing)
    return (image * np.float32(imaging.calibration)).astype(np.float32)


def simulate(scan: Scan, conditions: Sequence[Condition], rng: np.random.Generator,
             imaging: Imaging) -> dict[Condition, np.ndarray]:
    """One image per ``(dose_reduction_factor, attenuation_corrected)`` condition.

    The full-dose counts are drawn once; each factor thins them (AC and NAC share the thinned
    counts). Each factor's draws depend only on ``rng``'s state and the factor, so a condition
    reproduces whatever other conditions are asked for.
    """
    conditions = [(float(k), bool(ac)) for k, ac in conditions]
    if not conditions:
        raise ValueError("a simulation needs at least one (factor, AC) condition")
    bad = [k for k, _ in conditions if not k >= 1.0]
    if bad:
        raise ValueError(f"dose reduction factors must be >= 1, got {bad}")
    base = int(rng.integers(2**62))
    full = draw_counts(scan.prompts, np.random.default_rng([base, 0]))
    images = {}
    for k in dict.fromkeys(k for k, _ in conditions):
        counts = thin_counts(full, k, np.random.default_rng([base, 1, round(k * 1e6)]))
        for ac in dict.fromkeys(a for kk, a in conditions if kk == k):
            images[(k, ac)] = image_of(scan, counts, k, ac, imaging)
    return images


def _noise_statistic(image: np.ndarray, level: np.ndarray, mask: np.ndarray) -> float:
    """Robust variance of the 6-neighbour residual of ``image`` relative to ``sqrt(level)``."""
    x = np.pad(image, 1, mode="edge")
    neighbours = sum(np.roll(x, shift, axis)[1:-1, 1:-1, 1:-1]
                     for axis in range(3) for shift in (-1, 1)) / 6.0
    residual = (image - neighbours)[mask] / np.sqrt(np.maximum(level[mask], 1e-6))
    mad = np.median(np.abs(residual - np.median(residual)))
    return float((1.4826 * mad) ** 2)


def estimate_sensitivity(image: np.ndarray, mu: np.ndarray, spacing, field_of_view: str,
                         imaging: Imaging, mask: np.ndarray, rng: np.random.Generator,
                         probe: float = 10.0, rounds: int = 2) -> float:
    """The count level (trues per Bq at the axial peak) at which ``image`` was recorded,
    from its own noise inside ``mask``.

    The image's noise is correlated, so the local-residual variance of a naive estimate reads
    it too smooth (too many counts). The image is therefore scanned again at a ``probe`` level
    with the same physics; its noise (noisy - noise-free) passes the same estimator, and since
    the variance is about inversely proportional to the count level, the level is ``probe x
    v_probe / v_image``. OSEM's noise is not quite proportional at low counts, so each further
    round probes again at the last estimate.
    """
    if mask.sum() < 512:
        raise ValueError(f"noise estimation needs >= 512 voxels of tissue, got {int(mask.sum())}")
    scan = acquire(np.maximum(image, 0.0), mu, spacing, field_of_view, 1.0,
                   imaging.psf_fwhm_mm)
    clean = image_of(scan, scan.prompts, 1.0, True, imaging)  # the same at any count level
    v_image = _noise_statistic(image, clean, mask)
    if not v_image > 0:
        raise ValueError("the image shows no noise: is it noise-free?")
    level = probe
    for _ in range(rounds):
        # a scan at ``level`` is the unit scan with ``level`` times the counts (factor 1/level)
        counts = draw_counts(scan.prompts * np.float32(level), rng)
        noisy = image_of(scan, counts, 1.0 / level, True, imaging)
        level = level * _noise_statistic(noisy - clean, clean, mask) / v_image
    return float(level)
