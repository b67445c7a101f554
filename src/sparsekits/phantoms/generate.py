"""Synthetic abdominal CT phantoms with kidney, tumour and cyst labels (KiTS23 conventions).

``make_phantom`` builds one case: either synthetic kidneys (position, size, rotation, and tumours
and cysts whose number and size follow KiTS23, drawn from the seed) on a small default grid, or
the geometry of a given label map (for example a real KiTS23 segmentation) at that map's own
shape, spacing and affine. The body (fat, muscle, liver, spleen, bowel, vessels, spine, ribs,
lung bases) is built around the kidneys (``body``), then the kidneys with their sinus, tumours
and cysts (``kidney``), in the case's contrast phase (``tissues``).
``write_phantom_dataset`` writes cases in the KiTS23 layout (``case_XXXXX/imaging.nii.gz`` +
``segmentation.nii.gz``), with the tissue map beside them (``tissues.nii.gz``: the tissue each
voxel was painted with, ``tissues.TISSUE_MAP_NAMES``), for accounting errors by tissue.

Preview: ``python -m sparsekits.phantoms --preview out.png [--seed S] [--phase P]``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.ndimage as ndi
from nibabel import orientations as ornt_
from tqdm import tqdm

from sparsekits.data.geometry import Grid
from sparsekits.data.io import read_label_map, write_label_map
from sparsekits.errors import InputError
from sparsekits.fileio import atomic_path
from sparsekits.layout import KITS_CASE_GLOB, KITS_IMAGE, KITS_LABEL, NIFTI_OUT, PHANTOM_TISSUES
from sparsekits.phantoms.body import (
    Anatomy,
    BodyConfig,
    Canvas,
    body_hu,
    correlated_noise,
    draw_anatomy,
    linear_weights,
    paint_body,
    smooth_field,
    tissue_means,
    to_int16,
    upsample,
    upsample_into,
)
from sparsekits.phantoms.kidney import KidneyConfig, KidneyLook, kidney_anatomy_hu
from sparsekits.phantoms.lesions import KITS23_CYSTS, KITS23_TUMOURS, LesionDistribution
from sparsekits.phantoms.tissues import BODY_TISSUES, LABELLED_TISSUES, PHASES, T, check_phase

RAS = ("R", "A", "S")


VIEWS = ("body", "kidneys")


@dataclass(frozen=True)
class PhantomConfig:
    """Grid, contrast phase and the distribution of the synthetic kidneys, tumours and cysts."""

    shape: tuple[int, int, int] = (160, 128, 96)  # (x, y, z): left-right, back-front, feet-head
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.5)
    # Contrast phase of each case, drawn with these shares. KiTS is mostly late arterial
    # (corticomedullary); KiTS23 added nephrographic cases.
    phase_p: dict[str, float] = field(
        default_factory=lambda: {"arterial": 0.7, "nephrographic": 0.3}
    )
    both_kidneys_p: float = 0.75
    # Sized to KiTS23's kidneys: parenchyma (label 1) 162 / 184 / 222 mL at the quartiles of 65
    # kidneys of ../shared/data/kits23-labels, which these ellipsoids (less the renal sinus)
    # reach; at 0.87x these lengths (121 mL median) a tumour of KiTS23's size swallowed the
    # kidney far more often than in KiTS23 (docs/PHANTOMS.md, "Lesion geometry").
    kidney_length_mm: tuple[float, float] = (115.0, 144.0)
    kidney_width_mm: tuple[float, float] = (55.0, 69.0)
    kidney_thickness_mm: tuple[float, float] = (44.0, 55.0)
    tumours: LesionDistribution = KITS23_TUMOURS
    cysts: LesionDistribution = KITS23_CYSTS
    # Where a lesion sits: its centre is a kidney surface point moved inwards by a fraction of
    # the lesion's radius, drawn from one of two ranges, and it pushes the parenchyma aside by
    # a share of its volume (``mass_effect``) instead of replacing it all. Fitted to KiTS23's
    # label maps (24 phantoms against 98 maps, 2026-12-03): tumours more than half outside the
    # parenchyma's hull 24 % against 20 %, volume-weighted share outside 29 % against 41 %; a
    # lesioned kidney's parenchyma share 0.34 / 0.42 / 0.73 / 0.90 at its 5 / 10 / 25 / 50 %
    # against 0.24 / 0.38 / 0.70 / 0.90 (docs/PHANTOMS.md, "Lesion geometry"). With replacement
    # alone, large tumours swallowed whole kidneys (under 20 % parenchyma: 15 % of lesioned
    # kidneys against KiTS23's 4 %), which no first stage can find.
    exophytic_p: float = 0.35
    exophytic_depth: tuple[float, float] = (-0.4, 0.2)
    embedded_depth: tuple[float, float] = (1.0, 1.6)
    # Real kidneys keep parenchyma around their masses (a claw around an embedded tumour).
    mass_effect: tuple[float, float] = (0.5, 1.0)
    body: BodyConfig = field(default_factory=BodyConfig)
    kidney: KidneyConfig = field(default_factory=KidneyConfig)
    # What the field of view centres on, front to back: the "body" (a whole trunk's scan) or the
    # "kidneys" (a view cropped to the kidneys, as the demo's, which cut off the kidneys' backs
    # when centred on the body).
    view: str = "body"

    def __post_init__(self) -> None:
        for phase in self.phase_p:
            check_phase(phase)
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, not {self.view!r}")

    def draw_phase(self, rng: np.random.Generator) -> str:
        phases = list(self.phase_p)
        p = np.asarray([self.phase_p[phase] for phase in phases], float)
        return phases[int(rng.choice(len(phases), p=p / p.sum()))]

    def with_kidneys_scaled(self, factor: float) -> PhantomConfig:
        """The same config with kidneys and tumours ``factor`` times the size (tumours keep
        their size relative to the kidney)."""

        def scaled(limits: tuple[float, float]) -> tuple[float, float]:
            return (limits[0] * factor, limits[1] * factor)

        return dataclasses.replace(
            self,
            kidney_length_mm=scaled(self.kidney_length_mm),
            kidney_width_mm=scaled(self.kidney_width_mm),
            kidney_thickness_mm=scaled(self.kidney_thickness_mm),
            tumours=self.tumours.scaled(factor),
        )

    def with_phase(self, phase: str) -> PhantomConfig:
        """The same config with every case in ``phase``."""
        return dataclasses.replace(self, phase_p={check_phase(phase): 1.0})


DEFAULT = PhantomConfig()


@dataclass
class Phantom:
    hu: np.ndarray  # int16, array axes as ``affine`` says
    labels: np.ndarray  # uint8: 0 background, 1 kidney, 2 tumour, 3 cyst
    affine: np.ndarray  # float64 4x4: voxel index -> world (RAS, mm)
    info: dict = field(default_factory=dict)  # kidneys present, tumour/cyst sizes, source
    tissues: np.ndarray | None = None  # uint8 tissue map (``tissues.TISSUE_MAP_NAMES``)


def make_phantom(
    seed: int,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    labels: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    orientation: str = "RAS",
    config: PhantomConfig = DEFAULT,
) -> Phantom:
    """One synthetic CT case, deterministic for ``seed``.

    Without ``labels``: synthetic kidneys on a grid of ``shape``/``spacing`` given as (x, y, z),
    i.e. (left-right, posterior-anterior, inferior-superior); the arrays come out in the axis
    order of ``orientation`` (any three nibabel axis codes: "RAS", "LPS", or "IPL" for KiTS23's
    (slices, 512, 512) layout), with the affine to match.
    With ``labels`` (values 0-3) and ``affine``: the body is built around that geometry on that
    grid; the returned labels are the given ones, unchanged.
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        labels, affine, info = _synthetic_case(shape, spacing, orientation, config, rng)
        anatomy = info.pop("anatomy")
    else:
        if affine is None:
            raise ValueError("make_phantom: labels need their affine")
        labels = np.asarray(labels, dtype=np.uint8)
        anatomy, info = None, {}
    affine = np.asarray(affine, dtype=np.float64)
    hu, tissues, anatomy, drawn = _render(labels, affine, config, rng, anatomy)
    info.update(drawn)
    info["anatomy"] = dataclasses.asdict(anatomy)  # mm from voxel 0 in RAS layout
    return Phantom(hu=hu, labels=labels, affine=affine, info=info, tissues=tissues)


