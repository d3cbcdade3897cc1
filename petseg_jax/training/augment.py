"""On-device data augmentation (nnU-Net's set), per sample, jit-able, seeded by a PRNG key.

Augment config keys (the ``augment`` section of ``configs/default.py``, nnU-Net v2's values;
missing keys take its values). ``p_*`` is the per-sample probability of an op;
an op with probability 0 is not traced at all, so all-zero probabilities give the identity.

* ``p_rotation``, ``rotation_deg``: rotation about each axis by U(-deg, deg).
* ``p_scale``, ``scale_range``: isotropic zoom factor (> 1 enlarges the content).
  Rotation and zoom are one affine map about the patch centre, applied in ONE resampling
  (trilinear image, nearest label; outside the patch: the sample's minimum / label 0) and
  skipped for the whole batch when no sample drew it. Voxels are taken as isotropic.
* ``p_noise``, ``noise_variance``: additive Gaussian noise, variance U(range).
* ``p_blur``, ``blur_sigma``: Gaussian blur, sigma per axis U(range) in voxels.
* ``p_brightness``, ``brightness_range``: multiply by U(range).
* ``p_contrast``, ``contrast_range``: scale about the mean by U(range), clipped to the
  original min/max.
* ``p_lowres``, ``lowres_zoom``: nearest downsampling by U(range) then linear upsampling.
* ``p_gamma_invert``, ``p_gamma``, ``gamma_range``: gamma on the min-max rescaled image (of
  the negated image for the invert variant), mean and std kept; like nnU-Net, gamma < 1 and
  gamma > 1 are drawn with equal chance.
* ``p_mirror``: three per-axis flip probabilities for (X, Y, Z) of RAS arrays. A flip of X
  (the right-left axis) swaps paired left/right labels through ``mirror_lut``
  (``LabelSchema.mirror_lut()``); Y and Z flips are off by default (anatomy is not symmetric).

Order as in nnU-Net: spatial, noise, blur, brightness, contrast, low resolution, gamma
(inverted), gamma, mirroring. Position channels (``data.position_channels``) are not an image
channel here: they are built from each patch's position after the spatial transform, see
:func:`augment_batch`, and only the mirroring changes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.ndimage import map_coordinates

from petseg_jax.configuration import section

_EPS = 1e-7


def augment_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cfg`` over the schema's ``augment`` section, validated (unknown keys are an error)."""
    cfg = section("augment", cfg)
    cfg["p_mirror"] = tuple(float(p) for p in cfg["p_mirror"])
    probs = {k: v for k, v in cfg.items() if k.startswith("p_") and k != "p_mirror"}
    for k, p in [*probs.items(), *(("p_mirror", p) for p in cfg["p_mirror"])]:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"augment.{k} must be a probability in [0, 1], got {p}")
    if len(cfg["p_mirror"]) != 3:
        raise ValueError(f"augment.p_mirror needs 3 per-axis probabilities, got {cfg['p_mirror']}")
    return cfg


def _uniform(key: jax.Array, bounds, shape=()) -> jax.Array:
    return jax.random.uniform(key, shape, jnp.float32, float(bounds[0]), float(bounds[1]))


