"""The study's tables, figures and files: the paper's two tables with mean ± sd over seeds.

Input: the finished runs of a study (:func:`petseg_jax.evaluation.study.gather`), each with
its ``eval/cases.csv`` rows. Aggregation (:data:`AGGREGATION`): a case's Dice is the mean over
its organs (as in :mod:`report`); for one seed, a cell (for example a held-out center at one dose
with AC) is the mean over its test cases; a table shows the mean and the sample sd of that over
seeds, and the number of test cases. Confidence intervals are percentile bootstraps over cases
of the seed-averaged case Dice. A difference (for example NAC - AC) has a seed sd (the sd over
seeds of the per-seed difference) and a bootstrap CI over cases, paired when both sides hold
the same cases (cross-tracer versus multi-center on one tracer's cases).

:func:`write_study` writes ``OUT/study.json``, ``study.md``, ``study.html`` (self-contained)
and ``OUT/figures/``: Dice against dose per protocol, the center x tracer heatmap and the
per-organ Dice against dose.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from petseg_jax.evaluation import report
from petseg_jax.evaluation.report import Table, sort_keys
from petseg_jax.resources import write_atomic

# The paper's published values (mean DSC). Multi-center: FDG at four institutions, averaged over
# dose reduction factors and AC/NAC. Cross-tracer: trained on FDG, per test tracer.
PAPER_MULTICENTER = {"institution 1": 0.834, "institution 2": 0.825, "institution 3": 0.819,
                     "institution 4": 0.816}
PAPER_CROSS_TRACER = {"DOTATATE": 0.737, "FAPI": 0.573, "FDG": 0.830, "Grazytracer": 0.661,
                      "PSMA": 0.708}
N_BOOT = 2000
CI_LEVEL = 0.95
BOOT_SEED = 0
DOSE = "dose_reduction_factor"
AC = "attenuation_corrected"
AGGREGATION = (
    "A case's Dice is the mean over its organs (organs absent from the reference left out). For "
    "one seed, a cell's value is the mean over its test cases; tables show the mean ± sample sd "
    "of that over seeds, and (n) the number of test cases. 95% CI: percentile bootstrap over "
    f"cases ({N_BOOT} resamples) of the seed-averaged case Dice. A difference's seed sd is the sd "
    "over seeds of the per-seed difference; its CI resamples cases (paired when both sides are "
    "the same cases). DRF: dose reduction factor.")
NOTE_TRACERS = (
    "Cross-tracer: the training tracers' cases are used for training and validation only, so "
    "the paper's FDG value (FDG test cases) has no counterpart in this protocol; the "
    "multi-center FDG columns give FDG on unseen centers.")


class StudyError(ValueError):
    """A study that cannot be planned, run or collected as asked (bad input, results that do
    not combine)."""


# ----------------------------------------------------------------------------- statistics
def bootstrap_ci(a: Sequence[float], b: Sequence[float] | None = None, *, n_boot: int = N_BOOT,
                 level: float = CI_LEVEL, seed: int = BOOT_SEED) -> list[float]:
    """Percentile bootstrap CI of ``mean(a)``, or of ``mean(a) - mean(b)`` with ``a`` and ``b``
    resampled independently (pass paired differences as ``a`` alone). Non-finite values are left
    out; ``[nan, nan]`` when a side has fewer than two values."""
    rng = np.random.default_rng(seed)
    sides = [np.asarray(x, np.float64) for x in ((a,) if b is None else (a, b))]
    sides = [x[np.isfinite(x)] for x in sides]
    if any(x.size < 2 for x in sides):
        return [math.nan, math.nan]
    means = [x[rng.integers(0, x.size, (n_boot, x.size))].mean(axis=1) for x in sides]
    stats = means[0] if b is None else means[0] - means[1]
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


class ProtocolResults:
    """One protocol's test Dice over seeds, per case and per (organ, case)."""

    def __init__(self, protocol: str, runs: Sequence[Mapping[str, Any]]):
        self.protocol = protocol
        self.seeds = sorted({int(r["seed"]) for r in runs})
        self.meta: dict[str, dict[str, str]] = {}
        self.dice: dict[str, dict[int, float]] = {}
        self.organ: dict[str, dict[str, dict[int, float]]] = {}
        for run in runs:
            seed = int(run["seed"])
            for cid, case in report.case_table(run["rows"]).items():
                if seed in self.dice.get(cid, {}):
                    raise StudyError(f"{protocol}: case {cid} is tested twice with seed "
                                         f"{seed} (folds overlap)")
                self.meta.setdefault(cid, case["meta"])
                self.dice.setdefault(cid, {})[seed] = case["dice"]
            for row in run["rows"]:
                organ = self.organ.setdefault(str(row["organ"]), {})
                organ.setdefault(str(row["case_id"]), {})[seed] = float(row["dice"])
        for cid, per_seed in self.dice.items():
            if sorted(per_seed) != self.seeds:
                raise StudyError(f"{protocol}: case {cid} was tested with seeds "
                                     f"{sorted(per_seed)}, not with every seed {self.seeds}")

    def cases(self, where: Mapping[str, str] | None = None) -> list[str]:
        """Case ids whose metadata group keys match ``where`` (column -> key)."""
        where = where or {}
        return [c for c in sorted(self.meta)
                if all(self.meta[c][k] == v for k, v in where.items())]

    def keys(self, column: str, where: Mapping[str, str] | None = None) -> list[str]:
        """The group keys of ``column`` among the matching cases, sorted."""
        return sort_keys(self.meta[c][column] for c in self.cases(where))

    def _source(self, organ: str | None) -> dict[str, dict[int, float]]:
        return self.dice if organ is None else self.organ[organ]

    def case_means(self, cases: Sequence[str], organ: str | None = None) -> np.ndarray:
        """Seed-averaged Dice of each case (NaN where the case has no value)."""
        source = self._source(organ)
        return np.array([np.mean([source[c][s] for s in self.seeds]) if c in source else math.nan
                         for c in cases])

    def seed_means(self, cases: Sequence[str], organ: str | None = None) -> list[float]:
        """For each seed, the mean Dice over ``cases`` (finite values only)."""
        source = self._source(organ)
        return [report.stat(source[c][s] for c in cases if c in source)["mean"]
                for s in self.seeds]

    def cell(self, where: Mapping[str, str] | None = None, organ: str | None = None,
             ci: bool = False) -> dict[str, Any]:
        """``{"mean", "sd", "n_seeds", "n_cases", "seed_means"[, "ci95"]}`` of the matching
        cases (of one organ's Dice when ``organ`` is given)."""
        cases = [c for c in self.cases(where) if c in self._source(organ)]
        per_seed = self.seed_means(cases, organ)
        s = report.stat(per_seed)
        out = {"mean": s["mean"], "sd": s["sd"], "n_seeds": s["n"], "n_cases": len(cases),
               "seed_means": per_seed}
        if ci:
            out["ci95"] = bootstrap_ci(self.case_means(cases, organ))
        return out


