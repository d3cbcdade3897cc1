"""``python -m petseg_jax.bench infer``: seconds for a whole-body volume by sliding window.

Runs :func:`petseg_jax.inference.sliding_window.sliding_window_labels` (streamed slab by slab,
Gaussian importance) with the config's network (random weights), patch, ``evaluation.overlap`` and
``evaluation.batch_size`` (each batch split over the config's ``mesh.cpu_devices`` on the CPU:
``window_devices``) on a random volume of ``--shape`` (default: a 6 mm demo whole body,
96 x 48 x 160; paper scale at 2 mm is about 288 x 144 x 900). The first call (compile) is
timed apart; then ``--repeats`` calls. ``--vs-torch`` runs the same network in PyTorch with the
same weights through MONAI's sliding-window loop (:func:`torch_reference.sliding_window`),
alternating call by call, and reports ``ratio`` = PyTorch's seconds / ours (our speed / its)
and the fraction of voxels where both label maps agree. ``peak_rss_mb`` is the process's peak
resident memory over the whole run (input volume included; with ``--vs-torch`` PyTorch's too),
``peak_device_mb`` the device's peak where the backend reports it (not on the CPU).

    python -m petseg_jax.bench infer --config configs/demo.py --vs-torch
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import numpy as np

from petseg_jax.bench import common
from petseg_jax.bench.train import (add_common_args, import_torch_reference, load_average,
                                    load_bench_config, time_alternating)

DEMO_WHOLE_BODY = (96, 48, 160)  # a whole body at 6 mm (X, Y, Z)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m petseg_jax.bench infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--shape", nargs=3, type=int, default=list(DEMO_WHOLE_BODY),
                   metavar=("X", "Y", "Z"), help="volume shape in voxels")
    p.add_argument("--repeats", type=int, default=3, help="timed calls (after the compile)")
    p.add_argument("--overlap", type=float, help="window overlap (default: evaluation.overlap)")
    p.add_argument("--batch", type=int, help="windows per batch (default: evaluation.batch_size)")
    args, overrides = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.repeats < 1 or min(args.shape) < 1:
        p.error("--repeats and every --shape entry must be >= 1")
    if args.batch is not None and args.batch < 1:
        p.error("--batch must be >= 1")
    if args.overlap is not None and not 0 <= args.overlap < 1:
        p.error("--overlap must be in [0, 1)")
    return args, overrides


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    from petseg_jax.data import position
    from petseg_jax.data.schema import DEFAULT_SCHEMA
    from petseg_jax.inference.sliding_window import (Windows, pad_widths, sliding_window_labels,
                                                     window_devices, window_starts)
    from petseg_jax.models import build_model
    from petseg_jax.resources import peak_device_bytes, peak_rss_bytes
    from petseg_jax.training import mesh as mesh_lib
    from petseg_jax.training.step import ModelDef

    config = load_bench_config(args.config, overrides)
    mesh_lib.configure_cpu_devices(config.mesh.cpu_devices)  # before JAX starts
    overlap = config.evaluation.overlap if args.overlap is None else args.overlap
    batch = config.evaluation.batch_size if args.batch is None else args.batch
    patch = tuple(config.data.patch_size)
    torch_ref = import_torch_reference() if args.vs_torch else None
    load_start = load_average()

    k = DEFAULT_SCHEMA.num_classes
    channels = position.input_channels(config.data)
    model_def = ModelDef.build(partial(build_model, config.model, channels, k))
    params = model_def.init_params(args.seed)
    predict = jax.jit(model_def.apply_eval)
    spacing = tuple(config.data.spacing) or (2.0, 2.0, 2.0)
    pet = np.random.default_rng(args.seed).standard_normal(args.shape, np.float32)[..., None]
    axes = position.position_axes(config.data)
    padded = [s + lo + hi for s, (lo, hi) in zip(args.shape, pad_widths(args.shape, patch))]
    n_windows = len(window_starts(padded, patch, (overlap,) * 3))
    out: dict[str, np.ndarray] = {}

    def run_jax():
        out["jax"] = sliding_window_labels(
            pet, predict, Windows(patch, overlap, batch_size=batch), params=params,
            position_spacing=spacing if axes else None, position_axes=axes)

    t0 = time.perf_counter()
    run_jax()
    first_s = time.perf_counter() - t0
    fns = {"jax": run_jax}
    if torch_ref is not None:
        net = torch_ref.load_jax_params(torch_ref.TorchUNet(config.model, channels, k),
                                        jax.device_get(params))
        volume = position.network_input(pet, spacing, axes)

        def run_torch():
            out["torch"] = torch_ref.sliding_window(volume, net, patch, overlap, batch)

        fns["torch"] = run_torch
    times = time_alternating(fns, 0, args.repeats, "sliding window")

    seconds = statistics.median(times["jax"])
    result: dict[str, Any] = {
        "bench": "infer", "config": args.config, "overrides": overrides,
        "platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
        "shape": args.shape, "patch": list(patch), "overlap": overlap, "batch": batch,
        "windows": n_windows, "window_devices": len(window_devices(batch)),
        "dtype": config.model.dtype, "repeats": args.repeats,
        "first_call_s": round(first_s, 2), "seconds": round(seconds, 3),
        "seconds_min": round(min(times["jax"]), 3),
        "voxels_per_s": round(float(np.prod(args.shape)) / seconds),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
        "peak_device_mb": None if (d := peak_device_bytes()) is None else round(d / 2**20, 1),
        "load_average_start": load_start, "load_average_end": load_average(), **common.machine(),
    }
    if torch_ref is not None:
        import torch

        torch_s = statistics.median(times["torch"])
        result.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                      torch_seconds=round(torch_s, 3), ratio=round(torch_s / seconds, 3),
                      torch_seconds_min=round(min(times["torch"]), 3),
                      ratio_min=round(min(times["torch"]) / min(times["jax"]), 3),
                      labels_agree=round(float(np.mean(out["jax"] == out["torch"])), 5))
    keys = ["platform", "device_kind", "shape", "patch", "overlap", "batch", "windows",
            "window_devices", "dtype",
            "first_call_s", "seconds", "seconds_min", "voxels_per_s", "peak_rss_mb",
            "peak_device_mb", "torch_seconds",
            "torch_seconds_min", "ratio", "ratio_min", "labels_agree",
            "load_average_start", "load_average_end"]
    common.report("sliding-window inference benchmark",
                  [(k, result[k]) for k in keys if k in result], result)
    return 0