def _where_drawn(flags: jax.Array, fn: Callable, args: tuple, current):
    """``vmap(fn)(*args)`` for samples whose flag is set, ``current`` for the others; nothing
    is computed when no sample of the batch drew the op."""

    def run():
        new = jax.vmap(fn)(*args)
        return jax.tree.map(
            lambda a, b: jnp.where(flags.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
            new, current)

    return lax.cond(jnp.any(flags), run, lambda: current)


def _rotation(angles: jax.Array) -> jax.Array:
    """Rotation matrix about X, then Y, then Z (exactly the identity for zero angles)."""
    c, s = jnp.cos(angles), jnp.sin(angles)
    one, zero = jnp.ones(()), jnp.zeros(())
    rx = jnp.array([[one, zero, zero], [zero, c[0], -s[0]], [zero, s[0], c[0]]])
    ry = jnp.array([[c[1], zero, s[1]], [zero, one, zero], [-s[1], zero, c[1]]])
    rz = jnp.array([[c[2], -s[2], zero], [s[2], c[2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def _source_points(shape: tuple[int, ...], matrix: jax.Array) -> jax.Array:
    """``(3, X, Y, Z)``: where each output voxel ``c`` samples, ``matrix @ (c - centre) + centre``
    (exactly the voxel grid for the identity matrix)."""
    centre = (jnp.asarray(shape, jnp.float32) - 1) / 2
    grid = jnp.stack(jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) for n in shape],
                                  indexing="ij"))
    coords = jnp.einsum("ij,j...->i...", matrix, grid - centre[:, None, None, None])
    return coords + centre[:, None, None, None]


def _resample(image: jax.Array, label: jax.Array, matrix: jax.Array):
    """Image (trilinear) and label (nearest) at ``matrix @ (c - centre) + centre``."""
    coords = _source_points(image.shape, matrix)
    low = jnp.min(image)  # fill outside the patch with the sample's background level
    image = map_coordinates(image - low, list(coords), order=1, mode="constant", cval=0.0) + low
    label = map_coordinates(label, list(coords), order=0, mode="constant", cval=0)
    return image, label


def _axis_apply(image: jax.Array, mats: list[jax.Array]) -> jax.Array:
    """Apply one (n, n) matrix along each spatial axis (separable linear filter)."""
    image = jnp.einsum("ia,ayz->iyz", mats[0], image)
    image = jnp.einsum("ja,xaz->xjz", mats[1], image)
    return jnp.einsum("ka,xya->xyk", mats[2], image)


def _blur(image: jax.Array, sigma: jax.Array) -> jax.Array:
    """Gaussian blur, sigma per axis; kernels renormalised at the borders."""
    mats = []
    for n, s in zip(image.shape, sigma):
        d = jnp.arange(n, dtype=jnp.float32)
        w = jnp.exp(-0.5 * ((d[:, None] - d[None, :]) / s) ** 2)
        w = jnp.where(jnp.abs(d[:, None] - d[None, :]) <= jnp.ceil(4 * s), w, 0.0)
        mats.append(w / w.sum(1, keepdims=True))
    return _axis_apply(image, mats)


def _lowres(image: jax.Array, zoom: jax.Array) -> jax.Array:
    """Nearest downsampling by ``zoom`` (< 1) then linear upsampling, per axis as matrices."""
    mats = []
    for n in image.shape:
        m = n * zoom  # low-res grid size (continuous)
        u = jnp.clip((jnp.arange(n, dtype=jnp.float32) + 0.5) * zoom - 0.5, 0.0, m - 1)
        lo = jnp.floor(u)
        t = u - lo
        hi = jnp.minimum(lo + 1, jnp.maximum(m - 1, 0.0))

        def source(j):  # original voxel nearest to low-res voxel j
            return jnp.clip(jnp.round((j + 0.5) / zoom - 0.5), 0, n - 1).astype(jnp.int32)

        mats.append((1 - t)[:, None] * jax.nn.one_hot(source(lo), n)
                    + t[:, None] * jax.nn.one_hot(source(hi), n))
    return _axis_apply(image, mats)


def _contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
    mean = jnp.mean(image)
    return jnp.clip((image - mean) * factor + mean, jnp.min(image), jnp.max(image))


def _gamma(image: jax.Array, gamma: jax.Array, invert: bool) -> jax.Array:
    x = -image if invert else image
    mean, std = jnp.mean(x), jnp.std(x)
    low, span = jnp.min(x), jnp.max(x) - jnp.min(x) + _EPS
    y = ((x - low) / span) ** gamma * span + low
    y = (y - jnp.mean(y)) / (jnp.std(y) + 1e-8) * std + mean
    return -y if invert else y


def _draw_gamma(key: jax.Array, bounds) -> jax.Array:
    """nnU-Net: half the time from [low, 1), else from [max(low, 1), high]."""
    k1, k2 = jax.random.split(key)
    low, high = float(bounds[0]), float(bounds[1])
    below = jax.random.uniform(k1, ()) < 0.5
    return jnp.where(below & (low < 1), _uniform(k2, (low, min(1.0, high))),
                     _uniform(k2, (max(low, 1.0), high)))


def augment_batch(key: jax.Array, image: jax.Array, label: jax.Array,
                  cfg: Mapping[str, Any] | None, mirror_lut: jax.Array | np.ndarray,
                  position: jax.Array | None = None,
                  position_axes: Sequence[int] = (0, 1, 2)) -> tuple[jax.Array, jax.Array]:
    """Augment ``image`` ``(N, X, Y, Z, 1)`` and ``label`` ``(N, X, Y, Z)`` per sample.

    ``cfg`` is static (keys in the module docstring); ``mirror_lut`` maps a label to its
    mirror-image label (``schema.mirror_lut()``). With ``position`` ``(N, 2, 3)`` (each patch's
    first-voxel position and per-voxel step, :func:`petseg_jax.data.position.patch_position`)
    the returned image has the positions of ``position_axes`` after the PET channel,
    ``(N, X, Y, Z, 1 + len(position_axes))``: they follow the content through rotation and
    zoom, and a flip negates the flipped axis's position. Same key, same result.
    """
    cfg = augment_config(cfg)
    if image.ndim != 5 or image.shape[-1] != 1 or image.shape[:4] != label.shape:
        raise ValueError(f"augment_batch wants image (N,X,Y,Z,1) and label (N,X,Y,Z), got "
                         f"{image.shape} and {label.shape}")
    n = image.shape[0]
    intensity = [
        ("p_noise", lambda k, img: img + jnp.sqrt(_uniform(jax.random.fold_in(k, 1),
                                                           cfg["noise_variance"]))
         * jax.random.normal(k, img.shape)),
        ("p_blur", lambda k, img: _blur(img, _uniform(k, cfg["blur_sigma"], (3,)))),
        ("p_brightness", lambda k, img: img * _uniform(k, cfg["brightness_range"])),
        ("p_contrast", lambda k, img: _contrast(img, _uniform(k, cfg["contrast_range"]))),
        ("p_lowres", lambda k, img: _lowres(img, _uniform(k, cfg["lowres_zoom"]))),
        ("p_gamma_invert", lambda k, img: _gamma(img, _draw_gamma(k, cfg["gamma_range"]), True)),
        ("p_gamma", lambda k, img: _gamma(img, _draw_gamma(k, cfg["gamma_range"]), False)),
    ]
    # Key slots per sample: 0-3 spatial, 4-6 mirror per axis, then one per intensity op.
    keys = jax.vmap(lambda k: jax.random.split(k, 7 + len(intensity)))(jax.random.split(key, n))

    def draw(slot: int, p: float) -> jax.Array:  # per-sample Bernoulli(p)
        return jax.vmap(lambda k: jax.random.bernoulli(k, p))(keys[:, slot])

    x, y = image[..., 0].astype(jnp.float32), label
    p_rot, p_scale = float(cfg["p_rotation"]), float(cfg["p_scale"])
    matrix = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (n, 3, 3))
    if p_rot > 0 or p_scale > 0:
        do_rot, do_scale = draw(0, p_rot), draw(1, p_scale)
        limit = float(np.deg2rad(float(cfg["rotation_deg"])))
        angles = jax.vmap(lambda k: _uniform(k, (-limit, limit), (3,)))(keys[:, 2])
        zoom = jax.vmap(lambda k: _uniform(k, cfg["scale_range"]))(keys[:, 3])
        matrix = jax.vmap(lambda a, z: _rotation(a) / z)(
            jnp.where(do_rot[:, None], angles, 0.0), jnp.where(do_scale, zoom, 1.0))
        x, y = _where_drawn(do_rot | do_scale, _resample, (x, y, matrix), (x, y))
    pos = None
    if position is not None:
        if position.shape != (n, 2, 3):
            raise ValueError(f"position must be (N, 2, 3), got {position.shape}")
        points = jax.vmap(lambda m: _source_points(x.shape[1:], m))(matrix)  # (N, 3, X, Y, Z)
        origin, step = (position[:, i, :, None, None, None] for i in (0, 1))
        pos = jnp.moveaxis(origin + step * points, 1, -1)  # (N, X, Y, Z, 3)
    for j, (name, fn) in enumerate(intensity):
        p = float(cfg[name])
        if p > 0:
            op_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys[:, 7 + j])
            x = _where_drawn(draw(7 + j, p), fn, (op_keys, x), x)
    lut = jnp.asarray(mirror_lut)
    for axis, p in enumerate(cfg["p_mirror"]):
        if p > 0:
            def flip(img, lbl, pos, axis=axis):
                lbl = jnp.flip(lbl, axis)
                lbl = lut[lbl].astype(lbl.dtype) if axis == 0 else lbl
                if pos is not None:  # the patch as cut from the mirrored scan
                    negate = np.where(np.arange(3) == axis, -1, 1).astype(np.float32)
                    pos = jnp.flip(pos, axis) * negate
                return jnp.flip(img, axis), lbl, pos

            x, y, pos = _where_drawn(draw(4 + axis, p), flip, (x, y, pos), (x, y, pos))
    out = (x[..., None] if pos is None
           else jnp.concatenate([x[..., None], pos[..., list(position_axes)]], axis=-1))
    return out.astype(image.dtype), y