def write_phantom_dataset(
    out_dir: str | Path,
    n_cases: int,
    labels_from: str | Path | None = None,
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    orientation: str = "RAS",
    config: PhantomConfig = DEFAULT,
) -> list[Path]:
    """Write ``n_cases`` phantoms as ``out_dir/case_XXXXX/{imaging,segmentation}.nii.gz``.

    Case ``i`` uses the seed (``seed``, ``i``). With ``labels_from`` (a folder of KiTS23 label
    maps ``*.nii.gz``, or of ``case_*/segmentation.nii.gz``), each case takes the geometry of one
    of them, a different one per case while they last, in a seed-determined order.
    """
    out_dir = Path(out_dir)
    sources = _label_sources(Path(labels_from)) if labels_from is not None else []
    order = np.random.default_rng(seed).permutation(len(sources)) if sources else []
    written = []
    for index in tqdm(range(n_cases), desc="phantoms", unit="case"):
        case_seed = case_seed_of(seed, index)
        if sources:
            source = sources[order[index % len(sources)]]
            image = read_label_map(source)
            phantom = make_phantom(
                case_seed, labels=image.array, affine=image.grid.affine, config=config
            )
            phantom.info["labels_from"] = str(source)
        else:
            phantom = make_phantom(
                case_seed, shape, spacing, orientation=orientation, config=config
            )
        written.append(write_case(out_dir / f"case_{index:05d}", phantom))
    return written


