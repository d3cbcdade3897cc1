"""The plain U-Net of :mod:`petseg_jax.models.unet` in PyTorch, for ``--vs-torch`` benchmarks.

Same structure as ``build_model`` with ``name="unet"``: conv (no bias) -> InstanceNorm3d
(affine, eps 1e-5) -> LeakyReLU(0.01) blocks, the first conv of each stage strided, transposed
conv (kernel = stride, bias) upsampling, skip concatenation (upsampled first), decoder blocks
and 1x1x1 heads; deep supervision outputs full resolution first. Channels-first (N, C, X, Y, Z).
:func:`load_jax_params` copies a JAX parameter dict (``ModelDef.init_params``) into it, so the
two give the same logits (tested). The train step is nnU-Net's: deep-supervised CE + soft Dice
(labels downsampled by striding, like ``loss.downsample_labels``), then SGD (Nesterov) or AdamW.

PyTorch is optional: importing this module without it raises ``ImportError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from petseg_jax.models.unet import NEGATIVE_SLOPE, NORM_EPS, model_config
from petseg_jax.training.loss import deep_supervision_weights, loss_config
from petseg_jax.training.optim import optim_config


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride, kernel_size: int):
        super().__init__(nn.Conv3d(cin, cout, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.InstanceNorm3d(cout, eps=NORM_EPS, affine=True),
                         nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True))


class TorchUNet(nn.Module):
    """PyTorch twin of ``petseg_jax.models.unet.UNet`` (plain ``"unet"`` only)."""

    def __init__(self, model_cfg: Mapping[str, Any], in_channels: int, num_classes: int):
        super().__init__()
        cfg = model_config(model_cfg)
        if cfg["name"] != "unet":
            raise ValueError(f"the PyTorch reference has only model.name='unet', "
                             f"got {cfg['name']!r}")
        feats, strides, k = cfg["features"], cfg["strides"], cfg["kernel_size"]
        self.encoder, cin = nn.ModuleList(), in_channels
        for s, (f, n_blocks) in enumerate(zip(feats, cfg["blocks_per_stage"])):
            self.encoder.append(nn.Sequential(*[
                ConvNormAct(cin if b == 0 else f, f, strides[s] if b == 0 else 1, k)
                for b in range(n_blocks)]))
            cin = f
        self.ups, self.decoders, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, n_blocks in enumerate(cfg["decoder_blocks"]):  # deepest first
            s = len(feats) - 2 - i
            self.ups.append(nn.ConvTranspose3d(feats[s + 1], feats[s], strides[s + 1],
                                               strides[s + 1]))
            self.decoders.append(nn.Sequential(*[
                ConvNormAct(2 * feats[s] if b == 0 else feats[s], feats[s], 1, k)
                for b in range(n_blocks)]))
            self.heads.append(nn.Conv3d(feats[s], num_classes, 1))
        self.deep_supervision = bool(cfg["deep_supervision"])

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        all_heads = self.deep_supervision and self.training
        outputs = []
        for i, (up, dec, head) in enumerate(zip(self.ups, self.decoders, self.heads)):
            x = dec(torch.cat([up(x), skips[-2 - i]], 1))
            if all_heads or i == len(self.heads) - 1:
                outputs.append(head(x))
        return outputs[::-1] if all_heads else outputs[-1]


def _t(a, *perm: int) -> torch.Tensor:
    return torch.from_numpy(np.array(np.asarray(a, np.float32).transpose(perm), order="C"))


def load_jax_params(net: TorchUNet, params: Mapping[str, Any]) -> TorchUNet:
    """Copy a JAX ``UNet`` parameter dict (``nnx.to_pure_dict`` layout) into ``net``."""

    def block(seq: ConvNormAct, p: Mapping[str, Any]) -> None:
        seq[0].weight.copy_(_t(p["conv"]["kernel"], 4, 3, 0, 1, 2))
        seq[1].weight.copy_(_t(p["norm"]["scale"], 0))
        seq[1].bias.copy_(_t(p["norm"]["bias"], 0))

    with torch.no_grad():
        stages = [*zip(net.encoder, params["encoder"].values()),
                  *zip(net.decoders, params["decoders"].values())]
        for stage, p_stage in stages:
            for b, p in zip(stage, p_stage.values()):
                block(b, p)
        for up, p in zip(net.ups, params["ups"].values()):
            up.weight.copy_(_t(p["kernel"], 3, 4, 0, 1, 2))
            up.bias.copy_(_t(p["bias"], 0))
        for head, p in zip(net.heads, params["heads"].values()):
            head.weight.copy_(_t(p["kernel"], 4, 3, 0, 1, 2))
            head.bias.copy_(_t(p["bias"], 0))
    return net


def _ce_dice(logits: torch.Tensor, label: torch.Tensor, cfg: Mapping[str, Any]) -> torch.Tensor:
    ce = nn.functional.cross_entropy(logits, label)
    probs = logits.softmax(1)
    onehot = nn.functional.one_hot(label, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    first = 0 if cfg["do_bg"] else 1
    probs, onehot = probs[:, first:], onehot[:, first:]
    axes = (0, 2, 3, 4) if cfg["batch_dice"] else (2, 3, 4)
    tp, denom = (probs * onehot).sum(axes), (probs + onehot).sum(axes)
    dice = (2 * tp + cfg["smooth"]) / (denom + cfg["smooth"]).clamp_min(1e-8)
    if cfg["dice_present_only"]:
        present = (onehot.sum(axes) > 0).to(dice.dtype)
        dice = (dice * present).sum() / present.sum().clamp_min(1.0)
    return cfg["weight_ce"] * ce + cfg["weight_dice"] * (1 - dice.mean())


def segmentation_loss(outputs: torch.Tensor | list[torch.Tensor], label: torch.Tensor,
                      loss_cfg: Mapping[str, Any] | None = None) -> torch.Tensor:
    """``petseg_jax.training.loss.segmentation_loss`` in PyTorch (channels first; labels
    ``(N, X, Y, Z)`` int64); ``ignore_label`` is not supported."""
    cfg = loss_config(loss_cfg)
    if cfg["ignore_label"] is not None:
        raise ValueError("the PyTorch reference loss does not support loss.ignore_label")
    outputs = outputs if isinstance(outputs, list) else [outputs]
    weights = deep_supervision_weights(len(outputs), cfg["ds_drop_lowest"])
    loss = torch.zeros(())
    for out, w in zip(outputs, weights):
        if w > 0:
            f = [a // b for a, b in zip(label.shape[1:], out.shape[2:])]
            loss = loss + float(w) * _ce_dice(out, label[:, ::f[0], ::f[1], ::f[2]], cfg)
    return loss


def make_train_step(net: TorchUNet, config):
    """``step(image NCXYZ float32, label NXYZ int64) -> loss``: forward, loss, backward, update."""
    opt_cfg = optim_config(config.optim)
    if opt_cfg["name"] == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=opt_cfg["lr"], weight_decay=opt_cfg[
            "weight_decay"], betas=(opt_cfg["b1"], opt_cfg["b2"]), eps=opt_cfg["eps"])
    else:
        opt = torch.optim.SGD(net.parameters(), lr=opt_cfg["lr"], momentum=opt_cfg["momentum"],
                              nesterov=opt_cfg["nesterov"], weight_decay=opt_cfg["weight_decay"])
    net.train()

    def step(image: torch.Tensor, label: torch.Tensor) -> float:
        loss = segmentation_loss(net(image), label, config.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def sliding_window(volume: np.ndarray, net: TorchUNet, patch, overlap: float, batch_size: int,
                   sigma_scale: float = 0.125) -> np.ndarray:
    """MONAI-style Gaussian-weighted sliding-window argmax of a channels-last (X, Y, Z, C)
    volume with ``net`` (eval mode), written as the plain loop MONAI runs; windows and
    importance map are those of :mod:`petseg_jax.inference.sliding_window`."""
    from petseg_jax.inference.sliding_window import importance_map, pad_widths, window_starts

    patch = tuple(int(p) for p in patch)
    pads = pad_widths(volume.shape[:3], patch)
    x = torch.from_numpy(np.pad(np.asarray(volume, np.float32), [*pads, (0, 0)])
                         ).permute(3, 0, 1, 2)[None]
    starts = window_starts(x.shape[2:], patch, (overlap,) * 3)
    imp = torch.from_numpy(np.asarray(importance_map(patch, "gaussian", sigma_scale), np.float32))
    net.eval()
    acc = count = None
    with torch.inference_mode():
        for i in range(0, len(starts), batch_size):
            sl = [tuple(slice(int(a), int(a) + p) for a, p in zip(s, patch))
                  for s in starts[i:i + batch_size]]
            out = net(torch.cat([x[(0, slice(None), *w)][None] for w in sl])) * imp
            if acc is None:
                acc = torch.zeros((out.shape[1], *x.shape[2:]))
                count = torch.zeros(x.shape[2:])
            for o, w in zip(out, sl):
                acc[(slice(None), *w)] += o
                count[w] += imp
        labels = (acc / count).argmax(0)
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, volume.shape[:3]))
    return labels[crop].numpy().astype(np.uint8)
