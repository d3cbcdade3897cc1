"""What a scanner records from an activity and a 511 keV attenuation map, and count thinning.

For each line of response (LOR) of the rebinned sinograms (:mod:`projector`) the expected
prompts are ``n * a * (A x) + s + r``:

- ``A x`` the line integral of the activity ``x`` (Bq/ml x mm);
- ``a = exp(-A mu)`` the photon pair's survival through the attenuation map ``mu`` (1/mm);
- ``n`` the normalisation: the system sensitivity (counts per Bq/ml x ml at the axial peak)
  times the scanner class's axial sensitivity profile (:mod:`scanners`) of the LOR's slice;
- ``s`` scatter: the attenuated trues smoothed by a wide Gaussian (radially and axially, the
  usual single-scatter-free estimate), scaled so that scatter / (trues + scatter) is the class's
  scatter fraction;
- ``r`` randoms: flat over the LORs of each slice, following the axial profile, scaled to the
  class's randoms fraction of the prompts.

Counts are Poisson draws of the expected prompts (numpy: ``jax.random.poisson`` is several
times slower on CPU); a scan with ``k`` times fewer counts is their binomial thinning with
probability ``1/k``, the analogue of list-mode subsampling (randoms and scatter thin with the
trues, so their fractions stay the same).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy import signal

from petseg_jax.physics.projector import SliceGeometry, SubsetProjector, subset_projector
from petseg_jax.physics.scanners import ScannerClass, axial_sensitivity, scanner_class

SCATTER_RADIAL_FWHM_MM = 200.0  # width of the scatter kernel across the sinogram
SCATTER_AXIAL_FWHM_MM = 100.0
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclasses.dataclass(frozen=True)
class Scan:
    """The expected data of one full-dose scan, as ``(subsets, rows, z)`` sinograms."""

    projector: SubsetProjector
    scanner: ScannerClass
    shape: tuple[int, int, int]  # image (x, y, z)
    spacing: tuple[float, float, float]
    per_lor: float  # n at the axial peak: counts per (Bq/ml x mm) of attenuated line integral
    profile: np.ndarray  # (z,) axial sensitivity, peak 1
    randoms_per_lor: float  # expected randoms of a LOR at the axial peak
    attenuation: np.ndarray  # a = exp(-A mu)
    trues: np.ndarray  # n a A x
    scatter: np.ndarray

    def norm(self, z: slice = slice(None)) -> np.ndarray:
        """n of slices ``z``, broadcastable to (subsets, rows, z)."""
        return (self.per_lor * self.profile[z]).astype(np.float32)

    def randoms(self, z: slice = slice(None)) -> np.ndarray:
        """Expected randoms of slices ``z``, broadcastable to (subsets, rows, z)."""
        return (self.randoms_per_lor * self.profile[z]).astype(np.float32)

    @property
    def prompts(self) -> np.ndarray:
        """Expected prompts: trues + scatter + randoms."""
        return self.trues + self.scatter + self.randoms()


def views_for(nx: int, ny: int, subsets: int) -> int:
    """Views over 180 degrees: about one per pixel across the larger side, a multiple of the
    subsets (half the angular Nyquist rate; the noise texture, not streak-free images, is the
    aim, and the cost grows linearly with the views)."""
    return subsets * int(np.ceil(max(nx, ny) / subsets))


def check_volume(name: str, volume: np.ndarray) -> np.ndarray:
    """``volume`` as float32 3-D, with a clear error when it holds NaN or infinity."""
    volume = np.asarray(volume, np.float32)
    if volume.ndim != 3:
        raise ValueError(f"{name} must be a 3-D volume, got shape {volume.shape}")
    if not np.isfinite(volume).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return volume


Z_CHUNK = 32  # slices projected or reconstructed at once (bounded memory, one compilation)
# Slabs are padded to a multiple of this many slices: XLA's CPU sparse-dense product (the
# projector) runs about half as fast when the dense operand's columns are not a multiple of 8
# (36 slices: 2.3x the time of 32; BUILD_NOTES.md, session 5, issue 15).
Z_ALIGN = 8


def z_chunks(nz: int) -> list[slice]:
    """Consecutive slabs of at most ``Z_CHUNK`` slices covering ``nz``."""
    return [slice(z, min(z + Z_CHUNK, nz)) for z in range(0, nz, Z_CHUNK)]


def slab_width(halo: int = 0) -> int:
    """Slices of a padded slab: ``Z_CHUNK`` plus ``halo`` on each side, rounded up to
    ``Z_ALIGN``."""
    return -(-(Z_CHUNK + 2 * halo) // Z_ALIGN) * Z_ALIGN


def pad_z(array: np.ndarray, halo: int = 0) -> np.ndarray:
    """``array`` zero-padded along its last axis to ``slab_width(halo)``."""
    pad = slab_width(halo) - array.shape[-1]
    return np.pad(array, [(0, 0)] * (array.ndim - 1) + [(0, pad)]) if pad else array


@jax.jit
def _project(projector: SubsetProjector, volume: jax.Array) -> jax.Array:
    return projector.forward_all(volume)


def forward_project(projector: SubsetProjector, volume: np.ndarray) -> np.ndarray:
    """(x, y, z) volume -> (subsets, rows, z) line integrals, slab by slab."""
    nx, ny, nz = volume.shape
    flat = volume.reshape(nx * ny, nz)
    return np.concatenate([np.asarray(_project(projector, jnp.asarray(pad_z(flat[:, z]))))
                           [..., :z.stop - z.start] for z in z_chunks(nz)], axis=-1)


def _gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised Gaussian of ``sigma`` samples, radius ``round(4 sigma)`` (scipy.ndimage's)."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def _blur_sinogram(sino: np.ndarray, geom: SliceGeometry, views_per_subset: int,
                   dz: float) -> np.ndarray:
    """Gaussian smoothing of (subsets, rows, z) data across radial bins and slices, zero
    outside (the kernels span ~110 bins and ~60 slices, so the convolutions go through FFTs:
    the same result as ``ndimage.gaussian_filter(mode="constant")`` within 1e-6 of its
    maximum, ~1.6x faster)."""
    s, _, nz = sino.shape
    out = sino.reshape(s, views_per_subset, geom.bins, nz)
    for axis, sigma in ((2, SCATTER_RADIAL_FWHM_MM * FWHM_TO_SIGMA / geom.bin_mm),
                        (3, SCATTER_AXIAL_FWHM_MM * FWHM_TO_SIGMA / dz)):
        shape = [1] * 4
        shape[axis] = -1
        out = signal.oaconvolve(out, _gaussian_taps(sigma).reshape(shape), mode="same", axes=axis)
    return out.reshape(sino.shape).astype(np.float32)


def expected_scan(activity: np.ndarray, mu: np.ndarray, spacing, field_of_view: str,
                  sensitivity: float, subsets: int | None = None) -> Scan:
    """The expected full-dose data of ``activity`` (Bq/ml) in ``mu`` (1/mm) on a grid of
    ``spacing`` mm, in the scanner class of ``field_of_view``.

    ``sensitivity``: expected trues per (Bq/ml x ml) of unattenuated activity at the axial
    sensitivity peak. ``subsets``: OSEM subsets (default: the class's protocol).
    """
    activity = check_volume("activity", activity)
    mu = check_volume("mu map", mu)
    if activity.shape != mu.shape:
        raise ValueError(f"activity {activity.shape} and mu map {mu.shape} differ in shape")
    if (mu < 0).any():
        raise ValueError("the mu map holds negative attenuation coefficients")
    if not sensitivity > 0:
        raise ValueError(f"sensitivity must be > 0, got {sensitivity}")
    cls = scanner_class(field_of_view)
    subsets = cls.osem_subsets if subsets is None else int(subsets)
    nx, ny, nz = activity.shape
    dx, dy, dz = (float(s) for s in spacing)
    geom = SliceGeometry(nx, ny, dx, dy, views_for(nx, ny, subsets))
    projector = subset_projector(geom, subsets)
    line_activity = forward_project(projector, np.maximum(activity, 0.0))
    attenuation = np.exp(-forward_project(projector, mu))
    # counts per LOR of a line integral (Bq/ml x mm): the LORs of a view, bin_mm apart, sample
    # each slice's activity once, so summing over views and bins gives sensitivity x Bq
    per_lor = sensitivity * dz * geom.bin_mm / (1000.0 * geom.views)
    profile = axial_sensitivity(nz, dz, field_of_view)
    trues = (line_activity * attenuation * (per_lor * profile)).astype(np.float32)
    scatter = _blur_sinogram(trues, geom, geom.views // subsets, dz)
    total = float(scatter.sum(dtype=np.float64))
    trues_total = float(trues.sum(dtype=np.float64))
    if total > 0:
        scatter *= np.float32(cls.scatter_fraction / (1 - cls.scatter_fraction) * trues_total
                              / total)
    lors = geom.views * geom.bins * float(profile.sum())
    randoms_per_lor = (cls.randoms_fraction / (1 - cls.randoms_fraction)
                       * (trues_total + float(scatter.sum(dtype=np.float64))) / max(lors, 1e-30))
    return Scan(projector, cls, (nx, ny, nz), (dx, dy, dz), per_lor, profile, randoms_per_lor,
                attenuation.astype(np.float32), trues, scatter.astype(np.float32))


def draw_counts(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts of ``expected`` (int32)."""
    if expected.size and float(expected.max()) > 1e9:
        raise ValueError(f"{float(expected.max()):.3g} expected counts in one line of response "
                         "overflow the counts' int32: is the count level in counts per kBq?")
    return rng.poisson(np.maximum(expected, 0.0)).astype(np.int32)


def thin_counts(counts: np.ndarray, dose_reduction_factor: float, rng: np.random.Generator
                ) -> np.ndarray:
    """Each recorded count kept with probability ``1 / dose_reduction_factor``."""
    k = float(dose_reduction_factor)
    if not k >= 1.0:
        raise ValueError(f"dose reduction factor must be >= 1, got {dose_reduction_factor}")
    return counts if k == 1.0 else rng.binomial(counts, 1.0 / k).astype(np.int32)
