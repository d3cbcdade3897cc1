"""Organ label schema: names, ids, left/right pairs and the TotalSegmentator mapping.

The schema is data: the default 23-organ set lives in ``DEFAULT_ORGANS`` below, and a dataset may
bring its own set in ``dataset.json``. Nothing outside this module hard-codes an organ id or the
number of classes: code asks a :class:`LabelSchema` instead.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# Default set: Wang et al. (EJNMMI 2025), 23 organs, fixed ids (0 = background).
DEFAULT_ORGANS: tuple[str, ...] = (
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_left", "lung_right", "esophagus",
    "trachea", "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder",
    "vertebrae", "heart", "aorta", "spinal_cord", "brain",
)
DEFAULT_LEFT_RIGHT_PAIRS: tuple[tuple[str, str], ...] = (
    ("kidney_right", "kidney_left"),
    ("adrenal_gland_right", "adrenal_gland_left"),
    ("lung_left", "lung_right"),
)
# TotalSegmentator `total` task ids (v2) -> default organ name.
_TOTALSEG_TO_DEFAULT: dict[str, tuple[int, ...]] = {
    "spleen": (1,), "kidney_right": (2,), "kidney_left": (3,), "gallbladder": (4,),
    "liver": (5,), "stomach": (6,), "pancreas": (7,), "adrenal_gland_right": (8,),
    "adrenal_gland_left": (9,),
    "lung_left": (10, 11),  # upper + lower left lobe
    "lung_right": (12, 13, 14),  # upper + middle + lower right lobe
    "esophagus": (15,), "trachea": (16,), "thyroid_gland": (17,), "small_bowel": (18,),
    "duodenum": (19,), "colon": (20,), "urinary_bladder": (21,),
    "vertebrae": tuple(range(25, 51)),  # sacrum + S1..C1
    "heart": (51,), "aorta": (52,), "spinal_cord": (79,), "brain": (90,),
}
BACKGROUND = "background"


@dataclasses.dataclass(frozen=True)
class LabelSchema:
    """An ordered set of foreground classes; class ``i`` (1-based) is ``names[i - 1]``."""

    names: tuple[str, ...]
    left_right_pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate organ names in schema: {self.names}")
        if BACKGROUND in self.names:
            raise ValueError("'background' is implicit (id 0) and must not be listed")
        for a, b in self.left_right_pairs:
            if a not in self.names or b not in self.names:
                raise ValueError(f"left/right pair ({a}, {b}) names an organ not in the schema")

    @property
    def num_classes(self) -> int:
        """Number of output channels, background included."""
        return len(self.names) + 1

    @property
    def foreground_ids(self) -> tuple[int, ...]:
        return tuple(range(1, self.num_classes))

    def id_of(self, name: str) -> int:
        try:
            return self.names.index(name) + 1
        except ValueError:
            raise KeyError(f"organ {name!r} is not in the label schema") from None

    def name_of(self, label_id: int) -> str:
        if label_id == 0:
            return BACKGROUND
        if not 0 < label_id < self.num_classes:
            raise KeyError(f"label id {label_id} is not in the label schema")
        return self.names[label_id - 1]

    @property
    def pair_ids(self) -> tuple[tuple[int, int], ...]:
        return tuple((self.id_of(a), self.id_of(b)) for a, b in self.left_right_pairs)

    def mirror_lut(self) -> np.ndarray:
        """Lookup table that swaps every left/right pair (applied after a flip of the R-L axis)."""
        lut = np.arange(self.num_classes, dtype=np.int32)
        for a, b in self.pair_ids:
            lut[a], lut[b] = b, a
        return lut

    def to_dataset_labels(self) -> dict[str, int]:
        """The ``labels`` entry of an nnU-Net ``dataset.json`` (name -> id, background first)."""
        return {BACKGROUND: 0, **{n: i + 1 for i, n in enumerate(self.names)}}

    def to_json(self) -> dict:
        return {"labels": self.to_dataset_labels(),
                "left_right_pairs": [list(p) for p in self.left_right_pairs]}

    @classmethod
    def from_json(cls, obj: Mapping) -> "LabelSchema":
        """Read a ``dataset.json``-style dict: ``labels`` (name -> id) and optional pairs."""
        labels = dict(obj["labels"])
        if labels.pop(BACKGROUND, 0) != 0:
            raise ValueError("'background' must have id 0")
        ids = sorted(labels.values())
        if ids != list(range(1, len(ids) + 1)):
            raise ValueError(f"label ids must be 1..N without gaps, got {ids}")
        names = tuple(sorted(labels, key=labels.__getitem__))
        pairs = obj.get("left_right_pairs")
        if pairs is None:  # a dataset.json without pairs: keep the default pairs it has
            pairs = [p for p in DEFAULT_LEFT_RIGHT_PAIRS if p[0] in names and p[1] in names]
        return cls(names, tuple(tuple(p) for p in pairs))


DEFAULT_SCHEMA = LabelSchema(DEFAULT_ORGANS, DEFAULT_LEFT_RIGHT_PAIRS)


def load_schema(dataset_json: str | Path | None) -> LabelSchema:
    """The schema of a raw dataset folder's ``dataset.json`` (default schema when ``None``)."""
    if dataset_json is None:
        return DEFAULT_SCHEMA
    return LabelSchema.from_json(json.loads(Path(dataset_json).read_text()))


def totalseg_lut(schema: LabelSchema = DEFAULT_SCHEMA, size: int = 256) -> np.ndarray:
    """Lookup table TotalSegmentator ``total`` id -> schema id (unmapped ids -> 0)."""
    lut = np.zeros(size, dtype=np.uint8)
    for name, ts_ids in _TOTALSEG_TO_DEFAULT.items():
        if name in schema.names:
            lut[list(ts_ids)] = schema.id_of(name)
    return lut


def check_label_values(values: Sequence[int] | np.ndarray, schema: LabelSchema) -> list[int]:
    """Label values outside the schema (empty list when all are valid)."""
    values = np.unique(np.asarray(values))
    return [int(v) for v in values if v < 0 or v >= schema.num_classes]