def case_seed_of(seed: int, index: int) -> int:
    """The seed of case ``index`` of a dataset written with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_case(case_dir: Path, phantom: Phantom) -> Path:
    """KiTS23 layout: int16 HU image and uint8 labels on the same grid, written atomically, and
    the tissue map beside them."""
    image = nib.Nifti1Image(phantom.hu, phantom.affine)
    image.set_data_dtype(np.int16)
    image.set_qform(phantom.affine, code=1)
    image.set_sform(phantom.affine, code=1)
    with atomic_path(case_dir / KITS_IMAGE) as tmp:
        nib.save(image, tmp)
    grid = Grid(phantom.labels.shape, phantom.affine)
    write_label_map(case_dir / KITS_LABEL, phantom.labels, grid)
    if phantom.tissues is not None:
        write_label_map(case_dir / PHANTOM_TISSUES, phantom.tissues, grid)
    return case_dir


def _label_sources(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(folder, "--labels-from must be a folder of KiTS23 label maps")
    files = sorted(p for p in folder.glob(f"*{NIFTI_OUT}") if not p.name.startswith("."))
    files += sorted(folder.glob(f"{KITS_CASE_GLOB}/{KITS_LABEL}"))
    if not files:
        raise InputError(folder, "no label maps (*.nii.gz or case_*/segmentation.nii.gz) found")
    return files


# ---------------------------------------------------------------------------------------------
# Orientation: everything is painted on an RAS-layout view of the output arrays


def _to_ras(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from the array layout of ``affine`` to RAS layout."""
    return ornt_.io_orientation(affine)


def _ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _flip) in enumerate(_to_ras(affine)):
        spacing[int(target)] = float(zooms[axis])
    return tuple(spacing)


def _reoriented(labels_ras: np.ndarray, affine_ras: np.ndarray, codes: str):
    """RAS-layout labels and affine in the axis order of ``codes``."""
    codes = tuple(codes.upper())
    try:
        transform = ornt_.ornt_transform(ornt_.axcodes2ornt(RAS), ornt_.axcodes2ornt(codes))
    except Exception as error:
        raise ValueError(
            f"orientation must be three axis codes such as RAS, LPS, IPL: {codes}"
        ) from error
    labels = np.ascontiguousarray(ornt_.apply_orientation(labels_ras, transform))
    affine = affine_ras @ ornt_.inv_ornt_aff(transform, labels_ras.shape)
    return labels, affine


# ---------------------------------------------------------------------------------------------
# Rendering the HU image around a label map


