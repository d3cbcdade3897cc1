"""Shared test set-up: CPU only, JAX's persistent compilation cache, shared data paths."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_CACHE = Path(os.environ.get("PETSEG_JAX_CACHE", Path(__file__).resolve().parents[1] / ".jax_cache"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# One CPU device in every test process, whichever test first starts JAX: the demo config's
# mesh.cpu_devices=2 would otherwise apply only when a training is the first thing to run.
# Tests of several devices set their own XLA_FLAGS (test_multiprocess, test_mesh).
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=1").strip()

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "totalsegmentator_example"


@pytest.fixture(scope="session")
def totalseg_dir() -> Path:
    """Real TotalSegmentator example files beside the repo (skipped when absent)."""
    if not SHARED.exists():
        pytest.skip(f"shared TotalSegmentator examples not found at {SHARED}")
    return SHARED


def pytest_collection_modifyitems(items):
    """Everything under tests/integration is marked ``integration`` (``-m "not integration"``
    runs the unit tests alone)."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)
