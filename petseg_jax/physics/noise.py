"""The simulator's low-dose noise, cheap enough for the input pipeline (numpy only, no jax).

The images of :mod:`simulation` (binomial thinning, OSEM with the PSF modelled, post-filter)
carry noise that is

- correlated: each of two components has a noise power spectrum (NPS) built from the site's
  sampled post-filter ``Kpost``, a partly deconvolved sampled PSF ``Kpsf`` (OSEM's resolution
  modelling sharpens the noise it recovers), an in-plane smoothing ``kappa`` (the projector's
  interpolation and OSEM's unconverged high frequencies) and an axial one ``kappa_z``::

      N(f) ~ |Kpost(f)|^2 |Kpsf(f)|^(-2 eta) exp(-4 pi^2 (kappa^2 f_xy^2 + kappa_z^2 f_z^2))

  (cycles/voxel; ``eta`` negative: the noise is smoother than the post-filter alone, as with a
  wide PSF). The fine component has its own ``eta``, ``kappa_fine``, an in-plane ramp
  ``(f_xy^2 + RAMP_FLOOR^2)^(ramp/2)`` (noise that stays where its counts were) and a ``tail``
  of white noise through the post-filter alone; the coarse one ``eta_coarse``,
  ``kappa_coarse``. The texture is their local mixture ``NPS_j = (1 - w_j) N_fine + w_j
  N_coarse``. At high counts ``w`` follows how much of a voxel's noise comes along its lines of
  response rather than from itself, ``w0 = clip(coarse_weight (rho / median(rho))^coarse_power)``
  with ``rho`` the filtered-backprojection variance (mean over the lines through the voxel of
  activity line integral / attenuation factor) over the local variance shape below (smoother
  noise in deep tissue, finer in hot organs); it falls as the counts do, ``w = w0 / (1 + (r /
  coarse_knee)^coarse_decay)`` with ``r = k v1 / x^2`` the relative variance (at very low counts
  OSEM's noise gets finer);
- uneven: at full dose its variance is ``v1 = s * m`` with the shape
  ``m = x_ref * (x / x_ref)^variance_power * att^-BETA * profile^-1`` (``x`` the local
  activity, ``att`` the mean attenuation factor of the lines of response through the voxel,
  ``profile`` the scanner's axial sensitivity) and ``s`` a per-case scale (the count level),
  estimated from the image's own noise with the texture known (:func:`estimate_scale`);
- proportional to the dose reduction factor ``k`` (variance ``k v1``), plus OSEM's low-count
  excess ``k v1 * low_count * min(r, 1)`` (noise grows faster than ``k`` where the relative
  noise is large: deep tissue at factor 100).

All these constants but ``BETA`` depend on the reconstruction setting (PSF modelled and
post-filter FWHM): they are fitted per setting to the simulator (:data:`TEXTURE_FITS`, one per
phantom center; BUILD_NOTES.md, "Session 7 - issue 14"). A setting not in the table is an error
(:func:`texture_fit`), never a silent fallback to another's texture. ``BETA`` is shared (fitted
on center_a, BUILD_NOTES.md "Session 5 - issue 14"). A lower dose ``F`` of an image stored at
factor ``k`` adds two zero-mean Gaussian fields, one per component, whose variances are what
the lower dose adds to each (:func:`add_dose_noise`); training augmentation and the
evaluation's dose sweep share it (:mod:`petseg_jax.data.dose`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import scipy.fft
import scipy.sparse as sp
from scipy import ndimage

from petseg_jax.physics.attenuation import body_outline, mu_from_labels
from petseg_jax.physics.geometry import SliceGeometry, system_matrix
from petseg_jax.physics.scanners import axial_sensitivity

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
P = 1.54  # variance ~ activity^P (the default variance_power; center_a's session-5 fit)
BETA = 0.56  # variance ~ attenuation factor^-BETA (AC images; 0 for NAC)
LOW_COUNT_WHITE = 0.35  # white-noise stores (no texture): variance excess at relative variance 1
# line maps are computed on the coarsest whole multiple of the image's in-plane spacing that is
# not coarser than this (the image's own grid when its spacing is above 4 mm)
ATTENUATION_GRID_MM = 8.0
_MAD_TO_SIGMA = 1.4826
# a case without PSF / post-filter metadata: the defaults of ``petseg_jax.data.lowdose``
# (documented in the ingest and raw-dataset docs; center_a's setting)
DEFAULT_PSF_FWHM_MM, DEFAULT_POST_FWHM_MM = 3.0, 3.0
_SETTING_TOLERANCE_MM = 0.05  # a metadata FWHM this close to a fitted setting's is that setting
RAMP_FLOOR = 0.05  # cycles/voxel: the fine component's in-plane ramp is flat below it


@dataclasses.dataclass(frozen=True)
class TextureFit:
    """The texture constants of one reconstruction setting, fitted to the simulator."""

    eta: float  # PSF recovered in the fine noise (1: fully deconvolved, < 0: the PSF smooths it)
    kappa_fine: float  # in-plane smoothing of the fine component, voxels
    kappa_coarse: float  # in-plane smoothing of the coarse component, voxels
    coarse_weight: float  # coarse fraction where rho is the body's median (at high counts)
    low_count: float  # variance excess at relative variance 1 (OSEM at very low counts)
    coarse_knee: float = 0.0  # relative variance where the coarse fraction has halved (0: never)
    coarse_decay: float = 2.0  # how fast it falls there: w = w0 / (1 + (r / knee)^decay)
    eta_coarse: float | None = None  # PSF recovered in the coarse noise (None: ``eta``)
    ramp: float = 0.0  # in-plane ramp exponent of the fine component
    kappa_z: float = 0.0  # axial smoothing of both components, voxels
    tail: float = 0.0  # fine component: power of post-filtered white noise added, per unit power
    coarse_power: float = 1.0  # coarse fraction at high counts: coarse_weight (rho / median)^this
    variance_power: float = P  # full-dose variance ~ activity^this

    def eta_of(self, coarse: bool) -> float:
        return self.eta if not coarse or self.eta_coarse is None else self.eta_coarse


# (PSF modelled in OSEM, post-filter) FWHM in mm -> texture, fitted on the 3 mm ellipse phantom
# (total-body protocol) at factors 10 and 100 (BUILD_NOTES.md, "Session 6 - issue 14")
TEXTURE_FITS: dict[tuple[float, float], TextureFit] = {
    (3.0, 3.0): TextureFit(0.54, 0.38, 0.88, 0.18, 0.13, coarse_knee=1.04, eta_coarse=0.46,
                           ramp=0.08, kappa_z=0.43, tail=0.04, coarse_power=1.18,
                           variance_power=1.50),  # center_a; data.lowdose's default
    (3.6, 4.0): TextureFit(0.14, 0.43, 0.71, 0.33, 0.18, coarse_knee=0.54, eta_coarse=-0.11,
                           ramp=0.17, kappa_z=0.61, tail=0.12, coarse_power=1.23,
                           variance_power=1.35),  # center_b
    (5.0, 4.25): TextureFit(-0.16, 0.88, 1.01, 0.75, 0.31, coarse_knee=0.65, eta_coarse=-0.13,
                            ramp=1.43, kappa_z=0.50, tail=0.21, coarse_power=0.93,
                            variance_power=1.20),  # center_c
}


def texture_fit(psf_fwhm_mm: float, post_fwhm_mm: float) -> TextureFit:
    """The fitted texture of the reconstruction setting (PSF, post-filter FWHM in mm); a
    ValueError for a setting that was never fitted (no other setting's texture stands in)."""
    for (psf, post), fit in TEXTURE_FITS.items():
        if (abs(psf - psf_fwhm_mm) <= _SETTING_TOLERANCE_MM
                and abs(post - post_fwhm_mm) <= _SETTING_TOLERANCE_MM):
            return fit
    known = ", ".join(f"{psf:g}/{post:g}" for psf, post in TEXTURE_FITS)
    raise ValueError(f"no noise texture is fitted for the reconstruction PSF {psf_fwhm_mm:g} mm / "
                     f"post-filter {post_fwhm_mm:g} mm (fitted PSF/post: {known}); fit one to the "
                     "simulator (physics.noise.TEXTURE_FITS) or use "
                     "data.dose_augmentation.noise_model=independent")


@dataclasses.dataclass(frozen=True)
class Texture:
    """The noise texture of a site's images: PSF (modelled in OSEM) and post-filter FWHM, mm,
    on a grid of ``spacing`` mm. The setting must be one of :data:`TEXTURE_FITS` (ValueError
    otherwise)."""

    psf_fwhm_mm: float
    post_fwhm_mm: float
    spacing: tuple[float, float, float]

    def __post_init__(self):
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"texture spacing must be 3 positive numbers, got {self.spacing}")
        if self.psf_fwhm_mm < 0 or self.post_fwhm_mm < 0:
            raise ValueError(f"FWHMs must be >= 0, got psf {self.psf_fwhm_mm}, post "
                             f"{self.post_fwhm_mm}")
        texture_fit(self.psf_fwhm_mm, self.post_fwhm_mm)  # an unknown setting fails here

    @property
    def fit(self) -> TextureFit:
        """The setting's fitted constants."""
        return texture_fit(self.psf_fwhm_mm, self.post_fwhm_mm)

    def kappa(self, coarse: bool = False) -> float:
        """In-plane smoothing of the fine (or ``coarse``) component, voxels."""
        return self.fit.kappa_coarse if coarse else self.fit.kappa_fine

    def to_json(self) -> dict:
        """A JSON-ready dict (the store's manifest keeps it per case)."""
        return {"psf_fwhm_mm": self.psf_fwhm_mm, "post_fwhm_mm": self.post_fwhm_mm,
                "spacing": list(self.spacing)}

    @classmethod
    def from_json(cls, obj: dict) -> "Texture":
        return cls(float(obj["psf_fwhm_mm"]), float(obj["post_fwhm_mm"]), tuple(obj["spacing"]))