def _render(labels, affine, config: PhantomConfig, rng, anatomy: Anatomy | None):
    """int16 HU on the labels' grid (coarse body, upsampled, then kidneys at full resolution),
    the tissue map, the anatomy it was built on, and what was drawn (phase, lesion subtypes)."""
    body = config.body
    phase = config.draw_phase(rng)
    to_ras = _to_ras(affine)
    labels_ras = ornt_.apply_orientation(labels, to_ras)  # views: no copies of big volumes
    hu = np.empty(labels.shape, np.int16)
    hu_ras = ornt_.apply_orientation(hu, to_ras)
    spacing = _ras_spacing(affine)
    look = KidneyLook.draw(phase, config.kidney, rng)
    boxes = _label_boxes(labels_ras, spacing, body.seam_mm + 4 * max(body.blur_mm, spacing[2]))
    if anatomy is None:
        anatomy = _anatomy_from_labels(labels_ras, spacing, boxes, rng)
    anatomy = _fit_body(anatomy, labels_ras, spacing, boxes)

    work_spacing = tuple(max(s, body.work_spacing_mm) for s in spacing)
    work_shape = tuple(
        int(np.ceil((n - 1) * s / ws)) + 1
        for n, s, ws in zip(labels_ras.shape, spacing, work_spacing, strict=True)
    )
    canvas = Canvas(work_shape, work_spacing, anatomy)
    paint_body(canvas, anatomy, rng)
    for box in boxes:
        _paint_fat_shell(canvas, labels_ras, spacing, box, look, config.kidney, rng)
    tissue_map = _tissue_map(canvas, labels, labels_ras, spacing, to_ras)
    tissues = BODY_TISSUES[phase]
    means = tissue_means(tissues, rng)
    noise = correlated_noise(work_shape, body, rng.uniform(*body.noise_std_hu), rng)
    weights = [
        linear_weights(n, s, m, ws)
        for n, s, m, ws in zip(labels_ras.shape, spacing, work_shape, work_spacing, strict=True)
    ]
    # Upsample in the output's own memory order: writing through the RAS view is much slower.
    clean = body_hu(canvas, means, tissues, body, rng)
    upsample_into(hu, *_in_native_layout(clean + noise, weights, to_ras))
    del canvas

    lesions = []
    for box in boxes:
        box_weights = [
            (lower[s], weight[s]) for (lower, weight), s in zip(weights, box, strict=True)
        ]
        background = upsample(clean, box_weights)
        box_hu, decided, found = kidney_anatomy_hu(
            labels_ras[box], spacing, look, background, body, config.kidney, rng
        )
        box_hu += upsample(noise, box_weights)
        hu_ras[box][decided] = to_int16(box_hu[decided])
        lesions += found
    return hu, tissue_map, anatomy, {"phase": phase, "lesions": lesions}


def _tissue_map(canvas: Canvas, labels, labels_ras, spacing, to_ras) -> np.ndarray:
    """The canvas's tissues, nearest-sampled onto the labels' grid, with kidney, tumour and cyst
    codes where the labels have them (in the labels' own axis order)."""
    picks = [
        np.clip(np.rint(np.arange(n) * s / ws).astype(np.int64), 0, m - 1)
        for n, s, ws, m in zip(
            labels_ras.shape, spacing, canvas.spacing, canvas.tissue.shape, strict=True
        )
    ]
    tissues = np.empty_like(labels, dtype=np.uint8)
    tissues_ras = ornt_.apply_orientation(tissues, to_ras)  # a view: writes land in ``tissues``
    tissues_ras[...] = canvas.tissue[np.ix_(*picks)]
    for label, code in LABELLED_TISSUES.items():
        tissues_ras[labels_ras == label] = code
    return tissues


def _in_native_layout(work_ras: np.ndarray, weights_ras, to_ras):
    """The RAS-layout work array and upsampling weights, in the output array's axis order.

    Native axis k is RAS axis ``to_ras[k, 0]``, reversed where ``to_ras[k, 1]`` is -1: reversing
    the weights (not the work array) makes output index i read RAS index n - 1 - i.
    """
    order = [int(axis) for axis, _flip in to_ras]
    work = np.ascontiguousarray(work_ras.transpose(order))
    weights = []
    for axis, flip in to_ras:
        lower, weight = weights_ras[int(axis)]
        weights.append((lower[::-1], weight[::-1]) if flip < 0 else (lower, weight))
    return work, weights


def _label_boxes(labels_ras, spacing, margin_mm: float) -> list[tuple[slice, slice, slice]]:
    """Boxes (RAS index slices) around groups of labelled voxels split along x, plus a margin.

    Groups further apart along x than two margins (normally the two kidneys) get their own box,
    so the boxes never overlap.
    """
    occupied_x = np.flatnonzero(np.any(labels_ras, axis=(1, 2)))
    if occupied_x.size == 0:
        return []
    margin = [int(np.ceil(margin_mm / s)) for s in spacing]
    splits = np.flatnonzero(np.diff(occupied_x) > 2 * margin[0] + 1)
    boxes = []
    for run in np.split(occupied_x, splits + 1):
        x0, x1 = run[0], run[-1] + 1
        slab = labels_ras[x0:x1]
        ys = np.flatnonzero(np.any(slab, axis=(0, 2)))
        zs = np.flatnonzero(np.any(slab, axis=(0, 1)))
        lo = np.array([x0, ys[0], zs[0]]) - margin
        hi = np.array([x1, ys[-1] + 1, zs[-1] + 1]) + margin
        lo, hi = np.maximum(lo, 0), np.minimum(hi, labels_ras.shape)
        boxes.append(tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)))
    return boxes


