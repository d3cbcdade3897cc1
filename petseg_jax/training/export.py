"""Export a trained model to StableHLO with ``jax.export``, for serving without training code.

The library behind ``python -m petseg_jax.export``. The exported function maps a normalized patch
batch ``(b, X, Y, Z, C)`` float32 to logits ``(b, X, Y, Z, K)`` float32, with a symbolic batch size
and symbolic spatial sizes constrained to multiples of the network's total stride (``"b, 16*x,
16*y, 16*z, 1"``), the weights baked in as constants and one lowering per platform in a single
artifact. ``--dtype`` is the compute and weight dtype. Convolutions use the fast CPU path in the
CPU lowering (the same numbers as in-process prediction on CPU) and plain XLA convolutions on other
platforms. ``DIR`` (written atomically: built beside it, then renamed) holds ``model.jaxexport``,
``model.mlir`` and ``meta.json`` (see :mod:`petseg_jax.inference.serving`).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import export as jax_export
from jax import lax

from petseg_jax.data import position
from petseg_jax.models import build_model
from petseg_jax.inference.serving import META_FILE, MLIR_FILE, MODEL_FILE, read_meta
from petseg_jax.training.step import ModelDef

DTYPES = ("float32", "bfloat16")
# Convolutions per platform, picked when the program is lowered (one branch per platform in a
# multi-platform artifact): the fast CPU path on CPU, as in training, portable XLA elsewhere.
CONV_IMPLS = {"cpu": "fold", "default": "xla"}


def input_shape_spec(spec: dict) -> str:
    """The symbolic input shape, e.g. ``"b, 16*x, 16*y, 16*z, 1"``."""
    sx, sy, sz = (int(s) for s in spec["total_stride"])
    return f"b, {sx}*x, {sy}*y, {sz}*z, {int(spec.get('in_channels', 1))}"


def inference_apply(config: Any, num_classes: int, dtype: str = "float32"
                    ) -> Callable[[Any, jax.Array], jax.Array]:
    """``apply(params, x)`` of the trained architecture computing in ``dtype``; convolutions
    are chosen per platform when the program is lowered (:data:`CONV_IMPLS`). The parameter
    tree is the trained model's."""
    def model_apply(impl: str) -> Callable[[Any, jax.Array], jax.Array]:
        cfg = {**dict(config["model"]), "conv_impl": impl, "dtype": dtype}
        channels = position.input_channels(config["data"])
        model = nnx.eval_shape(lambda: build_model(cfg, channels, num_classes, nnx.Rngs(0)))
        return ModelDef(model).apply_eval  # abstract: the structure only, no initialisation

    per_platform = {platform: model_apply(impl) for platform, impl in CONV_IMPLS.items()}

    def apply(params: Any, x: jax.Array) -> jax.Array:
        return lax.platform_dependent(params, x, **per_platform)

    return apply


def export_function(apply: Callable[[Any, jax.Array], jax.Array], params: Any, spec: dict,
                    dtype: str = "float32", platforms: Sequence[str] = ("cpu", "cuda")
                    ) -> jax_export.Exported:
    """``jax.export`` of ``x -> apply(params, x)`` with ``params`` (cast to ``dtype``) baked in."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    weights = jax.tree.map(
        lambda p: jnp.asarray(p, dtype) if jnp.issubdtype(jnp.asarray(p).dtype, jnp.floating)
        else jnp.asarray(p), params)

    def infer(x: jax.Array) -> jax.Array:
        return apply(weights, x).astype(jnp.float32)

    arg = jax.ShapeDtypeStruct(jax_export.symbolic_shape(input_shape_spec(spec)), jnp.float32)
    return jax_export.export(jax.jit(infer), platforms=tuple(platforms))(arg)


def write_artifact(exported: jax_export.Exported, meta: dict, out_dir: str | Path) -> Path:
    """Write ``out_dir`` atomically (a temp folder beside it, renamed into place)."""
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        (tmp / MODEL_FILE).write_bytes(exported.serialize())
        (tmp / MLIR_FILE).write_text(exported.mlir_module())
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        read_meta(tmp)  # the artifact must pass the loader's checks before it is published
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def export_model(apply: Callable[[Any, jax.Array], jax.Array], params: Any, spec: dict,
                 out_dir: str | Path, dtype: str = "float32",
                 platforms: Sequence[str] = ("cpu", "cuda")) -> Path:
    """Export ``apply``/``params`` with inference ``spec`` into ``out_dir``; returns its path."""
    exported = export_function(apply, params, spec, dtype, platforms)
    meta = dict(spec) | {
        "input_dtype": "float32", "output_dtype": "float32",
        "export": {"dtype": dtype, "platforms": list(exported.platforms),
                   "input_shape": input_shape_spec(spec),
                   "calling_convention_version": exported.calling_convention_version,
                   "conv_impl": CONV_IMPLS, "jax_version": jax.__version__,
                   "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")},
    }
    return write_artifact(exported, meta, out_dir)


def export_workdir(workdir: str | Path, out_dir: str | Path, dtype: str = "float32",
                   platforms: Sequence[str] = ("cpu", "cuda"), step: int | None = None) -> Path:
    """Export the best checkpoint (or ``step``) of a training workdir into ``out_dir``."""
    from petseg_jax.training.restore import load_trained

    trained = load_trained(workdir, step)
    apply = inference_apply(trained.config, trained.schema.num_classes, dtype)
    return export_model(apply, trained.params, trained.spec, out_dir, dtype, platforms)
