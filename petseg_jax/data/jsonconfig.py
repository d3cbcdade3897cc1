"""A mixin for frozen dataclass configs that round-trip through plain JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeVar

C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """``to_json``/``from_json`` for a dataclass; ``_WHAT`` names it in error messages."""

    _WHAT = "config"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (nested configs become dicts, tuples lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls: type[C], obj: Mapping[str, Any] | C | None, strict: bool = True) -> C:
        """Build from a dict or ``ConfigDict``; ``None`` gives the defaults.

        Unknown keys are an error, unless ``strict=False`` (a config section shared with other
        settings): then only the known keys are read.
        """
        if obj is None:
            return cls()
        if isinstance(obj, cls):
            return obj
        if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
            obj = obj.to_dict()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown and strict:
            raise ValueError(f"unknown {cls._WHAT} keys {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in obj.items() if k in known})