Side = tuple[ProtocolResults, Mapping[str, str]]


def difference(label: str, first: Side, second: Side, paired: bool = False
               ) -> dict[str, Any] | None:
    """``first - second`` (each a protocol and a ``where`` filter): mean over seeds of the
    per-seed difference of means, its seed sd, and a bootstrap CI over cases; paired (per case)
    over the cases both sides hold. ``None`` when a side has no case."""
    (pa, wa), (pb, wb) = first, second
    seeds = [s for s in pa.seeds if s in pb.seeds]
    if paired:
        common = set(pb.cases(wb))
        cases = [c for c in pa.cases(wa) if c in common]
        if not cases:
            return None
        per_seed = [float(np.nanmean([pa.dice[c][s] - pb.dice[c][s] for c in cases]))
                    for s in seeds]
        ci = bootstrap_ci(pa.case_means(cases) - pb.case_means(cases))
        n_cases = [len(cases)]
    else:
        ca, cb = pa.cases(wa), pb.cases(wb)
        if not ca or not cb:
            return None
        ma, mb = dict(zip(pa.seeds, pa.seed_means(ca))), dict(zip(pb.seeds, pb.seed_means(cb)))
        per_seed = [ma[s] - mb[s] for s in seeds]
        ci = bootstrap_ci(pa.case_means(ca), pb.case_means(cb))
        n_cases = [len(ca), len(cb)]
    s = report.stat(per_seed)
    return {"label": label, "mean": s["mean"], "seed_sd": s["sd"], "n_seeds": s["n"],
            "ci95": ci, "n_cases": n_cases, "paired": paired}


