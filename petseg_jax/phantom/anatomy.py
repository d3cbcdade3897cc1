"""Synthetic total-body anatomy for the PET phantom: smooth implicit shapes on a voxel grid.

World frame: nibabel's RAS+ in mm, i.e. **+x = the subject's right**, +y = anterior,
+z = superior (the same convention as real TotalSegmentator/NIfTI data: a liver has a larger
world x than a spleen). The reference subject is 1750 mm tall, feet at z = 0, midline x = 0.
A subject lies supine on the scanner bed, whole from head to feet, arms down, up or one of each.

Scan frame (:meth:`Anatomy.field_of_view`): a fixed transaxial field of view
(``TRANSAXIAL_FOV_MM`` square, air around the body, the bed below it) and an axial range by
scanner class: the whole subject (``total_body``), ``LONG_AXIAL_FOV_MM`` placed at random
(``long_axial``) or skull base to mid-thigh (``conventional``).

Breathing (:meth:`Anatomy.ct_phase`): the anatomy is drawn at the time-averaged breathing
position (what a PET of several minutes sees); the labels are that anatomy moved to one CT
breathing phase: organs near the diaphragm shift along z by ``diaphragm_shift_mm`` (drawn per
case, magnitude uniform in [5, 20] mm, sign at random), fading to no shift 250 mm below and
150 mm above the dome; bone, muscle, fat and the bed do not move.

Every structure is an implicit shape (ellipsoid, tube along a Catmull-Rom centreline, torso
profile, spine column) evaluated only inside its bounding box, at coordinates displaced by a
smooth random warp (shared body warp + one per organ), so a case is subject-specific yet fast.
Structures are painted into a tissue-code volume in a fixed priority order (later wins);
tissues map to label-schema organs, uptake classes and attenuation coefficients.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Sequence

import numpy as np

R, L = 1.0, -1.0  # sign of x on the subject's right / left side (RAS+)
REF_HEIGHT = 1750.0
TRANSAXIAL_FOV_MM = 650.0  # uEXPLORER ~686 mm, conventional 600-700 mm
LONG_AXIAL_FOV_MM = 1060.0  # Biograph Vision Quadra
ARM_POSES: dict[tuple[str, str], float] = {  # (right, left) arm -> probability
    ("down", "down"): 0.7, ("up", "up"): 0.2, ("down", "up"): 0.05, ("up", "down"): 0.05}
SHIFT_RANGE_MM = (5.0, 20.0)  # |CT-phase minus time-averaged diaphragm position|


@dataclasses.dataclass(frozen=True)
class Tissue:
    name: str
    organ: str | None  # label schema organ, None = background
    uptake: str | None  # key in uptake tables, None = no activity (air)
    mu: float  # linear attenuation coefficient at 511 keV, 1/mm


# fmt: off
TISSUES: tuple[Tissue, ...] = (
    Tissue("air", None, None, 0.0), Tissue("fat", None, "fat", .0086),
    Tissue("muscle", None, "muscle", .0100), Tissue("visceral", None, "visceral", .0092),
    Tissue("bone", None, "bone", .0140), Tissue("csf", None, "csf", .0096),
    Tissue("bed", None, None, .0060), Tissue("marrow", None, "marrow", .0110),
    Tissue("artery", None, "blood", .0100),
    Tissue("vein", None, "blood", .0100), Tissue("salivary", None, "salivary", .0096),
    Tissue("pituitary", None, "pituitary", .0096),
    Tissue("brain_grey", "brain", "brain_grey", .0097),
    Tissue("brain_white", "brain", "brain_white", .0097),
    Tissue("brain_ventricle", "brain", "csf", .0096),
    Tissue("lung_right", "lung_right", "lung", .0026),
    Tissue("lung_left", "lung_left", "lung", .0026),
    Tissue("small_bowel", "small_bowel", "small_bowel", .0095),
    Tissue("colon", "colon", "colon", .0088), Tissue("liver", "liver", "liver", .0099),
    Tissue("spleen", "spleen", "spleen", .0099), Tissue("stomach", "stomach", "stomach", .0094),
    Tissue("heart_blood", "heart", "blood", .0100),
    Tissue("myocardium", "heart", "myocardium", .0100),
    Tissue("kidney_right", "kidney_right", "kidney_cortex", .0099),
    Tissue("kidney_right_medulla", "kidney_right", "kidney_medulla", .0099),
    Tissue("kidney_right_pelvis", "kidney_right", "urine", .0097),
    Tissue("kidney_left", "kidney_left", "kidney_cortex", .0099),
    Tissue("kidney_left_medulla", "kidney_left", "kidney_medulla", .0099),
    Tissue("kidney_left_pelvis", "kidney_left", "urine", .0097),
    Tissue("duodenum", "duodenum", "duodenum", .0095),
    Tissue("pancreas", "pancreas", "pancreas", .0097),
    Tissue("gallbladder", "gallbladder", "gallbladder", .0097),
    Tissue("urinary_bladder", "urinary_bladder", "urine", .0097),
    Tissue("esophagus", "esophagus", "esophagus", .0095),
    Tissue("thyroid_gland", "thyroid_gland", "thyroid", .0100),
    Tissue("trachea", "trachea", "airway", .0010), Tissue("aorta", "aorta", "blood", .0100),
    Tissue("adrenal_gland_right", "adrenal_gland_right", "adrenal", .0097),
    Tissue("adrenal_gland_left", "adrenal_gland_left", "adrenal", .0097),
    Tissue("vertebral_body", "vertebrae", "marrow", .0120),
    Tissue("vertebral_arch", "vertebrae", "bone", .0140),
    Tissue("spinal_canal", None, "csf", .0096),
    Tissue("spinal_cord", "spinal_cord", "spinal_cord", .0097),
)
# fmt: on
TISSUE_CODE: dict[str, int] = {t.name: i for i, t in enumerate(TISSUES)}
ORGANS: frozenset[str] = frozenset(t.organ for t in TISSUES if t.organ)
# Tissues that follow breathing (Anatomy.ct_phase): soft tissue of the trunk.
_FIXED = {"air", "bed", "fat", "muscle", "bone", "marrow", "vertebral_body", "vertebral_arch",
          "spinal_canal", "spinal_cord", "csf"}
_MOVABLE = np.array([t.name not in _FIXED for t in TISSUES])


# ----------------------------------------------------------------------------- geometry

def _rot(deg_x: float = 0.0, deg_y: float = 0.0, deg_z: float = 0.0) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx (degrees); columns are the local axes in world space."""
    ax, ay, az = np.radians([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rot_to(axis: Sequence[float]) -> np.ndarray:
    """Rotation taking the local z axis onto ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(z, a), float(z @ a)
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


@dataclasses.dataclass
class Patch:
    """A box of the grid: index slices, undeformed 1D axes and (warped) coordinates."""

    box: tuple[slice, slice, slice]
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    xyz: tuple[np.ndarray, np.ndarray, np.ndarray]  # broadcastable to the box shape
    margin: float  # bound on the warp displacement (mm)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(len(a) for a in self.axes)

    def plain(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Undeformed coordinates, broadcastable."""
        x, y, z = self.axes
        return x[:, None, None], y[None, :, None], z[None, None, :]


class Warp:
    """Smooth random displacement: a sum of plane-wave sinusoids."""

    def __init__(self, rng: np.random.Generator, amplitude: float,
                 wavelengths: tuple[float, float], modes: int = 4):
        dirs = rng.standard_normal((modes, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = rng.uniform(*wavelengths, size=modes)
        self.k = (2 * np.pi / lam)[:, None] * dirs
        self.phase = rng.uniform(0, 2 * np.pi, modes)
        disp = rng.standard_normal((modes, 3))
        self.disp = amplitude / math.sqrt(modes) * disp / np.linalg.norm(disp, axis=1,
                                                                          keepdims=True)
        self.bound = float(np.abs(self.disp).sum(0).max())

    def apply(self, x, y, z):
        x, y, z = (np.asarray(c, np.float32) for c in (x, y, z))
        out = [x, y, z]
        for k, ph, d in zip(self.k, self.phase, self.disp):
            s = np.sin(np.float32(k[0]) * x + np.float32(k[1]) * y + np.float32(k[2]) * z
                       + np.float32(ph))
            out = [o + np.float32(di) * s for o, di in zip(out, d)]
        return tuple(out)


@dataclasses.dataclass
class Ellipsoid:
    center: np.ndarray
    semi: np.ndarray
    rot: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        ext = np.sqrt(((self.rot * self.semi) ** 2).sum(1))
        return self.center - ext, self.center + ext

    def q(self, patch: Patch, xyz=None) -> np.ndarray:
        x, y, z = patch.xyz if xyz is None else xyz
        d = (x - np.float32(self.center[0]), y - np.float32(self.center[1]),
             z - np.float32(self.center[2]))
        acc = 0.0
        for j in range(3):
            u = sum(np.float32(self.rot[i, j]) * d[i] for i in range(3))
            acc = acc + (u * np.float32(1.0 / self.semi[j])) ** 2
        return np.sqrt(acc)

    def shrunk(self, t: float) -> "Ellipsoid":
        return Ellipsoid(self.center, np.maximum(self.semi - t, 1.0), self.rot)


def _catmull_rom(points: np.ndarray, radii: np.ndarray, step: float):
    ext = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    out_p, out_r = [], []
    for i in range(len(points) - 1):
        p0, p1, p2, p3 = ext[i:i + 4]
        m = max(1, int(math.ceil(np.linalg.norm(p2 - p1) / step)))
        t = (np.arange(m) / m)[:, None]
        out_p.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                            + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
        out_r.append(radii[i] + (radii[i + 1] - radii[i]) * t[:, 0])
    return np.vstack(out_p + [points[-1:]]), np.concatenate(out_r + [radii[-1:]])


def _take(arr: np.ndarray, sub: tuple[slice, ...]) -> np.ndarray:
    return arr[tuple(s if n > 1 else slice(None) for s, n in zip(sub, arr.shape))]


@dataclasses.dataclass
class Tube:
    """A tube of varying radius along a smooth centreline through control points."""

    points: np.ndarray
    radii: np.ndarray
    step: float = 8.0

    def __post_init__(self):
        self.points = np.asarray(self.points, float)
        self.radii = np.asarray(self.radii, float)
        self.path, self.path_r = _catmull_rom(self.points, self.radii, self.step)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.path_r[:, None]
        return (self.path - r).min(0), (self.path + r).max(0)

    def q(self, patch: Patch) -> np.ndarray:
        out = np.full(patch.shape, np.inf, np.float32)
        x, y, z = patch.xyz
        # every segment's box at once (the per-segment searchsorted calls were ~1/3 of the
        # time of a tube of many short segments, e.g. a rib); the same boxes
        a_, b_ = self.path[:-1], self.path[1:]
        r = (np.maximum(self.path_r[:-1], self.path_r[1:]) + patch.margin)[:, None]
        lo, hi = np.minimum(a_, b_) - r, np.maximum(a_, b_) + r
        start = np.stack([np.searchsorted(ax, lo[:, i]) for i, ax in enumerate(patch.axes)], 1)
        stop = np.stack([np.searchsorted(ax, hi[:, i]) for i, ax in enumerate(patch.axes)], 1)
        for j in np.flatnonzero((stop > start).all(1)):
            a, b, ra, rb = a_[j], b_[j], self.path_r[j], self.path_r[j + 1]
            sub = tuple(slice(int(i0), int(i1)) for i0, i1 in zip(start[j], stop[j]))
            ab = (b - a).astype(np.float32)
            d = [_take(c, sub) - np.float32(a[i]) for i, c in enumerate((x, y, z))]
            t = np.clip(sum(d[i] * ab[i] for i in range(3)) / np.float32(ab @ ab + 1e-9), 0, 1)
            dist = np.sqrt(sum((d[i] - t * ab[i]) ** 2 for i in range(3)))
            q = dist / (np.float32(ra) + t * np.float32(rb - ra))
            np.minimum(out[sub], q, out=out[sub])
        return out

    def shrunk(self, t: float) -> "Tube":
        return Tube(self.points, np.maximum(self.radii - t, 1.0), self.step)


@dataclasses.dataclass
class Union:
    parts: Sequence

    def bbox(self):
        boxes = [p.bbox() for p in self.parts]
        return np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)

    def q(self, patch: Patch) -> np.ndarray:
        return np.minimum.reduce([np.broadcast_to(p.q(patch), patch.shape)
                                  for p in self.parts])

    def shrunk(self, t: float) -> "Union":
        return Union([p.shrunk(t) for p in self.parts])


@dataclasses.dataclass
class Torso:
    """Super-elliptic cross-sections interpolated along z (half-widths a, b, centre y)."""

    z: np.ndarray
    a: np.ndarray
    b: np.ndarray
    yc: np.ndarray
    power: float = 2.6

    def bbox(self):
        return (np.array([-self.a.max(), (self.yc - self.b).min(), self.z[0]]),
                np.array([self.a.max(), (self.yc + self.b).max(), self.z[-1]]))

    def q(self, patch: Patch, xyz=None) -> np.ndarray:
        x, y, z = patch.xyz if xyz is None else xyz
        a, b, yc = (np.interp(z, self.z, v).astype(np.float32) for v in (self.a, self.b, self.yc))
        p = np.float32(self.power)
        q = (np.abs(x / a) ** p + np.abs((y - yc) / b) ** p) ** (1 / p)
        return np.where((z >= self.z[0]) & (z <= self.z[-1]), q, np.float32(np.inf))

    def shrunk(self, t: float | np.ndarray) -> "Torso":
        return Torso(self.z, np.maximum(self.a - t, 5.0), np.maximum(self.b - t, 5.0), self.yc,
                     self.power)


# ----------------------------------------------------------------------------- grid + painter

@dataclasses.dataclass(frozen=True)
class Grid:
    """A RAS voxel grid: world = origin + index * spacing."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]

    @classmethod
    def covering(cls, lo: np.ndarray, hi: np.ndarray, spacing: Sequence[float]) -> "Grid":
        spacing = tuple(float(s) for s in spacing)
        shape = tuple(int(math.ceil((hi_ - lo_) / s)) + 1 for lo_, hi_, s in zip(lo, hi, spacing))
        return cls(tuple(float(v) for v in lo), spacing, shape)

    @property
    def axes(self) -> tuple[np.ndarray, ...]:
        return tuple((o + s * np.arange(n)).astype(np.float32)
                     for o, s, n in zip(self.origin, self.spacing, self.shape))

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff


class Painter:
    """Paints shapes into a tissue-code volume, each only inside its bounding box."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.axes = grid.axes
        self.tissue = np.zeros(grid.shape, np.uint8)

    def patch(self, bbox, warps: Sequence[Warp] = ()) -> Patch | None:
        margin = sum(w.bound for w in warps)
        box = []
        for ax, lo, hi in zip(self.axes, bbox[0] - margin, bbox[1] + margin):
            i0, i1 = int(np.searchsorted(ax, lo)), int(np.searchsorted(ax, hi, "right"))
            if i1 <= i0:
                return None
            box.append(slice(i0, i1))
        axes = tuple(ax[s] for ax, s in zip(self.axes, box))
        patch = Patch(tuple(box), axes, (), margin)
        xyz = patch.plain()
        for w in warps:
            xyz = w.apply(*xyz)
        patch.xyz = xyz
        return patch

    def paint(self, tissue: str, shape, warps: Sequence[Warp] = (),
              clip: Callable[[Patch], np.ndarray] | None = None):
        """Paint ``tissue`` where ``shape.q < 1`` (and ``clip``); returns (patch, q, mask)."""
        patch = self.patch(shape.bbox(), warps)
        if patch is None:
            return None
        q = np.broadcast_to(shape.q(patch), patch.shape)
        mask = q < 1
        if clip is not None:
            mask &= clip(patch)
        self.tissue[patch.box][mask] = TISSUE_CODE[tissue]
        return patch, q, mask

    def fill(self, tissue: str, painted, where: np.ndarray) -> None:
        """Repaint part of an earlier painted region."""
        if painted is not None:
            patch, _, mask = painted
            self.tissue[patch.box][mask & where] = TISSUE_CODE[tissue]


# ----------------------------------------------------------------------------- the subject

# Lean torso profile of the reference subject (no subcutaneous fat): z, half-width a,
# half-depth b, centre y, and how much of the subject's fat thickness each level carries.
_TORSO = np.array([
    # z     a     b    yc   fat
    [830, 150, 88, -12, 1.2], [930, 158, 92, -8, 1.3], [1030, 135, 85, 0, 1.4],
    [1100, 125, 84, 2, 1.4], [1200, 133, 92, 2, 1.2], [1300, 143, 100, 0, 1.0],
    [1400, 150, 92, -5, 0.9], [1440, 160, 78, -12, 0.8], [1465, 125, 64, -14, 0.7],
    [1485, 70, 52, -15, 0.5]])
# Spine column: z, vertebral-body centre y, half-width, half-depth, canal radius.
_SPINE = np.array([
    [860, -72, 15, 12, 5], [900, -62, 38, 20, 6], [990, -30, 42, 22, 9],
    [1080, -26, 26, 21, 10], [1170, -36, 23, 19, 9], [1300, -46, 18, 15, 8],
    [1400, -44, 16, 13, 8], [1450, -36, 15, 12, 8.5], [1500, -22, 13, 10, 9],
    [1580, -20, 12, 9, 9]])
# Vertebral levels (bottom z of each) and disc thickness: sacrum, L5-L1, T12-T1, C7-C2.
_LEVELS = np.concatenate([[860.0], 990 + 36 * np.arange(5), 1170 + 280 / 12 * np.arange(12),
                          1450 + 18 * np.arange(7), [1580.0]])
_DISC = np.concatenate([[0.0], np.full(5, 9.0), np.full(12, 5.0), np.full(7, 4.0)])


class Anatomy:
    """One synthetic subject (deterministic in ``seed``): body habitus, organs, warps."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        rng = self._rng("subject")
        self.height = float(np.clip(rng.normal(1710, 95), 1500, 2000))
        self.sz = self.height / REF_HEIGHT
        self.sxy = self.sz ** 0.7 * float(np.exp(0.04 * rng.standard_normal()))
        self.lean = float(np.exp(0.05 * rng.standard_normal()))
        # BMI 18-40 (log-normal around 26); the subcutaneous fat thickness (mm) follows from it
        # and the lean build: bmi = 24 lean^2 (1 + 0.025 (fat - 18)).
        self.bmi = float(np.clip(26.0 * np.exp(0.18 * rng.standard_normal()), 18, 40))
        self.fat = float(np.clip(18 + (self.bmi / (24.0 * self.lean ** 2) - 1) / 0.025, 3, 60))
        poses = list(ARM_POSES)
        self.arms = poses[rng.choice(len(poses), p=list(ARM_POSES.values()))]
        self.breath = float(rng.normal(0, 8))
        self.diaphragm_shift_mm = float(rng.uniform(*SHIFT_RANGE_MM) * rng.choice([-1.0, 1.0]))
        self.bladder_fill = float(np.exp(0.35 * rng.standard_normal()))
        self.weight_kg = round(self.bmi * (self.height / 1000) ** 2, 1)
        self.body_warp = Warp(rng, 5.0 * self.sxy, (200, 500))
        self._build_body()

    # -- helpers ------------------------------------------------------------------------
    def _rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    @property
    def pos_scale(self) -> float:
        """In-plane scale of positions: the frame, partly following the build."""
        return self.sxy * self.lean ** 0.7

    def p(self, x: float, y: float, z: float) -> np.ndarray:
        """Reference-subject position (mm) -> this subject's world position."""
        return np.array([x * self.pos_scale, y * self.pos_scale, z * self.sz])

    def _organ_jitter(self, name: str, pos_sd: float, size_cv: float):
        rng = self._rng(name)
        offset = rng.normal(0, pos_sd * self.sxy, 3)
        scale = self.sxy * float(np.exp(size_cv * rng.standard_normal()))
        return rng, offset, scale

    def ellipsoid(self, name: str, center, semi, rot=None, pos_sd=5.0, size_cv=0.1,
                  breath=0.0, min_semi=0.0) -> tuple[Ellipsoid, Warp]:
        """A jittered, warped ellipsoid; ``min_semi`` (mm) keeps small organs visible at 6 mm."""
        rng, offset, scale = self._organ_jitter(name, pos_sd, size_cv)
        semi = np.asarray(semi, float) * scale * np.exp(0.05 * rng.standard_normal(3))
        semi = np.maximum(semi, min_semi)
        rot = (np.eye(3) if rot is None else rot) @ _rot(*rng.normal(0, 6, 3))
        c = self.p(*center) + offset + [0, 0, breath * self.breath]
        warp = Warp(rng, 0.12 * float(semi.min()), (3 * semi.min(), 6 * semi.max()))
        return Ellipsoid(c, semi, rot), warp

    def tube(self, name: str, points, radii, pos_sd=5.0, point_sd=3.0, size_cv=0.1,
             breath=0.0, step: float = 4.0) -> tuple[Tube, Warp]:
        """A jittered, warped tube; centreline sampled every ``step`` mm or more."""
        rng, offset, scale = self._organ_jitter(name, pos_sd, size_cv)
        pts = np.array([self.p(*pt) for pt in points]) + offset
        pts += rng.normal(0, point_sd * self.sxy, pts.shape) + [0, 0, breath * self.breath]
        r = np.asarray(radii, float) * scale
        warp = Warp(rng, 0.25 * float(r.mean()), (60, 160))
        return Tube(pts, r, step=max(step, 0.6 * float(r.min()))), warp

    # -- body outline ---------------------------------------------------------------------
    def _build_body(self) -> None:
        s, f = self.sxy * self.lean, self.fat
        t = _TORSO
        self.torso_lean = Torso(t[:, 0] * self.sz, t[:, 1] * s, t[:, 2] * s, t[:, 3] * s)
        self.torso = self.torso_lean.shrunk(-f * t[:, 4])
        zc = np.array([860, 930, 1030, 1100, 1200, 1300, 1400, 1440, 1460]) * self.sz
        lean = self.torso_lean
        self.cavity = Torso(zc, *(np.interp(zc, lean.z, v) for v in (lean.a, lean.b, lean.yc))
                            ).shrunk(12.0 * self.sxy)

        def limb(points, radii, fat):
            lean_tube = Tube([self.p(*q) for q in points], np.asarray(radii) * s, step=30.0)
            return lean_tube, lean_tube.shrunk(-fat)

        parts = [limb([(0, -15, 1420), (0, -12, 1520), (0, -8, 1590)], [52, 50, 48], 0.5 * f)]
        self.limb_bones = []
        for side in (R, L):  # thigh, knee, calf, ankle (resting on the bed); foot, toes up
            parts.append(limb([(side * 88, -15, 935), (side * 95, -25, 830), (side * 100, -35, 620),
                               (side * 95, -60, 480), (side * 90, -60, 330), (side * 85, -75, 110),
                               (side * 85, -75, 60)], [85, 72, 58, 46, 50, 30, 28], 0.7 * f))
            parts.append(limb([(side * 85, -85, 40), (side * 88, -5, 35), (side * 92, 90, 40)],
                              [30, 34, 24], 0.2 * f))
            self.limb_bones.append(Tube([self.p(side * 95, -60, 475), self.p(side * 90, -60, 300),
                                         self.p(side * 85, -75, 80)], np.array([14, 11, 11]) * s))
        head = Ellipsoid(self.p(0, 10, 1640), np.array([72, 92, 112]) * s)
        jaw = Ellipsoid(self.p(0, 32, 1550), np.array([48, 42, 32]) * s)
        lean_parts = [p for p, _ in parts] + [head, jaw]
        outer_parts = [o for _, o in parts] + [head.shrunk(-0.2 * f), jaw.shrunk(-0.4 * f)]
        for side, pose in zip((R, L), self.arms):
            shoulder = Ellipsoid(self.p(side * 160, -15, 1432), np.array([45, 48, 48]) * s)
            lean_parts.append(shoulder)
            outer_parts.append(shoulder.shrunk(-0.8 * f))
            ax = side * (202 * s + f) / self.pos_scale  # beside the chest wall
            if pose == "down":
                pts = [(ax, -15, 1425), (ax + side * 12, -25, 1130), (ax + side * 8, 5, 880),
                       (ax, 20, 770), (ax, 25, 700), (ax, 25, 620)]
                radii = [38, 30, 23, 17, 22, 14]
            else:
                pts = [(ax, -15, 1425), (ax - side * 15, -10, 1600), (ax - side * 50, -5, 1760),
                       (ax - side * 90, 0, 1950), (ax - side * 100, 0, 2030),
                       (ax - side * 108, 0, 2100)]
                radii = [38, 32, 27, 22, 24, 14]
            arm, arm_outer = limb(pts, radii, 0.6 * f)
            lean_parts.append(arm)
            outer_parts.append(arm_outer)
            self.limb_bones.append(Tube(arm.points[:4], np.full(4, 10.0 * s)))
        self.body_lean = Union([self.torso_lean] + lean_parts)
        self.body = Union([self.torso] + outer_parts)

    @property
    def skull_base_z(self) -> float:
        """World z (mm) of the skull base (top of C1), the upper end of a conventional scan."""
        return float(_LEVELS[-1] * self.sz)

    @property
    def mid_thigh_z(self) -> float:
        """World z (mm) halfway between hip joint and knee, the lower end of a conventional scan."""
        return float(707.0 * self.sz)

    @property
    def bed_top_y(self) -> float:
        """World y (mm) of the bed's upper surface: the subject's back rests on it."""
        t = self.torso
        return float((t.yc - t.b).min()) - 2.0

    def field_of_view(self, kind: str = "total_body", rng: np.random.Generator | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """World box of a scan: ``TRANSAXIAL_FOV_MM`` square around the body's axis (the bed's
        height moves it up to ~2 cm), and along z the whole subject (``total_body``),
        ``LONG_AXIAL_FOV_MM`` placed at random (``long_axial``) or skull base to mid-thigh
        (``conventional``; both ends move up to 3 cm). ``rng`` places the box (default: by seed).
        """
        rng = self._rng(f"fov:{kind}") if rng is None else rng
        lo, hi = self.body.bbox()
        zlo, zhi = max(lo[2], -5.0) - 10, hi[2] + 10
        if kind == "total_body":
            pass
        elif kind == "long_axial":
            zlo = float(rng.uniform(zlo, max(zlo, zhi - LONG_AXIAL_FOV_MM)))
            zhi = zlo + LONG_AXIAL_FOV_MM
        elif kind == "conventional":
            zlo = self.mid_thigh_z - float(rng.uniform(0, 30))
            zhi = self.skull_base_z + float(rng.uniform(0, 30))
        else:
            raise ValueError(f"unknown field of view {kind!r} (known: total_body, long_axial, "
                             "conventional)")
        half = TRANSAXIAL_FOV_MM / 2
        yc = float(np.mean([self.bed_top_y, self.torso.bbox()[1][1]])) + rng.uniform(-20, 20)
        return np.array([-half, yc - half, zlo]), np.array([half, yc + half, zhi])

    def dome(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height of the diaphragm at (x, y): two domes, the right one higher."""
        s = self.sxy
        zr = (1240 * self.sz + self.breath
              - 100 * ((x - R * 70 * s) ** 2 + y ** 2) / (130 * s) ** 2)
        zl = (1222 * self.sz + self.breath
              - 100 * ((x - L * 70 * s) ** 2 + (y + 5 * s) ** 2) / (130 * s) ** 2)
        return np.maximum(zr, zl).astype(np.float32)

    # -- rendering ------------------------------------------------------------------------
    def render(self, grid: Grid) -> np.ndarray:
        """The tissue-code volume (uint8, indices into TISSUES) on ``grid``."""
        pt = Painter(grid)
        self._paint_bed(pt)
        self._paint_body(pt)
        self._paint_chest_wall(pt)
        self._paint_head(pt)
        self._paint_vessels(pt)
        self._paint_trunk(pt)
        self._paint_spine(pt)
        return pt.tissue

    def ct_phase(self, tissue: np.ndarray, grid: Grid) -> np.ndarray:
        """``tissue`` (rendered on ``grid``) moved to the CT's breathing phase (module
        docstring): soft tissue near the diaphragm shifts along z by up to
        ``diaphragm_shift_mm``; bone, muscle, fat, air and the bed stay where they are."""
        z = grid.axes[2]
        dome = 1240 * self.sz + self.breath
        weight = np.interp(z, [dome - 250, dome - 60, dome + 20, dome + 150], [0, 1, 1, 0])
        shift = np.rint(self.diaphragm_shift_mm * weight / grid.spacing[2]).astype(np.int64)
        source = np.clip(np.arange(len(z)) - shift, 0, len(z) - 1)
        out = tissue.copy()
        band = np.flatnonzero(source != np.arange(len(z)))  # slices that move (the trunk)
        if band.size:
            band = slice(band[0], band[-1] + 1)
            here, moved = tissue[:, :, band], tissue[:, :, source[band]]
            out[:, :, band] = np.where(_MOVABLE[here] & _MOVABLE[moved], moved, here)
        return out

    def _paint_bed(self, pt: Painter) -> None:
        """The patient bed: a 12 mm carbon-fibre pallet, 46 cm wide, the whole scan long."""
        x, y, _ = pt.axes
        ix = np.flatnonzero(np.abs(x) < 230)
        iy = np.flatnonzero((y <= self.bed_top_y) & (y > self.bed_top_y - 12))
        pt.tissue[np.ix_(ix, iy, np.arange(pt.grid.shape[2]))] = TISSUE_CODE["bed"]

    def _paint_chest_wall(self, pt: Painter) -> None:
        """Twelve pairs of ribs (bone) around the thoracic cavity, and the sternum (marrow in
        a bone shell). Rib k leaves thoracic vertebra k and descends toward the front."""
        cav, w = self.cavity, [self.body_warp]
        reach = [0.93] * 7 + [0.8] * 3 + [0.55, 0.45]  # fraction of half a turn
        width = [0.55, 0.75, 0.85, 0.92, 0.97] + [1.0] * 7
        for k in range(1, 13):
            z0 = 0.5 * (_LEVELS[18 - k] + _LEVELS[19 - k]) * self.sz
            theta = np.linspace(0.12, reach[k - 1], 9) * np.pi
            z = z0 - (30.0 if k == 1 else 75.0) * self.sz * theta / np.pi
            a, b, yc = (np.interp(z, cav.z, v) for v in (cav.a, cav.b, cav.yc))
            a = (a + 2) * width[k - 1]
            for side in (R, L):
                pts = np.stack([side * a * np.sin(theta), yc - (b + 2) * np.cos(theta), z], 1)
                pt.paint("bone", Tube(pts, np.full(len(pts), 5.0 * self.sxy), step=12.0), w)
        front = float(np.interp(1345 * self.sz, cav.z, cav.yc + cav.b))
        sternum = Ellipsoid(np.array([0.0, front + 8 * self.sxy, 1345 * self.sz]),
                            np.array([18 * self.sxy, 7 * self.sxy, 95 * self.sz]))
        pt.paint("bone", sternum, w)
        pt.paint("marrow", sternum.shrunk(2.5), w)

    def _paint_vessels(self, pt: Painter) -> None:
        """Unlabeled main vessels: iliac/femoral arteries and veins, SVC, carotids, jugulars."""
        w = [self.body_warp]
        for side in (R, L):
            pt.paint("artery", self.tube(f"iliac_artery{side}", [
                (L * 8, 8, 1040), (side * 40, 15, 960), (side * 75, 30, 900), (side * 88, 25, 850),
                (side * 97, -25, 620), (side * 95, -75, 480), (side * 90, -65, 330)],
                [6.5, 5.5, 5, 4.5, 4, 3.5, 3], point_sd=1.5, step=12.0)[0], w)
            pt.paint("vein", self.tube(f"iliac_vein{side}", [
                (R * 22, -5, 1000), (side * 45, 5, 950), (side * 72, 20, 895), (side * 80, 15, 850),
                (side * 90, -30, 620), (side * 92, -80, 480), (side * 88, -70, 330)],
                [8, 7, 6.5, 6, 5.5, 4.5, 4], point_sd=1.5, step=12.0)[0], w)
            pt.paint("artery", self.tube(f"carotid{side}", [
                (side * 12, 25, 1395), (side * 22, 18, 1470), (side * 25, 12, 1560)], [4.5] * 3,
                pos_sd=2, point_sd=1)[0], w)
            pt.paint("vein", self.tube(f"jugular{side}", [
                (side * 30, 15, 1400), (side * 38, 10, 1470), (side * 40, 5, 1560)], [6] * 3,
                pos_sd=2, point_sd=1)[0], w)
        pt.paint("vein", self.tube("svc", [(R * 20, 22, 1275), (R * 22, 18, 1340),
                                           (R * 18, 15, 1395)], [10, 10, 9], pos_sd=2)[0], w)

    def _paint_body(self, pt: Painter) -> None:
        for tissue, body in (("fat", self.body), ("muscle", self.body_lean)):
            for part in body.parts:  # part by part: each only inside its own box
                pt.paint(tissue, part)
        pt.paint("visceral", self.cavity)
        for bone in self.limb_bones:
            pt.paint("bone", bone)

    def _paint_head(self, pt: Painter) -> None:
        w = [self.body_warp]
        s = self.sxy * float(np.exp(0.05 * self._rng("brain").standard_normal()))
        cavity = Union([Ellipsoid(self.p(0, 0, 1668), np.array([64, 82, 68]) * s),
                        Ellipsoid(self.p(0, -42, 1615), np.array([50, 36, 28]) * s)])
        pt.paint("bone", cavity.shrunk(-7 * s), w)
        pt.paint("csf", cavity, w)
        cerebrum = Ellipsoid(self.p(0, 0, 1668), np.array([61, 79, 65]) * s)
        cerebellum = Ellipsoid(self.p(0, -44, 1614), np.array([47, 32, 24]) * s)
        stem = Tube([self.p(0, -18, 1650), self.p(0, -24, 1590), self.p(0, -26, 1572)],
                    np.array([12, 11, 10]) * s)
        brain = pt.paint("brain_white", Union([cerebrum, cerebellum, stem]), w)
        if brain is not None:
            patch, _, _ = brain
            grey = (cerebrum.q(patch) > 0.84) | (cerebellum.q(patch) < 1)
            for side in (R, L):
                grey |= Ellipsoid(self.p(side * 22, 5, 1668), np.array([12, 16, 14]) * s
                                  ).q(patch) < 1
            pt.fill("brain_grey", brain, grey)
            vent = np.zeros(patch.shape, bool)
            for side in (R, L):
                vent |= Ellipsoid(self.p(side * 9, 0, 1676), np.array([6, 22, 12]) * s
                                  ).q(patch) < 1
            pt.fill("brain_ventricle", brain, vent)
        pt.paint("pituitary", Ellipsoid(self.p(0, 15, 1608), np.array([5, 5, 4]) * s), w)
        for side in (R, L):
            pt.paint("salivary", self.ellipsoid(f"parotid{side}", (side * 45, 5, 1575),
                                                (11, 18, 24))[0], w)
            pt.paint("salivary", self.ellipsoid(f"submandibular{side}", (side * 33, 32, 1530),
                                                (11, 11, 9))[0], w)

    def _in_cavity(self, patch: Patch) -> np.ndarray:
        return self.cavity.q(patch, patch.plain()) < 1

    def _in_body(self, patch: Patch) -> np.ndarray:
        return self.torso.q(patch, patch.plain()) < 1

    def _below_dome(self, patch: Patch) -> np.ndarray:
        x, y, z = patch.xyz
        return (z < self.dome(x, y)) & self._in_cavity(patch)

    def _lung_clip(self, side: float):
        def clip(patch: Patch) -> np.ndarray:
            x, y, z = patch.xyz
            return ((z > self.dome(x, y)) & (side * x > 12 * self.sxy)
                    & self._in_cavity(patch))
        return clip

    def _paint_organ(self, pt: Painter, tissue: str, made, clip=None):
        shape, warp = made
        return pt.paint(tissue, shape, [self.body_warp, warp], clip)

    def _paint_trunk(self, pt: Painter) -> None:
        cav, below = self._in_cavity, self._below_dome
        for side in (R, L):  # psoas muscles
            pt.paint("muscle", self.tube(f"psoas{side}", [
                (side * 28, -32, 1165), (side * 45, -25, 1080), (side * 60, -10, 990),
                (side * 75, 10, 930)], [8, 18, 22, 20])[0], [self.body_warp])
        for tissue, side, c, semi in (("lung_right", R, (R * 88, -8, 1325), (62, 88, 140)),
                                      ("lung_left", L, (L * 86, -8, 1320), (56, 84, 136))):
            self._paint_organ(pt, tissue, self.ellipsoid(tissue, c, semi), self._lung_clip(side))
        pt.paint("visceral", self.ellipsoid("mediastinum", (0, 5, 1345), (28, 60, 105))[0],
                 [self.body_warp], cav)
        self._paint_organ(pt, "small_bowel", self.ellipsoid(
            "small_bowel", (L * 10, 28, 985), (95, 48, 75)), cav)
        self._paint_organ(pt, "colon", self.tube("colon", [
            (R * 68, 20, 935), (R * 76, 8, 990), (R * 86, -6, 1040), (R * 78, 10, 1080),
            (R * 40, 42, 1065), (0, 48, 1045), (L * 45, 42, 1070), (L * 85, -5, 1110),
            (L * 95, -5, 1070), (L * 90, -5, 1000), (L * 80, 5, 950), (L * 55, 25, 925),
            (L * 25, 5, 930), (0, -15, 910), (0, -30, 880), (0, -38, 845)],
            [26, 24, 22, 21, 20, 20, 20, 19, 18, 18, 17, 17, 16, 17, 17, 14]), cav)
        liver = Union([Ellipsoid(self.p(R * 70, 5, 1165), np.array([72, 88, 75]) * self.sxy),
                       Ellipsoid(self.p(L * 15, 35, 1175), np.array([55, 45, 32]) * self.sxy,
                                 _rot(0, 10, 0))])
        rng, offset, scale = self._organ_jitter("liver", 5, 0.1)
        liver = Union([Ellipsoid(e.center + offset + [0, 0, self.breath],
                                 e.semi * scale / self.sxy, e.rot) for e in liver.parts])
        self._paint_organ(pt, "liver", (liver, Warp(rng, 8.0 * self.sxy, (150, 400))), below)
        pt.paint("vein", self.tube("ivc", [(R * 25, -8, 1000), (R * 25, -10, 1080),
                                           (R * 22, -12, 1150), (R * 20, -5, 1200),
                                           (R * 15, 10, 1235)], [11, 11, 12, 12, 13])[0],
                 [self.body_warp], cav)
        self._paint_organ(pt, "stomach", self.tube("stomach", [
            (L * 35, 0, 1190), (L * 58, -15, 1205), (L * 68, 8, 1165), (L * 60, 38, 1120),
            (L * 38, 50, 1092), (L * 5, 50, 1098), (R * 20, 40, 1110)],
            [16, 26, 28, 26, 22, 18, 12], size_cv=0.15, breath=1), below)
        self._paint_organ(pt, "spleen", self.ellipsoid(
            "spleen", (L * 88, -38, 1162), (23, 40, 56), _rot_to((L * 0.2, 0.55, -0.8)),
            breath=1), below)
        self._paint_heart(pt)
        for tissue, side, c in (("kidney_right", R, (R * 65, -40, 1095)),
                                ("kidney_left", L, (L * 65, -40, 1115))):
            shape, warp = self.ellipsoid(tissue, c, (29, 24, 57),  # ~165 ml (ICRP 89: 150)
                                         _rot_to((-side * 0.22, -0.18, 0.96)), size_cv=0.07,
                                         breath=1)
            kidney = self._paint_organ(pt, tissue, (shape, warp), cav)
            if kidney is not None:
                patch, q, _ = kidney
                pelvis = Ellipsoid(shape.center + self.p(-side * 14, 8, 0),
                                   np.array([10, 8, 16]) * self.sxy, shape.rot)
                pt.fill(f"{tissue}_medulla", kidney, q < 0.6)
                pt.fill(f"{tissue}_pelvis", kidney, pelvis.q(patch) < 1)
        self._paint_organ(pt, "duodenum", self.tube("duodenum", [
            (R * 20, 40, 1110), (R * 42, 25, 1112), (R * 55, 8, 1098), (R * 58, 5, 1065),
            (R * 48, 12, 1040), (R * 15, 28, 1032), (L * 12, 28, 1040), (L * 28, 18, 1060),
            (L * 35, 15, 1080)], [12] * 9, breath=1), cav)
        self._paint_organ(pt, "pancreas", self.tube("pancreas", [
            (R * 32, 12, 1080), (R * 5, 28, 1105), (L * 25, 22, 1125), (L * 58, -8, 1145),
            (L * 75, -20, 1155)], [18, 13, 12.5, 11.5, 10], breath=1), cav)
        self._paint_organ(pt, "gallbladder", self.ellipsoid(
            "gallbladder", (R * 55, 45, 1095), (15, 15, 38), _rot_to((L * 0.2, -0.45, 0.87)),
            size_cv=0.15, breath=1), cav)
        fill = self.bladder_fill ** (1 / 3)
        self._paint_organ(pt, "urinary_bladder", self.ellipsoid(
            "urinary_bladder", (0, 35, 895 + 20 * (fill - 1)),
            (45 * fill, 32 * fill, 33 * fill), size_cv=0.05), cav)
        self._paint_pelvis(pt)
        self._paint_organ(pt, "esophagus", self.tube("esophagus", [
            (L * 2, -6, 1520), (L * 3, -11, 1460), (R * 1, -17, 1400), (R * 2, -21, 1335),
            (R * 2, -20, 1280), (R * 2, -8, 1235), (L * 12, 0, 1208), (L * 30, 4, 1192)],
            [7.5] * 8, pos_sd=2, point_sd=1.5, size_cv=0.05))
        for side in (R, L):
            self._paint_organ(pt, "thyroid_gland", self.ellipsoid(
                f"thyroid{side}", (side * 19, 14, 1478), (9, 10, 24), pos_sd=2, min_semi=8.0))
        self._paint_organ(pt, "thyroid_gland", self.tube("isthmus", [
            (R * 16, 24, 1466), (0, 27, 1465), (L * 16, 24, 1466)], [5.5] * 3, pos_sd=2,
            point_sd=1))
        self._paint_organ(pt, "trachea", self.tube("trachea", [
            (0, 14, 1515), (0, 8, 1460), (R * 3, 2, 1400), (R * 3, -3, 1335)], [9.5, 9.5, 9, 9],
            pos_sd=2, point_sd=1, size_cv=0.05))
        self._paint_organ(pt, "aorta", self.tube("aorta", [
            (L * 2, 18, 1295), (R * 12, 30, 1330), (R * 10, 25, 1370), (L * 6, 24, 1398),
            (L * 18, -2, 1395), (L * 26, -25, 1370), (L * 30, -33, 1320), (L * 26, -22, 1250),
            (L * 14, -6, 1180), (L * 10, 3, 1120), (L * 8, 8, 1040)],
            [13, 14, 13, 12, 11, 11, 11, 10.5, 10, 9.5, 9], pos_sd=2, point_sd=1.5,
            size_cv=0.08))
        # Adrenals: a body with a medial and a lateral limb (inverted V on the right, lambda on
        # the left), limbs 5-7 mm thick and 3-4 cm long, ~4-6 ml a gland (ICRP 89: 6-7 g).
        for tissue, points in (
                ("adrenal_gland_right", [(R * 33, -27, 1118), (R * 40, -24, 1166),
                                         (R * 56, -38, 1126)]),
                ("adrenal_gland_left", [(L * 29, -19, 1108), (L * 36, -16, 1162),
                                        (L * 52, -31, 1114)])):
            self._paint_organ(pt, tissue, self.tube(tissue, points, [3.3, 4.8, 3.3], pos_sd=3,
                                                    point_sd=1.5, size_cv=0.08, breath=1), cav)

    def _paint_heart(self, pt: Painter) -> None:
        axis = np.array([L * 0.65, 0.45, -0.6])
        shape, warp = self.ellipsoid("heart", (L * 25, 30, 1268), (52, 47, 66), _rot_to(axis),
                                     breath=0.5)
        heart = self._paint_organ(pt, "heart_blood", (shape, warp), self._in_cavity)
        if heart is None:
            return
        patch = heart[0]
        axis = shape.rot[:, 2]
        lv_c = shape.center + 12 * self.sxy * axis + self.p(L * 10, -8, 0)
        outer = Ellipsoid(lv_c, shape.semi * [0.62, 0.62, 0.78], shape.rot)
        inner = Ellipsoid(lv_c, shape.semi * [0.36, 0.36, 0.58], shape.rot)
        pt.fill("myocardium", heart, (outer.q(patch) < 1) & (inner.q(patch) >= 1))

    def _paint_pelvis(self, pt: Painter) -> None:
        w = [self.body_warp]
        for side in (R, L):
            ilium = self.ellipsoid(f"ilium{side}", (side * 80, -7, 985), (10, 62, 48),
                                   _rot(0, 0, -side * 40))[0]
            pt.paint("bone", ilium, w)
            pt.paint("marrow", ilium.shrunk(3.0), w)
            pt.paint("bone", self.tube(f"pubis{side}", [
                (side * 85, 10, 915), (side * 45, 45, 880), (side * 8, 62, 868)], [11] * 3)[0], w)
            pt.paint("bone", self.tube(f"femur{side}", [
                (side * 88, 5, 920), (side * 110, 0, 892), (side * 112, -5, 860),
                (side * 100, -35, 620), (side * 95, -55, 490)], [24, 16, 15, 14, 16])[0], w)

    def _paint_spine(self, pt: Painter) -> None:
        sp = _SPINE
        zk = sp[:, 0] * self.sz
        col = Tube([self.p(0, y, z) for z, y in sp[:, :2]], np.full(len(sp), 80.0))
        patch = pt.patch(col.bbox(), [self.body_warp])
        x, y, z = patch.xyz
        yb, rx, ry, rc = (np.interp(z, zk, sp[:, i] * self.sxy).astype(np.float32)
                          for i in (1, 2, 3, 4))
        r_cord = np.float32(5.0 * self.sxy)  # ~10 mm across (real: 8-12 mm)
        rc = np.maximum(rc, r_cord + 1.5)
        levels = _LEVELS * self.sz
        lvl = np.clip(np.searchsorted(levels, z, "right") - 1, 0, len(_DISC) - 1)
        frac = (z - levels[lvl]) / (levels[lvl + 1] - levels[lvl])
        in_range = (z >= levels[0]) & (z <= levels[-1])
        solid = in_range & (z - levels[lvl] >= _DISC[lvl] * self.sz)
        body = solid & ((x / rx) ** 2 + ((y - yb) / ry) ** 2 < 1)
        yc = yb - ry - rc - 1.5 * self.sxy
        dc = np.sqrt(x ** 2 + (y - yc) ** 2)
        s = self.sxy
        lumbar = z < levels[6]
        spin_len = np.where(lumbar, 30 * s, np.where(z < levels[18], 22 * s, 15 * s))
        arch = solid & (
            ((dc >= rc) & (dc < rc + 6 * s))
            | ((np.abs(x) < 5 * s) & (y < yc - rc) & (y > yc - rc - spin_len)
               & (frac > 0.15) & (frac < 0.85))
            | ((np.abs(y - yc) < 6 * s) & (np.abs(x) < np.where(lumbar, 38 * s, 30 * s))
               & (frac > 0.3) & (frac < 0.7)))
        inside = self._in_body(patch) | (z > 1440 * self.sz)
        region = pt.tissue[patch.box]
        region[arch & inside] = TISSUE_CODE["vertebral_arch"]
        region[body & inside] = TISSUE_CODE["vertebral_body"]
        region[in_range & (dc < rc)] = TISSUE_CODE["spinal_canal"]
        rng = self._rng("spinal_cord")
        conus = (1120 + rng.normal(0, 15)) * self.sz
        region[(z > conus) & (z <= levels[-1]) & (dc < r_cord)] = \
            TISSUE_CODE["spinal_cord"]
