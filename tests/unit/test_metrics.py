import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from requires import import_or_skip

from petseg_jax import metrics


def sphere(shape, spacing, center_mm, radius_mm, label=1):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    inside = sum((g - c) ** 2 for g, c in zip(grids, center_mm)) <= radius_mm**2
    return np.where(inside, label, 0).astype(np.uint8)


def test_concentric_spheres_known_dice_hd95_nsd():
    shape, spacing = (40, 40, 40), (1.0, 1.0, 1.0)
    pred = sphere(shape, spacing, (20, 20, 20), 8)
    ref = sphere(shape, spacing, (20, 20, 20), 12)
    assert metrics.dice(pred, ref, 1) == pytest.approx(2 * 8**3 / (8**3 + 12**3), abs=0.02)
    assert metrics.hd95(pred, ref, 1, spacing) == pytest.approx(4.0, abs=1.0)
    assert metrics.normalized_surface_dice(pred, ref, 1, spacing, tolerance_mm=6.0) == 1.0
    assert metrics.normalized_surface_dice(pred, ref, 1, spacing, tolerance_mm=2.0) < 0.05


def test_offset_spheres_known_dice():
    r, d = 10.0, 6.0
    shape, spacing = (44, 36, 36), (1.0, 1.0, 1.0)
    pred = sphere(shape, spacing, (18, 18, 18), r)
    ref = sphere(shape, spacing, (18 + d, 18, 18), r)
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12  # intersection of two equal spheres
    assert metrics.dice(pred, ref, 1) == pytest.approx(lens / (4 / 3 * math.pi * r**3), abs=0.02)
    # every directed distance is at most the offset; the p95 is close to it
    assert 4.0 <= metrics.hd95(pred, ref, 1, spacing) <= d + 1e-6


def test_anisotropic_spacing_distances_in_mm():
    spacing = (1.0, 1.5, 2.5)
    shape = (50, 34, 20)
    center = (25.0, 25.5, 25.0)
    pred = sphere(shape, spacing, center, 10.0, label=4)
    ref = sphere(shape, spacing, center, 15.0, label=4)
    assert metrics.hd95(pred, ref, 4, spacing) == pytest.approx(5.0, abs=1.5)
    # the same masks read as 1 mm isotropic would give voxel distances instead
    assert metrics.hd95(pred, ref, 4, (1.0, 1.0, 1.0)) < 4.5
    assert metrics.normalized_surface_dice(pred, ref, 4, spacing, tolerance_mm=8.0) == 1.0
    assert metrics.volume_ml(ref, 4, spacing) == pytest.approx(4 / 3 * math.pi * 15**3 / 1000, rel=0.05)
    assert metrics.volume_ml(ref, 4, spacing) == (ref == 4).sum() * 3.75 / 1000


def test_identical_masks():
    ref = sphere((20, 20, 20), (1, 1, 1), (10, 10, 10), 5, label=2)
    assert metrics.dice(ref, ref, 2) == 1.0
    assert metrics.hd95(ref, ref, 2, (2, 2, 2)) == 0.0
    assert metrics.normalized_surface_dice(ref, ref, 2, (2, 2, 2), 0.0) == 1.0


def test_empty_mask_conventions():
    empty = np.zeros((10, 10, 10), np.uint8)
    full = empty.copy()
    full[3:6, 3:6, 3:6] = 1
    sp = (1.0, 1.0, 1.0)
    # both empty
    assert math.isnan(metrics.dice(empty, empty, 1))
    assert metrics.dice(empty, empty, 1, ignore_empty=False) == 1.0
    assert math.isnan(metrics.hd95(empty, empty, 1, sp))
    assert math.isnan(metrics.normalized_surface_dice(empty, empty, 1, sp, 1.0))
    # reference empty, prediction not
    assert math.isnan(metrics.dice(full, empty, 1))
    assert metrics.dice(full, empty, 1, ignore_empty=False) == 0.0
    assert metrics.hd95(full, empty, 1, sp) == math.inf
    assert metrics.normalized_surface_dice(full, empty, 1, sp, 1.0) == 0.0
    # prediction empty, reference not
    assert metrics.dice(empty, full, 1) == 0.0
    assert metrics.hd95(empty, full, 1, sp) == math.inf
    assert metrics.normalized_surface_dice(empty, full, 1, sp, 1.0) == 0.0
    # PET statistics of an absent organ
    stats = metrics.organ_pet_stats(np.ones((10, 10, 10)), empty, 1, sp)
    assert stats["volume_ml"] == 0.0
    assert all(math.isnan(stats[k]) for k in ("suv_mean", "suv_max", "suv_peak"))


def test_bad_input_is_rejected():
    a = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.dice(a, np.zeros((4, 4, 5), np.uint8), 1)
    with pytest.raises(ValueError, match="spacing"):
        metrics.hd95(a, a, 1, (1.0, 1.0))
    with pytest.raises(ValueError, match="PET image shape"):
        metrics.organ_pet_stats(np.zeros((3, 3, 3)), a, 1, (1, 1, 1))