# ----------------------------------------------------------------------------- aggregation
def _group_column(protocol: str) -> str:
    return "center" if protocol == "multicenter" else "tracer"


def _differences(results: Mapping[str, ProtocolResults]) -> list[dict[str, Any]]:
    out = []
    for name, pr in results.items():
        if {"AC", "NAC"} <= set(pr.keys(AC)):
            out.append(difference(f"{name}: NAC - AC", (pr, {AC: "NAC"}), (pr, {AC: "AC"})))
        doses = pr.keys(DOSE)
        if "1" in doses:
            out += [difference(f"{name}: DRF {d} - full dose", (pr, {DOSE: d}), (pr, {DOSE: "1"}))
                    for d in doses if d != "1"]
        if name == "multicenter":
            centers = pr.keys("center")
            out += [difference(f"multicenter: {b} - {a}", (pr, {"center": b}),
                               (pr, {"center": a}))
                    for i, a in enumerate(centers) for b in centers[i + 1:]]
    if "multicenter" in results and "cross_tracer" in results:
        cross, multi = results["cross_tracer"], results["multicenter"]
        out.append(difference("cross_tracer - multicenter, all cross-tracer test cases",
                              (cross, {}), (multi, {}), paired=True))
        out += [difference(f"cross_tracer - multicenter, {t} cases", (cross, {"tracer": t}),
                           (multi, {"tracer": t}), paired=True) for t in cross.keys("tracer")]
    return [d for d in out if d is not None]


def _by_dose(pr: ProtocolResults, where: Mapping[str, str], organ: str | None = None
             ) -> dict[str, Any]:
    cells = {d: pr.cell({**where, DOSE: d}, organ) for d in pr.keys(DOSE, where)}
    return cells | {"all": pr.cell(where, organ, ci=organ is None)}


def summarize_study(plan: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]
                    ) -> dict[str, Any]:
    """The study's numbers (``study.json`` without the file list): per protocol the overall
    cell, per group (held-out center / test tracer) by dose and AC/NAC, per organ by dose, the
    center x tracer grid; the differences; the references; the runs."""
    results = {p: ProtocolResults(p, [r for r in runs if r["protocol"] == p])
               for p in plan["protocols"]}
    protocols: dict[str, Any] = {}
    for name, pr in results.items():
        col = _group_column(name)
        groups = {}
        for g in pr.keys(col):
            where = {col: g}
            groups[g] = {"all": pr.cell(where, ci=True),
                         "by_ac": {a: _by_dose(pr, {**where, AC: a}) for a in pr.keys(AC, where)},
                         "by_dose": _by_dose(pr, where)}
            if name == "multicenter":
                groups[g]["fdg"] = pr.cell({**where, "tracer": "FDG"}, ci=True)
        protocols[name] = {
            "group_by": col, "seeds": pr.seeds, "overall": pr.cell(ci=True),
            "overall_by_dose": _by_dose(pr, {}), "groups": groups,
            "by_organ": {o: _by_dose(pr, {}, o) for o in pr.organ},
            "center_by_tracer": {c: {t: pr.cell({"center": c, "tracer": t})
                                     for t in pr.keys("tracer", {"center": c})}
                                 for c in pr.keys("center")}}
        if name == "multicenter":
            protocols[name]["fdg"] = pr.cell({"tracer": "FDG"}, ci=True)
    run_table = []
    for run in runs:
        cases = report.case_table(run["rows"])
        run_table.append({"run": run["workdir"], "n_cases": len(cases),
                          "mean_dice": report.stat(c["dice"] for c in cases.values())["mean"]})
    return {"config_file": plan["config_file"], "overrides": plan["overrides"],
            "store": plan["store"], "seeds": plan["seeds"],
            "train_tracers": list(plan["config"]["data"]["split"]["train_tracers"]),
            "folds": {p: {f: v["cases"] for f, v in folds.items()}
                      for p, folds in plan["folds"].items()},
            "protocols": protocols, "differences": _differences(results),
            "reference": {"multicenter": PAPER_MULTICENTER, "cross_tracer": PAPER_CROSS_TRACER},
            "runs": run_table, "aggregation": AGGREGATION}


