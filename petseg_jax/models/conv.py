"""3-D convolutions, channels-last, with a fast path for XLA:CPU.

Layout: activations ``(N, X, Y, Z, C)``, kernels ``(kx, ky, kz, Cin, Cout)``.

``impl`` chooses how a convolution is lowered:

* ``"xla"``: ``lax.conv_general_dilated`` as is (cuDNN on GPU, fast there).
* ``"fold"``: the ``kx`` taps along X are folded into channels (``kx`` strided slices
  concatenated) and the rest is ONE 2-D convolution over (Y, Z) with X in the batch. Where
  ``Cin > Cout`` (stride 1 along X) the forward "unfolds" instead: one 2-D convolution into
  ``kx * Cout`` channels, summed at the taps' X shifts (:func:`_unfold_forward`), when no
  gradient is taken: the library's 2-D convolutions run faster with the wide side on their
  output (inference ~17% faster); the input gradient always has it there (autodiff of the
  folded form).
  XLA:CPU hands 2-D convolutions to a fast library (YNNPACK in jaxlib 0.10), while its 3-D
  convolutions (and most of all their gradients) take a slow generic path. Both gradients are
  autodiff of the folded form: the input gradient a 2-D convolution, the weight gradient the
  library's backward-filter 2-D convolution.
* ``"auto"``: ``"fold"`` on CPU, ``"xla"`` on other platforms.

Both give the same numbers up to float rounding (tests/unit/test_conv.py). Measurements in
BUILD_NOTES.md ("Model and CPU convolutions").
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "xla", "fold")
_DN3 = ("NDHWC", "DHWIO", "NDHWC")
_DN2 = ("NHWC", "HWIO", "NHWC")
Pads = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def resolve_impl(impl: str) -> str:
    """The concrete implementation (``"xla"`` or ``"fold"``) that ``impl`` stands for here."""
    if impl not in IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; expected one of {IMPLS}")
    if impl == "auto":
        return "fold" if jax.default_backend() == "cpu" else "xla"
    return impl


def _triple(v: int | Sequence[int], what: str) -> tuple[int, int, int]:
    t = (v,) * 3 if isinstance(v, int) else tuple(int(a) for a in v)
    if len(t) != 3 or min(t) < 1:
        raise ValueError(f"{what} must be a positive int or 3 positive ints, got {v!r}")
    return t  # type: ignore[return-value]


def conv3d(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1,
           padding: str | Sequence[tuple[int, int]] = "SAME", impl: str = "auto") -> jax.Array:
    """3-D cross-correlation like ``lax.conv_general_dilated`` (NDHWC x DHWIO -> NDHWC).

    ``padding``: ``"SAME"``, ``"VALID"`` or three ``(low, high)`` pairs. Inputs and kernel
    must share a dtype (the caller casts; see models/unet.py).
    """
    if x.ndim != 5 or kernel.ndim != 5:
        raise ValueError(f"conv3d wants x (N,X,Y,Z,C) and kernel (kx,ky,kz,Cin,Cout), got "
                         f"shapes {x.shape} and {kernel.shape}")
    if x.shape[-1] != kernel.shape[3]:
        raise ValueError(f"conv3d: input has {x.shape[-1]} channels, kernel expects "
                         f"{kernel.shape[3]}")
    st = _triple(strides, "strides")
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(x.shape[1:4], kernel.shape[:3], st, padding)
    else:
        pads = [tuple(int(a) for a in p) for p in padding]
    if len(pads) != 3 or any(len(p) != 2 for p in pads):
        raise ValueError(f"padding must be 'SAME', 'VALID' or 3 (low, high) pairs, got {padding!r}")
    pads = tuple(tuple(p) for p in pads)
    if resolve_impl(impl) == "xla":
        return lax.conv_general_dilated(x, kernel, st, pads, dimension_numbers=_DN3)
    return _fold_conv(x, kernel, st, pads)


def _out_shape(x: jax.Array, kernel: jax.Array, strides, pads) -> list[int]:
    out = [(d + lo + hi - k) // s + 1
           for d, (lo, hi), k, s in zip(x.shape[1:4], pads, kernel.shape[:3], strides)]
    # Symbolic (exported) dimensions cannot be compared; concrete ones are checked.
    if any(isinstance(d, int) and d < 1 for d in out):
        raise ValueError(f"conv3d: input {x.shape} is smaller than kernel {kernel.shape[:3]}")
    return out


def _fold_forward(x: jax.Array, kernel: jax.Array, strides: tuple[int, int, int],
                  pads: Pads) -> jax.Array:
    """X taps folded into channels, then one 2-D convolution over (Y, Z)."""
    kx, ky, kz, cin, cout = kernel.shape
    sx = strides[0]
    xp = jnp.pad(x, ((0, 0), pads[0], (0, 0), (0, 0), (0, 0)))
    ox = _out_shape(x, kernel, strides, pads)[0]
    taps = [lax.slice_in_dim(xp, i, i + sx * (ox - 1) + 1, sx, axis=1) for i in range(kx)]
    xs = taps[0] if kx == 1 else jnp.concatenate(taps, axis=-1)
    n, _, ny, nz, _ = x.shape
    xs = xs.reshape(n * ox, ny, nz, kx * cin)
    k2 = kernel.transpose(1, 2, 0, 3, 4).reshape(ky, kz, kx * cin, cout)
    y = lax.conv_general_dilated(xs, k2, strides[1:], pads[1:], dimension_numbers=_DN2)
    return y.reshape(n, ox, *y.shape[1:])


def _unfold_forward(x: jax.Array, kernel: jax.Array, strides: tuple[int, int, int],
                    pads: Pads) -> jax.Array:
    """Stride 1 along X: one 2-D convolution over (Y, Z) of every X plane into ``kx * Cout``
    channels (one group per X tap), then the ``kx`` groups summed at their X shifts.

    Same numbers as :func:`_fold_forward` (up to float rounding) with the wide side of the
    2-D convolution on its output, which XLA:CPU's library kernels run several times faster
    (a forward with ``kx * Cin`` inputs and ``Cout`` outputs is their slow direction).
    """
    kx, ky, kz, cin, cout = kernel.shape
    n, nx, ny, nz, _ = x.shape
    ox = _out_shape(x, kernel, strides, pads)[0]
    k2 = kernel.transpose(1, 2, 3, 0, 4).reshape(ky, kz, cin, kx * cout)
    z = lax.conv_general_dilated(x.reshape(n * nx, ny, nz, cin), k2, strides[1:], pads[1:],
                                 dimension_numbers=_DN2)
    z = jnp.pad(z.reshape(n, nx, *z.shape[1:3], kx, cout),
                ((0, 0), pads[0], (0, 0), (0, 0), (0, 0), (0, 0)))
    return sum(z[:, i:i + ox, :, :, i] for i in range(kx))


def _forward(x: jax.Array, kernel: jax.Array, strides: tuple[int, int, int],
             pads: Pads) -> jax.Array:
    """The fold path's forward when no gradient is taken (inference): :func:`_unfold_forward`
    where it puts the narrow side on the input (stride 1 along X, ``Cin > Cout``), else
    :func:`_fold_forward`. A differentiated call keeps :func:`_fold_forward`: in the train step
    the unfolded forward gave no gain (BUILD_NOTES.md, session 6, "CPU speed")."""
    kx, _, _, cin, cout = kernel.shape
    if strides[0] == 1 and kx > 1 and cin > cout:
        return _unfold_forward(x, kernel, strides, pads)
    return _fold_forward(x, kernel, strides, pads)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _fold_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int, int],
               pads: Pads) -> jax.Array:
    return _forward(x, kernel, strides, pads)


def _fold_conv_fwd(x, kernel, strides, pads):
    return _fold_forward(x, kernel, strides, pads), (x, kernel)


def _fold_conv_bwd(strides, pads, res, g):
    x, kernel = res
    return jax.vjp(lambda a, k: _fold_forward(a, k, strides, pads), x, kernel)[1](g)


_fold_conv.defvjp(_fold_conv_fwd, _fold_conv_bwd)


def conv_transpose3d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Transposed convolution with stride == kernel size (non-overlapping upsampling).

    ``out[n, s*x + i, s*y + j, s*z + k, o] = sum_c x[n, x, y, z, c] * kernel[i, j, k, c, o]``
    (PyTorch's ``ConvTranspose3d`` with stride = kernel_size): one per-voxel matrix product
    and a reshape, on every platform.
    """
    if x.ndim != 5 or kernel.ndim != 5 or x.shape[-1] != kernel.shape[3]:
        raise ValueError(f"conv_transpose3d wants x (N,X,Y,Z,Cin) and kernel "
                         f"(kx,ky,kz,Cin,Cout), got shapes {x.shape} and {kernel.shape}")
    n, nx, ny, nz, _ = x.shape
    kx, ky, kz, _, cout = kernel.shape
    y = jnp.einsum("nxyzc,ijkco->nxiyjzko", x, kernel)
    return y.reshape(n, nx * kx, ny * ky, nz * kz, cout)


def pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """1x1x1 convolution: ``kernel`` of shape (Cin, Cout) applied to every voxel."""
    return jnp.einsum("nxyzc,co->nxyzo", x, kernel)
