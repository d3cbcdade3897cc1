"""``python -m petseg_jax.bench physics``: seconds and memory of one scan with its twins.

A water-filled elliptic cylinder (``--width-mm`` x ``--depth-mm``, ``--length-mm`` long, with a
lung-density and a bone-density insert) on a fixed transaxial field of view ``--fov-mm`` at
``--spacing`` mm is scanned at center_a's count level: acquisition (projection, attenuation,
scatter, randoms), one Poisson draw, then per condition thinning and reconstruction (OSEM with
PSF, post-filter). Conditions: full dose, ``--factors`` (AC) and full-dose NAC, or ``--nac-all``
for NAC at every factor. Runs on whatever backend JAX has (CPU or GPU).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax
import numpy as np

from petseg_jax.bench import common
from petseg_jax.phantom.scanner import CENTERS, acquire
from petseg_jax.physics.acquisition import draw_counts, thin_counts
from petseg_jax.physics.simulation import image_of


def cylinder(spacing: float, fov_mm: float, width_mm: float, depth_mm: float,
             length_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Activity (Bq/ml) and mu (1/mm) of the benchmark body."""
    n, nz = int(round(fov_mm / spacing)), int(round(length_mm / spacing))
    axis = (np.arange(n) - (n - 1) / 2) * spacing
    x, y = np.meshgrid(axis, axis, indexing="ij")
    body = (2 * x / width_mm) ** 2 + (2 * y / depth_mm) ** 2 < 1
    lung = (x - width_mm / 5) ** 2 + y ** 2 < (depth_mm / 5) ** 2
    bone = x ** 2 + (y + depth_mm / 3) ** 2 < (depth_mm / 12) ** 2
    mu = np.where(body, 0.0096, 0.0).astype(np.float32)
    mu[lung], mu[bone] = 0.0026, 0.0120
    activity = np.where(body, 6000.0, 0.0).astype(np.float32)
    activity[lung] = 1500.0
    return (np.repeat(activity[:, :, None], nz, 2), np.repeat(mu[:, :, None], nz, 2))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m petseg_jax.bench physics",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--spacing", type=float, default=6.0)
    ap.add_argument("--fov-mm", type=float, default=600.0)
    ap.add_argument("--width-mm", type=float, default=360.0)
    ap.add_argument("--depth-mm", type=float, default=240.0)
    ap.add_argument("--length-mm", type=float, default=1000.0)
    ap.add_argument("--field-of-view", default="total_body")
    ap.add_argument("--factors", default="4,10,20,50,100")
    ap.add_argument("--nac-all", action="store_true")
    args = ap.parse_args(argv)
    factors = [float(f) for f in args.factors.split(",") if f.strip()]
    center = CENTERS["center_a"]
    activity, mu = cylinder(args.spacing, args.fov_mm, args.width_mm, args.depth_mm,
                            args.length_mm)
    spacing = (args.spacing,) * 3
    rows, t0 = [("grid", activity.shape), ("backend", jax.default_backend())], time.perf_counter()
    t = time.perf_counter()
    scan = acquire(activity, mu, spacing, center, 1.0, args.field_of_view)
    rows.append(("acquisition_s", round(time.perf_counter() - t, 2)))
    t = time.perf_counter()
    full = draw_counts(scan.prompts, np.random.default_rng(0))
    rows.append(("poisson_s", round(time.perf_counter() - t, 2)))
    recon_s = []
    for k in [1.0, *factors]:
        t = time.perf_counter()
        counts = thin_counts(full, k, np.random.default_rng(int(k)))
        rows.append((f"thin_{k:g}_s", round(time.perf_counter() - t, 2)))
        for ac in (True, False) if (args.nac_all or k == 1.0) else (True,):
            t = time.perf_counter()
            image_of(scan, counts, k, ac, center.imaging).sum()
            recon_s.append(round(time.perf_counter() - t, 2))
    rows += [("recon_s (first includes compilation)", recon_s),
             ("total_s", round(time.perf_counter() - t0, 2)), ("rss_mb", common.tree_rss_mb())]
    result = dict(rows, **common.machine())
    result["recon_s"] = result.pop("recon_s (first includes compilation)")
    common.report("physics: one scan with its twins", rows, result)
    return 0
