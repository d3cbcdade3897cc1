"""The model record (inference spec): construction at training start, validation, the file."""

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


def _manifest(cases=None, spacing=(2.0, 2.0, 2.0)):
    return {"spacing": list(spacing), "cases": cases or {}}


NO_SPLITS = {"train": [], "val": [], "test": []}


def test_spec_from_config_is_json_and_valid(tmp_path):
    schema = LabelSchema(("liver", "spleen"))
    spec = spec_lib.make_inference_spec(_config(), schema, _manifest(), NO_SPLITS, tmp_path)
    assert json.loads(json.dumps(spec)) == spec  # plain JSON (tuples became lists)
    assert spec_lib.check_spec(spec) == spec
    assert spec["format_version"] == spec_lib.FORMAT_VERSION
    assert spec["patch_size"] == [16, 16, 32] and spec["spacing"] == [2.0, 2.0, 2.0]
    assert len(spec["total_stride"]) == 3 and all(16 % s == 0 for s in spec["total_stride"])
    assert spec_lib.spec_schema(spec) == schema
    assert spec["normalization"]["mode"] == "suv" and "case_reference" in spec["normalization"]
    assert spec["training"]["step"] is None and spec["training"]["config"]["model"]["n_stages"] == 3
    assert spec["splits"] == NO_SPLITS and spec["store"] == str(tmp_path.resolve())
    assert spec["in_channels"] == 1 and spec["position_channels"] == ""
    assert spec["nonzero_mask"] is True  # the default config's evaluation.nonzero_mask
    assert spec["position_ranges"] == {}  # evaluation.position_prior_mm = 0: off
    assert spec["largest_component"] is False and spec["mirror_axes"] == []
    assert spec["body_box"] is None  # evaluation.body_box_suv = 0: off
    with_position = spec_lib.make_inference_spec(_config(position_channels="xy"), schema,
                                                 _manifest(), NO_SPLITS, tmp_path)
    assert with_position["in_channels"] == 3 and with_position["position_channels"] == "xy"
    assert spec_lib.check_spec(with_position) == with_position


def test_spacing_is_the_stores():
    spec = spec_lib.make_inference_spec(_config(spacing=()), DEFAULT_SCHEMA,
                                        _manifest(spacing=(1.5, 1.5, 3.0)), NO_SPLITS, "s")
    assert spec["spacing"] == [1.5, 1.5, 3.0]


def test_post_processing_decisions_come_from_the_training_cases():
    def case(components):
        return {"shape": [10, 10, 10], "spacing": [2.0] * 3, "class_components": components,
                "class_locations": {"1": [[1, 2, 3], [4, 5, 6]]},
                "metadata": {"tracer": "FDG", "center": "A", "dose_reduction_factor": 1,
                             "attenuation_corrected": True}}
    cases = {"a": case({"1": 1, "2": 3, "3": 1}), "b": case({"1": 1, "3": 1}),
             "c": case({"3": 2})}  # a test case never decides
    splits = {"train": ["a", "b"], "val": [], "test": ["c"]}
    config = _config()
    config.evaluation.largest_component = True
    config.evaluation.position_prior_mm = 10.0
    config.evaluation.mirror = True
    spec = spec_lib.make_inference_spec(config, DEFAULT_SCHEMA, _manifest(cases), splits, "s")
    assert spec["largest_component"] is True and spec["largest_component_labels"] == [1, 3]
    assert list(spec["position_ranges"]) == ["1"] and spec["mirror_axes"] == [0]
    assert spec["training_data"] == {"cases": 2, "extent_mm": [[20.0, 20.0]] * 3,
                                     "tracers": ["FDG"], "centers": ["A"],
                                     "dose_reduction_factors": [1.0],
                                     "attenuation_corrected": [True]}
    del cases["b"]["class_components"]  # a store from before the counts: an error naming it
    with pytest.raises(spec_lib.SpecError, match=r"class_components.*\['b'\]"):
        spec_lib.make_inference_spec(config, DEFAULT_SCHEMA, _manifest(cases), splits, "s")


def test_model_file_round_trip_and_missing_file(tmp_path):
    spec = spec_lib.make_inference_spec(_config(), DEFAULT_SCHEMA, _manifest(), NO_SPLITS, "s")
    spec_lib.write_model_file(tmp_path, spec)
    assert spec_lib.read_model_file(tmp_path) == spec
    with pytest.raises(spec_lib.SpecError, match=r"nope/model.json does not exist"):
        spec_lib.read_model_file(tmp_path / "nope")
    del spec["largest_component_labels"]
    (tmp_path / "model.json").write_text(json.dumps(spec))
    with pytest.raises(spec_lib.SpecError, match=r"missing keys \['largest_component_labels'\]"):
        spec_lib.read_model_file(tmp_path)


