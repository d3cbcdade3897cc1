"""Installed models (``python -m petseg_jax.models install``): where they live, how ``predict
--model NAME`` finds them, and the model card's warnings for inputs outside what a model was
trained on. NumPy-free and light: the serving path imports it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CARD_FILE = "card.json"
MODELS_ENV = "PETSEG_MODELS"  # overrides the install location
SPACING_TOLERANCE = 0.25  # an input spacing more than 25 % away from the training one warns
# along an axis with a position channel, an image this much smaller than the smallest training
# image or larger than the largest warns (its centre, where positions are measured from, moved)
EXTENT_TOLERANCE = 0.2


def models_dir() -> Path:
    """Where installed models live: ``$PETSEG_MODELS``, else ``$XDG_DATA_HOME/petseg_jax/models``
    (``~/.local/share/petseg_jax/models``)."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "petseg_jax" / "models"


def find_installed(name: str, root: str | Path | None = None) -> Path | None:
    """The folder of the installed model ``name``, or ``None``."""
    folder = (Path(root) if root is not None else models_dir()) / name
    return folder if (folder / CARD_FILE).is_file() else None


def read_card(folder: str | Path) -> dict[str, Any] | None:
    """The model card of an installed model, ``None`` for a folder that has none."""
    path = Path(folder) / CARD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def card_warnings(training_data: Mapping[str, Any], training_spacing: list[float],
                  spacing: list[float], tracer: str | None = None,
                  extent_mm: list[float] | None = None,
                  position_axes: tuple[int, ...] = ()) -> list[str]:
    """Why an input lies outside what the model was trained on (empty when it does not):
    a tracer it never saw, a voxel spacing more than 25 % from the training spacing, or, along
    an axis whose position the model gets (``position_axes``), an image size (``extent_mm``,
    RAS) outside the training images' range by more than :data:`EXTENT_TOLERANCE` (records
    from before ``training_data["extent_mm"]`` have no range to compare with)."""
    out = []
    known = training_data.get("extent_mm")
    for axis in position_axes if extent_mm is not None and known else ():
        low, high = known[axis]
        if not (1 - EXTENT_TOLERANCE) * low <= extent_mm[axis] <= (1 + EXTENT_TOLERANCE) * high:
            out.append(f"the image is {extent_mm[axis]:.0f} mm along {'xyz'[axis]}, the training "
                       f"images {low:.0f}-{high:.0f} mm: the model's position channels measure "
                       "from the image's centre (the scanner's axis as reconstructed), so a "
                       "cropped or padded image shifts them (expect lower accuracy)")
    if tracer is not None and tracer.lower() not in {t.lower() for t in
                                                     training_data["tracers"]}:
        out.append(f"tracer {tracer!r} is not one the model was trained on "
                   f"({', '.join(training_data['tracers'])})")
    far = [f"{s:g}" for s, t in zip(spacing, training_spacing)
           if abs(s - t) > SPACING_TOLERANCE * t]
    if far:
        out.append(f"voxel spacing {[round(s, 2) for s in spacing]} mm is far from the training "
                   f"spacing {training_spacing} mm (resampled, but expect lower accuracy)")
    return out