# Perirenal fat, inside Gerota's fascia, holds the kidney apart from liver, spleen, bowel and
# muscle; bone, the outside and the great vessels (with the renal vessels at the hilum) stay.
_FAT_KEEPS = (T.AIR, T.CANCELLOUS, T.CORTICAL, T.DISC, T.CSF, T.AORTA, T.IVC)
_FAT_DISPLACES = tuple(tissue for tissue in T if tissue not in _FAT_KEEPS)


def _paint_fat_shell(canvas: Canvas, labels_ras, spacing, box, look, config, rng) -> None:
    """Perirenal fat of varying thickness, at least ``config.perirenal_fat_min_mm``, on the work
    grid around the kidneys and masses of ``box``."""
    thickest = 2.5 * look.perirenal_fat_mm
    index_ranges, picks = [], []
    for axis, s in enumerate(box):
        ws, reach = canvas.spacing[axis], int(np.ceil(thickest / canvas.spacing[axis]))
        lo = max(int(np.ceil(s.start * spacing[axis] / ws)) - reach, 0)
        hi = min(int((s.stop - 1) * spacing[axis] / ws) + 1 + reach, canvas.tissue.shape[axis])
        work_index = np.arange(lo, hi)
        source = np.rint(work_index * ws / spacing[axis]).astype(np.int64)
        index_ranges.append(slice(lo, hi))
        picks.append(np.clip(source, 0, labels_ras.shape[axis] - 1))
    sampled = labels_ras[np.ix_(*picks)] > 0
    if not sampled.any():
        return
    distance = ndi.distance_transform_edt(~sampled, sampling=canvas.spacing)
    field_ = smooth_field(sampled.shape, canvas.spacing, 25.0, rng)
    thinnest = config.perirenal_fat_min_mm
    thickness = np.clip(look.perirenal_fat_mm * (1 + 0.6 * field_), thinnest, thickest)
    shell = distance <= thickness
    canvas.paint(T.PERIRENAL_FAT, tuple(index_ranges), shell, only_on=_FAT_DISPLACES)


@dataclass(frozen=True)
class _Group:
    volume_ml: float
    centre_mm: np.ndarray


def _label_groups(labels_ras, spacing, boxes) -> list[_Group]:
    """Volume and centroid (mm from voxel 0, RAS layout) of each box's labels, largest first."""
    groups = []
    for box in boxes:
        mask = labels_ras[box] > 0
        count = int(mask.sum())
        centre = []
        for axis, s in enumerate(box):
            profile = mask.sum(axis=tuple(a for a in range(3) if a != axis))
            centre.append(
                (s.start + (profile * np.arange(len(profile))).sum() / count) * spacing[axis]
            )
        groups.append(_Group(count * float(np.prod(spacing)) / 1000, np.array(centre)))
    return sorted(groups, key=lambda g: -g.volume_ml)


def _anatomy_from_labels(labels_ras, spacing, boxes, rng) -> Anatomy:
    """Place the spine between (or beside) the labelled kidneys, at their height.

    Scanners fit the field of view to the patient, so the body is scaled to fill about 72 % of
    the field's width (within 0.9-1.25 of the default size).
    """
    extent = np.array([(n - 1) * s for n, s in zip(labels_ras.shape, spacing, strict=True)])
    scale = float(np.clip(0.72 * extent[0] / (2 * 143), 0.9, 1.25))
    groups = _label_groups(labels_ras, spacing, boxes)
    kidneys = [g for g in groups if g.volume_ml >= 0.2 * groups[0].volume_ml][:2] if groups else []
    if not kidneys:
        return draw_anatomy(rng, extent[0] / 2, extent[1] / 2 - 20, extent[2] / 2, scale)
    centres = np.array([k.centre_mm for k in kidneys])
    if len(kidneys) == 2 and abs(centres[0, 0] - centres[1, 0]) > 60:
        midline = centres[:, 0].mean()
    else:  # one kidney: it is on the side of the field of view's centre it lies on
        side = 1 if centres[0, 0] > extent[0] / 2 else -1
        midline = centres[0, 0] - side * 62
    return draw_anatomy(rng, midline, centres[:, 1].mean() + 14, centres[:, 2].mean(), scale)


