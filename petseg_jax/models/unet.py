"""nnU-Net-like 3-D U-Nets in Flax NNX: plain ("unet") and residual-encoder ("resenc").

Model config keys (the ``model`` section of ``configs/default.py``; missing keys take its values):

* ``name``: ``"unet"`` (nnU-Net PlainConvUNet) or ``"resenc"`` (nnU-Net ResEnc M/L style:
  a conv stem, then residual basic blocks in the encoder; the decoder is the plain one).
* ``n_stages``: resolution levels, bottleneck included (>= 2).
* ``base_features``, ``max_features``: stage ``s`` has ``min(base * 2**s, max)`` features.
* ``blocks_per_stage``: int or one int per stage: convs per encoder stage ("unet") or
  residual blocks per stage ("resenc"; ResEnc M is ``(1, 3, 4, 6, 6, 6)``).
* ``decoder_blocks``: int or one int per decoder stage, deepest first (nnU-Net's order).
* ``strides``: empty (stage 0 stride 1, then 2 per axis) or one int / 3 ints per stage.
  The first conv (block) of each stage is strided; upsampling is a transposed conv with
  kernel = stride.
* ``kernel_size``: odd int (3), padding ``k // 2`` on both sides like nnU-Net.
* ``deep_supervision``: in training mode return one logit map per decoder stage.
* ``dtype``: compute dtype name (``"float32"`` on CPU, ``"bfloat16"`` on GPU). Parameters are
  float32 and cast at use; instance-norm statistics are float32; logits are float32.
* ``conv_impl``: ``"auto"`` | ``"xla"`` | ``"fold"``, see :mod:`petseg_jax.models.conv`.

Mode: models are built in training mode. ``model.eval()`` / ``model.train()`` (nnx) switch
it, or pass ``deterministic=`` to a call. ``model(x)`` with ``x`` ``(N, X, Y, Z, C_in)`` gives
float32 logits ``(N, X, Y, Z, K)``; with ``deep_supervision`` in training mode, a list of
logits, full resolution first, then each coarser decoder stage (``n_stages - 1`` maps; the
bottleneck has no head). X, Y, Z must be multiples of :func:`total_stride`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from petseg_jax.configuration import section
from petseg_jax.models.conv import IMPLS, conv3d, conv_transpose3d, pointwise_conv

NAMES = ("unet", "resenc")
NEGATIVE_SLOPE = 0.01
NORM_EPS = 1e-5
# nnU-Net initialises convs with kaiming_normal_(a=1e-2).
_KERNEL_INIT = jax.nn.initializers.variance_scaling(2.0 / (1 + NEGATIVE_SLOPE ** 2), "fan_in",
                                                     "normal")


def model_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``model_cfg`` over the schema's ``model`` section, validated, per-stage lists expanded."""
    cfg = section("model", model_cfg)
    if cfg["name"] not in NAMES:
        raise ValueError(f"model.name must be one of {NAMES}, got {cfg['name']!r}")
    if cfg["conv_impl"] not in IMPLS:
        raise ValueError(f"model.conv_impl must be one of {IMPLS}, got {cfg['conv_impl']!r}")
    n = int(cfg["n_stages"])
    if n < 2:
        raise ValueError(f"model.n_stages must be >= 2, got {n}")
    if cfg["kernel_size"] % 2 != 1:
        raise ValueError(f"model.kernel_size must be odd, got {cfg['kernel_size']}")
    cfg["blocks_per_stage"] = _per_stage(cfg["blocks_per_stage"], n, "blocks_per_stage")
    cfg["decoder_blocks"] = _per_stage(cfg["decoder_blocks"], n - 1, "decoder_blocks")
    strides = cfg["strides"] or [1] + [2] * (n - 1)
    if len(strides) != n:
        raise ValueError(f"model.strides needs {n} entries (one per stage), got {strides}")
    cfg["strides"] = [(s,) * 3 if isinstance(s, int) else tuple(int(a) for a in s)
                      for s in strides]
    cfg["features"] = [min(int(cfg["base_features"]) * 2 ** s, int(cfg["max_features"]))
                       for s in range(n)]
    jnp.dtype(cfg["dtype"])  # fails early on a bad dtype name
    return cfg


def _per_stage(v: int | Sequence[int], n: int, key: str) -> list[int]:
    out = [int(v)] * n if isinstance(v, int) else [int(a) for a in v]
    if len(out) != n or min(out) < 1:
        raise ValueError(f"model.{key} must be a positive int or {n} positive ints, got {v!r}")
    return out


