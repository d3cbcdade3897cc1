"""Scanner model of the synthetic PET phantom: centers, resolution, attenuation, count noise.

An activity volume (Bq/ml) becomes a PET image in four steps:

1. resolution: separable Gaussian PSF of the center's FWHM;
2. attenuation: the fraction ``a`` of photon pairs that escape, averaged over four in-plane
   line-of-response directions (x, y and both diagonals) through each voxel, from the
   tissue attenuation map;
3. counts: Poisson(expected counts) where the expected counts are the attenuated activity times
   the center's count level, the tracer's count yield and the voxel volume, divided by the dose
   reduction factor k (so relative noise grows like sqrt(k));
4. reconstruction: Gaussian post-filter, back to Bq/ml; attenuation-corrected (AC) images are
   divided by ``a`` (quantitative, noisier in the body's centre), non-attenuation-corrected
   (NAC) images are not (activity falls off toward the centre, skin and lungs look bright).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from petseg_jax.data.raw_dataset import FIELDS_OF_VIEW

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclasses.dataclass(frozen=True)
class Center:
    """A site: its scanner's resolution, reconstruction grid, count level and calibration."""

    name: str
    psf_fwhm_mm: float
    post_fwhm_mm: float
    spacing: tuple[float, float, float]
    counts_per_kbq: float  # expected counts per (kBq/ml x ml) of attenuated activity, k = 1
    calibration: float  # cross-calibration factor of the site's images


CENTERS: dict[str, Center] = {c.name: c for c in (
    Center("center_a", 3.0, 3.0, (4.0, 4.0, 4.0), 4000.0, 1.00),  # uEXPLORER-class total body
    Center("center_b", 3.6, 4.0, (3.6, 3.6, 4.0), 2500.0, 0.97),  # Quadra-class long axial FOV
    Center("center_c", 5.0, 5.0, (4.8, 4.8, 4.0), 700.0, 1.04),  # conventional-FOV multi-bed
)}


def gaussian_blur(volume: np.ndarray, fwhm_mm: float, spacing) -> np.ndarray:
    """Separable Gaussian blur with a FWHM in mm (per-axis sigma in voxels)."""
    sigma = [fwhm_mm * FWHM_TO_SIGMA / s for s in spacing]
    return ndimage.gaussian_filter(volume, sigma, mode="constant", truncate=3.0)


def attenuation_factors(mu: np.ndarray, spacing) -> np.ndarray:
    """Mean in-plane photon-pair survival ``exp(-line integral of mu)`` over 4 directions."""
    nx, ny, nz = mu.shape
    sx, sy = float(spacing[0]), float(spacing[1])
    mu = mu.astype(np.float64)
    out = np.exp(-mu.sum(0, keepdims=True) * sx) + np.exp(-mu.sum(1, keepdims=True) * sy)
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    k = np.arange(nz)
    step = np.hypot(sx, sy)
    for diag in (i + j, i - j + ny - 1):  # both diagonals, per z slice
        index = (diag[:, :, None] * nz + k).ravel()
        sums = np.bincount(index, weights=mu.ravel(), minlength=(nx + ny - 1) * nz)
        out = out + np.exp(-sums[index].reshape(mu.shape) * step)
    return (out / 4).astype(np.float32)


def simulate_scan(activity: np.ndarray, mu: np.ndarray, spacing, center: Center,
                  dose_reduction_factor: float, attenuation_corrected: bool, count_yield: float,
                  rng: np.random.Generator, field_of_view: str = "total_body") -> np.ndarray:
    """PET image (float32, Bq/ml; NAC images in uncorrected Bq/ml) from an activity volume.
    ``field_of_view`` is the scan's class (``raw_dataset.FIELDS_OF_VIEW``); this model's
    sensitivity does not depend on it."""
    if field_of_view not in FIELDS_OF_VIEW:
        raise ValueError(f"unknown field_of_view {field_of_view!r} (known: {FIELDS_OF_VIEW})")
    att = attenuation_factors(mu, spacing)
    expected = gaussian_blur(activity, center.psf_fwhm_mm, spacing) * att
    voxel_ml = float(np.prod(spacing)) / 1000.0
    scale = center.counts_per_kbq * count_yield * voxel_ml / 1000.0 / dose_reduction_factor
    counts = rng.poisson(np.maximum(expected, 0) * scale).astype(np.float32)
    image = gaussian_blur(counts, center.post_fwhm_mm, spacing) / np.float32(scale)
    if attenuation_corrected:
        image /= att
    return (image * np.float32(center.calibration)).astype(np.float32)
