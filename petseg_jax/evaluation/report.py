"""Evaluation report from per-(case, organ) metric rows: the paper's tables, figures and files.

A row is a dict with at least ``case_id``, ``organ`` and ``dice``, the case's metadata ``tracer``,
``center``, ``dose_reduction_factor``, ``attenuation_corrected`` and ``field_of_view`` (a
missing value groups as ``"unknown"``), and any further metrics (``hd95_mm``, ``nsd``, volume and
SUV errors, ...). A row with ``fov_truncated`` true (the organ's reference touches the scan's
edge: the field of view cuts it) is written to ``cases.csv`` but left out of every mean.

Aggregation (the paper's convention): a case's Dice is the mean over its organs, organs with a NaN
Dice (absent from the reference) left out; a group's mean Dice and sd are the mean and sample sd
(ddof = 1; undefined, null, for a single case) over the cases in the group. Per organ, the mean is
over the cases where that organ's value is finite (inf HD95 = organ missed is counted in ``n_inf``).

:func:`write_report` writes into the evaluation folder ``cases.csv``, ``summary.json``,
``report.md``, ``report.html`` (self-contained: figures embedded) and ``figures/`` (organ x tracer
Dice heatmap, Dice versus dose, and the dose-sweep curve when sweep rows are given). Every file is
written under a temporary name and moved into place.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from petseg_jax.inference import preview  # noqa: E402
from petseg_jax.inference.preview import save_figure  # noqa: E402  (study_report uses it too)
from petseg_jax.resources import write_atomic

Row = Mapping[str, Any]
# metadata column -> summary key of its group table
GROUPS = {"tracer": "by_tracer", "center": "by_center",
          "dose_reduction_factor": "by_dose_reduction_factor",
          "attenuation_corrected": "by_attenuation_correction", "field_of_view": "by_fov"}
GROUP_HEADERS = {"tracer": "tracer", "center": "center",
                 "dose_reduction_factor": "dose reduction factor",
                 "attenuation_corrected": "attenuation correction",
                 "field_of_view": "field of view"}
TRACER_AND_DOSE = "by_tracer_and_dose_reduction_factor"  # the paper's per-tracer dose table
SWEEP_COLUMN = "swept_dose_factor"
# per-organ metric columns summarised besides Dice, when present in the rows
ORGAN_METRICS = ("hd95_mm", "hd95", "nsd", "volume_ml_rel_error", "suv_mean_rel_error",
                 "suv_max_rel_error", "suv_peak_rel_error")
METRIC_TITLES = {"hd95_mm": "HD95 (mm)", "hd95": "HD95", "nsd": "NSD",
                 "volume_ml_rel_error": "volume rel. error", "suv_mean_rel_error": "SUVmean rel. error",
                 "suv_max_rel_error": "SUVmax rel. error", "suv_peak_rel_error": "SUVpeak rel. error"}
AGGREGATION = ("case Dice = mean over the case's organs (NaN organs and organs cut by the field "
               "of view excluded); group mean and sample sd over cases; per organ: over cases "
               "with a finite value")
TRUNCATED = "fov_truncated"


def counted(row: Row) -> bool:
    """Whether a row enters the means: not an organ cut by the field of view."""
    return not bool(row.get(TRUNCATED, False))


# ----------------------------------------------------------------------------- aggregation
def stat(values: Iterable[float]) -> dict[str, Any]:
    """Mean, sample sd and count of the finite values (``n_inf`` counts the infinite ones)."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    finite = v[np.isfinite(v)]
    n = int(finite.size)
    return {"mean": float(finite.mean()) if n else math.nan,
            "sd": float(finite.std(ddof=1)) if n > 1 else math.nan,
            "n": n, "n_inf": int(np.isinf(v).sum())}


