"""Device mesh and shardings: a ``data`` axis (batch), an optional ``model`` axis, FSDP option."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"
log = logging.getLogger(__name__)
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def configure_cpu_devices(count: int, setting: str = "mesh.cpu_devices") -> None:
    """Split the host CPU into ``count`` JAX devices (0 leaves JAX's default). Call before JAX
    runs anything: once it has started, or when XLA_FLAGS already sets the count, the existing
    devices stay and a warning naming ``setting`` says so."""
    if count <= 0:
        return
    if _DEVICE_COUNT_FLAG in os.environ.get("XLA_FLAGS", ""):
        log.warning("XLA_FLAGS sets the CPU device count; %s=%d is not applied", setting, count)
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX already started (e.g. an earlier run in this process)
        have = len(jax.devices("cpu"))
        if have != count:
            log.warning("JAX has already started with %d CPU device(s); %s=%d is not applied",
                        have, setting, count)


def make_mesh(mesh_cfg: Mapping[str, Any]) -> Mesh:
    """A ``(data, model)`` mesh over all devices of all processes."""
    n = jax.device_count()
    model = int(mesh_cfg.get("model", 1))
    data = int(mesh_cfg.get("data", -1))
    if data == -1:
        data = n // model
    if data * model != n:
        raise ValueError(f"mesh data={data} x model={model} does not match {n} devices")
    return jax.make_mesh((data, model), (DATA, MODEL),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``; the rest replicated."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], n: int) -> P:
    """Shard the largest axis divisible by ``n`` (small arrays stay replicated)."""
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < 2**14:
        return P()
    for axis in np.argsort(shape)[::-1]:
        if shape[axis] % n == 0:
            spec = [None] * len(shape)
            spec[axis] = DATA
            return P(*spec)
    return P()


def state_shardings(abstract_state: Any, mesh: Mesh, fsdp: bool) -> Any:
    """Shardings for a train-state pytree: replicated, or FSDP-sharded over ``data``."""
    n = mesh.shape[DATA]

    def leaf(x):
        shape = tuple(getattr(x, "shape", ()))
        return NamedSharding(mesh, _fsdp_spec(shape, n) if fsdp else P())

    return jax.tree.map(leaf, abstract_state)
