"""The import graph points one way: every petseg_jax module imports only its own layer or lower
ones (HELPERS.md's order), function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "petseg_jax"
# Lowest first. Top-level modules (train.py, evaluate.py, ...) and every __main__.py are commands;
# the package's own __init__ (its version) is below everything.
LAYERS = ("configs", "console", "resources", "workers", "configuration", "metrics", "physics",
          "data", "phantom", "models", "inference", "training", "evaluation", "planning", "bench",
          "commands")


def layer_of(module: str) -> int:
    """The layer index of a dotted module name (``petseg_jax.data.store``, ``configs.default``)."""
    parts = module.split(".")
    if parts[0] == "configs" or parts[1:] in (["__init__"], ["__version__"]):
        return LAYERS.index("configs")  # the bottom: imports nothing of the package
    if parts[-1] == "__main__":
        return LAYERS.index("commands")
    top = parts[1] if len(parts) > 1 else "commands"
    return LAYERS.index(top) if top in LAYERS else LAYERS.index("commands")


def imported_modules(path: Path) -> list[str]:
    """Every petseg_jax/configs module ``path`` imports, anywhere in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from petseg_jax import metrics` imports petseg_jax.metrics
            out += [f"{node.module}.{a.name}" if node.module == "petseg_jax" else node.module
                    for a in node.names]
    return [m for m in out if m.split(".")[0] in ("petseg_jax", "configs")]


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for target in imported_modules(path):
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_layer_of():
    assert layer_of("petseg_jax.data.store") < layer_of("petseg_jax.models.unet")
    assert layer_of("petseg_jax.inference.spec") < layer_of("petseg_jax.training.run")
    assert layer_of("petseg_jax.train") == layer_of("petseg_jax.models.__main__")
    assert layer_of("petseg_jax.metrics") < layer_of("petseg_jax.inference.segment")
    assert layer_of("petseg_jax.data.__init__") == layer_of("petseg_jax.data.store")
