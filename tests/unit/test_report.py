import csv
import json
import math

import matplotlib.image
import numpy as np
import pytest

from petseg_jax.evaluation import report

NAN, INF = float("nan"), float("inf")


def _row(case, organ, tracer, center, drf, ac, dice, hd95=1.0):
    return {"case_id": case, "organ": organ, "tracer": tracer, "center": center,
            "dose_reduction_factor": drf, "attenuation_corrected": ac, "dice": dice,
            "hd95_mm": hd95, "nsd": 0.9}


ROWS = [
    _row("a", "liver", "FDG", "X", 1.0, True, 0.8),
    _row("a", "kidney", "FDG", "X", 1.0, True, 0.6, hd95=3.0),
    _row("b", "liver", "FDG", "Y", 10.0, False, 0.9),
    _row("b", "kidney", "FDG", "Y", 10.0, False, NAN, hd95=NAN),  # absent from the reference
    _row("c", "liver", "PSMA", "X", 10.0, True, 0.5),
    _row("c", "kidney", "PSMA", "X", 10.0, True, 0.7, hd95=INF),
]
CASE_MEANS = {"a": 0.7, "b": 0.9, "c": 0.6}


def _sweep(factor, dices):
    return [_row(case, "liver", "FDG" if case != "c" else "PSMA", "X", 1.0, True, d)
            for case, d in zip("abc", dices)]


SWEEP = {1.0: _sweep(1.0, [0.9, 0.8, 0.7]), 10.0: _sweep(10.0, [0.6, 0.5, 0.2])}


def test_summary_numbers_from_hand_made_rows():
    s = report.summarize(ROWS)
    assert s["n_cases"] == 3 and s["n_rows"] == 6
    assert s["mean_dice"] == pytest.approx(np.mean(list(CASE_MEANS.values())))
    assert s["sd_dice"] == pytest.approx(np.std(list(CASE_MEANS.values()), ddof=1))
    assert s["by_tracer"] == pytest.approx({"FDG": 0.8, "PSMA": 0.6})
    assert s["by_center"] == pytest.approx({"X": 0.65, "Y": 0.9})
    assert s["by_dose_reduction_factor"] == pytest.approx({"1": 0.7, "10": 0.75})
    assert s["by_attenuation_correction"] == pytest.approx({"AC": 0.65, "NAC": 0.9})
    assert s["by_organ"] == pytest.approx({"liver": (0.8 + 0.9 + 0.5) / 3, "kidney": 0.65})
    assert s["by_organ_and_tracer"]["liver"] == pytest.approx({"FDG": 0.85, "PSMA": 0.5})
    assert s["by_organ_and_tracer"]["kidney"] == pytest.approx({"FDG": 0.6, "PSMA": 0.7})
    assert s["by_tracer_and_dose_reduction_factor"]["FDG"] == pytest.approx({"1": 0.7, "10": 0.9})
    assert s["by_tracer_and_dose_reduction_factor"]["PSMA"] == pytest.approx({"10": 0.6})
    assert s["details"]["by_tracer_and_dose_reduction_factor"]["FDG"]["1"]["n"] == 1
    psma = s["details"]["by_tracer"]["PSMA"]
    assert psma["n"] == 1 and math.isnan(psma["sd"])
    assert s["details"]["by_center"]["X"]["sd"] == pytest.approx(np.std([0.7, 0.6], ddof=1))
    hd = s["metrics_by_organ"]["kidney"]["hd95_mm"]
    assert hd["mean"] == 3.0 and hd["n"] == 1 and hd["n_inf"] == 1


def test_by_fov_and_truncated_organs_left_out(tmp_path):
    rows = [dict(r, field_of_view="total_body") for r in ROWS[:4]]
    rows += [dict(ROWS[4], field_of_view="conventional"),
             dict(ROWS[5], field_of_view="conventional", fov_truncated=True)]
    s = report.summarize(rows)
    assert s["n_fov_truncated"] == 1
    assert s["by_fov"] == pytest.approx({"conventional": 0.5, "total_body": 0.8})
    assert s["by_organ"]["kidney"] == pytest.approx(0.6)  # c's cut kidney left out
    assert "PSMA" not in s["by_organ_and_tracer"]["kidney"]
    assert "unknown" in report.summarize(ROWS)["by_fov"]  # no metadata column: one group
    report.write_report(tmp_path, rows)
    with (tmp_path / "cases.csv").open() as f:
        written = list(csv.DictReader(f))
    assert [r["fov_truncated"] for r in written] == [""] * 5 + ["True"]
    md = (tmp_path / "report.md").read_text()
    assert "## Per field of view" in md and "| conventional | 0.500 | 1 |" in md
    assert "cut by the field of view" in md


def test_organ_predicted_where_the_reference_has_none_is_reported():
    rows = [dict(ROWS[3], volume_ml_ref=0.0, volume_ml_pred=12.5),  # b's kidney: absent
            dict(ROWS[2], volume_ml_ref=900.0, volume_ml_pred=950.0)]
    s = report.summarize(rows)
    assert s["absent_predicted"] == {"n": 1, "ml": 12.5}
    assert s["mean_dice"] == pytest.approx(0.9)  # the absent organ's NaN Dice is left out
    assert "| 1 | 0.900 | 0 | 1 (12.5 ml) |" in report.render_markdown(
        "t", [], report._tables(s), [], report.Path("."))


