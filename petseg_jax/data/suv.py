"""SUV from PET DICOM headers (QIBA's vendor-neutral recipe) or from command-line values.

``SUVbw = value * suvbw`` where ``value`` is the stored pixel value after the slice's own
RescaleSlope/Intercept, and:

* **Units** (0054,1001) ``BQML``: ``suvbw = weight_g / decayed_dose_Bq``; ``CNTS``: only with
  Philips' private SUV scale factor (7053,1000) (``suvbw`` = it), or its activity
  concentration factor (7053,1009) (Bq/ml per count, then as BQML); ``GML``: already SUVbw.
* **DecayCorrection** (0054,1102) ``START``: the image is decay-corrected to the scan start, so
  ``decayed_dose = dose * 2^(-(scan - injection) / half_life)``; ``ADMIN``: corrected to the
  injection, ``decayed_dose = dose``; ``NONE``: each slice holds the activity at its Frame
  Reference Time (0054,1300) after the scan start, so it is first multiplied by
  ``2^(t_frame / half_life)`` (:attr:`SuvCalibration.slice_decay`), then treated as START.
* **Scan start** (QIBA): SeriesDate/SeriesTime when not after the earliest
  AcquisitionDate/AcquisitionTime, else GE's private post-injection time (0009,100D) when
  present, else the earliest acquisition time. **Injection**: RadiopharmaceuticalStartDateTime
  (0018,1078), else SeriesDate + RadiopharmaceuticalStartTime (0018,1072).
* **SUL** (lean body mass, Janmahasatian 2005): ``LBM = 9270 W / (6680 + 216 BMI)`` (male),
  ``9270 W / (8780 + 244 BMI)`` (female), ``BMI = W / H^2``; ``sul = suvbw * LBM / W``.
  **SUVbsa** (Du Bois): ``BSA = 0.007184 W^0.425 H_cm^0.725`` m^2;
  ``suvbsa = suvbw * BSA_cm2 / W_g`` (cm^2/ml). Both need PatientSize and PatientSex; without
  them they are ``None`` (NaN in tables) and a warning names the tags and flags.

A missing or implausible field is an error naming the tag and the flag that overrides it;
nothing falls back to a silent default.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from petseg_jax import metrics
from petseg_jax.data.nifti import voxel_spacing
from petseg_jax.resources import write_atomic

log = logging.getLogger("petseg_jax.suv")

SOURCES = ("dicom_headers", "flags", "metadata")
WEIGHT_RANGE_KG = (1.0, 500.0)
HEIGHT_RANGE_M = (0.3, 2.6)
DOSE_RANGE_BQ = (1e6, 5e10)  # 1 MBq .. 50 GBq
PHILIPS_GROUP = "Philips PET Private Group"
GE_GROUP = "GEMS_PETD_01"


class SuvError(ValueError):
    """A PET header (or flag) from which SUV cannot be computed."""


@dataclasses.dataclass(frozen=True)
class SuvOverrides:
    """Values given on the command line; each replaces its header field."""

    suv_factor: float | None = None  # --suv-factor: SUVbw = value * this (headers unused)
    weight_kg: float | None = None  # --weight-kg
    height_m: float | None = None  # --height-m
    sex: str | None = None  # --sex M|F
    injected_mbq: float | None = None  # --injected-mbq
    injection_time: dt.datetime | None = None  # --injection-time
    half_life_s: float | None = None  # --half-life-s
    scan_time: dt.datetime | None = None  # --scan-time

    @property
    def any(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))


@dataclasses.dataclass(frozen=True)
class SuvCalibration:
    """Multipliers from image values to SUVbw, SUL and SUVbsa, and where they came from.

    ``units`` are the image's own units (``BQML``, ``CNTS``, ``GML`` or ``raw``);
    ``slice_decay`` (DecayCorrection NONE only) multiplies slice k before ``suvbw`` applies.
    """

    suvbw: float
    sul: float | None
    suvbsa: float | None
    units: str
    source: str
    decay_correction: str
    slice_decay: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"suv source {self.source!r} is not one of {SOURCES}")
        if not (math.isfinite(self.suvbw) and self.suvbw > 0):
            raise SuvError(f"SUV factor must be a positive number, got {self.suvbw}")

    def image_at_reference(self, image: np.ndarray) -> np.ndarray:
        """The image (i, j, k) with ``slice_decay`` applied (itself when there is none)."""
        if self.slice_decay is None:
            return image
        factors = np.asarray(self.slice_decay, np.float32)
        if factors.shape != (image.shape[2],):
            raise ValueError(f"{factors.size} slice decay factors for {image.shape[2]} slices")
        return image * factors


def _plausible(value: float, lo: float, hi: float, what: str, unit: str, flag: str) -> float:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise SuvError(f"{what} is {value:g} {unit}: not plausible (expected {lo:g} to {hi:g} "
                       f"{unit}); give {flag}")
    return value


def body_ratios(weight_kg: float, height_m: float | None, sex: str | None
                ) -> tuple[float | None, float | None]:
    """(LBM / weight, BSA_cm2 / weight_g): SUL = SUVbw * first, SUVbsa = SUVbw * second;
    ``None`` for what the height or sex does not allow."""
    if height_m is None:
        return None, None
    bsa_m2 = 0.007184 * weight_kg**0.425 * (height_m * 100.0) ** 0.725
    bsa = bsa_m2 * 1e4 / (weight_kg * 1e3)
    bmi = weight_kg / height_m**2
    if sex == "M":
        return 9270.0 / (6680.0 + 216.0 * bmi), bsa
    if sex == "F":
        return 9270.0 / (8780.0 + 244.0 * bmi), bsa
    return None, bsa


def _check_sex(sex: str | None, what: str) -> str | None:
    if sex is None:
        return None
    sex = sex.strip().upper()
    if sex not in ("M", "F"):
        raise SuvError(f"{what} must be M or F, got {sex!r}")
    return sex


def from_flags(overrides: SuvOverrides) -> SuvCalibration | None:
    """Calibration from flags alone (NIfTI input): ``--suv-factor``, or ``--weight-kg`` with
    ``--injected-mbq`` for an image in Bq/ml decay-corrected to the injection; ``None``
    when neither is given."""
    o = overrides
    if o.suv_factor is not None:
        return SuvCalibration(float(o.suv_factor), None, None, "raw", "flags", "unknown")
    if o.weight_kg is None and o.injected_mbq is None:
        return None
    if o.weight_kg is None or o.injected_mbq is None:
        raise SuvError("--weight-kg and --injected-mbq go together")
    weight = _plausible(o.weight_kg, *WEIGHT_RANGE_KG, "--weight-kg", "kg", "a body weight")
    dose = _plausible(o.injected_mbq * 1e6, *DOSE_RANGE_BQ, "--injected-mbq", "Bq",
                      "the activity in MBq")
    height = None if o.height_m is None else _plausible(o.height_m, *HEIGHT_RANGE_M,
                                                         "--height-m", "m", "a height in m")
    lbm, bsa = body_ratios(weight, height, _check_sex(o.sex, "--sex"))
    suvbw = weight * 1e3 / dose
    return SuvCalibration(suvbw, None if lbm is None else suvbw * lbm,
                          None if bsa is None else suvbw * bsa, "BQML", "flags", "ADMIN")


# --------------------------------------------------------------------------- headers
def _tag(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _missing(keyword: str, flag: str, uid: str, why: str = "is missing") -> SuvError:
    return SuvError(f"series {uid}: {_tag(keyword)} {why}; give {flag}")


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return float(value)


def _datetime(date: str | None, time: str | None) -> dt.datetime | None:
    if not date or not time:
        return None
    return dt.datetime.combine(DA(date), TM(time))


def _radiopharmaceutical(ds: Dataset, uid: str) -> Dataset:
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        return Dataset()  # every field inside it is then missing and named when needed
    if len(seq) > 1:
        raise SuvError(f"series {uid}: {len(seq)} items in "
                       f"{_tag('RadiopharmaceuticalInformationSequence')}: more than one "
                       "radiopharmaceutical; give --suv-factor")
    return seq[0]


def _private(ds: Dataset, group: int, creator: str, element: int):
    try:
        return ds.private_block(group, creator)[element].value
    except KeyError:
        return None


def _scan_start(headers: Sequence[Dataset], uid: str) -> dt.datetime:
    first = headers[0]
    series = _datetime(first.get("SeriesDate"), first.get("SeriesTime"))
    acquisitions = [t for t in (_datetime(h.get("AcquisitionDate"), h.get("AcquisitionTime"))
                                for h in headers) if t is not None]
    earliest = min(acquisitions, default=None)
    if series is not None and (earliest is None or series <= earliest):
        return series
    ge = _private(first, 0x0009, GE_GROUP, 0x0D)
    if ge:
        return DT(ge).replace(tzinfo=None)
    if earliest is not None:
        return earliest
    raise _missing("SeriesTime", "--scan-time (ISO 8601, e.g. 2024-05-01T10:30:00)", uid,
                   "and SeriesDate (0008,0021) or AcquisitionDate/Time are missing")


def _injection(rp: Dataset, first: Dataset, uid: str) -> dt.datetime:
    start = rp.get("RadiopharmaceuticalStartDateTime")
    if start:
        return DT(start).replace(tzinfo=None)
    injected = _datetime(first.get("SeriesDate"), rp.get("RadiopharmaceuticalStartTime"))
    if injected is None:
        raise _missing("RadiopharmaceuticalStartDateTime", "--injection-time (ISO 8601)", uid,
                       "and RadiopharmaceuticalStartTime (0018,1072) with SeriesDate are "
                       "missing")
    return injected


def _body(first: Dataset, o: SuvOverrides, uid: str, need_weight: bool
          ) -> tuple[float | None, float | None, str | None]:
    weight = o.weight_kg if o.weight_kg is not None else _number(first, "PatientWeight")
    if weight is None or weight == 0:
        if need_weight:
            raise _missing("PatientWeight", "--weight-kg", uid,
                           "is missing" if weight is None else "is 0")
    else:
        flag = "--weight-kg" if o.weight_kg is not None else _tag("PatientWeight")
        _plausible(weight, *WEIGHT_RANGE_KG, f"series {uid}: {flag}", "kg", "--weight-kg")
    height = o.height_m if o.height_m is not None else _number(first, "PatientSize")
    if height is not None:
        flag = "--height-m" if o.height_m is not None else _tag("PatientSize")
        _plausible(height, *HEIGHT_RANGE_M, f"series {uid}: {flag}", "m", "--height-m")
    sex = o.sex if o.sex is not None else (str(first.get("PatientSex", "")) or None)
    sex = sex.strip().upper() if sex else None
    if o.sex is not None:
        sex = _check_sex(sex, "--sex")
    return weight or None, height, sex if sex in ("M", "F") else None


def from_headers(headers: Sequence[Dataset], overrides: SuvOverrides = SuvOverrides(),
                 uid: str = "?") -> SuvCalibration:
    """SUV calibration of a PET series from its headers (sorted like its slices), with the
    flags in ``overrides`` replacing header fields (module docstring)."""
    if not headers:
        raise SuvError(f"series {uid}: no headers")
    o, first = overrides, headers[0]
    units = str(first.get("Units", "")).strip().upper()
    decay = str(first.get("DecayCorrection", "")).strip().upper()
    source = "flags" if o.any else "dicom_headers"
    weight, height, sex = _body(first, o, uid, need_weight=o.suv_factor is None
                                and units != "GML")
    if o.suv_factor is not None:
        return _with_body(float(o.suv_factor), weight, height, sex, units or "raw", "flags",
                          decay or "unknown", None, uid)
    if units == "GML":
        return _with_body(1.0, weight, height, sex, units, source, decay or "unknown", None, uid)
    scale = 1.0  # image units -> Bq/ml
    if units == "CNTS":
        suv = _private(first, 0x7053, PHILIPS_GROUP, 0x00)
        if suv is not None and float(suv) > 0:
            return _with_body(float(suv), weight, height, sex, units, source,
                              decay or "unknown", None, uid)
        activity = _private(first, 0x7053, PHILIPS_GROUP, 0x09)
        if activity is None or not float(activity) > 0:
            raise SuvError(f"series {uid}: {_tag('Units')} is CNTS without a vendor scale "
                           "factor (Philips (7053,1000) or (7053,1009)); give --suv-factor")
        scale = float(activity)
    elif units != "BQML":
        raise SuvError(f"series {uid}: {_tag('Units')} is {units or 'missing'}; SUV needs "
                       "BQML, CNTS with a vendor factor, or GML; give --suv-factor")
    if decay not in ("START", "ADMIN", "NONE"):
        raise SuvError(f"series {uid}: {_tag('DecayCorrection')} is {decay or 'missing'} "
                       "(expected START, ADMIN or NONE); give --suv-factor")
    rp = _radiopharmaceutical(first, uid)
    dose = o.injected_mbq * 1e6 if o.injected_mbq is not None else _number(
        rp, "RadionuclideTotalDose")
    if dose is None or dose == 0:
        raise _missing("RadionuclideTotalDose", "--injected-mbq", uid,
                       "is missing" if dose is None else "is 0")
    _plausible(dose, *DOSE_RANGE_BQ, f"series {uid}: " + (
        "--injected-mbq" if o.injected_mbq is not None else _tag("RadionuclideTotalDose")),
        "Bq", "--injected-mbq")
    slice_decay, decayed = None, dose
    if decay in ("START", "NONE"):
        half_life = o.half_life_s if o.half_life_s is not None else _number(
            rp, "RadionuclideHalfLife")
        if half_life is None or not half_life > 0:
            raise _missing("RadionuclideHalfLife", "--half-life-s", uid,
                           "is missing" if half_life is None else f"is {half_life:g}")
        injection = o.injection_time or _injection(rp, first, uid)
        scan = o.scan_time or _scan_start(headers, uid)
        elapsed = (scan - injection).total_seconds()
        if elapsed < 0:
            raise SuvError(
                f"series {uid}: the injection ({_tag('RadiopharmaceuticalStartDateTime')}: "
                f"{injection.isoformat()}) is {-elapsed / 60:.1f} min after the scan start "
                f"({scan.isoformat()}); give --injection-time (or --scan-time)")
        decayed = dose * 2.0 ** (-elapsed / half_life)
        if decay == "NONE":
            slice_decay = tuple(2.0 ** (_frame_time_s(h, uid) / half_life) for h in headers)
    return _with_body(scale * weight * 1e3 / decayed, weight, height, sex, units, source, decay,
                      slice_decay, uid)


def _frame_time_s(ds: Dataset, uid: str) -> float:
    t = _number(ds, "FrameReferenceTime")
    if t is None:
        raise _missing("FrameReferenceTime", "--suv-factor", uid,
                       "is missing on a slice of a series with DecayCorrection NONE")
    return t / 1000.0


def _with_body(suvbw: float, weight: float | None, height: float | None, sex: str | None,
               units: str, source: str, decay: str, slice_decay, uid: str) -> SuvCalibration:
    lbm, bsa = body_ratios(weight, height, sex) if weight else (None, None)
    if lbm is None or bsa is None:
        log.warning("series %s: no SUL%s: %s (or --height-m) and %s (or --sex M|F) needed",
                    uid, "" if bsa is not None else " nor SUVbsa", _tag("PatientSize"),
                    _tag("PatientSex"))
    return SuvCalibration(suvbw, None if lbm is None else suvbw * lbm,
                          None if bsa is None else suvbw * bsa, units, source, decay,
                          slice_decay)


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 date and time for ``--injection-time``/``--scan-time``."""
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        raise SuvError(f"{text!r} is not an ISO 8601 date and time "
                       "(e.g. 2024-05-01T09:30:00)") from None


