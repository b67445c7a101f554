"""Overlays: valid PNGs of the right size, labels coloured in place, radiological orientation."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from sparsekits.predict.overlay import OVERLAY_CONFIG, reorient, write_overlays

SHAPE = (48, 40, 24)  # RAS+: x (patient's left -> right), y (posterior -> anterior), z (up)
SPACING = (1.0, 1.5, 3.0)
AFFINE = np.diag([*SPACING, 1.0])


def anatomy() -> tuple[np.ndarray, np.ndarray]:
    """CT and labels on RAS: a right kidney with a tumour, a left kidney with a cyst, a bright
    anterior marker and a superior marker, all at known voxels."""
    ct = np.full(SHAPE, 40, np.int16)
    labels = np.zeros(SHAPE, np.uint8)
    labels[32:44, 10:26, 6:18] = 1  # right kidney (high x)
    labels[34:40, 14:20, 9:15] = 2  # its tumour
    labels[4:16, 10:26, 6:18] = 1  # left kidney
    labels[8:12, 16:22, 9:15] = 3  # its cyst
    ct[20:28, 34:38, :] = 1000  # anterior marker (high y), every slice
    ct[20:28, :, 21:23] = 1000  # superior marker (high z), every coronal slice
    return ct, labels


def pixel(image: np.ndarray, index: tuple[int, int], extent: tuple[int, int]) -> np.ndarray:
    """RGB of the pixel showing voxel (x index, y or z index) of a display slice: columns run
    against x (patient's right on the left), rows against y (axial) or z (coronal)."""
    height, width = image.shape[:2]
    column = int((extent[0] - 1 - index[0] + 0.5) / extent[0] * width)
    row = int((extent[1] - 1 - index[1] + 0.5) / extent[1] * height)
    return image[row, column, :3]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("overlays")
    ct, labels = anatomy()
    return write_overlays(ct, labels, AFFINE, out / "case")


def test_one_axial_and_one_coronal_png_per_kidney(written):
    names = sorted(path.name for path in written)
    assert names == sorted(
        f"case_{side}_{plane}.png" for side in ("right", "left") for plane in ("axial", "coronal")
    )
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in written[0].parent.iterdir()) == names  # no temporaries


@pytest.mark.parametrize(
    ("plane", "extent_mm"), [("axial", (48 * 1.0, 40 * 1.5)), ("coronal", (48 * 1.0, 24 * 3.0))]
)
def test_size_keeps_the_physical_aspect_ratio(written, plane, extent_mm):
    image = mpimg.imread(next(p for p in written if p.name == f"case_right_{plane}.png"))
    height, width = image.shape[:2]
    assert max(height, width) == OVERLAY_CONFIG.long_side_px
    assert width / height == pytest.approx(extent_mm[0] / extent_mm[1], abs=0.01)


def test_labels_are_coloured_where_they_are_and_ct_stays_grey(written):
    axial = mpimg.imread(next(p for p in written if p.name == "case_right_axial.png"))
    extent = (SHAPE[0], SHAPE[1])
    tumour = pixel(axial, (37, 16), extent)
    kidney = pixel(axial, (42, 24), extent)
    outside = pixel(axial, (24, 5), extent)
    assert tumour[0] > tumour[1] + 0.2 and tumour[0] > tumour[2] + 0.2  # red
    assert kidney[1] > kidney[0] + 0.2 and kidney[1] > kidney[2] + 0.2  # green
    assert np.ptp(outside) < 0.02  # grey CT
    coronal = mpimg.imread(next(p for p in written if p.name == "case_left_coronal.png"))
    cyst = pixel(coronal, (10, 12), (SHAPE[0], SHAPE[2]))
    assert cyst[2] > cyst[0] + 0.2 and cyst[2] > cyst[1]  # blue


def test_radiological_orientation(written):
    """Patient's right on the image's left; anterior up (axial); superior up (coronal)."""
    axial = mpimg.imread(next(p for p in written if p.name == "case_right_axial.png"))[..., :3]
    red = (axial[..., 0] > axial[..., 1] + 0.2) & (axial[..., 0] > axial[..., 2] + 0.2)
    assert np.argwhere(red)[:, 1].mean() < axial.shape[1] / 2  # right tumour on the left half
    bright = axial.min(-1) > 0.99
    assert np.argwhere(bright)[:, 0].mean() < axial.shape[0] / 3  # anterior marker on top
    coronal = mpimg.imread(next(p for p in written if p.name == "case_left_coronal.png"))
    bright = coronal[..., :3].min(-1) > 0.99
    assert np.argwhere(bright)[:, 0].mean() < coronal.shape[0] / 3  # superior marker on top


# Stored axis k is RAS axis AXES[k], reversed when FLIPS[k] (an "L" axis runs against RAS+ x):
# LPS and I-P-L (KiTS23's order).
STORAGES = {"LPS": ((0, 1, 2), (True, True, False)), "IPL": ((2, 1, 0), (True, True, True))}


def stored_as(volume: np.ndarray, storage: str) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` (on RAS, AFFINE) stored in another axis order, written out by hand."""
    axes, flips = STORAGES[storage]
    array = np.transpose(volume, axes)
    to_ras = np.zeros((4, 4))  # stored index -> RAS index
    to_ras[3, 3] = 1
    for k, (axis, flip) in enumerate(zip(axes, flips, strict=True)):
        if flip:
            array = np.flip(array, axis=k)
        to_ras[axis, k] = -1 if flip else 1
        to_ras[axis, 3] = volume.shape[axis] - 1 if flip else 0
    return array, AFFINE @ to_ras


@pytest.mark.parametrize("storage", sorted(STORAGES))
def test_reorient_matches_hand_made_storage(storage):
    _, labels = anatomy()
    by_hand, affine = stored_as(labels, storage)
    array, new_affine = reorient(labels, AFFINE, storage)
    np.testing.assert_array_equal(array, by_hand)
    np.testing.assert_allclose(new_affine, affine)
    back, back_affine = reorient(by_hand, affine, "RAS")
    np.testing.assert_array_equal(back, labels)
    np.testing.assert_allclose(back_affine, AFFINE)


@pytest.mark.parametrize("storage", sorted(STORAGES))
def test_storage_order_does_not_change_the_pixels(written, tmp_path, storage):
    ct, labels = anatomy()
    ct_stored, affine = stored_as(ct, storage)
    labels_stored, _ = stored_as(labels, storage)
    others = write_overlays(ct_stored, labels_stored, affine, tmp_path / "case")
    assert [p.name for p in others] == [p.name for p in written]
    for mine, theirs in zip(written, others, strict=True):
        np.testing.assert_array_equal(mpimg.imread(mine), mpimg.imread(theirs))


def test_no_kidney_gives_mid_volume_slices(tmp_path):
    ct, _ = anatomy()
    paths = write_overlays(ct, np.zeros(SHAPE, np.uint8), AFFINE, tmp_path / "empty")
    assert [p.name for p in paths] == ["empty_axial.png", "empty_coronal.png"]
    image = mpimg.imread(paths[0])[..., :3]
    assert image.shape[0] > 100
    with pytest.raises(ValueError, match="shape"):
        write_overlays(ct, np.zeros((2, 2, 2), np.uint8), AFFINE, tmp_path / "bad")
