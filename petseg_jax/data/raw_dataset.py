"""The raw dataset format: the nnU-Net v2 raw layout plus one ``metadata.csv``.

Layout::

    RAW/
      dataset.json               # channel_names {"0": "PET"}, labels name -> id, numTraining,
                                 # file_ending (".nii.gz"), optional left_right_pairs
      metadata.csv               # one row per case, columns below
      imagesTr/<case>_0000.nii.gz
      labelsTr/<case>.nii.gz

``metadata.csv`` columns: ``case_id, tracer, center, dose_reduction_factor`` (1 = full dose,
k = 1/k of the counts), ``attenuation_corrected`` (true/false), optional ``split``
(train/val/test), optional SUV columns ``patient_weight_kg, injected_activity_bq, units``,
optional ``field_of_view`` (``total_body``: the whole subject; ``long_axial``: ~1 m placed by the
operator; ``conventional``: skull base to mid-thigh), optional ``psf_fwhm_mm, post_fwhm_mm``
(the reconstruction's modelled PSF and post-filter: the noise texture of the dose model, one
of the settings fitted in ``petseg_jax.physics.noise.TEXTURE_FITS`` (the three phantom centers';
ingest warns and writes no noise map for another); both empty: 3 / 3 mm, ``data.lowdose``'s
default).
Other columns are ignored. Empty cells of optional columns mean "unknown".

:class:`RawDataset` reads and validates a folder; :func:`write_dataset_json`,
:func:`write_metadata_csv` and :func:`save_nifti` write one (each file atomically).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


from petseg_jax.data.schema import LabelSchema
from petseg_jax.data.store import write_json_atomic
from petseg_jax.data.nifti import save as save_nifti  # noqa: F401  (the raw format's writer)
from petseg_jax.resources import write_atomic

KNOWN_TRACERS: tuple[str, ...] = ("FDG", "PSMA", "DOTATATE", "FAPI", "Grazytracer")
SPLITS: tuple[str, ...] = ("train", "val", "test")
DATASET_JSON = "dataset.json"
METADATA_CSV = "metadata.csv"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
CHANNEL_SUFFIX = "_0000"
REQUIRED_COLUMNS = ("case_id", "tracer", "center", "dose_reduction_factor",
                    "attenuation_corrected")
OPTIONAL_COLUMNS = ("split", "patient_weight_kg", "injected_activity_bq", "units",
                    "field_of_view", "psf_fwhm_mm", "post_fwhm_mm")
FIELDS_OF_VIEW: tuple[str, ...] = ("total_body", "long_axial", "conventional")
_TRUE = frozenset({"true", "t", "yes", "y", "1", "ac"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "nac"})
# Image units -> factor to Bq/ml (the SUV formula needs Bq/ml).
_BQML_UNITS = {"bq/ml": 1.0, "bqml": 1.0, "bq/cc": 1.0, "kbq/ml": 1e3, "kbq/cc": 1e3}


class RawDatasetError(ValueError):
    """A raw dataset folder or one of its files is missing or invalid."""


def canonical_tracer(name: str) -> str:
    """The canonical spelling of a known tracer (case-insensitive), else RawDatasetError."""
    for tracer in KNOWN_TRACERS:
        if name.strip().lower() == tracer.lower():
            return tracer
    raise RawDatasetError(f"unknown tracer {name!r} (known: {', '.join(KNOWN_TRACERS)})")


def parse_bool(text: str) -> bool:
    """``true/false`` (also yes/no, 1/0, ac/nac; any case), else RawDatasetError."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RawDatasetError(f"cannot read {text!r} as true/false")


@dataclasses.dataclass(frozen=True)
class CaseMetadata:
    """One row of ``metadata.csv`` (validated on construction)."""

    case_id: str
    tracer: str
    center: str
    dose_reduction_factor: float = 1.0
    attenuation_corrected: bool = True
    split: str | None = None
    patient_weight_kg: float | None = None
    injected_activity_bq: float | None = None
    units: str | None = None
    field_of_view: str | None = None
    psf_fwhm_mm: float | None = None  # scanner PSF modelled in the reconstruction (noise texture)
    post_fwhm_mm: float | None = None  # the reconstruction's Gaussian post-filter

    def __post_init__(self):
        if not self.case_id:
            raise RawDatasetError("case_id is empty")
        object.__setattr__(self, "tracer", canonical_tracer(self.tracer))
        if not self.center:
            raise RawDatasetError(f"case {self.case_id}: center is empty")
        k = float(self.dose_reduction_factor)
        if not math.isfinite(k) or k < 1:
            raise RawDatasetError(f"case {self.case_id}: dose_reduction_factor must be >= 1 "
                                  f"(1 = full dose), got {self.dose_reduction_factor}")
        object.__setattr__(self, "dose_reduction_factor", k)
        if self.split is not None and self.split not in SPLITS:
            raise RawDatasetError(f"case {self.case_id}: split must be one of {SPLITS}, "
                                  f"got {self.split!r}")
        if self.field_of_view is not None and self.field_of_view not in FIELDS_OF_VIEW:
            raise RawDatasetError(f"case {self.case_id}: field_of_view must be one of "
                                  f"{FIELDS_OF_VIEW}, got {self.field_of_view!r}")
        for name in ("patient_weight_kg", "injected_activity_bq"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise RawDatasetError(f"case {self.case_id}: {name} must be > 0, got {value}")
        for name in ("psf_fwhm_mm", "post_fwhm_mm"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise RawDatasetError(f"case {self.case_id}: {name} must be >= 0, got {value}")

    def suv_factor(self) -> float | None:
        """Multiply the image by this to get SUV (body weight); None when it cannot be known."""
        if self.units is not None and self.units.strip().lower() == "suv":
            return 1.0
        scale = _BQML_UNITS.get((self.units or "").strip().lower())
        if scale is None or self.patient_weight_kg is None or self.injected_activity_bq is None:
            return None
        return scale * self.patient_weight_kg * 1000.0 / self.injected_activity_bq

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; optional fields that are unknown (None) are left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "CaseMetadata":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in fields})


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _clean_row(row: Mapping[str | None, Any]) -> dict[str, str]:
    return {k.strip(): (v if isinstance(v, str) else "").strip()
            for k, v in row.items() if k is not None}


