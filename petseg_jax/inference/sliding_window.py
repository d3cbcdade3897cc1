"""Sliding-window inference with MONAI's ``sliding_window_inference`` semantics: whole-volume
(:func:`sliding_window`) or streamed slab by slab in bounded memory (:func:`sliding_window_labels`).

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

**Window order.** Both paths visit the windows with the *slab axis* (the longest padded axis; the
first of equal ones) slowest: one *row* of windows per start along it, each row in MONAI's order
of the other two axes, padded to a multiple of ``batch_size`` with dummy windows of weight 0. With
the slab axis first this is MONAI's own order; otherwise only the order of the float sums differs.
Both paths add the same batches in the same order, so the streamed labels are bitwise those of
the whole-volume program's ``output="labels"``.

**Whole volume** (:func:`sliding_window`): one jitted program gathers windows with
``lax.dynamic_slice`` in a ``lax.fori_loop`` over batches and accumulates them with
``lax.dynamic_update_slice`` into an ``X' * Y' * Z' * K`` accumulator of ``accum_dtype`` (plus a
float32 count map for ``output="average"``): 5.4 GB for a 250 x 250 x 900 volume with K = 24.

**Streamed** (:func:`sliding_window_labels`): a host loop over the rows. The scores live in a
*band* one patch long along the slab axis (``X' * Y' * p * K``); after a row is added, the
planes no later row touches are finished (argmax) and the band moves on. The network input is cut
per band from the volume (position channels are built per band), the labels are written into a
host array as they are finished, and ``progress(windows_done, windows_total)`` is called after
every row. Before it allocates, the memory it needs (two bands, two input slabs, the label map
and XLA's temporaries) is checked against :func:`petseg_jax.resources.available_memory`; a
volume whose band cannot fit raises :class:`~petseg_jax.resources.MemoryBudgetError` naming the
memory needed. The band is held in :func:`score_dtype` (float32 on the CPU, where XLA emulates
bfloat16 slowly; bfloat16 on accelerators). With a ``region`` (a box of the volume, e.g. the
body's) the windows tile that box as they would tile the volume cut to it, the rest stays
background, and the program is still the whole volume's: a row runs only its first batches (a
dynamic trip count), so boxes of any size share one compiled program.

The compiled programs are cached per ``predict_fn`` object and shapes: pass the same function
object across calls (not a fresh lambda) to reuse them, and pass model weights through ``params``
(called as ``predict_fn(params, x)``) so that they are arguments of the program rather than
constants baked into it.

Test-time mirroring (nnU-Net style): with ``mirror_axes`` the prediction is averaged over every
subset of those spatial axes (``2^len`` passes per window): the window is flipped, predicted and
flipped back; when the subset flips axis 0 (R-L in RAS) the output channels are also permuted with
``mirror_lut`` (``out[..., c] <- out[..., lut[c]]``, e.g. ``LabelSchema.mirror_lut()``) so that a
left organ predicted on the mirrored image counts for the right one. ``mirror_lut=None`` means no
left/right pairs.

Position channels (``position_axes``, see :mod:`petseg_jax.data.position`): input channels
1, 2, ... are the voxels' signed positions along those axes (``(0, 1)``: X and Y). A test-time
flip of such an axis also negates its position (as the training augmentation does), and padding
extends them with their edge values instead of ``pad_value``. The streamed path builds them per
band from ``position_spacing`` instead of taking them in the volume.
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
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from petseg_jax import resources
from petseg_jax.data import position

Mode = Literal["gaussian", "constant"]
Output = Literal["average", "labels"]
Progress = Callable[[int, int], None]
_MIN_WEIGHT = 1e-3  # MONAI's floor of the importance map
_WINDOWS = "windows"  # the mesh axis a batch of windows is split over


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


def axis_starts(image_shape: Sequence[int], patch_size: Sequence[int],
                overlap: Sequence[float]) -> list[list[int]]:
    """Per axis, MONAI's window starts along it (see :func:`window_starts`)."""
    per_axis = []
    for s, p, i in zip(image_shape, patch_size, scan_interval(image_shape, patch_size, overlap)):
        n = max(0, -(-(s - p) // i)) + 1  # the first window index reaching the end, plus one
        per_axis.append([min(k * i, s - p) for k in range(n)])
    return per_axis


def window_starts(image_shape: Sequence[int], patch_size: Sequence[int],
                  overlap: Sequence[float]) -> np.ndarray:
    """Window start corners ``(n_windows, 3)`` as MONAI's ``dense_patch_slices`` (first axis slowest)."""
    return np.array(list(itertools.product(*axis_starts(image_shape, patch_size, overlap))),
                    dtype=np.int32).reshape(-1, 3)


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



def score_dtype(requested: str | np.dtype | None = None) -> str:
    """The dtype the scores are held in: ``requested``, else the compute dtype of the default
    backend (float32 on the CPU, bfloat16 on accelerators)."""
    if requested is not None:
        return jnp.dtype(requested).name
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def window_devices(batch_size: int, devices: Sequence[jax.Device] | None = None
                   ) -> list[jax.Device]:
    """The devices a batch of ``batch_size`` windows is split over: the first ``d`` of
    ``devices`` (default: this process's devices of the default device's platform), ``d`` the
    largest divisor of ``batch_size`` not above their number, so that each device gets
    ``batch_size / d`` windows."""
    if devices is None:
        default = jax.config.jax_default_device
        platform = getattr(default, "platform", default) or jax.default_backend()
        devices = jax.local_devices(backend=platform)
    devices = list(devices)
    if not devices:
        raise ValueError("no devices to run the sliding window on")
    d = max(n for n in range(1, min(len(devices), batch_size) + 1) if batch_size % n == 0)
    return devices[:d]


def slab_axis(padded_shape: Sequence[int]) -> int:
    """The axis the windows are ordered and streamed along: the longest (the first of equals)."""
    return int(np.argmax(padded_shape))


def window_rows(padded_shape: Sequence[int], patch: Sequence[int], overlap: Sequence[float],
                batch_size: int, axis: int, region: Sequence[tuple[int, int]] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows in row order (module docstring): the rows' starts along ``axis`` ``(R,)``,
    the window corners ``(R, B, batch_size, 3)`` and weights ``(R, B, batch_size)``: 1, or 0
    for the dummy windows (at the row's first corner) that fill each row's last batch.

    ``region`` (per axis ``[lo, hi)`` of the padded volume, each at least a patch long): the
    windows tile that box instead of the whole volume, as they would tile the volume cut to it.
    """
    region = [(0, s) for s in padded_shape] if region is None else [tuple(r) for r in region]
    if any(hi - lo < p or lo < 0 or hi > s for (lo, hi), p, s in zip(region, patch, padded_shape)):
        raise ValueError(f"region {region} must lie in the padded volume {tuple(padded_shape)} "
                         f"and be at least one patch {tuple(patch)} long")
    per_axis = [[lo + a for a in starts] for (lo, _), starts in
                zip(region, axis_starts([hi - lo for lo, hi in region], patch, overlap))]
    rows = np.asarray(per_axis[axis], np.int32)
    grid = np.array(list(itertools.product(*[[0] if d == axis else per_axis[d] for d in range(3)])),
                    np.int32)
    n_batches = -(-len(grid) // batch_size)
    n_dummy = n_batches * batch_size - len(grid)
    grid = np.concatenate([grid, np.repeat(grid[:1], n_dummy, axis=0)])
    starts = np.repeat(grid[None], len(rows), axis=0)
    starts[..., axis] = rows[:, None]
    weights = np.concatenate([np.ones(len(grid) - n_dummy, np.float32),
                              np.zeros(n_dummy, np.float32)])
    return (rows, starts.reshape(len(rows), n_batches, batch_size, 3),
            np.tile(weights.reshape(n_batches, batch_size), (len(rows), 1, 1)))


def grown_region(box: Sequence[tuple[int, int]], pads: Sequence[tuple[int, int]],
                 padded_shape: Sequence[int], patch: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """A box ``[lo, hi)`` per axis of the volume as a region of the padded volume (the padding
    before it added), grown about its centre (inside the padded volume) to at least a patch."""
    region = []
    for (lo, hi), (before, _), size, p in zip(box, pads, padded_shape, patch):
        lo, hi = int(lo) + before, int(hi) + before
        if hi - lo < p:
            lo = min(max(lo - (p - (hi - lo)) // 2, 0), size - p)
            hi = lo + p
        region.append((lo, hi))
    return tuple(region)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static description of how one batch of windows is predicted and added (hashable)."""

    patch: tuple[int, int, int]
    batch_size: int
    mirror_axes: tuple[int, ...]
    accum_dtype: str
    with_params: bool
    position_axes: tuple[int, ...]  # the axes whose positions are input channels 1, 2, ...
    mesh: Mesh | None = None  # a 1-D mesh over "windows": each batch is split over its devices


def _mirror_sets(axes: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _call(predict_fn: Callable, plan: _Plan, params: Any, x: jax.Array) -> jax.Array:
    return predict_fn(params, x) if plan.with_params else predict_fn(x)


def _argmax(scores: jax.Array) -> jax.Array:
    k = scores.shape[-1]
    return jnp.argmax(scores, axis=-1).astype(jnp.uint8 if k <= 256 else jnp.int32)


def _output_channels(predict_fn: Callable, plan: _Plan, channels: int, params: Any,
                     lut: jax.Array | None) -> int:
    """The predictor's number of output channels K, after checking its output shape."""
    window = (plan.batch_size,) + plan.patch
    out = jax.eval_shape(functools.partial(_call, predict_fn, plan), params,
                         jax.ShapeDtypeStruct(window + (channels,), jnp.float32))
    if out.shape[:-1] != window:
        raise ValueError(f"predict_fn maps {window + (channels,)} to {out.shape}; expected "
                         f"{window + ('K',)}")
    k = out.shape[-1]
    if lut is not None and lut.shape != (k,):
        raise ValueError(f"mirror_lut has {lut.shape[0]} entries but predict_fn gives {k} channels")
    return k


def _batch_step(predict_fn: Callable, plan: _Plan) -> Callable:
    """``step(acc, cnt, vol, corners, weights, imp, lut, params) -> (acc, cnt)``: one batch of
    windows cut from ``vol`` at ``corners``, predicted (with test-time mirroring) and added,
    weighted, to ``acc`` (and their weights to ``cnt`` unless it is ``None``); ``vol`` and
    ``acc`` share their coordinates."""
    accum = jnp.dtype(plan.accum_dtype)
    sets = _mirror_sets(plan.mirror_axes)

    def predict(params, lut, x):
        total = None
        for axes in sets:
            flip = tuple(a + 1 for a in axes)  # spatial axis -> batched array axis
            xf = jnp.flip(x, flip) if flip else x
            flipped = [1 + plan.position_axes.index(a) for a in axes if a in plan.position_axes]
            if flipped:  # the flipped axes' positions change sign
                sign = np.ones(x.shape[-1], np.float32)
                sign[flipped] = -1.0
                xf = xf * sign
            y = _call(predict_fn, plan, params, xf).astype(jnp.float32)
            y = jnp.flip(y, flip) if flip else y
            if 0 in axes and lut is not None:
                y = jnp.take(y, lut, axis=-1)
            total = y if total is None else total + y
        return total / len(sets)

    def step(acc, cnt, vol, st, w, imp, lut, params):
        window_shape = plan.patch + (vol.shape[-1],)
        k = acc.shape[-1]
        wins = jax.vmap(lambda s: lax.dynamic_slice(vol, (s[0], s[1], s[2], 0), window_shape))(st)
        if plan.mesh is not None:  # the network runs on each device's share of the batch
            wins = lax.with_sharding_constraint(wins, NamedSharding(plan.mesh, P(_WINDOWS)))
        pred = predict(params, lut, wins)
        if plan.mesh is not None:  # every device adds every window to its copy of the band
            pred = lax.with_sharding_constraint(pred, NamedSharding(plan.mesh, P()))
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

    return step


@functools.lru_cache(maxsize=8)
def _compiled_volume(predict_fn: Callable, plan: _Plan, pads: tuple, pad_value: float,
                     output: str, k: int) -> Callable:
    """The jitted whole-volume program for one predictor and one static plan."""
    step = _batch_step(predict_fn, plan)

    def run(volume, starts, weights, imp, lut, params):
        vol = volume
        if any(lo or hi for lo, hi in pads):
            vol = jnp.pad(volume, pads + ((0, 0),), constant_values=pad_value)
            if plan.position_axes:
                vol = vol.at[..., 1:].set(jnp.pad(volume[..., 1:], pads + ((0, 0),), mode="edge"))
        acc = jnp.zeros(vol.shape[:3] + (k,), jnp.dtype(plan.accum_dtype))
        cnt = jnp.zeros(vol.shape[:3], jnp.float32) if output == "average" else None

        def body(i, carry):
            return step(*carry, vol, starts[i], weights[i], imp, lut, params)

        acc, cnt = lax.fori_loop(0, starts.shape[0], body, (acc, cnt))
        crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, volume.shape[:3]))
        if output == "labels":
            return _argmax(acc[crop])
        return acc[crop].astype(jnp.float32) / cnt[crop][..., None]

    return jax.jit(run)


@functools.lru_cache(maxsize=8)
def _compiled_band(predict_fn: Callable, plan: _Plan, band: jax.ShapeDtypeStruct,
                   slab: jax.ShapeDtypeStruct, n_batches: int, lut: jax.ShapeDtypeStruct | None,
                   params_leaves: tuple, params_tree: Any) -> Any:
    """The compiled program adding the first ``n`` of ``n_batches`` batches of one row of windows
    to the score band (donated), for one predictor, plan and set of shapes (compiled once, kept
    for later calls: a region's rows, shorter than the volume's, run the same program)."""
    step = _batch_step(predict_fn, plan)

    def run(band, slab, n, starts, weights, imp, lut, params):
        def body(i, acc):
            return step(acc, None, slab, starts[i], weights[i], imp, lut, params)[0]

        return lax.fori_loop(0, n, body, band)

    batch = (n_batches, plan.batch_size)
    jit = (jax.jit(run, donate_argnums=0) if plan.mesh is None else
           jax.jit(run, donate_argnums=0, in_shardings=NamedSharding(plan.mesh, P()),
                   out_shardings=NamedSharding(plan.mesh, P())))
    return jit.lower(
        band, slab, jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct(batch + (3,), jnp.int32),
        jax.ShapeDtypeStruct(batch, jnp.float32), jax.ShapeDtypeStruct(plan.patch, jnp.float32),
        lut, jax.tree.unflatten(params_tree, params_leaves)).compile()


@functools.partial(jax.jit, static_argnums=(1, 2), donate_argnums=0)
def _finish_planes(band: jax.Array, n: int, axis: int) -> tuple[jax.Array, jax.Array]:
    """Labels of the band's first ``n`` planes along ``axis``, and the band moved on by ``n``
    planes (zeros behind)."""
    done = lax.slice_in_dim(band, 0, n, axis=axis)
    rest = lax.slice_in_dim(band, n, band.shape[axis], axis=axis)
    return _argmax(done), jnp.concatenate([rest, jnp.zeros_like(done)], axis=axis)


@dataclasses.dataclass(frozen=True)
class Windows:
    """Where the windows go and how their outputs are blended (MONAI's settings, module
    docstring), shared by :func:`sliding_window` and :func:`sliding_window_labels`.

    ``patch_size``/``overlap``/``sigma_scale``: one value or one per axis; ``mode``: the
    importance map; ``batch_size``: windows per network call; ``mirror_axes`` and
    ``mirror_lut``: test-time mirroring; ``pad_value``: the input outside the volume.
    """

    patch_size: int | Sequence[int]
    overlap: float | Sequence[float] = 0.5
    mode: Mode = "gaussian"
    batch_size: int = 4
    sigma_scale: float | Sequence[float] = 0.125
    mirror_axes: Sequence[int] = ()
    mirror_lut: np.ndarray | Sequence[int] | None = None
    pad_value: float = 0.0


def _checked_args(volume: Any, predict_fn: Callable, windows: Windows
                  ) -> tuple[tuple, tuple, tuple, jax.Array | None]:
    """Validated ``(patch, overlaps, mirror axes, lut)`` of either path."""
    if getattr(volume, "ndim", None) != 4:
        raise ValueError(f"volume must be channels-last (X, Y, Z, C), got shape {np.shape(volume)}")
    patch = _triple(windows.patch_size, "patch_size", int)
    overlaps = _triple(windows.overlap, "overlap", float)
    if min(patch) < 1:
        raise ValueError(f"patch_size must be positive, got {patch}")
    if not all(0 <= o < 1 for o in overlaps):
        raise ValueError(f"overlap must be in [0, 1), got {windows.overlap!r}")
    if int(windows.batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {windows.batch_size}")
    axes = tuple(sorted({int(a) for a in windows.mirror_axes}))
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"mirror_axes must be spatial axes 0, 1, 2, got "
                         f"{tuple(windows.mirror_axes)}")
    try:
        hash(predict_fn)
    except TypeError:
        raise TypeError("predict_fn must be hashable (a plain function, a jitted function or "
                        "functools.partial); pass model state through `params`") from None
    lut = None
    if 0 in axes and windows.mirror_lut is not None:
        lut = jnp.asarray(np.asarray(windows.mirror_lut, dtype=np.int32))
    return patch, overlaps, axes, lut


def sliding_window(
    volume: np.ndarray | jax.Array,
    predict_fn: Callable,
    windows: Windows,
    *,
    output: Output = "average",
    accum_dtype: str | np.dtype = "float32",
    params: Any = None,
    position_axes: Sequence[int] = (),
) -> jax.Array:
    """Importance-weighted sliding-window prediction of a channels-last ``(X, Y, Z, C)`` volume,
    with the whole score map in memory (:func:`sliding_window_labels` streams it).

    ``predict_fn(x)`` (or ``predict_fn(params, x)`` when ``params`` is given) maps
    ``(n, px, py, pz, C)`` to ``(n, px, py, pz, K)`` and must be traceable by JAX. Returns the
    weighted average ``(X, Y, Z, K)`` float32 (``output="average"``) or its argmax ``(X, Y, Z)``
    (``output="labels"``: uint8 when K <= 256, else int32). ``accum_dtype="bfloat16"`` halves the
    accumulator (for accelerators: slow on CPU). ``position_axes``: channels 1, 2, ... are
    the positions along these axes (module docstring). See the module docstring for the exact MONAI
    semantics and the memory needed.
    """
    patch, overlaps, axes, lut = _checked_args(volume, predict_fn, windows)
    position_axes = tuple(int(a) for a in position_axes)
    if position_axes and volume.shape[-1] != 1 + len(position_axes):
        raise ValueError(f"position axes {position_axes} need {1 + len(position_axes)} input "
                         f"channels (PET + one per axis), got {volume.shape[-1]}")
    if output not in ("average", "labels"):
        raise ValueError(f"output must be 'average' or 'labels', got {output!r}")
    plan = _Plan(patch, int(windows.batch_size), axes, jnp.dtype(accum_dtype).name,
                 params is not None, position_axes)
    k = _output_channels(predict_fn, plan, volume.shape[-1], params, lut)
    pads = pad_widths(volume.shape[:3], patch)
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(volume.shape[:3], pads))
    _, starts, weights = window_rows(padded, patch, overlaps, plan.batch_size, slab_axis(padded))
    run = _compiled_volume(predict_fn, plan, pads, float(windows.pad_value), output, k)
    return run(jnp.asarray(volume), jnp.asarray(starts.reshape(-1, plan.batch_size, 3)),
               jnp.asarray(weights.reshape(-1, plan.batch_size)),
               jnp.asarray(importance_map(patch, windows.mode, windows.sigma_scale)), lut, params)


def _band_input(volume: np.ndarray, pads: Sequence[tuple[int, int]], axis: int, lo: int, hi: int,
                pad_value: float, positions: list[np.ndarray] | None,
                position_axes: tuple[int, ...]) -> np.ndarray:
    """The padded network input of the padded planes ``[lo, hi)`` along ``axis``: the volume's
    channels (``pad_value`` outside it), then, with ``positions`` (per-axis 1-D positions of
    the volume), the position channels of ``position_axes`` extended with their edge values."""
    shape = volume.shape[:3]
    box = [(0, s + a + b) for s, (a, b) in zip(shape, pads)]
    box[axis] = (lo, hi)
    out = np.full(tuple(b - a for a, b in box) + (volume.shape[-1],), pad_value, np.float32)
    src, dst = [], []
    for (a, b), (before, _), s in zip(box, pads, shape):
        first, last = max(a - before, 0), min(b - before, s)
        last = max(last, first)
        src.append(slice(first, last))
        dst.append(slice(first + before - a, last + before - a))
    out[tuple(dst)] = volume[tuple(src)]
    if positions is None:
        return out
    axes = [p[np.clip(np.arange(a, b) - before, 0, s - 1)]
            for p, (a, b), (before, _), s in zip(positions, box, pads, shape)]
    return np.concatenate([out, position.grid_position(axes, position_axes)], axis=-1)


def sliding_window_labels(
    volume: np.ndarray,
    predict_fn: Callable,
    windows: Windows,
    *,
    accum_dtype: str | np.dtype | None = None,
    params: Any = None,
    position_spacing: Sequence[float] | None = None,
    position_axes: Sequence[int] = position.ALL_AXES,
    progress: Progress | None = None,
    memory_budget: int | None = None,
    region: Sequence[tuple[int, int]] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> np.ndarray:
    """Label map ``(X, Y, Z)`` (uint8 when K <= 256, else int32) of a channels-last volume,
    streamed slab by slab along its longest axis in bounded memory (module docstring).

    ``region`` (per axis ``[lo, hi)`` of the volume): the windows tile only that box, grown to
    at least a patch (:func:`grown_region`), as they would tile the volume cut to it; labels
    outside it are 0. The compiled program is the whole volume's (no compile per box).

    Same windows, weights, mirroring and labels as ``sliding_window(..., output="labels")``.
    ``position_spacing`` (mm) appends the volume's position channels along ``position_axes``,
    built per band;
    ``accum_dtype`` defaults to :func:`score_dtype`; ``progress(done, total)`` is called with
    window counts after each row; ``memory_budget`` (bytes) replaces
    :func:`~petseg_jax.resources.available_memory`. Raises
    :class:`~petseg_jax.resources.MemoryBudgetError` before allocating when the band, the input
    slabs, the label map and XLA's temporaries do not fit.

    ``devices``: each batch of windows is split over :func:`window_devices` of them (default:
    this process's devices); every device holds a copy of the band and adds every window to it,
    so that the labels do not depend on the number of devices. On the CPU the copies share the
    host's memory, and the memory check counts each.
    """
    patch, overlaps, axes, lut = _checked_args(volume, predict_fn, windows)
    axes_used = tuple(int(a) for a in position_axes) if position_spacing is not None else ()
    channels = volume.shape[-1] + len(axes_used)
    used = window_devices(int(windows.batch_size), devices)
    mesh = Mesh(np.array(used), (_WINDOWS,)) if len(used) > 1 else None
    plan = _Plan(patch, int(windows.batch_size), axes, score_dtype(accum_dtype),
                 params is not None, axes_used, mesh)
    k = _output_channels(predict_fn, plan, channels, params, lut)
    shape = tuple(volume.shape[:3])
    pads = pad_widths(shape, patch)
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(shape, pads))
    axis = slab_axis(padded)
    band_shape = tuple(patch[d] if d == axis else padded[d] for d in range(3))
    label_dtype = np.dtype(np.uint8 if k <= 256 else np.int32)
    voxels = int(np.prod(band_shape))
    copies = len(used) if used[0].platform == "cpu" else 1  # bands held in the host's memory
    needed = (copies * (2 * voxels * k * jnp.dtype(plan.accum_dtype).itemsize
                        + 2 * voxels * channels * 4) + int(np.prod(shape)) * label_dtype.itemsize)
    what = (f"the sliding window of a {'x'.join(map(str, shape))} volume (score band "
            f"{'x'.join(map(str, band_shape))} x {k} classes in {plan.accum_dtype}"
            f"{f', one copy on each of {copies} CPU devices' if copies > 1 else ''})")
    resources.check_budget(needed, what, memory_budget)

    n_batches = window_rows(padded, patch, overlaps, plan.batch_size, axis)[1].shape[1]
    rows, starts, weights = window_rows(
        padded, patch, overlaps, plan.batch_size, axis,
        None if region is None else grown_region(region, pads, padded, patch))
    n_active = np.int32(starts.shape[1])  # batches per row; the program's arrays hold n_batches
    fill = ((0, 0), (0, n_batches - n_active), (0, 0))
    starts, weights = np.pad(starts, fill + ((0, 0),)), np.pad(weights, fill)
    starts[..., axis] -= rows[:, None, None]  # corners relative to their band
    imp = jnp.asarray(importance_map(patch, windows.mode, windows.sigma_scale))
    band = jax.ShapeDtypeStruct(band_shape + (k,), jnp.dtype(plan.accum_dtype))
    slab = jax.ShapeDtypeStruct(band_shape + (channels,), jnp.float32)
    params_leaves, params_tree = jax.tree.flatten(jax.eval_shape(lambda p: p, params))
    compiled = _compiled_band(predict_fn, plan, band, slab, n_batches,
                              None if lut is None else jax.ShapeDtypeStruct(lut.shape, lut.dtype),
                              tuple(params_leaves), params_tree)
    stats = compiled.memory_analysis()
    resources.check_budget(needed + int(getattr(stats, "temp_size_in_bytes", 0) or 0), what,
                           memory_budget)

    positions = position.axis_positions(shape, position_spacing) if axes_used else None
    out = np.zeros(shape, label_dtype)
    if mesh is not None:  # the weights, importance map and mirror table on every device
        params, imp, lut = jax.device_put((params, imp, lut), NamedSharding(mesh, P()))
        band = jax.device_put(jnp.zeros(band.shape, band.dtype), NamedSharding(mesh, P()))
    else:
        band = jnp.zeros(band.shape, band.dtype)
    crop = [slice(lo, lo + s) for (lo, _), s in zip(pads, shape)]
    before, length = pads[axis][0], shape[axis]
    total, done = int(np.count_nonzero(weights)), 0
    for r, row in enumerate(rows.tolist()):
        band = compiled(band, _band_input(volume, pads, axis, row, row + patch[axis],
                                          windows.pad_value, positions, axes_used),
                        n_active, starts[r], weights[r], imp, lut, params)
        n = int(rows[r + 1]) - row if r + 1 < len(rows) else patch[axis]
        labels, band = _finish_planes(band, n, axis)
        first, last = max(row - before, 0), min(row + n - before, length)
        if last > first:
            src, dst = list(crop), [slice(None)] * 3
            src[axis] = slice(first - row + before, last - row + before)
            dst[axis] = slice(first, last)
            out[tuple(dst)] = np.asarray(labels)[tuple(src)]
        done += int(np.count_nonzero(weights[r]))
        if progress is not None:
            progress(done, total)
    return out