def _fit_body(anatomy: Anatomy, labels_ras, spacing, boxes) -> Anatomy:
    """Grow the body outline so that every labelled voxel lies inside its abdominal cavity."""
    if not boxes:
        return anatomy
    lo = np.min(
        [[s.start * sp for s, sp in zip(box, spacing, strict=True)] for box in boxes], axis=0
    )
    hi = np.max(
        [[(s.stop - 1) * sp for s, sp in zip(box, spacing, strict=True)] for box in boxes], axis=0
    )
    skin = anatomy.fat_mm + anatomy.wall_mm
    half_width = max(
        anatomy.half_width,
        abs(lo[0] - anatomy.midline_x) + skin,
        abs(hi[0] - anatomy.midline_x) + skin,
    )
    spine_to_back = max(anatomy.spine_to_back, anatomy.spine_y - lo[1] + skin)
    front = hi[1] - anatomy.spine_y + skin  # labels' front, relative to the spine
    half_depth = max(anatomy.half_depth, (front + spine_to_back) / 2)
    return dataclasses.replace(
        anatomy,
        half_width=float(half_width),
        spine_to_back=float(spine_to_back),
        half_depth=float(half_depth),
    )


# ---------------------------------------------------------------------------------------------
# Synthetic kidneys, tumours and cysts


def _synthetic_case(shape, spacing, orientation: str, config: PhantomConfig, rng):
    shape = tuple(int(n) for n in (shape or config.shape))
    spacing = tuple(float(s) for s in (spacing or config.spacing_mm))
    extent = np.array([(n - 1) * s for n, s in zip(shape, spacing, strict=True)])
    anatomy = draw_anatomy(rng, 0.0, 0.0, 0.0)
    # Centre the body outline in the field of view (with a little jitter).
    anatomy = dataclasses.replace(
        anatomy,
        midline_x=float(extent[0] / 2 + rng.normal(0, 6)),
        spine_y=float(extent[1] / 2 + _view_offset_y(config, anatomy) + rng.normal(0, 4)),
        kidney_z=float(extent[2] * rng.uniform(0.42, 0.55)),
    )
    labels_ras = np.zeros(shape, np.uint8)
    info = _paint_kidneys(labels_ras, spacing, anatomy, config, rng)
    anatomy = dataclasses.replace(anatomy, hila=tuple(info.pop("hila")))
    affine_ras = np.diag([*spacing, 1.0])
    affine_ras[:3, 3] = -extent / 2  # the volume's centre at the world origin
    labels, affine = _reoriented(labels_ras, affine_ras, orientation)
    info["anatomy"] = anatomy
    return labels, affine, info


# How far (mm, front to back) kidney centres lie behind the spine's reference point: behind the
# vertebral bodies.
KIDNEY_BEHIND_SPINE_MM = (6.0, 20.0)


def _view_offset_y(config: PhantomConfig, anatomy: Anatomy) -> float:
    """Where the spine lies (mm, front to back) from the field of view's centre: the body's
    centre in the middle of the view, or the kidneys' (``config.view``)."""
    if config.view == "kidneys":
        return float(np.mean(KIDNEY_BEHIND_SPINE_MM))
    return -anatomy.body_centre_y


def _paint_kidneys(labels, spacing, anatomy: Anatomy, config: PhantomConfig, rng) -> dict:
    """Kidneys (1), each pushed aside by its lesions, then cysts (3), then tumours (2): KiTS23's
    paint order."""
    anchors = np.array([anatomy.midline_x, anatomy.spine_y, anatomy.kidney_z])
    sides = [1, -1] if rng.random() < config.both_kidneys_p else [int(rng.choice([1, -1]))]
    kidneys = [_draw_kidney(side, anchors, config, rng) for side in sides]
    info = {
        "kidneys": ["right" if s > 0 else "left" for s in sides],
        "tumour_diameters_mm": [],
        "cyst_diameters_mm": [],
        "hila": [
            tuple(float(c) for c in centre - axes[:, 0] * radii[0])
            for centre, axes, radii in kidneys
        ],
    }
    lesions = _draw_lesions(kidneys, config, rng)
    for index, (centre, axes, radii) in enumerate(kidneys):
        # the renal sinus: a notch of fat opening medially (the hilum), not labelled kidney
        sinus = (centre - axes[:, 0] * 0.6 * radii[0], radii * (0.55, 0.45, 0.5))
        pushers = [
            (lesion.centre, lesion.pushed_mm) for lesion in lesions if lesion.kidney == index
        ]
        mask = _ellipsoid_mask(
            labels.shape, spacing, centre, axes, radii, 0.05, rng, hole=sinus, pushers=pushers
        )
        _paint(labels, mask, 1)
    for lesion in lesions:
        radii = np.full(3, lesion.diameter_mm / 2)
        mask = _ellipsoid_mask(
            labels.shape, spacing, lesion.centre, np.eye(3), radii, lesion.roughness, rng
        )
        _paint(labels, mask, lesion.label)
        key = "tumour_diameters_mm" if lesion.label == 2 else "cyst_diameters_mm"
        info[key].append(round(float(lesion.diameter_mm), 1))
    return info


