"""The body of a synthetic abdominal CT, built around a kidney label map (used by ``generate``).

Everything here works on arrays in RAS layout (axes x -> patient right, y -> anterior,
z -> superior) with millimetre positions measured from voxel 0's centre. The body is painted as
tissue classes on a coarse *work grid* (cheap even under a 611 x 512 x 512 target), turned into HU
(per-case tissue means, smooth texture, blur, correlated noise) and linearly upsampled onto the
target grid chunk by chunk, straight into the int16 output. Kidneys, tumours and cysts are then
painted at full resolution in boxes around the labels (with the same noise field), so the HU
agree with the labels voxel for voxel (``kidney``). The HU of each tissue and phase: ``tissues``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from sparsekits.phantoms.tissues import NOISE_SD_HU, T, Tissue

# Output rows (along x) upsampled at a time: bounds the float32 temporaries to a few tens of MB.
_UPSAMPLE_CHUNK_ROWS = 16
HU_MIN, HU_MAX = -1024, 3071


@dataclass(frozen=True)
class BodyConfig:
    """Imaging settings of the body (shared by every phantom path)."""

    work_spacing_mm: float = 1.5  # the body is painted no finer than this, then upsampled
    texture_correlation_mm: float = 6.0
    blur_mm: float = 0.8  # in-plane point-spread sigma; along z at least 0.4 x slice spacing
    noise_std_hu: tuple[float, float] = NOISE_SD_HU  # per-case noise level, drawn uniformly
    noise_sigma_vox: float = 0.8  # correlation of the noise on the work grid
    seam_mm: float = 2.5  # rim around the labels repainted at full resolution (blurred edge)


@dataclass(frozen=True)
class Anatomy:
    """Where the body sits on the grid (mm from voxel 0, RAS layout) and how big it is."""

    midline_x: float
    spine_y: float  # centre of the vertebral bodies
    kidney_z: float  # craniocaudal level of the kidney centres
    half_width: float  # body outline half-axes (mm)
    half_depth: float
    spine_to_back: float  # vertebral centre to the posterior skin (mm)
    fat_mm: float  # subcutaneous fat thickness
    wall_mm: float  # abdominal wall muscle thickness
    hila: tuple[tuple[float, float, float], ...] = ()  # renal hila (grid mm), where known

    @property
    def body_centre_y(self) -> float:
        """Of the body outline, relative to the spine."""
        return self.half_depth - self.spine_to_back


def draw_anatomy(rng: np.random.Generator, midline_x, spine_y, kidney_z, scale=1.0) -> Anatomy:
    """A body of plausible, varied size around the given anchors (mm), ``scale`` times bigger."""
    return Anatomy(
        midline_x=float(midline_x),
        spine_y=float(spine_y),
        kidney_z=float(kidney_z),
        half_width=float(rng.uniform(128, 158) * scale),
        half_depth=float(rng.uniform(92, 118) * scale),
        spine_to_back=float(rng.uniform(62, 82) * scale),
        fat_mm=float(rng.uniform(10, 32) * scale),
        wall_mm=float(rng.uniform(8, 13)),
    )


# ---------------------------------------------------------------------------------------------
# Resampling and random fields


def linear_weights(n_out: int, out_spacing: float, n_in: int, in_spacing: float):
    """Per output index: the lower input index and the weight of the upper one (same origin)."""
    position = np.arange(n_out, dtype=np.float64) * (out_spacing / in_spacing)
    lower = np.clip(np.floor(position).astype(np.int64), 0, max(n_in - 2, 0))
    weight = np.clip(position - lower, 0.0, 1.0).astype(np.float32)
    return lower, weight


def upsample(array: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Separable linear interpolation: ``weights[k]`` from ``linear_weights`` for axis k.

    Axes with the fewest output samples go first, keeping the intermediate arrays small.
    """
    out = array
    for axis in sorted(range(array.ndim), key=lambda a: len(weights[a][0])):
        lower, weight = weights[axis]
        upper = np.minimum(lower + 1, array.shape[axis] - 1)
        w = weight.reshape([-1 if k == axis else 1 for k in range(array.ndim)])
        low = out.take(lower, axis=axis)
        out = out.take(upper, axis=axis)
        out -= low  # in place: out = low + (high - low) * w, without temporaries
        out *= w
        out += low
    return out


