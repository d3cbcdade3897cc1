"""SUV from PET headers: the analytic decay-corrected factors (START, ADMIN, NONE, GML, CNTS),
SUL and SUVbsa, and a clear error naming the tag and the flag for each bad header."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from dicom_fixtures import F18_HALF_LIFE_S, pet_like, write_pet_series
from pydicom.dataset import Dataset

from petseg_jax.data import dicom, suv

WEIGHT, HEIGHT, DOSE = 70.0, 1.75, 350e6
SCAN = dt.datetime(2024, 5, 1, 10, 30)
INJECTION = SCAN - dt.timedelta(minutes=60)


def analytic(weight=WEIGHT, dose=DOSE, minutes=60.0, half_life=F18_HALF_LIFE_S) -> float:
    return weight * 1e3 / (dose * 2.0 ** (-minutes * 60.0 / half_life))


def header(**changes) -> Dataset:
    """One slice's SUV-relevant header (BQML, START, injection 60 min before the series)."""
    ds = Dataset()
    ds.Units, ds.DecayCorrection = "BQML", "START"
    ds.SeriesDate, ds.SeriesTime = "20240501", "103000"
    ds.AcquisitionDate, ds.AcquisitionTime = "20240501", "103005"
    ds.PatientWeight, ds.PatientSize, ds.PatientSex = WEIGHT, HEIGHT, "M"
    ds.FrameReferenceTime = 0.0
    rp = Dataset()
    rp.RadionuclideTotalDose, rp.RadionuclideHalfLife = DOSE, F18_HALF_LIFE_S
    rp.RadiopharmaceuticalStartDateTime = "20240501093000"
    ds.RadiopharmaceuticalInformationSequence = [rp]
    for key, value in changes.items():
        target = rp if key.startswith("Radio") and key != "RadiopharmaceuticalInformationSequence" \
            else ds
        if value is None:
            delattr(target, key)
        else:
            setattr(target, key, value)
    return ds


def test_series_written_with_pydicom_gives_the_analytic_factors(tmp_path):
    """The issue's case: injection 60 min before the series, F-18, BQML, START."""
    write_pet_series(tmp_path, pet_like((6, 6, 4)), np.diag([-4.0, -4.0, 3.0, 1.0]),
                     series_time=SCAN, injection=INJECTION, dose_bq=DOSE, weight_kg=WEIGHT,
                     height_m=HEIGHT, sex="M")
    volume = dicom.read_pet(dicom.list_series(tmp_path)[0])
    cal = suv.from_headers(volume.headers, uid=volume.uid)
    expected = analytic()
    assert cal.suvbw == pytest.approx(expected, rel=1e-6)
    nominal = WEIGHT * 1e3 / DOSE  # without decay correction: SUV 32% too low at 60 min
    assert 1 - nominal / expected == pytest.approx(0.3154, abs=1e-4)
    bmi = WEIGHT / HEIGHT**2
    lbm = 9270 * WEIGHT / (6680 + 216 * bmi)
    assert cal.sul == pytest.approx(expected * lbm / WEIGHT, rel=1e-6)
    bsa_cm2 = 0.007184 * WEIGHT**0.425 * (HEIGHT * 100) ** 0.725 * 1e4
    assert cal.suvbsa == pytest.approx(expected * bsa_cm2 / (WEIGHT * 1e3), rel=1e-6)
    assert (cal.units, cal.source, cal.decay_correction) == ("BQML", "dicom_headers", "START")
    assert cal.slice_decay is None


def test_decay_correction_admin_none_and_other_units():
    assert suv.from_headers([header(DecayCorrection="ADMIN")]).suvbw == pytest.approx(
        WEIGHT * 1e3 / DOSE, rel=1e-12)
    frames = [header(DecayCorrection="NONE", FrameReferenceTime=t) for t in (0.0, 120e3)]
    cal = suv.from_headers(frames)
    assert cal.suvbw == pytest.approx(analytic(), rel=1e-9)
    assert cal.slice_decay == pytest.approx((1.0, 2.0 ** (120.0 / F18_HALF_LIFE_S)), rel=1e-12)
    image = np.ones((2, 2, 2), np.float32)
    assert cal.image_at_reference(image)[0, 0, 1] == pytest.approx(cal.slice_decay[1], rel=1e-6)
    gml = suv.from_headers([header(Units="GML")])
    assert gml.suvbw == 1.0 and gml.sul == pytest.approx(
        9270 / (6680 + 216 * WEIGHT / HEIGHT**2), rel=1e-9)
    philips = header(Units="CNTS")
    philips.private_block(0x7053, suv.PHILIPS_GROUP, create=True).add_new(0x00, "DS", "0.000321")
    assert suv.from_headers([philips]).suvbw == pytest.approx(0.000321)
    activity = header(Units="CNTS")
    activity.private_block(0x7053, suv.PHILIPS_GROUP, create=True).add_new(0x09, "DS", "2.5")
    assert suv.from_headers([activity]).suvbw == pytest.approx(2.5 * analytic(), rel=1e-9)
    # Series time after the acquisition (re-processed): the earliest acquisition counts (QIBA)
    late = header(SeriesTime="113000")
    assert suv.from_headers([late]).suvbw == pytest.approx(analytic(minutes=60 + 5 / 60),
                                                          rel=1e-9)
    # Injection time without its date: the series date
    no_date = header(RadiopharmaceuticalStartDateTime=None,
                     RadiopharmaceuticalStartTime="093000")
    assert suv.from_headers([no_date]).suvbw == pytest.approx(analytic(), rel=1e-9)


