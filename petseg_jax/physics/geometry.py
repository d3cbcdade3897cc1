"""The geometry of one transaxial slice and its system matrix (numpy/scipy only).

After single-slice rebinning (SSRB) a cylindrical scanner's 3-D data become one 2-D sinogram
per transaxial slice, all with the same geometry. Its system matrix (Joseph's method: along
each line of response, one linear interpolation per image row or column crossed, weighted by
the path length in mm) is built here without jax, so that code outside the JAX system model
(ingest's attenuation maps, :mod:`petseg_jax.physics.noise`) can use it; :mod:`projector`
applies it with jax.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
    """One transaxial slice (``nx`` x ``ny`` pixels of ``dx`` x ``dy`` mm) seen from ``views``
    angles over 180 degrees, with radial bins of ``min(dx, dy)`` mm covering the diagonal."""

    nx: int
    ny: int
    dx: float
    dy: float
    views: int

    @property
    def bin_mm(self) -> float:
        """Radial bin width (mm)."""
        return min(self.dx, self.dy)

    @property
    def bins(self) -> int:
        """Radial bins per view."""
        return int(np.ceil(np.hypot(self.nx * self.dx, self.ny * self.dy) / self.bin_mm))


def system_matrix(geom: SliceGeometry) -> sp.csr_matrix:
    """Joseph-method system matrix (float64, mm), rows ``view * bins + bin``, columns
    ``x * ny + y``."""
    nx, ny, dx, dy = geom.nx, geom.ny, geom.dx, geom.dy
    nr = geom.bins
    s = (np.arange(nr) - (nr - 1) / 2) * geom.bin_mm
    rows, cols, vals = [], [], []
    for view in range(geom.views):
        theta = np.pi * view / geom.views
        c, si = np.cos(theta), np.sin(theta)
        # line: x cos + y sin = s; step along the axis the line is closer to
        if abs(c) >= abs(si):  # steep in y: one interpolation in x per row
            j = np.arange(ny)
            y = (j - (ny - 1) / 2) * dy
            x = (s[:, None] - y[None, :] * si) / c
            frac, length, n_other = x / dx + (nx - 1) / 2, dy / abs(c), nx
            other_major = True
        else:  # one interpolation in y per column
            i = np.arange(nx)
            x = (i - (nx - 1) / 2) * dx
            y = (s[:, None] - x[None, :] * c) / si
            frac, length, n_other = y / dy + (ny - 1) / 2, dx / abs(si), ny
            other_major = False
        low = np.floor(frac)
        weight_high = frac - low
        ray = np.broadcast_to((view * nr + np.arange(nr))[:, None], frac.shape)
        step = np.broadcast_to(np.arange(frac.shape[1])[None, :], frac.shape)
        for offset, weight in ((0, 1.0 - weight_high), (1, weight_high)):
            idx = low + offset
            ok = (idx >= 0) & (idx < n_other) & (weight > 0)
            idx = idx[ok].astype(np.int64)
            col = idx * ny + step[ok] if other_major else step[ok] * ny + idx
            rows.append(ray[ok])
            cols.append(col)
            vals.append(weight[ok] * length)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(geom.views * nr, nx * ny))
