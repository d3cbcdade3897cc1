"""The phantom CLI writes a raw dataset that RawDataset reads back; it guards foreign folders."""

import nibabel as nib
import numpy as np

from petseg_jax.phantom import generate as phantom
from petseg_jax.data.raw_dataset import RawDataset


def test_cli_writes_valid_raw_dataset(tmp_path, capsys):
    out = tmp_path / "raw"
    argv = ["--out", str(out), "--cases", "4", "--seed", "2", "--spacing", "10",
            "--tracers", "FDG:3", "PSMA:1", "--dose-reduction-factors", "1", "10",
            "--fields-of-view", "conventional"]
    assert phantom.main(argv) == 0
    raw = RawDataset(out)
    assert raw.case_ids() == [f"phantom_{i:04d}" for i in range(4)]
    metas = [raw.metadata(c) for c in raw.case_ids()]
    assert {m.tracer for m in metas} == {"FDG", "PSMA"}
    assert any(m.tracer == "FDG" and m.split == "test" and m.dose_reduction_factor == 1
               and m.attenuation_corrected for m in metas)
    assert all(m.suv_factor() is not None for m in metas)
    assert {m.field_of_view for m in metas} == {"conventional"}
    for case in raw.case_ids():
        image, label = nib.load(raw.image_path(case)), nib.load(raw.label_path(case))
        assert image.shape == label.shape and np.allclose(image.affine, label.affine)
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        assert np.allclose(np.abs(np.diag(image.affine)[:3]), 10.0)
        assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
        values = np.unique(np.asarray(label.dataobj))
        assert values.max() < raw.schema.num_classes and len(values) > 15
    assert not list(out.rglob(".*.tmp*"))
    # rerun into the same phantom folder with fewer cases: stale files are gone
    assert phantom.main(["--out", str(out), "--cases", "1", "--seed", "2", "--spacing", "8",
                         "--fields-of-view", "conventional"]) == 0
    assert RawDataset(out).case_ids() == ["phantom_0000"]
    assert len(list((out / "imagesTr").iterdir())) == 1


def test_cli_refuses_foreign_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    argv = ["--out", str(out), "--cases", "1", "--spacing", "10", "--fields-of-view", "conventional"]
    assert phantom.main(argv) == 1
    assert "not a phantom dataset" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert phantom.main(argv + ["--overwrite"]) == 0
    assert RawDataset(out).case_ids() == ["phantom_0000"]
    assert (out / "notes.txt").read_text() == "keep me"