# ----------------------------------------------------------------------------- tables
def _cell(c: Mapping[str, Any] | None, n: bool = True) -> str:
    if not c or not c["n_cases"]:
        return "–"
    sd = "" if math.isnan(c["sd"]) else f" ± {c['sd']:.3f}"
    return f"{report.fmt(c['mean'])}{sd}" + (f" ({c['n_cases']})" if n else "")


def _ci(c: Mapping[str, Any] | None) -> str:
    if not c or "ci95" not in c or math.isnan(c["ci95"][0]):
        return "–"
    return f"[{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _dose_header(doses: Sequence[str]) -> list[str]:
    return [f"DRF {d}" for d in doses] + ["all doses"]


def _multicenter_tables(p: Mapping[str, Any]) -> list[Table]:
    doses = list(p["overall_by_dose"])[:-1]
    rows = []
    for center, g in p["groups"].items():
        for ac, cells in g["by_ac"].items():
            rows.append([center, ac] + [_cell(cells.get(d)) for d in doses] + [_cell(cells["all"])])
        rows.append([center, "AC + NAC"] + [_cell(g["by_dose"].get(d)) for d in doses]
                    + [_cell(g["by_dose"]["all"])])
    rows.append(["all held-out cases", "AC + NAC"]
                + [_cell(p["overall_by_dose"][d]) for d in doses] + [_cell(p["overall"])])
    grid = ("Multi-center (leave one center out): mean Dice ± sd over seeds (test cases) per "
            "held-out center, AC/NAC and dose reduction factor",
            ["held-out center", "AC/NAC"] + _dose_header(doses), rows)
    ours = list(p["groups"].items())
    paper = list(PAPER_MULTICENTER.items())
    side = []
    for i in range(max(len(ours), len(paper))):
        center, g = ours[i] if i < len(ours) else (f"– (we have {_count(len(ours), 'center')})",
                                                    None)
        inst, value = paper[i] if i < len(paper) else ("–", math.nan)
        side.append([center, _cell(g and g["all"]), _ci(g and g["all"]), _cell(g and g["fdg"]),
                     _ci(g and g["fdg"]), inst, report.fmt(value)])
    side.append(["all held-out cases", _cell(p["overall"]), _ci(p["overall"]), _cell(p["fdg"]),
                 _ci(p["fdg"]), "mean of the four", report.fmt(float(np.mean(
                     list(PAPER_MULTICENTER.values()))))])
    beside = ("Multi-center beside the paper (averaged over doses and AC/NAC)",
              ["ours: held-out center", "all tracers", "95% CI", "FDG cases", "95% CI (FDG)",
               "paper", "paper: mean DSC (FDG)"], side)
    return [grid, beside]


def _cross_tracer_table(p: Mapping[str, Any], train_tracers: Sequence[str]) -> Table:
    doses = list(p["overall_by_dose"])[:-1]
    rows = []
    for tracer in sort_keys([*p["groups"], *train_tracers, *PAPER_CROSS_TRACER]):
        g = p["groups"].get(tracer)
        role = ("training" if tracer in train_tracers else "test" if g else "not in the data")
        cells = g["by_dose"] if g else {}
        rows.append([tracer, role] + [_cell(cells.get(d)) for d in doses]
                    + [_cell(cells.get("all")), _ci(g and g["all"]),
                       report.fmt(PAPER_CROSS_TRACER.get(tracer, math.nan))])
    rows.append(["all test tracers", "test"] + [_cell(p["overall_by_dose"][d]) for d in doses]
                + [_cell(p["overall"]), _ci(p["overall"]), "–"])
    return (f"Cross-tracer (trained on {', '.join(train_tracers)}): mean Dice ± sd over seeds "
            "(test cases) per tracer and dose reduction factor",
            ["tracer", "role"] + _dose_header(doses) + ["95% CI", "paper"], rows)