def _hot_organ():
    spacing = (2.0, 2.0, 2.0)
    labels = np.zeros((24, 20, 22), np.uint8)
    labels[4:18, 3:16, 5:19] = 3
    image = np.full(labels.shape, 0.5)
    image[labels == 3] = 1.0
    image[10, 9, 12] = 100.0  # hot voxel well inside the organ
    return image, labels, spacing


def test_organ_pet_stats_suv_peak_is_mean_in_1ml_sphere():
    image, labels, spacing = _hot_organ()
    stats = metrics.organ_pet_stats(image, labels, 3, spacing)
    n_organ = int((labels == 3).sum())
    radius = (3000 / (4 * math.pi)) ** (1 / 3)
    n_sphere = sum(1 for o in itertools.product(range(-4, 5), repeat=3)
                   if sum((2.0 * v) ** 2 for v in o) <= radius**2)
    assert stats["volume_ml"] == pytest.approx(n_organ * 8 / 1000)
    assert stats["suv_max"] == 100.0
    assert stats["suv_mean"] == pytest.approx((100 + n_organ - 1) / n_organ)
    assert stats["suv_peak"] == pytest.approx((100 + n_sphere - 1) / n_sphere)


def test_pet_errors_and_organ_metrics_agree_with_single_metrics():
    image, ref, spacing = _hot_organ()
    pred = np.roll(ref, 2, axis=0)
    pred[0:3, 0:3, 0:3] = 3  # a stray blob touching the image corner
    errs = metrics.pet_quantification_errors(image, pred, ref, 3, spacing)
    sp, sr = (metrics.organ_pet_stats(image, x, 3, spacing) for x in (pred, ref))
    for name in metrics.PET_STATS:
        assert errs[f"{name}_pred"] == pytest.approx(sp[name])
        assert errs[f"{name}_ref"] == pytest.approx(sr[name])
        assert errs[f"{name}_error"] == pytest.approx(sp[name] - sr[name])
        assert errs[f"{name}_rel_error"] == pytest.approx((sp[name] - sr[name]) / sr[name])
    row = metrics.organ_metrics(pred, ref, 3, spacing, image_suv=image, nsd_tolerance_mm=3.0)
    assert row["dice"] == metrics.dice(pred, ref, 3)
    assert row["hd95_mm"] == metrics.hd95(pred, ref, 3, spacing)
    assert row["nsd"] == metrics.normalized_surface_dice(pred, ref, 3, spacing, 3.0)
    assert set(row) == {"dice", "hd95_mm", "nsd"} | set(errs)
    assert {k: row[k] for k in errs} == pytest.approx(errs)
    no_pet = metrics.organ_metrics(pred, ref, 3, spacing)  # default NSD tolerance 2 mm
    assert no_pet == pytest.approx({"dice": row["dice"], "hd95_mm": row["hd95_mm"],
                                    "nsd": metrics.normalized_surface_dice(pred, ref, 3, spacing, 2.0),
                                    **metrics.volume_error(pred, ref, 3, spacing)})


