"""NIfTI I/O and resampling in world coordinates (nibabel + numpy + scipy only: no JAX).

Conventions: arrays are indexed (i, j, k) and an image's 4x4 ``affine`` maps voxel centres to
world (scanner RAS+) millimetres. Resampling always goes through both affines, so a result is
right for any orientation, spacing and field of view; a voxel covers ``[i - 0.5, i + 0.5]``.
The serving path imports this module, so it must stay free of JAX/Flax.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from petseg_jax.resources import write_atomic

# Majority vote samples each target voxel on a sub-grid of at most this many points per axis.
MAX_SUBSAMPLES = 5
# Target voxels per block in the majority vote (bounds the (voxels, classes) count table).
_MAJORITY_BLOCK = 1 << 20
# Target voxels per block of linear/nearest resampling (bounds scipy's temporaries).
_SAMPLE_BLOCK = 1 << 24


class NiftiError(ValueError):
    """A NIfTI file that cannot be read or is not a valid 3-D volume."""


def load_header(path: str | Path) -> nib.Nifti1Image:
    """Open a NIfTI lazily (header only) and check it is 3-D or 4-D with a single frame."""
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types for unreadable files
        raise NiftiError(f"{path}: unreadable NIfTI ({type(e).__name__}: {e})") from None
    if not isinstance(img, nib.Nifti1Image):  # NIfTI-2 images are a subclass
        raise NiftiError(f"{path}: not a NIfTI image ({type(img).__name__})")
    shape = img.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise NiftiError(f"{path}: expected a 3-D volume (or 4-D with one frame), got shape "
                         f"{tuple(shape)}")
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-12:
        raise NiftiError(f"{path}: invalid (singular or non-finite) affine")
    return img


def load(path: str | Path, *, label: bool = False) -> nib.Nifti1Image:
    """Read and validate a NIfTI volume into memory as a 3-D image.

    Images become float32 and must be finite; labels (``label=True``) must hold whole numbers and
    become the smallest integer dtype that holds them. A single-frame 4-D file is squeezed.
    """
    img = load_header(path)
    try:
        if label:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32)
    except Exception as e:
        raise NiftiError(f"{path}: cannot read the voxel data ({type(e).__name__}: {e})") from None
    data = data.reshape(img.shape[:3])
    if label:
        data = _as_integer(data, path)
    elif not np.all(np.isfinite(data)):
        raise NiftiError(f"{path}: {int(np.size(data) - np.isfinite(data).sum())} voxels are "
                         "NaN or infinite")
    header = img.header.copy()
    header.set_data_dtype(data.dtype)
    return type(img)(data, img.affine, header)  # NIfTI-1 or NIfTI-2, as the file


def _as_integer(data: np.ndarray, path: str | Path) -> np.ndarray:
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise NiftiError(f"{path}: label map holds non-integer values")
    if data.size == 0:
        return data.astype(np.uint8)
    lo, hi = int(data.min()), int(data.max())
    return data.astype(np.result_type(np.min_scalar_type(lo), np.min_scalar_type(hi)))


def array(img: nib.Nifti1Image) -> np.ndarray:
    """The voxel array of an image made by :func:`load` or :func:`to_ras`."""
    return np.asarray(img.dataobj)


def to_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Reorient to the closest canonical (RAS+) voxel order (``nibabel.as_closest_canonical``)."""
    return nib.as_closest_canonical(img)


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each array axis: the column norms of the affine."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))


def ras_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each axis after :func:`to_ras` (no data needed)."""
    ornt = nib.io_orientation(affine)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = voxel_spacing(affine)
    return spacing


def ras_extent(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The image's size (mm, voxels x spacing) along each axis after :func:`to_ras`."""
    ornt = nib.io_orientation(affine)
    extent = np.empty(3)
    extent[ornt[:, 0].astype(int)] = voxel_spacing(affine) * np.asarray(shape[:3], np.float64)
    return extent


def _translation(offset: Sequence[float]) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = offset
    return t


