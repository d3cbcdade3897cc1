"""Train / validation / test splits: from the metadata's ``split`` column or a protocol rule.

Protocols (``config.data.split.protocol``):
- ``metadata``: the ``split`` column (cases without one go to train);
- ``random``: seeded, stratified by tracer, ``val_fraction`` / ``test_fraction``;
- ``leave_one_center_out``: ``test_center`` is the test set; validation drawn from the rest;
- ``cross_tracer``: train and validate on ``train_tracers`` (the paper: FDG), test on the others.

The draws (``random``'s test and validation cases, the protocols' validation cases) use
``split.seed``, not the run's seed: runs with different ``config.seed`` (a study's seeds) train
and test on the same cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


class SplitError(ValueError):
    """A split rule that cannot be applied to this dataset."""


def _draw(ids: list[str], fraction: float, rng: np.random.Generator) -> set[str]:
    n = int(round(len(ids) * fraction))
    if fraction > 0 and len(ids) > 1:
        n = max(n, 1)
    return set(rng.permutation(sorted(ids))[:n].tolist())


def _by_tracer(cases: Mapping[str, Mapping[str, Any]], ids) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for cid in sorted(ids):
        groups.setdefault(cases[cid]["metadata"]["tracer"], []).append(cid)
    return groups


def make_splits(cases: Mapping[str, Mapping[str, Any]], split_cfg: Mapping[str, Any]
                ) -> dict[str, list[str]]:
    """Map ``train``/``val``/``test`` to sorted case ids. ``cases`` = the manifest's cases,
    ``split_cfg`` = ``config.data.split`` (``protocol``, ``seed``, fractions, ...)."""
    protocol = split_cfg["protocol"]
    if "seed" not in split_cfg:
        raise SplitError("the split config has no 'seed' (data.split.seed, the seed of the "
                         "validation and random draws; a config from before it existed)")
    rng = np.random.default_rng(split_cfg["seed"])
    assign: dict[str, str] = {}
    if protocol == "metadata":
        for cid, case in cases.items():
            split = case["metadata"].get("split") or "train"
            if split not in SPLITS:
                raise SplitError(f"case {cid}: split {split!r} is not one of {SPLITS}")
            assign[cid] = split
    elif protocol == "random":
        for ids in _by_tracer(cases, cases).values():
            test = _draw(ids, split_cfg["test_fraction"], rng)
            rest = [c for c in ids if c not in test]
            val = _draw(rest, split_cfg["val_fraction"], rng)
            assign.update({c: "test" if c in test else "val" if c in val else "train"
                           for c in ids})
    elif protocol in ("leave_one_center_out", "cross_tracer"):
        if protocol == "leave_one_center_out":
            held = split_cfg["test_center"]
            centers = sorted({c["metadata"]["center"] for c in cases.values()})
            if held not in centers:
                raise SplitError(f"test_center {held!r} is not among the centers {centers}")
            is_test = {cid: c["metadata"]["center"] == held for cid, c in cases.items()}
        else:
            train_tracers = set(split_cfg["train_tracers"])
            is_test = {cid: c["metadata"]["tracer"] not in train_tracers
                       for cid, c in cases.items()}
        rest = [cid for cid, t in is_test.items() if not t]
        val = set()
        for ids in _by_tracer(cases, rest).values():
            val |= _draw(ids, split_cfg["val_fraction"], rng)
        assign = {cid: "test" if is_test[cid] else "val" if cid in val else "train"
                  for cid in cases}
    else:
        raise SplitError(f"unknown split protocol {protocol!r}")
    splits = {s: sorted(c for c, a in assign.items() if a == s) for s in SPLITS}
    if not splits["train"]:
        raise SplitError(f"split protocol {protocol!r} leaves no training cases")
    return splits