def total_stride(model_cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    """Product of the stage strides per axis: patch sizes must be multiples of it."""
    return tuple(int(a) for a in np.prod(model_config(model_cfg)["strides"], axis=0))


class Conv(nnx.Module):
    """3-D conv with float32 parameters, computed in ``dtype``, ``k // 2`` padding."""

    def __init__(self, cin: int, cout: int, *, kernel_size: int = 3, stride=(1, 1, 1),
                 bias: bool = False, dtype=jnp.float32, impl: str = "auto", rngs: nnx.Rngs):
        k = kernel_size
        self.kernel = nnx.Param(_KERNEL_INIT(rngs.params(), (k, k, k, cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32)) if bias else None
        self.stride, self.pad, self.dtype, self.impl = tuple(stride), k // 2, dtype, impl

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        if kernel.shape[:3] == (1, 1, 1) and self.stride == (1, 1, 1):
            y = pointwise_conv(x.astype(self.dtype), kernel[0, 0, 0])
        else:
            y = conv3d(x.astype(self.dtype), kernel, self.stride, [(self.pad, self.pad)] * 3,
                       self.impl)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class Upsample(nnx.Module):
    """Transposed conv with kernel = stride (nnU-Net's decoder upsampling), with bias."""

    def __init__(self, cin: int, cout: int, stride, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_KERNEL_INIT(rngs.params(), (*stride, cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv_transpose3d(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        return y + self.bias[...].astype(self.dtype)


class ConvNormAct(nnx.Module):
    """conv -> InstanceNorm (affine, float32 statistics) -> LeakyReLU(0.01) (``act=False``: none)."""

    def __init__(self, cin: int, cout: int, *, stride=(1, 1, 1), act: bool = True,
                 kernel_size: int = 3, dtype=jnp.float32, impl: str = "auto", rngs: nnx.Rngs):
        self.conv = Conv(cin, cout, kernel_size=kernel_size, stride=stride, dtype=dtype,
                         impl=impl, rngs=rngs)
        self.norm = nnx.InstanceNorm(cout, epsilon=NORM_EPS, dtype=dtype, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.norm(self.conv(x))
        return jax.nn.leaky_relu(y, NEGATIVE_SLOPE) if self.act else y


class ResidualBlock(nnx.Module):
    """nnU-Net's BasicBlockD: two conv-norm (LeakyReLU between), skip = avg-pool(stride) then
    1x1 conv-norm when the shape changes, LeakyReLU after the sum."""

    def __init__(self, cin: int, cout: int, *, stride=(1, 1, 1), **kw):
        self.conv1 = ConvNormAct(cin, cout, stride=stride, **kw)
        self.conv2 = ConvNormAct(cout, cout, act=False, **kw)
        self.stride = tuple(stride)
        self.skip = (ConvNormAct(cin, cout, act=False, **{**kw, "kernel_size": 1})
                     if cin != cout or self.stride != (1, 1, 1) else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv2(self.conv1(x))
        if self.skip is not None:
            if self.stride != (1, 1, 1):
                n, *sp, c = x.shape
                s = self.stride
                x = x.reshape(n, sp[0] // s[0], s[0], sp[1] // s[1], s[1], sp[2] // s[2], s[2],
                              c).mean((2, 4, 6))
            x = self.skip(x)
        return jax.nn.leaky_relu(y + x.astype(y.dtype), NEGATIVE_SLOPE)


class UNet(nnx.Module):
    """Encoder-decoder with skip connections; see the module docstring for the config."""

    def __init__(self, cfg: Mapping[str, Any], in_channels: int, num_classes: int, *,
                 rngs: nnx.Rngs):
        cfg = model_config(cfg)
        dtype = jnp.dtype(cfg["dtype"])
        kw = {"kernel_size": cfg["kernel_size"], "dtype": dtype, "impl": cfg["conv_impl"],
              "rngs": rngs}
        feats, strides = cfg["features"], cfg["strides"]
        self.residual = cfg["name"] == "resenc"
        self.stem = ConvNormAct(in_channels, feats[0], **kw) if self.residual else None
        stages, cin = [], feats[0] if self.residual else in_channels
        for s, (f, n_blocks) in enumerate(zip(feats, cfg["blocks_per_stage"])):
            block = ResidualBlock if self.residual else ConvNormAct
            stages.append(nnx.List([block(cin if b == 0 else f, f,
                                          stride=strides[s] if b == 0 else (1, 1, 1), **kw)
                                    for b in range(n_blocks)]))
            cin = f
        self.encoder = nnx.List(stages)
        ups, decoders, heads = [], [], []
        for i, n_blocks in enumerate(cfg["decoder_blocks"]):  # deepest decoder stage first
            s = len(feats) - 2 - i
            ups.append(Upsample(feats[s + 1], feats[s], strides[s + 1], dtype=dtype, rngs=rngs))
            decoders.append(nnx.List([ConvNormAct(2 * feats[s] if b == 0 else feats[s],
                                                  feats[s], **kw) for b in range(n_blocks)]))
            heads.append(Conv(feats[s], num_classes, kernel_size=1, bias=True, dtype=dtype,
                              rngs=rngs))
        self.ups, self.decoders, self.heads = nnx.List(ups), nnx.List(decoders), nnx.List(heads)
        self.deep_supervision = bool(cfg["deep_supervision"])
        self.deterministic = False  # nnx convention: model.eval() sets True, .train() False

    def __call__(self, x: jax.Array, *, deterministic: bool | None = None
                 ) -> jax.Array | list[jax.Array]:
        """Logits (float32); a list, full resolution first, with deep supervision in training."""
        if deterministic is None:
            deterministic = self.deterministic
        if self.stem is not None:
            x = self.stem(x)
        skips = []
        for stage in self.encoder:
            for block in stage:
                x = block(x)
            skips.append(x)
        all_heads = self.deep_supervision and not deterministic
        outputs = []
        for i, (up, blocks, head) in enumerate(zip(self.ups, self.decoders, self.heads)):
            x = jnp.concatenate([up(x), skips[-2 - i]], axis=-1)
            for block in blocks:
                x = block(x)
            if all_heads or i == len(self.heads) - 1:
                outputs.append(head(x).astype(jnp.float32))
        return outputs[::-1] if all_heads else outputs[-1]


def build_model(model_cfg: Mapping[str, Any], in_channels: int, num_classes: int,
                rngs: nnx.Rngs) -> UNet:
    """The U-Net that ``model_cfg`` describes (keys in the module docstring)."""
    return UNet(model_cfg, in_channels, num_classes, rngs=rngs)
