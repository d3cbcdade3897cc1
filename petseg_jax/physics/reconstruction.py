"""OSEM reconstruction of rebinned sinograms, with or without attenuation and scatter
correction, and the post-filter.

The OSEM update of subset ``s`` for data ``y`` with multiplicative factors ``m`` (per LOR) and
additive terms ``b`` is ``x <- x / (A_s^T m_s) * A_s^T (m_s y_s / (m_s A_s x + b_s))``.

- attenuation-corrected (AC): ``m = n a``, ``b = s + r`` (scatter and randoms corrected);
- non-attenuation-corrected (NAC): ``m = n``, ``b = r`` (randoms only; the image keeps the
  attenuation's loss in the body's centre and the scatter's haze).

A scan thinned ``k`` times uses ``m / k`` and ``b / k``, so every image is in Bq/ml. The
sensitivity images ``A_s^T m_s`` are computed once per reconstruction.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from petseg_jax.physics.acquisition import FWHM_TO_SIGMA, Scan, pad_z, z_chunks
from petseg_jax.physics.projector import SubsetProjector


def gaussian_blur(volume: np.ndarray, fwhm_mm: float, spacing) -> np.ndarray:
    """Separable Gaussian blur with a FWHM in mm (per-axis sigma in voxels), zero outside."""
    sigma = [fwhm_mm * FWHM_TO_SIGMA / s for s in spacing]
    return ndimage.gaussian_filter(volume, sigma, mode="constant", truncate=3.0)


@functools.partial(jax.jit, static_argnames=("iterations",))
def osem(projector: SubsetProjector, counts: jax.Array, mult: jax.Array, additive: jax.Array,
         iterations: int) -> jax.Array:
    """OSEM estimate (pixels, z) from (subsets, rows, z) counts, factors and additive terms."""
    subsets = projector.subsets
    sens = jax.lax.map(lambda s: projector.back(mult[s], s), jnp.arange(subsets))
    tiny = 1e-6 * jnp.max(sens)
    # start from a uniform image with the data's total activity
    level = jnp.maximum(jnp.sum(counts - additive), 0.0) / jnp.maximum(jnp.sum(sens), tiny)
    x = jnp.full(sens.shape[1:], level, counts.dtype)

    def update(s, x):
        expected = mult[s] * projector.forward(x, s) + additive[s]
        ratio = jnp.where(expected > 0, counts[s] / jnp.where(expected > 0, expected, 1.0), 0.0)
        back = projector.back(mult[s] * ratio, s)
        return jnp.where(sens[s] > tiny, x * back / jnp.maximum(sens[s], tiny), 0.0)

    return jax.lax.fori_loop(0, iterations,
                             lambda _, x: jax.lax.fori_loop(0, subsets, update, x), x)


def reconstruct(scan: Scan, counts: np.ndarray, dose_reduction_factor: float,
                attenuation_corrected: bool, iterations: int | None = None) -> np.ndarray:
    """OSEM image (x, y, z) float32 in Bq/ml of ``counts`` recorded at ``1/dose_reduction_factor``
    of the full scan's counts; ``iterations`` default: the scanner class's protocol."""
    iterations = scan.scanner.osem_iterations if iterations is None else int(iterations)
    if iterations < 1:
        raise ValueError(f"OSEM needs >= 1 iteration, got {iterations}")
    k = np.float32(dose_reduction_factor)
    image = np.empty((scan.shape[0] * scan.shape[1], scan.shape[2]), np.float32)
    for z in z_chunks(scan.shape[2]):  # slices are independent after rebinning
        mult = np.broadcast_to(scan.norm(z) / k, counts[..., z].shape)
        additive = scan.randoms(z) / k
        if attenuation_corrected:
            mult = mult * scan.attenuation[..., z]
            additive = additive + scan.scatter[..., z] / k
        additive = np.broadcast_to(additive, mult.shape)
        x = osem(scan.projector, *(jnp.asarray(pad_z(np.asarray(a, np.float32)))
                                   for a in (counts[..., z], mult, additive)), iterations)
        image[:, z] = np.asarray(x)[:, :z.stop - z.start]
    return image.reshape(scan.shape)