def test_inconsistent_or_incomplete_rows_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="different metadata"):
        report.summarize(ROWS + [_row("a", "spleen", "PSMA", "X", 1.0, True, 0.5)])
    with pytest.raises(ValueError, match="case_id, organ and dice"):
        report.summarize([{"case_id": "a", "dice": 0.5}])
    with pytest.raises(ValueError, match="swept_dose_factor"):
        report.write_report(tmp_path / "eval", ROWS, dose_sweep_rows=ROWS)
    assert not (tmp_path / "eval").exists()  # nothing written for invalid input


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    eval_dir = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    pet = rng.random((20, 12, 40)).astype(np.float32)
    labels = np.zeros(pet.shape, np.uint8)
    labels[2:8, 3:9, 5:15] = 1
    labels[12:18, 3:9, 20:30] = 2
    mip = report.mip_figure(eval_dir / "mip_a.png", pet, labels, np.roll(labels, 1, axis=2),
                            (4.0, 4.0, 5.0), "case a", label_names={1: "liver", 2: "kidney"})
    summary = report.write_report(eval_dir, ROWS, dose_sweep_rows=SWEEP, mip_pngs=[mip], title="test")
    return eval_dir, summary


def test_every_file_is_written(written):
    eval_dir, summary = written
    for name in ("cases.csv", "summary.json", "report.md", "report.html", "dose_sweep.csv",
                 "figures/dice_heatmap.png", "figures/dice_vs_dose.png", "figures/dose_sweep.png"):
        assert (eval_dir / name).stat().st_size > 0, name
    for png in eval_dir.glob("**/*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(eval_dir.glob("**/.*.tmp*"))
    with (eval_dir / "cases.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ROWS) and rows[2]["case_id"] == "b" and float(rows[2]["dice"]) == 0.9
    with (eval_dir / "dose_sweep.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6


def test_summary_json_is_strict_and_has_the_sweep(written):
    eval_dir, summary = written

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    data = json.loads((eval_dir / "summary.json").read_text(), parse_constant=no_nan)
    for key in ("mean_dice", "by_organ", "by_tracer", "by_center", "by_dose_reduction_factor",
                "by_attenuation_correction", "n_cases", "details"):
        assert key in data
    assert data["details"]["by_tracer"]["PSMA"]["sd"] is None
    assert data["dose_sweep"]["by_dose_reduction_factor"] == pytest.approx({"1": 0.8, "10": 13 / 30})
    assert data["dose_sweep"]["by_tracer"]["FDG"] == pytest.approx({"1": 0.85, "10": 0.55})
    assert data["dose_sweep"]["by_tracer"]["PSMA"] == pytest.approx({"1": 0.7, "10": 0.2})
    flat = [r | {"swept_dose_factor": f} for f, rows in SWEEP.items() for r in rows]
    assert report.summarize_dose_sweep(flat) == summary["dose_sweep"]


def test_markdown_and_html_show_tables_and_figures(written):
    eval_dir, summary = written
    md = (eval_dir / "report.md").read_text()
    html = (eval_dir / "report.html").read_text()
    overall = f"{summary['mean_dice']:.3f} ± {summary['sd_dice']:.3f}"
    for text in (overall, "| PSMA | 0.600 | 1 |", "| FDG | 10 | 0.900 | 1 |",
                 "figures/dice_heatmap.png", "mip_a.png", "(1× inf)"):
        assert text in md, text
    assert overall in html and "<td>NAC</td>" in html
    assert html.count("src='data:image/png;base64,") == 4
    terminal = report.format_summary(summary)
    assert "over 3 cases" in terminal and "FDG x1 0.700" in terminal


def test_mip_is_coronal_head_up_subject_right_on_viewer_left(tmp_path):
    pet = np.zeros((30, 10, 60), np.float32)
    pet[20:, 4:6, 40:] = 10.0  # a hot block at the subject's right (+x in RAS) and head (+z)
    labels = np.zeros(pet.shape, np.uint8)
    png = report.mip_figure(tmp_path / "mip.png", pet, labels, labels, (2.0, 2.0, 2.0), "orientation")
    gray = matplotlib.image.imread(png)[..., :3].mean(axis=-1)
    first_panel = gray[:, : gray.shape[1] // 2]
    rows, cols = np.nonzero(first_panel < 0.2)  # hot is drawn black (inverted gray scale)
    ys, xs = np.nonzero(first_panel < 0.99)  # the panel's extent (frame, image)
    assert rows.mean() < ys.min() + (ys.max() - ys.min()) / 2  # upper half: head up
    assert cols.mean() < xs.min() + (xs.max() - xs.min()) / 2  # left half: subject's right
    with pytest.raises(ValueError, match="one shape"):
        report.mip_figure(tmp_path / "bad.png", pet, labels[:-1], labels, (2, 2, 2), "bad")


def test_case_rows_flag_organs_cut_by_the_field_of_view():
    from petseg_jax.data.schema import LabelSchema
    from petseg_jax.evaluation.evaluate import case_rows

    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    ref[3:6, 3:6, 5:8] = 2  # reaches the last slice along z
    case = {"spacing": [2.0, 2.0, 2.0], "suv_factor": None,
            "metadata": {"tracer": "FDG", "center": "X", "dose_reduction_factor": 1.0,
                         "attenuation_corrected": True, "field_of_view": "conventional"}}
    rows = case_rows("c1", case, ref, ref, np.ones(ref.shape, np.float32),
                     LabelSchema(("liver", "spleen", "heart")), nsd_tolerance_mm=2.0)
    assert [(r["organ"], r["fov_truncated"]) for r in rows] == [
        ("liver", False), ("spleen", True), ("heart", False)]
    assert {r["field_of_view"] for r in rows} == {"conventional"}