def _parse_row(cells: Mapping[str, str], where: str) -> CaseMetadata:
    """A cleaned metadata.csv row -> CaseMetadata; errors name the row, case and column."""
    case_id = cells.get("case_id", "")
    if not case_id:
        raise RawDatasetError(f"{where}: column 'case_id' is empty")
    where = f"{where}, case {case_id!r}"
    values: dict[str, Any] = {"case_id": case_id}
    parsers = {"tracer": canonical_tracer, "center": str, "dose_reduction_factor": float,
               "attenuation_corrected": parse_bool, "split": str.lower,
               "patient_weight_kg": float, "injected_activity_bq": float, "units": str,
               "field_of_view": str.lower, "psf_fwhm_mm": float, "post_fwhm_mm": float}
    for column, parse in parsers.items():
        text = cells.get(column, "")
        if not text:
            if column in REQUIRED_COLUMNS:
                raise RawDatasetError(f"{where}: column {column!r} is empty")
            continue
        try:
            values[column] = parse(text)
        except (ValueError, RawDatasetError) as e:
            raise RawDatasetError(f"{where}: column {column!r}: {e}") from None
    try:
        return CaseMetadata(**values)
    except RawDatasetError as e:
        raise RawDatasetError(f"{where}: {e}") from None


def image_file(raw_dir: str | Path, case_id: str, file_ending: str = ".nii.gz") -> Path:
    return Path(raw_dir) / IMAGES_DIR / f"{case_id}{CHANNEL_SUFFIX}{file_ending}"


def label_file(raw_dir: str | Path, case_id: str, file_ending: str = ".nii.gz") -> Path:
    return Path(raw_dir) / LABELS_DIR / f"{case_id}{file_ending}"


def write_dataset_json(raw_dir: str | Path, schema: LabelSchema, num_training: int,
                       file_ending: str = ".nii.gz", name: str | None = None) -> Path:
    """Write ``dataset.json`` (single PET channel, the schema's labels and left/right pairs)."""
    obj: dict[str, Any] = {"channel_names": {"0": "PET"}, "labels": schema.to_dataset_labels(),
                           "numTraining": int(num_training), "file_ending": file_ending,
                           "left_right_pairs": [list(p) for p in schema.left_right_pairs]}
    if name:
        obj["name"] = name
    path = Path(raw_dir) / DATASET_JSON
    write_json_atomic(path, obj)
    return path


def write_metadata_csv(raw_dir: str | Path, rows: Iterable[CaseMetadata]) -> Path:
    """Write ``metadata.csv`` with all columns (unknown optional values as empty cells)."""
    columns = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(getattr(row, c)) for c in columns])
    path = Path(raw_dir) / METADATA_CSV
    write_atomic(path, lambda tmp: tmp.write_text(buf.getvalue()))
    return path


def read_metadata_csv(path: str | Path, strict: bool = True
                      ) -> tuple[dict[str, CaseMetadata], dict[str, str]]:
    """Parse ``metadata.csv`` -> (case_id -> metadata, case_id -> error message).

    Missing file or required column always raises; a bad row raises when ``strict``, else it
    is reported in the second dict (rows without a case id are reported under ``"line N"``).
    """
    path = Path(path)
    if not path.is_file():
        raise RawDatasetError(f"{path} is missing (one row per case: "
                              f"{', '.join(REQUIRED_COLUMNS)}, ...)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise RawDatasetError(f"{path}: missing column(s) {', '.join(missing)} "
                                  f"(header: {', '.join(header) or 'empty'})")
        rows: dict[str, CaseMetadata] = {}
        first_line: dict[str, int] = {}
        errors: dict[str, str] = {}
        for row in reader:
            line = reader.line_num
            cells = _clean_row(row)
            case_id = cells.get("case_id", "")
            try:
                meta = _parse_row(cells, f"{path} line {line}")
                if meta.case_id in first_line:
                    raise RawDatasetError(f"{path} line {line}: duplicate case_id "
                                          f"{meta.case_id!r} (first on line "
                                          f"{first_line[meta.case_id]})")
            except RawDatasetError as e:
                if strict:
                    raise
                errors[case_id or f"line {line}"] = str(e)
                rows.pop(case_id, None)
                continue
            rows[meta.case_id] = meta
            first_line[meta.case_id] = line
    return rows, errors