def smooth_field(shape, spacing, correlation_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random float32 field of about unit std: coarse white noise, upsampled."""
    coarse_shape = [
        int(np.ceil((n - 1) * s / correlation_mm)) + 2 for n, s in zip(shape, spacing, strict=True)
    ]
    coarse = rng.standard_normal(coarse_shape, dtype=np.float32)
    weights = [
        linear_weights(n, s, m, correlation_mm)
        for n, s, m in zip(shape, spacing, coarse_shape, strict=True)
    ]
    # Linear interpolation keeps (1-t)^2 + t^2, on average 2/3, of the variance per axis:
    # std sqrt(2/3)^3 = 0.544 in 3D.
    return upsample(coarse, weights) / np.float32(0.55)


# ---------------------------------------------------------------------------------------------
# The body on the work grid


class Canvas:
    """Tissue classes on a grid, painted with analytic shapes in body coordinates (mm).

    Body coordinates: u = x - midline (positive = patient right), v = y - spine (positive =
    anterior), w = z - kidney level (positive = superior).
    """

    def __init__(self, shape, spacing, anatomy: Anatomy):
        self.tissue = np.full(shape, T.AIR, dtype=np.uint8)
        self.spacing = tuple(float(s) for s in spacing)
        anchors = (anatomy.midline_x, anatomy.spine_y, anatomy.kidney_z)
        self.axes = [
            (np.arange(n, dtype=np.float32) * np.float32(s) - np.float32(a))
            for n, s, a in zip(shape, self.spacing, anchors, strict=True)
        ]

    def region(self, lo, hi):
        """Slices of the voxels with body coordinates in [lo, hi] and their (u, v, w) ogrid."""
        slices = []
        for axis, (a, b) in zip(self.axes, zip(lo, hi, strict=True), strict=True):
            i0, i1 = np.searchsorted(axis, a, "left"), np.searchsorted(axis, b, "right")
            if i1 <= i0:
                return None
            slices.append(slice(int(i0), int(i1)))
        u = self.axes[0][slices[0]][:, None, None]
        v = self.axes[1][slices[1]][None, :, None]
        w = self.axes[2][slices[2]][None, None, :]
        return tuple(slices), u, v, w

    def paint(self, tissue: T, slices, mask, only_on=None) -> None:
        view = self.tissue[slices]
        mask = np.broadcast_to(mask, view.shape)
        if only_on is not None:
            allowed = np.zeros(256, bool)
            allowed[list(only_on)] = True
            mask = mask & allowed[view]
        view[mask] = tissue

    def paint_points(self, tissue: T, points, only_on) -> None:
        """Paint voxels given as index arrays, where the current tissue is one of ``only_on``."""
        allowed = np.zeros(256, bool)
        allowed[list(only_on)] = True
        ok = allowed[self.tissue[points]]
        self.tissue[tuple(p[ok] for p in points)] = tissue

    def ellipsoid(self, tissue: T, centre, radii, only_on=None) -> None:
        centre, radii = np.asarray(centre, np.float32), np.asarray(radii, np.float32)
        found = self.region(centre - radii, centre + radii)
        if found is None:
            return
        slices, u, v, w = found
        d = ((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2
        self.paint(tissue, slices, d + ((w - centre[2]) / radii[2]) ** 2 <= 1, only_on)

    def column(self, tissue: T, centre_uv, radii_uv, w_range, only_on=None) -> None:
        """An elliptic cylinder along z."""
        (cu, cv), (ru, rv) = centre_uv, radii_uv
        found = self.region((cu - ru, cv - rv, w_range[0]), (cu + ru, cv + rv, w_range[1]))
        if found is None:
            return
        slices, u, v, _ = found
        self.paint(tissue, slices, ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1, only_on)

    def tube(self, tissue: T, points, radius: float, only_on=None) -> None:
        """Spheres along a polyline (bowel loops, colon)."""
        points = np.asarray(points, np.float32)
        for start, end in itertools.pairwise(points):
            steps = max(1, int(np.linalg.norm(end - start) / (radius * 0.5)))
            for t in np.linspace(0.0, 1.0, steps, endpoint=False):
                self.ellipsoid(tissue, start + (end - start) * t, (radius,) * 3, only_on)
        self.ellipsoid(tissue, points[-1], (radius,) * 3, only_on)


def paint_body(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Outline, fat, muscles, organs, bowel, vessels and bones, in painting order."""
    _paint_outline(canvas, anatomy)
    _paint_lungs(canvas, rng)
    _paint_muscles(canvas, rng)
    _paint_organs(canvas, rng)
    _paint_bowel(canvas, rng)
    _paint_vessels(canvas, anatomy, rng)
    _paint_spine(canvas, rng)
    _paint_ribs(canvas, anatomy, rng)
    _paint_pelvis(canvas, anatomy, rng)


_SOFT = (T.VISCERAL_FAT, T.LUNG)


def _superellipse(u, v, half_width, half_depth, centre_v):
    """Body-outline 'radius' (<= 1 inside): flatter at the back, where the patient lies."""
    du = np.abs(u / half_width)
    dv_raw = (v - centre_v) / half_depth
    power = np.where(dv_raw < 0, np.float32(3.2), np.float32(2.2))
    return (du**power + np.abs(dv_raw) ** power) ** (1 / power)


def _outline_2d(canvas: Canvas, anatomy: Anatomy, inset_mm: float) -> np.ndarray:
    u = canvas.axes[0][:, None]
    v = canvas.axes[1][None, :]
    f = _superellipse(
        u, v, anatomy.half_width - inset_mm, anatomy.half_depth - inset_mm, anatomy.body_centre_y
    )
    return f <= 1


def _paint_outline(canvas: Canvas, anatomy: Anatomy) -> None:
    layers = (
        (T.FAT, 0.0),
        (T.MUSCLE, anatomy.fat_mm),
        (T.VISCERAL_FAT, anatomy.fat_mm + anatomy.wall_mm),
    )
    for tissue, inset in layers:
        canvas.tissue[_outline_2d(canvas, anatomy, inset)] = tissue


def _paint_lungs(canvas: Canvas, rng: np.random.Generator) -> None:
    """Lung bases above a dome that is lower at the back; organs painted later carve it."""
    base = rng.uniform(85, 120)
    found = canvas.region((-1e4, -1e4, base - 60), (1e4, 1e4, 1e4))
    if found is None:
        return
    slices, u, v, w = found
    floor = base + 0.002 * u**2 + 0.3 * v
    canvas.paint(T.LUNG, slices, (w > floor) & (np.abs(u) > 35), only_on=(T.VISCERAL_FAT,))


def _paint_muscles(canvas: Canvas, rng: np.random.Generator) -> None:
    inside = (T.VISCERAL_FAT, T.MUSCLE, T.FAT, T.LUNG)
    for side in (-1, 1):
        # erector spinae, behind the transverse processes
        canvas.column(T.MUSCLE, (side * 38, -52), (25, 22), (-1e4, 1e4), only_on=inside)
        # quadratus lumborum, behind the kidneys
        canvas.column(T.MUSCLE, (side * 68, -34), (20, 9), (-140, 45), only_on=inside)
        _paint_psoas(canvas, side, rng.uniform(18, 26))


def _paint_psoas(canvas: Canvas, side: int, max_radius: float) -> None:
    """Grows from nothing near the upper kidney pole to its full size in the pelvis."""
    found = canvas.region((side * 30 - 60, -30, -1e4), (side * 30 + 60, 40, 50))
    if found is None:
        return
    slices, u, v, w = found
    radius = np.clip((45 - w) * 0.2, 0, max_radius)
    centre_u = side * (24 + radius)
    canvas.paint(T.MUSCLE, slices, (u - centre_u) ** 2 + (v - 4) ** 2 <= radius**2, _SOFT)


def _paint_organs(canvas: Canvas, rng: np.random.Generator) -> None:
    j = rng.uniform(-8, 8, size=8)
    canvas.ellipsoid(T.LIVER, (70 + j[0], 18, 78 + j[1]), (78, 85, 88 + j[2]), _SOFT)
    canvas.ellipsoid(T.LIVER, (-12, 58, 100 + j[3]), (58, 35, 42), _SOFT)
    if rng.random() < 0.6:
        canvas.ellipsoid(T.GALLBLADDER, (48, 50, 32 + j[4]), (14, 14, 28), (T.LIVER, *_SOFT))
    canvas.ellipsoid(T.SPLEEN, (-95, -22, 72 + j[5]), (30, 50, 52), _SOFT)
    stomach_centre, stomach_radii = np.array((-45, 55, 90 + j[6])), np.array((45, 33, 45))
    canvas.ellipsoid(T.BOWEL_WALL, stomach_centre, stomach_radii, _SOFT)
    canvas.ellipsoid(T.STOMACH_FLUID, stomach_centre, stomach_radii - 4, (T.BOWEL_WALL,))
    # gas rises to the anterior side of a supine patient
    gas_centre = stomach_centre + np.array((0, stomach_radii[1] * 0.8, 0))
    canvas.ellipsoid(T.GAS, gas_centre, stomach_radii * (0.7, 0.35, 0.7), (T.STOMACH_FLUID,))


def _paint_bowel(canvas: Canvas, rng: np.random.Generator) -> None:
    colon = np.array(
        [(95, 5, -140), (98, 10, 35), (55, 62, 42), (-55, 62, 48), (-95, 0, 58), (-95, 0, -140)],
        np.float32,
    ) + rng.uniform(-6, 6, size=(6, 3)).astype(np.float32)
    radius = rng.uniform(16, 22)
    canvas.tube(T.BOWEL_WALL, colon, radius, only_on=(T.VISCERAL_FAT,))
    canvas.tube(T.STOOL, colon, radius - 3, only_on=(T.BOWEL_WALL,))
    for _ in range(int(rng.integers(3, 8))):
        point = colon[int(rng.integers(0, len(colon)))] + rng.uniform(-10, 10, 3)
        canvas.ellipsoid(T.GAS, point, (radius * 0.6,) * 3, only_on=(T.STOOL,))
    for _ in range(int(rng.integers(3, 6))):  # small-bowel loops: random walks, anterior
        point = rng.uniform((-70, 15, -140), (70, 80, 20))
        walk = [point]
        for _ in range(8):
            point = np.clip(point + rng.normal(0, 22, 3), (-90, 5, -160), (90, 95, 30))
            walk.append(point)
        loop_radius = rng.uniform(9, 14)
        canvas.tube(T.BOWEL_WALL, walk, loop_radius, only_on=(T.VISCERAL_FAT,))
        canvas.tube(T.BOWEL_FLUID, walk, loop_radius - 2.5, only_on=(T.BOWEL_WALL,))
        if rng.random() < 0.5:
            gas_at = walk[int(rng.integers(0, len(walk)))] + (0, loop_radius * 0.4, 0)
            canvas.ellipsoid(T.GAS, gas_at, (loop_radius * 0.6,) * 3, (T.BOWEL_FLUID,))


_AORTA_UV, _IVC_UV = (-16.0, 30.0), (23.0, 32.0)


def _paint_vessels(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Aorta and IVC beside the spine; renal veins and arteries to the hila where known."""
    not_bone = (T.VISCERAL_FAT, T.MUSCLE, T.BOWEL_WALL, T.BOWEL_FLUID, T.STOOL, T.LIVER)
    canvas.column(T.AORTA, _AORTA_UV, (rng.uniform(9, 13),) * 2, (-95, 1e4), not_bone)
    canvas.column(T.IVC, _IVC_UV, (13, 9), (-95, 1e4), not_bone)
    anchors = np.array([anatomy.midline_x, anatomy.spine_y, anatomy.kidney_z])
    for hilum in anatomy.hila:
        u, v, w = np.asarray(hilum) - anchors
        # the left renal vein crosses in front of the aorta to reach the IVC
        via = [(_AORTA_UV[0], _AORTA_UV[1] + 16, w)] if u < 0 else []
        vein = [(u, v, w), *via, (*_IVC_UV, w)]
        canvas.tube(T.IVC, vein, rng.uniform(3.5, 5.5), only_on=not_bone)
        artery = [(u, v - 6, w + 4), (*_AORTA_UV, w + 8)]
        canvas.tube(T.AORTA, artery, rng.uniform(2.0, 3.0), only_on=(*not_bone, T.IVC))


def _paint_spine(canvas: Canvas, rng: np.random.Generator) -> None:
    """Vertebral bodies with a cortical rim and discs, canal, laminae and processes."""
    found = canvas.region((-60, -80, -1e4), (60, 25, 1e4))
    if found is None:
        return
    slices, u, v, w = found
    period, disc = rng.uniform(32, 38), rng.uniform(6, 9)
    phase = np.mod(w - rng.uniform(0, period), period)
    in_disc, mid_vertebra = phase < disc, np.abs(phase - (disc + period) / 2) < 8
    body = (u / 21) ** 2 + (v / 17) ** 2
    canal = (u / 9) ** 2 + ((v + 29) / 8) ** 2
    ring = (u / 15) ** 2 + ((v + 29) / 14) ** 2
    spinous = (np.abs(u) < 4) & (v < -38) & (v > -72)
    transverse = (np.abs(u) > 12) & (np.abs(u) < 42) & (np.abs(v + 24) < 5)
    posterior = ((ring <= 1) & (v < -29) | spinous | transverse) & mid_vertebra
    canvas.paint(T.CORTICAL, slices, ((body <= 1) & ~in_disc) | posterior)
    canvas.paint(T.CANCELLOUS, slices, (body <= 0.72) & ~in_disc)
    canvas.paint(T.DISC, slices, (body <= 1) & in_disc)
    canvas.paint(T.CSF, slices, canal <= 1)


def _paint_ribs(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Rib arcs in the body wall, sloping steeply down towards the front, from mid-kidney up.

    Each rib: a cortical shell around marrow, about 9 mm high and 9 mm deep. Painted pixel by
    pixel of the arc (a thin ring), which is far cheaper than 3D masks over the whole slab.
    """
    u2, v2 = canvas.axes[0][:, None], canvas.axes[1][None, :]
    inset = anatomy.fat_mm + anatomy.wall_mm * 0.5
    f = _superellipse(
        u2, v2, anatomy.half_width - inset, anatomy.half_depth - inset, anatomy.body_centre_y
    )
    radial = np.abs(f - 1) * min(anatomy.half_width, anatomy.half_depth)  # mm from the arc
    ix, iy = np.nonzero(radial < 4.5)
    radial = radial[ix, iy]
    angle = np.arctan2(canvas.axes[1][iy] - anatomy.body_centre_y, np.abs(canvas.axes[0][ix]))
    drop = (angle + np.pi / 2) * 30  # mm lower at the front (-pi/2: back, pi/2: front)
    w0, dz = float(canvas.axes[2][0]), canvas.spacing[2]
    bones = (T.MUSCLE, T.FAT, T.VISCERAL_FAT, T.LUNG)
    for level in np.arange(rng.uniform(-35, -15), canvas.axes[2][-1] + 100, rng.uniform(22, 27)):
        reach = -0.6 + (level + 30) / 80  # lower ribs stop at the side, upper ones go round
        centre = level - drop
        for tissue, half, only_on in ((T.CORTICAL, 4.5, bones), (T.CANCELLOUS, 2.5, (T.CORTICAL,))):
            keep = (angle < reach) & (radial < half)
            first = np.ceil((centre[keep] - half - w0) / dz).astype(np.int64)
            for step in range(int(np.ceil(2 * half / dz)) + 1):
                iz = first + step
                inside = (iz * dz + w0 < centre[keep] + half) & (iz >= 0)
                inside &= iz < canvas.tissue.shape[2]
                points = (ix[keep][inside], iy[keep][inside], iz[inside])
                canvas.paint_points(tissue, points, only_on)


def _paint_pelvis(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Iliac wings below the crest (about L4), gluteal muscle behind them."""
    crest = -rng.uniform(95, 120)
    found = canvas.region((-1e4, -1e4, -1e4), (1e4, 1e4, crest))
    if found is None:
        return
    slices, u, v, _ = found
    au, v2 = np.abs(u[:, :, 0]), v[:, :, 0]
    start, end = np.array([42.0, -42.0]), np.array([rng.uniform(115, 135), rng.uniform(5, 25)])
    along = end - start
    t = np.clip(((au - start[0]) * along[0] + (v2 - start[1]) * along[1]) / (along @ along), 0, 1)
    distance = np.hypot(au - start[0] - t * along[0], v2 - start[1] - t * along[1])
    behind = (v2 - start[1]) * along[0] - (au - start[0]) * along[1] < 0
    inside = _outline_2d(canvas, anatomy, anatomy.fat_mm)
    gluteal = behind & inside & (au > start[0]) & (au < end[0] + 10)
    soft = (T.FAT, T.VISCERAL_FAT, T.MUSCLE, T.BOWEL_WALL, T.BOWEL_FLUID, T.STOOL, T.GAS)
    canvas.paint(T.MUSCLE, slices, gluteal[:, :, None], soft)
    canvas.paint(T.CORTICAL, slices, (distance < 5)[:, :, None], (*soft, T.AORTA, T.IVC))
    canvas.paint(T.CANCELLOUS, slices, (distance < 2.5)[:, :, None], (T.CORTICAL,))


def tissue_means(tissues: dict[T, Tissue], rng: np.random.Generator) -> np.ndarray:
    """This case's mean HU of each tissue class (indexable by ``T``)."""
    means = np.zeros(max(T) + 1, np.float32)
    for tissue, spec in tissues.items():
        means[tissue] = spec.hu + spec.case_sd * rng.standard_normal()
    return means


def body_hu(
    canvas: Canvas, means: np.ndarray, tissues: dict[T, Tissue], config: BodyConfig, rng
) -> np.ndarray:
    """Tissue means plus smooth texture, blurred (noise is added separately)."""
    texture = np.zeros(max(T) + 1, np.float32)
    for tissue, spec in tissues.items():
        texture[tissue] = spec.texture
    field_ = smooth_field(canvas.tissue.shape, canvas.spacing, config.texture_correlation_mm, rng)
    hu = means[canvas.tissue] + texture[canvas.tissue] * field_
    return ndi.gaussian_filter(hu, blur_sigma_vox(canvas.spacing, config), truncate=3.0)


def blur_sigma_vox(spacing, config: BodyConfig) -> tuple[float, ...]:
    in_plane = config.blur_mm
    along_z = max(config.blur_mm, 0.4 * spacing[2])
    return tuple(s_mm / s for s_mm, s in zip((in_plane, in_plane, along_z), spacing, strict=True))


def correlated_noise(shape, config: BodyConfig, std_hu: float, rng) -> np.ndarray:
    noise = ndi.gaussian_filter(
        rng.standard_normal(shape, dtype=np.float32), config.noise_sigma_vox
    )
    return noise * np.float32(std_hu / max(float(noise.std()), 1e-6))


def upsample_into(out: np.ndarray, work: np.ndarray, weights) -> None:
    """``out`` (int16, maybe a strided view) = rounded, clipped linear upsampling of ``work``.

    Works in slabs along the axis that is slowest in ``out``'s memory, so each slab is one
    contiguous block of the output whatever the view's axis order.
    """
    axis = int(np.argmax(np.abs(out.strides)))
    for start in range(0, out.shape[axis], _UPSAMPLE_CHUNK_ROWS):
        rows = slice(start, start + _UPSAMPLE_CHUNK_ROWS)
        slab_weights = list(weights)
        slab_weights[axis] = (weights[axis][0][rows], weights[axis][1][rows])
        index = tuple(rows if k == axis else slice(None) for k in range(out.ndim))
        slab = upsample(work, slab_weights)
        np.rint(slab, out=slab)
        out[index] = np.clip(slab, HU_MIN, HU_MAX, out=slab)  # cast to int16 on assignment


def to_int16(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