def provenance(calibration: SuvCalibration | None, raw_units: str = "raw") -> dict[str, str]:
    """The ``units``, ``suv_source`` and ``decay_correction`` columns of an organ table:
    ``units`` is ``SUV`` when the SUV columns are SUVbw, else the image's own units."""
    if calibration is None:
        return {"units": raw_units, "suv_source": "", "decay_correction": ""}
    return {"units": "SUV", "suv_source": calibration.source,
            "decay_correction": calibration.decay_correction}


def organ_table(image: np.ndarray, affine: np.ndarray, labels: np.ndarray,
                names: Mapping[int, str], calibration: SuvCalibration | None
                ) -> list[dict[str, Any]]:
    """Organ statistics rows (:data:`petseg_jax.metrics.ORGAN_STATS_COLUMNS`) of ``labels``
    on the grid of ``image`` (raw values, ``affine`` gives the voxel size): SUVs when a
    calibration is known, else the image's own values (``units="raw"``)."""
    spacing = tuple(float(s) for s in voxel_spacing(affine))
    if calibration is None:
        return metrics.organ_statistics(image, labels, spacing, names, provenance(None))
    suv = calibration.image_at_reference(image) * np.float32(calibration.suvbw)
    sul, bsa = (None if f is None else f / calibration.suvbw
                for f in (calibration.sul, calibration.suvbsa))
    return metrics.organ_statistics(suv, labels, spacing, names, provenance(calibration), sul,
                                    bsa)


