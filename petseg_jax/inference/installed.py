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
                  spacing: list[float], tracer: str | None = None) -> list[str]:
    """Why an input lies outside what the model was trained on (empty when it does not):
    a tracer it never saw, or a voxel spacing more than 25 % from the training spacing."""
    out = []
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