def study_tables(summary: Mapping[str, Any]) -> list[Table]:
    """The study's tables: the paper's two, per organ, center x tracer, differences, folds, runs."""
    tables: list[Table] = []
    protocols = summary["protocols"]
    if "multicenter" in protocols:
        tables += _multicenter_tables(protocols["multicenter"])
    if "cross_tracer" in protocols:
        tables.append(_cross_tracer_table(protocols["cross_tracer"], summary["train_tracers"]))
    diffs = [[d["label"], f"{d['mean']:+.3f}", report.fmt(d["seed_sd"]), _ci(d),
              " / ".join(map(str, d["n_cases"])) + (" (paired)" if d["paired"] else ""),
              str(d["n_seeds"])] for d in summary["differences"]]
    tables.append(("Differences (mean over seeds; seed sd; 95% bootstrap CI over cases)",
                   ["difference", "mean", "seed sd", "95% CI", "cases", "seeds"], diffs))
    for name, p in protocols.items():
        doses = list(p["overall_by_dose"])[:-1]
        tables.append((f"{name}: Dice per organ and dose reduction factor (mean ± sd over seeds)",
                       ["organ"] + _dose_header(doses),
                       [[organ] + [_cell(cells.get(d), n=False) for d in doses]
                        + [_cell(cells["all"], n=False)]
                        for organ, cells in p["by_organ"].items()]))
        tracers = sort_keys(t for v in p["center_by_tracer"].values() for t in v)
        tables.append((f"{name}: mean Dice per center and tracer (test cases)",
                       ["center"] + tracers,
                       [[c] + [_cell(v.get(t)) for t in tracers]
                        for c, v in p["center_by_tracer"].items()]))
    tables.append(("Folds (cases per split)", ["protocol", "fold", "train", "val", "test"],
                   [[p, f, str(n["train"]), str(n["val"]), str(n["test"])]
                    for p, folds in summary["folds"].items() for f, n in folds.items()]))
    tables.append(("Runs", ["run", "test cases", "mean Dice"],
                   [[r["run"], str(r["n_cases"]), report.fmt(r["mean_dice"])]
                    for r in summary["runs"]]))
    return tables


