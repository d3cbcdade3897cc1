"""ensure_store: a failed phantom generation stops the run (its exit status is checked)."""

import pytest

from petseg_jax.configuration import section
from petseg_jax.phantom import generate, prepare


def test_a_failed_phantom_generation_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "main", lambda argv: 1)
    data = section("data", {"store": str(tmp_path / "store"), "raw_dir": str(tmp_path / "raw"),
                            "phantom": {"enabled": True, "cases": 2, "seed": 0, "spacing": 6.0,
                                        "test_fraction": 0.5}})
    with pytest.raises(RuntimeError, match="exit status 1"):
        prepare.ensure_store(data)
    assert not (tmp_path / "store").exists()