def _draw_kidney(side: int, anchors: np.ndarray, config: PhantomConfig, rng):
    """(centre, axes, radii) of the kidney on ``side`` (1 right, -1 left), in mm."""
    offset = (
        side * rng.uniform(62, 76),
        -rng.uniform(*KIDNEY_BEHIND_SPINE_MM),
        -side * 8 + rng.normal(0, 8),  # the right kidney sits a little lower
    )
    radii = np.array(
        [
            rng.uniform(*config.kidney_width_mm) / 2,
            rng.uniform(*config.kidney_thickness_mm) / 2,
            rng.uniform(*config.kidney_length_mm) / 2,
        ]
    )
    return anchors + np.array(offset), _kidney_axes(side, rng), radii


@dataclass(frozen=True)
class _Lesion:
    label: int  # 2 tumour, 3 cyst
    kidney: int  # index of the kidney it grows from
    centre: np.ndarray  # mm
    diameter_mm: float
    roughness: float
    pushed_mm: float  # radius of the sphere of parenchyma it pushes aside (mass effect)


def _draw_lesions(kidneys, config: PhantomConfig, rng) -> list[_Lesion]:
    """Cysts, then tumours, each on a kidney drawn at random, placed and sized as configured."""
    lesions = []
    for label, distribution, roughness in ((3, config.cysts, 0.02), (2, config.tumours, 0.12)):
        for _ in range(distribution.draw_count(rng)):
            diameter = distribution.draw_diameter(rng)
            kidney = int(rng.integers(len(kidneys)))
            centre, axes, radii = kidneys[kidney]
            exophytic = rng.random() < config.exophytic_p
            depth = rng.uniform(*(config.exophytic_depth if exophytic else config.embedded_depth))
            at = _lesion_centre(centre, axes, radii, diameter / 2, depth, rng)
            pushed = diameter / 2 * rng.uniform(*config.mass_effect) ** (1 / 3)
            lesions.append(_Lesion(label, kidney, at, diameter, roughness, pushed))
    return lesions


