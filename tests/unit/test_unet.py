"""U-Net / ResEnc U-Net: output shapes, modes, dtypes and config handling."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from flax import nnx

from petseg_jax.models.unet import build_model, model_config, total_stride

CLASSES = 3


@pytest.fixture(scope="module")
def x16():
    return jax.random.normal(jax.random.key(0), (1, 16, 16, 16, 1))


@pytest.mark.parametrize("name", ["unet", "resenc"])
@pytest.mark.parametrize("n_stages", [2, 3, 4])
def test_output_shapes_deep_supervision_and_eval(name, n_stages, x16):
    cfg = {"name": name, "n_stages": n_stages, "base_features": 4, "max_features": 8,
           "blocks_per_stage": 1, "decoder_blocks": 1, "dtype": "float32"}
    model = build_model(cfg, 1, CLASSES, nnx.Rngs(0))
    outs = model(x16)  # built in training mode
    assert [o.shape[1] for o in outs] == [16 // 2 ** i for i in range(n_stages - 1)]
    assert all(o.shape == (1, o.shape[1], o.shape[1], o.shape[1], CLASSES) for o in outs)
    assert all(o.dtype == jnp.float32 for o in outs)
    model.eval()
    out = model(x16)
    assert out.shape == (1, 16, 16, 16, CLASSES) and out.dtype == jnp.float32
    assert jnp.allclose(out, outs[0], atol=1e-6)  # same full-resolution head either way
    assert isinstance(model(x16, deterministic=False), list)
    model.train()
    assert isinstance(model(x16), list)


def test_features_capped_and_blocks_per_stage():
    cfg = model_config({"n_stages": 5, "base_features": 32, "max_features": 128,
                        "blocks_per_stage": [1, 2, 2, 3, 3]})
    assert cfg["features"] == [32, 64, 128, 128, 128]
    model = build_model({"name": "resenc", "n_stages": 3, "base_features": 4, "dtype": "float32",
                         "blocks_per_stage": [1, 2, 3], "decoder_blocks": [1, 2]}, 2, CLASSES,
                        nnx.Rngs(0))
    assert [len(s) for s in model.encoder] == [1, 2, 3]
    assert [len(d) for d in model.decoders] == [1, 2]
    assert model.encoder[1][0].conv1.conv.stride == (2, 2, 2)
    assert model.encoder[1][1].conv1.conv.stride == (1, 1, 1)
    assert model.encoder[0][0].skip is None and model.encoder[1][0].skip is not None


def test_bfloat16_compute_float32_params_and_logits(x16):
    model = build_model({"n_stages": 2, "base_features": 4, "dtype": "bfloat16",
                         "deep_supervision": False}, 1, CLASSES, nnx.Rngs(0))
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert params and all(p.dtype == jnp.float32 for p in params)
    out = model(x16)
    assert out.dtype == jnp.float32 and out.shape == (1, 16, 16, 16, CLASSES)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_total_stride_and_anisotropic_strides():
    assert total_stride({"n_stages": 5}) == (16, 16, 16)
    cfg = ml_collections.ConfigDict({"n_stages": 3, "strides": [1, [2, 2, 1], 2]})
    assert total_stride(cfg) == (4, 4, 2)
    model = build_model({**cfg.to_dict(), "base_features": 4, "deep_supervision": True,
                         "dtype": "float32"}, 1,
                        CLASSES, nnx.Rngs(0))
    outs = model(jnp.ones((1, 8, 8, 4, 1)))
    assert [o.shape[1:4] for o in outs] == [(8, 8, 4), (4, 4, 4)]  # stage 1 keeps Z


def test_bad_config_is_reported():
    with pytest.raises(ValueError, match="did you mean .model.n_stages."):
        model_config({"n_stage": 3})
    with pytest.raises(ValueError, match="model.name"):
        model_config({"name": "vnet"})
    with pytest.raises(ValueError, match="blocks_per_stage"):
        model_config({"n_stages": 3, "blocks_per_stage": [1, 2]})
