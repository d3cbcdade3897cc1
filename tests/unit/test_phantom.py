"""The synthetic PET phantom: anatomy, sides, fields of view, partial volume, breathing,
positron range, dose noise, NAC look, determinism, case plans, ICRP 89 organ volumes."""

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from petseg_jax.phantom import generate as phantom
from petseg_jax.phantom.anatomy import (
    LONG_AXIAL_FOV_MM, SHIFT_RANGE_MM, TISSUE_CODE, TRANSAXIAL_FOV_MM, Anatomy, Grid)
from petseg_jax.phantom.reference import ICRP89_ML, icrp89_range
from petseg_jax.phantom.uptake import UPTAKE, UPTAKE_KEYS, positron_range_blur
from petseg_jax.data.schema import DEFAULT_SCHEMA, LabelSchema, totalseg_lut

SEED = 11
SPACING = 6.0


@pytest.fixture(scope="module")
def cases():
    """FDG at three dose levels (AC) and full-dose NAC, same subject, 6 mm."""
    return phantom.generate_conditions(SEED, "FDG", "center_a",
                                       [(1, True), (10, True), (100, True), (1, False)], SPACING)


def world_centroid(labels, affine, organ):
    idx = np.argwhere(labels == DEFAULT_SCHEMA.id_of(organ))
    return nib.affines.apply_affine(affine, idx.mean(0))


@pytest.mark.parametrize("seed", [0, 2, 4])  # 2: a small subject
def test_adult_organ_volumes_within_icrp89(seed):
    """Each labeled organ's volume, drawn at 3 mm, lies in the ICRP 89 reference range."""
    anatomy = Anatomy(seed)
    grid = Grid.covering(*anatomy.field_of_view("conventional"), (3.0,) * 3)
    labels = phantom.organ_lut(DEFAULT_SCHEMA)[anatomy.render(grid)]
    ml = np.bincount(labels.ravel(), minlength=DEFAULT_SCHEMA.num_classes) * 27 / 1e3
    for organ in ICRP89_ML:
        if organ == "brain":  # mostly above a conventional scan's skull base
            continue
        lo, hi = icrp89_range(organ)
        assert lo <= ml[DEFAULT_SCHEMA.id_of(organ)] <= hi, (organ, ml[DEFAULT_SCHEMA.id_of(organ)])
    brain = Grid.covering(*anatomy.field_of_view("total_body"), (6.0,) * 3)
    brain_ml = (anatomy.render(brain) == TISSUE_CODE["brain_white"]).sum() * 0.216
    assert brain_ml < icrp89_range("brain")[1]


def test_small_structures_at_realistic_size():
    """Adrenal limbs at most ~10 mm thick, spinal cord ~10 mm across (drawn at 1.5 mm)."""
    anatomy = Anatomy(3)
    lo = np.array([-90.0, -80.0, 1080 * anatomy.sz])  # the adrenals' neighbourhood
    hi = np.array([90.0, 0.0, 1200 * anatomy.sz])
    grid = Grid.covering(lo, hi, (1.5,) * 3)
    tissue = anatomy.render(grid)
    for name, most in (("adrenal_gland_right", 5.5), ("adrenal_gland_left", 5.5),
                       ("spinal_cord", 6.5)):
        mask = tissue == TISSUE_CODE[name]
        assert mask.sum() * 1.5 ** 3 / 1e3 > 0.5, name
        radius = ndimage.distance_transform_edt(mask, 1.5).max()  # inscribed radius, mm
        assert 1.5 <= radius <= most, (name, radius)


def test_every_organ_in_total_body_labels(cases):
    case = cases[(1, True)]
    present = set(np.unique(case.labels))
    assert present == set(range(DEFAULT_SCHEMA.num_classes))


@pytest.mark.parametrize("kind", ["total_body", "long_axial", "conventional"])
def test_fields_of_view(kind):
    anatomy = Anatomy(5)
    lo, hi = anatomy.field_of_view(kind)
    assert hi[0] - lo[0] == hi[1] - lo[1] == TRANSAXIAL_FOV_MM
    assert lo[1] < anatomy.bed_top_y - 12  # the bed is inside
    if kind == "total_body":
        assert lo[2] <= 0 and hi[2] >= anatomy.height
    elif kind == "long_axial":
        assert hi[2] - lo[2] == LONG_AXIAL_FOV_MM and lo[2] >= -20
    else:
        assert anatomy.mid_thigh_z - 31 <= lo[2] <= anatomy.mid_thigh_z
        assert anatomy.skull_base_z <= hi[2] <= anatomy.skull_base_z + 31
    assert np.array_equal(anatomy.field_of_view(kind)[0], lo)  # deterministic per seed
    with pytest.raises(ValueError, match="unknown field of view"):
        anatomy.field_of_view("half_body")