def _kidney_axes(side: int, rng) -> np.ndarray:
    """Columns: the kidney's lateral, anterior and long (upper-pole) axes in RAS.

    Upper pole tilted medially and posteriorly, hilum turned to face anteromedially.
    """
    coronal = np.deg2rad(rng.uniform(8, 20)) * -side
    sagittal = np.deg2rad(rng.uniform(4, 15))
    axial = np.deg2rad(rng.uniform(20, 40)) * -side
    c, s = np.cos(coronal), np.sin(coronal)
    about_y = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    c, s = np.cos(sagittal), np.sin(sagittal)
    about_x = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    c, s = np.cos(axial), np.sin(axial)
    about_z = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    local = np.array([[side, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    return about_z @ about_x @ about_y @ local


# How far out (a fraction of the way from the kidney's centre to its surface) a lesion's centre
# lies at least.
LESION_CENTRE_MIN_OUTWARD = 0.5


def _lesion_centre(centre, axes, radii, radius, depth_fraction, rng) -> np.ndarray:
    """A point on the kidney surface, moved inwards by ``depth_fraction`` of the lesion radius."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    surface = direction / np.sqrt(((direction / radii) ** 2).sum())
    # Never at the kidney's centre: a tumour grows from the cortex and pushes the kidney to one
    # side, leaving a thick rim of parenchyma there, not a thin shell all round.
    inward = max(LESION_CENTRE_MIN_OUTWARD, 1 - depth_fraction * radius / np.linalg.norm(surface))
    return centre + axes @ (surface * inward)


def _ellipsoid_mask(shape, spacing, centre, axes, radii, roughness, rng, hole=None, pushers=()):
    """(box slices, mask) of an ellipsoid with ``axes`` columns, its surface roughened.

    ``hole``: (centre, radii) of a second ellipsoid, same axes, cut out of the first.
    ``pushers``: (centre, radius) of spheres that push the ellipsoid's tissue aside.
    """
    reach = radii.max() * (1 + 3 * roughness) + max(spacing) + sum(r for _, r in pushers)
    lo = np.maximum(np.floor((centre - reach) / spacing), 0).astype(int)
    hi = np.minimum(np.ceil((centre + reach) / spacing) + 1, shape).astype(int)
    if np.any(hi <= lo):
        return None
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    points = np.meshgrid(
        *[np.arange(a, b, dtype=np.float32) * s for a, b, s in zip(lo, hi, spacing, strict=True)],
        indexing="ij",
    )
    limit = 1.0
    if roughness:
        limit = 1 + roughness * smooth_field(points[0].shape, spacing, radii.max() * 0.8, rng)
    for pusher in pushers:
        points = _pushed_aside(points, *pusher)
    mask = _ellipsoid_distance(points, centre, axes, radii) <= limit
    if hole is not None:
        mask &= _ellipsoid_distance(points, hole[0], axes, hole[1]) > 1
    return box, mask


def _pushed_aside(points, centre, radius: float) -> list[np.ndarray]:
    """Where each point's tissue came from when a sphere of ``radius`` grew at ``centre`` and
    pushed it outwards, conserving volume (a mass effect): a point at distance r' came from
    distance (r'^3 - radius^3)^(1/3). Points inside the sphere come from its centre: the lesion
    is painted over them, and where its rough surface dips under the sphere, what lies at its
    centre (parenchyma or fat) fills the dip."""
    offsets = [p - np.float32(c) for p, c in zip(points, centre, strict=True)]
    outer = np.sqrt(sum(o * o for o in offsets))
    inner = np.cbrt(np.maximum(outer**3 - np.float32(radius) ** 3, 0))
    scale = inner / np.maximum(outer, np.float32(1e-6))
    return [np.float32(c) + o * scale for o, c in zip(offsets, centre, strict=True)]


def _ellipsoid_distance(points, centre, axes, radii) -> np.ndarray:
    """Sum over the ellipsoid's axes of (offset / radius)^2: <= 1 inside."""
    offsets = [p - np.float32(c) for p, c in zip(points, centre, strict=True)]
    d = np.zeros(offsets[0].shape, np.float32)
    for k in range(3):
        local = offsets[0] * axes[0, k] + offsets[1] * axes[1, k] + offsets[2] * axes[2, k]
        d += (local / np.float32(radii[k])) ** 2
    return d


def _paint(labels, found, value: int) -> None:
    if found is not None:
        box, mask = found
        labels[box][mask] = value


# ---------------------------------------------------------------------------------------------
# Preview


def save_preview(phantom: Phantom, path: str | Path) -> Path:
    """PNG montage: axial, coronal and sagittal slices through the kidneys, labels outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    to_ras = _to_ras(phantom.affine)
    hu = ornt_.apply_orientation(phantom.hu, to_ras)[::-1]  # radiological: right on the left
    labels = ornt_.apply_orientation(phantom.labels, to_ras)[::-1]
    centre = [
        int(c)
        for c in (ndi.center_of_mass(labels > 0) if labels.any() else np.array(labels.shape) / 2)
    ]
    spacing = _ras_spacing(phantom.affine)
    views = (
        ("axial", hu[:, :, centre[2]].T, labels[:, :, centre[2]].T, spacing[1] / spacing[0]),
        ("coronal", hu[:, centre[1], :].T, labels[:, centre[1], :].T, spacing[2] / spacing[0]),
        ("sagittal", hu[centre[0], :, :].T, labels[centre[0], :, :].T, spacing[2] / spacing[1]),
    )
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, (name, image, label, aspect) in zip(axes, views, strict=True):
        ax.imshow(image, cmap="gray", vmin=-160, vmax=240, origin="lower", aspect=aspect)
        ax.contour(label, levels=[0.5, 1.5, 2.5], colors=["lime", "red", "cyan"], linewidths=0.6)
        ax.set_title(name)
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="preview a phantom as a PNG montage")
    parser.add_argument("--preview", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase", choices=PHASES, default=None, help="default: drawn")
    parser.add_argument("--labels", type=Path, default=None, help="a KiTS23 label map")
    args = parser.parse_args(argv)
    config = DEFAULT if args.phase is None else DEFAULT.with_phase(args.phase)
    if args.labels is not None:
        image = read_label_map(args.labels)
        phantom = make_phantom(
            args.seed, labels=image.array, affine=image.grid.affine, config=config
        )
    else:
        phantom = make_phantom(args.seed, config=config)
    print(save_preview(phantom, args.preview))
