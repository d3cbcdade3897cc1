"""One config system: ``configs/default.py`` is the schema, files change it, the command line
overrides it through ml_collections ``config_flags`` (``--config.data.batch_size=4``).

Every key a run can have is in ``configs/default.py``, with a comment. A config file is a
Python file with ``get_config()`` (usually ``default.get_config()`` with some values changed); a
key it adds or misspells, a key it drops, an override of an unknown key or a value of the wrong
type ends with a :class:`ConfigError` naming the nearest valid key in full ("did you mean
'data.patch_size'?"). The loaded config is locked. Library code takes one section of it and
reads missing keys from the schema: :func:`section`.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

_OVERRIDE = re.compile(r"^--config\.([^=]+)")


class ConfigError(ValueError):
    """A config file, override or section that does not fit the schema (``configs/default.py``)."""


def default_config() -> ml_collections.ConfigDict:
    """A fresh, unlocked copy of the schema: ``configs/default.py``'s ``get_config()``."""
    from configs import default  # the repo's (or the installed wheel's) top-level configs

    return default.get_config()


@functools.cache
def _schema() -> ml_collections.FrozenConfigDict:
    return ml_collections.FrozenConfigDict(default_config())


def leaves(config: Mapping[str, Any] | ml_collections.ConfigDict, prefix: str = ""
           ) -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf (sections recursed into)."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping | ml_collections.ConfigDict):
            yield from leaves(value, name + ".")
        else:
            yield name, value


def _paths(config) -> set[str]:
    """Every dotted key, sections included."""
    out = set()
    for name, _ in leaves(config):
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return out


def unknown_key_error(key: str, known: Sequence[str], where: str) -> ConfigError:
    """``ConfigError`` for ``key`` not in ``known``, naming the nearest known key in full."""
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.0)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ConfigError(f"unknown config key {key!r} in {where}{hint}")


def _check_value(key: str, value: Any, default: Any) -> None:
    """``value`` must have the schema's type (an int is a float; tuples check their items)."""
    if default is None or value is None:
        return
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (tuple, list)}
    want = kinds.get(type(default), (type(default),))
    ok = isinstance(value, want) and not (isinstance(value, bool) and bool not in want)
    if ok and isinstance(default, tuple) and default:
        item = kinds.get(type(default[0]), (type(default[0]),))
        ok = all(isinstance(v, item) and not (isinstance(v, bool) and bool not in item)
                 for v in value)
    if not ok:
        raise ConfigError(f"config key {key!r} expects a value like {default!r} "
                          f"({type(default).__name__}), got {value!r}")


# Keys whose value must be one of a few names, checked before any work (a run's closing stage
# would otherwise fail only after training).
CHOICES = {"evaluation.split": ("", "train", "val", "test"),
           "data.class_sampling": ("uniform", "exposure"),
           "data.position_channels": ("", "xy", "xyz")}  # data.position.AXES


def check_config(config: ml_collections.ConfigDict, where: str) -> None:
    """``config`` must have exactly the schema's keys, each with the schema's type (and one of
    the allowed names where :data:`CHOICES` lists them)."""
    schema = dict(leaves(_schema()))
    have = dict(leaves(config))
    for key in have:
        if key not in schema:
            raise unknown_key_error(key, list(schema), where)
    missing = sorted(set(schema) - set(have))
    if missing:
        raise ConfigError(f"{where} lacks the config keys {missing} (see configs/default.py)")
    for key, value in have.items():
        _check_value(key, value, schema[key])
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"config key {key!r} must be one of {CHOICES[key]}, got {value!r}")


def config_file(name: str | Path) -> Path:
    """A config file path, or the name of one of the shipped configs (``demo``, ``default``)."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    if path.suffix == "" and path.name == str(name):
        import configs

        shipped = Path(configs.__file__).parent / f"{name}.py"
        if shipped.is_file():
            return shipped
    raise ConfigError(f"config file {name} does not exist")


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
    """Import a config file (or shipped config name), call its ``get_config()``, check it."""
    path = config_file(path)
    # Config files import their siblings as `configs.<name>`: the folder above must be on the path.
    root = str(path.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_petseg_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config()")
    config = module.get_config()
    check_config(config, str(path))
    return config


def override_pairs(args: Sequence[str]) -> list[tuple[str, str]]:
    """``(key, value text)`` of each ``--config.key=value`` (or ``--config.key value``) argument;
    any other argument is a :class:`ConfigError`. The values are parsed by :func:`load_config`."""
    pairs, args, i = [], list(args), 0
    while i < len(args):
        match = _OVERRIDE.match(args[i])
        if not match:
            raise ConfigError(f"unexpected argument {args[i]!r} (config overrides are "
                              "--config.key=value)")
        _, eq, text = args[i].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"{args[i]} needs a value")
            i += 1
            text = args[i]
        pairs.append((match.group(1), text))
        i += 1
    return pairs


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config file at ``path`` with ``--config.key=value`` arguments applied, locked.

    Overrides are parsed by ml_collections ``config_flags`` (literals: ``(32,32,32)``, ``1e-3``,
    ``False``; a bare word is a string); ``--config.key value`` works too, and one number fills
    a numeric tuple (``--config.data.patch_size=64``).
    """
    config = load_config_file(path)
    pairs = override_pairs(overrides)
    known = _paths(config)
    for key, _ in pairs:
        if key not in known:
            raise unknown_key_error(key, [k for k, _ in leaves(config)], "the command line")
    argv = ["petseg", *(f"--config.{key}={text}" for key, text in pairs)]
    values = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", config, flag_values=values, lock_config=True,
                                    sys_argv=argv)
    try:
        rest = values(argv)
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as err:
        raise ConfigError(f"config override: {err}") from None
    if len(rest) > 1:
        raise ConfigError(f"unexpected arguments {rest[1:]}")
    config = values.config
    _fill_numeric_tuples(config, [key for key, _ in pairs])
    check_config(config, "the command line")
    config.lock()
    return config


def _fill_numeric_tuples(config: ml_collections.ConfigDict, keys: Sequence[str]) -> None:
    """One number given for a key whose default holds several (``--config.data.patch_size=64``,
    ``--config.augment.p_mirror=0``) fills all of its places."""
    schema = dict(leaves(_schema()))
    for key in keys:
        default = schema.get(key)
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        value = node[leaf] if leaf in node else None
        if (isinstance(default, tuple) and len(default) > 1
                and all(isinstance(d, int | float) for d in default)
                and isinstance(value, tuple) and len(value) == 1):
            node[leaf] = value * len(default)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None
               ) -> tuple[argparse.Namespace, ml_collections.ConfigDict]:
    """A command's own arguments (``parser`` with a ``--config`` file argument) and its config:
    the file with the ``--config.key=value`` arguments applied (:func:`load_config`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = parser.parse_known_args(argv)
    try:
        config = load_config(args.config, rest)
    except ConfigError as err:
        parser.error(str(err))
    return args, config


def section(name: str, cfg: Mapping[str, Any] | ml_collections.ConfigDict | None = None
            ) -> dict[str, Any]:
    """The schema's section ``name`` (dotted, e.g. ``"data.normalization"``) with ``cfg``'s
    values over it; a key the schema does not know is a :class:`ConfigError` naming the
    nearest one."""
    node = _schema()
    for part in name.split("."):
        node = node[part]
    out = ml_collections.ConfigDict(node).to_dict()
    if cfg is None:
        return out
    given = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    for key, value in given.items():
        if key not in out:
            raise unknown_key_error(f"{name}.{key}", [f"{name}.{k}" for k in out], name)
        out[key] = value
    return out
