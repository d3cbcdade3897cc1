"""Tracer biodistribution tables for the synthetic PET phantom (SUV, case-to-case spread).

Values are mean SUV (body weight) about 60 min after injection, set from published normal
biodistributions (qualitatively; see BUILD_NOTES.md "Synthetic phantom" for the reasoning).
Each entry is ``(suv, cv)``: a case draws ``suv * lognormal(sigma=cv)``. Keys are tissue uptake
classes (see ``anatomy.TISSUES``), not label ids: several tissues of one organ (kidney
cortex, medulla, pelvis) have their own entries, and unlabeled tissue (fat, muscle, salivary
glands, pituitary, bone) is drawn too so that the background is not flat.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from petseg_jax.data.raw_dataset import KNOWN_TRACERS

UPTAKE_KEYS: tuple[str, ...] = (
    "fat", "muscle", "visceral", "bone", "csf", "blood", "myocardium", "brain_grey",
    "brain_white", "kidney_cortex", "kidney_medulla", "urine", "liver", "spleen", "stomach",
    "pancreas", "adrenal", "lung", "esophagus", "airway", "thyroid", "small_bowel", "duodenum",
    "colon", "gallbladder", "marrow", "spinal_cord", "salivary", "pituitary",
)


def _table(**entries: tuple[float, float]) -> dict[str, tuple[float, float]]:
    missing = set(UPTAKE_KEYS) - set(entries)
    if missing:
        raise ValueError(f"uptake table misses {sorted(missing)}")
    return entries


# fmt: off
UPTAKE: dict[str, dict[str, tuple[float, float]]] = {
    # 18F-FDG: glucose metabolism. Brain grey matter and (variable) myocardium highest, urinary
    # excretion (kidney pelvis, bladder), liver > blood pool > spleen, bowel variable.
    "FDG": _table(
        fat=(0.35, .2), muscle=(0.75, .15), visceral=(0.45, .2), bone=(1.0, .2), csf=(0.3, .2),
        blood=(1.8, .15), myocardium=(5.0, .6), brain_grey=(9.0, .15), brain_white=(3.2, .15),
        kidney_cortex=(2.6, .2), kidney_medulla=(2.1, .2), urine=(18., .5), liver=(2.4, .12),
        spleen=(1.9, .12), stomach=(2.0, .3), pancreas=(1.5, .15), adrenal=(1.8, .15),
        lung=(0.5, .2), esophagus=(1.8, .25), airway=(0.15, .3), thyroid=(1.6, .3),
        small_bowel=(1.7, .25), duodenum=(1.9, .25), colon=(1.6, .35), gallbladder=(0.9, .2),
        marrow=(1.7, .2), spinal_cord=(2.0, .15), salivary=(2.2, .2), pituitary=(1.5, .2)),
    # 68Ga-PSMA-11: kidneys and salivary glands very high, small bowel/duodenum, spleen and
    # liver high, urinary excretion, brain and background low.
    "PSMA": _table(
        fat=(0.2, .2), muscle=(0.5, .2), visceral=(0.3, .2), bone=(0.9, .2), csf=(0.1, .2),
        blood=(1.4, .2), myocardium=(1.3, .2), brain_grey=(0.15, .2), brain_white=(0.1, .2),
        kidney_cortex=(35., .3), kidney_medulla=(20., .3), urine=(25., .6), liver=(5.5, .2),
        spleen=(7.0, .25), stomach=(2.0, .3), pancreas=(2.5, .3), adrenal=(3.5, .3),
        lung=(0.4, .2), esophagus=(1.2, .25), airway=(0.1, .3), thyroid=(1.5, .3),
        small_bowel=(7.0, .35), duodenum=(10., .35), colon=(2.5, .4), gallbladder=(1.5, .5),
        marrow=(1.2, .2), spinal_cord=(0.4, .2), salivary=(16., .3), pituitary=(0.5, .3)),
    # 68Ga-DOTATATE: somatostatin receptors. Spleen highest, then adrenals, kidneys, liver and
    # pituitary; pancreas (uncinate) and thyroid moderate, brain very low. Published SUVmean
    # (81 patients, 68Ga-DOTA-TATE and -NOC: "Highly variable biodistribution of 68Ga-labeled
    # somatostatin analogues ...", BUILD_NOTES.md "Synthetic phantom"): spleen 17.3 (mean),
    # adrenals 12.6, liver 4.8, pituitary 9.7 (medians). Kidneys have only published SUVmax
    # (14.3, Kuyumcu et al., Ann Nucl Med 2013): scaled by the spleen's SUVmean / SUVmax
    # (17.3 / 24.67), a whole-kidney mean of ~10 (an estimate, not a published SUVmean).
    "DOTATATE": _table(
        fat=(0.2, .2), muscle=(0.6, .2), visceral=(0.3, .2), bone=(0.9, .2), csf=(0.1, .2),
        blood=(1.3, .2), myocardium=(1.2, .2), brain_grey=(0.1, .2), brain_white=(0.08, .2),
        kidney_cortex=(11.0, .3), kidney_medulla=(6.9, .3), urine=(20., .6), liver=(4.8, .3),
        spleen=(17.3, .3), stomach=(3.5, .35), pancreas=(4.0, .35), adrenal=(12.6, .35),
        lung=(0.5, .2), esophagus=(1.2, .25), airway=(0.1, .3), thyroid=(3.0, .3),
        small_bowel=(3.5, .3), duodenum=(4.0, .3), colon=(2.0, .35), gallbladder=(0.6, .3),
        marrow=(1.2, .2), spinal_cord=(0.4, .2), salivary=(2.5, .3), pituitary=(9.7, .3)),
    # 68Ga-FAPI: fibroblast activation protein. Very low background and brain, fast renal
    # excretion (bladder high, kidneys moderate), physiological pancreas and muscle uptake.
    "FAPI": _table(
        fat=(0.3, .2), muscle=(1.0, .2), visceral=(0.4, .2), bone=(0.8, .2), csf=(0.2, .2),
        blood=(1.6, .2), myocardium=(1.5, .25), brain_grey=(0.15, .2), brain_white=(0.1, .2),
        kidney_cortex=(3.5, .3), kidney_medulla=(3.0, .3), urine=(25., .6), liver=(1.2, .2),
        spleen=(1.2, .2), stomach=(1.6, .3), pancreas=(2.5, .4), adrenal=(1.6, .25),
        lung=(0.6, .2), esophagus=(1.8, .25), airway=(0.1, .3), thyroid=(1.8, .3),
        small_bowel=(1.3, .3), duodenum=(1.5, .3), colon=(1.4, .35), gallbladder=(0.8, .3),
        marrow=(1.0, .2), spinal_cord=(0.5, .2), salivary=(2.5, .3), pituitary=(0.6, .3)),
    # 68Ga-grazytracer (granzyme B peptide): renal clearance dominates (kidneys, bladder),
    # moderate liver and spleen (granzyme-B-rich lymphoid tissue), slower blood clearance,
    # low brain and background.
    "Grazytracer": _table(
        fat=(0.2, .2), muscle=(0.5, .2), visceral=(0.3, .2), bone=(1.1, .2), csf=(0.1, .2),
        blood=(1.6, .2), myocardium=(1.3, .2), brain_grey=(0.1, .2), brain_white=(0.08, .2),
        kidney_cortex=(12., .3), kidney_medulla=(9.0, .3), urine=(30., .6), liver=(2.8, .2),
        spleen=(3.5, .25), stomach=(1.2, .3), pancreas=(1.0, .25), adrenal=(1.2, .25),
        lung=(0.5, .2), esophagus=(1.0, .25), airway=(0.1, .3), thyroid=(1.3, .3),
        small_bowel=(1.8, .3), duodenum=(2.0, .3), colon=(1.5, .35), gallbladder=(1.0, .3),
        marrow=(1.3, .2), spinal_cord=(0.4, .2), salivary=(1.5, .3), pituitary=(0.3, .3)),
}
# Within-organ texture: amplitude of the log-normal smooth random field per uptake class.
TEXTURE: dict[str, float] = {
    "fat": .15, "muscle": .12, "visceral": .25, "bone": .15, "csf": .1, "blood": .05,
    "myocardium": .15, "brain_grey": .1, "brain_white": .1, "kidney_cortex": .1,
    "kidney_medulla": .15, "urine": .05, "liver": .08, "spleen": .08, "stomach": .3,
    "pancreas": .15, "adrenal": .1, "lung": .2, "esophagus": .2, "airway": .2, "thyroid": .15,
    "small_bowel": .35, "duodenum": .3, "colon": .4, "gallbladder": .05, "marrow": .12,
    "spinal_cord": .08, "salivary": .1, "pituitary": .1,
}
# fmt: on
# Injected activity per kg body weight (MBq/kg) and the relative count yield per Bq
# (68Ga: 89 % positron branching and a shorter half-life than 18F during the scan).
INJECTED_MBQ_PER_KG: dict[str, float] = {
    "FDG": 3.7, "PSMA": 2.0, "DOTATATE": 2.0, "FAPI": 2.0, "Grazytracer": 2.0}
COUNT_YIELD: dict[str, float] = {
    "FDG": 1.0, "PSMA": 0.75, "DOTATATE": 0.75, "FAPI": 0.75, "Grazytracer": 0.75}
# Positron emitter of each tracer. 18F's mean positron range (0.6 mm in water) is far below
# the voxel size and not modelled; 68Ga's (mean 3.5 mm, maximum 9.2 mm in water: Conti and
# Eriksson, EJNMMI Phys 2016;3:8) is an extra blur of the activity before the scanner.
NUCLIDE: dict[str, str] = {
    "FDG": "18F", "PSMA": "68Ga", "DOTATATE": "68Ga", "FAPI": "68Ga", "Grazytracer": "68Ga"}
# 68Ga annihilation-point spread: a sharp cusp with long tails (Jodal, Le Loirec and Champion,
# Phys Med Biol 2012;57:3931), approximated as half the activity staying in place (the cusp is
# far narrower than a voxel) and half spread by a Gaussian of this sigma in water (mean 3-D
# displacement 0.5 * 1.6 * 3.2 = 2.6 mm); in lung (density ~0.26 g/ml) the range is
# 1/0.26 = 3.8x longer.
GA68_TAIL_FRACTION = 0.5
GA68_TAIL_SIGMA_MM = 3.2
LUNG_RANGE_FACTOR = 3.8
if set(UPTAKE) != set(KNOWN_TRACERS) or set(NUCLIDE) != set(KNOWN_TRACERS):
    raise ValueError("the phantom's uptake tables must cover exactly KNOWN_TRACERS")


def case_suv(tracer: str, rng: np.random.Generator) -> dict[str, float]:
    """One case's mean SUV per uptake class (case-to-case log-normal variation)."""
    table = UPTAKE[tracer]
    return {key: float(suv * np.exp(cv * rng.standard_normal() - cv * cv / 2))
            for key, (suv, cv) in sorted(table.items())}


