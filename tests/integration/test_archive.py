"""Model archives: pack with a card and a SHA-256 sidecar, install by name, refuse tampered or
escaping archives, ``predict --model NAME`` and the card's warnings."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from petseg_jax import predict
from petseg_jax.inference import installed
from petseg_jax.models.__main__ import main as models_cli
from petseg_jax.training import archive


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The tiny export packed (its workdir given an evaluation summary first)."""
    from tiny_run import tiny_export, tiny_workdir

    root = tmp_path_factory.getbasetemp()
    workdir, export_dir = tiny_workdir(root), tiny_export(root)
    (workdir / "eval").mkdir(exist_ok=True)
    (workdir / "eval" / "summary.json").write_text(json.dumps(
        {"mean_dice": 0.5, "by_organ": {"liver": 0.5}, "n_cases": 1}))
    out = tmp_path_factory.mktemp("archives") / "tiny.zip"
    return archive.pack(export_dir, out), workdir


def test_pack_writes_card_and_sidecar(packed):
    (out, digest), _ = packed
    assert (out.parent / "tiny.zip.sha256").read_text() == f"{digest}  tiny.zip\n"
    assert archive.sha256_of(out) == digest
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["card.json", "meta.json", "model.jaxexport",
                                         "model.mlir"]
        card = json.loads(zf.read("card.json"))
    assert card["evaluation"]["mean_dice"] == 0.5 and card["spacing_mm"] == [6.0] * 3
    assert set(card["training_data"]) >= {"tracers", "dose_reduction_factors",
                                          "attenuation_corrected"}
    assert card["software"]["petseg_jax"] and card["labels"]["labels"]


def test_install_then_predict_by_name_with_card_warnings(packed, tmp_path, monkeypatch, capsys):
    from tiny_run import write_pet

    (out, _), _ = packed
    monkeypatch.setenv(installed.MODELS_ENV, str(tmp_path / "models"))
    folder = archive.install(out)
    assert folder == tmp_path / "models" / "tiny" and installed.find_installed("tiny") == folder
    with pytest.raises(archive.ArchiveError, match="installed already"):
        archive.install(out)
    pet = write_pet(tmp_path / "pet.nii.gz")  # 6 x 5 x 7 mm voxels; the model has 6 mm
    predict.main(["--model", "tiny", "-i", str(pet), "-o", str(tmp_path / "labels.nii.gz"),
                  "--tracer", "PSMA"])
    err = capsys.readouterr().err
    assert "tracer 'PSMA' is not one the model was trained on" in err
    assert (tmp_path / "labels.nii.gz").is_file()
    with pytest.raises(SystemExit, match="no model of that name is installed"):
        predict.main(["--model", "nope", "-i", str(pet), "-o", str(tmp_path / "x.nii.gz")])


def test_tampered_or_escaping_archives_are_refused(packed, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(installed.MODELS_ENV, str(tmp_path / "models"))
    (out, digest), _ = packed
    tampered = tmp_path / "tiny.zip"
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    shutil.copy(out.parent / "tiny.zip.sha256", tmp_path / "tiny.zip.sha256")
    with pytest.raises(archive.ArchiveError, match="does not match"):
        archive.install(tampered, root=tmp_path / "models")
    assert models_cli(["install", str(tampered)]) == 1  # the command line says so and fails
    assert "does not match" in capsys.readouterr().err
    with pytest.raises(archive.ArchiveError, match="does not match"):
        archive.install(out, sha256="0" * 64, root=tmp_path / "models")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("card.json", "{}")
        zf.writestr("../outside.txt", "x")
    with pytest.raises(archive.ArchiveError, match="would leave the install folder"):
        archive.install(evil, sha256=archive.sha256_of(evil), root=tmp_path / "models")
    assert not (tmp_path / "outside.txt").exists()
    with pytest.raises(archive.ArchiveError, match="no digest"):
        archive.install(evil, root=tmp_path / "models")
    assert not list((tmp_path / "models").iterdir())  # nothing half-installed


def test_pack_of_a_workdir_and_of_an_unevaluated_model(packed, tmp_path):
    _, workdir = packed
    out, _ = archive.pack(workdir, tmp_path / "wd.zip")
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    assert "model.json" in names and any(n.startswith("checkpoints/1/") for n in names)
    bare = tmp_path / "bare"
    shutil.copytree(workdir, bare)
    shutil.rmtree(bare / "eval")
    with pytest.raises(archive.ArchiveError, match="evaluate the model before packing"):
        archive.pack(bare, tmp_path / "bare.zip")