def _sample_block(data: np.ndarray, vox: np.ndarray, shape: tuple[int, ...], order: int,
                  outside: str, ones: np.ndarray | None) -> np.ndarray:
    lin = vox[:3, :3]
    if np.count_nonzero(lin - np.diag(np.diag(lin))) == 0:  # axis-aligned: scipy's fast path
        matrix, offset = np.diag(lin), vox[:3, 3]
    else:
        matrix, offset = vox, 0.0

    def run(values, order, mode):
        return ndimage.affine_transform(values, matrix, offset, output_shape=shape, order=order,
                                        mode=mode, cval=0)

    if order == 0:  # 'grid-constant' keeps points within half a voxel of the edge inside
        return run(data, 0, "nearest" if outside == "nearest" else "grid-constant")
    out = run(data, order, "nearest")
    if ones is not None:  # outside == "zero": 0 where the nearest source voxel is outside
        out *= run(ones, 0, "grid-constant")
    return out


def _sample(data: np.ndarray, vox: np.ndarray, shape: Sequence[int], order: int,
            outside: str) -> np.ndarray:
    """``data`` at source voxel coords ``vox @ [i, j, k, 1]`` for every target index, computed
    in blocks of target planes along the last axis (bounded temporaries)."""
    shape = tuple(int(s) for s in shape)
    ones = np.ones(data.shape, np.uint8) if order != 0 and outside == "zero" else None
    slab = max(1, _SAMPLE_BLOCK // max(1, shape[0] * shape[1]))
    if slab >= shape[2]:
        return _sample_block(data, vox, shape, order, outside, ones)
    out = np.empty(shape, data.dtype)
    for z0 in range(0, shape[2], slab):
        sub = (shape[0], shape[1], min(slab, shape[2] - z0))
        out[:, :, z0:z0 + sub[2]] = _sample_block(data, vox @ _translation((0, 0, z0)), sub,
                                                  order, outside, ones)
    return out


def _subsample_offsets(vox: np.ndarray) -> list[np.ndarray]:
    """Sub-grid points (target voxel units) so that a target voxel is sampled about once per
    source voxel it covers; a single centre point when the target is not coarser."""
    steps = np.abs(vox[:3, :3]).max(0)  # source voxels crossed per target voxel, per axis
    counts = np.clip(np.ceil(steps - 1e-6).astype(int), 1, MAX_SUBSAMPLES)
    axes = [(np.arange(k) + 0.5) / k - 0.5 for k in counts]
    return [np.array(p) for p in itertools.product(*axes)]


def _majority(data: np.ndarray, vox: np.ndarray, shape: Sequence[int], outside: str
              ) -> np.ndarray:
    offsets = _subsample_offsets(vox)
    if len(offsets) == 1:
        return _sample(data, vox, shape, 0, outside)
    if not np.issubdtype(data.dtype, np.integer) or (data.size and data.min() < 0):
        raise ValueError("majority resampling needs a non-negative integer label map")
    n_classes = int(data.max()) + 1
    out = np.empty(shape, data.dtype)
    slab = max(1, _MAJORITY_BLOCK // max(1, shape[0] * shape[1]))
    for z0 in range(0, shape[2], slab):
        sub = (shape[0], shape[1], min(slab, shape[2] - z0))
        block = vox @ _translation((0, 0, z0))
        base = np.arange(int(np.prod(sub))) * n_classes
        counts = np.zeros(base.size * n_classes, np.uint16)
        # Every sub-grid vote counts 2 and the centre (nearest) 1: ties go to the nearest label.
        counts[base + _sample(data, block, sub, 0, outside).ravel()] += 1
        for off in offsets:
            counts[base + _sample(data, block @ _translation(off), sub, 0, outside).ravel()] += 2
        out[:, :, z0:z0 + sub[2]] = counts.reshape(-1, n_classes).argmax(1).reshape(sub)
    return out


def resample_to_reference(data: np.ndarray, affine: np.ndarray, ref_shape: Sequence[int],
                          ref_affine: np.ndarray, order: int | str = 0,
                          outside: str = "zero") -> np.ndarray:
    """Resample ``data`` (on ``affine``) onto the grid ``ref_shape``/``ref_affine``.

    Each target voxel centre is mapped through both affines into the source voxel grid.
    ``order``: 0 nearest, 1 linear, ``"majority"`` (labels: the most frequent source label over
    a sub-grid of the target voxel when it is coarser than the source; nearest otherwise).
    ``outside``: ``"zero"`` fills points outside the source field of view with 0, ``"nearest"``
    extends the edge voxels.
    """
    if outside not in ("zero", "nearest"):
        raise ValueError(f"outside must be 'zero' or 'nearest', got {outside!r}")
    vox = np.linalg.inv(np.asarray(affine, float)) @ np.asarray(ref_affine, float)
    return _resample(data, vox, tuple(int(s) for s in ref_shape), order, outside)


def _resample(data: np.ndarray, vox: np.ndarray, shape: tuple[int, ...], order: int | str,
              outside: str) -> np.ndarray:
    if order == "majority":
        return _majority(data, vox, shape, outside)
    if order not in (0, 1):
        raise ValueError(f"order must be 0, 1 or 'majority', got {order!r}")
    return _sample(data, vox, shape, order, outside)


def resample_to_spacing(data: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                        order: int | str = 1) -> tuple[np.ndarray, np.ndarray]:
    """Resample to a new voxel ``spacing`` (mm per array axis), same field of view and centre.

    The new shape is ``round(shape * old_spacing / spacing)``; the returned affine maps the new
    voxel centres to the world points they were sampled at (directions are kept).
    """
    old = voxel_spacing(affine)
    new = np.asarray(spacing, float)
    if new.shape != (3,) or np.any(new <= 0):
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing}")
    shape = np.asarray(data.shape[:3])
    new_shape = np.maximum(1, np.round(shape * old / new)).astype(int)
    ratio = new / old
    scale = np.diag([*ratio, 1.0])
    scale[:3, 3] = (shape - 1) / 2 - ratio * (new_shape - 1) / 2  # keep the grid's centre
    new_affine = np.asarray(affine, float) @ scale
    if np.allclose(ratio, 1, rtol=0, atol=1e-6) and np.array_equal(new_shape, shape):
        return data.copy(), new_affine
    return _resample(data, scale, tuple(new_shape), order, "nearest"), new_affine


def to_original_grid(data: np.ndarray, affine: np.ndarray, original: nib.Nifti1Image,
                     order: int = 0) -> np.ndarray:
    """Put ``data`` (e.g. a prediction on the RAS, resampled grid ``affine``) back onto the
    original image's grid: same 3-D shape and affine as ``original``, ready for :func:`save_like`.
    Edge voxels extend outward so the whole original field of view is covered."""
    return resample_to_reference(data, affine, original.shape[:3], original.affine, order,
                                 outside="nearest")


def save(path: str | Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a NIfTI atomically (temp file + rename); integer data keeps its integer dtype."""
    img = nib.Nifti1Image(data, np.asarray(affine, float))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    write_atomic(path, lambda tmp: nib.save(img, str(tmp)))


def save_like(path: str | Path, data: np.ndarray, reference: nib.Nifti1Image) -> None:
    """Write ``data`` (on the reference's 3-D grid) atomically with the reference's header:
    same affine, qform/sform and their codes, units; integer data keeps its integer dtype."""
    if tuple(data.shape) != tuple(reference.shape[:3]):
        raise ValueError(f"data shape {data.shape} is not the reference grid "
                         f"{reference.shape[:3]}")
    ref = reference.header
    header = ref.copy()
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)
    img = nib.Nifti1Image(data, reference.affine, header)
    img.set_qform(ref.get_qform(), code=int(ref["qform_code"]))
    img.set_sform(ref.get_sform(), code=int(ref["sform_code"]))
    write_atomic(path, lambda tmp: nib.save(img, str(tmp)))