WHITE = None  # a texture of None: independent voxels (the synthetic stores' Poisson noise)


def _sampled_response(fwhm_mm: float, step: float, freq: np.ndarray) -> np.ndarray:
    """Frequency response (cycles/voxel) of a Gaussian sampled on the grid, radius ceil(3 sigma),
    as the simulator applies it."""
    sigma = fwhm_mm * FWHM_TO_SIGMA / step
    radius = int(np.ceil(3 * sigma))
    if radius == 0:
        return np.ones_like(freq)
    i = np.arange(-radius, radius + 1)
    taps = np.exp(-0.5 * (i / sigma) ** 2)
    taps /= taps.sum()
    return np.cos(2 * np.pi * freq[..., None] * i) @ taps


def texture_nps(texture: Texture, shape: Sequence[int], coarse: bool = False,
                half: bool = False) -> np.ndarray:
    """The (unnormalised) NPS of the fine (or ``coarse``) component on the FFT grid of
    ``shape`` (``half``: the ``rfftn`` grid), float64: per axis the sampled post-filter squared
    times the sampled PSF to the power ``-2 eta``, along z a Gaussian of ``kappa_z`` voxels,
    in-plane a Gaussian of ``kappa`` voxels and (fine component) the ramp ``(f_xy^2 +
    RAMP_FLOOR^2)^(ramp / 2)`` of noise that stays where its counts were, plus ``tail`` times
    as much power of white noise through the post-filter alone (the finest texture it can have;
    means over the grid)."""
    fit = texture.fit
    eta = fit.eta_of(coarse)
    freqs = [np.abs(np.fft.fftfreq(int(shape[0]))), np.abs(np.fft.fftfreq(int(shape[1]))),
             np.fft.rfftfreq(int(shape[2])) if half else np.abs(np.fft.fftfreq(int(shape[2])))]
    axes = []
    for axis, (f, step) in enumerate(zip(freqs, texture.spacing)):
        post = _sampled_response(texture.post_fwhm_mm, step, f) ** 2
        psf = np.maximum(_sampled_response(texture.psf_fwhm_mm, step, f) ** 2, 1e-3)
        kappa = texture.kappa(coarse) if axis < 2 else fit.kappa_z
        axes.append(post * psf ** -eta * np.exp(-4 * np.pi ** 2 * kappa ** 2 * f ** 2))
    nps = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    if fit.ramp and not coarse:
        fxy2 = freqs[0][:, None, None] ** 2 + freqs[1][None, :, None] ** 2
        nps = nps * ((fxy2 + RAMP_FLOOR ** 2) / RAMP_FLOOR ** 2) ** (fit.ramp / 2)
    if fit.tail and not coarse:
        posts = [_sampled_response(texture.post_fwhm_mm, step, f) ** 2
                 for f, step in zip(freqs, texture.spacing)]
        white = posts[0][:, None, None] * posts[1][None, :, None] * posts[2][None, None, :]
        def mean(a):
            return _full_grid_mean(a, int(shape[2])) if half else float(a.mean())

        nps = nps / mean(nps) + fit.tail * white / mean(white)
    return nps