# ----------------------------------------------------------------------------- figures
def _dose_figure(path: Path, protocols: Mapping[str, Any]) -> None:
    fig, axes = plt.subplots(1, len(protocols), figsize=(6.0 * len(protocols), 4.2),
                             squeeze=False)
    for ax, (name, p) in zip(axes[0], protocols.items()):
        def curve(cells, **kw):
            doses = [d for d in cells if d != "all" and cells[d]["n_cases"]]
            ax.errorbar([float(d) for d in doses], [cells[d]["mean"] for d in doses],
                        yerr=[0.0 if math.isnan(cells[d]["sd"]) else cells[d]["sd"]
                              for d in doses], marker="o", capsize=3, **kw)
        for group, g in p["groups"].items():
            curve(g["by_dose"], linestyle="--", label=group)
        curve(p["overall_by_dose"], color="black", linewidth=2, label="all test cases")
        ax.set_xscale("log")
        doses = [float(d) for d in p["overall_by_dose"] if d != "all"]
        ax.set_xticks(doses, [f"{d:g}" for d in doses])
        ax.minorticks_off()
        ax.set_xlabel("dose reduction factor")
        ax.set_ylabel("mean Dice (± sd over seeds)")
        ax.set_title(f"{name} (by {p['group_by']})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    report.save_figure(fig, path)


def _heatmaps(path: Path, grids: Mapping[str, tuple[list[str], list[str], np.ndarray,
                                                     np.ndarray]], ylabel: str, xlabel: str
              ) -> None:
    """One panel per entry: (row labels, column labels, means, sds)."""
    fig, axes = plt.subplots(1, len(grids), squeeze=False, figsize=(
        sum(2.5 + 1.1 * len(g[1]) for g in grids.values()),
        1.5 + 0.35 * max(len(g[0]) for g in grids.values())))
    for ax, (title, (rows, cols, mean, sd)) in zip(axes[0], grids.items()):
        im = ax.imshow(mean, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for (i, j), v in np.ndenumerate(mean):
            if np.isfinite(v):
                text = f"{v:.2f}" + ("" if not np.isfinite(sd[i, j]) else f"\n±{sd[i, j]:.2f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="black" if v > 0.6 else "white")
        ax.set_xticks(range(len(cols)), cols, rotation=30)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    fig.colorbar(im, ax=list(axes[0]), fraction=0.04, label="mean Dice")
    report.save_figure(fig, path)


def _grid(table: Mapping[str, Mapping[str, Mapping[str, Any]]], cols: Sequence[str]):
    rows = list(table)
    mean = np.array([[table[r].get(c, {}).get("mean", math.nan) for c in cols] for r in rows])
    sd = np.array([[table[r].get(c, {}).get("sd", math.nan) for c in cols] for r in rows])
    return rows, list(cols), mean, sd


def study_figures(fig_dir: Path, summary: Mapping[str, Any]) -> list[Path]:
    """Dice against dose per protocol, the center x tracer heatmap, per-organ Dice by dose."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    protocols = summary["protocols"]
    paths = [fig_dir / "dice_vs_dose.png", fig_dir / "center_tracer_heatmap.png",
             fig_dir / "organ_dice_vs_dose.png"]
    _dose_figure(paths[0], protocols)
    _heatmaps(paths[1], {name: _grid(p["center_by_tracer"], sort_keys(
        t for v in p["center_by_tracer"].values() for t in v)) for name, p in protocols.items()},
        "center", "tracer")
    _heatmaps(paths[2], {name: _grid(p["by_organ"], [d for d in p["overall_by_dose"]])
                         for name, p in protocols.items()}, "organ", "dose reduction factor")
    return paths


# ----------------------------------------------------------------------------- entry point
def write_study(out: Path, plan: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]
                ) -> dict[str, Any]:
    """Write ``out/study.json``, ``study.md``, ``study.html`` and ``out/figures``; return the
    summary."""
    summary = summarize_study(plan, runs)
    figures = study_figures(out / "figures", summary)
    summary["figures"] = [p.relative_to(out).as_posix() for p in figures]
    write_atomic(out / "study.json", lambda tmp: tmp.write_text(
        json.dumps(report.json_safe(summary), indent=1)))
    overrides = " ".join(f"--config.{k}={v}" for k, v in plan["overrides"])
    intro = [f"Config {plan['config_file']} {overrides}; seeds 0..{plan['seeds'] - 1}; "
             f"protocols {', '.join(plan['protocols'])}.", AGGREGATION]
    if "multicenter" in summary["protocols"]:
        centers = list(summary["protocols"]["multicenter"]["groups"])
        intro.append(
            f"Multi-center: the paper has four institutions (FDG only); this study has "
            f"{_count(len(centers), 'held-out center')} ({', '.join(centers)}), whose test "
            "cases hold every tracer of the data. The columns stand side by side, not matched: "
            "our center i is not the paper's institution i. The FDG columns compare like with "
            "like.")
    if "cross_tracer" in summary["protocols"]:
        intro.append(NOTE_TRACERS)
    tables = study_tables(summary)
    title = "petseg_jax study: multi-center and cross-tracer protocols"
    report.write_text(out / "study.md", report.render_markdown(title, intro, tables, figures, out))
    report.write_text(out / "study.html", report.render_html(title, intro, tables, figures))
    return summary


def format_study(summary: Mapping[str, Any]) -> str:
    """A few terminal lines: each protocol's groups (mean ± sd over seeds) beside the paper."""
    lines = []
    for name, p in summary["protocols"].items():
        ref = PAPER_CROSS_TRACER if name == "cross_tracer" else {}
        lines.append(f"{name}: all test cases {_cell(p['overall'])} {_ci(p['overall'])}")
        lines += [f"  {g}: {_cell(v['all'])}"
                  + (f"  (paper {ref[g]:.3f})" if g in ref else "") for g, v in p["groups"].items()]
    if "multicenter" in summary["protocols"]:
        lines.append("  paper (FDG, four institutions): "
                     + ", ".join(f"{v:.3f}" for v in PAPER_MULTICENTER.values()))
    return "\n".join(lines)
