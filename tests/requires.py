"""Optional test dependencies (the ``test`` extra: PyTorch, MONAI) for the parity tests.

Outside CI a missing package skips its parity test; under ``CI=true`` (``.ci/run``) it fails,
so the parity tests can never skip silently where they are meant to run.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def import_or_skip(name: str) -> ModuleType:
    """``import name``; when it is missing: fail under ``CI=true``, else skip."""
    if os.environ.get("CI", "").lower() != "true":
        return pytest.importorskip(name)
    try:
        return importlib.import_module(name)
    except ImportError as err:
        pytest.fail(f"{name} is required under CI=true (pip install '.[test]'): {err}")
