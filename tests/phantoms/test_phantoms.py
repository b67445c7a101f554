"""Synthetic CT phantoms: determinism, HU per tissue, kidney/tumour variety, orientation, the CLI
writing the KiTS23 layout, and phantoms built around real KiTS23 label maps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi
from nibabel import orientations as ornt

from cli_runner import run_cli
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.phantoms import DEFAULT, PHASES, case_seed_of, make_phantom
from sparsekits.phantoms.tissues import (
    CYST_SUBTYPES,
    LABELLED_TISSUES,
    RENAL_TISSUES,
    TISSUE_MAP_NAMES,
    TUMOUR_SUBTYPES,
    R,
    T,
)

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages

N_CASES = 8
SUBTYPE_NAMES = {subtype.name.lower() for subtype in (*TUMOUR_SUBTYPES, *CYST_SUBTYPES)}
SPACING = (2.0, 2.0, 2.5)  # the default grid, RAS layout


@pytest.fixture(scope="module")
def phantoms():
    """The cases `sparsekits phantom --seed 0` writes first, made through the API."""
    return [make_phantom(case_seed_of(0, index)) for index in range(N_CASES)]


def depth_mm(labels: np.ndarray, values) -> np.ndarray:
    """Distance (mm) of each voxel inside ``labels in values`` to the nearest voxel outside."""
    inside = np.isin(labels, values)
    depth = np.zeros(labels.shape)
    if inside.any():
        box = tuple(
            slice(max(s.start - 1, 0), s.stop + 1)
            for s in ndi.find_objects(inside.astype(np.uint8))[0]
        )
        depth[box] = ndi.distance_transform_edt(inside[box], sampling=SPACING)
    return depth


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(phantoms):
    again = make_phantom(case_seed_of(0, 0))
    assert again.hu.tobytes() == phantoms[0].hu.tobytes()
    assert again.labels.tobytes() == phantoms[0].labels.tobytes()
    assert np.array_equal(again.affine, phantoms[0].affine)
    assert phantoms[1].hu.tobytes() != phantoms[0].hu.tobytes()
    assert phantoms[1].labels.tobytes() != phantoms[0].labels.tobytes()


def test_default_grid_types_and_label_values(phantoms):
    for phantom in phantoms:
        assert phantom.hu.shape == phantom.labels.shape == (160, 128, 96)
        assert phantom.hu.dtype == np.int16 and phantom.labels.dtype == np.uint8
        assert set(np.unique(phantom.labels)) <= {0, 1, 2, 3}
        assert nib.aff2axcodes(phantom.affine) == ("R", "A", "S")
        assert np.allclose(np.linalg.norm(phantom.affine[:3, :3], axis=0), SPACING)


@pytest.mark.parametrize("phase", PHASES)
def test_kidneys_look_as_their_contrast_phase_says(phase):
    tissues = RENAL_TISSUES[phase]
    config = DEFAULT.with_phase(phase)
    cortex_means, medulla_means, in_window = [], [], []
    for index in range(3):
        phantom = make_phantom(case_seed_of(7, index), config=config)
        assert phantom.info["phase"] == phase
        hu, labels = phantom.hu, phantom.labels
        kidney_depth = depth_mm(labels, (1, 2, 3))
        cortex_means.append(hu[(labels == 1) & (kidney_depth > 2) & (kidney_depth <= 3.5)].mean())
        deep = (labels == 1) & (kidney_depth > 14)
        if deep.sum() > 50:
            medulla_means.append(hu[deep].mean())
        in_window.append(STAGE1.sparsify.keep(hu[labels == 1]).mean())
    cortex = tissues[R.CORTEX]
    # blur and partial volume pull a 2-3.5 mm band a little towards the medulla
    assert abs(np.mean(cortex_means) - cortex.hu) < 2 * cortex.case_sd + 25
    assert medulla_means
    gap = np.mean(cortex_means) - np.mean(medulla_means)
    if phase == "arterial":
        assert gap > 60  # corticomedullary differentiation
    else:
        assert abs(gap) < 40  # a homogeneous nephrogram, or no contrast at all
    assert np.median(in_window) > 0.9, "stage 1 must see the kidneys"


def test_every_case_records_its_phase_and_lesions(phantoms):
    phases = {p.info["phase"] for p in phantoms}
    assert phases == {"arterial", "nephrographic"}  # the default mix
    for phantom in phantoms:
        lesions = phantom.info["lesions"]
        assert sum(lesion["label"] == 2 for lesion in lesions) >= 1  # as in KiTS23
        assert {lesion["subtype"] for lesion in lesions} <= SUBTYPE_NAMES


def test_air_outside_and_subcutaneous_fat(phantoms):
    for phantom in phantoms:
        hu, anatomy = phantom.hu, phantom.info["anatomy"]
        corners = hu[:4, :4, :]
        assert corners.mean() < -990
        # a lateral line through the body centre: air, skin, then subcutaneous fat
        y = round((anatomy["spine_y"] + anatomy["half_depth"] - anatomy["spine_to_back"]) / 2)
        z = round(anatomy["kidney_z"] / 2.5)
        line = hu[:, y, z].astype(float)
        skin = int(np.argmax(line > -500))
        assert skin > 0 and phantom.tissues[skin, y, z] == T.FAT
        # the fat's own HU: two voxels clear of the skin and of anything else (a rib, blurred)
        fat = ndi.binary_erosion(phantom.tissues[:, y, z] == T.FAT, iterations=2)
        assert fat.sum() >= 1
        assert -130 <= np.median(line[fat]) <= -70
        # soft tissue and bone are there too
        assert (hu > 300).sum() > 2000  # spine and ribs
        body = hu > -500
        assert STAGE1.sparsify.keep(hu[body]).mean() > 0.3  # liver, spleen, muscle, bowel


def kidney_sides(phantom) -> set[str]:
    """Sides (by label position relative to the midline) holding a kidney-sized component."""
    components, count = cc3d.connected_components(phantom.labels > 0, return_N=True)
    sizes = np.bincount(components.ravel())
    midline_index = phantom.info["anatomy"]["midline_x"] / SPACING[0]
    sides = set()
    for label in range(1, count + 1):
        if sizes[label] * np.prod(SPACING) < 40_000:  # 40 ml
            continue
        x = np.nonzero(components == label)[0].mean()
        sides.add("right" if x > midline_index else "left")  # RAS: x grows to the right
    return sides


def test_the_tissue_map_names_what_was_painted(phantoms):
    for phantom in phantoms:
        tissues = phantom.tissues
        assert tissues.shape == phantom.labels.shape and tissues.dtype == np.uint8
        assert set(np.unique(tissues)) <= set(TISSUE_MAP_NAMES)
        for label, code in LABELLED_TISSUES.items():
            assert np.array_equal(tissues == code, phantom.labels == label)
        hu = phantom.hu
        assert np.median(hu[tissues == T.AIR]) < -900
        assert np.median(hu[tissues == T.FAT]) < -60
        assert np.median(hu[tissues == T.LIVER]) > 30


def test_kidneys_and_masses_lie_in_perirenal_fat(phantoms):
    """Within 3 mm of a kidney or its masses lies perirenal fat, not liver, spleen or muscle."""
    rim_tissues = []
    for phantom in phantoms:
        outside = ndi.distance_transform_edt(phantom.labels == 0, sampling=SPACING)
        rim_tissues.append(phantom.tissues[(outside > 0) & (outside <= 3.0)])
    rim = np.concatenate(rim_tissues)
    assert (rim == T.PERIRENAL_FAT).mean() > 0.85
    organs = np.isin(rim, [T.LIVER, T.SPLEEN, T.MUSCLE, T.BOWEL_WALL])
    assert organs.mean() < 0.05
    assert np.median(np.concatenate([p.hu[p.tissues == T.PERIRENAL_FAT] for p in phantoms])) < -50


def test_both_kidneys_usually_and_sometimes_one(phantoms):
    sides = [kidney_sides(p) for p in phantoms]
    both = sum(s == {"left", "right"} for s in sides)
    assert both >= N_CASES // 2
    assert any(len(s) == 1 for s in sides)
    assert all(sorted(s) == sorted(p.info["kidneys"]) for s, p in zip(sides, phantoms, strict=True))


def test_tumour_sizes_follow_kits23(phantoms):
    drawn = [d for p in phantoms for d in p.info["tumour_diameters_mm"]]
    assert len(drawn) >= N_CASES
    low, high = DEFAULT.tumours.diameter_limits_mm
    assert all(low <= d <= high for d in drawn)
    assert max(drawn) > 2 * min(drawn)  # sizes vary
    measured = []
    for phantom in phantoms:
        components = cc3d.connected_components(phantom.labels == 2)
        volumes = np.bincount(components.ravel())[1:] * np.prod(SPACING)
        measured += list((6 * volumes / np.pi) ** (1 / 3))
    # a lesion may be cut by the kidney's edge or merge with another, but most are as drawn
    assert np.median(measured) == pytest.approx(np.median(drawn), rel=0.3)


@pytest.mark.parametrize("codes", ["LPS", "IPL"])
def test_orientation_is_a_relabelling_of_the_same_world(codes):
    ras = make_phantom(11)
    other = make_phantom(11, orientation=codes)
    assert nib.aff2axcodes(other.affine) == tuple(codes)
    transform = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt(codes))
    assert np.array_equal(other.hu, ornt.apply_orientation(ras.hu, transform))
    assert np.array_equal(other.labels, ornt.apply_orientation(ras.labels, transform))
    assert np.array_equal(other.tissues, ornt.apply_orientation(ras.tissues, transform))
    # voxel i of the RAS array and its image in the other layout sit at the same world point
    index = np.array([17, 40, 63])
    other_index = [0, 0, 0]
    for axis, (target, flip) in enumerate(transform):
        n = ras.hu.shape[axis]
        other_index[int(target)] = n - 1 - index[axis] if flip < 0 else index[axis]
    assert ras.hu[tuple(index)] == other.hu[tuple(other_index)]
    world = ras.affine @ [*index, 1]
    assert np.allclose(other.affine @ [*other_index, 1], world)
    if codes == "IPL":
        assert other.hu.shape == (96, 128, 160)  # slices first, as KiTS23


def test_given_labels_keep_their_geometry_and_get_a_body_around_them(phantoms):
    """One kidney of a phantom, handed over in LPS layout: labels and affine come back as given."""
    source = next(p for p in phantoms if len(p.info["kidneys"]) == 2)
    labels_ras = source.labels.copy()
    labels_ras[: int(source.info["anatomy"]["midline_x"] / SPACING[0])] = 0  # keep the right one
    transform = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt("LPS"))
    labels = np.ascontiguousarray(ornt.apply_orientation(labels_ras, transform))
    affine = source.affine @ ornt.inv_ornt_aff(transform, labels_ras.shape)
    phantom = make_phantom(5, labels=labels, affine=affine)
    assert np.array_equal(phantom.labels, labels) and np.array_equal(phantom.affine, affine)
    kidney = phantom.labels == 1
    assert phantom.hu[kidney].mean() > 120
    shell = ndi.binary_dilation(phantom.labels > 0, iterations=2) & (phantom.labels == 0)
    assert (phantom.hu[shell] > -500).mean() > 0.95  # inside a body, not in air
    assert phantom.hu[kidney].mean() > phantom.hu[shell].mean() + 50  # stands out by enhancing
    # the spine is placed medially: on the patient's left of the right kidney (LPS: x grows left)
    anatomy = phantom.info["anatomy"]
    kidney_x_ras = np.nonzero(labels_ras)[0].mean() * SPACING[0]
    assert 40 < kidney_x_ras - anatomy["midline_x"] < 90


def test_cli_writes_the_kits23_layout(tmp_path, phantoms):
    result = run_cli("phantom", "--out", str(tmp_path / "ds"), "--cases", "2", "--seed", "0")
    assert result.returncode == 0, result.stderr
    cases = sorted(p.name for p in (tmp_path / "ds").iterdir())
    assert cases == ["case_00000", "case_00001"]
    for index, name in enumerate(cases):
        image = nib.load(tmp_path / "ds" / name / "imaging.nii.gz")
        seg = nib.load(tmp_path / "ds" / name / "segmentation.nii.gz")
        assert image.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
        assert image.shape == seg.shape and np.allclose(image.affine, seg.affine)
        assert np.array_equal(np.asanyarray(image.dataobj), phantoms[index].hu)
        assert np.array_equal(np.asanyarray(seg.dataobj), phantoms[index].labels)
        tissues = nib.load(tmp_path / "ds" / name / "tissues.nii.gz")
        assert np.array_equal(np.asanyarray(tissues.dataobj), phantoms[index].tissues)
        assert np.allclose(image.affine, phantoms[index].affine, atol=1e-4)
    assert not list((tmp_path / "ds").rglob(".tmp-*"))


def test_cli_reports_a_labels_folder_without_label_maps(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli(
        "phantom", "--out", tmp_path / "ds", "--cases", 1, "--labels-from", tmp_path / "empty"
    )
    assert result.returncode == 2
    assert str(tmp_path / "empty") in result.stderr and "no label maps" in result.stderr
    assert not (tmp_path / "ds").exists()


@pytest.mark.shared_data
def test_cli_builds_a_body_around_real_kits23_labels(tmp_path, shared_data: Path):
    """A cropped copy of a real label map (I-P-L, 5 mm slices) keeps its geometry exactly."""
    source = nib.load(shared_data / "kits23-labels" / "case_00110.nii.gz")
    cropped = source.slicer[:, 180:360, 96:432]  # nibabel shifts the affine to match
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    nib.save(cropped, labels_dir / "case_00110.nii.gz")
    written = nib.load(labels_dir / "case_00110.nii.gz")
    result = run_cli(
        "phantom", "--out", tmp_path / "ds", "--cases", 1, "--labels-from", labels_dir, "--seed", 4
    )
    assert result.returncode == 0, result.stderr
    image = nib.load(tmp_path / "ds" / "case_00000" / "imaging.nii.gz")
    seg = nib.load(tmp_path / "ds" / "case_00000" / "segmentation.nii.gz")
    labels = np.asanyarray(written.dataobj)
    assert np.array_equal(np.asanyarray(seg.dataobj), labels)
    assert image.shape == labels.shape == (34, 180, 336)
    assert np.allclose(image.affine, written.affine) and np.allclose(seg.affine, written.affine)
    assert nib.aff2axcodes(image.affine) == ("I", "P", "L")
    hu = np.asanyarray(image.dataobj)
    assert hu.dtype == np.int16
    assert hu[labels == 1].mean() > 120  # contrast-enhanced (the default phases)
    assert (hu > -500).mean() > 0.5  # a body fills most of this crop around the kidneys


def one_large_embedded_tumour(mass_effect: tuple[float, float], count: int = 1):
    """DEFAULT with exactly ``count`` 80 mm tumours (about 270 mL, more than a kidney), deep in a
    kidney, no cysts, and the given mass effect."""
    return dataclasses.replace(
        DEFAULT,
        both_kidneys_p=0.0,
        tumours=dataclasses.replace(
            DEFAULT.tumours, count_p=(0.0,) * count + (1.0,), diameter_limits_mm=(80.0, 80.0)
        ),
        cysts=dataclasses.replace(DEFAULT.cysts, count_p=(1.0,)),
        exophytic_p=0.0,
        mass_effect=mass_effect,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_a_tumour_pushes_the_parenchyma_aside_instead_of_swallowing_it(seed):
    voxel_ml = np.prod(SPACING) / 1000

    def parenchyma_ml(config) -> float:
        return float((make_phantom(seed, config=config).labels == 1).sum() * voxel_ml)

    untouched = parenchyma_ml(one_large_embedded_tumour((1.0, 1.0), count=0))
    pushed = parenchyma_ml(one_large_embedded_tumour((1.0, 1.0)))
    replaced = parenchyma_ml(one_large_embedded_tumour((0.0, 0.0)))
    # Volume-conserving: the kidney keeps nearly all its parenchyma around the tumour (a little
    # goes under the tumour's rough surface) ...
    assert pushed == pytest.approx(untouched, rel=0.15)
    # ... where replacing it leaves a fraction.
    assert replaced < 0.6 * untouched


def test_scaled_kidneys_keep_their_tumours_in_proportion():
    small = DEFAULT.with_kidneys_scaled(0.5)
    assert small.kidney_length_mm == pytest.approx(np.multiply(DEFAULT.kidney_length_mm, 0.5))
    assert small.tumours.median_diameter_mm() == pytest.approx(
        DEFAULT.tumours.median_diameter_mm() * 0.5
    )
    assert small.cysts == DEFAULT.cysts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_view_on_the_kidneys_centres_them_front_to_back(seed):
    shape = (96, 80, 64)  # x, y, z: a view narrower than the body, as the demo's

    def kidneys_y_from_centre(view: str) -> float:
        labels = make_phantom(seed, shape=shape, config=dataclasses.replace(DEFAULT, view=view))
        y_mm = np.argwhere(labels.labels > 0)[:, 1] * SPACING[1]
        return float(y_mm.mean() - (shape[1] - 1) * SPACING[1] / 2)

    assert abs(kidneys_y_from_centre("kidneys")) < 15
    assert kidneys_y_from_centre("body") < -25  # the kidneys lie in the body's back half
    with pytest.raises(ValueError, match="view"):
        dataclasses.replace(DEFAULT, view="head")
