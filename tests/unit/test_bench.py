"""Train / infer benchmarks: arguments, MFU arithmetic, peaks; PyTorch twin == JAX network."""

import json
import sys
from functools import partial
from pathlib import Path

import jax
import numpy as np
import pytest

import petseg_jax.bench
from requires import import_or_skip

from petseg_jax.bench import infer, learning, physics, train
from petseg_jax.models import build_model
from petseg_jax.training.loss import segmentation_loss
from petseg_jax.training.step import ModelDef

DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "demo.py")


def test_train_args_and_overrides():
    args, overrides = train.parse_args(["--config", DEMO, "--steps", "3", "--gpu", "h100",
                                        "--config.data.batch_size=4", "--vs-torch"])
    assert (args.steps, args.warmup, args.gpu, args.vs_torch) == (3, 2, "h100", True)
    assert overrides == ["--config.data.batch_size=4"]
    for bad in (["--steps", "0"], ["--peak-tflops", "-1"], ["--gpu", "v100"],
                ["--gpu", "a100", "--peak-tflops", "10"]):
        with pytest.raises(SystemExit):
            train.parse_args(["--config", DEMO, *bad])


def test_infer_args():
    args, _ = infer.parse_args(["--config", DEMO])
    assert args.shape == list(infer.DEMO_WHOLE_BODY) and args.overlap is None
    args, _ = infer.parse_args(["--config", DEMO, "--shape", "288", "144", "900",
                                "--overlap", "0.25", "--batch", "4"])
    assert (args.shape, args.overlap, args.batch) == ([288, 144, 900], 0.25, 4)
    for bad in (["--overlap", "1"], ["--shape", "0", "1", "1"], ["--batch", "0"]):
        with pytest.raises(SystemExit):
            infer.parse_args(["--config", DEMO, *bad])


def test_mfu_and_peaks():
    # 2e12 FLOPs per step at 3 steps/s = 6 TFLOP/s achieved, out of 12 -> 0.5.
    assert train.mfu(2e12, 3.0, 12.0) == pytest.approx(0.5)
    assert train.known_peak("h100") == train.known_peak("H200") == 989.0
    assert train.known_peak("a100") == 312.0
    assert train.known_peak("auto", "NVIDIA H100 80GB HBM3") == 989.0
    assert train.known_peak("auto", "NVIDIA A100-SXM4-80GB") == 312.0
    with pytest.raises(ValueError, match="no known peak"):
        train.known_peak("auto", "cpu")
    with pytest.raises(ValueError, match="positive"):
        train.mfu(1.0, 1.0, 0.0)


def test_bench_config_turns_augmentation_off():
    config = train.load_bench_config(DEMO, ["--config.data.batch_size=4"], augment=False)
    assert config.data.batch_size == 4
    probs = {k: v for k, v in config.augment.items() if k.startswith("p_")}
    assert probs and all(np.all(np.asarray(v) == 0) for v in probs.values())
    assert train.load_bench_config(DEMO, [], augment=True).augment.p_gamma > 0