@pytest.mark.parametrize("changes, message", [
    ({"PatientWeight": None}, r"PatientWeight \(0010,1030\) is missing; give --weight-kg"),
    ({"PatientWeight": 0}, r"PatientWeight \(0010,1030\) is 0; give --weight-kg"),
    ({"PatientWeight": 7000}, r"PatientWeight \(0010,1030\) is 7000 kg: not plausible.*"
                              r"give --weight-kg"),
    ({"RadionuclideTotalDose": 0}, r"RadionuclideTotalDose \(0018,1074\) is 0; give "
                                   r"--injected-mbq"),
    ({"RadionuclideTotalDose": None}, r"RadionuclideTotalDose \(0018,1074\) is missing"),
    ({"RadionuclideTotalDose": 350}, r"RadionuclideTotalDose \(0018,1074\) is 350 Bq: not "
                                     r"plausible.*--injected-mbq"),
    ({"RadiopharmaceuticalStartDateTime": "20240501113000"},
     r"injection \(RadiopharmaceuticalStartDateTime \(0018,1078\): .*\) is 60.0 min after the "
     r"scan start .*give --injection-time"),
    ({"RadiopharmaceuticalStartDateTime": None},
     r"RadiopharmaceuticalStartDateTime \(0018,1078\) and RadiopharmaceuticalStartTime .* "
     r"--injection-time"),
    ({"RadionuclideHalfLife": None}, r"RadionuclideHalfLife \(0018,1075\) is missing; give "
                                     r"--half-life-s"),
    ({"Units": "PROPCNTS"}, r"Units \(0054,1001\) is PROPCNTS.*give --suv-factor"),
    ({"Units": "CNTS"}, r"Units \(0054,1001\) is CNTS without a vendor scale factor.*"
                        r"--suv-factor"),
    ({"DecayCorrection": "XYZ"}, r"DecayCorrection \(0054,1102\) is XYZ.*--suv-factor"),
    ({"DecayCorrection": "NONE", "FrameReferenceTime": None},
     r"FrameReferenceTime \(0054,1300\) is missing"),
    ({"PatientSize": 175.0}, r"PatientSize \(0010,1020\) is 175 m: not plausible.*--height-m"),
    ({"SeriesTime": None, "AcquisitionTime": None}, r"SeriesTime \(0008,0031\).*--scan-time"),
])
def test_each_bad_header_fails_naming_the_tag_and_flag(changes, message):
    with pytest.raises(suv.SuvError, match=message):
        suv.from_headers([header(**changes)], uid="1.2.3")


def test_flags_replace_header_fields():
    fixed = suv.from_headers([header(PatientWeight=None)], suv.SuvOverrides(weight_kg=80.0))
    assert fixed.suvbw == pytest.approx(analytic(weight=80.0), rel=1e-9)
    assert fixed.source == "flags"
    late = header(RadiopharmaceuticalStartDateTime="20240501113000")
    fixed = suv.from_headers([late], suv.SuvOverrides(injection_time=INJECTION))
    assert fixed.suvbw == pytest.approx(analytic(), rel=1e-9)
    assert suv.from_headers([header(Units="XYZ")], suv.SuvOverrides(suv_factor=2.0)).suvbw == 2.0
    no_sex = suv.from_headers([header(PatientSex=None)])
    assert no_sex.sul is None and no_sex.suvbsa is not None
    assert suv.from_headers([header(PatientSex=None)], suv.SuvOverrides(sex="F")).sul is not None
    assert suv.parse_time("2024-05-01T09:30:00") == INJECTION
    with pytest.raises(suv.SuvError, match="ISO 8601"):
        suv.parse_time("9:30")


def test_metadata_and_flags_for_nifti():
    cal = suv.from_metadata({"case_id": "c", "tracer": "FDG", "center": "A", "units": "Bq/ml",
                             "patient_weight_kg": 70.0, "injected_activity_bq": 350e6})
    assert cal.suvbw == pytest.approx(70e3 / 350e6) and cal.source == "metadata"
    with pytest.raises(suv.SuvError, match="no SUV factor"):
        suv.from_metadata({"case_id": "c", "tracer": "FDG", "center": "A"})
    with pytest.raises(suv.SuvError, match="go together"):
        suv.from_flags(suv.SuvOverrides(weight_kg=70.0))
