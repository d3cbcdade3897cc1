"""``python -m petseg_jax.bench train``: train-step throughput, FLOPs and MFU; ``--vs-torch``.

Compiles the config's real train step (``training.builder.build_training``: model, loss,
optimizer; augmentation off unless ``--augment``, so that both sides of ``--vs-torch`` do the
same work) and times ``--steps`` steps on random batches of the config's shape after
``--warmup`` ones (no data loading). Reports steps/s and voxels/s (from the median step),
FLOPs per step from XLA's cost analysis of the compiled (per-device) program, achieved FLOP/s
and MFU = achieved / peak per device, the peak from ``--peak-tflops`` or ``--gpu`` (bf16 dense,
``PEAK_TFLOPS``; ``--gpu auto`` reads the device kind). ``--vs-torch`` builds the same network
in PyTorch (:mod:`petseg_jax.bench.torch_reference`) with the same weights and batch, times
both in one run, alternating step by step, and reports ``ratio`` = our steps/s / PyTorch's
(medians; ``ratio_min`` from each side's best step, less sensitive to a shared machine's load).
The PyTorch side runs in float32 whatever ``model.dtype`` says (it is a CPU reference).
``--batch-per-device auto`` sizes the batch by dry runs (:func:`fit_batch_per_device`).

    python -m petseg_jax.bench train --config configs/demo.py --steps 10 --vs-torch
    python -m petseg_jax.bench train --config configs/default.py --gpu auto --batch-per-device auto
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from petseg_jax.bench import common
from petseg_jax.configuration import load_config

# Dense bf16 tensor-core peak per device, TFLOP/s (NVIDIA data sheets: SXM parts).
PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0, "a100": 312.0}
TORCH_MISSING = "PyTorch is not installed: skipping the --vs-torch part (pip install torch)"


def known_peak(gpu: str, device_kind: str = "") -> float:
    """Peak TFLOP/s of ``gpu`` (a ``PEAK_TFLOPS`` key, or ``"auto"``: from ``device_kind``)."""
    name = gpu.lower()
    if name == "auto":
        matches = [k for k in PEAK_TFLOPS if k in device_kind.lower()]
        if not matches:
            raise ValueError(f"--gpu auto: no known peak for device {device_kind!r}; known: "
                             f"{sorted(PEAK_TFLOPS)}; pass --peak-tflops")
        name = matches[0]
    if name not in PEAK_TFLOPS:
        raise ValueError(f"unknown --gpu {gpu!r}; known: {sorted(PEAK_TFLOPS)} or auto")
    return PEAK_TFLOPS[name]


def mfu(flops_per_step: float, steps_per_s: float, peak_tflops: float) -> float:
    """Model FLOP utilisation: achieved FLOP/s over the peak (both per device)."""
    if peak_tflops <= 0:
        raise ValueError(f"peak TFLOP/s must be positive, got {peak_tflops}")
    return flops_per_step * steps_per_s / (peak_tflops * 1e12)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by the train and infer benchmarks."""
    p.add_argument("--config", required=True, help="config file with get_config(); "
                   "--config.key=value overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vs-torch", action="store_true",
                   help="also time the same network in PyTorch, alternating; JSON 'ratio'")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m petseg_jax.bench train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (after compile)")
    peak = p.add_mutually_exclusive_group()
    peak.add_argument("--peak-tflops", type=float, help="peak TFLOP/s per device for MFU")
    peak.add_argument("--gpu", choices=[*PEAK_TFLOPS, "auto"],
                      help="take the peak from the known table (auto: from the device kind)")
    p.add_argument("--batch-per-device", default=None,
                   help="N: global batch = N x devices; auto: the largest of 2, 4, 8, ... whose "
                   "compiled step (the train dry run's memory report) fits --memory-fraction "
                   "of the device memory")
    p.add_argument("--memory-fraction", type=float, default=0.9)
    p.add_argument("--augment", action="store_true",
                   help="keep the config's augmentation in the step (PyTorch has none)")
    args, overrides = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        p.error("--peak-tflops must be positive")
    if not 0 < args.memory_fraction <= 1:
        p.error("--memory-fraction must be in (0, 1]")
    if args.batch_per_device not in (None, "auto") and not (
            args.batch_per_device.isdigit() and int(args.batch_per_device) > 0):
        p.error(f"--batch-per-device must be a positive int or auto, got {args.batch_per_device!r}")
    return args, overrides


