"""A small elliptical trunk phantom for the physics and low-dose tests."""

import numpy as np
from scipy import ndimage

SPACING = (3.0, 3.0, 3.0)


def ellipse_phantom(nz: int = 12):
    """A 34 x 25 cm elliptical trunk (3 mm, ``nz`` slices) with liver, lung and a hot lesion."""
    nx, ny = 114, 84
    x, y = np.meshgrid((np.arange(nx) - (nx - 1) / 2) * 3.0, (np.arange(ny) - (ny - 1) / 2) * 3.0,
                       indexing="ij")
    regions = {"body": (x / 170) ** 2 + (y / 125) ** 2 < 1,
               "liver": ((x + 80) / 60) ** 2 + (y / 50) ** 2 < 1,
               "lung": ((x - 85) / 40) ** 2 + ((y - 20) / 45) ** 2 < 1,
               "hot": (x - 10) ** 2 + (y + 75) ** 2 < 12 ** 2}
    activity = np.where(regions["body"], 5000.0, 0.0)
    activity[regions["liver"]], activity[regions["lung"]] = 10000.0, 1500.0
    activity[regions["hot"]] = 40000.0
    mu = np.where(regions["body"], 0.0096, 0.0)
    mu[regions["lung"]] = 0.0026
    stack = lambda a: np.repeat(a[:, :, None], nz, 2)  # noqa: E731
    masks = {k: stack(v) for k, v in regions.items()}
    for m in masks.values():
        m[:, :, :2] = m[:, :, -2:] = False  # away from the axial ends
    depth = stack(ndimage.distance_transform_edt(regions["body"], sampling=3.0))
    return stack(activity).astype(np.float32), stack(mu).astype(np.float32), masks, depth


def lag1_autocorrelation(noise: np.ndarray, mask: np.ndarray) -> float:
    """Correlation of ``noise`` with its neighbour one voxel on, inside ``mask``, mean of 3 axes."""
    lags = []
    for axis in range(3):
        pair = mask & np.roll(mask, -1, axis)
        lags.append(np.corrcoef(noise[pair], np.roll(noise, -1, axis)[pair])[0, 1])
    return float(np.mean(lags))
