"""Find the largest ladder candidate whose compiled train step fits a memory budget.

Compiling a 3-D U-Net takes seconds to tens of seconds, so the ladder is not walked: a secant
search brackets the boundary. Memory per device is modelled as

    memory(candidate) = fixed(candidate) + a + c * voxels(candidate)

where ``fixed`` (parameters, their gradients and the optimizer state; exact, from shapes alone)
depends on the depth and ``a + c * voxels`` (activations, workspace) is fitted to the compiled
points nearest the boundary. The search compiles the smallest candidate (too big: an error), then
repeatedly the candidate the model predicts to be the last that fits, until a compiled candidate
fits and the next one up the ladder was compiled and does not (or the ladder ends). Memory
grows along the ladder, so the answer grows with the budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from tqdm import tqdm

from petseg_jax.planning import PlanError
from petseg_jax.planning.heuristics import Candidate

MAX_COMPILES = 8


@dataclasses.dataclass
class Trial:
    """One compiled candidate: its ladder index, the order it was compiled in, the model's
    prediction (none for the first probe), the compiled memory per device (GiB) and the
    compile time (s)."""

    index: int
    order: int
    candidate: Candidate
    predicted_gib: float | None
    compiled_gib: float
    seconds: float

    def fits(self, budget_gib: float) -> bool:
        return self.compiled_gib <= budget_gib


@dataclasses.dataclass
class SearchResult:
    chosen: Trial
    trials: list[Trial]
    converged: bool  # the next candidate up was compiled and does not fit, or the ladder ended


class MemoryModel:
    """``fixed(c) + a + slope * voxels(c)``, through the trials nearest the boundary."""

    def __init__(self, ladder: Sequence[Candidate], fixed_gib: Callable[[Candidate], float]):
        self.ladder, self.fixed_gib = ladder, fixed_gib
        self.a, self.slope = 0.0, 0.0

    def fit(self, trials: Sequence[Trial]) -> None:
        """Two trials: the line through them; one: through the origin (over-estimates)."""
        points = [(t.candidate.voxels, t.compiled_gib - self.fixed_gib(t.candidate))
                  for t in trials]
        if len(points) == 1 or points[0][0] == points[-1][0]:
            self.a, self.slope = 0.0, max(points[-1][1], 0.0) / points[-1][0]
            return
        (v0, r0), (v1, r1) = points[0], points[-1]
        self.slope = (r1 - r0) / (v1 - v0)
        self.a = r0 - self.slope * v0

    def predict(self, index: int) -> float:
        cand = self.ladder[index]
        return self.fixed_gib(cand) + self.a + self.slope * cand.voxels

    def last_fitting(self, lo: int, hi: int, budget_gib: float) -> int:
        """The largest index in (lo, hi) predicted to fit (lo + 1 when none is)."""
        if self.slope <= 0.0:  # no usable trend: bisect
            return (lo + hi) // 2
        best = lo + 1
        for index in range(lo + 1, hi):
            if self.predict(index) <= budget_gib:
                best = index
        return best


def _pair(trials: dict[int, Trial], lo: int, hi: int) -> list[Trial]:
    """The trials to fit through: the bracket (lo, hi), or the two highest that fit."""
    if hi in trials:
        return [trials[lo], trials[hi]]
    below = sorted(i for i in trials if i <= lo)
    return [trials[i] for i in below[-2:]]


def find_largest_fitting(ladder: Sequence[Candidate],
                         compiled_gib: Callable[[Candidate], tuple[float, float]],
                         fixed_gib: Callable[[Candidate], float], budget_gib: float,
                         max_compiles: int = MAX_COMPILES, progress: bool = True
                         ) -> SearchResult:
    """Search ``ladder`` (memory increasing along it) for the last candidate within the budget.

    ``compiled_gib(c) -> (GiB per device, seconds)`` compiles; ``fixed_gib(c)`` is the exact
    state part of the memory. Raises :class:`PlanError` when even ``ladder[0]`` does not fit.
    """
    if not ladder:
        raise PlanError("no candidate to plan")
    if max_compiles < 2:
        raise PlanError(f"max_compiles must be >= 2, got {max_compiles}")
    model = MemoryModel(ladder, fixed_gib)
    trials: dict[int, Trial] = {}
    bar = tqdm(total=max_compiles, desc="compiling candidates", unit="compile",
               disable=not progress)

    def run(index: int, predicted: float | None) -> Trial:
        gib, seconds = compiled_gib(ladder[index])
        trials[index] = Trial(index, len(trials) + 1, ladder[index], predicted, gib, seconds)
        bar.set_postfix_str(f"{ladder[index].label()}: {gib:.2f} GiB")
        bar.update()
        return trials[index]

    with bar:
        first = run(0, None)
        if not first.fits(budget_gib):
            raise PlanError(
                f"the smallest candidate ({first.candidate.label()}: patch "
                f"{list(first.candidate.patch)}, batch {first.candidate.batch} per device, "
                f"{first.candidate.n_stages} stages) needs {first.compiled_gib:.3f} GiB per "
                f"device, more than the budget of {budget_gib:.3f} GiB: raise --memory-gb or "
                "make the model smaller (--config.model.base_features / max_features)")
        lo, hi = 0, len(ladder)
        while hi - lo > 1 and len(trials) < max_compiles:
            model.fit(_pair(trials, lo, hi))
            index = model.last_fitting(lo, hi, budget_gib)
            trial = run(index, model.predict(index) if model.slope > 0 else None)
            if trial.fits(budget_gib):
                lo = index
            else:
                hi = index
    ordered = [trials[i] for i in sorted(trials)]
    return SearchResult(trials[lo], ordered, converged=hi - lo == 1)


def format_table(trials: Sequence[Trial], budget_gib: float, chosen: Trial) -> str:
    """The candidates tried, in ladder order: predicted vs compiled memory per device."""
    head = (f"{'#':>4} {'try':>3} {'patch':>14} {'batch':>5} {'stages':>6} {'Mvox/dev':>9} "
            f"{'predicted':>10} {'compiled':>9} {'fits':>5} {'compile s':>9}")
    lines = [head, "-" * len(head)]
    for t in trials:
        c = t.candidate
        predicted = "-" if t.predicted_gib is None else f"{t.predicted_gib:.3f}"
        mark = " <- plan" if t is chosen else ""
        lines.append(f"{t.index:>4} {t.order:>3} {'x'.join(map(str, c.patch)):>14} {c.batch:>5} "
                     f"{c.n_stages:>6} {c.voxels / 1e6:>9.3f} {predicted:>10} "
                     f"{t.compiled_gib:>9.3f} {'yes' if t.fits(budget_gib) else 'no':>5} "
                     f"{t.seconds:>9.1f}{mark}")
    lines.append(f"memory in GiB per device (budget {budget_gib:.3f}); try: compile order")
    return "\n".join(lines)