def _full_grid_mean(half_grid: np.ndarray, nz: int) -> float:
    """The mean over the full FFT grid of a Hermitian-symmetric array given on the rfftn grid."""
    w = np.full(half_grid.shape[2], 2.0)
    w[0] = 1.0
    if nz % 2 == 0:
        w[-1] = 1.0
    return float((half_grid.sum((0, 1)) * w).sum() / (half_grid.shape[0] * half_grid.shape[1] * nz))


@functools.lru_cache(maxsize=16)
def spectral_filter(texture: Texture, shape: tuple[int, int, int], coarse: bool = False
                    ) -> np.ndarray:
    """sqrt(NPS) of the fine (or ``coarse``) component on the ``rfftn`` grid of ``shape``,
    scaled so that filtered white noise has unit variance (float32; cached per process)."""
    nps = texture_nps(texture, shape, coarse, half=True)
    return np.sqrt(nps / _full_grid_mean(nps, shape[2])).astype(np.float32)


def correlated_field(shape: Sequence[int], texture: Texture | None, rng: np.random.Generator,
                     coarse: bool = False) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian field of ``texture``'s fine (or ``coarse``) component
    (periodic), float32; ``texture=None``: white noise."""
    shape = tuple(int(s) for s in shape)
    white = rng.standard_normal(shape, dtype=np.float32)
    if texture is None:
        return white
    spectrum = scipy.fft.rfftn(white, workers=1)
    spectrum *= spectral_filter(texture, shape, coarse)
    return scipy.fft.irfftn(spectrum, shape, workers=1).astype(np.float32, copy=False)


def noise_variances(variance_full: np.ndarray, activity: np.ndarray, factor: float,
                    low_count: float, coarse_fraction: np.ndarray | None = None,
                    coarse_knee: float = 0.0, coarse_decay: float = 2.0
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """The noise variance of voxels at dose reduction ``factor``, split into the texture's fine
    and coarse components (float32; coarse None when ``coarse_fraction`` is None: all fine).

    Variance ``V = k v1 (1 + low_count min(r, 1))`` with ``r = k v1 / x^2`` the relative variance
    (``v1`` = ``variance_full``, ``x`` = ``activity``): OSEM's excess at very low counts. The
    coarse share is ``w = coarse_fraction / (1 + (r / coarse_knee)^coarse_decay)``: the noise
    gets finer as the counts fall (``coarse_knee`` 0: ``w = coarse_fraction``)."""
    v = np.maximum(variance_full, 0.0) * np.float32(factor)
    relative = v / np.maximum(np.square(activity), np.float32(1e-12))
    total = v * (1.0 + np.float32(low_count) * np.minimum(relative, 1.0))
    if coarse_fraction is None:
        return total, None
    w = np.clip(np.asarray(coarse_fraction, np.float32), 0.0, 1.0)
    if coarse_knee > 0:
        ratio = relative / np.float32(coarse_knee)
        # in air (activity ~0) the relative variance is huge: its power may overflow to inf,
        # which gives w its limit, 0
        with np.errstate(over="ignore"):
            ratio = (ratio * ratio if coarse_decay == 2.0
                     else np.power(ratio, np.float32(coarse_decay)))
        w = w / (1.0 + ratio)
    coarse = total * w
    return total - coarse, coarse


def add_dose_noise(image: np.ndarray, variance_full: np.ndarray, factor: float,
                   stored_factor: float, texture: Texture | None, rng: np.random.Generator,
                   coarse_fraction: np.ndarray | None = None) -> np.ndarray:
    """``image`` (stored at ``stored_factor``) brought to dose reduction ``factor``: plus a
    field of ``texture`` whose fine and coarse variances are what the lower dose adds to each
    (:func:`noise_variances` at ``factor`` minus at ``stored_factor``; float32, a new array).

    ``variance_full`` and ``coarse_fraction``: the full-dose variance and the texture's coarse
    fraction at high counts on the image's grid (None: the fine texture alone)."""
    if not factor >= 1.0 or not stored_factor >= 1.0:
        raise ValueError(f"dose reduction factors must be >= 1, got {factor}, {stored_factor}")
    image = np.asarray(image, np.float32)
    if image.shape != np.shape(variance_full):
        raise ValueError(f"image {image.shape} and variance map {np.shape(variance_full)} "
                         "differ in shape")
    if factor <= stored_factor:
        return image.copy()
    activity = np.maximum(image, 0.0)
    if texture is None:
        low_count, knee, decay, coarse_fraction = LOW_COUNT_WHITE, 0.0, 2.0, None
    else:
        fit = texture.fit
        low_count, knee, decay = fit.low_count, fit.coarse_knee, fit.coarse_decay
    fine, coarse = noise_variances(variance_full, activity, factor, low_count, coarse_fraction,
                                   knee, decay)
    fine0, coarse0 = noise_variances(variance_full, activity, stored_factor, low_count,
                                     coarse_fraction, knee, decay)
    fine -= fine0
    field = correlated_field(image.shape, texture, rng)
    field *= np.sqrt(np.maximum(fine, 0.0, out=fine), out=fine)
    if coarse is not None:
        coarse -= coarse0
        field += (correlated_field(image.shape, texture, rng, coarse=True)
                  * np.sqrt(np.maximum(coarse, 0.0, out=coarse), out=coarse))
    field += image
    return field