@pytest.fixture
def valid_spec():
    config = _config()
    config.data.patch_size = (16, 16, 16)
    config.data.normalization.mode = "case"
    config.data.normalization.transform = "clip"
    return spec_lib.make_inference_spec(config, DEFAULT_SCHEMA, _manifest(), NO_SPLITS, "s")


@pytest.mark.parametrize("change, message", [
    ({"format_version": spec_lib.FORMAT_VERSION + 1}, "newer"),
    ({"format_version": None}, "format_version"),
    ({"patch_size": [16, 16, 18]}, "multiple"),
    ({"spacing": [2.0, 0.0, 2.0]}, "positive"),
    ({"input_layout": "NCXYZ"}, "layouts"),
    ({"normalization": {"mode": "hu"}}, "normalization"),
    ({"in_channels": 4}, "in_channels 4 does not match"),
    ({"position_channels": "xyz"}, "does not match"),
    ({"position_channels": "z"}, "position_channels must be one of"),
])
def test_check_spec_refuses(valid_spec, change, message):
    with pytest.raises(spec_lib.SpecError, match=message):
        spec_lib.check_spec(valid_spec | change, "meta.json")


def test_check_spec_names_missing_keys(valid_spec):
    del valid_spec["overlap"]
    with pytest.raises(spec_lib.SpecError, match="meta.json: missing keys \\['overlap'\\]"):
        spec_lib.check_spec(valid_spec, "meta.json")


def test_body_box_threshold_is_the_normalized_suv(tmp_path):
    config = _config()
    config.evaluation.body_box_suv = 0.02
    config.evaluation.body_box_margin = 8
    spec = spec_lib.make_inference_spec(config, DEFAULT_SCHEMA, _manifest(), NO_SPLITS, tmp_path)
    assert spec["body_box"] == {"threshold": pytest.approx(np.log1p(0.02)), "sigma_voxels": 1.0,
                                "margin_voxels": 8, "min_component_fraction": 0.01}
    config.data.normalization.transform = "clip"  # a per-case ceiling: no fixed threshold
    with pytest.raises(spec_lib.SpecError, match="body_box_suv needs"):
        spec_lib.make_inference_spec(config, DEFAULT_SCHEMA, _manifest(), NO_SPLITS, tmp_path)


def test_a_format_2_record_has_no_body_box(valid_spec):
    old = {k: v for k, v in valid_spec.items() if k != "body_box"} | {"format_version": 2}
    assert spec_lib.check_spec(old)["body_box"] is None
    with pytest.raises(spec_lib.SpecError, match=r"missing keys \['body_box'\]"):
        spec_lib.check_spec({k: v for k, v in valid_spec.items() if k != "body_box"})


def test_to_jsonable():
    assert spec_lib.to_jsonable({"a": (1, np.float32(2.5)), 3: np.arange(2)}) == \
        {"a": [1, 2.5], "3": [0, 1]}


def test_card_warns_when_an_image_is_cut_along_an_axis_with_a_position_channel():
    """An "xy" model trained on 650 mm-wide images: a 300 mm-wide crop warns (its centre moved),
    a shorter scan does not (z has no channel), and neither does an image as wide as those."""
    from petseg_jax.inference.installed import card_warnings

    trained = {"tracers": ["FDG"], "extent_mm": [[648.0, 660.0], [648.0, 660.0], [900.0, 1980.0]]}
    spacing = [6.0, 6.0, 6.0]
    assert card_warnings(trained, spacing, spacing, "FDG", [654.0, 654.0, 600.0], (0, 1)) == []
    warnings = card_warnings(trained, spacing, spacing, "FDG", [300.0, 654.0, 1000.0], (0, 1))
    assert len(warnings) == 1 and "300 mm along x, the training images 648-660 mm" in warnings[0]
    assert card_warnings(trained, spacing, spacing, "FDG", [300.0, 654.0, 1000.0], ()) == []
    assert len(card_warnings(trained, spacing, spacing, "FDG", [654.0, 654.0, 600.0],
                             (0, 1, 2))) == 1  # "xyz": a 60 cm scan is shorter than any trained
    old_record = {"tracers": ["FDG"]}  # from before extent_mm: nothing to compare with
    assert card_warnings(old_record, spacing, spacing, "FDG", [300.0, 654.0, 600.0], (0, 1)) == []
