"""Export to StableHLO and serving: parity, artifact round trip, version refusal, and serving
in a process where flax, optax, orbax and grain cannot be imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import nibabel as nib
import numpy as np
import pytest
from jax import export as jax_export

from petseg_jax import export as export_cmd
from petseg_jax.inference.nifti_pipeline import load_input
from petseg_jax.inference.spec import FORMAT_VERSION
from petseg_jax.training.restore import load_trained
from petseg_jax.inference.serving import ARTIFACT_FILES, ArtifactError, ServedModel, read_meta
from tiny_run import tiny_export, tiny_workdir, write_pet

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    return tiny_workdir(root), tiny_export(root)


def test_exported_logits_match_in_process(run):
    workdir, export_dir = run
    trained = load_trained(workdir)
    exported = ServedModel(export_dir).exported
    apply = jax.jit(trained.apply)
    rng = np.random.default_rng(0)
    for shape in [(2, 16, 16, 16, 1), (1, 8, 24, 12, 1)]:  # symbolic batch and spatial sizes
        x = rng.normal(size=shape).astype(np.float32)
        expected = np.asarray(apply(trained.params, x))
        got = np.asarray(exported.call(x))
        assert got.shape == expected.shape == shape[:-1] + (trained.schema.num_classes,)
        assert got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-5, shape
        assert expected.std() > 1e-4  # not a degenerate constant output


def test_artifact_round_trip(run, tmp_path):
    workdir, export_dir = run
    assert sorted(p.name for p in export_dir.iterdir()) == sorted(ARTIFACT_FILES)
    meta = read_meta(export_dir)
    trained = load_trained(workdir)
    for key in ("schema", "patch_size", "spacing", "total_stride", "normalization", "overlap"):
        assert meta[key] == trained.spec[key], key
    assert meta["training"]["step"] == 1 and meta["format_version"] == FORMAT_VERSION
    assert meta["export"]["platforms"] == ["cpu", "cuda"]
    exported = jax_export.deserialize(bytearray((export_dir / "model.jaxexport").read_bytes()))
    assert exported.platforms == ("cpu", "cuda")
    assert str(exported.in_avals[0].shape) == "(b, 4*x, 4*y, 4*z, 1)"
    again = jax_export.deserialize(exported.serialize())
    assert again.mlir_module() == exported.mlir_module()
    mlir = (export_dir / "model.mlir").read_text()
    assert "module @" in mlir and "stablehlo.convolution" in mlir

    # The CLI writes a bfloat16 artifact, replacing an existing one without leftovers.
    out = tmp_path / "cli_export"
    for _ in range(2):
        assert export_cmd.main(["--workdir", str(workdir), "--out", str(out),
                                "--platforms", "cpu", "--dtype", "bfloat16"]) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli_export"]
    info = read_meta(out)["export"]
    assert (info["dtype"], info["platforms"]) == ("bfloat16", ["cpu"])
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 16, 1)).astype(np.float32)
    full, half = exported.call(x), ServedModel(out).exported.call(x)
    assert half.dtype == np.float32
    assert 0 < np.abs(half - full).max() <= 0.1 * np.abs(full).max()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_newer_format_and_missing_files_are_refused(run, tmp_path):
    _, export_dir = run
    newer = _copy(export_dir, tmp_path / "newer")
    meta = json.loads((newer / "meta.json").read_text())
    (newer / "meta.json").write_text(json.dumps(meta | {"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ArtifactError, match="newer than this petseg_jax reads"):
        ServedModel(newer)
    for name in ARTIFACT_FILES:
        broken = _copy(export_dir, tmp_path / f"without_{name}")
        (broken / name).unlink()
        with pytest.raises(ArtifactError, match=f"missing \\['{name}'\\]"):
            ServedModel(broken)
    with pytest.raises(ArtifactError, match="does not exist"):
        ServedModel(tmp_path / "nowhere")


def test_serving_without_training_packages(run, tmp_path):
    _, export_dir = run
    pet = write_pet(tmp_path / "pet.nii.gz")
    out = tmp_path / "labels.nii.gz"
    script = textwrap.dedent(f"""
        import sys
        for name in ("flax", "optax", "orbax", "grain"):
            sys.modules[name] = None  # any import of them now raises ImportError
        from petseg_jax import predict
        predict.main(["--model", {str(export_dir)!r}, "-i", {str(pet)!r}, "-o", {str(out)!r}])
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in
                        ("flax", "optax", "orbax", "grain") and sys.modules[m] is not None)
        assert not leaked, leaked
    """)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = ServedModel(export_dir).predict_image(load_input(pet))
    assert np.array_equal(np.asarray(nib.load(out).dataobj), expected)