def test_bed_attenuates_without_activity():
    anatomy = Anatomy(2)
    grid = Grid.covering(*anatomy.field_of_view("conventional"), (6.0,) * 3)
    suv, mu, labels = phantom.render_maps(anatomy, grid, "FDG", {k: 1.0 for k in UPTAKE_KEYS},
                                          np.random.default_rng(0))
    y = grid.axes[1]
    rows = (y < anatomy.bed_top_y - 3) & (y > anatomy.bed_top_y - 12)
    bed = mu[:, rows][np.abs(grid.axes[0]) < 200]
    assert (bed > 0.002).mean() > 0.9 and suv[:, rows][np.abs(grid.axes[0]) < 200].max() == 0
    assert mu[0].max() == 0 and suv[0].max() == 0  # air at the side of the field of view
    assert labels[:, rows].max() == 0


def test_block_mean_and_majority():
    rng = np.random.default_rng(0)
    vol = rng.random((4, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(phantom.block_mean(vol, 2)[1, 2, 0], vol[2:4, 4:6, 0:2].mean(),
                               rtol=1e-6)
    labels = np.zeros((2, 2, 4), np.uint8)
    labels[:, :, :2] = [[[3, 3], [3, 5]], [[5, 5], [0, 3]]]  # block 0: 3 x4, 5 x3, 0 x1
    labels[:, :, 2:] = [[[7, 7], [7, 7]], [[2, 2], [2, 2]]]  # block 1: a tie 7 / 2 -> 2
    np.testing.assert_array_equal(phantom.block_majority(labels, 2), [[[3, 2]]])


def test_labels_at_ct_phase_shifted_from_pet():
    """The labels' liver is the PET's liver moved by the case's diaphragm shift along z."""
    shifts = [Anatomy(s).diaphragm_shift_mm for s in range(40)]
    assert all(SHIFT_RANGE_MM[0] <= abs(d) <= SHIFT_RANGE_MM[1] for d in shifts)
    assert min(shifts) < 0 < max(shifts)
    anatomy = Anatomy(7)
    lo, hi = anatomy.field_of_view("conventional")
    grid = Grid.covering(lo, hi, (3.0,) * 3)
    pet = anatomy.render(grid)
    ct = anatomy.ct_phase(pet, grid)
    z = grid.axes[2]
    for name in ("liver", "spleen"):
        dz = (z[np.nonzero(ct == TISSUE_CODE[name])[2]].mean()
              - z[np.nonzero(pet == TISSUE_CODE[name])[2]].mean())
        assert abs(dz - anatomy.diaphragm_shift_mm) < 4.0, (name, dz)
    for fixed in ("vertebral_body", "bone", "spinal_cord"):
        np.testing.assert_array_equal(ct == TISSUE_CODE[fixed], pet == TISSUE_CODE[fixed])


def test_positron_range_68ga_only():
    act = np.zeros((41, 41, 41), np.float32)
    act[20, 20, 20] = 1000.0
    lung = np.zeros_like(act)
    assert positron_range_blur(act, lung, (2.0,) * 3, "FDG") is act
    ga = positron_range_blur(act, lung, (2.0,) * 3, "PSMA")
    assert ga.sum() == pytest.approx(1000.0, rel=1e-3) and 400 < ga.max() < 600
    in_lung = positron_range_blur(act, np.ones_like(act), (2.0,) * 3, "DOTATATE")
    assert in_lung.sum() == pytest.approx(1000.0, rel=1e-2)
    assert in_lung[20, 20, 30] > 10 * ga[20, 20, 30]  # longer range in lung


def test_head_to_thighs_order(cases):
    case = cases[(1, True)]
    z = {o: world_centroid(case.labels, case.affine, o)[2] for o in DEFAULT_SCHEMA.names}
    assert z["brain"] > z["thyroid_gland"] > z["trachea"] > z["heart"] > z["liver"]
    assert z["heart"] > z["kidney_left"] > z["urinary_bladder"]
    assert z["lung_left"] > z["spleen"] and z["liver"] > z["small_bowel"] > z["urinary_bladder"]
    y = {o: world_centroid(case.labels, case.affine, o)[1] for o in DEFAULT_SCHEMA.names}
    assert y["spinal_cord"] < y["vertebrae"] < y["aorta"] < y["pancreas"]  # back to front
    assert y["esophagus"] < y["trachea"] and y["kidney_left"] < y["stomach"]


def test_sides_in_world_coordinates(cases, totalseg_dir):
    """RAS+: +x is the subject's right. Left organs have smaller world x than the midline."""
    case = cases[(1, True)]
    x = {o: world_centroid(case.labels, case.affine, o)[0] for o in DEFAULT_SCHEMA.names}
    mid = x["spinal_cord"]
    for right, left in (("kidney_right", "kidney_left"),
                        ("adrenal_gland_right", "adrenal_gland_left"),
                        ("lung_right", "lung_left")):
        assert x[right] > mid > x[left], (right, left)
    assert x["liver"] > mid > x["spleen"] and x["gallbladder"] > mid > x["stomach"]
    assert x["heart"] < mid  # the heart lies mostly on the left
    # the same convention as real TotalSegmentator output
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    real = totalseg_lut(DEFAULT_SCHEMA)[np.asarray(seg.dataobj)]
    real_x = {o: world_centroid(real, seg.affine, o)[0] for o in ("liver", "spleen")}
    assert real_x["liver"] > real_x["spleen"]


def test_one_condition_alone_equals_its_twin(cases):
    alone = phantom.generate_case(SEED, "FDG", "center_a", 10, True, SPACING)
    np.testing.assert_array_equal(alone.image, cases[(10, True)].image)
    assert alone.metadata == cases[(10, True)].metadata


def test_labels_depend_only_on_subject(cases):
    ref = cases[(1, True)].labels
    for case in cases.values():
        np.testing.assert_array_equal(case.labels, ref)
        np.testing.assert_array_equal(case.affine, cases[(1, True)].affine)
    psma = phantom.generate_case(SEED, "PSMA", "center_c", 50, False, SPACING)
    np.testing.assert_array_equal(psma.labels, ref)
    assert psma.metadata.field_of_view == "total_body"
    other_subject = Anatomy(SEED + 1)  # labels only: no scan needed
    grid = Grid.covering(*other_subject.field_of_view(), (SPACING,) * 3)
    other = phantom.render_maps(other_subject, grid, "FDG", dict.fromkeys(UPTAKE_KEYS, 1.0),
                                np.random.default_rng(0))[2]
    assert other.shape != ref.shape or not np.array_equal(other, ref)


def _liver_core(case):
    return ndimage.binary_erosion(case.labels == DEFAULT_SCHEMA.id_of("liver"), iterations=2)


def test_noise_grows_with_dose_reduction(cases):
    core = _liver_core(cases[(1, True)])
    cov = {k: cases[(k, True)].image[core].std() / cases[(k, True)].image[core].mean()
           for k in (1, 10, 100)}
    assert cov[1] < cov[10] < cov[100]
    assert cov[100] > 2.5 * cov[1]
    assert cov[1] < 0.2  # full dose: texture plus mild noise
    means = [cases[(k, True)].image[core].mean() for k in (1, 10, 100)]
    assert np.ptp(means) / np.mean(means) < 0.1  # still quantitative (unbiased) at low dose


def test_quantitative_suv(cases):
    case = cases[(1, True)]
    suv = case.image * case.metadata.suv_factor()
    liver = np.median(suv[_liver_core(case)])
    assert 0.5 * UPTAKE["FDG"]["liver"][0] < liver < 2 * UPTAKE["FDG"]["liver"][0]
    brain = np.median(suv[case.labels == DEFAULT_SCHEMA.id_of("brain")])
    lung = np.median(suv[case.labels == DEFAULT_SCHEMA.id_of("lung_left")])
    assert brain > 2 * liver > 4 * lung  # FDG: brain hot, lungs cold
    assert case.image.dtype == np.float32 and case.labels.dtype == np.uint8
    assert case.metadata.units == "Bq/ml" and case.metadata.patient_weight_kg > 30


def test_nac_centre_to_edge_ratio(cases):
    """NAC: activity falls off toward the body centre relative to the skin (documented ratio)."""
    anatomy = Anatomy(SEED)
    grid = Grid.covering(*anatomy.field_of_view(), (SPACING,) * 3)
    tissue = anatomy.render(grid)
    body = (tissue != TISSUE_CODE["air"]) & (tissue != TISSUE_CODE["bed"])
    skin = body & ~ndimage.binary_erosion(body, iterations=2)
    core = _liver_core(cases[(1, True)])
    ratio = {ac: cases[(1, ac)].image[core].mean() / cases[(1, ac)].image[skin].mean()
             for ac in (True, False)}
    assert ratio[False] < 0.5 * ratio[True]  # measured 0.30-0.37 over seeds 0-4
    assert cases[(1, False)].image[core].mean() < 0.5 * cases[(1, True)].image[core].mean()


def test_uptake_tables_complete():
    for tracer, table in UPTAKE.items():
        assert set(table) == set(UPTAKE_KEYS), tracer
        assert all(suv >= 0 and cv >= 0 for suv, cv in table.values())
    assert UPTAKE["DOTATATE"]["spleen"][0] > UPTAKE["DOTATATE"]["liver"][0]
    assert UPTAKE["PSMA"]["salivary"][0] > UPTAKE["PSMA"]["liver"][0]
    assert UPTAKE["FDG"]["brain_grey"][0] > UPTAKE["FDG"]["liver"][0]


def test_organ_lut_follows_schema():
    schema = LabelSchema(("kidney_left", "liver"))
    lut = phantom.organ_lut(schema)
    assert set(np.unique(lut)) == {0, 1, 2}
    assert lut[TISSUE_CODE["kidney_left_pelvis"]] == 1 and lut[TISSUE_CODE["liver"]] == 2
    assert lut[TISSUE_CODE["spleen"]] == 0
    with pytest.raises(ValueError, match="cannot draw organ.*'prostate'"):
        phantom.organ_lut(LabelSchema(("liver", "prostate")))


def test_plan_cases_splits():
    plans = phantom.plan_cases(28, seed=5)
    assert plans == phantom.plan_cases(28, seed=5)  # deterministic
    assert len({p.seed for p in plans}) == 28
    by_tracer = {}
    for p in plans:
        by_tracer.setdefault(p.tracer, []).append(p)
    assert len(by_tracer["FDG"]) == max(len(v) for v in by_tracer.values())  # FDG-heavy
    for tracer, group in by_tracer.items():
        test = [p for p in group if p.split == "test"]
        assert test and any(p.split == "train" for p in group), tracer
        assert any(p.dose_reduction_factor == 1 and p.attenuation_corrected for p in test)
    assert any(p.split == "val" for p in plans)
    assert sum(p.dose_reduction_factor == 1 for p in plans) >= 10
    assert sum(not p.attenuation_corrected for p in plans) >= 3
    # fields of view: all three, each at more than one center (drawn independently)
    for kind in ("total_body", "long_axial", "conventional"):
        centers = {p.center for p in plans if p.field_of_view == kind}
        assert len(centers) >= 2, kind
    with pytest.raises(ValueError, match="unknown field"):
        phantom.plan_cases(5, seed=0, fields_of_view={"half_body": 1.0})
    small = phantom.plan_cases(3, seed=0, tracers={"FDG": 1.0}, dose_factors=[4, 10],
                               nac_fraction=1.0)
    assert [p.split for p in small].count("test") == 1  # forced full-dose AC not allowed here
    assert all(p.dose_reduction_factor in (4, 10) and not p.attenuation_corrected for p in small)


def test_longest_scans_generated_first():
    plans = phantom.plan_cases(12, seed=1)
    order = phantom.longest_first(plans)
    assert sorted(order) == list(range(12))
    kinds = [plans[i].field_of_view for i in order]
    assert kinds == sorted(kinds, key=["total_body", "long_axial", "conventional"].index)
    same = [i for i in order if plans[i].field_of_view == "long_axial"]
    assert same == sorted(same)  # stable within a class
