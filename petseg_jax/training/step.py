"""The train state and the functional train step (``nnx.split`` once, ``nnx.merge`` in the trace).

The state is a plain pytree — ``{"params", "opt_state", "step", "rng"}`` — so that it can be
jitted with explicit shardings, donated, and checkpointed by Orbax as is. ``params`` is the pure
dict of the model's ``nnx.Param`` variables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from petseg_jax.data import position
from petseg_jax.training import augment as augment_lib
from petseg_jax.training import loss as loss_lib

TrainState = dict[str, Any]


class ModelDef:
    """A model's static structure for training and for inference, and its parameter template.

    Built from an abstract model (``nnx.eval_shape``): nothing is initialised eagerly. Real
    parameters come from :meth:`init_params`, one jitted program.
    """

    def __init__(self, model: nnx.Module, init_fn: Callable[[jax.Array], nnx.Module] | None = None):
        model.train()
        self.train_graph, params, self.train_rest = nnx.split(model, nnx.Param, ...)
        model.eval()
        self.eval_graph, _, self.eval_rest = nnx.split(model, nnx.Param, ...)
        self.template = params
        self._init_fn = init_fn

    @classmethod
    def build(cls, build_fn: Callable[[nnx.Rngs], nnx.Module]) -> "ModelDef":
        """From ``build_fn(rngs) -> model`` (e.g. ``partial(build_model, cfg, 1, K)``)."""
        return cls(nnx.eval_shape(lambda: build_fn(nnx.Rngs(0))), build_fn)

    def init_params(self, seed: int) -> dict:
        """Freshly initialised parameters (pure dict), in one compiled program."""
        if self._init_fn is None:
            raise ValueError("this ModelDef was made from a model, not a build function")
        build = self._init_fn
        init = jax.jit(lambda key: nnx.to_pure_dict(nnx.state(build(nnx.Rngs(key)), nnx.Param)))
        return init(jax.random.key(seed))

    def _merge(self, graph, rest, params) -> nnx.Module:
        state = nnx.State(self.template)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graph, state, rest)

    def apply_train(self, params, x: jax.Array):
        """Training-mode forward (deep-supervision outputs when the model has them)."""
        return self._merge(self.train_graph, self.train_rest, params)(x)

    def apply_eval(self, params, x: jax.Array) -> jax.Array:
        """Inference forward: float32 logits ``(N, X, Y, Z, K)``."""
        return self._merge(self.eval_graph, self.eval_rest, params)(x)


def init_state(model_def: ModelDef, tx: optax.GradientTransformation, seed: int) -> TrainState:
    params = model_def.init_params(seed)
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed))}


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(model_def: ModelDef, tx: optax.GradientTransformation,
                    config: Mapping[str, Any], mirror_lut: np.ndarray
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """``step(state, batch) -> (state, metrics)``; augmentation keyed by (seed, step).

    A step whose loss or gradients are not finite leaves the state unchanged and reports
    ``finite = False``; the loop stops the run on it.
    """
    aug_cfg = config["augment"]
    loss_cfg = config["loss"]
    lut = jnp.asarray(mirror_lut)
    position_axes = position.position_axes(config["data"])

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        image, label = augment_lib.augment_batch(key, batch["image"], batch["label"],
                                                 aug_cfg, lut, batch.get("position"),
                                                 position_axes)

        def loss_fn(params):
            outputs = model_def.apply_train(params, image)
            return loss_lib.segmentation_loss(outputs, label, loss_cfg)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
               "rng": state["rng"]}
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite}
        return new, metrics

    return step