def suv_tables(uptake_keys: list[str | None], suv: dict[str, float]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per tissue code: mean SUV, and mean SUV times texture amplitude (``TEXTURE``), float32;
    ``uptake_keys[code]`` is the tissue's uptake class (None = no activity)."""
    mean = np.array([suv[k] if k else 0.0 for k in uptake_keys], np.float32)
    amp = np.array([TEXTURE[k] if k else 0.0 for k in uptake_keys], np.float32)
    return mean, mean * amp


def textured_suv(mean: np.ndarray, weighted_amp: np.ndarray, field: np.ndarray) -> np.ndarray:
    """SUV volume: mean SUV times a log-normal texture ``exp(a*field - a^2/2)``, where ``a`` is
    the voxel's activity-weighted texture amplitude (``weighted_amp / mean``, from
    :func:`suv_tables` averaged over the voxel) and ``field`` a smooth zero-mean unit-variance
    random field of the same shape."""
    a = weighted_amp / np.maximum(mean, np.float32(1e-12))
    return (mean * np.exp(a * field - 0.5 * a * a)).astype(np.float32)


def positron_range_blur(activity: np.ndarray, lung_fraction: np.ndarray, spacing,
                        tracer: str) -> np.ndarray:
    """``activity`` (Bq/ml) with the tracer's positron range applied (68Ga only, see
    ``GA68_TAIL_SIGMA_MM``); ``lung_fraction`` is each voxel's fraction of lung tissue, whose
    activity spreads ``LUNG_RANGE_FACTOR`` times farther."""
    if NUCLIDE[tracer] != "68Ga":
        return activity
    out = np.float32(1 - GA68_TAIL_FRACTION) * activity
    lung = activity * lung_fraction
    for part, sigma_mm in ((activity - lung, GA68_TAIL_SIGMA_MM),
                           (lung, GA68_TAIL_SIGMA_MM * LUNG_RANGE_FACTOR)):
        sigma = [sigma_mm / float(s) for s in spacing]
        out += np.float32(GA68_TAIL_FRACTION) * ndimage.gaussian_filter(
            part, sigma, mode="constant", truncate=3.0)
    return out.astype(np.float32)
