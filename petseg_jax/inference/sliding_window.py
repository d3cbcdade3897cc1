"""Sliding-window inference, jitted end to end, with MONAI's ``sliding_window_inference`` semantics.

For a channels-last volume ``(X, Y, Z, C)`` and a predictor ``(n, px, py, pz, C) -> (n, px, py, pz,
K)`` the result is the importance-weighted average of the window outputs, computed as MONAI 1.x
does it:

* **Padding**: a dimension smaller than the patch is padded with ``pad_value`` by its deficit
  ``d``, ``d // 2`` before and ``d - d // 2`` after; the output is cropped back.
* **Window starts** (``_get_scan_interval`` + ``dense_patch_slices``): per dimension the interval
  is ``int(patch * (1 - overlap))`` (at least 1; the patch itself when it equals the image), starts
  are ``0, i, 2i, ...`` up to the first window that reaches the end, and that last one is moved
  back to end flush with the image.
* **Importance map** (``compute_importance_map``): ``"constant"`` is all ones; ``"gaussian"`` is
  the product of 1-D Gaussians ``exp(-t^2 / (2 sigma^2))`` at ``t = -(p-1)/2 .. (p-1)/2`` with
  ``sigma = sigma_scale * p`` (peak 1 for odd sizes, not renormalised), then clamped from below at
  ``max(min(map), 1e-3)``. Output = sum(w * window output) / sum(w) per voxel.

Everything after the host-side window list runs in one jitted program: windows are gathered with
``lax.dynamic_slice`` in a ``lax.fori_loop`` over batches of ``batch_size`` windows and accumulated
with ``lax.dynamic_update_slice``. The list is padded to a multiple of ``batch_size`` with dummy
windows of weight 0. The compiled program is cached per ``predict_fn`` object and shapes: pass the
same function object across calls (not a fresh lambda) to reuse it, and pass model weights through
``params`` (called as ``predict_fn(params, x)``) so that they are arguments of the program rather
than constants baked into it.

Test-time mirroring (nnU-Net style): with ``mirror_axes`` the prediction is averaged over every
subset of those spatial axes (``2^len`` passes per window): the window is flipped, predicted and
flipped back; when the subset flips axis 0 (R-L in RAS) the output channels are also permuted with
``mirror_lut`` (``out[..., c] <- out[..., lut[c]]``, e.g. ``LabelSchema.mirror_lut()``) so that a
left organ predicted on the mirrored image counts for the right one. ``mirror_lut=None`` means no
left/right pairs.

Position channels (``position_channels=True``, see :mod:`petseg_jax.data.position`): input
channels 1-3 are the voxels' signed positions along X, Y, Z. A test-time flip of an axis also
negates that axis's position (as the training augmentation does), and padding extends them with
their edge values instead of ``pad_value``.

Memory: the accumulator holds ``X' * Y' * Z' * K`` values of ``accum_dtype`` (X' etc. padded) plus a
float32 count map of ``X' * Y' * Z'`` (``output="average"`` only). A whole-body 250 x 250 x 900
volume with K = 24 needs 5.4 GB in float32; ``output="average"`` returns another array of that
size, ``output="labels"`` (argmax inside the program) only 56 MB of uint8. Add the input (4 bytes
per voxel and channel) and the predictor's activations for ``batch_size`` windows. Measured on the
2-core CPU with a linear predictor, patch 128^3, overlap 0.5 (450 windows), ``output="labels"``:
26 s, 6.5 GB peak RSS. ``accum_dtype="bfloat16"`` is meant to halve the accumulator on accelerators
(not measured here), but XLA's CPU backend emulates bfloat16: there the same run took 550 s and
saved no memory, so keep float32 on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Mode = Literal["gaussian", "constant"]
Output = Literal["average", "labels"]
_MIN_WEIGHT = 1e-3  # MONAI's floor of the importance map


def _triple(value: int | float | Sequence, name: str, cast: type) -> tuple:
    values = tuple(np.ravel(value).tolist()) if np.ndim(value) else (value,) * 3
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (one per spatial axis), got {value!r}")
    return tuple(cast(v) for v in values)


def pad_widths(image_shape: Sequence[int], patch_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """MONAI's symmetric padding of dimensions smaller than the patch: ``(d // 2, d - d // 2)``."""
    deficits = [max(p - s, 0) for s, p in zip(image_shape, patch_size)]
    return tuple((d // 2, d - d // 2) for d in deficits)


def scan_interval(image_shape: Sequence[int], patch_size: Sequence[int],
                  overlap: Sequence[float]) -> tuple[int, ...]:
    """MONAI's ``_get_scan_interval`` for an image at least as large as the patch."""
    return tuple(p if p == s else max(int(p * (1 - o)), 1)
                 for s, p, o in zip(image_shape, patch_size, overlap))


def window_starts(image_shape: Sequence[int], patch_size: Sequence[int],
                  overlap: Sequence[float]) -> np.ndarray:
    """Window start corners ``(n_windows, 3)`` as MONAI's ``dense_patch_slices`` (first axis slowest)."""
    per_axis = []
    for s, p, i in zip(image_shape, patch_size, scan_interval(image_shape, patch_size, overlap)):
        n = max(0, -(-(s - p) // i)) + 1  # the first window index reaching the end, plus one
        per_axis.append([min(k * i, s - p) for k in range(n)])
    return np.array(list(itertools.product(*per_axis)), dtype=np.int32).reshape(-1, 3)


def importance_map(patch_size: Sequence[int], mode: Mode = "gaussian",
                   sigma_scale: float | Sequence[float] = 0.125) -> np.ndarray:
    """MONAI's ``compute_importance_map`` (float32), floor ``max(min, 1e-3)`` included."""
    if mode == "constant":
        weights = np.ones(tuple(patch_size), np.float32)
    elif mode == "gaussian":
        weights = np.ones((), np.float32)
        for p, s in zip(patch_size, _triple(sigma_scale, "sigma_scale", float)):
            t = np.arange(-(p - 1) / 2.0, (p - 1) / 2.0 + 1, dtype=np.float32)
            g = np.exp(t**2 / np.float32(-2 * (s * p) ** 2)).astype(np.float32)
            weights = weights[..., None] * g
    else:
        raise ValueError(f"mode must be 'gaussian' or 'constant', got {mode!r}")
    return np.maximum(weights, max(float(weights.min()), _MIN_WEIGHT)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static description of one compiled program (hashable)."""

    patch: tuple[int, int, int]
    pads: tuple[tuple[int, int], ...]
    pad_value: float
    batch_size: int
    mirror_axes: tuple[int, ...]
    output: str
    accum_dtype: str
    with_params: bool
    position_channels: bool


def _mirror_sets(axes: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@functools.lru_cache(maxsize=8)
def _compiled(predict_fn: Callable, plan: _Plan) -> Callable:
    """The jitted sliding-window program for one predictor and one static plan."""
    accum = jnp.dtype(plan.accum_dtype)

    def call(params: Any, x: jax.Array) -> jax.Array:
        return predict_fn(params, x) if plan.with_params else predict_fn(x)

    def predict(params, lut, x):
        total = None
        for axes in _mirror_sets(plan.mirror_axes):
            flip = tuple(a + 1 for a in axes)  # spatial axis -> batched array axis
            xf = jnp.flip(x, flip) if flip else x
            if plan.position_channels and axes:  # the flipped axes' positions change sign
                sign = np.ones(x.shape[-1], np.float32)
                sign[[1 + a for a in axes]] = -1.0
                xf = xf * sign
            y = call(params, xf).astype(jnp.float32)
            y = jnp.flip(y, flip) if flip else y
            if 0 in axes and lut is not None:
                y = jnp.take(y, lut, axis=-1)
            total = y if total is None else total + y
        return total / len(_mirror_sets(plan.mirror_axes))

    def run(volume, starts, weights, imp, lut, params):
        vol = volume
        if any(lo or hi for lo, hi in plan.pads):
            vol = jnp.pad(volume, plan.pads + ((0, 0),), constant_values=plan.pad_value)
            if plan.position_channels:
                vol = vol.at[..., 1:].set(jnp.pad(volume[..., 1:], plan.pads + ((0, 0),),
                                                  mode="edge"))
        channels = vol.shape[-1]
        window_shape = plan.patch + (channels,)
        out_spec = jax.eval_shape(lambda x: call(params, x),
                                  jax.ShapeDtypeStruct((plan.batch_size,) + window_shape, vol.dtype))
        if out_spec.shape[:-1] != (plan.batch_size,) + plan.patch:
            raise ValueError(f"predict_fn maps {(plan.batch_size,) + window_shape} to {out_spec.shape}; "
                             f"expected {(plan.batch_size,) + plan.patch + ('K',)}")
        k = out_spec.shape[-1]
        if lut is not None and lut.shape != (k,):
            raise ValueError(f"mirror_lut has {lut.shape[0]} entries but predict_fn gives {k} channels")
        acc = jnp.zeros(vol.shape[:3] + (k,), accum)
        cnt = jnp.zeros(vol.shape[:3], jnp.float32) if plan.output == "average" else None

        def body(i, carry):
            acc, cnt = carry
            st, w = starts[i], weights[i]
            wins = jax.vmap(lambda s: lax.dynamic_slice(vol, (s[0], s[1], s[2], 0), window_shape))(st)
            pred = predict(params, lut, wins)
            for j in range(plan.batch_size):
                wj = imp * w[j]
                corner = (st[j, 0], st[j, 1], st[j, 2])
                cur = lax.dynamic_slice(acc, corner + (0,), plan.patch + (k,))
                acc = lax.dynamic_update_slice(acc, cur + (pred[j] * wj[..., None]).astype(accum),
                                               corner + (0,))
                if cnt is not None:
                    cnt = lax.dynamic_update_slice(cnt, lax.dynamic_slice(cnt, corner, plan.patch) + wj,
                                                   corner)
            return acc, cnt

        acc, cnt = lax.fori_loop(0, starts.shape[0], body, (acc, cnt))
        crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(plan.pads, volume.shape[:3]))
        if plan.output == "labels":
            return jnp.argmax(acc[crop], axis=-1).astype(jnp.uint8 if k <= 256 else jnp.int32)
        return acc[crop].astype(jnp.float32) / cnt[crop][..., None]

    return jax.jit(run)


def sliding_window(
    volume: np.ndarray | jax.Array,
    predict_fn: Callable,
    patch_size: int | Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    mode: Mode = "gaussian",
    batch_size: int = 4,
    sigma_scale: float | Sequence[float] = 0.125,
    mirror_axes: Sequence[int] = (),
    mirror_lut: np.ndarray | Sequence[int] | None = None,
    pad_value: float = 0.0,
    output: Output = "average",
    accum_dtype: str | np.dtype = "float32",
    params: Any = None,
    position_channels: bool = False,
) -> jax.Array:
    """Importance-weighted sliding-window prediction of a channels-last ``(X, Y, Z, C)`` volume.

    ``predict_fn(x)`` (or ``predict_fn(params, x)`` when ``params`` is given) maps
    ``(n, px, py, pz, C)`` to ``(n, px, py, pz, K)`` and must be traceable by JAX. Returns the
    weighted average ``(X, Y, Z, K)`` float32 (``output="average"``) or its argmax ``(X, Y, Z)``
    (``output="labels"``: uint8 when K <= 256, else int32). ``accum_dtype="bfloat16"`` halves the
    accumulator (for accelerators: slow on CPU). ``position_channels``: channels 1-3 are
    position channels (module docstring). See the module docstring for the exact MONAI
    semantics and the memory needed.
    """
    if getattr(volume, "ndim", None) != 4:
        raise ValueError(f"volume must be channels-last (X, Y, Z, C), got shape {np.shape(volume)}")
    if position_channels and volume.shape[-1] != 4:
        raise ValueError(f"position_channels needs 4 input channels (PET + X, Y, Z), got "
                         f"{volume.shape[-1]}")
    patch = _triple(patch_size, "patch_size", int)
    overlaps = _triple(overlap, "overlap", float)
    if min(patch) < 1:
        raise ValueError(f"patch_size must be positive, got {patch}")
    if not all(0 <= o < 1 for o in overlaps):
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    axes = tuple(sorted({int(a) for a in mirror_axes}))
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"mirror_axes must be spatial axes 0, 1, 2, got {tuple(mirror_axes)}")
    if output not in ("average", "labels"):
        raise ValueError(f"output must be 'average' or 'labels', got {output!r}")
    try:
        hash(predict_fn)
    except TypeError:
        raise TypeError("predict_fn must be hashable (a plain function, a jitted function or "
                        "functools.partial); pass model state through `params`") from None

    pads = pad_widths(volume.shape[:3], patch)
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(volume.shape[:3], pads))
    starts = window_starts(padded, patch, overlaps)
    n_batches = -(-len(starts) // batch_size)
    n_dummy = n_batches * batch_size - len(starts)
    weights = np.concatenate([np.ones(len(starts), np.float32), np.zeros(n_dummy, np.float32)])
    starts = np.concatenate([starts, np.zeros((n_dummy, 3), np.int32)])
    lut = None
    if 0 in axes and mirror_lut is not None:
        lut = jnp.asarray(np.asarray(mirror_lut, dtype=np.int32))
    plan = _Plan(patch, pads, float(pad_value), int(batch_size), axes, output,
                 jnp.dtype(accum_dtype).name, params is not None, bool(position_channels))
    run = _compiled(predict_fn, plan)
    return run(jnp.asarray(volume), jnp.asarray(starts.reshape(n_batches, batch_size, 3)),
               jnp.asarray(weights.reshape(n_batches, batch_size)),
               jnp.asarray(importance_map(patch, mode, sigma_scale)), lut, params)
