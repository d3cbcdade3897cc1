"""The synthetic PET phantom: anatomy, sides, dose noise, NAC look, determinism, case plans."""

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from petseg_jax.phantom import generate as phantom
from petseg_jax.phantom.anatomy import TISSUE_CODE, Anatomy, Grid
from petseg_jax.phantom.uptake import UPTAKE, UPTAKE_KEYS
from petseg_jax.data.schema import DEFAULT_SCHEMA, LabelSchema, totalseg_lut

SEED = 11
SPACING = 6.0


@pytest.fixture(scope="module")
def cases():
    """FDG at three dose levels (AC) and full-dose NAC, same subject, 6 mm."""
    out = {(k, True): phantom.generate_case(SEED, "FDG", "center_a", k, True, SPACING)
           for k in (1, 10, 100)}
    out[(1, False)] = phantom.generate_case(SEED, "FDG", "center_a", 1, False, SPACING)
    return out


def world_centroid(labels, affine, organ):
    idx = np.argwhere(labels == DEFAULT_SCHEMA.id_of(organ))
    return nib.affines.apply_affine(affine, idx.mean(0))


@pytest.mark.parametrize("seed, spacing", [(0, 4.0), (1, 6.0), (2, 6.0), (3, 6.0)])
def test_all_organs_present_and_plausible(seed, spacing):
    anatomy = Anatomy(seed)
    grid = Grid.covering(*anatomy.field_of_view(), (spacing,) * 3)
    labels = phantom.organ_lut(DEFAULT_SCHEMA)[anatomy.render(grid)]
    ml = np.bincount(labels.ravel(), minlength=DEFAULT_SCHEMA.num_classes) * spacing ** 3 / 1e3
    for organ in DEFAULT_SCHEMA.names:
        volume = ml[DEFAULT_SCHEMA.id_of(organ)]
        assert volume * 1e3 / spacing ** 3 >= 8, f"{organ} has < 8 voxels at {spacing} mm"
    vol = {n: ml[DEFAULT_SCHEMA.id_of(n)] for n in DEFAULT_SCHEMA.names}
    assert 800 < vol["liver"] < 3000 and 700 < vol["brain"] < 2200
    for small in ("adrenal_gland_left", "adrenal_gland_right"):
        assert 1 < vol[small] < 15
    assert vol["thyroid_gland"] < 40 and vol["gallbladder"] < 100
    # every organ holds a 2x2x2 block somewhere (visible at the demo's ~6 mm)
    for organ in DEFAULT_SCHEMA.names:
        mask = labels == DEFAULT_SCHEMA.id_of(organ)
        core = ndimage.binary_erosion(mask, np.ones((2, 2, 2), bool))
        assert core.any(), f"{organ} is nowhere 2 voxels thick at {spacing} mm"


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


def test_labels_depend_only_on_subject(cases):
    ref = cases[(1, True)].labels
    for case in cases.values():
        np.testing.assert_array_equal(case.labels, ref)
        np.testing.assert_array_equal(case.affine, cases[(1, True)].affine)
    psma = phantom.generate_case(SEED, "PSMA", "center_c", 50, False, SPACING)
    np.testing.assert_array_equal(psma.labels, ref)
    other = phantom.generate_case(SEED + 1, spacing_mm=SPACING).labels
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
    body = tissue != TISSUE_CODE["air"]
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
    small = phantom.plan_cases(3, seed=0, tracers={"FDG": 1.0}, dose_factors=[4, 10],
                               nac_fraction=1.0)
    assert [p.split for p in small].count("test") == 1  # forced full-dose AC not allowed here
    assert all(p.dose_reduction_factor in (4, 10) and not p.attenuation_corrected for p in small)