def import_torch_reference():
    """:mod:`petseg_jax.bench.torch_reference`, or ``None`` (message printed) without torch."""
    try:
        from petseg_jax.bench import torch_reference
    except ImportError as e:
        if e.name != "torch":
            raise
        print(TORCH_MISSING, flush=True)
        return None
    return torch_reference


def load_bench_config(path: str, overrides: Sequence[str], augment: bool = True):
    """The config with ``--config.key=value`` overrides; every augmentation probability 0
    unless ``augment``."""
    config = load_config(path, overrides)
    if not augment:
        for key, value in config.augment.items():
            if key.startswith("p_"):
                config.augment[key] = tuple(0.0 for _ in value) if key == "p_mirror" else 0.0
    return config


def time_alternating(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int,
                     desc: str) -> dict[str, list[float]]:
    """Call each of ``fns`` in turn ``warmup`` then ``repeats`` times; seconds of the timed ones."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in tqdm(range(warmup + repeats), desc=desc, unit="round"):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def fit_batch_per_device(config, build: Callable, budget_gib: float, max_batch: int = 64):
    """Dry runs: the largest batch per device (2, 4, 8, ...) whose compiled step needs at most
    ``budget_gib`` per device; returns ``(batch_per_device, training, compiled, memory_report)``."""
    from petseg_jax.training.builder import memory_report

    best, devices, b = None, jax.device_count(), 2
    while b <= max_batch:
        config.data.batch_size = b * devices
        training = build(config)
        compiled = training.compile()
        mem = memory_report(compiled, config)
        print(f"dry run: batch {b} per device needs {mem['peak_gib_per_device']:.2f} of "
              f"{budget_gib:.2f} GiB", flush=True)
        if mem["peak_gib_per_device"] > budget_gib:
            break
        best, b = (b, training, compiled, mem), 2 * b
    if best is None:
        raise ValueError(f"batch 2 per device does not fit {budget_gib:.2f} GiB per device")
    config.data.batch_size = best[0] * devices
    return best


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    from petseg_jax.data import position
    from petseg_jax.data.schema import DEFAULT_SCHEMA
    from petseg_jax.training import mesh as mesh_lib
    from petseg_jax.training.builder import build_training, memory_report

    config = load_bench_config(args.config, overrides, args.augment)
    mesh_lib.configure_cpu_devices(config.mesh.cpu_devices)
    device = jax.devices()[0]
    peak = args.peak_tflops or (known_peak(args.gpu, device.device_kind) if args.gpu else None)
    torch_ref = import_torch_reference() if args.vs_torch else None
    load_start = load_average()

    mesh = mesh_lib.make_mesh(config.mesh)
    t0 = time.perf_counter()
    if args.batch_per_device == "auto":
        limit = (device.memory_stats() or {}).get("bytes_limit")
        if not limit:
            raise ValueError(f"--batch-per-device auto: {device.platform} reports no memory limit")
        _, training, compiled, mem = fit_batch_per_device(
            config, lambda c: build_training(c, DEFAULT_SCHEMA, mesh),
            args.memory_fraction * limit / 2**30)
    else:
        if args.batch_per_device:
            config.data.batch_size = int(args.batch_per_device) * jax.device_count()
        training = build_training(config, DEFAULT_SCHEMA, mesh)
        compiled = training.compile()
        mem = memory_report(compiled, config)
    compile_s = time.perf_counter() - t0
    shape = (config.data.batch_size, *config.data.patch_size)
    rng = np.random.default_rng(args.seed)
    image = rng.standard_normal(shape + (1,), np.float32)
    label = rng.integers(0, DEFAULT_SCHEMA.num_classes, shape, np.uint8)
    batch = {"image": image, "label": label}
    if "position" in training.batch_spec:  # every patch at the centre of a 2 mm volume
        patch_box = (0, 0, 0), config.data.patch_size, (2.0, 2.0, 2.0)
        batch["position"] = np.stack([position.patch_position(*patch_box)] * shape[0])
        # the network input without augmentation: PET, then the patch's position channels
        channels = position.volume_position(*patch_box[1:], position.position_axes(config.data))
        image = np.concatenate([image, np.stack([channels] * shape[0])], axis=-1)
    batch = jax.device_put(batch, training.batch_sharding)
    state = {"s": training.init_state(args.seed)}

    def jax_step():
        state["s"], metrics = compiled(state["s"], batch)
        jax.block_until_ready((state["s"], metrics))

    fns = {"jax": jax_step}
    if torch_ref is not None:
        import torch

        net = torch_ref.TorchUNet(config.model, image.shape[-1], DEFAULT_SCHEMA.num_classes)
        torch_ref.load_jax_params(net, jax.device_get(state["s"]["params"]))
        t_image = torch.from_numpy(image).permute(0, 4, 1, 2, 3).contiguous()
        t_label = torch.from_numpy(label.astype(np.int64))
        torch_step = torch_ref.make_train_step(net, config)
        fns["torch"] = lambda: torch_step(t_image, t_label)
    times = time_alternating(fns, args.warmup, args.steps, "train steps")

    steps_per_s = 1.0 / statistics.median(times["jax"])
    flops = mem["flops_per_step"]
    result: dict[str, Any] = {
        "bench": "train", "config": args.config, "overrides": overrides,
        "platform": device.platform, "device_kind": device.device_kind,
        "devices": jax.device_count(), "patch": list(config.data.patch_size),
        "global_batch": config.data.batch_size, "dtype": config.model.dtype,
        "augment": args.augment, "steps": args.steps, "warmup": args.warmup,
        "compile_s": round(compile_s, 2),
        "peak_gib_per_device": round(mem["peak_gib_per_device"], 3),
        "step_s_median": round(1 / steps_per_s, 4), "step_s_min": round(min(times["jax"]), 4),
        "steps_per_s": round(steps_per_s, 4),
        "voxels_per_s": round(steps_per_s * float(np.prod(shape))),
        "flops_per_step": flops, "achieved_tflops": round(flops * steps_per_s / 1e12, 4),
        "peak_tflops": peak,
        "mfu": None if peak is None else round(mfu(flops, steps_per_s, peak), 4),
        "load_average_start": load_start, "load_average_end": load_average(), **common.machine(),
    }
    if torch_ref is not None:
        import torch

        torch_sps = 1.0 / statistics.median(times["torch"])
        result.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                      torch_step_s_median=round(1 / torch_sps, 4),
                      torch_step_s_min=round(min(times["torch"]), 4),
                      torch_steps_per_s=round(torch_sps, 4),
                      ratio=round(steps_per_s / torch_sps, 3),
                      ratio_min=round(min(times["torch"]) / min(times["jax"]), 3))
    keys = ["platform", "device_kind", "devices", "patch", "global_batch", "dtype", "augment",
            "compile_s", "peak_gib_per_device", "step_s_median", "steps_per_s", "voxels_per_s",
            "step_s_min", "flops_per_step", "achieved_tflops", "peak_tflops", "mfu",
            "torch_step_s_median", "torch_step_s_min", "torch_steps_per_s", "ratio", "ratio_min",
            "load_average_start", "load_average_end"]
    common.report("train step benchmark", [(k, result[k]) for k in keys if k in result], result)
    return 0
