"""Experiment configs: small Python files with ``get_config()``, overridden from the command line.

``--config.data.batch_size=4`` style overrides are applied with the type of the existing field, so
a typo or a wrong type fails loudly instead of being ignored.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """A config file or override that cannot be applied."""


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
    """Import ``path`` and call its ``get_config()``."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    # Config files may import siblings as `configs.<name>`: put the folder above on the path.
    root = str(path.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_petseg_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config()")
    return module.get_config()


def over_defaults(cfg: Mapping[str, Any] | None, defaults: Mapping[str, Any], section: str
                  ) -> dict[str, Any]:
    """``cfg`` (a mapping, ``ConfigDict`` or ``None``) over a module's documented ``defaults``;
    a key the defaults do not know is an error naming the config ``section``."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {section} config keys {sorted(unknown)}; "
                         f"known: {sorted(defaults)}")
    return {**defaults, **cfg}


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string


def apply_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Set ``config.<dotted> = text`` parsed as a Python literal, checked against the field."""
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
        if name not in node:
            raise ConfigError(f"unknown config section {dotted!r}")
        node = node[name]
    if leaf not in node:
        raise ConfigError(f"unknown config key {dotted!r}")
    value = _parse_value(text)
    old = node[leaf]
    if isinstance(old, tuple) and isinstance(value, list | tuple):
        value = tuple(value)
    elif isinstance(old, tuple) and isinstance(value, int | float):
        value = (value,) * len(old) if old else (value,)
    try:
        node[leaf] = value
    except TypeError as err:
        raise ConfigError(f"--config.{dotted}={text}: {err}") from None


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separate ``--config.key=value`` (or ``--config.key value``) from the other arguments."""
    rest, overrides, i = [], [], 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key, eq, value = arg[len("--config."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg} needs a value")
                value, i = argv[i + 1], i + 1
            overrides.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def load_config(path: str | Path, overrides: Sequence[tuple[str, str]] = ()
                ) -> ml_collections.ConfigDict:
    config = load_config_file(path)
    for key, value in overrides:
        apply_override(config, key, value)
    return config