# --- per-case maps (ingest) ---------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _line_operator(geom: SliceGeometry) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """The float32 system matrix of ``geom``, its transpose (both CSR) and the number of lines
    through each pixel (a column); cached per process, since the cases of a dataset share the
    scanner's transaxial field of view and so one geometry."""
    a = system_matrix(geom).astype(np.float32)
    a_t = a.T.tocsr()
    through = np.maximum(np.asarray(a_t @ np.ones(a.shape[0], np.float32))[:, None], 1e-12)
    return a, a_t, through


def _project_support(a: sp.csr_matrix, image: np.ndarray) -> np.ndarray:
    """``a @ image`` over the pixels that are non-zero in some slice only (a mu map is zero in
    the air, ~60-75 % of the demo's field of view): the same sums of the same products in the
    same order, bitwise, less the products with zero."""
    support = np.flatnonzero(image.any(axis=1))
    if support.size == image.shape[0]:
        return a @ image
    return a[:, support] @ image[support]


def line_maps(mu: np.ndarray, activity: np.ndarray, spacing: Sequence[float],
              attenuation_corrected: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Per-voxel means over the (rebinned, 2-D) lines of response through it of the
    attenuation factor ``a = exp(-line integral of mu)`` and of ``p / a`` (``p`` the activity's
    line integral; ``p`` alone for NAC, where the attenuation map is then None): the
    attenuation the variance follows, and the filtered-backprojection variance that sets the
    texture's coarse fraction. Computed in-plane on the coarsest whole multiple of the spacing
    not above ``ATTENUATION_GRID_MM`` (2 mm -> 8 mm, 3 mm -> 6 mm, 6 mm -> 6 mm) and
    interpolated back (both vary slowly); float32."""
    mu = np.asarray(mu, np.float32)
    if mu.ndim != 3 or mu.shape != np.shape(activity):
        raise ValueError(f"mu {mu.shape} and activity {np.shape(activity)} must be 3-D volumes of "
                         "one shape")
    steps = [max(1, int(ATTENUATION_GRID_MM // float(s))) for s in spacing[:2]]

    def coarse(v):
        return ndimage.uniform_filter(np.asarray(v, np.float32), steps + [1])[
            steps[0] // 2::steps[0], steps[1] // 2::steps[1]]

    mu_c, act_c = coarse(mu), coarse(np.maximum(activity, 0.0))
    nx, ny, nz = mu_c.shape
    a, a_t, through = _line_operator(SliceGeometry(nx, ny, float(spacing[0]) * steps[0],
                                                   float(spacing[1]) * steps[1], max(nx, ny)))
    survival = (np.exp(-_project_support(a, mu_c.reshape(nx * ny, nz))) if attenuation_corrected
                else 1.0)
    lines = _project_support(a, act_c.reshape(nx * ny, nz))

    def back(sino):
        mean = (a_t @ sino / through).reshape(nx, ny, nz)
        full = ndimage.zoom(mean, [mu.shape[0] / nx, mu.shape[1] / ny, 1.0], order=1,
                            mode="nearest", grid_mode=True)
        return full[:mu.shape[0], :mu.shape[1]].astype(np.float32)

    if not attenuation_corrected:
        return None, back(lines)
    return np.clip(back(survival), 1e-6, 1.0), back(lines / survival)


def variance_shape(image: np.ndarray, attenuation: np.ndarray | None, profile: np.ndarray,
                   texture: Texture, body: np.ndarray) -> np.ndarray:
    """The full-dose variance map up to the case's scale: ``x_ref (x / x_ref)^P att^-BETA /
    profile`` with ``x`` the image smoothed over the texture's width and ``x_ref`` its median
    in ``body``; ``attenuation=None`` (NAC images) drops the attenuation term."""
    sigma = [max(texture.post_fwhm_mm, s) * FWHM_TO_SIGMA / s for s in texture.spacing]
    x = np.maximum(ndimage.gaussian_filter(np.maximum(image, 0.0).astype(np.float32), sigma), 0.0)
    inside = x[body]
    x_ref = float(np.median(inside)) if inside.size else 0.0
    if not x_ref > 0:
        raise ValueError("the body holds no activity: cannot shape the noise map")
    m = x_ref * (x / x_ref) ** np.float32(texture.fit.variance_power)
    if attenuation is not None:
        m *= np.asarray(attenuation, np.float32) ** np.float32(-BETA)
    m /= np.maximum(np.asarray(profile, np.float32), 1e-3)[None, None, :]
    return m.astype(np.float32)


def _residual_gain(texture: Texture | None, coarse: bool = False, size: int = 32) -> float:
    """Variance of ``x - mean of its 6 neighbours`` for a unit-variance field of ``texture``'s
    fine (or ``coarse``) component."""
    f = np.fft.fftfreq(size)
    h6 = sum(np.cos(2 * np.pi * g) for g in np.meshgrid(f, f, f, indexing="ij")) / 3.0
    if texture is None:
        return float(np.mean((1 - h6) ** 2))
    nps = texture_nps(texture, (size,) * 3, coarse)
    return float(np.mean(nps * (1 - h6) ** 2) / np.mean(nps))


def estimate_scale(image: np.ndarray, shape_map: np.ndarray, mask: np.ndarray,
                   texture: Texture | None, coarse_fraction: np.ndarray | float = 0.0) -> float:
    """The case's variance scale ``s`` (``v1 = s * shape_map``) from the image's own noise in
    ``mask``: the 6-neighbour residual has variance ``gain * v1`` for noise of ``texture``
    (``gain`` mixed as the texture is), so a robust (MAD) variance of
    ``residual / sqrt(gain * shape_map)`` estimates ``s``."""
    if mask.sum() < 512:
        raise ValueError(f"noise estimation needs >= 512 voxels of tissue, got {int(mask.sum())}")
    image = np.asarray(image, np.float32)
    x = np.pad(image, 1, mode="edge")
    neighbours = sum(np.roll(x, shift, axis)[1:-1, 1:-1, 1:-1]
                     for axis in range(3) for shift in (-1, 1)) / 6.0
    residual = (image - neighbours)[mask]
    w = np.broadcast_to(np.asarray(coarse_fraction, np.float32), image.shape)[mask]
    gain = (1.0 - w) * _residual_gain(texture) + w * _residual_gain(texture, coarse=True)
    scaled = residual / np.sqrt(gain * np.maximum(shape_map[mask], 1e-12))
    mad = np.median(np.abs(scaled - np.median(scaled)))
    s = float((_MAD_TO_SIGMA * mad) ** 2)
    if not s > 0:
        raise ValueError("the image shows no noise: is it noise-free?")
    return s


# --- validation ---------------------------------------------------------------------------------

def band_nps(noise: np.ndarray, mask: np.ndarray, bands: int = 4) -> np.ndarray:
    """Radially averaged 3-D noise power spectrum of ``noise`` inside ``mask`` (mean removed,
    zero-padded 2x), averaged in ``bands`` equal bands of |f| from 0 to 0.5 cycles/voxel;
    in variance units (the bands of white noise of variance v are all v)."""
    mask = np.asarray(mask, bool)
    if mask.sum() < 64:
        raise ValueError(f"the NPS needs >= 64 voxels, got {int(mask.sum())}")
    n = np.where(mask, noise - noise[mask].mean(), 0.0)
    pad = [2 * s for s in n.shape]
    power = np.abs(np.fft.fftn(n, pad, axes=(0, 1, 2))) ** 2 / mask.sum()
    f = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.fft.fftfreq(p) for p in pad],
                                                 indexing="ij")))
    edges = np.linspace(0.0, 0.5, bands + 1)
    return np.array([power[(f >= lo) & (f < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])


def full_dose_variance(image: np.ndarray, labels: np.ndarray, label_names: dict[int, str],
                       spacing: Sequence[float], texture: Texture, attenuation_corrected: bool,
                       field_of_view: str, dose_reduction_factor: float = 1.0,
                       mu: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, float]:
    """The full-dose noise variance map of a reconstructed image (float32, image units^2), its
    texture's coarse fraction (float32) and its scale ``s``, as ingest stores them.

    ``mu`` (1/mm) when known, else from the body outline and the label map
    (:func:`petseg_jax.physics.attenuation.mu_from_labels`); the axial profile of
    ``field_of_view``'s scanner class with the scan centred; ``s`` from the image's own noise
    inside the eroded body, divided by ``dose_reduction_factor`` (the image's own factor).
    """
    if not dose_reduction_factor >= 1.0:
        raise ValueError(f"dose reduction factor must be >= 1, got {dose_reduction_factor}")
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape != np.shape(labels):
        raise ValueError(f"image {image.shape} and labels {np.shape(labels)} must be 3-D volumes "
                         "of one shape")
    if not np.isfinite(image).all():
        raise ValueError("the image holds NaN or infinite values")
    body = body_outline(image)
    if mu is None:
        mu = mu_from_labels(body, labels, label_names)
    attenuation, fbp = line_maps(mu, image, spacing, attenuation_corrected)
    profile = axial_sensitivity(image.shape[2], float(spacing[2]), field_of_view)
    shape = variance_shape(image, attenuation, profile, texture, body)
    rho = fbp / np.maximum(shape * np.maximum(profile, 1e-3)[None, None, :], 1e-12)
    fit = texture.fit
    coarse = np.clip(fit.coarse_weight * (rho / np.median(rho[body])) ** fit.coarse_power, 0.0,
                     1.0).astype(np.float32)
    inner = ndimage.binary_erosion(body, iterations=2)
    scale = estimate_scale(image, shape, inner, texture, coarse)
    if fit.coarse_knee > 0:  # the image's own coarse share at its count level, then again
        fine, rough = noise_variances(shape * np.float32(scale), np.maximum(image, 0.0), 1.0,
                                      fit.low_count, coarse, fit.coarse_knee, fit.coarse_decay)
        own = rough / np.maximum(fine + rough, np.float32(1e-30))
        scale = estimate_scale(image, shape, inner, texture, own)
    scale /= float(dose_reduction_factor)
    return (shape * np.float32(scale)).astype(np.float32), coarse, scale

