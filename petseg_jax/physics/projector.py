"""Parallel-beam projector of one transaxial slice, applied to every slice at once.

The system matrix of the slice geometry (:mod:`geometry`, Joseph's method) is built once and
applied to all slices as a sparse-dense product, ``sinogram (rows, z) = A (rows, x*y) @ image
(x*y, z)``.

The views are split into interleaved OSEM subsets. Each subset's block and its transpose are
stored as ``jax.experimental.sparse.BCSR`` (BCOO is several times slower on CPU), padded with
explicit zeros to one number of stored entries, so that all subsets share one compiled
function; the transpose is the same entries re-indexed, so the back projection is the exact
adjoint of the forward projection (to rounding).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse

from petseg_jax.physics.geometry import SliceGeometry, system_matrix

__all__ = ["SliceGeometry", "SubsetProjector", "subset_projector", "system_matrix"]


def _padded_blocks(blocks: list[sp.csr_matrix], dtype) -> tuple[np.ndarray, ...]:
    """Stack CSR blocks of one shape as (data, indices, indptr), zero-padded to one nse."""
    nse = max(b.nnz for b in blocks)
    data = np.zeros((len(blocks), nse), dtype)
    indices = np.zeros((len(blocks), nse), np.int32)
    indptr = np.zeros((len(blocks), blocks[0].shape[0] + 1), np.int32)
    for k, b in enumerate(blocks):
        data[k, :b.nnz] = b.data
        indices[k, :b.nnz] = b.indices
        indptr[k] = b.indptr
        indptr[k, -1] = nse  # the padding (zeros in column 0) belongs to the last row
    return data, indices, indptr


@dataclasses.dataclass(frozen=True)
class SubsetProjector:
    """Forward and back projection of OSEM subsets (interleaved views) for one slice geometry.

    Sinograms are ``(subsets, rows per subset, z)`` arrays; images ``(nx * ny, z)``.
    """

    geom: SliceGeometry
    subsets: int
    forward_blocks: tuple  # (data, indices, indptr) of each subset's A_s, stacked
    back_blocks: tuple  # the same for A_s^T

    @property
    def rows(self) -> int:
        """Sinogram rows (view x bin) per subset."""
        return self.geom.views // self.subsets * self.geom.bins

    @property
    def pixels(self) -> int:
        """Pixels per slice."""
        return self.geom.nx * self.geom.ny

    def forward(self, image: jax.Array, subset: jax.Array | int) -> jax.Array:
        """``A_s @ image``: (pixels, z) -> (rows, z)."""
        return _apply(self.forward_blocks, subset, image, (self.rows, self.pixels))

    def back(self, sino: jax.Array, subset: jax.Array | int) -> jax.Array:
        """``A_s^T @ sino``: (rows, z) -> (pixels, z)."""
        return _apply(self.back_blocks, subset, sino, (self.pixels, self.rows))

    def forward_all(self, image: jax.Array) -> jax.Array:
        """All subsets: (pixels, z) -> (subsets, rows, z)."""
        return jax.lax.map(lambda s: self.forward(image, s), jnp.arange(self.subsets))

    def back_all(self, sino: jax.Array) -> jax.Array:
        """Sum of the subsets' back projections: (subsets, rows, z) -> (pixels, z)."""
        return jax.lax.fori_loop(0, self.subsets, lambda s, acc: acc + self.back(sino[s], s),
                                 jnp.zeros((self.pixels, sino.shape[-1]), sino.dtype))


def _apply(blocks: tuple, subset, dense: jax.Array, shape: tuple[int, int]) -> jax.Array:
    data, indices, indptr = blocks
    matrix = jsparse.BCSR((data[subset], indices[subset], indptr[subset]), shape=shape)
    return matrix @ dense


jax.tree_util.register_dataclass(SubsetProjector, data_fields=["forward_blocks", "back_blocks"],
                                 meta_fields=["geom", "subsets"])


@functools.lru_cache(maxsize=8)
def subset_projector(geom: SliceGeometry, subsets: int, dtype: str = "float32"
                     ) -> SubsetProjector:
    """The (cached) projector of ``geom`` split into ``subsets`` interleaved view subsets."""
    if subsets < 1 or geom.views % subsets:
        raise ValueError(f"{geom.views} views cannot be split into {subsets} equal subsets")
    matrix = system_matrix(geom)
    nr = geom.bins
    view_of_row = np.arange(matrix.shape[0]) // nr
    fwd, back = [], []
    for s in range(subsets):
        block = matrix[np.flatnonzero(view_of_row % subsets == s)].tocsr()
        block.sort_indices()
        fwd.append(block)
        back.append(block.T.tocsr())
    to_jax = lambda arrays: tuple(jnp.asarray(a) for a in arrays)  # noqa: E731
    return SubsetProjector(geom, subsets, to_jax(_padded_blocks(fwd, dtype)),
                           to_jax(_padded_blocks(back, dtype)))
