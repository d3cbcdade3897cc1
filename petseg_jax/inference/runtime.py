"""Where and how JAX runs a prediction: the device and the persistent compilation cache."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jax

DEVICES = ("cpu", "gpu")
# CPU devices a prediction splits the host into: each batch of windows (2 in the shipped specs)
# is split over them (sliding_window.window_devices). On the idle 2-core VM, 2 devices run the
# demo and mid-size networks' whole-body windows 1.6x and 1.5x faster than one
# (`bench infer`, BUILD_NOTES.md session 11).
CPU_DEVICES = 2


def add_cpu_devices_argument(parser: argparse.ArgumentParser) -> None:
    """``--cpu-devices N`` (default :data:`CPU_DEVICES`, at least 1): apply it with
    :func:`petseg_jax.training.mesh.configure_cpu_devices` before JAX starts."""

    def count(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
        return value

    parser.add_argument("--cpu-devices", type=count, default=CPU_DEVICES, metavar="N",
                        help="on the CPU, split each batch of windows over N JAX devices "
                        f"(default {CPU_DEVICES}; 1: one device)")


def default_cache_dir() -> Path:
    """``$JAX_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)
    ``/petseg_jax/jax``."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "petseg_jax" / "jax"


def enable_compile_cache(path: str | Path | None = None) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default
    :func:`default_cache_dir`): a second run of the same model and shapes loads its programs
    instead of compiling them again."""
    path = Path(path) if path is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


def select_device(kind: str | None) -> str:
    """Make ``kind`` (``cpu``/``gpu``; ``None``: JAX's default) the default device; a GPU
    that JAX cannot find falls back to the CPU with a message on stderr. Returns the platform
    used."""
    if kind is None:
        return jax.default_backend()
    if kind not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {kind!r}")
    if kind == "gpu":
        try:
            jax.config.update("jax_default_device", jax.devices("gpu")[0])
            return "gpu"
        except RuntimeError as err:
            print(f"--device gpu: JAX finds no GPU ({err}); running on the CPU",
                  file=sys.stderr)
    jax.config.update("jax_default_device", jax.devices("cpu")[0])
    return "cpu"