def group_key(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if column == "attenuation_corrected" and not isinstance(value, str):
        return "AC" if bool(value) else "NAC"
    if column in ("dose_reduction_factor", SWEEP_COLUMN):
        return f"{float(value):g}"
    return str(value)


def sort_keys(keys: Iterable[str]) -> list[str]:
    def key(k: str):
        try:
            return (0, float(k), k)
        except ValueError:
            return (1, 0.0, k)
    return sorted(set(keys), key=key)


def case_table(rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """case_id -> {"meta": {column: group key}, "dice": mean over organs}; checks consistency."""
    per_case: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "case_id" not in row or "organ" not in row or "dice" not in row:
            raise ValueError(f"a metric row needs case_id, organ and dice; got keys {sorted(row)}")
        meta = {c: group_key(c, row.get(c)) for c in GROUPS}
        case = per_case.setdefault(str(row["case_id"]), {"meta": meta, "dices": []})
        if case["meta"] != meta:
            raise ValueError(f"case {row['case_id']!r} has rows with different metadata: "
                             f"{case['meta']} vs {meta}")
        if counted(row):
            case["dices"].append(float(row["dice"]))
    for case in per_case.values():
        dices = [d for d in case.pop("dices") if not math.isnan(d)]
        case["dice"] = float(np.mean(dices)) if dices else math.nan
    return per_case


def _grouped(cases: Mapping[str, Mapping[str, Any]], column: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[float]] = {}
    for case in cases.values():
        groups.setdefault(case["meta"][column], []).append(case["dice"])
    return {k: stat(groups[k]) for k in sort_keys(groups)}


def _by_organ(rows: Sequence[Row], column: str) -> dict[str, dict[str, Any]]:
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(str(row["organ"]), []).append(
            float(row.get(column, math.nan)) if counted(row) else math.nan)
    return {organ: stat(v) for organ, v in values.items()}


def _by_organ_and_tracer(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """organ -> tracer -> mean Dice over that tracer's cases (tracers without a value left out)."""
    values: dict[str, dict[str, list[float]]] = {}
    for row in filter(counted, rows):
        tracer = group_key("tracer", row.get("tracer"))
        values.setdefault(str(row["organ"]), {}).setdefault(tracer, []).append(float(row["dice"]))
    out = {}
    for organ, per_tracer in values.items():
        stats = {t: stat(per_tracer[t]) for t in sort_keys(per_tracer)}
        out[organ] = {t: st["mean"] for t, st in stats.items() if st["n"]}
    return out


def _means(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    return {k: s["mean"] for k, s in stats.items()}


def summarize(rows: Sequence[Row]) -> dict[str, Any]:
    """The summary of :func:`write_report` (without the dose sweep): mean Dice overall and per
    organ, tracer, center, dose reduction factor and AC/NAC (name -> mean), ``details`` with
    ``{"mean", "sd", "n", "n_inf"}`` per group, ``by_organ_and_tracer``,
    ``by_tracer_and_dose_reduction_factor`` and ``metrics_by_organ`` (HD95, NSD, errors)."""
    if not rows:
        raise ValueError("no metric rows to summarise")
    cases = case_table(rows)
    overall = stat(c["dice"] for c in cases.values())
    details: dict[str, Any] = {"overall": overall, "by_organ": _by_organ(rows, "dice")}
    for column, key in GROUPS.items():
        details[key] = _grouped(cases, column)
    per_metric = {m: _by_organ(rows, m) for m in ORGAN_METRICS if any(m in r for r in rows)}
    details[TRACER_AND_DOSE] = {}
    for tracer in details["by_tracer"]:
        tracer_cases = {k: c for k, c in cases.items() if c["meta"]["tracer"] == tracer}
        details[TRACER_AND_DOSE][tracer] = _grouped(tracer_cases, "dose_reduction_factor")
    absent = [r for r in rows if r.get("volume_ml_ref") == 0 and r.get("volume_ml_pred", 0) > 0]
    return {"n_cases": len(cases), "n_rows": len(rows),
            "n_fov_truncated": sum(not counted(r) for r in rows),
            # organs the scan does not hold (Dice undefined, left out) but the model predicted
            "absent_predicted": {"n": len(absent),
                                 "ml": float(sum(r["volume_ml_pred"] for r in absent))},
            "mean_dice": overall["mean"], "sd_dice": overall["sd"],
            **{key: _means(details[key]) for key in ("by_organ", *GROUPS.values())},
            "by_organ_and_tracer": _by_organ_and_tracer(rows),
            TRACER_AND_DOSE: {t: _means(g) for t, g in details[TRACER_AND_DOSE].items()},
            "metrics_by_organ": {organ: {m: per_metric[m][organ] for m in per_metric}
                                 for organ in details["by_organ"]},
            "details": details, "aggregation": AGGREGATION}


def _sweep_rows(dose_sweep_rows: Sequence[Row] | Mapping[float, Sequence[Row]]) -> list[dict]:
    """Flat sweep rows with ``swept_dose_factor`` (a mapping factor -> rows is flattened)."""
    if isinstance(dose_sweep_rows, Mapping):
        return [dict(r) | {SWEEP_COLUMN: float(f)} for f, rs in dose_sweep_rows.items() for r in rs]
    rows = [dict(r) for r in dose_sweep_rows]
    if missing := [r.get("case_id") for r in rows if SWEEP_COLUMN not in r]:
        raise ValueError(f"dose-sweep rows need a {SWEEP_COLUMN!r} column; missing in cases {missing[:3]}")
    return rows


def summarize_dose_sweep(rows: Sequence[Row]) -> dict[str, Any]:
    """Mean Dice per swept dose factor, overall and per tracer (case means as in :func:`summarize`)."""
    levels = sort_keys(group_key(SWEEP_COLUMN, r[SWEEP_COLUMN]) for r in rows)
    details, by_tracer = {}, {}
    for level in levels:
        level_rows = [r for r in rows if group_key(SWEEP_COLUMN, r[SWEEP_COLUMN]) == level]
        cases = case_table(level_rows)
        details[level] = stat(c["dice"] for c in cases.values())
        for tracer, s in _grouped(cases, "tracer").items():
            by_tracer.setdefault(tracer, {})[level] = s["mean"]
    return {"by_dose_reduction_factor": _means(details), "by_tracer": by_tracer, "details": details}


# ----------------------------------------------------------------------------- writing helpers
def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_safe(obj: Any) -> Any:
    """NaN / inf -> null (strict JSON), recursively."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_csv(path: Path, rows: Sequence[Row]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    write_atomic(path, write)


# ----------------------------------------------------------------------------- figures
def _dice_heatmap(path: Path, by_organ_and_tracer: Mapping[str, Mapping[str, float]]) -> None:
    organs = list(by_organ_and_tracer)
    tracers = sort_keys(t for v in by_organ_and_tracer.values() for t in v)
    grid = np.array([[by_organ_and_tracer[o].get(t, math.nan) for t in tracers] for o in organs])
    fig, ax = plt.subplots(figsize=(2.5 + 1.0 * len(tracers), 1.2 + 0.32 * len(organs)))
    im = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if v > 0.6 else "white")
    ax.set_xticks(range(len(tracers)), tracers)
    ax.set_yticks(range(len(organs)), organs, fontsize=8)
    ax.set_xlabel("tracer")
    ax.set_title("mean Dice per organ and tracer")
    fig.colorbar(im, ax=ax, fraction=0.05, label="Dice")
    save_figure(fig, path)


def _dose_curve(path: Path, overall: Mapping[str, Mapping[str, Any]],
                by_tracer: Mapping[str, Mapping[str, float]], title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = [float(k) for k in overall]
    ax.errorbar(x, [s["mean"] for s in overall.values()],
                yerr=[0.0 if math.isnan(s["sd"]) else s["sd"] for s in overall.values()],
                color="black", marker="o", linewidth=2, capsize=3, label="all cases (mean ± sd)")
    for tracer, values in by_tracer.items():
        keys = sort_keys(values)
        ax.plot([float(k) for k in keys], [values[k] for k in keys], marker=".", linestyle="--",
                label=tracer)
    if min(x) > 0:
        ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.minorticks_off()
    ax.set_xlabel("dose reduction factor")
    ax.set_ylabel("mean Dice per case")
    ax.set_ylim(top=1.0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def mip_figure(out_png: str | Path, pet: np.ndarray, ref_labels: np.ndarray,
               pred_labels: np.ndarray, spacing: Sequence[float], title: str,
               label_names: Mapping[int, str] | None = None) -> Path:
    """Coronal maximum-intensity projection of a RAS ``(X, Y, Z)`` PET volume (max over y),
    reference left and prediction right, each organ filled semi-transparently in its colour
    (:mod:`petseg_jax.inference.preview`); head up, the subject's right on the viewer's left
    (radiological convention), mm-true aspect. ``label_names`` (id -> name) adds a legend."""
    pet, ref_labels, pred_labels = (np.asarray(a) for a in (pet, ref_labels, pred_labels))
    if pet.ndim != 3 or pet.shape != ref_labels.shape or pet.shape != pred_labels.shape:
        raise ValueError(f"mip_figure needs 3-D PET and label maps of one shape, got {pet.shape}, "
                         f"{ref_labels.shape}, {pred_labels.shape}")
    sx, _, sz = (float(s) for s in spacing)
    height = 8.0
    width = max(2 * height * (pet.shape[0] * sx) / (pet.shape[2] * sz)
                + (2.2 if label_names else 0.4), 4.0)
    fig, axes = plt.subplots(1, 2, figsize=(width, height + 0.6), sharey=True, layout="constrained")
    vmax = preview.display_max(pet)
    drawn = []
    for ax, labels, name in zip(axes, (ref_labels, pred_labels), ("reference", "prediction")):
        drawn += preview.draw_view(ax, pet, labels, spacing, "coronal", vmax)
        ax.set_title(name)
    if label_names:
        preview.add_legend(fig, drawn, label_names)
    fig.suptitle(title)
    return save_figure(fig, out_png)


# ----------------------------------------------------------------------------- tables
def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def mean_sd(s: Mapping[str, Any], digits: int = 3) -> str:
    """``mean ± sd`` (sd left out for one value), with the number of infinite values if any."""
    inf = f" ({s['n_inf']}× inf)" if s["n_inf"] else ""
    if not s["n"]:
        return "–" + inf
    sd = "" if math.isnan(s["sd"]) else f" ± {s['sd']:.{digits}f}"
    return f"{s['mean']:.{digits}f}{sd}{inf}"


Table = tuple[str, list[str], list[list[str]]]


def _tables(summary: Mapping[str, Any]) -> list[Table]:
    details = summary["details"]
    organ_metrics = summary["metrics_by_organ"]
    extra = list(next(iter(organ_metrics.values()), {}))
    absent = summary.get("absent_predicted", {"n": 0, "ml": 0.0})
    tables: list[Table] = [("Overall", ["cases", "mean Dice ± sd",
                                        "(case, organ) pairs cut by the field of view, left out",
                                        "organs predicted where the reference has none"],
                            [[str(summary["n_cases"]), mean_sd(details["overall"]),
                              str(summary.get("n_fov_truncated", 0)),
                              f"{absent['n']} ({absent['ml']:.1f} ml)"]])]
    organ_rows = []
    for organ, s in details["by_organ"].items():
        cells = [organ, mean_sd(s)] + [mean_sd(organ_metrics[organ][m], 2) for m in extra]
        organ_rows.append(cells + [str(s["n"])])
    tables.append(("Per organ (surface metrics: mean over finite values, inf = organ missed)",
                   ["organ", "Dice"] + [METRIC_TITLES[m] for m in extra] + ["cases"], organ_rows))
    for column, key in GROUPS.items():
        tables.append((f"Per {GROUP_HEADERS[column]}", [GROUP_HEADERS[column], "mean Dice ± sd", "cases"],
                       [[k, mean_sd(s), str(s["n"])] for k, s in details[key].items()]))
    tables.append(("Per tracer and dose reduction factor",
                   ["tracer", "dose reduction factor", "mean Dice ± sd", "cases"],
                   [[t, k, mean_sd(s), str(s["n"])]
                    for t, groups in details[TRACER_AND_DOSE].items() for k, s in groups.items()]))
    tracers = sort_keys(t for v in summary["by_organ_and_tracer"].values() for t in v)
    tables.append(("Dice per organ and tracer", ["organ"] + tracers,
                   [[o] + [fmt(v.get(t, math.nan)) for t in tracers]
                    for o, v in summary["by_organ_and_tracer"].items()]))
    if sweep := summary.get("dose_sweep"):
        levels = list(sweep["details"])
        tables.append(("Dose sweep (re-simulated dose levels)",
                       ["dose reduction factor", "all cases"] + list(sweep["by_tracer"]),
                       [[lv, mean_sd(sweep["details"][lv])]
                        + [fmt(sweep["by_tracer"][t].get(lv, math.nan)) for t in sweep["by_tracer"]]
                        for lv in levels]))
    return tables


def render_markdown(title: str, intro: Sequence[str], tables: Sequence[Table],
                    figures: Sequence[Path], root: Path) -> str:
    """A Markdown page: title, ``intro`` paragraphs, the tables, figures linked relative to
    ``root``."""
    lines = [f"# {title}", ""]
    for paragraph in intro:
        lines += [paragraph, ""]
    for name, header, rows in tables:
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    lines += ["## Figures", ""]
    lines += [f"![{p.stem}]({p.relative_to(root).as_posix() if p.is_relative_to(root) else p})"
              for p in figures]
    return "\n".join(lines) + "\n"


def render_html(title: str, intro: Sequence[str], tables: Sequence[Table],
                figures: Sequence[Path]) -> str:
    """A self-contained HTML page of the same content (figures embedded as base64 PNG)."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "margin-bottom:1.5em}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}th{background:#eee}"
             "img{max-width:100%;margin:0.5em 0;border:1px solid #ddd}</style></head><body>",
             f"<h1>{esc(title)}</h1>", *(f"<p>{esc(p)}</p>" for p in intro)]
    for name, header, rows in tables:
        parts.append(f"<h2>{esc(name)}</h2><table><tr>"
                     + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    parts.append("<h2>Figures</h2>")
    for path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{esc(path.stem)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(path.name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines for the terminal: overall mean Dice and the per-group means."""
    lines = [f"mean Dice {mean_sd(summary['details']['overall'])} over {summary['n_cases']} cases"
             f" ({summary.get('n_fov_truncated', 0)} organs cut by the field of view left out)"]
    for key in GROUPS.values():
        groups = summary["details"][key]
        lines.append(f"  {key}: " + ", ".join(f"{k} {mean_sd(s)}" for k, s in groups.items()))
    lines.append("  by_tracer_and_dose: " + ", ".join(
        f"{t} x{k} {mean_sd(s)}" for t, groups in summary["details"][TRACER_AND_DOSE].items()
        for k, s in groups.items()))
    if sweep := summary.get("dose_sweep"):
        lines.append("  dose sweep: " + ", ".join(f"{k} {mean_sd(s)}" for k, s in sweep["details"].items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry point
def write_report(eval_dir: str | Path, rows: Sequence[Row], *,
                 dose_sweep_rows: Sequence[Row] | Mapping[float, Sequence[Row]] | None = None,
                 mip_pngs: Sequence[str | Path] = (), title: str = "petseg_jax evaluation"
                 ) -> dict[str, Any]:
    """Write ``cases.csv``, ``summary.json``, ``report.md``, ``report.html`` and ``figures/`` into
    ``eval_dir``; returns the summary. ``dose_sweep_rows``: rows with a ``swept_dose_factor``
    column, or a mapping factor -> rows; adds ``dose_sweep.csv``, ``summary["dose_sweep"]`` and a
    curve. ``mip_pngs``: already written figures (see :func:`mip_figure`) shown in the report."""
    rows = [dict(r) for r in rows]
    summary = summarize(rows)  # validates the rows before anything is written
    sweep = _sweep_rows(dose_sweep_rows) if dose_sweep_rows else []
    if sweep:
        summary["dose_sweep"] = summarize_dose_sweep(sweep)
    eval_dir = Path(eval_dir)
    figures_dir = eval_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(eval_dir / "cases.csv", rows)
    figures = [figures_dir / "dice_heatmap.png", figures_dir / "dice_vs_dose.png"]
    _dice_heatmap(figures[0], summary["by_organ_and_tracer"])
    _dose_curve(figures[1], summary["details"]["by_dose_reduction_factor"],
                summary["by_tracer_and_dose_reduction_factor"],
                "Dice versus dose reduction factor (test cases)")
    if sweep:
        _write_csv(eval_dir / "dose_sweep.csv", sweep)
        figures.append(figures_dir / "dose_sweep.png")
        _dose_curve(figures[-1], summary["dose_sweep"]["details"], summary["dose_sweep"]["by_tracer"],
                    "Robustness: Dice at re-simulated dose levels")
    figures += [Path(p) for p in mip_pngs]
    write_atomic(eval_dir / "summary.json",
                  lambda tmp: tmp.write_text(json.dumps(json_safe(summary), indent=1)))
    tables = _tables(summary)
    intro = [f"Aggregation: {AGGREGATION}."]
    write_text(eval_dir / "report.md", render_markdown(title, intro, tables, figures, eval_dir))
    write_text(eval_dir / "report.html", render_html(title, intro, tables, figures))
    return summary
