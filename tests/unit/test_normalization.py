"""Intensity normalization: SUV / per-case units, transforms, JSON config."""

import dataclasses
import json

import numpy as np
import pytest

from petseg_jax.data.normalization import (NormalizationConfig, intensity_stats, normalize,
                                           unit_factor)

RNG = np.random.default_rng(0)
IMAGE = (RNG.gamma(2.0, 2.0, (12, 10, 8)) * (RNG.random((12, 10, 8)) > 0.3)).astype(np.float32)
STATS = intensity_stats(IMAGE)


def test_stats_keys_and_values():
    assert set(STATS) == {"p0.5", "p50", "p99.5", "mean", "std"}
    assert STATS["p99.5"] == pytest.approx(np.percentile(IMAGE, 99.5), rel=1e-5)
    assert STATS["mean"] == pytest.approx(IMAGE.mean(), rel=1e-5)


def test_suv_log1p():
    out = normalize(IMAGE, 0.25, STATS, {"mode": "suv", "transform": "log1p"})
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.log1p(IMAGE * 0.25), rtol=1e-5, atol=1e-6)


def test_without_suv_factor_falls_back_to_case_scaling():
    cfg = NormalizationConfig.from_config(dict(mode="suv", case_reference=8.0))
    expected = np.log1p(IMAGE / STATS["p99.5"] * 8.0)
    np.testing.assert_allclose(normalize(IMAGE, None, STATS, cfg), expected, rtol=1e-5)
    # mode "case" ignores a known SUV factor
    np.testing.assert_allclose(normalize(IMAGE, 0.25, STATS, {"mode": "case",
                                                               "case_reference": 8.0}),
                               expected, rtol=1e-5)


def test_clip_transform_and_scale():
    cfg = NormalizationConfig.from_config(dict(transform="clip", clip_percentile=50, scale=2.0))
    out = normalize(IMAGE, 0.25, STATS, cfg)
    assert out.min() >= 0.0 and out.max() == pytest.approx(2.0)
    ceiling = STATS["p50"] * 0.25
    np.testing.assert_allclose(out, np.clip(IMAGE * 0.25, 0, ceiling) / ceiling * 2.0, rtol=1e-5)


def test_patch_equals_crop_of_whole_and_zero_stays_zero():
    cfg = NormalizationConfig.from_config()
    whole = normalize(IMAGE.astype(np.float16), None, STATS, cfg)
    patch = normalize(IMAGE[2:7, 3:9, 1:5].astype(np.float16), None, STATS, cfg)
    np.testing.assert_array_equal(patch, whole[2:7, 3:9, 1:5])
    assert normalize(np.zeros(3), None, STATS, cfg).tolist() == [0.0, 0.0, 0.0]
    negative = normalize(np.array([-5.0]), 1.0, STATS, cfg)
    assert negative.tolist() == [0.0]


def test_out_buffer_is_filled():
    out = np.full(IMAGE.shape, np.nan, np.float32)
    assert normalize(IMAGE, 1.0, STATS, None, out=out) is out
    assert np.isfinite(out).all()


def test_json_round_trip():
    cfg = NormalizationConfig.from_config(dict(mode="case", transform="clip", clip_percentile=99.5,
                                               scale=3.0))
    assert NormalizationConfig.from_config(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    assert NormalizationConfig.from_config(None) == NormalizationConfig.from_config()


@pytest.mark.parametrize("bad, match", [({"mode": "z"}, "mode"), ({"transform": "z"}, "transform"),
                                        ({"scale": 0}, "scale"), ({"wrong": 1}, "unknown")])
def test_bad_config(bad, match):
    with pytest.raises(ValueError, match=match):
        NormalizationConfig.from_config(bad)


def test_bad_stats_name_the_case():
    with pytest.raises(ValueError, match="case c7.*p99.5"):
        normalize(IMAGE, None, {"p50": 1.0}, None, case_id="c7")
    with pytest.raises(ValueError, match="case c7.*p90"):
        normalize(IMAGE, 1.0, STATS, {"transform": "clip", "clip_percentile": 90}, case_id="c7")
    with pytest.raises(ValueError, match="case c7.*suv_factor"):
        unit_factor(-1.0, STATS, NormalizationConfig.from_config(), "c7")