def _read_dataset_json(path: Path) -> tuple[LabelSchema, str, int]:
    if not path.is_file():
        raise RawDatasetError(f"{path} is missing (nnU-Net v2 dataset.json with channel_names, "
                              "labels, numTraining, file_ending)")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RawDatasetError(f"{path} is not valid JSON: {e}") from None
    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        if key not in obj:
            raise RawDatasetError(f"{path}: missing key {key!r}")
    channels = obj["channel_names"]
    if not isinstance(channels, Mapping) or list(channels) != ["0"]:
        raise RawDatasetError(f"{path}: channel_names must hold exactly one channel "
                              f"{{\"0\": \"PET\"}}, got {channels!r}")
    try:
        schema = LabelSchema.from_json(obj)
    except (ValueError, KeyError, TypeError) as e:
        raise RawDatasetError(f"{path}: bad labels: {e}") from None
    if not isinstance(obj["numTraining"], int) or obj["numTraining"] < 0:
        raise RawDatasetError(f"{path}: numTraining must be a whole number >= 0, "
                              f"got {obj['numTraining']!r}")
    return schema, str(obj["file_ending"]), obj["numTraining"]


class RawDataset:
    """A validated raw dataset folder (see the module docstring for the layout).

    With ``strict=True`` (default) any bad metadata row, duplicate case id, image without a
    metadata row or metadata row without an image raises :class:`RawDatasetError`. With
    ``strict=False`` those per-case problems are collected in :attr:`invalid` (case -> message)
    and the cases are left out of :meth:`case_ids`; folder-level problems always raise.
    """

    def __init__(self, raw_dir: str | Path, strict: bool = True):
        self.root = Path(raw_dir)
        if not self.root.is_dir():
            raise RawDatasetError(f"raw dataset folder {self.root} does not exist")
        self.schema, self.file_ending, num_training = _read_dataset_json(self.root / DATASET_JSON)
        images_dir = self.root / IMAGES_DIR
        if not images_dir.is_dir():
            raise RawDatasetError(f"{images_dir} is missing")
        rows, self.invalid = read_metadata_csv(self.root / METADATA_CSV, strict)
        image_cases = self._image_cases(images_dir)
        if len(image_cases) != num_training:
            raise RawDatasetError(f"{self.root / DATASET_JSON}: numTraining is {num_training} "
                                  f"but {images_dir} holds {len(image_cases)} images")
        problems = {c: f"image {image_file(self.root, c, self.file_ending)} has no row in "
                       f"{self.root / METADATA_CSV}"
                    for c in image_cases if c not in rows and c not in self.invalid}
        problems |= {c: f"{self.root / METADATA_CSV} lists case {c!r} but image "
                        f"{image_file(self.root, c, self.file_ending)} is missing"
                     for c in rows if c not in image_cases}
        if problems and strict:
            raise RawDatasetError(next(iter(problems.values())))
        self.invalid |= problems
        self._metadata = {c: rows[c] for c in sorted(image_cases) if c in rows}

    def _image_cases(self, images_dir: Path) -> set[str]:
        ending = CHANNEL_SUFFIX + self.file_ending
        cases = set()
        for path in images_dir.iterdir():
            name = path.name
            if name.startswith(".") or not name.endswith(self.file_ending):
                continue
            if not name.endswith(ending):
                raise RawDatasetError(f"{path}: only one channel ({CHANNEL_SUFFIX}) is "
                                      f"supported; images must be named <case>{ending}")
            cases.add(name[:-len(ending)])
        return cases

    def case_ids(self) -> list[str]:
        """Valid case ids, sorted."""
        return list(self._metadata)

    def _check(self, case_id: str) -> None:
        if case_id not in self._metadata:
            why = self.invalid.get(case_id, "not in this dataset")
            raise RawDatasetError(f"case {case_id!r} in {self.root}: {why}")

    def image_path(self, case_id: str) -> Path:
        self._check(case_id)
        return image_file(self.root, case_id, self.file_ending)

    def label_path(self, case_id: str) -> Path:
        """Path of the case's label file (its existence is checked by the reader, not here)."""
        self._check(case_id)
        return label_file(self.root, case_id, self.file_ending)

    def metadata(self, case_id: str) -> CaseMetadata:
        self._check(case_id)
        return self._metadata[case_id]
