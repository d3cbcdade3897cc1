"""Command lines for tiny training runs (the demo config shrunk to seconds) used by tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_train_args(store: Path, workdir: Path, total_steps: int, *extra: str) -> list[str]:
    """``petseg_jax.train`` arguments: the demo config, a 3-stage 4-feature U-Net, 16^3 patches,
    batch 4, no spatial augmentation, no validation, no closing stages (``extra`` overrides may add them back)."""
    return [
        "--config", str(REPO / "configs" / "demo.py"), "--workdir", str(workdir),
        f"--config.data.store={store}", "--config.data.raw_dir=",
        "--config.data.phantom.enabled=False", "--config.data.split.protocol=metadata",
        "--config.data.patch_size=(16,16,16)", "--config.data.batch_size=4",
        "--config.data.workers=0", "--config.data.val_cases=0",
        "--config.data.dose_augmentation.prob=0.5",
        "--config.model.n_stages=3", "--config.model.base_features=4",
        "--config.model.max_features=16", f"--config.total_steps={total_steps}",
        "--config.optim.warmup_steps=0", "--config.log_every=1", "--config.eval_every=1000",
        "--config.evaluation.split=", "--config.export.enabled=False",
        # The spatial resampling dominates the tiny step's compile time; unit tests cover it.
        "--config.augment.p_rotation=0.0", "--config.augment.p_scale=0.0", *extra,
    ]