def add_arguments(parser) -> None:
    """The SUV flags of ``predict`` and ``stats`` (each replaces its DICOM header field)."""
    g = parser.add_argument_group("SUV (each flag replaces its DICOM header field)")
    g.add_argument("--suv-factor", type=float, help="SUVbw = image * factor (headers unused)")
    g.add_argument("--weight-kg", type=float, help="patient weight, PatientWeight (0010,1030)")
    g.add_argument("--injected-mbq", type=float,
                   help="injected activity, RadionuclideTotalDose (0018,1074)")
    g.add_argument("--height-m", type=float, help="patient height, PatientSize (0010,1020)")
    g.add_argument("--sex", choices=("M", "F"), help="PatientSex (0010,0040), for SUL")
    g.add_argument("--injection-time", type=parse_time,
                   help="ISO 8601, RadiopharmaceuticalStartDateTime (0018,1078)")
    g.add_argument("--scan-time", type=parse_time,
                   help="ISO 8601 scan start (else SeriesDate/Time, AcquisitionDate/Time)")
    g.add_argument("--half-life-s", type=float,
                   help="RadionuclideHalfLife (0018,1075) in seconds")


def overrides_from(args) -> SuvOverrides:
    """The :class:`SuvOverrides` of parsed :func:`add_arguments` flags."""
    if args.suv_factor is not None and (args.weight_kg is not None
                                        or args.injected_mbq is not None):
        raise SuvError("give --suv-factor or --weight-kg/--injected-mbq, not both")
    return SuvOverrides(**{f.name: getattr(args, f.name)
                           for f in dataclasses.fields(SuvOverrides)})


def from_metadata(metadata: Mapping[str, Any]) -> SuvCalibration:
    """Calibration of a case's metadata (a :class:`~petseg_jax.data.raw_dataset.CaseMetadata`
    JSON, as a store's manifest keeps it: ``units``, ``patient_weight_kg``,
    ``injected_activity_bq`` give the factor)."""
    from petseg_jax.data.raw_dataset import CaseMetadata

    meta = CaseMetadata.from_json(metadata)
    factor = meta.suv_factor()
    if factor is None:
        raise SuvError("the metadata give no SUV factor: it needs units (Bq/ml or SUV), "
                       "patient_weight_kg and injected_activity_bq")
    return SuvCalibration(factor, None, None, meta.units or "raw", "metadata", "unknown")


def write_table(path: str | Path, rows: Iterable[Mapping[str, Any]],
                columns: Sequence[str]) -> None:
    """Write organ statistics rows (:func:`organ_table`, with ``columns``) as CSV atomically;
    booleans as ``true``/``false``, unknown values as ``nan``."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows({k: str(v).lower() if isinstance(v, bool) else v
                              for k, v in row.items()} for row in rows)

    write_atomic(path, write)
