"""Organ overlays on PET projections: the prediction preview and the evaluation's MIP figures.

Views are maximum-intensity projections of a RAS ``(X, Y, Z)`` volume: coronal (max over y;
the subject's right on the viewer's left, radiological convention) and sagittal (max over x;
anterior on the left). Each organ is filled where it lies anywhere along the projection ray, in
its own colour (:func:`petseg_jax.data.organ_codes.organ_color`) at :data:`ALPHA` opacity, so
overlapping organs stay visible through each other; a legend names every organ shown. Head up,
mm-true aspect. matplotlib only (Agg backend), no JAX.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from scipy import ndimage  # noqa: E402

from petseg_jax.data.organ_codes import organ_color  # noqa: E402
from petseg_jax.resources import write_atomic  # noqa: E402

ALPHA = 0.45
VIEWS = {"coronal": 1, "sagittal": 0}  # view -> the RAS axis projected away


def view_image(a: np.ndarray) -> np.ndarray:
    """A 2-D projection (the two remaining RAS axes, z last) as displayed: rows superior
    first; columns from the axis' high end: right first (coronal), anterior first (sagittal)."""
    return a.T[::-1, ::-1]


def organ_projections(labels: np.ndarray, axis: int) -> dict[int, np.ndarray]:
    """label id -> boolean projection of that organ along ``axis`` (anywhere on the ray)."""
    out = {}
    keep = [a for a in range(3) if a != axis]
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            proj = np.zeros((labels.shape[keep[0]], labels.shape[keep[1]]), dtype=bool)
            proj[box[keep[0]], box[keep[1]]] = (labels[box] == i).any(axis=axis)
            out[i] = proj
    return out


def overlay_rgba(labels: np.ndarray, axis: int) -> tuple[np.ndarray, list[int]]:
    """An RGBA image of the organs' filled projections (alpha-composited in id order) and the
    ids drawn."""
    projections = organ_projections(labels, axis)
    rgba = None
    for label_id, proj in projections.items():
        shown = view_image(proj)
        if rgba is None:
            rgba = np.zeros(shown.shape + (4,), np.float32)
        layer = np.zeros_like(rgba)
        layer[shown, :3] = organ_color(label_id)
        layer[shown, 3] = ALPHA
        out_alpha = layer[..., 3:] + rgba[..., 3:] * (1 - layer[..., 3:])
        rgb = layer[..., :3] * layer[..., 3:] + rgba[..., :3] * rgba[..., 3:] * (1 - layer[..., 3:])
        rgba = np.concatenate([np.divide(rgb, out_alpha, out=np.zeros_like(rgb),
                                         where=out_alpha > 0), out_alpha], axis=-1)
    return rgba, list(projections)


def draw_view(ax, pet: np.ndarray, labels: np.ndarray | None, spacing: Sequence[float],
              view: str, vmax: float) -> list[int]:
    """Draw one projection of ``pet`` (RAS) with the organs of ``labels`` filled on ``ax``;
    returns the label ids drawn."""
    axis = VIEWS[view]
    keep = [a for a in range(3) if a != axis]
    mip = view_image(np.nan_to_num(pet.astype(np.float32)).max(axis=axis))
    extent = (0.0, pet.shape[keep[0]] * spacing[keep[0]], 0.0, pet.shape[2] * spacing[2])
    ax.imshow(mip, cmap="gray_r", vmin=0.0, vmax=vmax, extent=extent, origin="upper",
              interpolation="nearest")
    drawn = []
    if labels is not None:
        rgba, drawn = overlay_rgba(labels, axis)
        if rgba is not None:
            ax.imshow(rgba, extent=extent, origin="upper", interpolation="nearest")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    left, right = ("R", "L") if view == "coronal" else ("A", "P")
    ax.text(0.02, 0.99, left, transform=ax.transAxes, va="top", ha="left", color="tab:red")
    ax.text(0.98, 0.99, right, transform=ax.transAxes, va="top", ha="right", color="tab:red")
    return drawn


def display_max(pet: np.ndarray) -> float:
    """The grey scale's upper end: the 99.5th percentile of the coronal MIP (or its max)."""
    mip = np.nan_to_num(pet.astype(np.float32)).max(axis=1)
    return float(np.percentile(mip, 99.5)) or float(mip.max()) or 1.0


def add_legend(fig, ids: Sequence[int], label_names: Mapping[int, str]) -> None:
    """A legend of filled patches naming each organ in ``ids`` (outside, right)."""
    ids = sorted(set(ids))
    if ids:
        fig.legend([Patch(facecolor=(*organ_color(i), ALPHA), edgecolor=organ_color(i))
                    for i in ids], [label_names.get(i, str(i)) for i in ids],
                   loc="outside right center", fontsize=7, frameon=False)


def save_figure(fig, path: str | Path) -> Path:
    """Save ``fig`` as PNG atomically (temporary file + rename) and close it."""
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110,
                                                          bbox_inches="tight"))
    finally:
        plt.close(fig)


def preview_figure(out_png: str | Path, pet: np.ndarray, labels: np.ndarray,
                   spacing: Sequence[float], label_names: Mapping[int, str], title: str) -> Path:
    """Coronal and sagittal MIPs of a RAS PET volume with its organs filled and named."""
    pet, labels = np.asarray(pet), np.asarray(labels)
    if pet.ndim != 3 or pet.shape != labels.shape:
        raise ValueError(f"preview needs a 3-D PET and a label map of its shape, got {pet.shape}"
                         f" and {labels.shape}")
    sx, sy, sz = (float(s) for s in spacing)
    widths = [pet.shape[0] * sx, pet.shape[1] * sy]
    aspect = sum(widths) / (pet.shape[2] * sz)  # panels' width over height
    height = min(7.0, 12.0 / aspect)  # whole-body scans are tall, short ones wide
    width = height * aspect + 2.2
    fig, axes = plt.subplots(1, 2, figsize=(max(width, 5.0), height + 0.6), sharey=True,
                             layout="constrained", gridspec_kw={"width_ratios": widths})
    vmax = display_max(pet)
    drawn = []
    for ax, view in zip(axes, VIEWS):
        drawn += draw_view(ax, pet, labels, spacing, view, vmax)
        ax.set_title(view)
    add_legend(fig, drawn, label_names)
    fig.suptitle(title)
    return save_figure(fig, out_png)