def test_torch_twin_matches_jax_network_and_loss():
    torch = import_or_skip("torch")
    from petseg_jax.bench import torch_reference

    cfg = {"n_stages": 3, "base_features": 4, "max_features": 8, "decoder_blocks": 1,
           "dtype": "float32"}
    k = 3
    model_def = ModelDef.build(partial(build_model, cfg, 1, k))
    params = model_def.init_params(0)
    net = torch_reference.load_jax_params(torch_reference.TorchUNet(cfg, 1, k),
                                          jax.device_get(params))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 16, 1), np.float32)
    label = rng.integers(0, k, (2, 8, 8, 16))
    tx = torch.from_numpy(x).permute(0, 4, 1, 2, 3)
    jax_outs = jax.jit(model_def.apply_train)(params, x)
    with torch.no_grad():
        torch_outs = net.train()(tx)
        assert len(torch_outs) == len(jax_outs) == 2
        for j, t in zip(jax_outs, torch_outs):
            np.testing.assert_allclose(t.permute(0, 2, 3, 4, 1).numpy(), j, atol=2e-4, rtol=1e-4)
        t_eval = net.eval()(tx).permute(0, 2, 3, 4, 1).numpy()
        j_eval = jax.jit(model_def.apply_eval)(params, x)
        np.testing.assert_allclose(t_eval, j_eval, atol=2e-4, rtol=1e-4)
    # class 2 absent from sample 1 and class 1 from the whole batch: present-only Dice differs
    sparse = np.where(label == 1, 0, label)
    sparse[1][sparse[1] == 2] = 0
    for labels, loss_cfg in [(label, {"batch_dice": True}),
                             (sparse, {"batch_dice": True, "dice_present_only": True}),
                             (sparse, {"batch_dice": False, "dice_present_only": True})]:
        with torch.no_grad():
            t_loss = torch_reference.segmentation_loss(list(torch_outs), torch.from_numpy(labels),
                                                       loss_cfg)
        assert float(t_loss) == pytest.approx(float(segmentation_loss(jax_outs, labels, loss_cfg)),
                                              rel=1e-4)


def test_vs_torch_without_torch_prints_and_skips(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    monkeypatch.delitem(sys.modules, "petseg_jax.bench.torch_reference", raising=False)
    monkeypatch.delattr(petseg_jax.bench, "torch_reference", raising=False)
    assert train.import_torch_reference() is None
    assert train.TORCH_MISSING in capsys.readouterr().out


def test_learning_case_selection():
    meta = {"a": ("FDG", 1), "b": ("FDG", 10), "c": ("PSMA", 1), "d": ("FDG", 1)}
    cases = {k: {"metadata": {"tracer": t, "dose_reduction_factor": f}} for k, (t, f) in meta.items()}
    splits = {"train": ["d"], "val": ["c"], "test": ["a", "b", "c"]}
    assert learning.select_cases("test-fdg", splits, cases) == ["a"]
    assert learning.select_cases("val", splits, cases) == ["c"]
    assert learning.select_cases("b, d", splits, cases) == ["b", "d"]
    for bad in ("x", "val"):
        with pytest.raises(SystemExit):
            learning.select_cases(bad, splits | {"val": []}, cases)
    args, config = learning.parse_args(["--config", DEMO, "--budget-s", "60",
                                        "--config.total_steps=10"])
    assert (args.budget_s, args.eval_every, args.cases) == (60.0, 250, "test-fdg")
    assert config.total_steps == 10
    with pytest.raises(SystemExit):
        learning.parse_args(["--config", DEMO, "--eval-every", "0"])


def test_fov_cut_range_and_organs_wholly_inside():
    from petseg_jax.bench.fov import cut_range, wholly_inside

    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    affine[2, 3] = -10.0  # slice k at z = -10 + 6 k
    assert cut_range(affine, 50, 20.0, 80.0) == (5, 16)  # slices at z 20 .. 80
    assert cut_range(affine, 12, -100.0, 1000.0) == (0, 12)
    with pytest.raises(ValueError, match="outside the volume"):
        cut_range(affine, 10, 500.0, 600.0)
    ref = np.zeros((2, 2, 20), np.uint8)
    ref[0, 0, 6:9] = 1  # inside [5, 15)
    ref[1, 1, 3:7] = 2  # crosses the lower cut
    ref[0, 1, 14:15] = 3  # last slice inside
    assert wholly_inside(ref, 5, 15) == [1, 3]


def test_physics_bench_runs_and_reports(capsys):
    assert physics.main(["--spacing", "12", "--fov-mm", "240", "--width-mm", "200",
                         "--depth-mm", "150", "--length-mm", "120", "--factors", "10"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["grid"] == [20, 20, 10] and len(result["recon_s"]) == 3
