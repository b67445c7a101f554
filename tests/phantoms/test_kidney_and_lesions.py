"""The kidney renderer (sinus, cortex, lesion subtypes) on a hand-made box, and the KiTS23 lesion
statistics on hand-made label maps."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi

from sparsekits.phantoms.body import BodyConfig
from sparsekits.phantoms.kidney import KidneyConfig, KidneyLook, kidney_anatomy_hu
from sparsekits.phantoms.lesions import (
    KITS23_CYSTS,
    KITS23_TUMOURS,
    MIN_LESION_ML,
    measure_lesions,
)
from sparsekits.phantoms.tissues import PHASES, RENAL_TISSUES, R

SPACING = (1.0, 1.0, 1.0)
BACKGROUND_HU = -100.0


def sphere(shape, centre, radius) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2


def kidney_box() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 50 x 40 x 80 mm kidney with a medial notch (the sinus), a tumour and a cyst."""
    shape = (70, 60, 100)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    kidney = ((grids[0] - 35) / 25) ** 2 + ((grids[1] - 30) / 20) ** 2 + ((grids[2] - 50) / 40) ** 2
    notch = ((grids[0] - 14) / 14) ** 2 + ((grids[1] - 30) / 9) ** 2 + ((grids[2] - 50) / 16) ** 2
    labels = np.zeros(shape, np.uint8)
    labels[(kidney <= 1) & (notch > 1)] = 1
    tumour = sphere(shape, (40, 30, 22), 11)
    cyst = sphere(shape, (45, 30, 78), 7)
    labels[tumour] = 2
    labels[cyst] = 3
    return labels, {"notch": (notch <= 1) & (kidney <= 1), "tumour": tumour, "cyst": cyst}


def render(phase: str, seed: int):
    labels, masks = kidney_box()
    rng = np.random.default_rng(seed)
    look = KidneyLook.draw(phase, KidneyConfig(), rng)
    background = np.full(labels.shape, BACKGROUND_HU, np.float32)
    hu, decided, lesions = kidney_anatomy_hu(
        labels, SPACING, look, background, BodyConfig(), KidneyConfig(), rng
    )
    return labels, masks, look, hu, decided, lesions


def core(mask: np.ndarray, depth_mm: float) -> np.ndarray:
    return ndi.distance_transform_edt(mask) > depth_mm


@pytest.mark.parametrize("phase", PHASES)
def test_cortex_medulla_and_sinus_take_the_phase_hu(phase):
    labels, masks, look, hu, decided, _ = render(phase, seed=1)
    kidney = labels == 1
    depth = ndi.distance_transform_edt(labels > 0)
    cortex = kidney & (depth > 1.5) & (depth <= 3)
    assert hu[cortex].mean() == pytest.approx(look.means[R.CORTEX], abs=30)
    deep = kidney & (depth > 12)
    assert hu[deep].mean() == pytest.approx(look.means[R.MEDULLA], abs=30)
    # the notch's depth is unlabelled renal sinus: decided here, fat and urine instead of the
    # background (near its medial opening, the hilum, the body stays)
    sinus = core(masks["notch"], 2.0) & (labels == 0)
    sinus[:18] = False
    assert decided[sinus].all()
    assert hu[sinus].min() < -60  # sinus fat
    assert hu[sinus].max() > -20  # the pelvis holds urine
    outside = ndi.distance_transform_edt(labels == 0) > 8
    assert not decided[outside & ~masks["notch"]].any()
    assert np.allclose(hu[outside & ~ndi.binary_dilation(masks["notch"], iterations=8)], -100)


def test_each_lesion_is_recorded_with_its_subtype_and_size():
    *_, lesions = render("arterial", seed=0)
    assert [lesion["label"] for lesion in lesions] == [3, 2]  # KiTS23 paint order: cysts first
    tumour_mm = (6 * sphere((70, 60, 100), (40, 30, 22), 11).sum() / math.pi) ** (1 / 3)
    assert lesions[1]["diameter_mm"] == pytest.approx(tumour_mm, abs=0.2)


def lesions_by_subtype(phase: str, label: int, seeds=range(30)) -> dict[str, list]:
    """{subtype: [(hu, mask, look), ...]} of label's lesion over several seeds."""
    found: dict[str, list] = {}
    for seed in seeds:
        _, masks, look, hu, _, lesions = render(phase, seed)
        lesion = next(lesion for lesion in lesions if lesion["label"] == label)
        mask = masks["tumour" if label == 2 else "cyst"]
        found.setdefault(lesion["subtype"], []).append((hu, mask, look))
    return found