def test_matches_monai_when_installed():
    torch = import_or_skip("torch")
    monai_metrics = import_or_skip("monai.metrics")
    rng = np.random.default_rng(0)
    spacing = (1.0, 1.5, 2.5)
    ref = (ndimage.gaussian_filter(rng.random((30, 26, 18)), 2.0) > 0.5).astype(np.uint8)
    pred = (ndimage.gaussian_filter(rng.random((30, 26, 18)), 2.0) > 0.5).astype(np.uint8)
    empty = np.zeros_like(ref)
    for p, r in [(pred, ref), (empty, ref), (pred, empty)]:
        yp = torch.from_numpy(np.stack([1 - p, p])[None].astype(np.float32))
        yr = torch.from_numpy(np.stack([1 - r, r])[None].astype(np.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # one empty mask: MONAI's percentile HD is NaN (torch.quantile of infs), its max HD inf;
            # ours is inf (see the conventions table)
            hd = monai_metrics.compute_hausdorff_distance(
                yp, yr, percentile=95 if p.any() and r.any() else None, spacing=spacing)
            nsd = monai_metrics.compute_surface_dice(yp, yr, [3.0], spacing=spacing)
            dc = monai_metrics.compute_dice(yp, yr, include_background=False)
        np.testing.assert_allclose(metrics.hd95(p, r, 1, spacing), float(hd), rtol=1e-5)
        np.testing.assert_allclose(metrics.normalized_surface_dice(p, r, 1, spacing, 3.0), float(nsd),
                                   rtol=1e-6)
        np.testing.assert_allclose(metrics.dice(p, r, 1), float(dc), rtol=1e-6)



def test_organ_statistics_columns_values_and_truncation():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:5, 2:5, 2:5] = 1
    labels[0:3, 6:9, 6:9] = 2  # touches the first slice along x: truncated by the field of view
    image = np.arange(1000, dtype=np.float32).reshape(labels.shape) / 100
    prov = {"units": "SUV", "suv_source": "flags", "decay_correction": "START"}
    rows = metrics.organ_statistics(image, labels, (2.0, 2.0, 2.0), {1: "a", 2: "b", 3: "c"},
                                    prov, sul_per_suv=0.8, bsa_per_suv=0.02)
    assert [tuple(r) for r in rows] == [metrics.ORGAN_STATS_COLUMNS] * 3
    a, b, c = rows
    values = image[labels == 1]
    assert a["volume_ml"] == pytest.approx(27 * 8 / 1000)
    assert a["suv_std"] == pytest.approx(values.std()) and a["suv_median"] == pytest.approx(
        np.median(values))
    assert a["sul_mean"] == pytest.approx(0.8 * values.mean())
    assert a["suvbsa_mean"] == pytest.approx(0.02 * values.mean())
    assert (a["fov_truncated"], b["fov_truncated"], c["fov_truncated"]) == (False, True, False)
    assert c["volume_ml"] == 0 and np.isnan(c["suv_std"]) and np.isnan(c["sul_mean"])
    assert a["decay_correction"] == "START"
    with pytest.raises(ValueError, match="provenance lacks"):
        metrics.organ_statistics(image, labels, (2, 2, 2), {1: "a"}, {"units": "SUV"})


def test_organ_statistics_in_boxes_equal_whole_volume_stats():
    """Per-organ work inside the organ's box widened by the SUVpeak sphere gives what the
    whole-volume computation gives, hot voxels just outside an organ and organs at the edge
    included."""
    rng = np.random.default_rng(3)
    labels = np.zeros((24, 20, 16), np.uint8)
    labels[3:9, 4:10, 2:7] = 1
    labels[0:4, 12:18, 10:16] = 2  # at two edges
    labels[15:16, 8:9, 8:9] = 3  # one voxel
    image = rng.gamma(2.0, 1.0, labels.shape).astype(np.float32)
    image[9, 6, 4] = 50.0  # next to organ 1, inside its SUVpeak sphere reach
    prov = {"units": "SUV", "suv_source": "flags", "decay_correction": "START"}
    spacing = (2.0, 2.5, 3.0)
    rows = metrics.organ_statistics(image, labels, spacing, {1: "a", 2: "b", 3: "c", 4: "d"}, prov)
    for row in rows:
        whole = metrics.organ_pet_stats(image, labels, row["label"], spacing)
        for key, value in whole.items():
            np.testing.assert_equal(row[key], value)
    assert rows[0]["suv_peak"] > metrics.organ_pet_stats(
        np.where(labels == 1, image, 0), labels, 1, spacing)["suv_peak"]  # the hot voxel counts


def _blobs(seed, shape=(30, 26, 18)):
    """A smooth random organ plus scattered one-voxel specks far from it (a poor prediction)."""
    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.52
    mask[tuple(rng.integers(0, s, 12) for s in shape)] = True
    return mask


def test_surface_distances_equal_the_distance_transform():
    """The k-d tree's nearest surface voxels give the distances of the Euclidean distance
    transform of the other surface (the definition), at anisotropic spacing."""
    spacing = np.array([1.0, 1.5, 2.5])
    p, r = _blobs(1), _blobs(2)
    box = ndimage.find_objects((p | r).astype(np.uint8))[0]
    pp, rr = np.pad(p[box], 1), np.pad(r[box], 1)
    ep, er = ndimage.binary_erosion(pp) ^ pp, ndimage.binary_erosion(rr) ^ rr
    want = (ndimage.distance_transform_edt(~er, sampling=spacing)[ep],
            ndimage.distance_transform_edt(~ep, sampling=spacing)[er])
    for got, expected in zip(metrics._surface_distances(p, r, spacing), want):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_suv_peak_sphere_sums_direct_and_by_fft_agree(monkeypatch):
    image = np.random.default_rng(3).gamma(2.0, 1.0, (30, 26, 18)).astype(np.float32)
    for spacing in ((2.0, 2.0, 2.0), (1.0, 1.5, 2.5), (6.0, 6.0, 6.0)):
        kernel = metrics._sphere_kernel(np.array(spacing), metrics.SUV_PEAK_RADIUS_MM)
        mask = _blobs(4)
        means = {}
        # whole box by FFT, FFT slab by slab (3 planes a slab: the radius's margin crosses
        # slab edges, and slabs without a mask voxel are skipped), and direct gathers
        for name, gathers, slab in (("fft", 0, 10**9), ("slabs", 0, 3 * 26 * 18),
                                    ("direct", 10**9, 10**9)):
            monkeypatch.setattr(metrics, "_GATHERS_PER_FFT_VOXEL", gathers)
            monkeypatch.setattr(metrics, "_FFT_SLAB_VOXELS", slab)
            means[name] = metrics._sphere_means(image, mask, kernel)
        np.testing.assert_allclose(means["direct"], means["fft"], rtol=1e-12)
        np.testing.assert_allclose(means["direct"], means["slabs"], rtol=1e-12)
