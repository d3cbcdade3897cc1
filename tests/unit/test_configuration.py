"""The one config system: configs/default.py is the schema; files and --config.key=value
overrides that do not fit it fail naming the nearest valid key; the result is locked."""

from __future__ import annotations

from pathlib import Path

import pytest

from petseg_jax.configuration import ConfigError, load_config, override_pairs, section

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.py"


def _config_file(tmp_path: Path, line: str) -> Path:
    """A config file in its own configs/ folder: the demo with one more line."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "mine.py").write_text(
        "from configs import demo\n\n\ndef get_config():\n    config = demo.get_config()\n"
        f"    {line}\n    return config\n")
    return folder / "mine.py"


def test_overrides_are_applied_typed_and_locked():
    config = load_config(DEMO, ["--config.data.patch_size=(16,16,16)", "--config.total_steps",
                                "7", "--config.optim.lr=1e-3", "--config.augment.p_mirror=0",
                                "--config.data.raw_dir="])
    assert config.data.patch_size == (16, 16, 16) and config.total_steps == 7
    assert config.optim.lr == 1e-3 and config.augment.p_mirror == (0, 0, 0)
    assert config.data.raw_dir == ""
    with pytest.raises(AttributeError):
        config.data.new_key = 1  # locked: no key can be added after loading
    assert load_config("demo").data.patch_size == load_config(DEMO).data.patch_size


def test_a_typo_on_the_command_line_names_the_nearest_key():
    with pytest.raises(ConfigError, match="unknown config key 'data.patchsize'.*"
                                          "did you mean 'data.patch_size'"):
        load_config(DEMO, ["--config.data.patchsize=16"])
    with pytest.raises(ConfigError, match="did you mean 'data.read_threads'"):
        load_config(DEMO, ["--config.data.read_thread=2"])


def test_a_typo_in_a_config_file_names_the_nearest_key(tmp_path):
    path = _config_file(tmp_path, "config.data.patchsize = (64, 64, 64)")
    with pytest.raises(ConfigError, match="unknown config key 'data.patchsize' in .*mine.py; "
                                          "did you mean 'data.patch_size'"):
        load_config(path)


def test_wrong_types_and_missing_keys_fail(tmp_path):
    with pytest.raises(ConfigError, match="'data.patch_size' expects a value like"):
        load_config(DEMO, ["--config.data.patch_size=abc"])
    with pytest.raises(ConfigError, match="total_steps"):
        load_config(DEMO, ["--config.total_steps=1.5"])
    with pytest.raises(ConfigError, match="'evaluation.split' must be one of .*'validation'"):
        load_config(DEMO, ["--config.evaluation.split=validation"])
    with pytest.raises(ConfigError, match="'data.position_channels' must be one of .*'yx'"):
        load_config(DEMO, ["--config.data.position_channels=yx"])
    with pytest.raises(ConfigError, match="'data.position_channels' must be one of .*'True'"):
        load_config(DEMO, ["--config.data.position_channels=True"])  # a str since "xy"
    with pytest.raises(ConfigError, match="lacks the config keys \\['evaluation.mirror'\\]"):
        load_config(_config_file(tmp_path, "del config.evaluation['mirror']"))
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        override_pairs(["--config.seed=1", "stray"])


def test_section_reads_the_schema_and_refuses_unknown_keys():
    assert section("loss", {"do_bg": True})["do_bg"] is True
    assert section("data.normalization")["mode"] == "suv"
    with pytest.raises(ConfigError, match="did you mean 'loss.smooth'"):
        section("loss", {"smoth": 1.0})
