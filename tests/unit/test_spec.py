"""The inference spec: construction from a training config, validation, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from configs import default
from petseg_jax.data.schema import DEFAULT_SCHEMA, LabelSchema
from petseg_jax.inference import spec as spec_lib


def _config(**data):
    config = default.get_config()
    config.model.n_stages = 3
    config.data.patch_size = (16, 16, 32)
    for key, value in data.items():
        config.data[key] = value
    return config


def test_spec_from_config_is_json_and_valid():
    schema = LabelSchema(("liver", "spleen"))
    spec = spec_lib.make_inference_spec(_config(), schema, 7, "runs/x")
    assert json.loads(json.dumps(spec)) == spec  # plain JSON (tuples became lists)
    assert spec_lib.check_spec(spec) == spec
    assert spec["format_version"] == spec_lib.FORMAT_VERSION
    assert spec["patch_size"] == [16, 16, 32] and spec["spacing"] == [2.0, 2.0, 2.0]
    assert len(spec["total_stride"]) == 3 and all(16 % s == 0 for s in spec["total_stride"])
    assert spec_lib.spec_schema(spec) == schema
    assert spec["normalization"]["mode"] == "suv" and "case_reference" in spec["normalization"]
    assert spec["training"]["step"] == 7 and spec["training"]["config"]["model"]["n_stages"] == 3
    assert spec["in_channels"] == 1 and spec["position_channels"] is False
    assert spec["nonzero_mask"] is True  # the default config's evaluation.nonzero_mask
    assert spec["position_ranges"] is None  # evaluation.position_prior_mm = 0: off
    with_position = spec_lib.make_inference_spec(_config(position_channels=True), schema, 7, None)
    assert with_position["in_channels"] == 4 and with_position["position_channels"] is True
    assert spec_lib.check_spec(with_position) == with_position


def test_empty_spacing_comes_from_the_store(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "schema": DEFAULT_SCHEMA.to_json(), "spacing": [1.5, 1.5, 3.0],
         "cases": {}}))
    spec = spec_lib.make_inference_spec(_config(spacing=(), store=str(tmp_path)),
                                        DEFAULT_SCHEMA, None, None)
    assert spec["spacing"] == [1.5, 1.5, 3.0]
    assert spec["largest_component_labels"] is None  # no training case: unknown


def test_largest_component_labels_come_from_the_training_cases(tmp_path):
    def case(split, components):
        return {"metadata": {"split": split}, "class_components": components}
    cases = {"a": case("train", {"1": 1, "2": 3, "3": 1}), "b": case("train", {"1": 1, "3": 1}),
             "c": case("test", {"3": 2})}  # test cases never decide
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "schema": DEFAULT_SCHEMA.to_json(), "spacing": [2.0] * 3,
         "cases": cases}))
    spec = spec_lib.make_inference_spec(_config(store=str(tmp_path)), DEFAULT_SCHEMA, 1, None)
    assert spec["largest_component_labels"] == [1, 3]
    assert spec["position_ranges"] is None
    del cases["b"]["class_components"]  # a store from before the counts: unknown
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "schema": DEFAULT_SCHEMA.to_json(), "spacing": [2.0] * 3,
         "cases": cases}))
    spec = spec_lib.make_inference_spec(_config(store=str(tmp_path)), DEFAULT_SCHEMA, 1, None)
    assert spec["largest_component_labels"] is None
    missing = spec_lib.make_inference_spec(_config(store=str(tmp_path / "nope")),
                                           DEFAULT_SCHEMA, 1, None)
    assert missing["largest_component_labels"] is None


@pytest.fixture
def valid_spec():
    return {"format_version": 1, "schema": DEFAULT_SCHEMA.to_json(), "patch_size": [16, 16, 16],
            "spacing": [2.0, 2.0, 2.0], "total_stride": [4, 4, 4],
            "normalization": {"mode": "case", "transform": "clip"}, "overlap": 0.5,
            "mirror_axes": [], "input_layout": "NXYZC", "output_layout": "NXYZK",
            "input_dtype": "float32", "output_dtype": "float32"}


@pytest.mark.parametrize("change, message", [
    ({"format_version": 2}, "newer"),
    ({"format_version": None}, "format_version"),
    ({"patch_size": [16, 16, 18]}, "multiple"),
    ({"spacing": [2.0, 0.0, 2.0]}, "positive"),
    ({"input_layout": "NCXYZ"}, "layouts"),
    ({"normalization": {"mode": "hu"}}, "normalization"),
    ({"in_channels": 4}, "in_channels 4 does not match"),
    ({"position_channels": True}, "does not match"),
])
def test_check_spec_refuses(valid_spec, change, message):
    with pytest.raises(spec_lib.SpecError, match=message):
        spec_lib.check_spec(valid_spec | change, "meta.json")


def test_check_spec_names_missing_keys(valid_spec):
    del valid_spec["overlap"]
    with pytest.raises(spec_lib.SpecError, match="meta.json: missing keys \\['overlap'\\]"):
        spec_lib.check_spec(valid_spec, "meta.json")


def test_to_jsonable():
    assert spec_lib.to_jsonable({"a": (1, np.float32(2.5)), 3: np.arange(2)}) == \
        {"a": [1, 2.5], "3": [0, 1]}
