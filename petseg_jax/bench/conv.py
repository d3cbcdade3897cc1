"""Time conv3d implementations, and a U-Net training step, per implementation.

``python -m petseg_jax.bench.conv [--layers 2x64x8x8x1,...] [--unet] [--repeats 5]``
prints markdown tables (best of ``--repeats``; implementations alternate so that load from
other processes hits them alike). The U-Net table adds process CPU seconds, which other jobs
on a shared machine disturb less than wall time.
Layer spec ``NxSxCINxCOUTxSTRIDE``: batch N, S^3 input, 3^3 kernel, padding 1.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from petseg_jax.models.conv import conv3d
from petseg_jax.models.unet import build_model

DEFAULT_LAYERS = ("2x64x1x8x1,2x64x8x8x1,2x64x16x8x1,2x64x8x16x2,2x32x16x16x1,2x32x32x16x1,"
                  "2x32x16x32x2,2x16x32x32x1,2x16x64x32x1,2x16x32x64x2,2x8x64x64x1")


def best_of(fns: dict[str, Callable[[], object]], repeats: int
            ) -> dict[str, tuple[float, float]]:
    """(wall, process CPU) seconds per call, each the best of ``repeats`` rounds; the
    functions run alternately."""
    for f in fns.values():
        jax.block_until_ready(f())  # compile and warm up
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(f())
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def bench_layers(specs: Sequence[str], impls: Sequence[str], repeats: int) -> list[str]:
    """Markdown rows: forward and forward+backward milliseconds of each layer per impl."""
    rows = ["| layer | " + " | ".join(f"{i} fwd | {i} fwd+bwd" for i in impls) + " |",
            "|---" * (1 + 2 * len(impls)) + "|"]
    for spec in specs:
        n, s, cin, cout, stride = (int(v) for v in spec.split("x"))
        x = jax.random.normal(jax.random.key(0), (n, s, s, s, cin))
        w = jax.random.normal(jax.random.key(1), (3, 3, 3, cin, cout)) * 0.1
        fns = {}
        for impl in impls:
            def loss(x, w, impl=impl):
                return jnp.sum(conv3d(x, w, stride, [(1, 1)] * 3, impl) ** 2)

            fwd = jax.jit(lambda x, w, impl=impl: conv3d(x, w, stride, [(1, 1)] * 3, impl))
            grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
            fns[f"{impl} fwd"] = lambda f=fwd: f(x, w)
            fns[f"{impl} fwd+bwd"] = lambda f=grad: f(x, w)
        t = best_of(fns, repeats)
        rows.append(f"| {n}x{s}^3 {cin}->{cout} s{stride} | "
                    + " | ".join(f"{t[k][0] * 1e3:.0f}" for k in fns) + " |")
    return rows


def bench_unet(model_cfg: dict, patch: Sequence[int], batch: int, classes: int,
               impls: Sequence[str], repeats: int) -> list[str]:
    """Markdown rows: seconds of a jitted forward+backward step (sum-of-squares loss)."""
    x = jax.random.normal(jax.random.key(0), (batch, *patch, 1))
    fns = {}
    for impl in impls:
        model = build_model({**model_cfg, "conv_impl": impl}, 1, classes, nnx.Rngs(0))
        graphdef, params = nnx.split(model)

        def loss(p, x, graphdef=graphdef):
            out = nnx.merge(graphdef, p)(x)
            return sum(jnp.mean(o ** 2) for o in (out if isinstance(out, list) else [out]))

        step = jax.jit(jax.value_and_grad(loss))
        fns[impl] = lambda step=step, params=params: step(params, x)
    t = best_of(fns, repeats)
    return ["| impl | wall s | CPU s |", "|---|---|---|",
            *(f"| {k} | {wall:.2f} | {cpu:.2f} |" for k, (wall, cpu) in t.items())]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default=DEFAULT_LAYERS, help="comma-separated layer specs, "
                    "'' for none")
    ap.add_argument("--impls", default="xla,fold")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--unet", action="store_true", help="also time a U-Net training step")
    ap.add_argument("--patch", type=int, nargs=3, default=(64, 64, 64))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--base-features", type=int, default=8)
    ap.add_argument("--n-stages", type=int, default=4)
    ap.add_argument("--max-features", type=int, default=320)
    ap.add_argument("--classes", type=int, default=24)
    args = ap.parse_args(argv)
    impls = args.impls.split(",")
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{jax.devices()[0].device_kind}")
    if args.layers:
        print("\n".join(bench_layers(args.layers.split(","), impls, args.repeats)))
    if args.unet:
        cfg = {"n_stages": args.n_stages, "base_features": args.base_features,
               "max_features": args.max_features, "dtype": "float32"}
        print(f"U-Net {cfg}, batch {args.batch}, patch {args.patch}, {args.classes} classes")
        print("\n".join(bench_unet(cfg, args.patch, args.batch, args.classes, impls,
                                   args.repeats)))


if __name__ == "__main__":
    main()