def test_tumour_subtypes_enhance_as_published():
    found = lesions_by_subtype("arterial", 2)
    assert {"clear_cell", "papillary"} <= set(found)
    clear_cell_std = [hu[core(m, 2)].std() for hu, m, _ in found["clear_cell"]]
    papillary_std = [hu[core(m, 2)].std() for hu, m, _ in found["papillary"]]
    # clear-cell RCC is heterogeneous (texture, necrosis); papillary RCC is homogeneous
    assert np.median(clear_cell_std) > 2 * np.median(papillary_std)
    papillary = RENAL_TISSUES["arterial"][R.PAPILLARY]
    for hu, mask, look in found["papillary"]:
        assert hu[core(mask, 2)].mean() == pytest.approx(look.means[R.PAPILLARY], abs=25)
        assert hu[core(mask, 2)].mean() < look.means[R.CORTEX] - 100  # hypo-enhancing
    assert papillary.hu < 100
    necrotic = [
        (hu[core(m, 2)] < look.means[R.NECROSIS] + 25).mean() for hu, m, look in found["clear_cell"]
    ]
    assert max(necrotic) > 0.1  # some clear-cell tumours hold a necrotic core


def test_cysts_are_water_or_complex():
    found = lesions_by_subtype("nephrographic", 3, seeds=range(20))
    assert {"simple_cyst", "complex_cyst"} <= set(found)
    for hu, mask, _ in found["simple_cyst"]:
        assert -9 - 10 <= hu[core(mask, 2)].mean() <= 20 + 10  # Bosniak I: -9 to 20 HU
        assert hu[core(mask, 2)].std() < 8
    for hu, mask, look in found["complex_cyst"]:
        inner = hu[core(mask, 1)]
        # proteinaceous content, or water behind an enhancing wall and septa
        assert inner.mean() > 25 or inner.max() > look.means[R.SIMPLE_CYST] + 60


def test_kits23_distributions_match_their_documented_medians():
    rng = np.random.default_rng(0)
    tumours = [KITS23_TUMOURS.draw_diameter(rng) for _ in range(4000)]
    cysts = [KITS23_CYSTS.draw_diameter(rng) for _ in range(4000)]
    assert np.median(tumours) == pytest.approx(KITS23_TUMOURS.median_diameter_mm(), rel=0.05)
    assert np.median(cysts) == pytest.approx(KITS23_CYSTS.median_diameter_mm(), rel=0.05)
    counts = [KITS23_TUMOURS.draw_count(rng) for _ in range(2000)]
    assert 0.9 < np.mean(np.equal(counts, 1)) < 0.97 and min(counts) == 1


def test_measure_lesions_counts_components_and_their_diameters(tmp_path):
    spacing = (2.0, 1.0, 1.0)
    labels = np.zeros((40, 80, 80), np.uint8)
    labels[sphere(labels.shape, (10, 20, 20), 6)] = 2
    labels[sphere(labels.shape, (30, 60, 60), 9)] = 2
    labels[sphere(labels.shape, (30, 20, 60), 5)] = 3
    labels[5, 70, 5] = 3  # a speck under MIN_LESION_ML: not a lesion
    volumes_ml = [
        sphere(labels.shape, centre, radius).sum() * 2.0 / 1000
        for centre, radius in (((10, 20, 20), 6), ((30, 60, 60), 9))
    ]
    assert min(volumes_ml) >= MIN_LESION_ML
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros_like(labels), affine), tmp_path / "b.nii.gz")
    stats = measure_lesions(sorted(tmp_path.glob("*.nii.gz")))
    assert stats[2].cases == 2 and stats[2].counts == [2, 0] and stats[3].counts == [1, 0]
    expected = sorted(10 * (6 * v / math.pi) ** (1 / 3) for v in volumes_ml)
    assert sorted(stats[2].diameters_mm) == pytest.approx(expected)
    distribution = stats[2].distribution((5, 100))
    assert distribution.count_p == (0.5, 0.0, 0.5)


def test_the_subtype_shares_can_be_set():
    labels, _ = kidney_box()
    config = KidneyConfig(tumour_subtypes={R.PAPILLARY: 1.0}, cyst_subtypes={R.SIMPLE_CYST: 1.0})
    for seed in range(5):
        rng = np.random.default_rng(seed)
        look = KidneyLook.draw("nephrographic", config, rng)
        background = np.full(labels.shape, BACKGROUND_HU, np.float32)
        *_, lesions = kidney_anatomy_hu(
            labels, SPACING, look, background, BodyConfig(), config, rng
        )
        assert [lesion["subtype"] for lesion in lesions] == ["simple_cyst", "papillary"]
