"""511 keV attenuation maps (1/mm) from CT or from a body outline and an organ label map."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

MU_WATER = 0.0096  # 1/mm at 511 keV (soft tissue)
MU_LUNG = 0.0026
MU_AIRWAY = 0.0010
MU_BONE = 0.0120  # cortical and marrow averaged
BONE_WORDS = ("vertebra", "rib", "sternum", "skull", "femur", "hip", "sacrum", "humerus",
              "scapula", "clavicula", "bone")


def mu_from_hu(hu: np.ndarray) -> np.ndarray:
    """Bilinear HU -> 511 keV conversion (Carney et al., Med Phys 2006;33:976, 120 kVp):
    water-air mixture up to 47 HU, water-bone mixture above; 1/mm, float32."""
    hu = np.asarray(hu, np.float32)
    low = 9.6e-5 * (hu + 1000.0)
    high = 5.10e-5 * (hu + 1000.0) + 4.71e-2
    return (np.maximum(np.where(hu <= 47.0, low, high), 0.0) / 10.0).astype(np.float32)


def mu_from_labels(body: np.ndarray, labels: np.ndarray, names: Mapping[int, str]) -> np.ndarray:
    """Soft tissue inside ``body``, with lungs, airways and bones from the label map (label id
    -> organ name); air outside. 1/mm, float32."""
    mu = np.where(body | (labels > 0), MU_WATER, 0.0).astype(np.float32)
    for label, name in names.items():
        lowered = name.lower()
        if "lung" in lowered:
            value = MU_LUNG
        elif "trachea" in lowered or "airway" in lowered:
            value = MU_AIRWAY
        elif any(word in lowered for word in BONE_WORDS):
            value = MU_BONE
        else:
            continue
        mu[labels == label] = value
    return mu


def body_outline(image: np.ndarray) -> np.ndarray:
    """The body: smoothed activity above 30% of its typical tissue level, holes filled per
    slice."""
    smooth = ndimage.gaussian_filter(np.maximum(image, 0.0), 1.0)
    tissue = smooth[smooth > 0.05 * np.percentile(smooth, 99.0)]
    body = smooth > 0.3 * np.median(tissue) if tissue.size else np.zeros(image.shape, bool)
    return fill_holes_per_slice(body)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` of each z slice of a 3-D mask (in place; returned): the
    background's 4-connected in-plane components that do not reach the slice's edge are holes.
    One labelling of the volume with an in-plane structure (components never span slices)
    instead of one iterated dilation per slice: the same mask, ~3x faster on a total body."""
    structure = np.zeros((3, 3, 3), bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    components, _ = ndimage.label(~mask, structure)
    edge = np.unique(np.concatenate([components[[0, -1]].ravel(),
                                     components[:, [0, -1]].ravel()]))
    mask |= np.isin(components, edge, invert=True)
    return mask
