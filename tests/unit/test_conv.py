"""conv3d implementations against lax.conv_general_dilated, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from petseg_jax.models.conv import conv3d, conv_transpose3d, pointwise_conv, resolve_impl

CASES = [  # (input shape, kernel shape, strides, padding)
    ((2, 6, 7, 5, 3), (3, 3, 3, 3, 4), 1, "SAME"),
    ((1, 8, 8, 6, 2), (3, 3, 3, 2, 33), 2, [(1, 1)] * 3),  # wide output, stride 2
    ((1, 9, 8, 7, 5), (3, 2, 3, 5, 6), (2, 1, 2), "VALID"),
    ((1, 7, 6, 5, 6), (3, 3, 1, 6, 2), (1, 2, 1), [(1, 2), (1, 1), (0, 0)]),  # cin > cout: unfold
]


def _loss(impl, strides, padding):
    return lambda x, w: jnp.sum(jnp.sin(conv3d(x, w, strides, padding, impl)))


@pytest.mark.parametrize("xshape,wshape,strides,padding", CASES)
def test_matches_xla_values_and_gradients(xshape, wshape, strides, padding):
    x = jax.random.normal(jax.random.key(0), xshape)
    w = jax.random.normal(jax.random.key(1), wshape) * 0.3
    ref = conv3d(x, w, strides, padding, "xla")
    out = conv3d(x, w, strides, padding, "fold")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    gref = jax.jit(jax.grad(_loss("xla", strides, padding), argnums=(0, 1)))(x, w)
    got = jax.jit(jax.grad(_loss("fold", strides, padding), argnums=(0, 1)))(x, w)
    for a, b in zip(got, gref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_auto_picks_the_fast_cpu_path_and_rejects_unknown():
    assert jax.default_backend() == "cpu"
    assert resolve_impl("auto") == "fold"
    assert resolve_impl("xla") == "xla"
    with pytest.raises(ValueError, match="unknown conv impl"):
        resolve_impl("cudnn")


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match="channels"):
        conv3d(jnp.zeros((1, 4, 4, 4, 2)), jnp.zeros((3, 3, 3, 3, 1)))
    with pytest.raises(ValueError, match="smaller than kernel"):
        conv3d(jnp.zeros((1, 2, 4, 4, 1)), jnp.zeros((3, 3, 3, 1, 1)), padding="VALID",
               impl="fold")


def test_conv_transpose_is_strided_scatter_of_kernel():
    x = jax.random.normal(jax.random.key(0), (2, 3, 2, 4, 5))
    w = jax.random.normal(jax.random.key(1), (2, 2, 1, 5, 3))
    out = conv_transpose3d(x, w)
    assert out.shape == (2, 6, 4, 4, 3)
    # lax.conv_transpose correlates with the kernel, so it needs the spatially flipped one
    ref = lax.conv_transpose(x, w[::-1, ::-1, ::-1], (2, 2, 1), "VALID",
                             dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # one output voxel by hand: block (1, 0, 2), tap (1, 1, 0)
    np.testing.assert_allclose(out[0, 3, 1, 2], x[0, 1, 0, 2] @ w[1, 1, 0], rtol=1e-5)


def test_pointwise_conv_matches_1x1x1_conv():
    x = jax.random.normal(jax.random.key(0), (1, 3, 4, 5, 6))
    w = jax.random.normal(jax.random.key(1), (6, 2))
    ref = conv3d(x, w[None, None, None], 1, "SAME", "xla")
    np.testing.assert_allclose(pointwise_conv(x, w), ref, rtol=1e-5, atol=1e-5)


def test_benchmark_table_runs():
    from petseg_jax.bench.conv import bench_layers

    rows = bench_layers(["1x8x2x4x1"], ["xla", "fold"], repeats=1)
    assert len(rows) == 3 and rows[2].startswith("| 1x8^3 2->4 s1 |")
    assert all(float(v) >= 0 for v in rows[2].strip("| ").split(" | ")[1:])
