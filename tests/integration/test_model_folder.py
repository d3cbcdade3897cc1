"""The model folder is self-contained: ``predict`` with its default flags gives exactly the labels
behind ``evaluate``'s ``cases.csv``, from the workdir and from the export, run from another
folder with the training store moved away."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest
from store_fixtures import make_tiny_store
from train_helpers import tiny_train_args

from petseg_jax import metrics, predict, train
from petseg_jax.data import store as store_lib
from petseg_jax.inference.spec import MODEL_FILE, SpecError, read_model_file, spec_schema

CASE = "case_002"  # the tiny store's validation case (it has an SUV factor)


def test_predict_defaults_equal_the_evaluation(tmp_path, monkeypatch):
    store = make_tiny_store(tmp_path / "store")
    workdir = tmp_path / "run"
    train.main(tiny_train_args(store, workdir, 2, "--config.evaluation.split=val",
                               "--config.evaluation.mip_cases=0", "--config.export.enabled=True",
                               "--config.export.platforms=('cpu',)"))
    record = read_model_file(workdir)
    assert record["splits"]["val"] == [CASE] and record["largest_component"] is True
    # The raw case on the training grid (RAS, the store's spacing), as a scanner would give it.
    entry = store_lib.read_manifest(store)["cases"][CASE]
    pet = tmp_path / "in" / f"{CASE}.nii.gz"
    pet.parent.mkdir()
    nib.save(nib.Nifti1Image(store_lib.read_array(store_lib.image_path(store, CASE)),
                             np.asarray(entry["affine"])), pet)
    reference = store_lib.read_array(store_lib.label_path(store, CASE))
    with (workdir / "eval" / "cases.csv").open() as f:
        evaluated = {r["organ"]: float(r["dice"] or "nan") for r in csv.DictReader(f)
                     if r["case_id"] == CASE}
    store.rename(tmp_path / "store_moved")  # inference never reads the training store
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    schema = spec_schema(record)
    assert sorted(evaluated) == sorted(schema.names)
    for model in (workdir, workdir / "export"):
        out = elsewhere / f"{model.name}.nii.gz"
        predict.main(["--model", str(model), "-i", str(pet), "-o", str(out),
                      "--suv-factor", repr(entry["suv_factor"])])
        labels = np.asarray(nib.load(out).dataobj)
        assert labels.shape == reference.shape
        for organ, want in evaluated.items():
            got = metrics.dice(labels, reference, schema.id_of(organ))
            assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-6, \
                (model.name, organ, got, want)


def test_a_model_folder_without_its_record_is_refused(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(SpecError, match=f"{MODEL_FILE} does not exist"):
        read_model_file(tmp_path)
